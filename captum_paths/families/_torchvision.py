"""What the torchvision adapters share: the ``torchvision:`` loader, the standard preprocessing
at the model's image size, and the builder name of a model."""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch
from torch import nn

from captum_paths.families.base import FamilyAdapter
from captum_paths.transforms import Transform, standard_transform

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
