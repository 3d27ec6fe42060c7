"""Swin transformers, the hierarchical family: timm ``SwinTransformer`` / ``SwinTransformerV2``
/ ``SwinTransformerV2Cr``, torchvision ``SwinTransformer`` and Hugging Face
``SwinForImageClassification``.

Every block of every stage is a layer; the FFN width grows from stage to stage, so
the sites carry one width per layer. The heads average every token, so every token
is read (torchvision's blocks keep a ``(batch, H, W, d_ff)`` grid, read as its
``H * W`` tokens). No stream: the search runs the model whole.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

from torch import nn

from captum_paths.model.families.base import SiteSpec, as_pair, linear_width, register_family
from captum_paths.model.families._hf import HuggingFaceFamily
from captum_paths.model.families._timm import TimmFamily
from captum_paths.model.families._torchvision import TorchvisionFamily
from captum_paths.model.tokens import TokenSelection

__all__ = ["TimmSwin", "TorchvisionSwin", "HuggingFaceSwin"]

EVERY_TOKEN = TokenSelection("all", (), 0)


def _spec(sites: List[Tuple[nn.Module, Optional[int]]], capture: str) -> Optional[SiteSpec]:
    if not sites or any(w is None for _, w in sites):
        return None
    return SiteSpec([m for m, _ in sites], capture, EVERY_TOKEN, [int(w) for _, w in sites])


@register_family
class TimmSwin(TimmFamily):
    name = "timm-swin"
    looks_for = "a timm Swin transformer (`layers[i].blocks[j].mlp.act` or `stages[i].blocks[j].mlp.act`)"

    def sites(self, model: nn.Module) -> Optional[SiteSpec]:
        from timm.models.swin_transformer import SwinTransformer
        from timm.models.swin_transformer_v2 import SwinTransformerV2
        from timm.models.swin_transformer_v2_cr import SwinTransformerV2Cr

        if not isinstance(model, (SwinTransformer, SwinTransformerV2, SwinTransformerV2Cr)):
            return None
        stages = model.layers if hasattr(model, "layers") else model.stages
        blocks = [b for stage in stages for b in stage.blocks]
        if not all(hasattr(getattr(b, "mlp", None), "act") for b in blocks):
            return None
        return _spec([(b.mlp.act, linear_width(getattr(b.mlp, "fc1", None))) for b in blocks], "output")

    def patch_size(self, model: nn.Module) -> Optional[Tuple[int, int]]:
        return as_pair(getattr(getattr(model, "patch_embed", None), "patch_size", None))


@register_family
class TorchvisionSwin(TorchvisionFamily):
    name = "torchvision-swin"
    looks_for = "a torchvision SwinTransformer (`features[i][j].mlp[1]`)"

    def sites(self, model: nn.Module) -> Optional[SiteSpec]:
        from torchvision.models.swin_transformer import SwinTransformer

        if not isinstance(model, SwinTransformer):
            return None
        stages = [stage for stage in model.features if isinstance(stage, nn.Sequential)]
        blocks = [b for stage in stages for b in stage if isinstance(getattr(b, "mlp", None), nn.Sequential)]
        return _spec([(b.mlp[1], linear_width(b.mlp[0])) for b in blocks], "output")

    def patch_size(self, model: nn.Module) -> Optional[Tuple[int, int]]:
        conv = model.features[0][0]
        return as_pair(getattr(conv, "kernel_size", None))


@register_family
class HuggingFaceSwin(HuggingFaceFamily):
    name = "hf-swin"
    looks_for = "a Hugging Face Swin model (`encoder.layers[i].blocks[j].mlp.fc2` or `.intermediate`)"

    def sites(self, model: nn.Module) -> Optional[SiteSpec]:
        encoder = getattr(getattr(model, "swin", model), "encoder", None)
        stages = getattr(encoder, "layers", None)
        if not isinstance(stages, nn.ModuleList) or not all(hasattr(s, "blocks") for s in stages):
            return None
        blocks = [b for stage in stages for b in stage.blocks]
        if all(hasattr(b, "intermediate") for b in blocks):  # transformers < 5
            return _spec([(b.intermediate, linear_width(getattr(b.intermediate, "dense", None))) for b in blocks],
                         "output")
        if all(isinstance(getattr(getattr(b, "mlp", None), "fc2", None), nn.Linear) for b in blocks):
            return _spec([(b.mlp.fc2, b.mlp.fc2.in_features) for b in blocks], "input")
        return None

    def patch_size(self, model: nn.Module) -> Optional[Tuple[int, int]]:
        return as_pair(getattr(getattr(model, "config", None), "patch_size", None))
