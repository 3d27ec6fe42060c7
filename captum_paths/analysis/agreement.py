"""Two sets of path records of the same images, side by side: how far two runs agree.

Two runs of one model in fp32 and bf16, two search settings, two checkpoints of one
architecture, two seeds: :func:`path_agreement` pairs their records by method and
image id and reports, per method, how many of the neurons and whole paths are the
same and how the JAS differs, image by image (a bootstrap interval and the Wilcoxon
signed-rank test of :mod:`captum_paths.statistics`), and per layer the share of
neurons in common.
"""
from __future__ import annotations

from typing import Any, Dict, Mapping, Optional, Sequence

import numpy as np
import pandas as pd

from captum_paths.statistics import mean_interval

__all__ = ["path_agreement"]


def path_agreement(a: Sequence[Mapping[str, Any]], b: Sequence[Mapping[str, Any]],
                   methods: Optional[Sequence[str]] = None, seed: int = 0) -> Dict[str, pd.DataFrame]:
    """Agreement of the records ``a`` and ``b`` on the images both hold, per method.

    Args:
        a, b: path records (dicts of a run's ``records.jsonl``).
        methods: the methods to compare (default: every method both hold).
        seed: seed of the bootstrap intervals.

    Returns:
        ``{"summary": ..., "layers": ...}``. ``summary``, one row per method: ``images``
        in common, ``same_units`` (share of a path's units, per image and layer, that the
        other path holds too; order within a layer does not count), ``same_paths``
        (share of images whose paths are equal), ``mean_jas_a``, ``mean_jas_b``,
        ``jas_difference`` (mean of a minus b) with ``ci_low`` / ``ci_high`` (95%
        bootstrap), ``max_abs_jas_difference`` and ``wilcoxon_p``. ``layers``: per method
        and layer, ``same_units``.

    Raises:
        ValueError: when no image of a compared method is in both, or their paths have
            different numbers of layers or units per layer.
    """
    from scipy.stats import wilcoxon

    def by_key(records):
        return {(str(r["method"]), str(r["image_id"])): r for r in records}

    left, right = by_key(a), by_key(b)
    shared_methods = list(dict.fromkeys(m for m, _ in left if any(key[0] == m for key in right)))
    if methods is None:
        methods = shared_methods
    missing = [m for m in methods if m not in shared_methods]
    if missing or not methods:
        raise ValueError(f"methods {missing or list(methods)} are not in both sets of records (both hold "
                         f"{shared_methods})")
    summary, layers = [], []
    for method in methods:
        keys = sorted(k for k in left if k[0] == method and k in right)
        if not keys:
            raise ValueError(f"no image has a {method!r} record in both sets of records")
        pa = np.asarray([left[k]["path"] for k in keys])  # (images, L, k)
        pb = np.asarray([right[k]["path"] for k in keys])
        if pa.shape != pb.shape:
            raise ValueError(f"the {method!r} paths have shape {pa.shape[1:]} (layers, units per layer) in one set "
                             f"and {pb.shape[1:]} in the other: they come from different models or k")
        # units of a's path that b's path holds in the same layer
        common = (pa[..., :, None] == pb[..., None, :]).any(-1).mean(-1)  # (images, L)
        ja = np.asarray([left[k]["jas"] for k in keys], dtype=float)
        jb = np.asarray([right[k]["jas"] for k in keys], dtype=float)
        diff = ja - jb
        mean, low, high, _ = mean_interval(diff, seed=seed)
        p = 1.0 if np.all(diff == 0) else float(wilcoxon(diff, zero_method="wilcox").pvalue)
        summary.append({"method": method, "images": len(keys), "same_units": float(common.mean()),
                        "same_paths": float((pa == pb).reshape(len(keys), -1).all(1).mean()),
                        "mean_jas_a": float(ja.mean()), "mean_jas_b": float(jb.mean()), "jas_difference": mean,
                        "ci_low": low, "ci_high": high, "max_abs_jas_difference": float(np.abs(diff).max()),
                        "wilcoxon_p": p})
        layers += [{"method": method, "layer": layer, "same_units": float(v)}
                   for layer, v in enumerate(common.mean(0))]
    return {"summary": pd.DataFrame(summary), "layers": pd.DataFrame(layers)}
