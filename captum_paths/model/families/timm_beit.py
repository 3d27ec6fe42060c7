"""timm ``Beit`` (BEiT, BEiT v2): sites as for the timm ViT; the stream passes each block
the shared relative position bias."""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from captum_paths.model.families.base import CallWith, SiteSpec, StreamParts, register_family
from captum_paths.model.families.timm_vit import TimmBlocks

__all__ = ["TimmBeit"]


@register_family
class TimmBeit(TimmBlocks):
    name = "timm-beit"
    looks_for = "a timm Beit (`blocks[i].mlp.act`)"

    def sites(self, model: nn.Module) -> Optional[SiteSpec]:
        from timm.models.beit import Beit

        return super().sites(model) if isinstance(model, Beit) else None

    def stream(self, model: nn.Module, spec: SiteSpec) -> Optional[StreamParts]:
        def embed(x: torch.Tensor) -> torch.Tensor:
            x = model.patch_embed(x)
            x = torch.cat((model.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
            if model.pos_embed is not None:
                x = x + model.pos_embed
            return model.pos_drop(x)

        def extra():
            return {"shared_rel_pos_bias": model.rel_pos_bias() if model.rel_pos_bias is not None else None}

        blocks = [CallWith(b, extra) for b in model.blocks]
        return StreamParts(embed, blocks, lambda h: model.forward_head(model.norm(h)))
