"""Other timm transformers, the fallback: every FFN with linear layers (``fc1``, ``act``,
``fc2``: timm's ``Mlp``, ``GluMlp``, ``NormMlp`` ...) in the order the model defines
them, one layer each. This covers staged and hierarchical models (PVT-v2, Twins,
DaViT, GCViT, MViTv2, Hiera, NesT, PiT, TinyViT, MaxViT, XCiT, CoaT ...); convolutional
blocks without such an FFN hold no layer. Widths per layer; the class token when the
head pools it, else every token. No stream: the search runs the model whole, and
``benchmarks/family_coverage.py`` checks, model by model, that the reported JAS is
the removal effect (which fails for models that fold image windows into the batch)."""
from __future__ import annotations

from typing import List, Optional, Tuple

from torch import nn

from captum_paths.model.families.base import FamilyAdapter, SiteSpec, as_pair, register_family
from captum_paths.model.families._timm import TimmFamily, mlp_site
from captum_paths.model.tokens import TokenSelection

__all__ = ["TimmStaged"]


def linear_ffns(model: nn.Module) -> List[nn.Module]:
    """Every FFN of ``model`` with linear ``fc1`` and ``fc2`` and an ``act``, in definition order
    (FFNs nested in another FFN are not counted twice; the classifier head's MLP is not a layer)."""
    found: List[nn.Module] = []
    for name, module in model.named_modules():
        if name.split(".")[0] in ("head", "fc_norm") or "pre_logits" in name:
            continue  # the classifier's MLP reads pooled features, not tokens
        if (isinstance(getattr(module, "fc1", None), nn.Linear) and isinstance(getattr(module, "fc2", None), nn.Linear)
                and hasattr(module, "act") and not any(module in set(f.modules()) for f in found)):
            found.append(module)
    return found


@register_family
class TimmStaged(TimmFamily):
    name = "timm-staged"
    looks_for = "another timm transformer (FFNs with linear `fc1`, `act`, `fc2`)"

    def sites(self, model: nn.Module) -> Optional[SiteSpec]:
        if not type(model).__module__.startswith("timm."):
            return None
        sites = [mlp_site(ffn) for ffn in linear_ffns(model)]
        if not sites or any(s is None for s in sites) or len({s[1] for s in sites}) != 1:
            return None
        if any(s[2] is None for s in sites):
            return None
        has_cls = getattr(model, "cls_token", None) is not None
        if has_cls and getattr(model, "global_pool", None) == "token":
            tokens = TokenSelection("cls", (), 1)
        else:
            tokens = TokenSelection("all", (), 1 if has_cls else 0)
        return SiteSpec([s[0] for s in sites], sites[0][1], tokens, [int(s[2]) for s in sites])

    def patch_size(self, model: nn.Module) -> Optional[Tuple[int, int]]:
        return as_pair(getattr(getattr(model, "patch_embed", None), "patch_size", None))
