"""A small vision transformer trained on scikit-learn's digits, shipped with the package.

The model is a timm :class:`~timm.models.vision_transformer.VisionTransformer`
(:data:`DEMO_CONFIG`: 8x8 grayscale input, 2x2 patches, 6 blocks, width 64,
FFN width 256, CLS-token classifier over 10 classes). Its weights
(``demo_vit.safetensors``) were made by :mod:`captum_paths.demo.train`.

Data come from :func:`sklearn.datasets.load_digits` (1797 images, 8x8, pixel
values 0..16), split by :data:`DEMO_SPLIT`: ``train_test_split(range(1797),
test_size=0.2, random_state=0, stratify=labels)`` gives 1437 train and 360 test
images; each split is kept in the dataset's original order. Pixels are
normalised as ``(x / 16 - 0.5) / 0.5``, so values lie in ``[-1, 1]``.

Example::

    from captum_paths.demo import load_demo_model, load_demo_data
    model = load_demo_model()
    images, labels = load_demo_data("test")      # (360, 1, 8, 8), (360,)
    accuracy = (model(images).argmax(1) == labels).float().mean()
"""
from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np
import torch
from torch import nn

__all__ = [
    "DEMO_CONFIG",
    "DEMO_CLASSES",
    "DEMO_SPLIT",
    "DEMO_MEAN",
    "DEMO_STD",
    "DEMO_WEIGHTS",
    "build_demo_model",
    "load_demo_model",
    "load_demo_data",
    "demo_metadata",
    "demo_transform",
    "save_demo_image_folder",
]

#: Keyword arguments of ``timm.models.vision_transformer.VisionTransformer``.
DEMO_CONFIG: Dict[str, Any] = {
    "img_size": 8,
    "patch_size": 2,
    "in_chans": 1,
    "num_classes": 10,
    "embed_dim": 64,
    "depth": 6,
    "num_heads": 4,
    "mlp_ratio": 4.0,  # FFN hidden width d_ff = 256
    "qkv_bias": True,
    "class_token": True,
    "global_pool": "token",
}

#: Class names, in label order; also the folder names of :func:`save_demo_image_folder`.
DEMO_CLASSES: Tuple[str, ...] = tuple(str(i) for i in range(10))

#: The fixed train/test split (arguments of ``sklearn.model_selection.train_test_split``).
DEMO_SPLIT: Dict[str, Any] = {
    "test_size": 0.2,
    "random_state": 0,
    "stratify": "labels",
    "description": (
        "sklearn.model_selection.train_test_split(np.arange(1797), test_size=0.2, "
        "random_state=0, stratify=labels) on sklearn.datasets.load_digits(); "
        "1437 train / 360 test, each split in original dataset order"
    ),
}

#: Normalisation applied after scaling pixels to [0, 1]: ``(x - DEMO_MEAN) / DEMO_STD``.
DEMO_MEAN: float = 0.5
DEMO_STD: float = 0.5

#: Path of the shipped weights file.
DEMO_WEIGHTS: Path = Path(__file__).resolve().parent / "demo_vit.safetensors"

_SPLITS = ("train", "test", "all")


def build_demo_model(**overrides: Any) -> nn.Module:
    """Build the untrained demo architecture (``DEMO_CONFIG`` updated by ``overrides``)."""
    from timm.models.vision_transformer import VisionTransformer

    return VisionTransformer(**{**DEMO_CONFIG, **overrides})


def load_demo_model(device: Optional[Union[str, torch.device]] = None) -> nn.Module:
    """Return the trained demo ViT in eval mode on ``device`` (default CPU).

    Input ``(B, 1, 8, 8)`` normalised as in :func:`load_demo_data`; output
    logits ``(B, 10)``.
    """
    from safetensors.torch import load_file

    model = build_demo_model()
    model.load_state_dict(load_file(str(DEMO_WEIGHTS)), strict=True)
    model.eval()
    return model.to(torch.device(device) if device is not None else torch.device("cpu"))


def demo_metadata() -> Dict[str, Any]:
    """Return the metadata stored in the weights file (config decoded from JSON)."""
    from safetensors import safe_open

    with safe_open(str(DEMO_WEIGHTS), framework="pt") as f:
        meta: Dict[str, Any] = dict(f.metadata() or {})
    if "config" in meta:
        meta["config"] = json.loads(meta["config"])
    return meta


@lru_cache(maxsize=1)
def _digits() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Raw digits ``(1797, 8, 8)`` values 0..16, labels, sorted train and test indices."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    x = digits.images.astype(np.float32)
    y = digits.target.astype(np.int64)
    train_idx, test_idx = train_test_split(
        np.arange(len(y)),
        test_size=DEMO_SPLIT["test_size"],
        random_state=DEMO_SPLIT["random_state"],
        stratify=y,
    )
    for a in (x, y):
        a.setflags(write=False)
    return x, y, np.sort(train_idx), np.sort(test_idx)


def _split_indices(split: str) -> np.ndarray:
    if split not in _SPLITS:
        raise ValueError(f"split must be one of {_SPLITS}, got split={split!r}")
    x, _, train_idx, test_idx = _digits()
    if split == "train":
        return train_idx
    if split == "test":
        return test_idx
    return np.arange(len(x))


def load_demo_data(split: str = "test") -> Tuple[torch.Tensor, torch.Tensor]:
    """Return ``(images, labels)`` of a split of the digits data.

    ``split`` is ``"train"`` (1437), ``"test"`` (360) or ``"all"`` (1797).
    ``images`` is float32 ``(N, 1, 8, 8)`` holding ``(x / 16 - 0.5) / 0.5``;
    ``labels`` is int64 ``(N,)``. Samples keep the dataset's original order.
    """
    idx = _split_indices(split)
    x, y, _, _ = _digits()
    images = torch.from_numpy(x[idx].copy()).unsqueeze(1)
    images = (images / 16.0 - DEMO_MEAN) / DEMO_STD
    return images, torch.from_numpy(y[idx].copy())


def demo_transform() -> Any:
    """Torchvision transform: PIL image (any mode/size) -> normalised ``(1, 8, 8)`` tensor.

    Grayscale, resize to 8x8, ``ToTensor`` (``[0, 1]``), then the normalisation
    of :func:`load_demo_data`; use it with ``torchvision.datasets.ImageFolder``.
    """
    from torchvision import transforms

    return transforms.Compose(
        [
            transforms.Grayscale(num_output_channels=1),
            transforms.Resize((8, 8), antialias=True),
            transforms.ToTensor(),
            transforms.Normalize((DEMO_MEAN,), (DEMO_STD,)),
        ]
    )


def save_demo_image_folder(
    root: Union[str, Path], split: str = "test", limit_per_class: Optional[int] = None
) -> Path:
    """Write a split as 8x8 grayscale PNGs in ImageNet layout; return ``Path(root)``.

    Files are ``root/<class>/<index>.png`` with class folders ``"0"``..``"9"``
    and ``<index>`` the sample's position in ``load_demo_data(split)``,
    zero-padded to 4 digits. A raw value ``x`` in 0..16 is stored as the 8-bit
    pixel ``round(x * 255 / 16)``, so ``demo_transform()`` of a file matches
    ``load_demo_data(split)[0][index]`` within ``1 / 255`` (half an 8-bit step,
    times ``1 / DEMO_STD``). ``limit_per_class`` keeps the first samples of each
    class (``None``: all).
    """
    from PIL import Image

    if limit_per_class is not None and (
        isinstance(limit_per_class, bool) or not isinstance(limit_per_class, int) or limit_per_class < 1
    ):
        raise ValueError(
            f"limit_per_class must be a positive int or None, got limit_per_class={limit_per_class!r}"
        )
    idx = _split_indices(split)
    x, y, _, _ = _digits()
    root = Path(root)
    counts = {c: 0 for c in range(len(DEMO_CLASSES))}
    for name in DEMO_CLASSES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for position, i in enumerate(idx):
        label = int(y[i])
        if limit_per_class is not None and counts[label] >= limit_per_class:
            continue
        counts[label] += 1
        pixels = np.rint(x[i] * (255.0 / 16.0)).astype(np.uint8)
        Image.fromarray(pixels).save(root / DEMO_CLASSES[label] / f"{position:04d}.png")
    return root
