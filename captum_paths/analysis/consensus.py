"""The consensus path of a group of paths (one class): the library's one definition.

Per layer and rank ``r``, the consensus neuron is the mode of the group's rank-``r``
neurons (ties: the smallest index). The ``k`` neurons of a layer are kept distinct:
when a rank's mode was already taken by an earlier rank (or the paths have fewer
than ``k`` ranks), the rank gets the most frequent neuron of the layer not yet
taken, counted over the first ``k`` ranks of every path (ties: the smallest index).
For ``k = 1`` this is the mode per layer. The evaluation's pruning study and the
analysis's consensus tables both use it.
"""
from __future__ import annotations

from collections import Counter
from typing import List, Sequence

import numpy as np

__all__ = ["consensus_path"]


def consensus_path(paths: np.ndarray, k: int) -> List[List[int]]:
    """The consensus of ``paths`` ``(n, L, K)`` (best rank first): ``L`` lists of up to
    ``k`` distinct neurons (fewer only where the layer holds fewer distinct neurons)."""
    paths = np.asarray(paths)
    if paths.ndim != 3 or paths.shape[0] == 0:
        raise ValueError(f"paths must be a non-empty (n, L, K) array; got shape {paths.shape}")
    ranks = min(k, paths.shape[2])
    out: List[List[int]] = []
    for layer in range(paths.shape[1]):
        held = paths[:, layer, :ranks]
        layer_counts = Counter(held.reshape(-1).tolist())
        taken: List[int] = []
        for rank in range(k):
            mode = _most_frequent(Counter(held[:, rank].tolist()), ()) if rank < ranks else None
            if mode is None or mode in taken:
                mode = _most_frequent(layer_counts, taken)
            if mode is None:
                break
            taken.append(mode)
        out.append(taken)
    return out


def _most_frequent(counts: Counter, exclude: Sequence[int]):
    """The most frequent key not in ``exclude`` (ties: the smallest key), or ``None``."""
    candidates = [(-c, u) for u, c in counts.items() if u not in exclude]
    return min(candidates)[1] if candidates else None
