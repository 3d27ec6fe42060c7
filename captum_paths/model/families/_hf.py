"""What the Hugging Face adapters share: the ``hf:`` loader, the image processor saved with the
model (when it is on this machine) and the model's hub name or folder."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

from torch import nn

from captum_paths.model.families.base import FamilyAdapter
from captum_paths.model.transforms import HFImageTransform, Transform, standard_transform
from captum_paths.model.checkpoints import load_checkpoint
from captum_paths.model.loaders import ModelLoadError, download_message, is_download_error, register_loader
from captum_paths.model.families.base import default_transform
from captum_paths.model.outputs import as_logits_model

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


# -- the library's loader ------------------------------------------------------------


def _load_hf(
    spec: str,
    name: str,
    checkpoint: Optional[Path],
    num_classes: Optional[int],
    model_kwargs: Dict[str, Any],
) -> Tuple[nn.Module, Transform]:
    try:
        import transformers
    except ImportError as exc:
        raise ImportError(
            f"spec {spec!r} needs the transformers package: pip install captum-paths[hf]"
        ) from exc

    local = Path(name).expanduser()
    is_local = local.is_dir()
    if not is_local and (local.exists() or name.startswith((".", "/", "~")) or "\\" in name):
        raise FileNotFoundError(f"hf model directory {name!r} (spec {spec!r}) does not exist or is not a directory")
    source = str(local) if is_local else name
    kwargs = dict(model_kwargs)
    if is_local:
        kwargs.setdefault("local_files_only", True)
    if num_classes is not None:
        kwargs.setdefault("num_labels", num_classes)
    auto = transformers.AutoModelForImageClassification
    try:
        if checkpoint is None:
            if num_classes is not None:
                kwargs.setdefault("ignore_mismatched_sizes", True)
            model = auto.from_pretrained(source, **kwargs)
        else:
            config = transformers.AutoConfig.from_pretrained(source, **kwargs)
            model = auto.from_config(config)
    except Exception as exc:
        if not is_local and is_download_error(exc):
            hint = (
                "; or pass a local directory made with save_pretrained() or "
                f"`hf download {name} --local-dir DIR`: load_model('hf:DIR')"
            )
            raise ModelLoadError(download_message(spec, exc, "", extra=hint)) from exc
        if is_local:
            raise ValueError(
                f"could not load a Hugging Face image-classification model from directory {source!r} "
                f"(spec {spec!r}): {type(exc).__name__}: {exc}"
            ) from exc
        raise
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, spec)

    transform: Optional[Transform] = None
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(source, local_files_only=is_local)
        transform = HFImageTransform(processor)
    except Exception as exc:  # no preprocessor_config.json, or hub unreachable
        transform = default_transform(as_logits_model(model)) or standard_transform(
            getattr(model.config, "image_size", 224))
        logger.warning("no image processor found for %r (%s); using the family's preprocessing: %r",
                       source, type(exc).__name__, transform)
    return as_logits_model(model), transform


register_loader("hf", '"hf:NAME_OR_PATH"')(
    lambda r: _load_hf(r.spec, r.name, r.checkpoint, r.num_classes, r.model_kwargs))
