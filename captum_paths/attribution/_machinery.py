"""What every attribution and search shares: quadrature, (example, step) rows under a
memory budget, gate edits, and ``F`` of an edited forward.

Captum's quadrature lives in a private Captum module; this is the only place that
imports it.
"""
from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
from captum.attr._utils.approximation_methods import SUPPORTED_METHODS, approximation_parameters

from captum_paths.attribution.layer_baselines import blend
from captum_paths.attribution.output import output_value, select_rows
from captum_paths.model.sites import NeuronSites, SiteEdit

__all__ = [
    "APPROXIMATIONS",
    "CPU_GRAPH_BUDGET",
    "StepRows",
    "auto_rows",
    "edited_output",
    "gate",
    "gating",
    "layer_mask",
    "measured_graph_bytes",
    "quadrature",
    "removal",
    "warn_if_constant_output",
]

#: Captum's approximation method names
APPROXIMATIONS: Tuple[str, ...] = tuple(SUPPORTED_METHODS)

#: memory the passes may keep in autograd graphs on CPU when no row budget is given
CPU_GRAPH_BUDGET = 512 * 2**20


def quadrature(method: str, n_steps: int, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """Step weights ``(n_steps,)`` float64 and points ``alpha`` ``(n_steps,)`` float32 in [0, 1]."""
    step_sizes, alphas = approximation_parameters(method)
    weights = torch.tensor(step_sizes(n_steps), dtype=torch.float64, device=device)
    alpha = torch.tensor(alphas(n_steps), dtype=torch.float32, device=device)
    return weights, alpha


class StepRows:
    """The ``count x n_steps`` (example, step) rows of a quadrature, in chunks.

    Iterating yields ``(rows, examples, steps, alpha)`` per chunk of at most
    ``chunk`` rows (all rows when ``None``); row ``r`` is example ``r // n_steps``
    at step ``r % n_steps``.
    """

    def __init__(self, count: int, method: str, n_steps: int, device: torch.device,
                 chunk: Optional[int] = None) -> None:
        self.m = n_steps
        self.weights, self.alphas = quadrature(method, n_steps, device)
        self.count = count * n_steps
        self.chunk = chunk or self.count

    def __iter__(self) -> Iterator[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]]:
        rows = torch.arange(self.count, device=self.alphas.device)
        for part in rows.split(self.chunk):
            examples, steps = part // self.m, part % self.m
            yield part, examples, steps, self.alphas[steps]


def gate(mask_rows: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Gates ``(rows, d_ff)``: ``alpha`` (per row) where the mask is 1, else 1."""
    return 1.0 + mask_rows * (alpha[:, None] - 1.0)


def gating(gates: torch.Tensor, base: Optional[torch.Tensor] = None) -> SiteEdit:
    """The site edit ``gates * act + (1 - gates) * base`` per row (gates ``(rows, d_ff)``; ``base``
    broadcastable to ``(rows, positions, d_ff)``, ``None`` for zero: a plain product)."""
    return lambda act: blend(act, gates, base)


def layer_mask(paths: torch.Tensor, layer: int, width: int) -> torch.Tensor:
    """``(batch, d_ff)`` 0/1 mask of the neurons of ``paths`` ``(batch, L, k)`` in ``layer``."""
    mask = torch.zeros(paths.shape[0], width, device=paths.device)
    return mask.scatter_(1, paths[:, layer], 1.0)


def removal(units: torch.Tensor, width: int) -> torch.Tensor:
    """Keep-gates ``(rows, d_ff)`` that remove neuron ``units[r]`` of row ``r``."""
    keep = torch.ones(len(units), width, device=units.device)
    return keep.scatter_(1, units[:, None], 0.0)


def edited_output(
    forward_func: Callable[..., torch.Tensor],
    sites: NeuronSites,
    output: str,
    inputs: Tuple[torch.Tensor, ...],
    args: Tuple[Any, ...],
    target: torch.Tensor,
    rows: torch.Tensor,
    edits: Dict[int, SiteEdit],
    scale: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """``F`` ``(len(rows),)`` of the examples ``rows`` (repeated as often as wanted)
    under the site ``edits``; ``scale`` ``(len(rows),)`` multiplies the inputs per row.

    ``inputs``, ``args`` and ``target`` are the whole batch's; extra arguments whose
    first dimension is the batch are indexed like the inputs.
    """
    batch = inputs[0].shape[0]
    selected = tuple(t[rows.to(t.device)] for t in inputs)
    if scale is not None:
        selected = tuple(t * scale.to(t.device, t.dtype).view(-1, *([1] * (t.dim() - 1))) for t in selected)
    with sites.edit(edits):
        logits = forward_func(*selected, *select_rows(args, rows, batch))
    return output_value(logits, target[rows], output)


def warn_if_constant_output(
    contributions: torch.Tensor,
    f_clean: torch.Tensor,
    f_removed: Optional[torch.Tensor],
    logits: torch.Tensor,
    what: str = "JointNeuronIntegratedGradients",
    stacklevel: int = 4,
) -> bool:
    """Warn (and return ``True``) when every contribution is exactly zero and ``F(x) == F(x; set removed)``
    for every image (``f_removed`` ``None``: not checked): the scores are zero because the target's
    output does not move, not because the units do not matter to a working model. The message names
    the likely cause from the clean ``logits`` ``(batch, classes)``: the same for every class (a
    zero-initialised head: torchvision's ``vit_b_16(weights=None)``) or for every image (a constant
    head). Uses only what the attribution has already computed."""
    if contributions.numel() == 0 or bool((contributions != 0).any()):
        return False
    if f_removed is not None and not torch.equal(f_clean, f_removed.to(f_clean.dtype)):
        return False
    logits = logits.detach()
    if logits.dim() == 2 and bool((logits == logits[:, :1]).all()):
        cause = ("the model's logits are the same for every class (a zero-initialised head? torchvision's "
                 "vit_b_16(weights=None) zero-initialises its classifier: load trained weights or train it)")
    elif logits.dim() == 2 and logits.shape[0] > 1 and bool((logits == logits[:1]).all()):
        cause = "the model's logits are the same for every image (a constant head, with zero weights?)"
    else:
        cause = ("the units are inactive at these images (activations exactly zero), or the output does not "
                 "depend on them (a zero-initialised or constant head?)")
    warnings.warn(
        f"{what}: every contribution and joint score is exactly 0: the target's output does not change when the "
        f"units are removed and its gradient is zero; {cause}. These scores say nothing about the units",
        RuntimeWarning,
        stacklevel=stacklevel,
    )
    return True


def auto_rows(per_row: int, device: torch.device) -> int:
    """Rows per pass under the default memory budget: :data:`CPU_GRAPH_BUDGET` on CPU,
    a quarter of the free memory on CUDA."""
    budget = CPU_GRAPH_BUDGET
    if device.type == "cuda":
        budget = torch.cuda.mem_get_info(device)[0] // 4
    return max(1, budget // max(1, per_row))


def measured_graph_bytes(
    forward_func: Callable[..., torch.Tensor],
    sites: NeuronSites,
    inputs: Tuple[torch.Tensor, ...],
    args: Tuple[Any, ...],
    width: int,
) -> int:
    """Bytes autograd keeps per row of a whole-model pass with a gate on site 0,
    measured as the difference between a 2-row and a 1-row forward (the saved
    parameters cancel out)."""
    batch, device = inputs[0].shape[0], inputs[0].device
    saved = []
    for count in (1, 2):
        rows = torch.zeros(count, dtype=torch.long, device=device)
        total = 0

        def pack(t: torch.Tensor) -> torch.Tensor:
            nonlocal total
            total += t.numel() * t.element_size()
            return t

        gates = torch.ones(count, width, device=device, requires_grad=True)
        with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            with sites.edit({0: gating(gates)}):
                forward_func(*(x[rows] for x in inputs), *select_rows(args, rows, batch))
        saved.append(total)
    return max(1, saved[1] - saved[0])
