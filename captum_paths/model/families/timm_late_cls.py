"""timm models whose class token joins late: XCiT (cross-covariance blocks on patch tokens,
then class-attention blocks) and ConViT (gated positional self-attention blocks on patch
tokens, then blocks with the class token). Their early layers hold no class token, so
every token of a site is read (as for CaiT); XCiT's class-attention blocks are layers
too. No stream."""
from __future__ import annotations

from typing import List, Optional

from torch import nn

from captum_paths.model.families.base import register_family
from captum_paths.model.families.timm_vit import TimmBlocks
from captum_paths.model.tokens import TokenSelection

__all__ = ["TimmLateClassToken"]


@register_family
class TimmLateClassToken(TimmBlocks):
    name = "timm-late-cls"
    looks_for = "a timm XCiT or ConViT (`blocks[i].mlp.act`, then `cls_attn_blocks[i].mlp.act`)"

    def layer_blocks(self, model: nn.Module) -> Optional[List[nn.Module]]:
        from timm.models.convit import ConVit
        from timm.models.xcit import Xcit

        if not isinstance(model, (Xcit, ConVit)):
            return None
        return list(model.blocks) + list(getattr(model, "cls_attn_blocks", None) or [])

    def tokens(self, model: nn.Module) -> TokenSelection:
        return TokenSelection("all", (), 0)  # the early layers hold no class token

    def stream(self, model, spec):
        return None
