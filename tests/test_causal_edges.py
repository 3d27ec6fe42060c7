"""Causal edges between path units (issue 28): effects against literal hooks written here (a forward
hook replaces u, another reads v), zero for units of one layer and for a unit whose path to v is
cut, baselines as the literal hook with the same values, a seeded noise floor, the per-class
weights on the path graph and their GraphML round trip, and the analyze stage's table."""
from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from _models import tiny_vit
from captum_paths.analysis import CausalEdges, PathGraph, class_causal_edges
from captum_paths.attribution.layer_baselines import CounterfactualBaseline, MeanBaseline
from captum_paths.model.sites import NeuronSites


# ------------------------------------------------------------------ literal hooks
def literal_effects(model, modules, x, source, value=None):
    """``a_v(x) - a_v(x; u replaced)`` of every unit of every module, by forward hooks written here:
    ``u = source = (layer, unit)`` is set to ``value`` (0, or a tensor ``(rows,)``) at token 0, and
    each module's output at token 0 is read. Returns ``{layer: (rows, units)}``."""
    layer, unit = source
    store = {}

    def reader(l):
        def hook(module, args, output):
            store[l] = output[:, 0, :].detach().double().clone()
        return hook

    def remover(module, args, output):
        output = output.clone()
        output[:, 0, unit] = 0.0 if value is None else value.to(output.dtype)
        return output

    handles = []
    try:
        with torch.no_grad():
            handles = [m.register_forward_hook(reader(l)) for l, m in enumerate(modules)]
            model(x)
            clean = dict(store)
            for h in handles:
                h.remove()
            handles = [modules[layer].register_forward_hook(remover)]
            handles += [m.register_forward_hook(reader(l)) for l, m in enumerate(modules)]
            model(x)
    finally:
        for h in handles:
            h.remove()
    return {l: clean[l] - store[l] for l in clean}


def acts_modules(model):
    return [b.mlp.act for b in model.blocks]


@pytest.fixture(scope="module")
def vit():
    return tiny_vit(seed=3).double()


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.randn(4, 3, 16, 16, dtype=torch.float64)


@pytest.fixture(scope="module")
def paths():
    return torch.randint(0, 64, (4, 3, 2), generator=torch.Generator().manual_seed(1))


def _check_against_literal(model, modules, x, result, values=None):
    """Every computed effect of ``result`` equals the literal hooks' (``values(layer, unit, i)``: the
    value u takes on image i, None for zero)."""
    batch, n, _ = result.effects.shape
    checked = 0
    for i in range(batch):
        for s in range(n):
            l, j = int(result.layers[i, s]), int(result.units[i, s])
            if not result.computed[i, s].any():
                continue
            value = None if values is None else values(l, j, i)
            literal = literal_effects(model, modules, x[i:i + 1], (l, j), value)
            for t in range(n):
                lt, jt = int(result.layers[i, t]), int(result.units[i, t])
                expected = float(literal[lt][0, jt]) if lt > l else 0.0
                assert bool(result.computed[i, s, t]) == (lt > l)
                assert float(result.effects[i, s, t]) == pytest.approx(expected, rel=1e-9, abs=1e-12)
                checked += lt > l
    assert checked


def test_effects_equal_literal_hooks_on_a_tiny_vit(vit, images, paths):
    result = CausalEdges(vit).attribute(images, paths)
    assert result.effects.shape == (4, 6, 6) and result.path_shape == (3, 2)
    _check_against_literal(vit, acts_modules(vit), images, result)
    assert (result.effects[result.computed] != 0).any()


@pytest.mark.parametrize("internal_batch_size", [1, 5, 1000])
def test_rows_in_chunks_equal_one_batch(vit, images, paths, internal_batch_size):
    whole = CausalEdges(vit).attribute(images, paths, noise_sources=6, noise_targets=3)
    parts = CausalEdges(vit).attribute(images, paths, internal_batch_size=internal_batch_size, noise_sources=6,
                                       noise_targets=3)
    assert torch.allclose(whole.effects, parts.effects, rtol=1e-10, atol=1e-13)
    pd.testing.assert_frame_equal(whole.noise, parts.noise, rtol=1e-9, atol=1e-12)
    assert torch.equal(whole.floors.isnan(), parts.floors.isnan())


def test_the_normalised_effect_divides_by_the_std_of_the_summed_activation(vit, images, paths):
    result = CausalEdges(vit).attribute(images, paths, noise_sources=4)
    with torch.no_grad(), NeuronSites.from_model(vit).record() as acts:
        vit(images)
    for i in range(4):
        for t in range(6):
            l, j = int(result.layers[i, t]), int(result.units[i, t])
            sigma = acts[l][:, :, j].sum(dim=1).std()
            assert float(result.scale[i, t]) == pytest.approx(float(sigma), rel=1e-9)
            assert float(result.activations[i, t]) == pytest.approx(float(acts[l][i, 0, j]), rel=1e-9)
    ok = result.computed
    expected = result.effects / result.scale[:, None, :]
    assert torch.allclose(result.normalised[ok], expected[ok])
    assert (result.normalised[~ok] == 0).all()
    # against reference images: their standard deviation
    torch.manual_seed(5)
    reference = torch.randn(6, 3, 16, 16, dtype=torch.float64)
    scaled = CausalEdges(vit).attribute(images, paths, scale=reference, noise_sources=4)
    with torch.no_grad(), NeuronSites.from_model(vit).record() as ref_acts:
        vit(reference)
    l, j = int(scaled.layers[0, 3]), int(scaled.units[0, 3])
    assert float(scaled.scale[0, 3]) == pytest.approx(float(ref_acts[l][:, 0, j].std()), rel=1e-9)
    assert torch.equal(scaled.effects, result.effects)


def test_the_demo_model_matches_literal_hooks_with_a_mean_baseline():
    from captum_paths.demo import load_demo_data, load_demo_model

    model = load_demo_model().eval()
    x, _ = load_demo_data("test")
    train, _ = load_demo_data("train")
    reference = train[:16]
    paths = torch.randint(0, 256, (3, 6, 1), generator=torch.Generator().manual_seed(2))
    baseline = MeanBaseline(reference)
    result = CausalEdges(model).attribute(x[:3], paths, layer_baselines=baseline, noise_sources=4)
    sites = NeuronSites.from_model(model)
    with torch.no_grad(), sites.record() as acts:
        model(reference)
    means = {l: a.double().mean(dim=0) for l, a in acts.items()}  # (positions, units): the mean, by hand

    batch, n, _ = result.effects.shape
    for i in range(batch):
        for s in range(n - 1):
            l, j = int(result.layers[i, s]), int(result.units[i, s])
            literal = literal_effects(model, acts_modules(model), x[i:i + 1], (l, j), means[l][0, j])
            for t in range(s + 1, n):
                lt, jt = int(result.layers[i, t]), int(result.units[i, t])
                assert float(result.effects[i, s, t]) == pytest.approx(float(literal[lt][0, jt]), rel=2e-4,
                                                                       abs=1e-6)
    assert result.settings["ablation"] == "mean"


def test_a_mean_and_a_counterfactual_baseline_equal_the_literal_hook_with_their_values(vit, images, paths):
    torch.manual_seed(7)
    reference = torch.randn(5, 3, 16, 16, dtype=torch.float64)
    sites = NeuronSites.from_model(vit)
    means = MeanBaseline(reference).means(sites, vit)  # {layer: (positions, units)}
    result = CausalEdges(vit).attribute(images, paths, layer_baselines=MeanBaseline(reference), noise_sources=4)
    _check_against_literal(vit, acts_modules(vit), images, result, values=lambda l, j, i: means[l][0, j])

    counterfactual = torch.randn(4, 3, 16, 16, dtype=torch.float64)
    with torch.no_grad(), sites.record() as theirs:
        vit(counterfactual)
    result = CausalEdges(vit).attribute(images, paths, layer_baselines=CounterfactualBaseline(counterfactual),
                                        noise_sources=4)
    _check_against_literal(vit, acts_modules(vit), images, result, values=lambda l, j, i: theirs[l][i, 0, j])
    assert result.settings["ablation"] == "counterfactual"


def test_units_of_one_layer_are_not_computed_and_have_no_effect(vit, images):
    neurons = [(1, 3), (1, 5), (2, 7), (0, 9)]
    result = CausalEdges(vit).attribute(images, neurons, noise_sources=4)
    computed = result.computed[0]
    assert not computed[0, 1] and not computed[1, 0]  # both in layer 1
    assert computed[0, 2] and computed[3, 0] and computed[3, 2] and not computed[2, 3]
    assert (result.effects[:, 0, 1] == 0).all() and (result.effects[:, 1, 0] == 0).all()
    frame = result.to_frame()
    assert (frame["target_layer"] > frame["source_layer"]).all()
    assert len(frame) == 4 * int(computed.sum())
    # consecutive: the next layer of the set (0 -> 1, 1 -> 2), not 0 -> 2
    consecutive = result.consecutive[0]
    assert consecutive[3, 0] and consecutive[3, 1] and consecutive[0, 2] and not consecutive[3, 2]
    # the literal hook agrees that a unit leaves the other units of its layer as they are
    literal = literal_effects(vit, acts_modules(vit), images[:1], (1, 3))
    assert float(literal[1][0, 5]) == 0.0
    _check_against_literal(vit, acts_modules(vit), images, result)


class _Cut(nn.Module):
    """Two sites of 3 units on 2 tokens; unit 1 of the first site feeds nothing (its column of
    ``fc2`` is zero), units 0 and 2 feed the second site."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2, self.head = nn.Linear(4, 3), nn.Linear(3, 3), nn.Linear(3, 2)
        self.a, self.b = nn.Identity(), nn.Identity()
        with torch.no_grad():
            self.fc2.weight[:, 1] = 0.0

    def forward(self, x):  # (batch, 2 tokens, 4)
        h = self.a(torch.tanh(self.fc1(x)))
        return self.head(self.b(torch.tanh(self.fc2(h)))[:, 0])


def test_a_unit_whose_path_is_cut_has_no_effect():
    model = _Cut().eval()
    sites = NeuronSites(model, [model.a, model.b], tokens="cls", width=3)
    x = torch.randn(5, 2, 4, generator=torch.Generator().manual_seed(1))
    neurons = [(0, 0), (0, 1), (1, 0), (1, 2)]
    result = CausalEdges(model, sites=sites).attribute(x, neurons, noise_sources=8, noise_targets=3)
    assert (result.effects[:, 1, 2:] == 0).all()  # cut: exactly zero
    assert (result.effects[:, 0, 2:] != 0).all()  # fed
    frame = result.to_frame()
    cut = frame[frame["source_unit"] == 1]
    assert (cut["effect"] == 0).all() and not cut["above_floor"].any()
    _check_against_literal(model, [model.a, model.b], x, result)

    # the same on a timm ViT: block 0's fc2 column of neuron 11 is zero, so neuron 11 drives nothing
    vit = tiny_vit(seed=4).double()
    with torch.no_grad():
        vit.blocks[0].mlp.fc2.weight[:, 11] = 0.0
    x = torch.randn(2, 3, 16, 16, dtype=torch.float64)
    result = CausalEdges(vit).attribute(x, [(0, 11), (0, 12), (1, 5), (2, 40)], noise_sources=4)
    # zero up to the rounding of a forward of another batch size (the clean pass holds the images, the
    # edited one the rows), far below the fed unit's effect
    fed = result.effects[:, 1, 2:].abs()
    assert (result.effects[:, 0, 2:].abs() <= 1e-12).all() and (fed > 1e-6).all()


def test_the_noise_floor_is_seeded_and_held_out(vit, images, paths):
    first = CausalEdges(vit).attribute(images, paths, noise_sources=40, noise_targets=8, seed=3)
    again = CausalEdges(vit).attribute(images, paths, noise_sources=40, noise_targets=8, seed=3,
                                       internal_batch_size=7)
    pd.testing.assert_frame_equal(first.noise, again.noise, rtol=1e-9, atol=1e-12)
    assert torch.allclose(first.floors, again.floors, equal_nan=True)
    other = CausalEdges(vit).attribute(images, paths, noise_sources=40, noise_targets=8, seed=4)
    assert not first.noise[["image", "source_unit", "target_unit"]].equals(other.noise[["image", "source_unit",
                                                                                        "target_unit"]])
    noise = first.noise
    assert set(zip(noise["source_layer"], noise["target_layer"])) == {(0, 1), (0, 2), (1, 2)}
    assert len(noise) == 3 * 40 * 8  # per source layer 40 draws, 8 units of every later layer
    assert (noise["target_layer"] > noise["source_layer"]).all()
    # the floor: the 95% quantile of |normalised effect| of the layer pair's random pairs
    for (a, b), group in noise.groupby(["source_layer", "target_layer"]):
        values = group["normalised_effect"].abs().dropna().to_numpy()
        assert float(first.floors[a, b]) == pytest.approx(float(np.quantile(values, 0.95)))
        for fold in (0, 1):  # held out: each fold against the other fold's floor
            other_fold = group[group["fold"] != fold]["normalised_effect"].abs().dropna().to_numpy()
            mine = group[group["fold"] == fold]
            assert mine["noise_floor"].nunique() == 1
            assert mine["noise_floor"].iloc[0] == pytest.approx(float(np.quantile(other_fold, 0.95)))
            assert (mine["above_floor"] == (mine["normalised_effect"].abs() > mine["noise_floor"])).all()
    assert torch.isnan(first.floors[1, 0]) and torch.isnan(first.floors[0, 0])
    # random pairs sit above a held-out 95% floor about 5% of the time
    assert 0.0 < first.summary()["random_share_above_floor"].item() < 0.15
    # the noise effects equal the literal hooks too
    row = noise.iloc[17]
    literal = literal_effects(vit, acts_modules(vit), images[int(row.image):int(row.image) + 1],
                              (int(row.source_layer), int(row.source_unit)))
    assert row.effect == pytest.approx(float(literal[int(row.target_layer)][0, int(row.target_unit)]), abs=1e-12)
    # no noise: no floor, nothing above it
    none = CausalEdges(vit).attribute(images, paths, noise_sources=0)
    assert none.noise.empty and torch.isnan(none.floors).all() and not none.above_floor.any()
    assert math.isnan(none.summary()["random_share_above_floor"].item())


def test_tables_and_above_floor_agree(vit, images, paths):
    result = CausalEdges(vit).attribute(images, paths, noise_sources=20, noise_targets=4)
    frame = result.to_frame(image_ids=["a", "b", "c", "d"], labels=[0, 1, 0, 1])
    assert list(frame.columns) == ["image", "label", "source_layer", "source_unit", "target_layer",
                                   "target_unit", "consecutive", "effect", "normalised_effect", "noise_floor",
                                   "above_floor"]
    above = result.above_floor
    for row in frame.itertuples():
        i = "abcd".index(row.image)
        s = [t for t in range(6) if int(result.layers[i, t]) == row.source_layer
             and int(result.units[i, t]) == row.source_unit][0]
        t = [t for t in range(6) if int(result.layers[i, t]) == row.target_layer
             and int(result.units[i, t]) == row.target_unit][0]
        assert row.above_floor == bool(above[i, s, t])
        assert row.noise_floor == pytest.approx(float(result.floors[row.source_layer, row.target_layer]))
    consecutive = result.to_frame(consecutive_only=True)
    assert (consecutive["target_layer"] == consecutive["source_layer"] + 1).all()
    assert len(consecutive) == 4 * 2 * 2 * 2  # images x layer pairs x k x k
    summary = result.summary().iloc[0]
    assert summary["edges"] == len(consecutive) and summary["images"] == 4
    assert summary["share_above_floor"] == pytest.approx(consecutive["above_floor"].mean())
    whole = [all(consecutive[consecutive["image"] == i]["above_floor"]) for i in range(4)]
    assert summary["whole_chains"] == pytest.approx(np.mean(whole))
    by_layer = result.by_layer()
    assert by_layer[["source_layer", "target_layer"]].values.tolist() == [[0, 1], [1, 2]]
    assert by_layer["edges"].sum() == len(consecutive)
    per_class = class_causal_edges(frame)
    manual = frame[frame["consecutive"]].groupby(["label", "source_layer", "source_unit", "target_layer",
                                                  "target_unit"])
    assert len(per_class) == manual.ngroups
    first = per_class.iloc[0]
    group = manual.get_group(tuple(first[["label", "source_layer", "source_unit", "target_layer", "target_unit"]]))
    assert first["count"] == len(group)
    assert first["mean_normalised_effect"] == pytest.approx(group["normalised_effect"].mean())
    assert first["share_above_floor"] == pytest.approx(group["above_floor"].mean())


def test_hooks_are_gone_afterwards_even_when_the_forward_fails(vit, images, paths):
    def hooks():
        return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in vit.modules())

    before = hooks()
    CausalEdges(vit).attribute(images, paths, noise_sources=2, internal_batch_size=3)
    assert hooks() == before

    class Fails(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, x):
            self.calls += 1
            if self.calls > 1:
                raise RuntimeError("boom")
            return self.inner(x)

    wrapped = Fails(vit)
    sites = NeuronSites.from_model(vit)
    with pytest.raises(RuntimeError, match="boom"):
        CausalEdges(wrapped, sites=sites).attribute(images, paths)
    assert hooks() == before


def test_bad_arguments_name_themselves(vit, images, paths):
    edges = CausalEdges(vit)
    with pytest.raises(ValueError, match="at least 2"):
        edges.attribute(images[:1], paths[:1])
    with pytest.raises(ValueError, match="noise_quantile"):
        edges.attribute(images, paths, noise_quantile=1.5)
    with pytest.raises(ValueError, match="noise_sources"):
        edges.attribute(images, paths, noise_sources=-1)
    with pytest.raises(ValueError, match="noise_targets"):
        edges.attribute(images, paths, noise_targets=0)
    with pytest.raises(ValueError, match="internal_batch_size"):
        edges.attribute(images, paths, internal_batch_size=0)
    with pytest.raises(ValueError, match="scale"):
        edges.attribute(images, paths, scale="reference")
    with pytest.raises(ValueError, match="scale: give a tensor of shape"):
        edges.attribute(images, paths, scale={0: torch.ones(64)})
    with pytest.raises(TypeError, match="scale"):
        edges.attribute(images, paths, scale=3)
    with pytest.raises(TypeError, match="layer_baselines"):
        edges.attribute(images, paths, layer_baselines="mean")
    with pytest.raises(ValueError, match="neurons"):
        edges.attribute(images, torch.zeros(3, 3, 1, dtype=torch.long))
    result = edges.attribute(images, paths, noise_sources=2)
    with pytest.raises(ValueError, match="labels"):
        result.to_frame(labels=[0, 1])
    with pytest.raises(ValueError, match="label"):
        class_causal_edges(result.to_frame())
    given = edges.attribute(images, paths, scale={l: torch.ones(64) for l in range(3)}, noise_sources=2)
    assert torch.equal(given.normalised[given.computed], given.effects[given.computed])


# ------------------------------------------------------------------ the path graph
def _records(paths, labels, method="neuron-path"):
    return [{"image_id": f"img{i}", "method": method, "target": int(y), "label": int(y), "prediction": int(y),
             "path": p.tolist(), "jas": 0.5} for i, (p, y) in enumerate(zip(paths, labels))]


@pytest.fixture(scope="module")
def demo_edges():
    """The default search's paths of 12 demo images (4 classes) and their causal edges."""
    from captum_paths import LayerProgressiveNeuronPath
    from captum_paths.demo import load_demo_data, load_demo_model

    model = load_demo_model().eval()
    x, y = load_demo_data("test")
    index = torch.cat([(y == c).nonzero().flatten()[:3] for c in range(4)])
    x, y = x[index], y[index]
    paths = LayerProgressiveNeuronPath(model).attribute(x, target=y, n_steps=4).paths
    result = CausalEdges(model).attribute(x, paths, noise_sources=16, noise_targets=8)
    records = _records(paths, y)
    frame = result.to_frame(image_ids=[r["image_id"] for r in records], labels=y.tolist(), consecutive_only=True)
    return records, result, frame


def test_the_path_graph_carries_causal_weights_beside_the_counts(demo_edges, tmp_path):
    records, result, frame = demo_edges
    plain = PathGraph.from_records(records)
    graph = plain.with_causal_edges(frame, settings=result.settings)
    assert plain.graph.number_of_edges() == graph.graph.number_of_edges()
    per_class = class_causal_edges(frame).set_index(["label", "source_layer", "source_unit", "target_layer",
                                                     "target_unit"])
    for u, v, data in graph.graph.edges(data=True):
        before = plain.graph.edges[u, v]
        assert {k: data[k] for k in before} == before  # the co-occurrence attributes as they were
        assert len(data["class_causal_counts"]) == len(data["classes"])
        for c, count, effect, share in zip(data["classes"], data["class_causal_counts"],
                                           data["class_causal_effects"], data["class_causal_shares"]):
            row = per_class.loc[(c, u[0], u[1], v[0], v[1])]
            assert count == row["count"] == data["class_counts"][data["classes"].index(c)]
            assert effect == pytest.approx(row["mean_normalised_effect"])
            assert share == pytest.approx(row["share_above_floor"])
        mine = frame[(frame["source_layer"] == u[0]) & (frame["source_unit"] == u[1])
                     & (frame["target_layer"] == v[0]) & (frame["target_unit"] == v[1])]
        assert data["causal_count"] == len(mine) == data["count"]
        assert data["causal_effect"] == pytest.approx(mine["normalised_effect"].mean())
        assert data["causal_share_above_floor"] == pytest.approx(mine["above_floor"].mean())
    assert graph.graph.graph["causal_images"] == 12 and graph.graph.graph["causal_ablation"] == "zero"
    assert "causal_effect" in graph.edges_frame() and "causal_effect" not in plain.edges_frame()
    for node in plain.graph.nodes:  # nodes untouched
        assert graph.graph.nodes[node] == plain.graph.nodes[node]

    # GraphML and node-link JSON keep them
    for write, read in ((graph.to_graphml, PathGraph.from_graphml), (graph.to_node_link, PathGraph.from_node_link)):
        back = read(write(tmp_path / f"g.{write.__name__}"))
        assert back.graph.graph == graph.graph.graph
        assert set(back.graph.edges) == set(graph.graph.edges)
        for u, v, data in graph.graph.edges(data=True):
            assert _same(back.graph.edges[u, v], data)

    # one class: its own measurements, recomputed totals
    cls = int(frame["label"].iloc[0])
    one = graph.for_class(cls)
    for u, v, data in one.graph.edges(data=True):
        assert data["classes"] == [cls]
        mine = frame[(frame["label"] == cls) & (frame["source_layer"] == u[0]) & (frame["source_unit"] == u[1])
                     & (frame["target_unit"] == v[1]) & (frame["target_layer"] == v[0])]
        assert data["causal_count"] == len(mine)
        assert data["causal_effect"] == pytest.approx(mine["normalised_effect"].mean())


def test_a_graph_without_causal_rows_for_a_class_keeps_it_empty(demo_edges):
    records, result, frame = demo_edges
    cls = int(frame["label"].iloc[0])
    graph = PathGraph.from_records(records).with_causal_edges(frame[frame["label"] != cls])
    for u, v, data in graph.for_class(cls).graph.edges(data=True):
        assert data["causal_count"] == 0 and math.isnan(data["causal_effect"])
        assert data["class_causal_counts"] == [0] and math.isnan(data["class_causal_shares"][0])


def _same(a, b):
    assert set(a) == set(b)
    for key, value in b.items():
        other = a[key]
        if isinstance(value, list):
            assert len(other) == len(value)
            for x, y in zip(other, value):
                assert (isinstance(y, float) and math.isnan(y) and math.isnan(x)) or x == pytest.approx(y)
        elif isinstance(value, float) and math.isnan(value):
            assert math.isnan(other)
        else:
            assert other == pytest.approx(value) if isinstance(value, float) else other == value
    return True


# ------------------------------------------------------------------ the analyze stage
@pytest.fixture(scope="module")
def analysed(demo_images_2, tmp_path_factory):
    from captum_paths.pipeline import Run

    run = Run(tmp_path_factory.mktemp("causal") / "run", device="cpu")
    run.extract("demo", demo_images_2, methods=["neuron-path", "random"], n_steps=2, progress=False)
    run.analyze(permutations=5, pixels=False, causal_images=10)
    return run


def test_the_analyze_stage_writes_the_causal_edge_table(analysed):
    from captum_paths.records import AnalysisFiles

    folder = analysed.analysis_dir
    summary = json.loads((folder / AnalysisFiles.SUMMARY).read_text())["causal_edges"]
    assert summary["images"] == 10 and summary["ablation"] == "zero" and summary["seed"] == 0
    assert summary["noise_quantile"] == 0.95 and summary["scale"] == "batch"
    table = pd.read_csv(folder / AnalysisFiles.CAUSAL_EDGE_SUMMARY)
    assert table["method"].tolist() == ["neuron-path"] and table["images"].item() == 10
    assert table["edges"].item() == 10 * 5  # 10 images, 6 layers, k = 1: 5 consecutive edges each
    assert table["share_above_floor"].item() == pytest.approx(summary["share_above_floor"])
    assert 0 < table["random_share_above_floor"].item() < 0.2
    edges = pd.read_csv(folder / AnalysisFiles.CAUSAL_EDGES, dtype={"image_id": str})
    assert edges["image_id"].nunique() == 10 and sorted(edges["label"].unique()) == list(range(10))  # even draw
    assert (edges["target_layer"] == edges["source_layer"] + 1).all()
    assert table["share_above_floor"].item() == pytest.approx(edges["above_floor"].mean())
    records = {r.image_id: r for r in analysed.records() if r.method == "neuron-path"}
    for row in edges.itertuples():
        path = records[row.image_id].path
        assert path[row.source_layer] == [row.source_unit] and path[row.target_layer] == [row.target_unit]
    by_layer = pd.read_csv(folder / AnalysisFiles.CAUSAL_EDGES_BY_LAYER)
    assert by_layer["source_layer"].tolist() == [0, 1, 2, 3, 4] and by_layer["edges"].sum() == len(edges)
    graph = PathGraph.from_graphml(folder / AnalysisFiles.PATH_GRAPH)
    measured = [d for _, _, d in graph.graph.edges(data=True) if d["causal_count"]]
    assert sum(d["causal_count"] for d in measured) == len(edges)
    assert graph.graph.graph["causal_images"] == 10

    # the summary and the explorer's tables show it
    analysed.report(heatmaps=False)
    text = analysed.summary_file.read_text()
    assert "## Are paths chains? Causal edges between consecutive path units" in text
    assert "random_share_above_floor" in text


def test_the_analyze_stage_can_skip_the_causal_edges(analysed, tmp_path):
    import shutil

    from captum_paths.pipeline import Run
    from captum_paths.records import AnalysisFiles

    run = Run(shutil.copytree(analysed.folder, tmp_path / "run"), device="cpu")
    run.analyze(permutations=5, pixels=False, causal_images=0)
    assert json.loads((run.analysis_dir / AnalysisFiles.SUMMARY).read_text())["causal_edges"] == {
        "skipped": "causal_images=0"}
    assert not (run.analysis_dir / AnalysisFiles.CAUSAL_EDGE_SUMMARY).exists()
    with pytest.raises(ValueError, match="causal_images"):
        run.analyze(permutations=5, pixels=False, causal_images=1)
