"""What the timm adapters share: where the neuron of a timm FFN is, timm's preprocessing
and the ``timm:`` spec of a model."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

from torch import nn

from captum_paths.model.families.base import FamilyAdapter, SiteSpec, heads_spec, linear_width, projected_heads
from captum_paths.model.tokens import TokenSelection
from captum_paths.model.transforms import ToRGB, Transform
from captum_paths.model.checkpoints import load_checkpoint
from captum_paths.model.loaders import ModelLoadError, download_message, is_download_error, register_loader, suggest
from captum_paths.model.families.base import default_transform

__all__ = ["mlp_site", "blocks_spec", "attention_heads_spec", "timm_transform", "timm_loader_spec", "TimmFamily"]

_GATED = ("GluMlp", "SwiGLU", "SwiGLUPacked", "GatedMlp")


def mlp_site(mlp: nn.Module) -> Optional[Tuple[nn.Module, str, Optional[int]]]:
    """``(module, capture, width)`` of a timm FFN: ``act`` of a plain ``Mlp``, the input of
    ``fc2`` of a gated one (its hidden activation is the gated product); else ``None``."""
    if mlp is None:
        return None
    fc1, fc2 = getattr(mlp, "fc1", None), getattr(mlp, "fc2", None)
    # a first layer twice as wide as the second's input: a gated FFN whatever its class name
    halved = isinstance(fc1, nn.Linear) and isinstance(fc2, nn.Linear) and fc1.out_features != fc2.in_features
    gated = type(mlp).__name__ in _GATED or halved
    if not gated and all(hasattr(mlp, n) for n in ("fc1", "act", "fc2")):
        return mlp.act, "output", linear_width(fc1)
    if isinstance(getattr(mlp, "fc2", None), nn.Linear):
        return mlp.fc2, "input", mlp.fc2.in_features
    return None


def blocks_spec(blocks: Sequence[nn.Module], tokens: TokenSelection) -> Optional[SiteSpec]:
    """The sites of timm blocks with an ``mlp`` each (one layer per block), or ``None`` when a
    block has no FFN of a known shape or the blocks mix plain and gated FFNs. Widths per layer
    when they differ and every one is known."""
    found = [mlp_site(getattr(b, "mlp", None)) for b in blocks]
    if not found or any(f is None for f in found) or len({f[1] for f in found}) != 1:
        return None
    widths = [f[2] for f in found]
    width = widths[0] if len(set(widths)) == 1 else (None if None in widths else widths)
    return SiteSpec([f[0] for f in found], found[0][1], tokens, width)


def attention_heads_spec(blocks: Sequence[nn.Module], tokens: TokenSelection) -> Optional[SiteSpec]:
    """The head sites of timm blocks: the input of ``attn.proj`` of each block (``attn.num_heads``
    heads, contiguous, as every timm attention lays them out before its projection), or
    ``None`` when a block's attention has no such projection."""
    return heads_spec([projected_heads(getattr(getattr(b, "attn", None), "proj", None),
                                       getattr(getattr(b, "attn", None), "num_heads", None)) for b in blocks],
                      "input", tokens)


def timm_transform(model: nn.Module) -> Transform:
    """timm's evaluation transform for ``model`` (its pretrained config's resize, crop, mean and
    std, at the input size the model was built for), converting any PIL mode to RGB first."""
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config({}, model=model)
    input_size = _input_size(model)
    if input_size is not None and tuple(input_size) != tuple(config["input_size"]):
        config = resolve_data_config({"input_size": tuple(input_size)}, model=model)
    transform = create_transform(**config, is_training=False)
    if config["input_size"][0] == 3 and hasattr(transform, "transforms"):
        transform.transforms.insert(0, ToRGB())  # grayscale / RGBA / palette PIL inputs
    return transform


def _input_size(model: nn.Module) -> Optional[Tuple[int, int, int]]:
    """The input size the model was built for (``pretrained_cfg`` keeps the default)."""
    try:
        from timm.models import get_model_input_config  # timm >= 1.0.2x

        size = get_model_input_config(model).get("input_size")
        if size is not None and len(size) == 3:
            return tuple(int(s) for s in size)  # type: ignore[return-value]
    except Exception:  # older timm, or a model it cannot describe
        pass
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is None:
        return None
    if isinstance(img_size, int):
        img_size = (img_size, img_size)
    in_chans = int(getattr(model.patch_embed, "in_chans", 3) or 3) if hasattr(model, "patch_embed") else 3
    return (in_chans, int(img_size[0]), int(img_size[1]))


def timm_loader_spec(model: nn.Module) -> Optional[str]:
    """``"timm:ARCH.TAG"`` from the model's ``pretrained_cfg`` (set by ``timm.create_model``), else ``None``."""
    cfg = getattr(model, "pretrained_cfg", None) or {}
    arch = cfg.get("architecture")
    if not arch:
        return None
    tag = cfg.get("tag")
    return f"timm:{arch}.{tag}" if tag else f"timm:{arch}"


class TimmFamily(FamilyAdapter):
    """What the timm families share: built by the ``timm:`` loader, preprocessed as timm's data
    config says."""

    loader = "timm"

    def transform(self, model: nn.Module) -> Optional[Transform]:
        return timm_transform(model)

    def loader_spec(self, model: nn.Module) -> Optional[str]:
        return timm_loader_spec(model)


# -- the library's loader ------------------------------------------------------------


def timm_arch(name: str) -> str:
    """The architecture of a timm model name (``vit_base_patch16_224.augreg_in1k`` -> ``vit_base_patch16_224``)."""
    return name.split(".", 1)[0]


# -- timm -------------------------------------------------------------------------


def _load_timm(
    spec: str,
    name: str,
    pretrained: bool,
    checkpoint: Optional[Path],
    num_classes: Optional[int],
    model_kwargs: Dict[str, Any],
) -> Tuple[nn.Module, Transform]:
    import timm

    hub_scheme = name.startswith(("hf-hub:", "local-dir:"))
    if not hub_scheme and not timm.is_model(timm_arch(name)):
        raise ValueError(f"unknown timm model name {name!r} (spec {spec!r}){suggest(timm_arch(name), timm.list_models())}")
    kwargs = dict(model_kwargs)
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    download = pretrained and checkpoint is None
    try:
        model = timm.create_model(name, pretrained=download, **kwargs)
    except Exception as exc:
        if (download or name.startswith("hf-hub:")) and is_download_error(exc):
            raise ModelLoadError(download_message(spec, exc, _timm_weights_hint(name))) from exc
        raise
    if checkpoint is not None:
        load_checkpoint(model, checkpoint, spec)

    return model, default_transform(model) or timm_transform(model)


def _timm_weights_hint(name: str) -> str:
    try:
        import timm

        cfg = timm.models.get_pretrained_cfg(name)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if hub_id:
            return f" (timm's weights file is model.safetensors at https://huggingface.co/{hub_id})"
        url = getattr(cfg, "url", None) if cfg is not None else None
        if url:
            return f" (timm's weights file is {url})"
    except Exception:
        pass
    return ""


register_loader("timm", '"timm:NAME"', random_without_weights=True)(
    lambda r: _load_timm(r.spec, r.name, r.pretrained, r.checkpoint, r.num_classes, r.model_kwargs))
