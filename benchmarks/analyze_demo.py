"""Class-level paths of the demo model: do images of one digit share path neurons?

On all 360 test images of the embedded digits ViT, the neuron-path method
(``LayerProgressiveNeuronPath``, k=1, gate semantics, target = label) finds one
neuron per layer. From the records alone this script then measures

- path sharing: mean Jaccard index of the paths (sets of ``(layer, neuron)``) of
  two images of the same class vs two images of different classes, over every
  pair, with a label-permutation p-value, per class, and per layer (how often
  two images pick the same neuron);
- class similarity: cosine of the classes' neuron-frequency vectors and Jaccard
  of their consensus paths, and each class's nearest classes;
- consensus paths (mode per layer) with their support, and the neurons shared by
  several classes' consensus paths.

Tables go to CSV, figures to PNG + SVG (the class-similarity clustermap among
them), everything under the output folder (default ``runs/analyze_demo``); the
summary is printed as Markdown and saved as ``summary.md``.

Usage::

    python benchmarks/analyze_demo.py [OUT] [--batch-size 60] [--permutations 1000]

The path search is resumable (``OUT/records.jsonl``); the analysis reruns each time.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

import numpy as np
import pandas as pd
import torch

from captum_paths.analysis import (
    PathGraph,
    PathTable,
    class_similarity,
    consensus_path_lists,
    consensus_paths,
    nearest_classes,
    path_sharing,
    shared_neurons,
    typical_paths,
)
from captum_paths.demo import DEMO_MEAN, DEMO_STD, load_demo_data, load_demo_model
from captum_paths.pipeline.extract import extract_paths
from captum_paths.plots.figures import save_figure
from captum_paths.plots.paths import (
    plot_class_similarity,
    plot_neuron_distributions,
    plot_neuron_frequency_heatmap,
    plot_neuron_pixels,
    plot_path_graph,
)
from captum_paths.records import write_json_atomic, write_text_atomic
from captum_paths.pipeline.report import markdown

METHOD = "neuron-path"


def per_layer_agreement(table: PathTable) -> pd.DataFrame:
    """Per layer: fraction of same-class / different-class image pairs that pick the same neuron."""
    n = len(table)
    i, j = np.triu_indices(n, k=1)
    same = table.class_codes[i] == table.class_codes[j]
    rows = []
    for layer in range(table.num_layers):
        p = table.paths[:, layer, 0]
        eq = p[i] == p[j]
        within, between = eq[same].mean(), eq[~same].mean()
        rows.append({"layer": layer, "within": within, "between": between,
                     "ratio": within / between if between else float("inf"),
                     "distinct_neurons": int(len(np.unique(p)))})
    return pd.DataFrame(rows)


def consensus_wide(cons: pd.DataFrame) -> pd.DataFrame:
    """Class x layer table of ``neuron (support)``."""
    cells = cons.assign(cell=[f"{n} ({s:.0%})" for n, s in zip(cons["neuron"], cons["support"])])
    wide = cells.pivot(index="class", columns="layer", values="cell")
    wide.columns = [f"layer {c}" for c in wide.columns]
    return wide


def md(df: pd.DataFrame, floatfmt: str = ".3f", index: bool = True) -> str:
    """Markdown table; floats with ``floatfmt``, integers as integers (column by column)."""
    return markdown(df, floatfmt, index)


def _nearest_text(sim: pd.DataFrame, cls) -> str:
    near = nearest_classes(sim, cls, n=3)
    return ", ".join(f"{c} ({v:.2f})" for c, v in zip(near["class"], near["similarity"]))


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", nargs="?", default="runs/analyze_demo")
    parser.add_argument("--batch-size", type=int, default=60)
    parser.add_argument("--permutations", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default=None)
    args = parser.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_demo_model(args.device)
    images, labels = load_demo_data("test")
    image_ids = [f"test/{i:04d}" for i in range(len(images))]

    start = time.perf_counter()
    records = extract_paths(model, images, labels, image_ids, out / "records.jsonl", methods=(METHOD,),
                            batch_size=args.batch_size, model_id="demo", progress=False, k=1, mode="gate")
    records = [r for r in records if r["method"] == METHOD]
    search_s = time.perf_counter() - start
    accuracy = float(np.mean([r["prediction"] == r["label"] for r in records]))

    start = time.perf_counter()
    table = PathTable.from_records(records)
    sharing = path_sharing(table, permutations=args.permutations, seed=args.seed)
    layers = per_layer_agreement(table)
    cosine = class_similarity(table, metric="cosine")
    jaccard = class_similarity(table, metric="jaccard")
    nearest = pd.DataFrame([
        {"class": c, "nearest (cosine)": _nearest_text(cosine, c),
         "nearest (consensus Jaccard)": _nearest_text(jaccard, c)}
        for c in table.classes
    ]).set_index("class")
    cons = consensus_paths(table)
    shared = shared_neurons(table, among="consensus")
    graph = PathGraph.from_table(table)
    analysis_s = time.perf_counter() - start

    # tables
    sharing.to_frame().to_csv(out / "path_sharing.csv", index=False)
    sharing.per_class.to_csv(out / "path_sharing_by_class.csv", index=False)
    layers.to_csv(out / "path_sharing_by_layer.csv", index=False)
    cosine.to_csv(out / "class_similarity_cosine.csv")
    jaccard.to_csv(out / "class_similarity_jaccard.csv")
    nearest.to_csv(out / "nearest_classes.csv")
    cons.to_csv(out / "consensus_paths.csv", index=False)
    shared.to_csv(out / "shared_consensus_neurons.csv", index=False)
    graph.to_graphml(out / "path_graph.graphml")
    write_json_atomic(out / "consensus_paths.json", {str(k): v for k, v in consensus_path_lists(cons).items()})

    # figures
    figures = {}
    figures["clustermap_cosine"] = plot_class_similarity(
        cosine, title="Demo digits: cosine similarity of the classes' neuron-frequency vectors")
    figures["clustermap_jaccard"] = plot_class_similarity(
        jaccard, title="Demo digits: Jaccard similarity of the classes' consensus paths")
    figures["neuron_distributions"] = plot_neuron_distributions(table)
    figures["neuron_frequency_heatmap"] = plot_neuron_frequency_heatmap(table, top=12)
    per_class = sharing.per_class
    best = per_class["class"].iloc[int(np.argmax(per_class["within"].to_numpy()))]  # the most coherent class
    figures[f"path_graph_class_{best}"] = plot_path_graph(graph, cls=best, max_nodes_per_layer=5)
    typical = typical_paths(table, best, n=1).iloc[0]
    index = image_ids.index(typical["image_id"])
    last = table.num_layers - 1
    neuron = consensus_path_lists(cons)[best][last][0]
    fig, _, patches = plot_neuron_pixels(model, images[index], last, neuron, mean=[DEMO_MEAN], std=[DEMO_STD])
    figures[f"pixels_class_{best}_layer_{last}_neuron_{neuron}"] = fig
    for name, fig in figures.items():
        save_figure(fig, out / name)

    summary = {
        "images": len(records), "method": METHOD, "k": 1, "target": "label", "accuracy": accuracy,
        "within": sharing.within, "between": sharing.between, "ratio": sharing.ratio,
        "within_pairs": sharing.within_pairs, "between_pairs": sharing.between_pairs,
        "p_value": sharing.p_value, "permutations": sharing.permutations,
        "mean_offdiagonal_cosine": float(cosine.to_numpy()[~np.eye(len(cosine), dtype=bool)].mean()),
        "mean_consensus_support": float(cons["support"].mean()),
        "graph_nodes": graph.graph.number_of_nodes(), "graph_edges": graph.graph.number_of_edges(),
        "search_s": search_s, "analysis_s": analysis_s, "torch": torch.__version__,
    }
    write_json_atomic(out / "summary.json", summary)

    lines = [
        "## Class-level paths on the demo model (benchmarks/analyze_demo.py)",
        "",
        f"{len(records)} test images, {METHOD} paths (k=1, gate, target = label), demo ViT "
        f"(6 layers, d_ff 256, test accuracy {accuracy:.1%}). A path is the set of its 6 "
        "(layer, neuron) pairs; Jaccard over every pair of images.",
        "",
        f"- **Within-class Jaccard {sharing.within:.3f}** ({sharing.within_pairs} pairs) vs "
        f"**between-class {sharing.between:.3f}** ({sharing.between_pairs} pairs): ratio {sharing.ratio:.2f}; "
        f"label-permutation p = {sharing.p_value:.4f} ({sharing.permutations} permutations).",
        f"- Images of the same class {'share' if sharing.within > sharing.between else 'do not share'} "
        "path neurons more than images of different classes"
        + (f" in every class (per-class ratio {per_class['ratio'].min():.2f} to {per_class['ratio'].max():.2f})."
           if (sharing.per_class["ratio"] > 1).all() else
           f" in {(sharing.per_class['ratio'] > 1).sum()} of {len(sharing.per_class)} classes."),
        f"- Mean consensus support {cons['support'].mean():.2f}; mean off-diagonal cosine similarity of classes "
        f"{summary['mean_offdiagonal_cosine']:.3f}.",
        "",
        "### Path sharing per class",
        "",
        md(sharing.per_class.set_index("class")),
        "",
        "### Per layer: fraction of image pairs that pick the same neuron",
        "",
        md(layers.set_index("layer")),
        "",
        "### Class similarity (cosine of neuron-frequency vectors)",
        "",
        md(cosine, floatfmt=".2f"),
        "",
        "### Class similarity (Jaccard of consensus paths)",
        "",
        md(jaccard, floatfmt=".2f"),
        "",
        "### Nearest classes",
        "",
        md(nearest),
        "",
        "### Consensus paths: neuron (support)",
        "",
        md(consensus_wide(cons)),
        "",
        "### Neurons on the consensus paths of several classes",
        "",
        md(shared.assign(classes=shared["classes"].map(lambda c: ", ".join(map(str, c)))), index=False)
        if len(shared) else "(none)",
        "",
        f"Files in `{out}`: " + ", ".join(sorted(p.name for p in out.iterdir() if not p.name.startswith("."))),
        "",
        f"Path search {search_s:.1f} s (0 when resumed), analysis {analysis_s:.2f} s.",
    ]
    text = "\n".join(lines)
    write_text_atomic(out / "summary.md", text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
