"""What the torchvision adapters share: the ``torchvision:`` loader, the standard preprocessing
at the model's image size, and the builder name of a model."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import torch
from torch import nn

from captum_paths.model.families.base import FamilyAdapter
from captum_paths.model.transforms import Transform, standard_transform
from captum_paths.model.checkpoints import load_checkpoint
from captum_paths.model.loaders import ModelLoadError, download_message, is_download_error, register_loader, suggest
from captum_paths.model.families.base import default_transform
from captum_paths.model.transforms import ToRGB

__all__ = ["TorchvisionFamily", "torchvision_builder"]


def _shapes(model: nn.Module) -> Dict[str, Tuple[int, ...]]:
    # the classifier is left out: a build with another num_classes is the same architecture
    return {k: tuple(v.shape) for k, v in model.state_dict().items() if "head" not in k.split(".")[0]}


def torchvision_builder(model: nn.Module) -> Optional[str]:
    """The name of the torchvision builder (``vit_b_16``, ``swin_v2_t`` ...) whose default build
    has ``model``'s class and every parameter shape outside the classifier, else ``None``.
    Builds are made on the meta device (no memory, no weights)."""
    import torchvision

    shapes = _shapes(model)
    for name in torchvision.models.list_models(module=torchvision.models):
        builder = torchvision.models.get_model_builder(name)
        if builder.__module__ != type(model).__module__:
            continue
        with torch.device("meta"):
            candidate = builder()
        if type(candidate) is type(model) and _shapes(candidate) == shapes and all(
                type(a) is type(b) for a, b in zip(candidate.modules(), model.modules())):
            return name
    return None


class TorchvisionFamily(FamilyAdapter):
    """Built by the ``torchvision:`` loader; without published weights (which carry their own
    preprocessing), preprocessed by resize / centre crop / ImageNet normalisation at the
    model's ``image_size`` (224 when it has none)."""

    loader = "torchvision"

    def transform(self, model: nn.Module) -> Optional[Transform]:
        return standard_transform(getattr(model, "image_size", 224))

    def loader_spec(self, model: nn.Module) -> Optional[str]:
        name = torchvision_builder(model)
        return None if name is None else f"torchvision:{name}"


# -- the library's loader ------------------------------------------------------------


def _load_torchvision(
    spec: str,
    name: str,
    pretrained: bool,
    checkpoint: Optional[Path],
    num_classes: Optional[int],
    model_kwargs: Dict[str, Any],
) -> Tuple[nn.Module, Transform]:
    import torchvision

    available = torchvision.models.list_models()
    if name not in available:
        raise ValueError(f"unknown torchvision model name {name!r} (spec {spec!r}){suggest(name, available)}")
    weights = None
    if pretrained:
        try:
            weights = torchvision.models.get_model_weights(name).DEFAULT
        except Exception as exc:
            raise ValueError(f"torchvision model {name!r} has no pretrained weights; use pretrained=False") from exc
    kwargs = dict(model_kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    download = weights is not None and checkpoint is None
    try:
        model = torchvision.models.get_model(name, weights=weights if download else None, **kwargs)
    except Exception as exc:
        if download and is_download_error(exc):
            hint = f" (torchvision's weights file is {weights.url})" if weights is not None else ""
            raise ModelLoadError(download_message(spec, exc, hint)) from exc
        raise
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, spec)

    if weights is not None:
        from torchvision import transforms as T

        transform: Transform = T.Compose([ToRGB(), weights.transforms()])
    else:  # the family's preprocessing at the size the model was built for
        transform = default_transform(model) or standard_transform(getattr(model, "image_size", 224))
    return model, transform


register_loader("torchvision", '"torchvision:NAME"', random_without_weights=True)(
    lambda r: _load_torchvision(r.spec, r.name, r.pretrained, r.checkpoint, r.num_classes, r.model_kwargs))
