"""Literal forward hooks on site modules, written out in the tests (no library recording or editing):
the references that the library's records, edits and baselines are checked against."""
from typing import Callable, Dict, Mapping, Sequence

import torch
from torch import nn


def module_outputs(model: nn.Module, modules: Sequence[nn.Module], images: torch.Tensor) -> Dict[int, torch.Tensor]:
    """``{layer: output of modules[layer]}`` of one no-grad forward of ``images`` (detached)."""
    seen: Dict[int, torch.Tensor] = {}
    handles = [m.register_forward_hook(lambda _m, _a, out, l=l: seen.__setitem__(l, out.detach()))
               for l, m in enumerate(modules)]
    try:
        with torch.no_grad():
            model(images)
    finally:
        for h in handles:
            h.remove()
    return seen


def logits_with_outputs_replaced(model: nn.Module, modules: Sequence[nn.Module], images: torch.Tensor,
                                 replace: Mapping[int, Callable[[torch.Tensor], torch.Tensor]]) -> torch.Tensor:
    """The logits of one no-grad forward with the output of ``modules[l]`` replaced by
    ``replace[l](output)`` (layers without an entry run as they are)."""
    handles = [modules[l].register_forward_hook(lambda _m, _a, out, fn=fn: fn(out)) for l, fn in replace.items()]
    try:
        with torch.no_grad():
            return model(images)
    finally:
        for h in handles:
            h.remove()
