"""Candidate pools for the exact re-scoring of a layer's neurons.

The whole-site approximation scales a whole site together with the prefix; on
pretrained ViTs it ranks some of the most influential neurons last. Outlier units
with very large activations are the typical case: scaled jointly with the rest of
the site their contribution comes out negative, yet removing one of them alone
moves the output more than any other neuron. The pool that ``refine=c`` re-scores
exactly is therefore drawn from several rankings in turn:

- the whole-site score (the paper's approximation);
- the first-order removal effect on top of the removed prefix, ``dF/dg_j`` at
  gates 1 with the prefix zeroed (one forward and backward row per image);
- the magnitude ``|a_j|`` of the activation there (summed over the selected tokens).
"""
from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["proposal_pool"]


def proposal_pool(rankings: Sequence[torch.Tensor], size: int) -> torch.Tensor:
    """``size`` distinct neurons per row, taken in turn from each ranking's best
    (first ranking first): ``(batch, size)`` long.

    Args:
        rankings: score tensors ``(batch, d_ff)``, higher is better.
        size: neurons per row, at most ``d_ff``.
    """
    batch, width = rankings[0].shape
    size = min(size, width)
    if len(rankings) == 1:
        return rankings[0].topk(size, dim=1).indices
    order = torch.stack([r.topk(size, dim=1).indices for r in rankings], dim=2).reshape(batch, -1)
    pool = torch.empty(batch, size, dtype=torch.long, device=order.device)
    for row in range(batch):  # a few dozen entries per row: plain Python is clear and cheap
        picked = list(dict.fromkeys(order[row].tolist()))[:size]
        pool[row] = torch.tensor(picked, device=order.device)
    return pool
