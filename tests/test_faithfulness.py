"""Faithfulness-sparsity curves: the ranking against brute-force counts, and the curve's ends
against literal forwards: every unit kept is the model itself, none kept is every site zeroed
(or set to its mean) by hooks written here."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from captum_paths import LayerProgressiveNeuronPath, NeuronSites
from captum_paths.demo import load_demo_data, load_demo_model
from captum_paths.evaluation import split_by_class
from captum_paths.evaluation.faithfulness import (
    RANDOM_RANKING,
    default_ns,
    faithfulness_study,
    faithfulness_summary,
    fewest_units,
    keep_units,
    random_ranking,
    unit_ranking,
)


@pytest.fixture(scope="module")
def setting():
    torch.manual_seed(0)
    model = load_demo_model()
    images, labels = load_demo_data("test")
    pick = torch.cat([torch.nonzero(labels == c).flatten()[:4] for c in range(3)])
    images, labels = images[pick], labels[pick]
    result = LayerProgressiveNeuronPath(model).attribute(images, target=labels, n_steps=4)
    return model, images, labels, result


def test_the_ranking_counts_paths_then_contributions(setting):
    model, _, _, result = setting
    sites = NeuronSites.from_model(model)
    ranking = unit_ranking(result, sites)
    paths, contrib = result.paths, result.contributions
    for layer, order in enumerate(ranking):
        assert sorted(order.tolist()) == list(range(sites.widths[layer]))
        count = {}
        total = {}
        for i in range(paths.shape[0]):
            for j, n in enumerate(paths[i, layer].tolist()):
                count[n] = count.get(n, 0) + 1
                total[n] = total.get(n, 0.0) + float(contrib[i, layer, j])
        expected = sorted(count, key=lambda n: (-count[n], -total[n]))
        assert order[: len(expected)].tolist() == expected
    again = unit_ranking(result, sites)
    assert all(torch.equal(a, b) for a, b in zip(ranking, again))  # seeded
    control = random_ranking(sites, seed=3)
    assert [sorted(c.tolist()) for c in control] == [list(range(w)) for w in sites.widths]


def _literal_probs(model, images, edit, rows):
    """Softmax with every block's ``mlp.act`` at the token ``rows`` replaced by ``edit(layer, act)``."""
    handles = []
    for layer, block in enumerate(model.blocks):
        def hook(_m, _a, out, layer=layer):
            out = out.clone()
            out[:, rows] = edit(layer, out[:, rows])
            return out
        handles.append(block.mlp.act.register_forward_hook(hook))
    try:
        with torch.no_grad():
            return model(images).double().softmax(1)
    finally:
        for h in handles:
            h.remove()


@pytest.mark.parametrize("tokens", ["all", "selected"])
def test_the_curve_runs_from_every_site_ablated_to_the_model_itself(setting, tokens):
    model, images, labels, result = setting
    sites = NeuronSites.from_model(model)
    width = sites.width
    rows = slice(None) if tokens == "all" else slice(0, 1)  # every token, or the class token the paths read
    df = faithfulness_study(model, images, labels, {"neuron-path": result}, ns=[0, 1, 4, width], seed=0,
                            tokens=tokens)
    split = split_by_class(labels, 0.5, 0)
    ranking_images = torch.tensor(sorted(i for s in split.values() for i in s["consensus"]))
    with torch.no_grad():
        means = []
        for block in model.blocks:
            h = block.mlp.act.register_forward_hook(lambda m, a, out: seen.append(out[:, rows].double()))
            seen = []
            model(images[ranking_images])
            h.remove()
            means.append(seen[0].mean(0))
    for label, parts in split.items():
        held = torch.tensor(parts["evaluation"])
        x = images[held]
        full = _literal_probs(model, x, lambda layer, act: act, rows)
        zeroed = _literal_probs(model, x, lambda layer, act: torch.zeros_like(act), rows)
        meaned = _literal_probs(model, x, lambda layer, act: means[layer].to(act.dtype).expand_as(act), rows)
        for method in ("neuron-path", RANDOM_RANKING):
            got = df[(df.method == method) & (df.label == label)]
            top = got[got.n == width]
            assert top["mean_prob"].tolist() == pytest.approx([float(full[:, label].mean())] * 2, abs=1e-12)
            assert top["mean_prob_full"].tolist() == pytest.approx([float(full[:, label].mean())] * 2, abs=1e-12)
            none = got[got.n == 0].set_index("ablation")
            assert none.loc["zero", "mean_prob"] == pytest.approx(float(zeroed[:, label].mean()), abs=1e-9)
            assert none.loc["mean", "mean_prob"] == pytest.approx(float(meaned[:, label].mean()), abs=1e-6)
            assert none.loc["zero", "accuracy"] == float((zeroed.argmax(1) == label).double().mean())
    assert set(df["units_kept"]) == {0, 6, 24, 6 * width}


def test_batched_configurations_equal_one_forward_each(setting):
    model, images, labels, result = setting
    sites = NeuronSites.from_model(model)
    df = faithfulness_study(model, images, labels, {"neuron-path": result}, ns=[2], ablations=["zero"],
                            random_control=False, batch_size=3, tokens="selected")
    split = split_by_class(labels, 0.5, 0)
    for label, parts in split.items():
        ranked = torch.tensor(parts["consensus"])
        order = unit_ranking(result.paths[ranked], sites, result.contributions[ranked])
        keep = [torch.zeros(w, dtype=torch.bool).index_fill_(0, o[:2], True) for w, o in zip(sites.widths, order)]
        with torch.no_grad(), keep_units(sites, keep):
            probs = model(images[torch.tensor(parts["evaluation"])]).double().softmax(1)
        got = df[df.label == label]["mean_prob"].item()
        assert got == pytest.approx(float(probs[:, label].mean()), abs=1e-12)


def test_summary_and_fewest_units():
    df = pd.DataFrame({
        "method": ["a"] * 4 + ["b"] * 4, "ablation": ["zero"] * 8, "label": [0, 0, 1, 1] * 2,
        "n": [1, 2, 1, 2] * 2, "units_kept": [6, 12, 6, 12] * 2, "images": [2] * 8,
        "mean_prob": [0.5, 0.9, 0.7, 0.9, 0.1, 0.2, 0.1, 0.3], "accuracy": [1.0] * 8,
        "mean_prob_full": [1.0] * 8, "accuracy_full": [1.0] * 8})
    summary = faithfulness_summary(df)
    row = summary.set_index(["method", "n"]).loc[("a", 1)]
    assert row["fraction_of_full"] == pytest.approx(0.6)
    assert 0.5 <= row["mean_prob_ci_low"] <= 0.6 <= row["mean_prob_ci_high"] <= 0.7  # two classes: 0.5 and 0.7
    same = summary.set_index(["method", "n"]).loc[("a", 2)]  # both classes 0.9
    assert same["mean_prob_ci_low"] == same["mean_prob_ci_high"] == pytest.approx(0.9)
    fewest = fewest_units(df, 0.8).set_index("method")
    assert fewest.loc["a", "n"] == 2 and fewest.loc["a", "units_kept"] == 12
    assert np.isnan(fewest.loc["b", "n"]) or fewest.loc["b", "n"] is None


def test_bad_arguments_are_named(setting):
    model, images, labels, result = setting
    sites = NeuronSites.from_model(model)
    with pytest.raises(ValueError, match="ablations must hold values of"):
        faithfulness_study(model, images, labels, {"p": result}, ablations=["half"])
    with pytest.raises(ValueError, match="tokens must be 'all' or 'selected'"):
        faithfulness_study(model, images, labels, {"p": result}, tokens="cls")
    with pytest.raises(ValueError, match="ns must be a non-empty list"):
        faithfulness_study(model, images, labels, {"p": result}, ns=[-1])
    with pytest.raises(ValueError, match=r"paths must be an \(N, L, k\) tensor with L = 6"):
        unit_ranking(result.paths[:, :3], sites)
    with pytest.raises(ValueError, match="ablation='mean' needs means"):
        with keep_units(sites, [torch.ones(w, dtype=torch.bool) for w in sites.widths], "mean"):
            pass
    assert default_ns(sites) == [0, 1, 2, 4, 8, 16, 32, 64, 128, 256]
