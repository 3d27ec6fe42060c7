"""What the timm adapters share: where the neuron of a timm FFN is."""
from __future__ import annotations

from typing import Optional, Sequence, Tuple

from torch import nn

from captum_paths.families.base import SiteSpec, linear_width
from captum_paths.tokens import TokenSelection

__all__ = ["mlp_site", "blocks_spec"]

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
