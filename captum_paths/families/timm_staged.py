"""Staged (hierarchical) timm transformers not covered by a more specific adapter:
models with ``stages`` / ``layers`` / ``levels`` whose stages hold ``blocks`` with a linear
FFN (``mlp.fc1`` a linear layer, ``mlp.act`` the site), e.g. PVT-v2, Twins, DaViT,
GCViT, MViTv2, Hiera, NesT. Every block of every stage is a layer, widths per layer;
the head's pooling decides the tokens (the class token for ``global_pool='token'``
models that have one, else every token). No stream."""
from __future__ import annotations

from typing import List, Optional, Tuple

from torch import nn

from captum_paths.families.base import FamilyAdapter, SiteSpec, as_pair, register_family
from captum_paths.tokens import TokenSelection

__all__ = ["TimmStaged"]

_CONTAINERS = ("stages", "layers", "levels")


def _blocks(model: nn.Module) -> Optional[List[nn.Module]]:
    for name in _CONTAINERS:
        stages = getattr(model, name, None)
        if isinstance(stages, (nn.Sequential, nn.ModuleList)) and len(stages):
            blocks = [b for stage in stages for b in (getattr(stage, "blocks", None) or [])]
            if blocks:
                return blocks
    return None


@register_family
class TimmStaged(FamilyAdapter):
    name = "timm-staged"
    looks_for = "a staged timm transformer (`stages[i].blocks[j].mlp.act` with a linear `mlp.fc1`)"

    def sites(self, model: nn.Module) -> Optional[SiteSpec]:
        if not type(model).__module__.startswith("timm."):
            return None
        blocks = _blocks(model)
        if blocks is None:
            return None
        mlps = [getattr(b, "mlp", None) for b in blocks]
        if not all(isinstance(getattr(m, "fc1", None), nn.Linear) and hasattr(m, "act") for m in mlps):
            return None
        has_cls = getattr(model, "cls_token", None) is not None
        if has_cls and getattr(model, "global_pool", None) == "token":
            tokens = TokenSelection("cls", (), 1)
        else:
            tokens = TokenSelection("all", (), 1 if has_cls else 0)
        return SiteSpec([m.act for m in mlps], "output", tokens, [m.fc1.out_features for m in mlps])

    def patch_size(self, model: nn.Module) -> Optional[Tuple[int, int]]:
        return as_pair(getattr(getattr(model, "patch_embed", None), "patch_size", None))
