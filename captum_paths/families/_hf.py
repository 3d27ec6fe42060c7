"""What the Hugging Face adapters share: the ``hf:`` loader, the image processor saved with the
model (when it is on this machine) and the model's hub name or folder."""
from __future__ import annotations

import logging
from typing import Optional

from torch import nn

from captum_paths.families.base import FamilyAdapter
from captum_paths.transforms import HFImageTransform, Transform, standard_transform

__all__ = ["HuggingFaceFamily"]

logger = logging.getLogger(__name__)


def _config(model: nn.Module):
    """The model's config (a zero-shot tower keeps its model under ``.model``)."""
    config = getattr(model, "config", None)
    return config if config is not None else getattr(getattr(model, "model", None), "config", None)


def _source(model: nn.Module) -> str:
    return str(getattr(_config(model), "_name_or_path", "") or "")


class HuggingFaceFamily(FamilyAdapter):
    """Built by the ``hf:`` loader; preprocessed by the image processor saved with the model when
    it can be read without the network, else resize / centre crop / ImageNet normalisation at
    the config's ``image_size``."""

    loader = "hf"

    def transform(self, model: nn.Module) -> Optional[Transform]:
        source = _source(model)
        if source:
            try:
                import transformers

                return HFImageTransform(transformers.AutoImageProcessor.from_pretrained(source, local_files_only=True))
            except Exception as exc:  # not saved with one, or not on this machine
                logger.debug("no local image processor for %r: %s", source, exc)
        config = _config(model)
        size = getattr(getattr(config, "vision_config", config), "image_size", 224)
        return standard_transform(size)

    def loader_spec(self, model: nn.Module) -> Optional[str]:
        source = _source(model)
        return f"hf:{source}" if source else None
