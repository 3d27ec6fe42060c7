"""Evaluation harness: deviation arithmetic on hand-set models, JAS cross-checks, consensus, pruning."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from captum_paths import JointNeuronIntegratedGradients, NeuronSites
from captum_paths.evaluation import (
    DEVIATION_COLUMNS,
    JAS_COLUMNS,
    PRUNING_COLUMNS,
    SUMMARY_COLUMNS,
    class_consensus,
    jas_comparison,
    probability_deviation,
    pruning_study,
    save_table,
    split_by_class,
    summarize_deviation,
)
from captum_paths.evaluation.interventions import prune_neurons, remove_neurons
from captum_paths.search import create_path_method
from _models import tiny_vit as _tiny_vit


# ----------------------------------------------------------------------------- fixtures
class _Toy(nn.Module):
    """logits = fc2(relu(fc1(tokens)))[:, 0] with identity weights: logits = relu(x)."""

    def __init__(self, d: int = 3) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(d, d, bias=False), nn.ReLU(), nn.Linear(d, d, bias=False)
        with torch.no_grad():
            self.fc1.weight.copy_(torch.eye(d))
            self.fc2.weight.copy_(torch.eye(d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (N, 1, d), one token
        return self.fc2(self.act(self.fc1(x)))[:, 0]


def _toy():
    model = _Toy().double()
    return model, NeuronSites(model, [model.act], tokens="cls", width=3)




@pytest.fixture(scope="module")
def tiny():
    model = _tiny_vit()
    torch.manual_seed(1)
    x = torch.randn(12, 3, 16, 16)
    y = torch.tensor([0, 1, 2, 3, 4, 0, 1, 2, 3, 4, 0, 1])
    return model, x, y


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _random_paths(n, L, k, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.stack([torch.randperm(width, generator=g)[:k] for _ in range(L)]) for _ in range(n)])


# --------------------------------------------------------------- deviation arithmetic
def test_probability_deviation_on_a_hand_set_model():
    """logits = relu(x) = [ln 4, ln 2, 0]: softmax [4, 2, 1] / 7, so every number is known."""
    model, sites = _toy()
    x = torch.tensor([[math.log(4), math.log(2), 0.0]], dtype=torch.float64).expand(2, 1, 3).contiguous()
    labels = torch.tensor([0, 2])
    paths = torch.tensor([[[0]], [[1]]])  # image 0: neuron 0; image 1: neuron 1
    df = probability_deviation(model, x, labels, {"toy": paths}, factor=2.0, sites=sites, batch_size=1)
    assert list(df.columns) == list(DEVIATION_COLUMNS)
    assert df["operation"].tolist() == ["remove", "remove", "enhance", "enhance"]
    assert df["image"].tolist() == [0, 1, 0, 1] and df["label"].tolist() == [0, 2, 0, 2]
    np.testing.assert_allclose(df["p_before"], [4 / 7, 1 / 7, 4 / 7, 1 / 7], rtol=1e-12)
    # remove: image 0 -> [0, ln2, 0] = [1, 2, 1]/4; image 1 -> [ln4, 0, 0] = [4, 1, 1]/6
    # enhance: image 0 -> [2 ln4, ln2, 0] = [16, 2, 1]/19; image 1 -> [ln4, ln4, 0] = [4, 4, 1]/9
    np.testing.assert_allclose(df["p_after"], [1 / 4, 1 / 6, 16 / 19, 1 / 9], rtol=1e-12)
    np.testing.assert_allclose(df["prob_deviation"], [-9 / 16, 1 / 6, 9 / 19, -2 / 9], rtol=1e-12)
    assert df["correct_before"].tolist() == [True, False, True, False]
    assert df["correct_after"].tolist() == [False, False, True, False]

    summary = summarize_deviation(df)
    assert list(summary.columns) == ["method"] + list(SUMMARY_COLUMNS)
    remove, enhance = summary.iloc[0], summary.iloc[1]
    assert remove["operation"] == "remove" and enhance["operation"] == "enhance"
    assert remove["mean_prob_deviation"] == pytest.approx((-9 / 16 + 1 / 6) / 2)
    assert enhance["median_prob_deviation"] == pytest.approx((9 / 19 - 2 / 9) / 2)
    assert (remove["accuracy_before"], remove["accuracy_after"], remove["accuracy_deviation"]) == (0.5, 0.0, -0.5)
    assert (enhance["accuracy_before"], enhance["accuracy_after"], enhance["accuracy_deviation"]) == (0.5, 0.5, 0.0)
    assert remove["images"] == 2


def test_summary_per_method_and_class_on_a_hand_made_table():
    df = pd.DataFrame({
        "image": [0, 1, 2, 0, 1, 2],
        "label": [7, 7, 8, 7, 7, 8],
        "method": ["a"] * 3 + ["b"] * 3,
        "operation": ["remove"] * 6,
        "p_before": [0.5] * 6,
        "p_after": [0.25, 0.5, 1.0, 0.5, 0.5, 0.5],
        "prob_deviation": [-0.5, 0.0, 1.0, 0.0, 0.0, 0.0],
        "correct_before": [True, True, False, True, True, True],
        "correct_after": [False, True, True, True, True, True],
    })
    per_class = summarize_deviation(df, by=("method", "label"))
    assert list(per_class.columns) == ["method", "label"] + list(SUMMARY_COLUMNS)
    a7 = per_class[(per_class.method == "a") & (per_class.label == 7)].iloc[0]
    assert a7["mean_prob_deviation"] == -0.25 and a7["median_prob_deviation"] == -0.25
    assert (a7["accuracy_before"], a7["accuracy_after"], a7["accuracy_deviation"], a7["images"]) == (1.0, 0.5, -0.5, 2)
    a8 = per_class[(per_class.method == "a") & (per_class.label == 8)].iloc[0]
    assert (a8["accuracy_deviation"], a8["images"]) == (1.0, 1)
    per_method = summarize_deviation(df)
    assert per_method["method"].tolist() == ["a", "b"]
    assert per_method["mean_prob_deviation"].tolist() == [pytest.approx(1 / 6), 0.0]
    assert per_method["accuracy_deviation"].tolist() == [0.0, 0.0]
    with pytest.raises(ValueError, match="lacks the columns"):
        summarize_deviation(df.drop(columns="correct_after"))


def test_probability_deviation_matches_interventions_and_is_batch_independent(tiny):
    model, x, y = tiny
    sites = NeuronSites.from_model(model)
    paths = _random_paths(12, 3, 2, sites.width)
    df = probability_deviation(model, x, y, {"r": paths}, factor=3.0, batch_size=5)
    df_one = probability_deviation(model, x, y, {"r": paths}, factor=3.0, batch_size=64)
    pd.testing.assert_frame_equal(df, df_one, check_exact=False, atol=1e-6, rtol=0)
    with torch.no_grad():
        p = model(x).double().softmax(1)
        with remove_neurons(sites, paths):
            q = model(x).double().softmax(1)
    remove = df[df.operation == "remove"]
    np.testing.assert_allclose(remove["p_before"], p[torch.arange(12), y], atol=1e-7)
    np.testing.assert_allclose(remove["p_after"], q[torch.arange(12), y], atol=1e-7)
    np.testing.assert_allclose(remove["prob_deviation"], remove["p_after"] / remove["p_before"] - 1)
    assert remove["correct_after"].tolist() == (q.argmax(1) == y).tolist()
    assert _no_hooks(model)


def test_probability_deviation_rejects_misaligned_paths(tiny):
    model, x, y = tiny
    with pytest.raises(ValueError, match=r"paths_by_method\['bad'\] must be .* \(12, 3, k\)"):
        probability_deviation(model, x, y, {"bad": torch.zeros(11, 3, 1, dtype=torch.long)})
    with pytest.raises(TypeError, match="paths_by_method must be a non-empty dict"):
        probability_deviation(model, x, y, {})
    with pytest.raises(ValueError, match="labels hold 3 entries but images hold 12"):
        probability_deviation(model, x, y[:3], {"a": torch.zeros(12, 3, 1, dtype=torch.long)})
    with pytest.raises(ValueError, match="factor must be finite"):
        probability_deviation(model, x, y, {"a": torch.zeros(12, 3, 1, dtype=torch.long)}, factor=float("nan"))


# --------------------------------------------------------------------- JAS comparison
def test_jas_comparison_equals_the_attribution_and_is_complete(tiny):
    model, x, y = tiny
    x, y = x[:6], y[:6]
    sites = NeuronSites.from_model(model)
    paths = _random_paths(6, 3, 1, sites.width, seed=2)
    df = jas_comparison(model, x, y, {"r": paths}, n_steps=24, batch_size=4)
    assert list(df.columns) == list(JAS_COLUMNS)
    assert df["mode"].tolist() == ["gate"] * 6 + ["paper"] * 6
    jig = JointNeuronIntegratedGradients(model, sites=sites)
    for mode in ("gate", "paper"):
        _, jas = jig.attribute(x, paths, target=y, n_steps=24, mode=mode, return_jas=True)
        np.testing.assert_allclose(df[df["mode"] == mode]["jas"], jas.double(), atol=1e-6)
    # gate semantics are complete: the JAS is exactly p_before - p_after(remove)
    dev = probability_deviation(model, x, y, {"r": paths})
    remove = dev[dev.operation == "remove"]
    gate = df[df["mode"] == "gate"]["jas"].to_numpy()
    np.testing.assert_allclose(gate, (remove["p_before"] - remove["p_after"]).to_numpy(), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="modes must be a non-empty subset"):
        jas_comparison(model, x, y, {"r": paths}, modes=("exact",))


# ---------------------------------------------------------------------- class consensus
def test_class_consensus_mode_per_layer_and_rank_with_ties_and_collisions():
    # 4 images of class 0 and 2 of class 1; L = 2, K = 2
    paths = torch.tensor([
        [[5, 1], [3, 4]],
        [[5, 2], [3, 4]],
        [[5, 1], [4, 3]],   # layer 0 rank 1: 1 again
        [[2, 5], [4, 3]],
        [[9, 8], [7, 6]],
        [[8, 9], [6, 7]],
    ])
    labels = torch.tensor([0, 0, 0, 0, 1, 1])
    full = class_consensus(paths, labels)
    # class 0, layer 0: rank 0 mode 5; rank 1 mode 1 (1 x2, 2 x1, 5 x1)
    # class 0, layer 1: rank 0 tie 3/4 -> 3; rank 1 tie 4/3 -> 3, taken -> most frequent
    #   neuron of the layer not taken: 4 (4 x4 over both ranks)
    assert full[0].tolist() == [[5, 1], [3, 4]]
    # class 1: rank 0 ties 9/8 -> 8, rank 1 ties 8/9 -> 8 taken -> layer counts 8 x2, 9 x2 -> 9
    assert full[1].tolist() == [[8, 9], [6, 7]]
    assert set(full) == {0, 1} and full[0].dtype == torch.long
    first = class_consensus(paths, labels, k=1)
    assert first[0].tolist() == [[5], [3]] and first[1].tolist() == [[8], [6]]
    for c in full.values():
        for row in c:
            assert len(set(row.tolist())) == row.numel()
    with pytest.raises(ValueError, match="k must be an int in 1..2"):
        class_consensus(paths, labels, k=3)
    with pytest.raises(ValueError, match="labels hold 2 entries but paths hold 6"):
        class_consensus(paths, labels[:2])


def test_split_by_class_never_overlaps_and_is_seeded():
    labels = torch.tensor([0] * 7 + [1] * 2 + [2] * 1 + [3] * 10)
    split = split_by_class(labels, consensus_fraction=0.5, seed=3)
    assert set(split) == {0, 1, 3}  # class 2 has one image: left out
    for label, parts in split.items():
        members = set((labels == label).nonzero()[:, 0].tolist())
        assert not set(parts["consensus"]) & set(parts["evaluation"])
        assert set(parts["consensus"]) | set(parts["evaluation"]) == members
        assert parts["consensus"] and parts["evaluation"]
    assert len(split[0]["consensus"]) == 4 and len(split[1]["consensus"]) == 1
    assert split_by_class(labels, 0.5, seed=3) == split
    assert split_by_class(labels, 0.5, seed=4) != split
    # a class's split does not depend on the other classes
    assert split_by_class(labels[labels == 3], 0.5, seed=3)[3]["consensus"] == [
        i - 10 for i in split[3]["consensus"]
    ]
    assert len(split_by_class(labels, 0.99, seed=0)[3]["evaluation"]) == 1
    with pytest.raises(ValueError, match="consensus_fraction must be a number in \\(0, 1\\)"):
        split_by_class(labels, 1.0)


# ---------------------------------------------------------------------------- pruning
def test_pruning_study_grid_split_and_cross_check(tiny):
    model, x, y = tiny
    sites = NeuronSites.from_model(model)
    kwargs = dict(ks=(1, 2), ps=(0.0, 0.5, 1.0), depths=None, n_steps=4, batch_size=4, seed=1)
    df = pruning_study(model, x, y, **kwargs)
    assert list(df.columns) == list(PRUNING_COLUMNS)
    split = df.attrs["split"]
    for label, parts in split.items():
        assert not set(parts["consensus"]) & set(parts["evaluation"])
        assert set(parts["consensus"]) | set(parts["evaluation"]) == set((y == label).nonzero()[:, 0].tolist())
    assert sorted(df["depth"].unique()) == [1, 3]  # L // 2 and L
    assert len(df) == len(split) * 2 * 3 * 2
    assert df.groupby("label")["images"].first().to_dict() == {l: len(s["evaluation"]) for l, s in split.items()}
    # p = 0 is the unpruned model
    zero = df[df.p == 0.0]
    np.testing.assert_allclose(zero["mean_prob"], zero["mean_prob_unpruned"], atol=1e-7)
    np.testing.assert_allclose(zero["accuracy"], zero["accuracy_unpruned"])
    # cross-check one cell by hand
    row = df[(df.k == 2) & (df.p == 0.5) & (df.depth == 3)].iloc[0]
    label = int(row["label"])
    keep = torch.tensor(df.attrs["consensus"][2][label])
    index = torch.tensor(split[label]["evaluation"])
    with torch.no_grad():
        base = model(x[index]).double().softmax(1)[:, label]
        with prune_neurons(sites, keep, p=0.5, depth=3, seed=1):
            pruned = model(x[index]).double().softmax(1)
    assert row["mean_prob"] == pytest.approx(float(pruned[:, label].mean()), abs=1e-7)
    assert row["accuracy"] == pytest.approx(float((pruned.argmax(1) == label).double().mean()))
    assert row["mean_prob_unpruned"] == pytest.approx(float(base.mean()), abs=1e-7)
    # the consensus comes from the consensus images' own top-k paths
    cons = torch.tensor(split[label]["consensus"])
    found = create_path_method("neuron-path", model, sites=sites).attribute(x[cons], target=y[cons], k=2, n_steps=4)
    assert df.attrs["consensus"][2][label] == class_consensus(found, y[cons], k=2)[label].tolist()
    # deterministic
    pd.testing.assert_frame_equal(pruning_study(model, x, y, **kwargs), df)
    assert _no_hooks(model)


def test_pruning_study_validates_its_grid(tiny):
    model, x, y = tiny
    with pytest.raises(ValueError, match="ks must hold ints in 1..64"):
        pruning_study(model, x, y, ks=(0,))
    with pytest.raises(ValueError, match="depths must hold ints in 1..3"):
        pruning_study(model, x, y, depths=(4,))
    with pytest.raises(ValueError, match="ps must be a non-empty list of probabilities"):
        pruning_study(model, x, y, ps=(1.5,))
    with pytest.raises(ValueError, match="unknown path method"):
        pruning_study(model, x, y, method="nope", ks=(1,), ps=(1.0,), depths=(1,))


# --------------------------------------------------------------------------------- I/O
def test_save_table_writes_csv_and_json_records(tmp_path):
    df = pd.DataFrame({"method": ["a", "b"], "jas": [0.5, -1.25], "correct": [True, False], "image": [0, 1]})
    csv_path, json_path = save_table(df, tmp_path / "sub" / "table")
    assert csv_path.name == "table.csv" and json_path.name == "table.json"
    pd.testing.assert_frame_equal(pd.read_csv(csv_path), df)
    assert json.loads(json_path.read_text()) == df.to_dict(orient="records")
    assert not [p for p in (tmp_path / "sub").iterdir() if p.name.endswith(".tmp")]


def test_evaluation_and_analysis_share_one_consensus():
    from captum_paths.analysis import consensus_path_lists, consensus_paths
    from captum_paths.search import PathResult

    gen = torch.Generator().manual_seed(3)
    paths = torch.stack([torch.randperm(6, generator=gen)[:3] for _ in range(40 * 4)]).view(40, 4, 3)
    labels = torch.randint(0, 3, (40,), generator=gen)
    result = PathResult(paths=paths, contributions=torch.zeros(40, 4, 3), jas=torch.zeros(40),
                        targets=labels, method="m")
    records = result.to_records(labels=labels.tolist())
    for k in (1, 2, 3):
        from_eval = {c: t.tolist() for c, t in class_consensus(paths, labels, k=k).items()}
        assert consensus_path_lists(consensus_paths(records, k=k)) == from_eval
