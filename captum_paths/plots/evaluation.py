"""Figures of the evaluation experiments: manipulation, JAS, pruning.

See "Evaluation" in docs/method.md.

Every function takes the tidy :class:`pandas.DataFrame` that
``captum_paths.evaluation`` produces, checks its columns, and returns a
:class:`matplotlib.figure.Figure` (never shown; save it with
:func:`captum_paths.plots.figures.save_figure`). The library never selects a
matplotlib backend: notebooks show figures inline, scripts without a display get Agg.

Colours: each method keeps one colour in every figure (:data:`METHOD_COLOURS`,
:func:`method_palette`); the searched path (:data:`HIGHLIGHT_METHOD`) is red and its
column is also shaded and its tick label set in bold. Methods not listed there get
further colours chosen from the method name itself, so they too keep their
colour from one figure to the next.
"""
from __future__ import annotations

import warnings
import zlib
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

import matplotlib.pyplot as plt
import seaborn as sns
from matplotlib.figure import Figure

from captum_paths.search.registry import DEFAULT_METHOD, primary_method

__all__ = [
    "HIGHLIGHT_METHOD",
    "METHOD_COLOURS",
    "method_palette",
    "plot_deviation",
    "plot_jas",
    "plot_pruning",
    "plot_faithfulness",
]

#: The method the figures highlight (the searched path, see "Layer-progressive
#: search" in docs/method.md).
HIGHLIGHT_METHOD = DEFAULT_METHOD

#: Fixed colour per known method: the searched path in a strong red, the
#: baselines in muted hues, the random control in grey.
METHOD_COLOURS: Dict[str, str] = {
    DEFAULT_METHOD: "#c0392b",
    "activation": "#4c72b0",
    "knowledge-neurons": "#55a868",
    "conductance": "#8172b3",
    "influence-pattern": "#dd8452",
    "random": "#8c8c8c",
}

# Colours for method names not in METHOD_COLOURS (none close to the above).
_EXTRA_COLOURS: Tuple[str, ...] = (
    "#17becf", "#bcbd22", "#e377c2", "#8c564b", "#1b9e77", "#7570b3",
    "#e6ab02", "#a6761d", "#66a61e", "#0072b2", "#cc79a7", "#56b4e9",
)

_OPERATION_ORDER = ("remove", "enhance")
_OPERATION_TITLES = {
    "remove": "remove (path neurons set to 0)",
    "enhance": "enhance (path neurons amplified)",
}
def _replaced_by(ablation: Optional[str], plural: bool = False) -> str:
    """How removed units end up, from a table's ``ablation`` value (``None``/``"zero"``: 0)."""
    if ablation in (None, "zero"):
        return "set to 0"
    if ablation == "mean":
        return "set to their mean" if plural else "set to its mean"
    return f"set to {'their' if plural else 'its'} {ablation} baseline"


def _table_ablation(df: pd.DataFrame) -> Optional[str]:
    """The one ablation of a table's ``ablation`` column (``None`` without one, or several)."""
    if "ablation" not in df.columns:
        return None
    values = list(dict.fromkeys(df["ablation"].astype(str)))
    return values[0] if len(values) == 1 else None


_MODE_ORDER = ("gate", "paper")
_MODE_TITLES = {
    "gate": "mode \"gate\" (exact removal effect: F(x) − F(x; path zeroed))",
    "paper": "mode \"paper\" (the released scripts' score)",
}

DEVIATION_COLUMNS = (
    "image", "label", "method", "operation", "p_before", "p_after",
    "prob_deviation", "correct_before", "correct_after",
)
JAS_COLUMNS = ("image", "label", "method", "mode", "jas")
PRUNING_COLUMNS = (
    "k", "p", "depth", "label", "images", "mean_prob", "accuracy",
    "mean_prob_unpruned", "accuracy_unpruned",
)

_DEVIATION_YLABEL = "probability deviation p_edit(y)/p(y) − 1"


# --------------------------------------------------------------------------- #
# colours
# --------------------------------------------------------------------------- #
def method_palette(methods: Iterable[str]) -> Dict[str, str]:
    """Colour (hex string) for each method name.

    Known methods get their entry of :data:`METHOD_COLOURS`. Each unknown name
    gets a colour picked from a stable hash of the name (so the same name keeps
    its colour across figures); a clash within one call moves to the next free
    colour, and past the extra colours the names share an evenly spaced HUSL
    palette.
    """
    names = list(dict.fromkeys(str(m) for m in methods))
    palette = {m: METHOD_COLOURS[m] for m in names if m in METHOD_COLOURS}
    unknown = sorted(m for m in names if m not in METHOD_COLOURS)
    taken = set()
    overflow = []
    for name in unknown:
        start = zlib.crc32(name.encode("utf-8")) % len(_EXTRA_COLOURS)
        for step in range(len(_EXTRA_COLOURS)):
            colour = _EXTRA_COLOURS[(start + step) % len(_EXTRA_COLOURS)]
            if colour not in taken:
                palette[name] = colour
                taken.add(colour)
                break
        else:
            overflow.append(name)
    if overflow:
        for name, rgb in zip(overflow, sns.color_palette("husl", len(overflow))):
            palette[name] = "#{:02x}{:02x}{:02x}".format(*(int(round(255 * c)) for c in rgb))
    return palette


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _validate(df: pd.DataFrame, required: Sequence[str], func: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{func}: expected a pandas DataFrame; got {type(df).__name__}")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise ValueError(
            f"{func}: DataFrame is missing required column(s) {missing}; "
            f"it has {list(map(str, df.columns))}"
        )
    if len(df) == 0:
        raise ValueError(f"{func}: DataFrame is empty (no rows to plot)")


def _numeric(df: pd.DataFrame, column: str, func: str) -> pd.Series:
    """Column as float; a non-numeric entry is an error."""
    values = df[column]
    if values.dtype == bool:
        return values.astype(float)
    converted = pd.to_numeric(values, errors="coerce")
    bad = converted.isna() & values.notna()
    if bad.any():
        example = values[bad].iloc[0]
        raise ValueError(f"{func}: column {column!r} has non-numeric values (e.g. {example!r})")
    return converted.astype(float)


def _drop_non_finite(df: pd.DataFrame, column: str, func: str) -> pd.DataFrame:
    finite = np.isfinite(df[column].to_numpy(dtype=float))
    if not finite.all():
        warnings.warn(
            f"{func}: dropped {int((~finite).sum())} row(s) with a non-finite {column!r}",
            RuntimeWarning,
            stacklevel=3,
        )
        df = df[finite]
    if len(df) == 0:
        raise ValueError(f"{func}: no rows with a finite {column!r} to plot")
    return df


def _ordered_levels(values: pd.Series, preferred: Sequence[str]) -> List[str]:
    present = list(dict.fromkeys(str(v) for v in values))
    return [v for v in preferred if v in present] + sorted(v for v in present if v not in preferred)


def _sorted_numeric_levels(values: pd.Series) -> list:
    levels = list(pd.unique(values))
    try:
        return sorted(levels)
    except TypeError:
        return sorted(levels, key=str)


def _check_order(order: Optional[Sequence[str]], methods: Sequence[str], func: str) -> Optional[List[str]]:
    if order is None:
        return None
    order = [str(m) for m in order]
    missing = [m for m in methods if m not in order]
    if missing:
        raise ValueError(f"{func}: order leaves out method(s) present in the data: {missing}")
    return [m for m in order if m in methods]


def _method_axis_width(n_methods: int) -> float:
    return max(3.2, 0.85 * n_methods + 1.2)


def _style_method_axis(ax, order: Sequence[str], extra: Optional[Dict[str, str]] = None) -> None:
    """Method names as tick labels (optionally a second line), the highlight bold and shaded."""
    ax.set_xticks(range(len(order)))
    labels = [m if not extra or m not in extra else f"{m}\n{extra[m]}" for m in order]
    rotate = len(order) > 3 or max(len(m) for m in order) > 14
    ax.set_xticklabels(labels, rotation=30 if rotate else 0, ha="right" if rotate else "center",
                       rotation_mode="anchor" if rotate else "default")
    ax.set_xlim(-0.5, len(order) - 0.5)
    for tick, method in zip(ax.get_xticklabels(), order):
        if method == HIGHLIGHT_METHOD:
            tick.set_fontweight("bold")
            tick.set_color(METHOD_COLOURS[HIGHLIGHT_METHOD])
    if HIGHLIGHT_METHOD in order:
        i = list(order).index(HIGHLIGHT_METHOD)
        ax.axvspan(i - 0.5, i + 0.5, color=METHOD_COLOURS[HIGHLIGHT_METHOD], alpha=0.07, zorder=0, lw=0)
    ax.set_xlabel("method")
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)


def _drop_legend(ax) -> None:
    legend = ax.get_legend()
    if legend is not None:
        legend.remove()


def _box(ax, data: pd.DataFrame, y: str, order: Sequence[str], palette: Dict[str, str], **kwargs) -> None:
    # hue = x with dodge=False colours the boxes per method on seaborn 0.12 and 0.13.
    with warnings.catch_warnings():
        # seaborn <= 0.13.2 passes ``vert=`` to Axes.bxp, deprecated in matplotlib 3.11
        warnings.filterwarnings("ignore", message=r".*vert: bool was deprecated", category=DeprecationWarning)
        sns.boxplot(
            data=data, x="method", y=y, order=order, hue="method", hue_order=order,
            palette=palette, dodge=False, saturation=1.0, ax=ax, **kwargs,
        )
    _drop_legend(ax)


# --------------------------------------------------------------------------- #
# manipulation
# --------------------------------------------------------------------------- #
def plot_deviation(
    df: pd.DataFrame,
    *,
    order: Optional[Sequence[str]] = None,
    show_accuracy: bool = True,
    title: str = "Manipulating the neurons of each method's path",
) -> Figure:
    """Box plots of the probability deviation per method, one panel per operation.

    ``df`` columns: ``image, label, method, operation ("remove"|"enhance"),
    p_before, p_after, prob_deviation, correct_before, correct_after`` (one row
    per image, method and operation). Panels: ``remove`` then ``enhance`` (then
    any other operation, alphabetically), those present only. Methods are ordered
    by the median of ``|prob_deviation|`` over all rows, largest first (same
    order in every panel), unless ``order`` is given. A horizontal line marks 0.
    With ``show_accuracy`` each method's tick label carries its accuracy
    deviation (top-1 accuracy after minus before). Rows whose
    ``prob_deviation`` is not finite (``p_before = 0``) are dropped with a
    warning.
    """
    func = "plot_deviation"
    _validate(df, DEVIATION_COLUMNS, func)
    data = pd.DataFrame({
        "method": df["method"].astype(str),
        "operation": df["operation"].astype(str),
        "image": df["image"],
        "prob_deviation": _numeric(df, "prob_deviation", func),
        "correct_before": _numeric(df, "correct_before", func),
        "correct_after": _numeric(df, "correct_after", func),
    }, index=df.index)
    data = _drop_non_finite(data, "prob_deviation", func)

    methods = list(dict.fromkeys(data["method"]))
    magnitude = data.assign(mag=data["prob_deviation"].abs()).groupby("method")["mag"].median()
    order = _check_order(order, methods, func) or sorted(methods, key=lambda m: (-magnitude[m], m))
    operations = _ordered_levels(data["operation"], _OPERATION_ORDER)
    palette = method_palette(order)

    width = _method_axis_width(len(order))
    fig, axes = plt.subplots(
        1, len(operations), figsize=(width * len(operations) + 0.6, 4.8),
        squeeze=False, layout="constrained",
    )
    for ax, operation in zip(axes[0], operations):
        sub = data[data["operation"] == operation]
        _box(ax, sub, "prob_deviation", order, palette, width=0.6, fliersize=2.5, linewidth=1.0)
        ax.axhline(0.0, color="black", lw=1.0, ls="-", zorder=1.5, gid="zero-line")
        extra = None
        if show_accuracy:
            acc = sub.groupby("method")[["correct_before", "correct_after"]].mean()
            extra = {m: f"Δacc {acc.loc[m, 'correct_after'] - acc.loc[m, 'correct_before']:+.2f}"
                     for m in acc.index}
        _style_method_axis(ax, order, extra)
        ax.set_ylabel(_DEVIATION_YLABEL)
        n_images = sub["image"].nunique()
        heading = _OPERATION_TITLES.get(operation, operation)
        if operation == "remove":
            heading = f"remove (path neurons {_replaced_by(_table_ablation(df), plural=True)})"
        ax.set_title(f"{heading}\n{n_images} image{'s' if n_images != 1 else ''}")
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- #
# JAS
# --------------------------------------------------------------------------- #
def plot_jas(
    df: pd.DataFrame,
    *,
    kind: str = "box",
    order: Optional[Sequence[str]] = None,
    max_points: int = 300,
    seed: int = 0,
    title: str = "Joint attribution score (JAS) of each method's path\n"
                 "(F: target-class probability by default, or logit)",
) -> Figure:
    """Distribution of the JAS of each method's path, one panel per mode.

    ``df`` columns: ``image, label, method, mode ("gate"|"paper"), jas``.
    ``kind`` is ``"box"`` or ``"violin"``; the individual images are drawn on top
    as a jittered strip (at most ``max_points`` per method and panel, a seeded
    sample). Panels: ``gate`` then ``paper`` (then other modes), those present.
    Methods are ordered by median JAS, highest first, in the first panel's
    mode (``gate`` when present: the two modes have different scales, so they
    are not pooled); methods absent there follow by median in the next mode.
    The order is shared by all panels; pass ``order`` to fix it. Each panel has
    its own y scale. Rows with a non-finite ``jas`` are dropped with a warning.
    """
    func = "plot_jas"
    _validate(df, JAS_COLUMNS, func)
    if kind not in ("box", "violin"):
        raise ValueError(f"{func}: kind must be 'box' or 'violin'; got {kind!r}")
    data = pd.DataFrame({
        "method": df["method"].astype(str),
        "mode": df["mode"].astype(str),
        "image": df["image"],
        "jas": _numeric(df, "jas", func),
    }, index=df.index)
    data = _drop_non_finite(data, "jas", func)

    modes = _ordered_levels(data["mode"], _MODE_ORDER)
    methods = list(dict.fromkeys(data["method"]))
    if order is not None:
        order = _check_order(order, methods, func)
    else:
        order = []
        for mode in modes:
            medians = data[data["mode"] == mode].groupby("method")["jas"].median()
            order += sorted((m for m in medians.index if m not in order), key=lambda m: (-medians[m], m))
    palette = method_palette(order)
    rng = np.random.default_rng(seed)

    width = _method_axis_width(len(order))
    fig, axes = plt.subplots(
        1, len(modes), figsize=(width * len(modes) + 0.6, 4.6), squeeze=False, layout="constrained",
    )
    for ax, mode in zip(axes[0], modes):
        sub = data[data["mode"] == mode]
        if kind == "box":
            _box(ax, sub, "jas", order, palette, width=0.6, showfliers=False, linewidth=1.0)
        else:
            sns.violinplot(
                data=sub, x="method", y="jas", order=order, hue="method", hue_order=order,
                palette=palette, dodge=False, saturation=1.0, cut=0, inner="quartile", linewidth=1.0,
                ax=ax,
            )
            _drop_legend(ax)
        points = sub.groupby("method", group_keys=False)[list(sub.columns)].apply(
            lambda g: g if len(g) <= max_points else g.iloc[rng.choice(len(g), max_points, replace=False)]
        )
        sns.stripplot(
            data=points, x="method", y="jas", order=order, color="0.15", size=2.5,
            alpha=0.45, jitter=0.18, ax=ax, zorder=3,
        )
        ax.axhline(0.0, color="black", lw=0.8, ls=":", zorder=1.5, gid="zero-line")
        _style_method_axis(ax, order)
        ax.set_ylabel("JAS of the path (units of F)")
        n_images = sub["image"].nunique()
        heading = _MODE_TITLES.get(mode, f'mode {mode!r}')
        ablation = _table_ablation(df)
        if mode == "gate" and ablation not in (None, "zero"):
            heading = f"mode \"gate\" (exact removal effect: F(x) − F(x; path {_replaced_by(ablation)}))"
        ax.set_title(f"{heading}\n{n_images} image{'s' if n_images != 1 else ''}")
    fig.suptitle(title)
    return fig


# --------------------------------------------------------------------------- #
# pruning
# --------------------------------------------------------------------------- #
def _weighted(values: np.ndarray, weights: np.ndarray) -> float:
    total = weights.sum()
    return float(np.dot(values, weights) / total) if total > 0 else float("nan")


def _aggregate_pruning(data: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for (k, p, depth), g in data.groupby(["k", "p", "depth"], sort=False):
        w = g["images"].to_numpy(dtype=float)
        rows.append({
            "k": k, "p": p, "depth": depth,
            "mean_prob": _weighted(g["mean_prob"].to_numpy(dtype=float), w),
            "accuracy": _weighted(g["accuracy"].to_numpy(dtype=float), w),
            "mean_prob_unpruned": _weighted(g["mean_prob_unpruned"].to_numpy(dtype=float), w),
            "accuracy_unpruned": _weighted(g["accuracy_unpruned"].to_numpy(dtype=float), w),
        })
    return pd.DataFrame(rows)


def plot_pruning(
    df: pd.DataFrame,
    *,
    title: str = "Pruning all but the class-consensus neurons",
) -> Figure:
    """Pruning curves: metric against the pruning probability ``p``, a line per ``k``.

    ``df`` columns: ``k, p, depth, label, images, mean_prob, accuracy,
    mean_prob_unpruned, accuracy_unpruned`` (one row per class and grid point).
    Per grid point ``(k, p, depth)`` the classes are averaged weighted by
    ``images``. Columns of panels: one per ``depth`` (number of pruned layers);
    top row: mean true-class probability, bottom row: top-1 accuracy. The
    unpruned model is a dashed horizontal line in each panel (one grey line, or
    one per ``k`` in that ``k``'s colour if the evaluated images differ
    between the ``k``).
    """
    func = "plot_pruning"
    _validate(df, PRUNING_COLUMNS, func)
    data = df[list(PRUNING_COLUMNS)].copy()
    for column in ("p", "images", "mean_prob", "accuracy", "mean_prob_unpruned", "accuracy_unpruned"):
        data[column] = _numeric(df, column, func)
    if (data["images"] < 0).any():
        raise ValueError(f"{func}: column 'images' has negative counts")
    agg = _aggregate_pruning(data)
    agg = agg[np.isfinite(agg[["p", "mean_prob", "accuracy"]].to_numpy(dtype=float)).all(axis=1)]
    if len(agg) == 0:
        raise ValueError(f"{func}: no grid point with images > 0 and finite values to plot")

    depths = _sorted_numeric_levels(agg["depth"])
    ks = _sorted_numeric_levels(agg["k"])
    k_colours = dict(zip(ks, sns.color_palette("viridis", len(ks) + 1)[: len(ks)]))
    p_values = sorted(agg["p"].unique())

    fig, axes = plt.subplots(
        2, len(depths), figsize=(3.6 * len(depths) + 1.8, 6.6), sharex=True, sharey="row",
        squeeze=False, layout="constrained",
    )
    metrics = (
        ("mean_prob", "mean_prob_unpruned", "mean true-class probability"),
        ("accuracy", "accuracy_unpruned", "top-1 accuracy (fraction)"),
    )
    for col, depth in enumerate(depths):
        at_depth = agg[agg["depth"] == depth]
        for row, (metric, reference, ylabel) in enumerate(metrics):
            ax = axes[row, col]
            for k in ks:
                line = at_depth[at_depth["k"] == k].sort_values("p")
                if len(line):
                    ax.plot(line["p"], line[metric], marker="o", ms=4, lw=1.6,
                            color=k_colours[k], label=f"k = {k}")
            refs = at_depth.groupby("k")[reference].mean().dropna()
            if len(refs) and np.allclose(refs.to_numpy(), refs.iloc[0], rtol=1e-6, atol=1e-9):
                ax.axhline(refs.iloc[0], color="0.35", ls="--", lw=1.2, label="unpruned",
                           gid="unpruned-reference")
            else:
                for k, value in refs.items():
                    ax.axhline(value, color=k_colours[k], ls="--", lw=1.0, alpha=0.8,
                               label=f"unpruned (k = {k} images)", gid="unpruned-reference")
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"depth = {depth} (first {depth} layers pruned)")
            if row == 1:
                ax.set_xlabel("pruning probability p")
            if col == 0:
                ax.set_ylabel(ylabel)
            else:
                ax.tick_params(labelleft=True)
            if len(p_values) <= 8:
                ax.set_xticks(p_values)
    seen = {}
    for ax in axes[0]:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            seen.setdefault(label, handle)
    # k lines first (in k order), then the unpruned reference(s)
    seen = {lab: seen[lab] for lab in sorted(seen, key=lambda lab: lab.startswith("unpruned"))}
    axes[0, -1].legend(seen.values(), seen.keys(), title="consensus neurons per layer",
                       loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
                       title_fontsize="small", frameon=False)
    fig.suptitle(f"{title}\n(p: probability of zeroing each non-consensus neuron; "
                 "classes averaged, weighted by number of images)")
    return fig


def plot_faithfulness(summary: pd.DataFrame, *, title: str = "Faithfulness against sparsity") -> Figure:
    """Faithfulness-sparsity curves: mean target probability and accuracy on held-out images
    against the units kept per layer, a line per method (the random-ranking control dashed).

    ``summary``: :func:`captum_paths.evaluation.faithfulness.faithfulness_summary` (columns ``method,
    ablation, n, mean_prob, accuracy, mean_prob_full, accuracy_full``); a column of panels per
    ablation. The unablated model is a grey dashed line; ``mean_prob_ci_low`` /
    ``mean_prob_ci_high``, when present, shade the interval of the searched paths' and the
    random ranking's probability curves.
    """
    needed = ("method", "ablation", "n", "mean_prob", "accuracy", "mean_prob_full", "accuracy_full")
    _validate(summary, needed, "plot_faithfulness")
    ablations = list(dict.fromkeys(summary["ablation"]))
    methods = list(dict.fromkeys(summary["method"]))
    palette = method_palette([m for m in methods if m != "random ranking"])
    # 95% intervals over the classes for the searched paths and the control only: seven bands hide the lines
    banded = {primary_method([m for m in methods if m != "random ranking"] or methods), "random ranking"}
    fig, axes = plt.subplots(2, len(ablations), figsize=(4.4 * len(ablations) + 2.2, 6.4), sharex=True,
                             sharey="row", squeeze=False, layout="constrained")
    metrics = (("mean_prob", "mean_prob_full", "mean target probability"),
               ("accuracy", "accuracy_full", "top-1 accuracy (fraction)"))
    for col, ablation in enumerate(ablations):
        part = summary[summary["ablation"] == ablation]
        for row, (metric, reference, ylabel) in enumerate(metrics):
            ax = axes[row, col]
            for method in methods:
                line = part[part["method"] == method].sort_values("n")
                control = method == "random ranking"
                color = "0.45" if control else palette[method]
                ax.plot(line["n"], line[metric], marker="o", ms=3, lw=1.6, label=method, color=color,
                        ls="--" if control else "-")
                if metric == "mean_prob" and "mean_prob_ci_low" in line and method in banded:
                    ax.fill_between(line["n"], line["mean_prob_ci_low"], line["mean_prob_ci_high"], color=color,
                                    alpha=0.12, lw=0)
            ax.axhline(float(part[reference].mean()), color="0.6", ls=":", lw=1.2, label="unablated model")
            ax.set_xscale("symlog", linthresh=1)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.set_title(f"every other unit {_replaced_by(ablation)}")
            if row == 1:
                ax.set_xlabel("units kept per layer (N)")
            if col == 0:
                ax.set_ylabel(ylabel)
    handles, labels = axes[0, -1].get_legend_handles_labels()
    axes[0, -1].legend(handles, labels, loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small",
                       frameon=False)
    shaded = "; shaded: 95% interval over the classes" if "mean_prob_ci_low" in summary else ""
    fig.suptitle(f"{title}\n(per class the units its paths use most are kept; held-out images; classes averaged"
                 f"{shaded})")
    return fig


def plot_circuits(table: pd.DataFrame, fraction: float = 0.8, *,
                  title: str = "Class circuits against rankings of units") -> Figure:
    """Faithfulness against sparsity of class circuits: the share of the unablated target probability
    kept on held-out images against the share of all units kept, averaged over the classes; a line
    per ranking (the random ranking dashed) and a star per learned circuit strength.

    ``table``: :func:`captum_paths.evaluation.circuits.circuit_study`'s (columns ``method, ablation,
    label, strength, fraction_kept, mean_prob, mean_prob_full``). The dotted line is ``fraction``.

    Example::

        >>> table, _ = circuit_study(model, images, labels, {"neuron-path": result})
        >>> save_figure(plot_circuits(table), "circuits")
    """
    from captum_paths.evaluation.circuits import LEARNED, RANDOM, circuit_summary

    needed = ("method", "ablation", "label", "strength", "fraction_kept", "mean_prob", "mean_prob_full")
    _validate(table, needed, "plot_circuits")
    summary = circuit_summary(table, fraction)
    summary = summary[summary["fraction_kept"] > 0]  # a budget of no unit has no place on a log axis
    methods = [m for m in dict.fromkeys(summary["method"]) if m not in (LEARNED, RANDOM)]
    palette = method_palette(methods)
    fig, ax = plt.subplots(figsize=(7.2, 4.2), layout="constrained")
    for method in methods + [RANDOM]:
        line = summary[summary["method"] == method].sort_values("fraction_kept")
        if not len(line):
            continue
        control = method == RANDOM
        ax.plot(line["fraction_kept"], line["fraction_of_full"], marker="o", ms=3, lw=1.6, label=method,
                color="0.45" if control else palette[method], ls="--" if control else "-")
    learned = summary[summary["method"] == LEARNED].sort_values("fraction_kept")
    if len(learned):
        ax.plot(learned["fraction_kept"], learned["fraction_of_full"], marker="*", ms=13, ls="none", color="black",
                label="learned circuit")
        for row in learned.itertuples(index=False):
            ax.annotate(f"λ={row.strength:g}", (row.fraction_kept, row.fraction_of_full), textcoords="offset points",
                        xytext=(6, -10), fontsize="x-small")
    ax.axhline(fraction, color="0.6", ls=":", lw=1.2, label=f"{fraction:.0%} of the unablated model")
    ax.set_xscale("log")
    ax.set_xlabel("share of all units kept")
    ax.set_ylabel("target probability / unablated")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), fontsize="small", frameon=False)
    ablation = _table_ablation(table)
    classes = table["label"].nunique()
    ax.set_title(f"{title}\n(every other unit {_replaced_by(ablation)}; held-out images; {classes} classes averaged)",
                 fontsize="medium")
    return fig
