"""Tests of the evaluation figures (captum_paths.plots.evaluation) on synthetic data."""
from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from captum_paths.plots.figures import save_figure

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from captum_paths.plots.evaluation import (  # noqa: E402
    METHOD_COLOURS,
    method_palette,
    plot_deviation,
    plot_jas,
    plot_pruning,
)

METHODS = ["neuron-path", "activation", "knowledge-neurons", "conductance", "influence-pattern", "random"]
DEVIATION_YLABEL = "probability deviation p_edit(y)/p(y) − 1"


# --------------------------------------------------------------------------- #
# synthetic data
# --------------------------------------------------------------------------- #
def _deviation_df(methods=METHODS, operations=("remove", "enhance"), n_images=12, seed=0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i, method in enumerate(methods):
        strength = 0.9 * (1 - i / (len(methods) + 1))  # first method moves the output most
        for operation in operations:
            sign = -1.0 if operation == "remove" else 1.0
            for image in range(n_images):
                p_before = rng.uniform(0.3, 0.95)
                deviation = sign * strength * rng.uniform(0.5, 1.0)
                p_after = p_before * (1 + deviation)
                rows.append(dict(
                    image=image, label=image % 3, method=method, operation=operation,
                    p_before=p_before, p_after=p_after, prob_deviation=deviation,
                    correct_before=True, correct_after=bool(rng.random() > strength / 2),
                ))
    return pd.DataFrame(rows)


def _jas_df(methods=METHODS, modes=("gate", "paper"), n_images=15, seed=1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i, method in enumerate(methods):
        for mode in modes:
            scale = 1.0 if mode == "gate" else 4.0
            for image in range(n_images):
                rows.append(dict(image=image, label=image % 4, method=method, mode=mode,
                                 jas=scale * (0.6 - 0.08 * i + 0.02 * rng.standard_normal())))
    return pd.DataFrame(rows)


def _pruning_df(ks=(1, 3, 5), ps=(0.0, 0.5, 1.0), depths=(2, 4, 6), n_classes=3, seed=2) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for k in ks:
        for p in ps:
            for depth in depths:
                for label in range(n_classes):
                    rows.append(dict(
                        k=k, p=p, depth=depth, label=label, images=5 + 3 * label,
                        mean_prob=0.7 - 0.1 * p * depth / k + 0.01 * rng.standard_normal(),
                        accuracy=0.9 - 0.1 * p * depth / k,
                        mean_prob_unpruned=0.65 + 0.02 * label, accuracy_unpruned=0.85 + 0.05 * label,
                    ))
    return pd.DataFrame(rows)


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _tick_texts(ax) -> list:
    return [t.get_text() for t in ax.get_xticklabels()]


def _tick_methods(ax) -> list:
    """First line of each tick label: the method name."""
    return [t.split("\n")[0] for t in _tick_texts(ax)]


def _has_hline(ax, y: float, gid: str, linestyle: str = None) -> bool:
    for line in ax.lines:
        if line.get_gid() != gid:
            continue
        ydata = np.asarray(line.get_ydata(), dtype=float)
        if np.allclose(ydata, y) and (linestyle is None or line.get_linestyle() == linestyle):
            return True
    return False


def _check_saved(fig: Figure, tmp_path, name: str) -> None:
    png, svg = save_figure(fig, tmp_path / name)
    assert png.name == f"{name}.png" and svg.name == f"{name}.svg"
    data = png.read_bytes()
    assert len(data) > 1000 and data.startswith(b"\x89PNG\r\n\x1a\n")
    text = svg.read_text(encoding="utf-8")
    assert len(text) > 1000 and "<svg" in text


def _patch_colours(ax) -> list:
    return [tuple(np.round(p.get_facecolor(), 3)) for p in ax.patches]


def _rgba(colour) -> tuple:
    return tuple(np.round(to_rgba(colour), 3))


# --------------------------------------------------------------------------- #
# palette
# --------------------------------------------------------------------------- #
def test_method_palette_fixed_and_stable() -> None:
    pal = method_palette(METHODS + ["zeta", "alpha"])
    for method in METHODS:
        assert pal[method] == METHOD_COLOURS[method]
    assert len(set(pal.values())) == len(pal)  # all distinct
    # an unknown name keeps its colour across calls with other method sets
    assert method_palette(["alpha", "neuron-path"])["alpha"] == method_palette(["random", "alpha"])["alpha"]
    many = method_palette([f"m{i}" for i in range(30)])
    assert len(set(many.values())) == 30


# --------------------------------------------------------------------------- #
# deviation
# --------------------------------------------------------------------------- #
def test_plot_deviation(tmp_path) -> None:
    df = _deviation_df()
    fig = plot_deviation(df)
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert len(axes) == 2
    assert "remove" in axes[0].get_title() and "enhance" in axes[1].get_title()
    assert fig.get_suptitle()
    expected = (df.assign(m=df.prob_deviation.abs()).groupby("method")["m"].median()
                .sort_values(ascending=False).index.tolist())
    for ax in axes:
        assert ax.get_ylabel() == DEVIATION_YLABEL
        assert ax.get_xlabel() == "method"
        texts = _tick_texts(ax)
        assert all(any(m in t for t in texts) for m in METHODS)
        assert _tick_methods(ax) == expected  # same order in both panels
        assert all("Δacc" in t for t in texts)
        assert _has_hline(ax, 0.0, "zero-line")
        # one coloured box per method, in its fixed colour
        colours = _patch_colours(ax)
        for method in METHODS:
            assert _rgba(METHOD_COLOURS[method]) in colours
    _check_saved(fig, tmp_path, "deviation")


def test_plot_deviation_options_and_sizes() -> None:
    df = _deviation_df(operations=("remove",))
    fig = plot_deviation(df, order=list(reversed(METHODS)), show_accuracy=False)
    (ax,) = fig.get_axes()
    assert _tick_texts(ax) == list(reversed(METHODS))
    small = plot_deviation(_deviation_df(methods=METHODS[:2], operations=("remove",)))
    assert small.get_figwidth() < fig.get_figwidth()  # width grows with the number of methods
    two = plot_deviation(_deviation_df())
    assert two.get_figwidth() > fig.get_figwidth()  # and with the number of panels
    with pytest.raises(ValueError, match="order leaves out"):
        plot_deviation(df, order=METHODS[:2])


def test_plot_deviation_unknown_method_and_non_finite_rows() -> None:
    df = _deviation_df(methods=["neuron-path", "my-method"])
    df.loc[0, "prob_deviation"] = np.inf
    with pytest.warns(RuntimeWarning, match="dropped 1 row"):
        fig = plot_deviation(df)
    ax = fig.get_axes()[0]
    assert set(_tick_methods(ax)) == {"neuron-path", "my-method"}
    assert _rgba(method_palette(["my-method"])["my-method"]) in _patch_colours(ax)


# --------------------------------------------------------------------------- #
# JAS
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("kind", ["box", "violin"])
def test_plot_jas(tmp_path, kind) -> None:
    df = _jas_df()
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        fig = plot_jas(df, kind=kind)
    assert isinstance(fig, Figure)
    axes = fig.get_axes()
    assert len(axes) == 2
    assert "gate" in axes[0].get_title() and "paper" in axes[1].get_title()
    assert "JAS" in fig.get_suptitle()
    gate = df[df["mode"] == "gate"].groupby("method")["jas"].median().sort_values(ascending=False)
    for ax in axes:
        assert _tick_texts(ax) == gate.index.tolist()  # shared order, highest gate-JAS first
        assert "JAS" in ax.get_ylabel() and "units" in ax.get_ylabel()
        assert ax.get_xlabel() == "method"
        assert _has_hline(ax, 0.0, "zero-line")
        assert ax.collections  # the strip of individual images
        for method in METHODS:
            assert _rgba(METHOD_COLOURS[method]) in (
                _patch_colours(ax) + [tuple(np.round(c.get_facecolor()[0], 3)) for c in ax.collections
                                      if len(c.get_facecolor())]
            )
    _check_saved(fig, tmp_path, f"jas_{kind}")


def test_plot_jas_strip_is_capped_and_mode_subset() -> None:
    df = _jas_df(methods=["neuron-path", "random"], modes=("paper",), n_images=50)
    fig = plot_jas(df, max_points=10)
    (ax,) = fig.get_axes()
    n_points = sum(len(c.get_offsets()) for c in ax.collections)
    assert n_points == 2 * 10
    assert _tick_texts(ax) == ["neuron-path", "random"]
    with pytest.raises(ValueError, match="kind"):
        plot_jas(df, kind="bar")


# --------------------------------------------------------------------------- #
# pruning
# --------------------------------------------------------------------------- #
def test_plot_pruning(tmp_path) -> None:
    df = _pruning_df()
    fig = plot_pruning(df)
    assert isinstance(fig, Figure)
    axes = np.array(fig.get_axes()).reshape(2, 3)
    w = df.groupby(["k", "p", "depth"])
    for col, depth in enumerate((2, 4, 6)):
        top, bottom = axes[0, col], axes[1, col]
        assert f"depth = {depth}" in top.get_title()
        assert bottom.get_xlabel() == "pruning probability p"
        k_lines = [ln for ln in top.lines if ln.get_gid() != "unpruned-reference"]
        assert len(k_lines) == 3  # one line per k
        # the line of k = 1 is the images-weighted mean over classes
        sub = df[(df.depth == depth) & (df.k == 1)]
        expected = [np.average(g.mean_prob, weights=g.images) for _, g in sub.groupby("p")]
        assert np.allclose(k_lines[0].get_ydata(), expected)
        ref_prob = np.average(sub[sub.p == 0].mean_prob_unpruned, weights=sub[sub.p == 0].images)
        ref_acc = np.average(sub[sub.p == 0].accuracy_unpruned, weights=sub[sub.p == 0].images)
        assert _has_hline(top, ref_prob, "unpruned-reference", "--")
        assert _has_hline(bottom, ref_acc, "unpruned-reference", "--")
    assert len(w) == 27
    assert axes[0, 0].get_ylabel() == "mean true-class probability"
    assert axes[1, 0].get_ylabel() == "top-1 accuracy (fraction)"
    assert "Pruning" in fig.get_suptitle()
    legend_texts = [t.get_text() for t in axes[0, -1].get_legend().get_texts()]
    assert legend_texts == ["k = 1", "k = 3", "k = 5", "unpruned"]
    _check_saved(fig, tmp_path, "pruning")


def test_plot_pruning_sizes_and_per_k_reference() -> None:
    one = plot_pruning(_pruning_df(depths=(4,)))
    assert len(one.get_axes()) == 2
    three = plot_pruning(_pruning_df())
    assert three.get_figwidth() > one.get_figwidth()
    df = _pruning_df(depths=(4,))
    df.loc[df.k == 5, "mean_prob_unpruned"] += 0.1  # different evaluation images per k
    fig = plot_pruning(df)
    refs = [ln for ln in fig.get_axes()[0].lines if ln.get_gid() == "unpruned-reference"]
    assert len(refs) == 3 and all(ln.get_linestyle() == "--" for ln in refs)


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(
    "func, make, drop",
    [
        (plot_deviation, _deviation_df, ["prob_deviation", "operation"]),
        (plot_jas, _jas_df, ["jas"]),
        (plot_pruning, _pruning_df, ["images", "accuracy_unpruned"]),
    ],
)
def test_missing_columns_and_empty(func, make, drop) -> None:
    df = make()
    with pytest.raises(ValueError) as info:
        func(df.drop(columns=drop))
    message = str(info.value)
    assert func.__name__ in message and "missing" in message
    assert all(repr(c) in message for c in drop)
    with pytest.raises(ValueError, match=f"{func.__name__}.*empty"):
        func(df.iloc[0:0])
    with pytest.raises(TypeError, match=func.__name__):
        func(df.to_dict("records"))
    assert not plt.get_fignums()  # no figure leaked by a failed call


def test_non_numeric_and_negative_counts() -> None:
    df = _jas_df()
    df["jas"] = df["jas"].astype(object)
    df.loc[3, "jas"] = "oops"
    with pytest.raises(ValueError, match="non-numeric"):
        plot_jas(df)
    pr = _pruning_df()
    pr.loc[0, "images"] = -1
    with pytest.raises(ValueError, match="negative"):
        plot_pruning(pr)
    pr["images"] = 0
    with pytest.raises(ValueError, match="no grid point"):
        plot_pruning(pr)


def test_titles_say_what_removed_units_became():
    import pandas as pd

    from captum_paths.plots.evaluation import plot_deviation, plot_jas

    rows = {"image": [0, 0, 1, 1], "label": [0, 0, 1, 1], "method": ["a"] * 4, "operation": ["remove", "enhance"] * 2,
            "p_before": [.5] * 4, "p_after": [.4, .6, .3, .7], "prob_deviation": [-.2, .2, -.4, .4],
            "correct_before": [1] * 4, "correct_after": [1] * 4}
    for ablation, words in ((None, "set to 0"), ("zero", "set to 0"), ("mean", "set to their mean")):
        table = pd.DataFrame(rows if ablation is None else {**rows, "ablation": [ablation] * 4})
        assert words in plot_deviation(table).axes[0].get_title()
    jas = pd.DataFrame({"image": [0, 1], "label": [0, 1], "method": ["a", "a"], "mode": ["gate"] * 2,
                        "jas": [.1, .2], "ablation": ["mean"] * 2})
    assert "path set to its mean" in plot_jas(jas).axes[0].get_title()
    assert "path zeroed" in plot_jas(jas.drop(columns="ablation")).axes[0].get_title()
