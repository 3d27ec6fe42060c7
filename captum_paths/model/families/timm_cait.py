"""timm ``Cait``: the self-attention blocks (``blocks``, patch tokens only) and the
class-attention blocks (``blocks_token_only``, whose FFN sees the class token only)
are all layers with FFN neurons, in that order. Every token of a site is read: the
patch tokens feed the class token through class attention, and the class-attention
FFN holds the class token alone. No stream: the search runs the model whole."""
from __future__ import annotations

from typing import List, Optional

from torch import nn

from captum_paths.model.families.base import register_family
from captum_paths.model.families.timm_vit import TimmBlocks
from captum_paths.model.tokens import TokenSelection

__all__ = ["TimmCait"]


@register_family
class TimmCait(TimmBlocks):
    name = "timm-cait"
    looks_for = "a timm Cait (`blocks[i].mlp.act` and `blocks_token_only[i].mlp.act`)"

    def layer_blocks(self, model: nn.Module) -> Optional[List[nn.Module]]:
        from timm.models.cait import Cait

        if not isinstance(model, Cait):
            return None
        return list(model.blocks) + list(model.blocks_token_only or [])

    def tokens(self, model: nn.Module) -> TokenSelection:
        return TokenSelection("all", (), 0)  # the early layers hold no class token

    def stream(self, model, spec):
        return None
