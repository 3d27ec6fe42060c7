"""Scale of the path analysis: 50,000 records of a 24-layer model with d_ff 4096.

ImageNet-val scale (1,000 classes x 50 images) on synthetic, seeded records shaped
like ``PathResult.to_records()``. Paths concentrate the way real ones do: in each
layer a class draws its neuron from a few class-preferred neurons with
probability 0.6, otherwise from a Zipf-like distribution shared by all classes
(hub neurons). Each benchmark reports its time (pytest-benchmark, one round)
and the peak memory of a separate traced run (``tracemalloc``), stored in
``extra_info`` and printed; nothing is asserted about time. The records
themselves (Python dicts and lists, as ``read_records`` returns them) are the
input and are not counted, except by the ``PathTable`` benchmark that reads them.

Run: ``pytest benchmarks/test_analysis_scale.py --benchmark-only -s``
(``-s`` shows the peak memory and sizes).
"""
from __future__ import annotations

import gc
import time
import tracemalloc

import numpy as np
import pytest

from captum_paths.analysis import (
    PathGraph,
    PathTable,
    class_similarity,
    consensus_paths,
    nearest_classes,
    neuron_frequencies,
    path_sharing,
    shared_edges,
    shared_neurons,
)

N_RECORDS, N_LAYERS, D_FF, N_CLASSES = 50_000, 24, 4096, 1000

pytest.importorskip("pytest_benchmark")


def synthetic_records(n=N_RECORDS, layers=N_LAYERS, d_ff=D_FF, classes=N_CLASSES, k=1, seed=0):
    """Seeded records with class-concentrated paths (see the module docstring)."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    hub = 1.0 / np.arange(1, d_ff + 1) ** 1.1
    hub /= hub.sum()
    perm = np.stack([rng.permutation(d_ff) for _ in range(layers)])  # hub order per layer
    ranks = rng.choice(d_ff, size=(classes, layers, 3), p=hub)  # class-preferred neurons,
    prefs = perm[np.arange(layers)[None, :, None], ranks]  # often hubs themselves
    pick = rng.integers(0, 3, size=(n, layers))
    from_class = prefs[labels[:, None], np.arange(layers)[None, :], pick]
    from_hub = perm[np.arange(layers)[None, :], rng.choice(d_ff, size=(n, layers), p=hub)]
    first = np.where(rng.random((n, layers)) < 0.6, from_class, from_hub)
    if k == 1:
        paths = first[:, :, None]
    else:  # further neurons: distinct, uniform
        extra = (first[:, :, None] + rng.integers(1, d_ff, size=(n, layers, k - 1))) % d_ff
        paths = np.concatenate([first[:, :, None], extra], axis=2)
    contributions = rng.gamma(2.0, 0.01, size=paths.shape)
    jas = contributions.sum(axis=(1, 2))
    settings = {"mode": "gate", "n_steps": 16, "method": "gausslegendre", "k": k, "output": "prob"}
    return [
        {
            "image_id": f"val_{i:05d}",
            "label": int(labels[i]),
            "target": int(labels[i]),
            "prediction": int(labels[i]),
            "method": "neuron-path",
            "path": paths[i].tolist(),
            "contributions": contributions[i].tolist(),
            "jas": float(jas[i]),
            "delta": 0.0,
            "scores": None,
            "refined_layers": None,
            "settings": settings,
            "model_id": "synthetic-vit-large",
        }
        for i in range(n)
    ]


@pytest.fixture(scope="module")
def records():
    return synthetic_records()


@pytest.fixture(scope="module")
def table(records):
    return PathTable.from_records(records)


def _peak(fn):
    """(result, peak traced MiB, seconds) of one run under ``tracemalloc``.

    numpy and pandas report their buffers to tracemalloc, so the peak covers the
    arrays and the graph's Python objects alike (tracing slows the graph build
    about 8-fold, hence a separate, untimed run).
    """
    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    try:
        out = fn()
        seconds = time.perf_counter() - start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return out, peak / 2**20, seconds


def _run(benchmark, fn, label, **info):
    """One traced, untimed run for memory, then the timed benchmark round."""
    out, peak, traced_s = _peak(fn)
    del out
    out = benchmark.pedantic(fn, rounds=1, iterations=1, warmup_rounds=0)
    benchmark.extra_info.update({"peak_traced_mib": round(peak, 1), **info})
    print(f"\n[{label}] {benchmark.stats.stats.mean:.2f} s, peak traced memory {peak:.0f} MiB "
          f"(traced run {traced_s:.1f} s) {info}")
    return out


def test_table_from_records(benchmark, records):
    table = _run(benchmark, lambda: PathTable.from_records(records), "PathTable.from_records", records=len(records))
    assert table.paths.shape == (N_RECORDS, N_LAYERS, 1)


def test_path_graph(benchmark, table):
    pg = _run(benchmark, lambda: PathGraph.from_table(table), "PathGraph min_count=1")
    benchmark.extra_info.update(nodes=pg.graph.number_of_nodes(), edges=pg.graph.number_of_edges())
    print(f"  nodes {pg.graph.number_of_nodes()}, edges {pg.graph.number_of_edges()}")
    assert sum(d["count"] for _, d in pg.graph.nodes(data=True)) == N_RECORDS * N_LAYERS


def test_path_graph_min_count(benchmark, table):
    pg = _run(benchmark, lambda: PathGraph.from_table(table, min_count=5), "PathGraph min_count=5")
    benchmark.extra_info.update(nodes=pg.graph.number_of_nodes(), edges=pg.graph.number_of_edges())
    print(f"  nodes {pg.graph.number_of_nodes()}, edges {pg.graph.number_of_edges()}")


def test_frequencies_and_consensus(benchmark, table):
    def run():
        return neuron_frequencies(table), consensus_paths(table)

    freq, cons = _run(benchmark, run, "neuron_frequencies + consensus_paths")
    assert len(cons) == N_CLASSES * N_LAYERS
    benchmark.extra_info.update(frequency_rows=len(freq))


def test_shared(benchmark, table):
    def run():
        return shared_neurons(table, min_classes=2), shared_edges(table, min_classes=2)

    neurons, edges = _run(benchmark, run, "shared_neurons + shared_edges")
    benchmark.extra_info.update(shared_neurons=len(neurons), shared_edges=len(edges))


def test_class_similarity(benchmark, table):
    def run():
        cos = class_similarity(table, metric="cosine")
        jac = class_similarity(table, metric="jaccard")
        return cos, jac, nearest_classes(cos, 0)

    cos, jac, _ = _run(benchmark, run, "class_similarity cosine + jaccard (1000 x 1000)")
    assert cos.shape == jac.shape == (N_CLASSES, N_CLASSES)


def test_path_sharing(benchmark, table):
    sharing = _run(
        benchmark, lambda: path_sharing(table, max_pairs=1_000_000, seed=0), "path_sharing (sampled, 1M + 1M pairs)"
    )
    benchmark.extra_info.update(within=round(sharing.within, 4), between=round(sharing.between, 4))
    print(f"  within {sharing.within:.4f}, between {sharing.between:.4f}")
    assert not sharing.exact and sharing.within > sharing.between
