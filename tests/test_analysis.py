"""captum_paths.analysis: path graphs, class-level tables, path sharing, pixel explanations.

Hand-made records with answers worked out by hand, cross-checks against brute
force on paths of the demo model, and Captum's completeness for the pixel maps.
"""
from __future__ import annotations

import itertools
import json
import math
from collections import Counter

import networkx as nx
import numpy as np
import pandas as pd
import pytest
import torch

from captum_paths import LayerProgressiveNeuronPath, NeuronSites
from captum_paths.analysis import (
    PathGraph,
    PathTable,
    class_similarity,
    consensus_path_lists,
    consensus_paths,
    nearest_classes,
    neuron_frequencies,
    neuron_pixel_attribution,
    node_key,
    parse_node_key,
    path_sharing,
    shared_edges,
    shared_neurons,
    typical_paths,
)
from captum_paths.demo import load_demo_data, load_demo_model


def rec(i, label, path, method="neuron-path", k1=True):
    """A record; every contribution of record i is i + 1."""
    path = [[n] for n in path] if k1 else path
    return {
        "image_id": f"img{i}",
        "label": label,
        "target": label,
        "prediction": None,
        "method": method,
        "path": path,
        "contributions": [[float(i + 1)] * len(layer) for layer in path],
        "jas": float(i),
        "delta": 0.0,
        "scores": None,
        "refined_layers": None,
        "settings": {"k": len(path[0])},
        "model_id": "hand",
    }


# class 0: three paths, class 1: three paths, class 2: one path (3 layers, k = 1)
HAND = [
    rec(0, 0, [1, 2, 3]),
    rec(1, 0, [1, 2, 4]),
    rec(2, 0, [1, 5, 3]),
    rec(3, 1, [1, 6, 4]),
    rec(4, 1, [7, 6, 4]),
    rec(5, 1, [1, 2, 9]),
    rec(6, 2, [8, 9, 10]),
]


def graph_dict(pg):
    g = pg.graph
    return (
        dict(g.graph),
        {n: dict(d) for n, d in g.nodes(data=True)},
        {(u, v): dict(d) for u, v, d in g.edges(data=True)},
    )


# ----------------------------------------------------------------- hand-made
def test_neuron_frequencies_counts_by_hand():
    freq = neuron_frequencies(HAND)
    assert list(freq.columns) == ["class", "layer", "neuron", "count", "frequency"]
    c0 = freq[freq["class"] == 0]
    assert c0[["layer", "neuron", "count"]].values.tolist() == [[0, 1, 3], [1, 2, 2], [1, 5, 1], [2, 3, 2], [2, 4, 1]]
    assert np.allclose(c0["frequency"], [1, 2 / 3, 1 / 3, 2 / 3, 1 / 3])
    # every class's frequencies sum to 1 per layer (k = 1)
    assert np.allclose(freq.groupby(["class", "layer"])["frequency"].sum(), 1.0)
    assert freq["count"].sum() == len(HAND) * 3


def test_consensus_paths_and_support_by_hand():
    cons = consensus_paths(HAND)
    assert list(cons.columns) == ["class", "layer", "rank", "neuron", "count", "support"]
    assert consensus_path_lists(cons) == {0: [[1], [2], [3]], 1: [[1], [6], [4]], 2: [[8], [9], [10]]}
    assert np.allclose(cons[cons["class"] == 0]["support"], [1, 2 / 3, 2 / 3])
    assert np.allclose(cons[cons["class"] == 1]["support"], [2 / 3, 2 / 3, 2 / 3])
    assert np.allclose(cons[cons["class"] == 2]["support"], [1, 1, 1])
    # a tie goes to the smallest neuron index
    tie = [rec(0, "x", [9, 1]), rec(1, "x", [3, 1])]
    assert consensus_path_lists(consensus_paths(tie)) == {"x": [[3], [1]]}
    assert np.allclose(consensus_paths(tie)["support"], [0.5, 1.0])


def test_layer_summary_by_hand():
    summary = PathTable.from_records(HAND).layer_summary()
    assert list(summary.columns) == [
        "layer", "distinct_neurons", "top_neuron", "top_share", "mean_contribution", "share_of_jas"]
    # layer 0: neurons 1 (5 paths), 7, 8; layer 1: 2 (3 paths), 5, 6 (2 paths), 9; layer 2: 3, 4 (3 paths), 9, 10
    assert summary["distinct_neurons"].tolist() == [3, 4, 4]
    assert summary["top_neuron"].tolist() == [1, 2, 4]
    assert np.allclose(summary["top_share"], [5 / 7, 3 / 7, 3 / 7])
    # contribution of record i is i + 1 at every layer; jas of record i is i (record 0 has jas 0: skipped)
    assert np.allclose(summary["mean_contribution"], np.mean(np.arange(1, 8)))
    assert np.allclose(summary["share_of_jas"], np.mean([(i + 1) / i for i in range(1, 7)]))


def test_consensus_with_k_neurons_per_layer():
    recs = [
        rec(0, 0, [[1, 2], [5, 6]], k1=False),
        rec(1, 0, [[2, 3], [6, 5]], k1=False),
        rec(2, 0, [[2, 1], [7, 5]], k1=False),
    ]
    cons = consensus_paths(recs)
    assert consensus_path_lists(cons) == {0: [[2, 1], [5, 6]]}
    assert np.allclose(cons["support"], [1, 2 / 3, 1, 2 / 3])
    assert consensus_path_lists(consensus_paths(recs, k=1)) == {0: [[2], [5]]}


def test_shared_neurons_and_edges_by_hand():
    neurons = shared_neurons(HAND)
    assert list(neurons.columns) == ["layer", "neuron", "num_classes", "classes", "count"]
    assert neurons[["layer", "neuron", "num_classes", "count"]].values.tolist() == [
        [0, 1, 2, 5], [1, 2, 2, 3], [2, 4, 2, 3],
    ]
    assert neurons["classes"].tolist() == [[0, 1]] * 3
    assert shared_neurons(HAND, min_classes=3).empty
    # on the consensus paths only (0, 1) is shared
    cons = shared_neurons(HAND, among="consensus")
    assert cons[["layer", "neuron", "num_classes", "count"]].values.tolist() == [[0, 1, 2, 5]]
    # a class uses a neuron only from a frequency on: (1, 2) is 1/3 of class 1
    assert shared_neurons(HAND, min_frequency=0.5)[["layer", "neuron"]].values.tolist() == [[0, 1]]
    edges = shared_edges(HAND)
    assert edges[["layer", "source", "target", "num_classes", "count"]].values.tolist() == [[0, 1, 2, 2, 3]]
    assert edges["classes"].tolist() == [[0, 1]]
    assert shared_edges(HAND, among="consensus").empty  # 1->2 vs 1->6
    assert len(shared_edges(HAND, among="consensus", min_classes=1)) == 3 * 2


def test_typical_paths_by_hand():
    typ = typical_paths(HAND, 0)
    assert typ["record"].tolist() == [0, 1, 2]  # r1 and r2 tie: record order
    assert typ["consensus_matches"].tolist() == [3, 2, 2]
    assert np.allclose(typ["frequency_score"], [1 + 2 / 3 + 2 / 3, 2.0, 2.0])
    assert np.allclose(typ["consensus_fraction"], [1, 2 / 3, 2 / 3])
    assert typ["image_id"].tolist() == ["img0", "img1", "img2"]
    assert typical_paths(HAND, 1, n=1)["record"].tolist() == [3]  # [1, 6, 4] is the consensus
    by_freq = typical_paths(HAND, 1, by="frequency")
    assert by_freq["record"].tolist() == [3, 4, 5]
    assert np.allclose(by_freq["frequency_score"], [2.0, 5 / 3, 4 / 3])


def test_class_similarity_by_hand():
    cos = class_similarity(HAND)
    assert list(cos.index) == [0, 1, 2] and list(cos.columns) == [0, 1, 2]
    expected = np.eye(3)
    expected[0, 1] = expected[1, 0] = 10 / math.sqrt(19 * 15)
    # class 2 uses neuron 9 in layer 1, class 1 in layer 2: different neurons
    assert np.allclose(cos.to_numpy(), expected)
    jac = class_similarity(HAND, metric="jaccard")
    expected = np.eye(3)
    expected[0, 1] = expected[1, 0] = 1 / 5
    assert np.allclose(jac.to_numpy(), expected)
    near = nearest_classes(HAND, 0, n=2)
    assert near["class"].tolist() == [1, 2]
    assert np.allclose(near["similarity"], [10 / math.sqrt(285), 0.0])
    assert nearest_classes(jac, 2)["class"].tolist() == [0, 1]  # all 0: class order


def test_path_sharing_exact_by_hand():
    s = path_sharing(HAND, permutations=50)
    assert s.exact and s.within_pairs == 6 and s.between_pairs == 15
    assert s.within == pytest.approx(1.9 / 6)
    assert s.between == pytest.approx(2.3 / 15)
    assert s.ratio == pytest.approx((1.9 / 6) / (2.3 / 15))
    pc = s.per_class.set_index("class")
    assert pc.loc[0, "within"] == pytest.approx(0.4) and pc.loc[0, "between"] == pytest.approx(2.3 / 12)
    assert pc.loc[1, "within"] == pytest.approx(0.7 / 3) and pc.loc[1, "between"] == pytest.approx(2.3 / 12)
    assert np.isnan(pc.loc[2, "within"]) and pc.loc[2, "between"] == 0
    assert pc["within_pairs"].tolist() == [3, 3, 0] and pc["between_pairs"].tolist() == [12, 12, 6]
    assert 0 < s.p_value <= 1
    assert s.to_frame().shape == (1, 10)


def test_path_sharing_sampled_is_seeded_and_close_to_exact():
    rng = np.random.default_rng(1)
    recs = []
    for i in range(400):
        label = i % 4
        path = [
            int(label * 3 + rng.integers(0, 3)) if rng.random() < 0.7 else int(rng.integers(0, 40)) for _ in range(5)
        ]
        recs.append(rec(i, label, path))
    exact = path_sharing(recs)
    sampled = path_sharing(recs, max_pairs=30_000, seed=3)
    again = path_sharing(recs, max_pairs=30_000, seed=3)
    assert exact.exact and not sampled.exact
    assert sampled.within_pairs == sampled.between_pairs == 30_000
    assert (sampled.within, sampled.between) == (again.within, again.between)
    assert sampled.within == pytest.approx(exact.within, abs=0.01)
    assert sampled.between == pytest.approx(exact.between, abs=0.01)
    assert np.allclose(sampled.per_class["within"], exact.per_class["within"], atol=0.02)
    with pytest.raises(ValueError, match="permutations"):
        path_sharing(recs, max_pairs=1000, permutations=10)


def test_path_graph_nodes_and_edges_by_hand():
    pg = PathGraph.from_records(HAND)
    g = pg.graph
    assert g.graph["num_paths"] == 7 and g.graph["classes"] == [0, 1, 2] and g.graph["class_sizes"] == [3, 3, 1]
    assert g.number_of_nodes() == len({(l, p[l][0]) for p in (r["path"] for r in HAND) for l in range(3)})
    node = g.nodes[(0, 1)]
    assert node["count"] == 5 and node["frequency"] == pytest.approx(5 / 7)
    assert node["mean_contribution"] == pytest.approx((1 + 2 + 3 + 4 + 6) / 5)
    assert node["classes"] == [0, 1] and node["class_counts"] == [3, 2]
    assert node["class_mean_contributions"] == pytest.approx([2.0, 5.0])
    assert pg.class_counts((2, 4)) == {0: 1, 1: 2}
    edge = g.edges[(0, 1), (1, 2)]
    assert edge["count"] == 3 and edge["classes"] == [0, 1] and edge["class_counts"] == [2, 1]
    assert all(v[0] == u[0] + 1 for u, v in g.edges)
    assert sum(d["count"] for _, _, d in g.edges(data=True)) == 7 * 2
    assert nx.is_directed_acyclic_graph(g)
    # min_count keeps neurons and edges used by at least that many paths
    pg2 = PathGraph.from_records(HAND, min_count=3)
    assert sorted(pg2.graph.nodes) == [(0, 1), (1, 2), (2, 4)]
    assert list(pg2.graph.edges) == [((0, 1), (1, 2))]
    assert pg2.num_paths == 7
    assert graph_dict(pg.filter(min_count=3)) == graph_dict(pg2)
    assert pg.top_nodes(n=1)["neuron"].tolist() == [1, 2, 4]


def test_path_graph_k2_joins_every_pair_of_consecutive_neurons():
    recs = [rec(0, 0, [[1, 2], [3, 4], [5, 6]], k1=False), rec(1, 0, [[1, 7], [3, 8], [5, 6]], k1=False)]
    g = PathGraph.from_records(recs).graph
    assert g.graph["k"] == 2
    assert g.nodes[(0, 1)]["count"] == 2 and g.nodes[(2, 6)]["count"] == 2
    assert g.edges[(0, 1), (1, 3)]["count"] == 2
    assert g.has_edge((0, 2), (1, 4)) and g.has_edge((0, 2), (1, 3)) and g.has_edge((0, 7), (1, 8))
    assert sum(d["count"] for _, _, d in g.edges(data=True)) == 2 * 2 * 4


def test_path_graph_filters_method_and_class():
    mixed = HAND + [rec(10 + i, r["label"], [n[0] for n in r["path"]], method="random") for i, r in enumerate(HAND)]
    with pytest.raises(ValueError, match="mix the methods"):
        PathGraph.from_records(mixed)
    selected = PathGraph.from_records(mixed, method="neuron-path")
    assert graph_dict(selected) == graph_dict(PathGraph.from_records(HAND))
    assert PathGraph.from_records(mixed, method="random").graph.graph["method"] == "random"
    with pytest.raises(ValueError, match="no record has method"):
        PathGraph.from_records(HAND, method="activation")
    # the graph of one class equals the whole graph restricted to that class
    full = PathGraph.from_records(HAND)
    for cls in (0, 1, [0, 2]):
        classes = cls if isinstance(cls, list) else [cls]
        assert graph_dict(full.filter(classes=classes)) == graph_dict(PathGraph.from_records(HAND, classes=classes))
    one = full.for_class(1)
    assert one.num_paths == 3 and one.graph.nodes[(0, 1)]["count"] == 2
    assert one.graph.nodes[(0, 1)]["mean_contribution"] == pytest.approx(5.0)
    # grouping by another key
    by_target = PathGraph.from_records([dict(r, label=None) for r in HAND], label_key="target")
    assert by_target.classes == [0, 1, 2]
    with pytest.raises(ValueError, match="label_key='target'"):
        PathGraph.from_records([dict(r, label=None) for r in HAND])


@pytest.mark.parametrize("fmt", ["graphml", "node_link"])
@pytest.mark.parametrize("labels", ["int", "str", "k2"])
def test_path_graph_file_round_trip(tmp_path, fmt, labels):
    recs = HAND
    if labels == "str":
        recs = [dict(r, label=["cat", "dog", "owl"][r["label"]]) for r in HAND]
    elif labels == "k2":
        recs = [rec(0, 0, [[1, 2], [3, 4]], k1=False), rec(1, 5, [[1, 7], [3, 8]], k1=False)]
    pg = PathGraph.from_records(recs)
    file = tmp_path / f"g.{fmt}"
    if fmt == "graphml":
        pg.to_graphml(file)
        back = PathGraph.from_graphml(file)
        assert "L0:N1" in file.read_text()
    else:
        pg.to_node_link(file)
        back = PathGraph.from_node_link(file)
        assert json.loads(file.read_text())["nodes"][0]["id"].startswith("L")
    assert graph_dict(back) == graph_dict(pg)
    assert list(back.graph.nodes) == list(pg.graph.nodes)
    for _, d in back.graph.nodes(data=True):
        assert isinstance(d["count"], int) and isinstance(d["classes"], list)


def test_node_keys():
    assert node_key((3, 17)) == "L3:N17" and parse_node_key("L3:N17") == (3, 17)
    with pytest.raises(ValueError, match="node id"):
        parse_node_key("3-17")


def test_table_errors():
    with pytest.raises(ValueError, match="empty"):
        PathTable.from_records([])
    with pytest.raises(ValueError, match="different shapes"):
        PathTable.from_records([rec(0, 0, [1, 2]), rec(1, 0, [1, 2, 3])])
    with pytest.raises(ValueError, match="label_key"):
        PathTable.from_records(HAND, label_key="class")
    with pytest.raises(ValueError, match="unknown classes"):
        PathTable.from_records(HAND).select([9])
    with pytest.raises(ValueError, match="metric"):
        class_similarity(HAND, metric="euclid")
    with pytest.raises(ValueError, match="has no paths"):
        typical_paths(HAND, 9)


# ------------------------------------------------------------- demo records
@pytest.fixture(scope="module")
def demo():
    torch.manual_seed(0)
    model = load_demo_model()
    images, labels = load_demo_data("test")
    # the first 3 test images of every class
    idx = torch.cat([torch.nonzero(labels == c)[:3, 0] for c in range(10)])
    result = LayerProgressiveNeuronPath(model).attribute(images[idx], target=labels[idx])
    records = result.to_records(image_ids=idx.tolist(), labels=labels[idx].tolist())
    return model, images, records


def test_demo_graph_counts_match_the_paths(demo, tmp_path):
    _, _, records = demo
    pg = PathGraph.from_records(records)
    g = pg.graph
    L = g.graph["num_layers"]
    assert L == 6 and pg.num_paths == 30 and len(pg.classes) == 10
    for layer in range(L):
        assert sum(d["count"] for n, d in g.nodes(data=True) if n[0] == layer) == 30
    for layer in range(L - 1):
        assert sum(d["count"] for u, _, d in g.edges(data=True) if u[0] == layer) == 30
    for r in records:  # every path is a walk through the graph
        nodes = [(l, p[0]) for l, p in enumerate(r["path"])]
        assert all(g.has_edge(u, v) for u, v in zip(nodes, nodes[1:]))
    pg.to_graphml(tmp_path / "demo.graphml")
    assert graph_dict(PathGraph.from_graphml(tmp_path / "demo.graphml")) == graph_dict(pg)


def test_demo_tables_match_brute_force(demo):
    _, _, records = demo
    by_class = {}
    for r in records:
        by_class.setdefault(r["label"], []).append([p[0] for p in r["path"]])
    # consensus: the mode per layer, ties to the smallest neuron
    cons = consensus_path_lists(consensus_paths(records))
    for cls, paths in by_class.items():
        for layer in range(6):
            counts = Counter(p[layer] for p in paths)
            best = max(counts.values())
            assert cons[cls][layer] == [min(n for n, c in counts.items() if c == best)]
    # cosine of dense count vectors
    classes = sorted(by_class)
    dense = np.zeros((10, 6 * 256))
    for i, cls in enumerate(classes):
        for p in by_class[cls]:
            for layer, n in enumerate(p):
                dense[i, layer * 256 + n] += 1
    unit = dense / np.linalg.norm(dense, axis=1, keepdims=True)
    assert np.allclose(class_similarity(records).to_numpy(), unit @ unit.T)
    # path sharing: every pair, Jaccard of sets of (layer, neuron)
    sets = [(r["label"], {(l, p[0]) for l, p in enumerate(r["path"])}) for r in records]
    within, between = [], []
    for (a, sa), (b, sb) in itertools.combinations(sets, 2):
        (within if a == b else between).append(len(sa & sb) / len(sa | sb))
    s = path_sharing(records)
    assert s.exact and s.within == pytest.approx(np.mean(within)) and s.between == pytest.approx(np.mean(between))
    assert s.within > s.between  # images of one digit share path neurons
    assert isinstance(s.per_class, pd.DataFrame) and len(s.per_class) == 10


# ------------------------------------------------------------------- pixels
def test_neuron_pixel_attribution_shapes_and_completeness(demo):
    model, images, records = demo
    r = records[4]
    image = images[r["image_id"]]
    for layer in (0, 3, 5):
        neuron = r["path"][layer][0]
        a = neuron_pixel_attribution(model, image, layer, neuron, n_steps=64)
        assert a.values.shape == (1, 8, 8) and a.pixels.shape == (8, 8) and a.patches.shape == (4, 4)
        assert a.patch_size == (2, 2)
        assert np.isfinite(a.pixels).all() and np.abs(a.pixels).max() > 0
        assert a.patches.sum() == pytest.approx(a.pixels.sum())
        assert a.patches[0, 0] == pytest.approx(a.pixels[:2, :2].sum())
        assert a.upsampled_patches().shape == (8, 8)
        # completeness of integrated gradients: sum over pixels = F(x) - F(0)
        diff = a.activation - a.baseline_activation
        assert a.pixels.sum() == pytest.approx(diff, rel=0.05, abs=0.02)


def test_neuron_pixel_attribution_token_selections_and_input_sites(demo):
    model, images, _ = demo
    image = images[7]
    # patch tokens: the selector sums the channel over the selected tokens
    patches = NeuronSites.from_model(model, tokens="patches")
    a = neuron_pixel_attribution(model, image, 2, 11, sites=patches, n_steps=64)
    assert a.pixels.sum() == pytest.approx(a.activation - a.baseline_activation, rel=0.05, abs=0.05)
    # the same neuron read as the input of fc2 gives the same attribution
    out = neuron_pixel_attribution(model, image, 2, 11, n_steps=32)
    fc2 = NeuronSites.from_names(model, [f"blocks.{i}.mlp.fc2" for i in range(6)], capture="input")
    inp = neuron_pixel_attribution(model, image, 2, 11, sites=fc2, n_steps=32)
    assert np.allclose(out.values, inp.values, atol=1e-6)
    cond = neuron_pixel_attribution(model, image, 2, 11, method="conductance", n_steps=16)
    assert cond.pixels.shape == (8, 8) and np.isfinite(cond.pixels).all()
    with pytest.raises(ValueError, match="out of range"):
        neuron_pixel_attribution(model, image, 2, 999)
    with pytest.raises(ValueError, match="patch size"):
        neuron_pixel_attribution(model, image, 2, 1, patch_size=(3, 3))
