"""torchvision ``VisionTransformer``: ``encoder.layers[i].mlp`` = Linear, GELU (the site),
Dropout, Linear, Dropout; the head reads the class token. Heads: those of
``encoder.layers[i].self_attention``, an ``nn.MultiheadAttention`` (``capture="mha"``)."""
from __future__ import annotations

from typing import Callable, Optional, Tuple

import torch
from torch import nn

from captum_paths.model.families.base import (
    SiteSpec,
    SplitBlock,
    StreamParts,
    as_pair,
    heads_spec,
    linear_width,
    multihead_attention,
    register_family,
)
from captum_paths.model.families._torchvision import TorchvisionFamily
from captum_paths.model.tokens import TokenSelection

__all__ = ["TorchvisionViT"]


@register_family
class TorchvisionViT(TorchvisionFamily):
    name = "torchvision"
    looks_for = "a torchvision VisionTransformer (`encoder.layers[i].mlp[1]`)"

    def sites(self, model: nn.Module) -> Optional[SiteSpec]:
        layers = getattr(getattr(model, "encoder", None), "layers", None)
        if not isinstance(layers, nn.Sequential) or len(layers) == 0:
            return None
        mlps = [getattr(layer, "mlp", None) for layer in layers]
        if not all(isinstance(m, nn.Sequential) and len(m) >= 4 for m in mlps):
            return None
        return SiteSpec([m[1] for m in mlps], "output", TokenSelection("cls", (), 1), linear_width(mlps[0][0]))

    def head_sites(self, model: nn.Module) -> Optional[SiteSpec]:
        """The heads of each ``encoder.layers[i].self_attention`` (``nn.MultiheadAttention``,
        read with ``capture="mha"``)."""
        spec = self.sites(model)
        if spec is None:
            return None
        return heads_spec([multihead_attention(getattr(layer, "self_attention", None))
                           for layer in model.encoder.layers], "mha", spec.tokens)

    def patch_size(self, model: nn.Module) -> Optional[Tuple[int, int]]:
        return as_pair(getattr(model, "patch_size", None))

    def stream(self, model: nn.Module, spec: SiteSpec) -> Optional[StreamParts]:
        if not hasattr(model, "_process_input") or not hasattr(model, "heads"):
            return None
        blocks = list(model.encoder.layers)
        return StreamParts(
            embed=_embed(model),
            blocks=blocks,
            head=lambda h: model.heads(model.encoder.ln(h)[:, 0]),
            splits=[_split(b, s, spec.capture) for b, s in zip(blocks, spec.modules)],
            reads_cls=True,
        )


def _embed(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def embed(x: torch.Tensor) -> torch.Tensor:
        x = model._process_input(x)
        x = torch.cat([model.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return model.encoder.dropout(x + model.encoder.pos_embedding)
    return embed


def _split(block: nn.Module, site: nn.Module, capture: str) -> Optional[SplitBlock]:
    """``EncoderBlock`` whose ``MLPBlock`` is Linear, GELU (the site), Dropout, Linear, Dropout."""
    from torchvision.models.vision_transformer import EncoderBlock

    mlp = getattr(block, "mlp", None)
    if type(block) is not EncoderBlock or not isinstance(mlp, nn.Sequential) or len(mlp) != 5:
        return None
    if site is not mlp[1] or capture != "output":
        return None

    def pre(h: torch.Tensor, cls_only: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        x = block.ln_1(h)
        query, h = (x[:, :1], h[:, :1]) if cls_only else (x, h)
        attn, _ = block.self_attention(query, x, x, need_weights=False)
        mid = block.dropout(attn) + h
        return mid, mlp[1](mlp[0](block.ln_2(mid)))

    def post(mid: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return mid + mlp[4](mlp[3](mlp[2](act)))

    return SplitBlock(pre, post)
