"""Evaluation preprocessing: one PIL image to the ``(C, H, W)`` tensor a model takes.

The pieces the loaders and the family adapters share: RGB conversion that scales
high-depth images, the standard resize / centre-crop / normalise pipeline, and a
wrapper around a Hugging Face image processor.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence, Union

import torch
from PIL import Image

__all__ = ["Transform", "ToRGB", "to_rgb", "standard_transform", "HFImageTransform", "IMAGENET_MEAN", "IMAGENET_STD"]

Transform = Callable[[Image.Image], torch.Tensor]
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def to_rgb(image: Image.Image) -> Image.Image:
    """RGB at 8 bits per channel (high-depth images scaled, not clipped)."""
    if not isinstance(image, Image.Image) or image.mode == "RGB":
        return image
    from captum_paths.model.data import to_8bit

    return to_8bit(image).convert("RGB")


class ToRGB:
    """Convert a PIL image to RGB (grayscale / RGBA / palette / 16-bit inputs)."""

    def __call__(self, image: Image.Image) -> Image.Image:
        return to_rgb(image)

    def __repr__(self) -> str:
        return "ToRGB()"


def standard_transform(size: Union[int, Sequence[int]], mean: Sequence[float] = IMAGENET_MEAN,
                       std: Sequence[float] = IMAGENET_STD, crop_pct: float = 0.875) -> Transform:
    """ToRGB / Resize (shorter side ``size / crop_pct``) / CenterCrop ``size`` / ToTensor / Normalize:
    PIL -> ``(3, H, W)``."""
    from torchvision import transforms as T

    h, w = (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))
    resize = int(round(min(h, w) / crop_pct))
    return T.Compose(
        [
            ToRGB(),
            T.Resize(resize, interpolation=T.InterpolationMode.BILINEAR),
            T.CenterCrop((h, w)),
            T.ToTensor(),
            T.Normalize(tuple(mean), tuple(std)),
        ]
    )


class HFImageTransform:
    """Wrap a Hugging Face image processor: PIL image -> ``(3, H, W)`` tensor."""

    def __init__(self, processor: Any) -> None:
        self.processor = processor

    def __call__(self, image: Image.Image) -> torch.Tensor:
        return self.processor(images=to_rgb(image), return_tensors="pt")["pixel_values"][0]

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.processor).__name__})"
