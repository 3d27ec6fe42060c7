"""Uncertainty of the evaluation: bootstrap intervals (coverage), Holm's adjustment against the
sequential procedure, the signed-rank p-value against an enumeration of every sign, and the
paired comparisons against differences taken by hand."""
from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from captum_paths.statistics import BETTER, holm, mean_interval, method_intervals, paired_comparisons, per_image_values


def test_bca_intervals_cover_the_true_mean_about_as_often_as_they_say():
    rng = np.random.default_rng(0)
    covered = 0
    trials = 200
    for i in range(trials):
        x = rng.exponential(1.0, size=40)  # skewed, true mean 1
        _, low, high, how = mean_interval(x, n_resamples=500, seed=i)
        assert how == "BCa" and low < x.mean() < high
        covered += low <= 1.0 <= high
    assert 0.88 <= covered / trials <= 0.99


def test_large_samples_get_a_percentile_interval_close_to_the_normal_one():
    x = np.random.default_rng(1).normal(2.0, 3.0, size=6000)
    mean, low, high, how = mean_interval(x, seed=0)
    half = 1.96 * x.std(ddof=1) / np.sqrt(len(x))
    assert how == "percentile" and mean == pytest.approx(x.mean())
    assert low == pytest.approx(mean - half, abs=0.1 * half) and high == pytest.approx(mean + half, abs=0.1 * half)


def test_degenerate_samples():
    assert mean_interval([0.5, 0.5, 0.5]) == (0.5, 0.5, 0.5, "constant")
    mean, low, high, _ = mean_interval([0.25, float("nan")])
    assert mean == 0.25 and np.isnan(low) and np.isnan(high)
    assert np.isnan(mean_interval([])[0])
    with pytest.raises(ValueError, match="level must be between 0 and 1; got 95"):
        mean_interval([1.0, 2.0], level=95)


def _holm_rejections(p, alpha):
    """Holm's procedure as written: reject in increasing p while p_(j) <= alpha / (m - j)."""
    order = np.argsort(p, kind="stable")
    rejected = set()
    for j, i in enumerate(order):
        if p[i] > alpha / (len(p) - j):
            break
        rejected.add(int(i))
    return rejected


def test_holm_adjusted_p_values_reject_what_the_procedure_rejects():
    assert holm([0.01, 0.04, 0.03, 0.005]).tolist() == pytest.approx([0.03, 0.06, 0.06, 0.02])
    rng = np.random.default_rng(2)
    for _ in range(50):
        p = rng.uniform(0, 0.2, size=rng.integers(1, 9))
        adjusted = holm(p)
        for alpha in np.linspace(0.001, 0.3, 60):
            assert set(np.flatnonzero(adjusted <= alpha).tolist()) == _holm_rejections(p, alpha)
    out = holm([0.02, float("nan"), 0.5])
    assert out[0] == pytest.approx(0.04) and np.isnan(out[1]) and out[2] == pytest.approx(0.5)


def _signed_rank_p(diff):
    """Two-sided exact signed-rank p-value by enumerating every sign of the ranked |differences|."""
    ranks = pd.Series(np.abs(diff)).rank().to_numpy()
    observed = ranks[diff > 0].sum()
    stats = np.array([sum(r for r, s in zip(ranks, signs) if s) for signs in itertools.product([0, 1],
                                                                                            repeat=len(diff))])
    low = min(observed, ranks.sum() - observed)
    return min(1.0, 2 * np.mean(stats <= low))


def _values(rng, n=9):
    rows = []
    for image in range(n):
        base = rng.normal()
        for method, shift in (("neuron-path", 0.3), ("activation", 0.0), ("random", -0.5)):
            rows.append({"image": image, "method": method, "jas_gate": base + shift + rng.normal(0, 0.2),
                         "prob_deviation_remove": -(base + shift) + rng.normal(0, 0.2)})
    return pd.DataFrame(rows)


def test_paired_comparisons_against_differences_by_hand():
    values = _values(np.random.default_rng(3))
    table = paired_comparisons(values, "neuron-path", n_resamples=500)
    assert len(table) == 4 and set(table["method"]) == {"activation", "random"}
    for row in table.itertuples():
        ref = values[values["method"] == "neuron-path"].set_index("image")[row.quantity]
        other = values[values["method"] == row.method].set_index("image")[row.quantity]
        diff = (ref - other).to_numpy()
        assert row.n == 9 and row.mean_difference == pytest.approx(diff.mean())
        assert row.ci_low < row.mean_difference < row.ci_high
        assert row.reference_better == pytest.approx(np.mean(BETTER[row.quantity] * diff > 0))
        assert row.wilcoxon_p == pytest.approx(_signed_rank_p(diff), rel=1e-9)
    assert table["holm_p"].tolist() == pytest.approx(holm(table["wilcoxon_p"]).tolist())


def test_identical_paths_are_ties_and_a_missing_reference_gives_an_empty_table():
    values = _values(np.random.default_rng(4))
    same = values[values["method"] == "neuron-path"].assign(method="copy")
    table = paired_comparisons(pd.concat([values, same]), "neuron-path")
    row = table[(table["method"] == "copy") & (table["quantity"] == "jas_gate")].iloc[0]
    assert row.mean_difference == 0 and row.reference_better == 0.5 and row.wilcoxon_p == 1.0
    assert paired_comparisons(values, "nope").empty


def test_per_image_values_and_intervals_from_the_evaluation_tables():
    deviation = pd.DataFrame({"image": [0, 0, 1, 1, 0, 0, 1, 1], "label": 0,
                              "method": ["a"] * 4 + ["b"] * 4, "operation": ["remove", "enhance"] * 4,
                              "prob_deviation": [-0.5, 0.1, -0.3, 0.2, -0.1, 0.0, -0.2, 0.05]})
    jas = pd.DataFrame({"image": [0, 1, 0, 1], "label": 0, "method": ["a", "a", "b", "b"], "mode": "gate",
                        "jas": [0.4, 0.2, 0.1, 0.15]})
    values = per_image_values(deviation, jas)
    assert list(values.columns) == ["image", "method", "jas_gate", "prob_deviation_remove", "prob_deviation_enhance"]
    a = values[values["method"] == "a"].set_index("image")
    assert a.loc[1, "prob_deviation_remove"] == -0.3 and a.loc[0, "jas_gate"] == 0.4
    intervals = method_intervals(values)
    assert intervals.set_index(["method", "quantity"]).loc[("b", "jas_gate"), "mean"] == pytest.approx(0.125)
    assert (intervals["n"] == 2).all()


def _record(method, image, path, jas):
    return {"method": method, "image_id": image, "path": path, "jas": jas, "label": 0}


def test_path_agreement_counts_units_paths_and_jas_differences():
    from captum_paths.analysis import path_agreement

    a = [_record("m", "x", [[1, 2], [3, 4]], 0.5), _record("m", "y", [[5, 6], [7, 8]], 0.4),
         _record("m", "z", [[1, 1], [1, 1]], 0.1), _record("only-a", "x", [[0, 0], [0, 0]], 0.0)]
    b = [_record("m", "x", [[2, 1], [3, 9]], 0.3), _record("m", "y", [[5, 6], [7, 8]], 0.4),
         _record("m", "w", [[1, 1], [1, 1]], 0.2)]
    tables = path_agreement(a, b)
    row = tables["summary"].set_index("method").loc["m"]
    # images x and y: x keeps {1, 2} (order does not count) and 3 of {3, 4}; y is equal
    assert row["images"] == 2 and row["same_units"] == pytest.approx((1 + 0.5 + 1 + 1) / 4)
    assert row["same_paths"] == pytest.approx(0.5)
    assert row["jas_difference"] == pytest.approx(0.1) and row["max_abs_jas_difference"] == pytest.approx(0.2)
    assert tables["layers"]["same_units"].tolist() == pytest.approx([1.0, 0.75])
    with pytest.raises(ValueError, match=r"methods \['only-a'\] are not in both"):
        path_agreement(a, b, methods=["only-a"])
    with pytest.raises(ValueError, match="different models or k"):
        path_agreement(a, [_record("m", "x", [[1], [2]], 0.5)])
