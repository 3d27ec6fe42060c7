"""The analyze stage: class-level path analysis of a run's records.

Path sharing, class similarity, consensus paths, shared neurons, the per-layer
summary and the path graph, from records only; with the run's model and images
at hand, also the pixels behind one path neuron and the causal edges of the paths
(are they chains?) on a seeded draw of images. Output: ``RUN/analysis/``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence

import numpy as np
import pandas as pd

from captum_paths.records import AnalysisFiles, PathRecord, as_path_records, write_json_atomic
from captum_paths.search.registry import primary_method

if TYPE_CHECKING:  # pragma: no cover
    from captum_paths.pipeline.run import Run

__all__ = ["analyze"]

logger = logging.getLogger(__name__)


#: Images whose causal edges the analyze stage measures, by default.
CAUSAL_IMAGES = 200
#: Rows (image x removed unit) per forward of the causal edges.
_CAUSAL_ROWS = 64


def analyze(run: "Run", method: Optional[str] = None, permutations: int = 1000, seed: int = 0,
            pixels: bool = True, causal_images: int = CAUSAL_IMAGES) -> Path:
    """Class-level path analysis of one method's records; writes ``RUN/analysis/`` and returns it.

    ``method`` defaults to the run's primary method
    (:func:`~captum_paths.search.registry.primary_method`: ``neuron-path`` when the run has it). With ``pixels``
    (and the run's model and data folder at hand) it also draws which pixels
    drive the last-layer neuron of one image's path (Captum
    ``NeuronIntegratedGradients``); without them that figure is skipped with a warning.

    With the run's model and images at hand it also measures the **causal edges** of the
    paths of ``causal_images`` images (an even draw over the classes, seeded with ``seed``;
    :class:`~captum_paths.analysis.CausalEdges` under the run's ablation): whether each path
    unit drives the path's unit of the next layer, against a noise floor of random unit pairs.
    It writes the per-image edges, the share of them above the floor against random pairs
    (also per layer pair), and their per-class means on the path graph's edges; without the
    model or the images they are skipped with a warning, and ``summary.json`` says why.
    The folder is replaced as a whole when the stage succeeds, under the run
    folder's writer lock.

    Args:
        run: the run folder.
        method: the method analysed. Default: the run's primary method.
        permutations: label permutations of the path-sharing test (0: none). Default: 1000.
        seed: seed of the permutations and of the causal edges' draws. Default: 0.
        pixels: draw the pixel figure (loads the model). Default: ``True``.
        causal_images: images whose causal edges are measured (0: none, else at least 2).
            Default: :data:`CAUSAL_IMAGES` (200).

    Returns:
        The analysis folder.
    """
    from captum_paths.analysis import (
        PathGraph,
        PathTable,
        class_similarity,
        consensus_path_lists,
        consensus_paths,
        path_sharing,
        shared_neurons,
    )
    from captum_paths.plots.figures import save_figure
    from captum_paths.plots.paths import plot_class_similarity, plot_neuron_frequency_heatmap, plot_path_graph

    if isinstance(permutations, bool) or not isinstance(permutations, int) or permutations < 0:
        raise ValueError(f"permutations must be a non-negative int (0: no permutation test); got {permutations!r}")
    if isinstance(causal_images, bool) or not isinstance(causal_images, int) or causal_images < 0 \
            or causal_images == 1:
        raise ValueError(f"causal_images must be 0 (no causal edges) or an int >= 2; got {causal_images!r}")
    records = as_path_records(run.records())  # parsed once: the table below takes them as they are
    run.check_units(records)
    digest = run.records_digest(records)
    methods = list(dict.fromkeys(r.method for r in records))
    if method is None:
        method = primary_method(methods)
    if method not in methods:
        raise ValueError(f"run {str(run.folder)!r} has no records of method {method!r}; it has {methods}")
    records = [r for r in records if r.method == method]
    table = PathTable.from_records(records)
    if len(table.classes) < 2:
        raise ValueError(f"analysis needs images of at least 2 classes; run {str(run.folder)!r} has "
                         f"{len(table.classes)}")
    sharing = path_sharing(table, permutations=permutations, seed=seed)
    if not sharing.per_class["within"].notna().any():
        raise ValueError(f"analysis needs at least 2 images of one class; run {str(run.folder)!r} has one image "
                         f"per class ({len(records)} images of method {method!r})")
    cosine = class_similarity(table, metric="cosine")
    jaccard = class_similarity(table, metric="jaccard")
    cons = consensus_paths(table)
    shared = shared_neurons(table, among="consensus")
    graph = PathGraph.from_table(table)
    causal = _causal_edges(run, records, table, method, causal_images, seed)
    if causal.edges is not None:
        graph = graph.with_causal_edges(causal.edges, settings=causal.settings)

    with run.lock(), run.replacing(run.analysis_dir) as out:
        sharing.to_frame().to_csv(out / AnalysisFiles.PATH_SHARING, index=False)
        sharing.per_class.to_csv(out / AnalysisFiles.PATH_SHARING_BY_CLASS, index=False)
        cosine.to_csv(out / AnalysisFiles.CLASS_SIMILARITY_COSINE)
        jaccard.to_csv(out / AnalysisFiles.CLASS_SIMILARITY_JACCARD)
        cons.to_csv(out / AnalysisFiles.CONSENSUS_PATHS, index=False)
        table.layer_summary().to_csv(out / AnalysisFiles.LAYER_SUMMARY, index=False)
        shared.to_csv(out / AnalysisFiles.SHARED_CONSENSUS_NEURONS, index=False)
        graph.to_graphml(out / AnalysisFiles.PATH_GRAPH)
        write_json_atomic(out / AnalysisFiles.CONSENSUS_PATH_LISTS,
                          {str(k): v for k, v in consensus_path_lists(cons).items()})
        if causal.edges is not None:
            causal.edges.to_csv(out / AnalysisFiles.CAUSAL_EDGES, index=False)
            causal.summary.to_csv(out / AnalysisFiles.CAUSAL_EDGE_SUMMARY, index=False)
            causal.by_layer.to_csv(out / AnalysisFiles.CAUSAL_EDGES_BY_LAYER, index=False)

        per_class = sharing.per_class
        best = per_class["class"].iloc[int(np.nanargmax(per_class["within"].to_numpy()))]
        figures = {
            "class_similarity_cosine": plot_class_similarity(
                cosine, title="Cosine similarity of the classes' neuron-frequency vectors"),
            "neuron_frequency_heatmap": plot_neuron_frequency_heatmap(table, top=12),
            f"path_graph_class_{best}": plot_path_graph(graph, cls=best, max_nodes_per_layer=5),
        }
        if pixels:
            figures.update(_pixel_figure(run, [r for r in records if r.label == best][0]))
        for name, fig in figures.items():
            save_figure(fig, out / name)
        write_json_atomic(out / AnalysisFiles.SUMMARY, {
            "method": method, "images": len(records), "classes": [str(c) for c in table.classes],
            "within": sharing.within, "between": sharing.between, "ratio": sharing.ratio,
            "p_value": sharing.p_value, "permutations": sharing.permutations,
            "mean_consensus_support": float(cons["support"].mean()),
            "graph_nodes": graph.graph.number_of_nodes(), "graph_edges": graph.graph.number_of_edges(),
            "causal_edges": causal.info,
            "records_sha256": digest,
        })
    return run.analysis_dir


@dataclass
class _Causal:
    """The causal edges of the analyze stage: what ``summary.json`` says of them, the per-image
    consecutive edges, the share table, the per-layer table (``None`` each when skipped) and how
    they were computed."""

    info: Dict[str, Any]
    edges: Optional[pd.DataFrame] = None
    summary: Optional[pd.DataFrame] = None
    by_layer: Optional[pd.DataFrame] = None
    settings: Optional[Dict[str, Any]] = None


def _causal_edges(run: "Run", records: Sequence[PathRecord], table: Any, method: str, limit: int,
                  seed: int) -> _Causal:
    """The causal edges of the paths of at most ``limit`` images of ``records`` (an even, seeded draw
    over the classes), or why not (no model, no images, ``limit`` 0)."""
    import torch

    from captum_paths.analysis import CausalEdges
    from captum_paths.model.loading import ModelLoadError
    from captum_paths.statistics import even_class_sample

    if limit == 0:
        return _Causal({"skipped": "causal_images=0"})
    chosen = even_class_sample(table.class_codes, limit, np.random.default_rng(seed))
    by_id = {str(r.image_id): r for r in records}
    ids = [str(table.image_ids[i]) for i in chosen]
    labels: List[Any] = [table.classes[int(table.class_codes[i])] for i in chosen]
    try:
        model = run.model()
        sites = run.sites()
        baseline = run.layer_baselines()
        images, _ = run.images(ids)
    except (ValueError, OSError, ModelLoadError) as exc:
        logger.warning("causal edges skipped: %s", exc)
        return _Causal({"skipped": str(exc)})
    device = next(model.parameters()).device
    paths = torch.tensor([by_id[i].path for i in ids], dtype=torch.long, device=device)
    result = CausalEdges(model, sites=sites).attribute(images.to(device), paths, layer_baselines=baseline,
                                                        internal_batch_size=_CAUSAL_ROWS, seed=seed)
    edges = result.to_frame(image_ids=ids, labels=labels, consecutive_only=True)
    edges = edges.rename(columns={"image": "image_id"})
    edges.insert(0, "method", method)
    head = {"method": method, "ablation": result.settings["ablation"]}
    summary = pd.DataFrame([{**head, **result.summary().to_dict("records")[0]}])
    by_layer = result.by_layer()
    for position, (key, value) in enumerate(head.items()):
        by_layer.insert(position, key, value)
    row = summary.iloc[0]
    info = {**result.settings, "images": len(ids), "edges": int(row["edges"]),
            "share_above_floor": _number(row["share_above_floor"]),
            "random_share_above_floor": _number(row["random_share_above_floor"]),
            "whole_chains": _number(row["whole_chains"])}
    return _Causal(info, edges, summary, by_layer, result.settings)


def _number(value: Any) -> Optional[float]:
    value = float(value)
    return value if np.isfinite(value) else None


def _pixel_figure(run: "Run", record: PathRecord) -> Dict[str, Any]:
    """``{name: figure}`` of the pixels behind the last neuron of ``record``'s path, or ``{}``."""
    from captum_paths.model.loading import ModelLoadError
    from captum_paths.plots.paths import plot_neuron_pixels

    try:
        model = run.model()
        images, _ = run.images([str(record.image_id)])
    except (ValueError, OSError, ModelLoadError) as exc:
        logger.warning("pixel figure skipped: %s", exc)
        return {}
    kinds = record.settings.get("kinds") or ["neuron"] * len(record.path)
    neuron_layers = [layer for layer, kind in enumerate(kinds) if kind == "neuron"]
    if not neuron_layers:
        logger.info("pixel figure skipped: the paths hold attention heads only")
        return {}
    layer = neuron_layers[-1]
    # the model's FFN sites hold the neuron layers only: the last one is FFN site len(neuron_layers) - 1
    fig, _, _ = plot_neuron_pixels(model, images[0].to(next(model.parameters()).device), len(neuron_layers) - 1,
                                   int(record.path[layer][0]))
    fig.text(0.01, 0.01, f"image {record.image_id} (class {record.label}), method {record.method}", fontsize=8)
    return {"neuron_pixels": fig}
