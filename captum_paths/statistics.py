"""Uncertainty of the evaluation's per-image numbers: confidence intervals per method and
paired comparisons of each method with the searched paths; and the even draw over
classes by which the evaluation and the explorer sample large runs.

The evaluation measures every method on the same images, so methods are compared
image by image: the difference of each image's value (reference minus method), its
mean with a bootstrap confidence interval (SciPy's :func:`scipy.stats.bootstrap`,
seeded), the Wilcoxon signed-rank test of the differences
(:func:`scipy.stats.wilcoxon`) and, over every comparison of a table, Holm's
step-down adjustment of the p-values (the family-wise error rate). The intervals
are BCa up to :data:`BCA_LIMIT` images and percentile intervals above (BCa's
jackknife grows with the square of the images).

Quantities (columns of the evaluation's ``jas`` and ``deviation`` tables), each with
the direction in which a path is better:

- ``jas_gate`` / ``jas_paper``: the path's joint attribution score, higher;
- ``prob_deviation_remove``: ``p_removed(y) / p(y) - 1``, lower (removing the path
  takes more of the target probability away);
- ``prob_deviation_enhance``: ``p_enhanced(y) / p(y) - 1``, higher.
"""
from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

__all__ = ["mean_interval", "holm", "per_image_values", "method_intervals", "paired_comparisons", "BETTER",
           "BCA_LIMIT", "even_class_sample"]

#: quantity -> +1 when a larger value means a better path, -1 when a smaller one does.
BETTER: Dict[str, int] = {"jas_gate": 1, "jas_paper": 1, "prob_deviation_remove": -1, "prob_deviation_enhance": 1}

#: Largest sample that gets a BCa interval; larger ones get a percentile interval.
BCA_LIMIT = 5000


def mean_interval(values: Sequence[float], level: float = 0.95, n_resamples: int = 2000, seed: int = 0
                  ) -> Tuple[float, float, float, str]:
    """``(mean, low, high, method)`` of ``values``: the mean and its bootstrap confidence
    interval at ``level``. Fewer than 2 values give ``nan`` bounds; equal values give the
    value itself as both bounds."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if not 0 < level < 1:
        raise ValueError(f"level must be between 0 and 1; got {level!r}")
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan"), ""
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan"), ""
    if np.all(x == x[0]):
        return mean, mean, mean, "constant"
    method = "BCa" if len(x) <= BCA_LIMIT else "percentile"
    low, high = _bootstrap(x, level, n_resamples, seed, method)
    if not (np.isfinite(low) and np.isfinite(high)):  # BCa degenerates on a few distinct values
        method = "percentile"
        low, high = _bootstrap(x, level, n_resamples, seed, method)
    return mean, low, high, method


def _bootstrap(x: np.ndarray, level: float, n_resamples: int, seed: int, method: str) -> Tuple[float, float]:
    import inspect
    import warnings

    from scipy.stats import bootstrap

    # SciPy 1.15 renamed random_state to rng
    key = "rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # BCa on near-degenerate samples; caught above
        result = bootstrap((x,), np.mean, confidence_level=level, n_resamples=n_resamples, method=method,
                           batch=200, vectorized=True, **{key: np.random.default_rng(seed)})
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjusted p-values (``nan`` stays ``nan`` and is not counted)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * p[i]))
        out[i] = running
    return out


def per_image_values(deviation: pd.DataFrame, jas: Optional[pd.DataFrame] = None) -> pd.DataFrame:
    """One row per (image, method), one column per quantity (:data:`BETTER`) that the
    evaluation's ``deviation`` and ``jas`` tables hold."""
    parts = [deviation.pivot_table(index=["image", "method"], columns="operation", values="prob_deviation",
                                   aggfunc="first").add_prefix("prob_deviation_")]
    if jas is not None and len(jas):
        parts.append(jas.pivot_table(index=["image", "method"], columns="mode", values="jas",
                                     aggfunc="first").add_prefix("jas_"))
    wide = pd.concat(parts, axis=1)
    wide.columns.name = None
    return wide[[q for q in BETTER if q in wide.columns]].reset_index()


def method_intervals(values: pd.DataFrame, level: float = 0.95, n_resamples: int = 2000, seed: int = 0
                     ) -> pd.DataFrame:
    """Per method and quantity of ``values`` (:func:`per_image_values`): ``n``, ``mean``,
    ``ci_low``, ``ci_high`` and the interval's ``ci_method``."""
    rows = []
    for method, group in values.groupby("method", sort=False):
        for quantity in (q for q in BETTER if q in values.columns):
            mean, low, high, how = mean_interval(group[quantity], level, n_resamples, seed)
            rows.append({"method": method, "quantity": quantity, "n": int(group[quantity].notna().sum()),
                         "mean": mean, "ci_low": low, "ci_high": high, "ci_method": how})
    return pd.DataFrame(rows, columns=["method", "quantity", "n", "mean", "ci_low", "ci_high", "ci_method"])


def paired_comparisons(values: pd.DataFrame, reference: str, level: float = 0.95, n_resamples: int = 2000,
                       seed: int = 0) -> pd.DataFrame:
    """Every other method against ``reference``, image by image, per quantity of ``values``
    (:func:`per_image_values`).

    Columns: ``method``, ``quantity``, ``n`` (images both have), ``mean_difference``
    (reference minus method) with ``ci_low`` / ``ci_high``, ``reference_better`` (share
    of images where the reference's value is better, ties counted half),
    ``wilcoxon_p`` (two-sided signed-rank test; 1 when every difference is 0) and
    ``holm_p`` (adjusted over the table's rows). An empty table when ``reference`` is
    not among the methods.
    """
    from scipy.stats import wilcoxon

    columns = ["method", "quantity", "n", "mean_difference", "ci_low", "ci_high", "reference_better",
               "wilcoxon_p", "holm_p"]
    methods = list(dict.fromkeys(values["method"]))
    if reference not in methods:
        return pd.DataFrame(columns=columns)
    rows = []
    for quantity in (q for q in BETTER if q in values.columns):
        wide = values.pivot_table(index="image", columns="method", values=quantity, aggfunc="first")
        for method in methods:
            if method == reference:
                continue
            pair = wide[[reference, method]].dropna()
            diff = (pair[reference] - pair[method]).to_numpy()
            mean, low, high, _ = mean_interval(diff, level, n_resamples, seed)
            better = BETTER[quantity] * diff
            share = float(((better > 0) + 0.5 * (better == 0)).mean()) if len(diff) else float("nan")
            if len(diff) == 0:
                p = float("nan")
            elif np.all(diff == 0):
                p = 1.0
            else:
                p = float(wilcoxon(diff, zero_method="wilcox", alternative="two-sided").pvalue)
            rows.append({"method": method, "quantity": quantity, "n": len(diff), "mean_difference": mean,
                         "ci_low": low, "ci_high": high, "reference_better": share, "wilcoxon_p": p})
    table = pd.DataFrame(rows, columns=columns[:-1])
    table["holm_p"] = holm(table["wilcoxon_p"].to_numpy()) if len(table) else []
    return table


def even_class_sample(codes: Sequence[int], cap: int, rng: np.random.Generator) -> List[int]:
    """At most ``cap`` row indices of ``codes`` (class indices ``0..C-1``, one per row), as even
    over the classes as possible (round robin over the classes, each class's rows shuffled by
    ``rng``), in row order. Every row when there are at most ``cap``."""
    codes = np.asarray(codes)
    if len(codes) <= cap:
        return list(range(len(codes)))
    per_class = [np.flatnonzero(codes == c) for c in range(int(codes.max()) + 1)]
    for rows in per_class:
        rng.shuffle(rows)
    chosen: List[int] = []
    depth = 0
    while len(chosen) < cap:
        layer = [rows[depth] for rows in per_class if depth < len(rows)]
        if not layer:
            break
        chosen += layer[: cap - len(chosen)]
        depth += 1
    return sorted(int(i) for i in chosen)
