"""timm ``Eva``: EVA, EVA-02 (SwiGLU FFNs, rotary position embeddings), and the models
built on it (PE, ...). Sites as for the timm ViT (gated FFNs: the input of
``mlp.fc2``); the stream passes each block the rotary embedding of the batch."""
from __future__ import annotations

from typing import Dict, Optional

import torch
from torch import nn

from captum_paths.model.families.base import CallWith, SiteSpec, StreamParts, register_family
from captum_paths.model.families.timm_vit import TimmBlocks

__all__ = ["TimmEva"]


@register_family
class TimmEva(TimmBlocks):
    name = "timm-eva"
    looks_for = "a timm Eva (`blocks[i].mlp`, SwiGLU or plain)"

    def sites(self, model: nn.Module) -> Optional[SiteSpec]:
        from timm.models.eva import Eva

        return super().sites(model) if isinstance(model, Eva) else None

    def stream(self, model: nn.Module, spec: SiteSpec) -> Optional[StreamParts]:
        if getattr(model, "rope_mixed", False):
            return None  # a rotary embedding per depth: run the model whole
        state: Dict[str, Optional[torch.Tensor]] = {"rope": None}

        def embed(x: torch.Tensor) -> torch.Tensor:
            x = model.patch_embed(x)
            x, state["rope"] = model._pos_embed(x)
            return model.norm_pre(x)

        blocks = [CallWith(b, lambda: {"rope": state["rope"]}) for b in model.blocks]
        return StreamParts(embed, blocks, lambda h: model.forward_head(model.norm(h)))
