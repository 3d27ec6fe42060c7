"""What the path explorer embeds: the run's records, evaluation and analysis as one JSON object.

Everything a view needs is computed here, vectorised over the records
(:class:`~captum_paths.analysis.PathTable`), and capped so that an ImageNet-size
run (1,000 classes, 50,000 images) stays a page a browser opens in seconds:
:class:`ExplorerLimits` holds the caps, and the page states each one it applied.
The class and neuron views show one method at a time (the searched paths first;
the others as long as :attr:`ExplorerLimits.graph_nodes` allows); the image view
shows every method. Where the analysis measured causal edges (``causal_edges.csv``), the
class graphs of its method also carry them: per drawn edge the mean normalised effect of
the source on the target, the share of images above the noise floor and their number.
"""
from __future__ import annotations

import base64
import io
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Hashable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from captum_paths.analysis import PathTable, class_causal_edges, class_similarity, consensus_paths
from captum_paths.records import (
    AnalysisFiles,
    CircuitFiles,
    EvaluationFiles,
    PathRecord,
    RecordLike,
    RunFiles,
    as_path_records,
    complete_images,
)
from captum_paths.evaluation.circuits import LEARNED
from captum_paths.statistics import even_class_sample
from captum_paths.search.registry import PATH_METHODS, primary_method

__all__ = ["ExplorerLimits", "explorer_payload", "method_overview", "COLUMNS", "ImageLoader", "HeatmapFn"]

logger = logging.getLogger(__name__)

#: ``image_id -> PIL image`` (or ``None`` when it cannot be read).
ImageLoader = Callable[[str], Any]
#: ``(image_id, layer, neuron) -> (H, W)`` pixel attribution of the neuron on the image, or ``None``.
HeatmapFn = Callable[[str, int, int], Optional[np.ndarray]]


@dataclass(frozen=True)
class ExplorerLimits:
    """Caps on what the page embeds.

    Attributes:
        max_images (int): images whose paths, contributions, effects and thumbnails are
            embedded, drawn evenly from the classes (seeded).
        nodes_per_layer (int): per class and layer, the most used neurons of its graph.
        edges_per_layer (int): per class and pair of layers, the most frequent co-uses drawn.
        distribution_sample (int): values per method in the JAS and effect distributions.
        nearest (int): nearest classes listed per class.
        thumbnail_px (int): longer side of the embedded thumbnails.
        heatmap_neurons (int): neurons (the most used) whose pixel attribution is computed.
        heatmap_images (int): images per such neuron.
        heatmap_steps (int): integration steps of each pixel attribution.
        graph_nodes (int): class-graph nodes of all methods together: after the first
            method (the searched paths when the run has them), each further method's
            class graphs are embedded while the total stays within this.
        table_rows (int): rows kept of each long table.
        seed (int): seed of every sample.
    """

    max_images: int = 2000
    nodes_per_layer: int = 12
    edges_per_layer: int = 24
    distribution_sample: int = 5000
    nearest: int = 5
    thumbnail_px: int = 48
    heatmap_neurons: int = 8
    heatmap_images: int = 3
    heatmap_steps: int = 16
    graph_nodes: int = 250_000
    table_rows: int = 300
    seed: int = 0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"ExplorerLimits.{name} must be a non-negative int; got {value!r}")
        for name in ("nodes_per_layer", "distribution_sample", "thumbnail_px", "heatmap_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"ExplorerLimits.{name} must be at least 1; got {getattr(self, name)!r}")


#: Readable column headers: ``key -> (header, unit, one-line meaning)``.
COLUMNS: Dict[str, Tuple[str, str, str]] = {
    "method": ("Method", "", "how the path was chosen"),
    "images": ("Images", "count", "images with a path of this method"),
    "mean_jas": ("Mean JAS", "probability", "joint attribution score of the path, averaged over images: the fall "
                 "of the target probability when the path's neurons are zeroed together"),
    "median_jas": ("Median JAS", "probability", "the median of the same score"),
    "mean_abs_delta": ("Mean |delta|", "probability", "convergence delta: the gap between the summed per-neuron "
                       "contributions and the JAS (integration error)"),
    "accuracy": ("Accuracy", "fraction", "top-1 accuracy of the model on these images"),
    "mean_jas_gate": ("Mean JAS (re-scored)", "probability", "the JAS of each method's paths scored again in one "
                      "setting, for a like-for-like comparison"),
    "mean_jas_paper": ("Mean JAS (released scripts' score)", "probability",
                       "the score as the authors' scripts compute it"),
    "mean_prob_deviation_remove": ("Removal effect", "% of p(y)", "mean relative change of the target "
                                   "probability when the path's neurons are zeroed"),
    "mean_prob_deviation_enhance": ("Enhancement effect", "% of p(y)", "mean relative change of the target "
                                    "probability when the path's neurons are amplified"),
    "median_prob_deviation_remove": ("Median removal effect", "% of p(y)", "the median of the removal effect"),
    "median_prob_deviation_enhance": ("Median enhancement effect", "% of p(y)",
                                      "the median of the enhancement effect"),
    "accuracy_deviation_remove": ("Accuracy change, removal", "points", "top-1 accuracy after removal minus before"),
    "accuracy_deviation_enhance": ("Accuracy change, enhancement", "points",
                                   "top-1 accuracy after enhancement minus before"),
    "same_neurons_as_searched": ("Same neurons as the search", "fraction",
                                 "share of path neurons equal to the searched path's, layer by layer"),
    "within": ("Within classes", "Jaccard", "mean overlap of two paths of the same class"),
    "between": ("Between classes", "Jaccard", "mean overlap of two paths of different classes"),
    "ratio": ("Ratio", "x", "within / between"),
    "p_value": ("p-value", "", "label-permutation test of within > between"),
    "layer": ("Layer", "", "transformer block"),
    "neuron": ("Neuron", "index", "FFN neuron of the layer"),
    "distinct_neurons": ("Distinct neurons", "count", "different neurons the layer's paths use"),
    "top_neuron": ("Most used neuron", "index", "the neuron most paths hold at this layer"),
    "top_share": ("Its share", "fraction", "fraction of paths holding it"),
    "mean_contribution": ("Mean contribution", "probability", "mean contribution of the layer's path neuron"),
    "share_of_jas": ("Share of JAS", "fraction", "mean share of the JAS carried by this layer"),
    "class": ("Class", "", ""),
    "support": ("Support", "fraction", "fraction of the class's paths holding the neuron"),
    "count": ("Paths", "count", "paths holding it"),
    "num_classes": ("Classes", "count", "classes whose consensus path holds it"),
    "depth": ("Depth", "layers", "pruning applies to the first layers"),
    "k": ("k", "neurons per layer", "consensus neurons kept per layer"),
    "p": ("p", "probability", "probability of zeroing each other neuron"),
    "edge": ("Edge", "layer:unit", "a path unit and the path's unit of the next layer"),
    "causal_effect": ("Mean normalised effect", "std of the target", "mean over the class's images of the change "
                      "of the target unit when the source unit is removed, in standard deviations of the target"),
    "share_above_floor": ("Above the noise floor", "fraction", "share of the edges (one per image) whose "
                          "|normalised effect| exceeds the noise floor (95% of random unit pairs of the same layers)"),
    "random_share_above_floor": ("Random pairs above it", "fraction", "the same share for random unit pairs of "
                                 "the same layers, held out (about 5% by construction)"),
    "causal_images": ("Images", "count", "images of the class whose effect was measured"),
    "mean_prob": ("Mean p(y), pruned", "probability", ""),
    "mean_prob_unpruned": ("Mean p(y), unpruned", "probability", ""),
}

#: Where a note names the primary method (the searched paths when the run has them).
_PRIMARY = "{primary}"

_TABLES = (  # (folder, file, title, note)
    (RunFiles.EVALUATION, EvaluationFiles.COMPARISONS, "Compared with the searched paths",
     f"Each method against {_PRIMARY} on the same images: mean difference ({_PRIMARY} minus the method) with its "
     f"95% bootstrap interval, the share of images where {_PRIMARY}'s path is better (higher JAS, lower removal "
     "deviation, higher enhancement deviation; ties count half), two-sided Wilcoxon signed-rank p and Holm-adjusted "
     "p over the table."),
    (RunFiles.EVALUATION, EvaluationFiles.INTERVALS, "Confidence intervals",
     "Per method: the mean over the evaluated images and its 95% bootstrap confidence interval."),
    (RunFiles.EVALUATION, EvaluationFiles.FAITHFULNESS_FEWEST, "Fewest units for 80% of the target probability",
     "Per method and ablation: the smallest number of units kept per layer (ranked by how often the class's "
     "paths use them) whose mean target probability on held-out images reaches 80% of the unablated model's."),
    (RunFiles.EVALUATION, EvaluationFiles.PRUNING_GRID, "Pruning", "Keep the top-k class-consensus neurons per layer "
     "and zero every other neuron with probability p in the first layers; mean over classes, on images not used for "
     "the consensus."),
    (RunFiles.ANALYSIS, AnalysisFiles.PATH_SHARING, "Path sharing", "Do images of one class use the same neurons?"),
    (RunFiles.ANALYSIS, AnalysisFiles.PATH_SHARING_BY_CLASS, "Path sharing per class", ""),
    (RunFiles.ANALYSIS, AnalysisFiles.LAYER_SUMMARY, "Paths per layer", ""),
    (RunFiles.ANALYSIS, AnalysisFiles.SHARED_CONSENSUS_NEURONS, "Neurons shared by several classes' consensus paths",
     ""),
    (RunFiles.ANALYSIS, AnalysisFiles.CAUSAL_EDGE_SUMMARY, "Are paths chains? Causal edges",
     "Each path unit is replaced by its baseline and the path's unit of the next layer read again (everything "
     "between recomputed): the share of these edges whose normalised effect exceeds the noise floor (the 95% "
     "quantile of random unit pairs of the same layers), against held-out random pairs (about 5% by construction)."),
    (RunFiles.ANALYSIS, AnalysisFiles.CAUSAL_EDGES_BY_LAYER, "Causal edges per layer pair", ""),
    (RunFiles.CIRCUITS, CircuitFiles.FEWEST, "Class circuits: fewest units for 80% of the target probability",
     "Per method, the smallest share of all units (heads and neurons) whose circuits keep 80% of the unablated "
     "target probability on held-out images, every other unit ablated at every token: learned circuits against "
     "the best units by attribution patching, by path use and at random."),
    (RunFiles.CIRCUITS, CircuitFiles.OVERLAP, "Path units inside the class circuits",
     "Per class and method, the share of the class's path units inside its circuit (share), of its paths' "
     "entries (occurrence_share), and the share a random unit of those layers has (chance)."),
)


def explorer_payload(
    records: Sequence[RecordLike],
    settings: Optional[Mapping[str, Any]] = None,
    evaluation_dir: Optional[Path] = None,
    analysis_dir: Optional[Path] = None,
    class_names: Optional[Sequence[str]] = None,
    image_loader: Optional[ImageLoader] = None,
    heatmap: Optional[HeatmapFn] = None,
    limits: ExplorerLimits = ExplorerLimits(),
    run_name: str = "",
    circuits_dir: Optional[Path] = None,
) -> Dict[str, Any]:
    """The explorer's JSON object for ``records`` (one per image and method).

    The records are parsed once (dicts; :class:`~captum_paths.records.PathRecord` objects, as
    :meth:`Run.records() <captum_paths.pipeline.Run.records>` returns them, are used as they are)
    and grouped by method once; every view is built from those groups.

    Args:
        records: path records (:class:`~captum_paths.records.PathRecord` or dicts of the run's ``records.jsonl``).
        settings: the run's settings, shown on the page.
        evaluation_dir, analysis_dir: folders the evaluate and analyze stages wrote (optional).
        class_names: human names of the classes, indexed by label.
        image_loader: reads an image for its thumbnail; ``None``: no thumbnails.
        heatmap: the pixel attribution of a neuron on an image; ``None``: no heatmaps.
        limits: the caps (:class:`ExplorerLimits`).
        run_name: the run's name on the page.
        circuits_dir: the folder the circuits stage wrote (optional): each studied class's view shows
            its circuit, the circuit's edges and the path units inside it.
    """
    if not isinstance(limits, ExplorerLimits):
        raise TypeError(f"limits must be an ExplorerLimits; got {type(limits).__name__}")
    records = [r for r in as_path_records(records) if r.label is not None]
    if not records:
        raise ValueError("the explorer needs records with a label; none has one")
    by_method: Dict[str, List[PathRecord]] = {}
    for r in records:
        by_method.setdefault(r.method, []).append(r)
    methods = _method_order(by_method)
    primary = primary_method(methods)
    table = PathTable.from_records(by_method[primary], method=primary)
    rng = np.random.default_rng(limits.seed)
    notes: List[str] = []

    classes = [_native(c) for c in table.classes]
    names = [_class_name(c, class_names) for c in classes]
    deviation = _read(evaluation_dir, EvaluationFiles.DEVIATION)
    methods_summary = _read(evaluation_dir, EvaluationFiles.METHODS_SUMMARY)
    eval_summary = _read_json(evaluation_dir, EvaluationFiles.SUMMARY)
    if eval_summary and (eval_summary.get("images_recorded") or 0) > (eval_summary.get("images") or 0):
        notes.append(f"The evaluation (effects, tables, faithfulness) used {eval_summary['images']:,} of the "
                     f"{eval_summary['images_recorded']:,} images (an even draw over the classes, seed "
                     f"{eval_summary.get('seed', 0)}); images outside it show no effects.")
    sharing = _read(analysis_dir, AnalysisFiles.PATH_SHARING)
    faithfulness = _read(evaluation_dir, EvaluationFiles.FAITHFULNESS_SUMMARY)
    fewest = _read(evaluation_dir, EvaluationFiles.FAITHFULNESS_FEWEST)
    comparisons = _read(evaluation_dir, EvaluationFiles.COMPARISONS)
    layer_summary = _read(analysis_dir, AnalysisFiles.LAYER_SUMMARY)
    causal = _causal(analysis_dir, by_method)
    causal_summary = _read(analysis_dir, AnalysisFiles.CAUSAL_EDGE_SUMMARY)

    images = _images(records, methods, table, deviation, (eval_summary or {}).get("images"), limits, rng,
                     image_loader, notes)
    graphs, neurons, nearest = _per_method_views(by_method, methods, primary, table, images, limits, notes,
                                                 causal)
    heat = (_heatmaps(images, neurons[primary], primary, table.kinds, heatmap, limits, notes)
            if heatmap is not None else {})
    circuits, circuits_meta = _circuits(circuits_dir, classes, graphs)

    overview = _overview_table(records, methods, methods_summary)
    for row in overview:  # the medians stay in the evaluation's table and summary.md
        for key in ("median_jas", "median_prob_deviation_remove", "median_prob_deviation_enhance"):
            row.pop(key, None)
    payload = {
        "meta": {
            "run": run_name, "records": len(records), "images": len({str(r.image_id) for r in records}),
            "classes": len(classes), "layers": table.num_layers, "k": table.k, "methods": methods,
            "kinds": table.kinds or ["neuron"] * table.num_layers,
            "primary": primary, "settings": {k: v for k, v in (settings or {}).items()
                                             if isinstance(v, (str, int, float, bool)) and v is not None},
            "factor": (eval_summary or {}).get("factor"), "limits": asdict(limits), "notes": notes,
            "causal": _causal_meta(causal_summary, causal),
            "circuits": circuits_meta,
        },
        "columns": {k: list(v) for k, v in COLUMNS.items()},
        "overview": overview,
        "claims": _claims(overview, methods_summary, sharing, layer_summary, primary, fewest, comparisons,
                          causal_summary, _read(circuits_dir, CircuitFiles.FEWEST) if circuits_meta else None,
                          circuits_meta),
        "faithfulness": [] if faithfulness is None else [
            {k: _cell(v) for k, v in row.items()} for row in faithfulness[
                ["method", "ablation", "n", "units_kept", "mean_prob", "accuracy", "mean_prob_full",
                 "fraction_of_full"]].to_dict("records")],
        "jas": {m: _sample([r.jas for r in by_method[m]], limits.distribution_sample, rng) for m in methods},
        "effects": _effects(deviation, limits, rng),
        "classes": {"labels": classes, "names": names, "sizes": np.bincount(table.class_codes,
                                                                          minlength=len(classes)).tolist()},
        "graphs": graphs,
        "nearest": nearest,
        "neurons": neurons,
        "heat": heat,
        "images": images,
        "tables": _tables({RunFiles.EVALUATION: evaluation_dir, RunFiles.ANALYSIS: analysis_dir,
                           RunFiles.CIRCUITS: circuits_dir}, limits, notes, primary),
        "circuits": circuits,
    }
    return payload


# ------------------------------------------------------------------ pieces


def _method_order(methods) -> List[str]:
    return [m for m in PATH_METHODS if m in methods] + sorted(m for m in methods if m not in PATH_METHODS)


def _class_name(label: Hashable, class_names: Optional[Sequence[str]]) -> str:
    if class_names is not None and isinstance(label, int) and 0 <= label < len(class_names):
        return f"{class_names[label]}"
    return str(label)


def _per_method_views(by_method: Mapping[str, List[PathRecord]], methods: List[str], primary: str, table: PathTable,
                      images, limits: ExplorerLimits, notes: List[str],
                      causal: Optional[Tuple[str, pd.DataFrame]] = None
                      ) -> Tuple[Dict[str, Any], Dict[str, Any], Dict[str, Any]]:
    """Per method (``primary`` first, then the others in order while the class graphs' nodes stay
    within ``limits.graph_nodes``): class graphs and nearest classes, indexed like ``table``'s classes,
    and the neurons the page can show; the class graphs of the method of ``causal`` (``(method, per-class
    causal edges)``) carry its causal edges."""
    graphs: Dict[str, Any] = {}
    neurons: Dict[str, Any] = {}
    nearest: Dict[str, Any] = {}
    nodes = 0
    position = {_native(c): i for i, c in enumerate(table.classes)}
    left_out = []
    for m in [primary] + [m for m in methods if m != primary]:
        mine = table if m == primary else PathTable.from_records(by_method[m], method=m)
        own_notes: List[str] = []
        graph = _class_graphs(mine, limits, own_notes, causal[1] if causal is not None and causal[0] == m else None)
        size = sum(len(g["nodes"]) for g in graph)
        if m != primary and nodes + size > limits.graph_nodes:
            left_out.append(m)
            continue
        nodes += size
        if m == primary:
            notes += own_notes
        # another method may miss classes: align its graphs and neighbours with the page's classes
        index = [position.get(_native(c)) for c in mine.classes]
        aligned: List[Dict[str, Any]] = [{"nodes": [], "edges": [], "consensus": []} for _ in table.classes]
        near: List[List[List[float]]] = [[] for _ in table.classes]
        for c, (g, pairs) in enumerate(zip(graph, _nearest(mine, limits))):
            if index[c] is not None:
                aligned[index[c]] = g
                near[index[c]] = [[index[j], v] for j, v in pairs if index[j] is not None]
        graphs[m], nearest[m] = aligned, near
        neurons[m] = _neurons(mine, graph, images, m)
    if left_out:
        notes.append(f"The class and neuron views cover {', '.join(graphs)}; {', '.join(left_out)} left out to keep "
                     f"the page small (at most {limits.graph_nodes:,} class-graph nodes).")
    return graphs, neurons, nearest


def _class_graphs(table: PathTable, limits: ExplorerLimits, notes: List[str],
                  causal: Optional[pd.DataFrame] = None) -> List[Dict[str, Any]]:
    """Per class: its most used neurons per layer ``[layer, neuron, paths, mean contribution]``,
    the co-uses between them ``[source node, target node, paths]`` and its consensus path
    ``[layer, neuron, support]``; with ``causal`` (:func:`~captum_paths.analysis.class_causal_edges`),
    also the causal edges of the drawn co-uses ``[source node, target node, mean normalised effect,
    share above the noise floor, images]`` (``"causal"``)."""
    cls, code, count, csum, cn = table.class_node_counts()
    layer, neuron = table.decode(code)
    mean = np.where(cn > 0, csum / np.maximum(cn, 1), np.nan)
    # per (class, layer): most used first, ties to the smallest neuron
    order = np.lexsort((neuron, -count, layer, cls))
    cls, layer, neuron, count, mean = cls[order], layer[order], neuron[order], count[order], mean[order]
    group = cls * table.num_layers + layer
    starts = np.r_[0, np.flatnonzero(np.diff(group)) + 1]
    rank = np.arange(len(group)) - np.repeat(starts, np.diff(np.r_[starts, len(group)]))
    kept = rank < limits.nodes_per_layer
    if (~kept).any():
        notes.append(f"Class graphs draw the {limits.nodes_per_layer} most used neurons of each layer "
                     f"({int(kept.sum()):,} of {len(kept):,} class-neuron pairs).")
    ecls, ekey, ecount = table.class_edge_counts()
    elayer, esrc, edst = table.decode_edges(ekey)
    consensus = consensus_paths(table)
    cons_groups = {c: g for c, g in consensus.groupby("class", sort=False)}

    causal_by_class: Optional[Dict[str, Dict[Tuple[int, int, int, int], Tuple[float, float, int]]]] = None
    if causal is not None:
        causal_by_class = {}
        for row in causal.itertuples(index=False):
            causal_by_class.setdefault(str(row.label), {})[
                (int(row.source_layer), int(row.source_unit), int(row.target_layer), int(row.target_unit))] = (
                float(row.mean_normalised_effect), float(row.share_above_floor), int(row.count))
    graphs: List[Dict[str, Any]] = []
    cls_bounds = np.searchsorted(cls, np.arange(len(table.classes) + 1))
    ecls_bounds = np.searchsorted(ecls, np.arange(len(table.classes) + 1))
    dropped_edges = 0
    for c in range(len(table.classes)):
        sl = slice(cls_bounds[c], cls_bounds[c + 1])
        keep = kept[sl]
        nl, nn, ncount, nmean = layer[sl][keep], neuron[sl][keep], count[sl][keep], mean[sl][keep]
        index = {(int(a), int(b)): i for i, (a, b) in enumerate(zip(nl, nn))}
        es = slice(ecls_bounds[c], ecls_bounds[c + 1])
        edges = []
        for el in np.unique(elayer[es]):
            pick = elayer[es] == el
            src, dst, ec = esrc[es][pick], edst[es][pick], ecount[es][pick]
            rows = [(index.get((int(el), int(s))), index.get((int(el) + 1, int(d))), int(n))
                    for s, d, n in zip(src, dst, ec)]
            rows = [r for r in rows if r[0] is not None and r[1] is not None]
            rows.sort(key=lambda r: -r[2])
            dropped_edges += max(0, len(rows) - limits.edges_per_layer)
            edges += rows[: limits.edges_per_layer]
        cons = cons_groups.get(table.classes[c])
        graph = {
            "nodes": [[int(a), int(b), int(n), _round(m)] for a, b, n, m in zip(nl, nn, ncount, nmean)],
            "edges": [list(e) for e in edges],
            "consensus": [] if cons is None else [[int(r.layer), int(r.neuron), _round(r.support)]
                                                  for r in cons.itertuples()],
        }
        if causal_by_class is not None:
            nodes = graph["nodes"]
            measured = causal_by_class.get(str(table.classes[c]), {})
            graph["causal"] = [[a, b, _round(v[0]), _round(v[1]), v[2]] for a, b, _ in edges
                               for v in [measured.get((nodes[a][0], nodes[a][1], nodes[b][0], nodes[b][1]))]
                               if v is not None]
        graphs.append(graph)
    if dropped_edges:
        notes.append(f"Class graphs draw the {limits.edges_per_layer} most frequent co-uses between two layers "
                     f"({dropped_edges:,} rarer ones left out).")
    return graphs


def _nearest(table: PathTable, limits: ExplorerLimits) -> List[List[List[float]]]:
    """Per class: ``[class index, cosine similarity]`` of its nearest classes."""
    if len(table.classes) < 2 or limits.nearest == 0:
        return [[] for _ in table.classes]
    sim = class_similarity(table, metric="cosine").to_numpy(dtype=float, copy=True)
    np.fill_diagonal(sim, -np.inf)
    n = min(limits.nearest, len(table.classes) - 1)
    top = np.argsort(-sim, axis=1, kind="stable")[:, :n]
    return [[[int(j), _round(sim[i, j])] for j in row] for i, row in enumerate(top)]


def _images(records, methods, table: PathTable, deviation: Optional[pd.DataFrame], evaluated: Optional[int],
            limits: ExplorerLimits, rng: np.random.Generator, image_loader: Optional[ImageLoader], notes: List[str]
            ) -> Dict[str, Any]:
    """The sampled images: id, class index, prediction, thumbnail and, per method, path,
    contributions, JAS and the removal / enhancement effects."""
    n = len(table)
    chosen = even_class_sample(table.class_codes, limits.max_images, rng)
    if len(chosen) < n:
        notes.append(f"The image view and the neuron view's images hold {len(chosen):,} of the {n:,} images "
                     f"(an even draw over the classes, seed {limits.seed}).")
    ids = [str(table.image_ids[i]) for i in chosen]
    by_key = {(r.method, str(r.image_id)): r for r in records}
    effects = _effects_by_image(records, deviation, evaluated)
    out: Dict[str, Any] = {
        "ids": ids, "class": [int(table.class_codes[i]) for i in chosen],
        "prediction": [by_key[(table.method, i)].prediction for i in ids],
        "paths": {}, "contributions": {}, "jas": {}, "remove": {}, "enhance": {}, "p": [],
    }
    for m in methods:
        rows = [by_key.get((m, i)) for i in ids]
        out["paths"][m] = [None if r is None else r.path for r in rows]
        out["contributions"][m] = [None if r is None or r.contributions is None
                                   else [[_round(v) for v in layer] for layer in r.contributions] for r in rows]
        out["jas"][m] = [None if r is None else _round(r.jas) for r in rows]
        out["remove"][m] = [_round(effects.get((i, m, "remove"), (None, None))[0]) for i in ids]
        out["enhance"][m] = [_round(effects.get((i, m, "enhance"), (None, None))[0]) for i in ids]
    out["p"] = [_round(next((effects[(i, m, "remove")][1] for m in methods if (i, m, "remove") in effects), None))
                for i in ids]
    out["thumbs"] = [_thumbnail(image_loader, i, limits.thumbnail_px) for i in ids] if image_loader else []
    if image_loader is not None and any(t is None for t in out["thumbs"]):
        notes.append(f"{sum(t is None for t in out['thumbs'])} images could not be read for their thumbnail.")
    return out


def _effects_by_image(records: Sequence[PathRecord], deviation: Optional[pd.DataFrame], evaluated: Optional[int]
                      ) -> Dict[Tuple[str, str, str], Tuple[float, float]]:
    """``(image_id, method, operation) -> (prob_deviation, p_before)`` from the evaluation's table:
    by its ``image_id`` column, or, in evaluations written before it had one, by its ``image``
    column, which indexes the sorted ids of the images every method has a record of
    (``evaluated`` of them when the evaluation was run)."""
    if deviation is None or deviation.empty:
        return {}
    stale = ("the evaluation's images do not match the records (evaluated before more records were added?); "
             "the explorer shows no effects. Rerun `captum-paths evaluate`")
    if "image_id" in deviation:
        recorded = {(r.method, str(r.image_id)) for r in records}
        ids = deviation["image_id"]
        if not all(key in recorded for key in zip(deviation["method"], ids)):
            logger.warning(stale)
            return {}
        return {(i, m, op): (float(d), float(p)) for i, m, op, d, p in zip(
            ids, deviation["method"], deviation["operation"], deviation["prob_deviation"], deviation["p_before"])}
    methods = set(deviation["method"])
    common, by_method = complete_images([r for r in records if r.method in methods])
    if set(by_method) != methods:  # an evaluated method has no records now
        common = []
    if int(deviation["image"].max()) >= len(common) or (evaluated is not None and evaluated != len(common)):
        logger.warning(stale)
        return {}
    return {(common[int(i)], m, op): (float(d), float(p)) for i, m, op, d, p in zip(
        deviation["image"], deviation["method"], deviation["operation"], deviation["prob_deviation"],
        deviation["p_before"])}


def _neurons(table: PathTable, graph, images, method: str) -> Dict[str, Dict[str, Any]]:
    """``"layer:neuron" -> {paths, classes, mean}`` (mean contribution) over every path of ``method``,
    for the neurons the page can show (those of the class graphs and of the sampled images)."""
    cls, code, count, csum, cn = table.class_node_counts()
    codes, inverse = np.unique(code, return_inverse=True)
    total = np.bincount(inverse, weights=count)
    n_classes = np.bincount(inverse)
    sums, ns = np.bincount(inverse, weights=csum), np.bincount(inverse, weights=cn)
    layer, neuron = table.decode(codes)
    wanted = {(n[0], n[1]) for g in graph for n in g["nodes"]}
    for path in images["paths"].get(method, []):
        if path is not None:
            wanted.update((l, int(j)) for l, layer_units in enumerate(path) for j in layer_units)
    out: Dict[str, List[Any]] = {}
    for i in range(len(codes)):
        key = (int(layer[i]), int(neuron[i]))
        if key in wanted:
            out[f"{key[0]}:{key[1]}"] = [int(total[i]), int(n_classes[i]),
                                         _round(sums[i] / ns[i]) if ns[i] else None]
    return {k: {"paths": v[0], "classes": v[1], "mean": v[2]} for k, v in out.items()}


def _heatmaps(images, neurons, primary: str, kinds: Optional[List[str]], heatmap: HeatmapFn, limits: ExplorerLimits,
              notes: List[str]) -> Dict[str, List[List[Any]]]:
    """``"layer:neuron" -> [[image index, PNG data URI], ...]`` for the most used neurons."""
    if limits.heatmap_neurons == 0 or limits.heatmap_images == 0:
        return {}
    paths = images["paths"].get(primary, [])
    top = sorted(neurons, key=lambda k: (-neurons[k]["paths"], k))
    out: Dict[str, List[List[Any]]] = {}
    done = 0
    for key in top:
        if done == limits.heatmap_neurons:
            break
        layer, neuron = (int(x) for x in key.split(":"))
        if kinds is not None and kinds[layer] != "neuron":
            continue  # a head has no single channel to attribute to pixels
        users = [i for i, p in enumerate(paths) if p is not None and neuron in p[layer]][: limits.heatmap_images]
        entries = []
        for i in users:
            try:
                values = heatmap(images["ids"][i], layer, neuron)
            except Exception as exc:  # a figure is never worth a failed report
                logger.warning("heatmap of neuron %s on image %s skipped: %s", key, images["ids"][i], exc)
                values = None
            if values is not None:
                entries.append([i, _heat_png(values)])
        if entries:
            out[key] = entries
            done += 1
    if out:
        notes.append(f"Pixel attributions (integrated gradients of the neuron, {limits.heatmap_steps} steps) of the "
                     f"{len(out)} most used neurons, on up to {limits.heatmap_images} images each.")
    return out


def _heat_png(values: np.ndarray, px: int = 96) -> str:
    """A diverging-colour PNG of ``values`` ``(H, W)`` (red: raises the neuron, blue: lowers it)."""
    from matplotlib import colormaps
    from PIL import Image

    v = np.asarray(values, dtype=float)
    scale = float(np.nanmax(np.abs(v))) or 1.0
    rgba = (colormaps["RdBu_r"]((v / scale + 1) / 2) * 255).astype(np.uint8)
    image = Image.fromarray(rgba[..., :3])
    h, w = v.shape
    size = (px, max(1, round(px * h / w))) if w >= h else (max(1, round(px * w / h)), px)
    return _data_uri(image.resize(size, Image.NEAREST), "PNG")


def _thumbnail(loader: ImageLoader, image_id: str, px: int) -> Optional[str]:
    try:
        image = loader(image_id)
    except Exception as exc:
        logger.debug("thumbnail of %s skipped: %s", image_id, exc)
        return None
    if image is None:
        return None
    from captum_paths.model.transforms import to_rgb

    image = to_rgb(image)
    image.thumbnail((px, px))
    return _data_uri(image, "JPEG")


def _data_uri(image, fmt: str) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **({"quality": 80} if fmt == "JPEG" else {"optimize": True}))
    return f"data:image/{fmt.lower()};base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def method_overview(records: Sequence[RecordLike]) -> pd.DataFrame:
    """Per method, from the records (:class:`~captum_paths.records.PathRecord` or dicts): ``images``,
    ``mean_jas``, ``median_jas``, ``mean_abs_delta`` (records without a delta left out) and
    ``accuracy`` (records without a prediction left out); the registered methods first, in
    registry order."""
    frame = pd.DataFrame({
        "method": r.method, "jas": r.jas,
        "abs_delta": abs(r.delta) if r.delta is not None else np.nan,
        "correct": np.nan if r.label is None or r.prediction is None else float(r.label == r.prediction),
    } for r in as_path_records(records))
    grouped = frame.groupby("method").agg(images=("jas", "size"), mean_jas=("jas", "mean"),
                                          median_jas=("jas", "median"), mean_abs_delta=("abs_delta", "mean"),
                                          accuracy=("correct", "mean"))
    return grouped.reindex(_method_order(grouped.index)).rename_axis("method").reset_index()


def _overview_table(records, methods, methods_summary: Optional[pd.DataFrame]) -> List[Dict[str, Any]]:
    grouped = method_overview(records).set_index("method")
    if methods_summary is not None:
        grouped = grouped.join(methods_summary.set_index("method"), how="left")
    rows = []
    for m in methods:
        row = {"method": m}
        for key, value in grouped.loc[m].items():
            row[key] = int(value) if key == "images" else _round(value)
        rows.append(row)
    return rows


def _claims(overview, methods_summary, sharing, layer_summary, primary, fewest=None, comparisons=None,
            causal_summary=None, circuits_fewest=None, circuits_meta=None) -> List[str]:
    """The headline findings, each a sentence with its numbers."""
    claims: List[str] = []
    by_method = {r["method"]: r for r in overview}
    jas = sorted(((r["mean_jas"], m) for m, r in by_method.items() if r.get("mean_jas") is not None), reverse=True)
    if jas:
        best = jas[0]
        others = ", ".join(f"{m} {v:.3f}" for v, m in jas[1:])
        claims.append(f"{best[1]}'s paths carry the largest joint attribution: mean JAS {best[0]:.3f} "
                      f"(probability){'; ' + others if others else ''}.")
    if methods_summary is not None and "mean_prob_deviation_remove" in methods_summary:
        ms = methods_summary.set_index("method")
        line = []
        for m in [primary, "random"]:
            if m in ms.index and pd.notna(ms.loc[m, "mean_prob_deviation_remove"]):
                line.append(f"{m} {100 * ms.loc[m, 'mean_prob_deviation_remove']:+.1f}%")
        if line:
            claims.append("Zeroing a path's neurons changes the target probability by " + ", ".join(line)
                          + " on average.")
    if comparisons is not None and not comparisons.empty:
        removal = comparisons[comparisons["quantity"] == "prob_deviation_remove"]
        if len(removal):
            wins = removal[(removal["holm_p"] < 0.05) & (removal["mean_difference"] < 0)]
            claims.append(f"Removing {primary}'s path takes more of the target probability away than removing "
                          f"{len(wins)} of the {len(removal)} other methods' paths (image by image, Holm-adjusted "
                          f"Wilcoxon p < 0.05; {removal['n'].iloc[0]:,} images).")
    if sharing is not None and not sharing.empty:
        s = sharing.iloc[0]
        p = f", p = {s['p_value']:.3g}" if pd.notna(s.get("p_value")) else ""
        claims.append(f"Images of one class share their path neurons: mean Jaccard {s['within']:.3f} within classes "
                      f"against {s['between']:.3f} between them ({s['ratio']:.1f}x{p}).")
    if fewest is not None and not fewest.empty:
        zero = fewest[fewest["ablation"] == "zero"].set_index("method")
        shown = [m for m in (primary, "random ranking") if m in zero.index]
        parts = [f"{m} {int(zero.loc[m, 'n'])} per layer" if pd.notna(zero.loc[m, "n"]) else f"{m} never"
                 for m in shown]
        if parts:
            claims.append("Fewest units kept per layer (the rest set to 0) for 80% of the target probability on "
                          "held-out images: " + ", ".join(parts) + ".")
    if causal_summary is not None and not causal_summary.empty:
        row = causal_summary.iloc[0]
        if pd.notna(row["share_above_floor"]) and pd.notna(row["random_share_above_floor"]):
            claims.append(f"{100 * row['share_above_floor']:.0f}% of the edges between consecutive units of "
                          f"{row['method']}'s paths rise above the noise floor (removing the unit moves the next "
                          f"one more than 95% of random unit pairs of those layers move each other), against "
                          f"{100 * row['random_share_above_floor']:.0f}% of random pairs ({int(row['images'])} "
                          f"images, {row['ablation']} ablation).")
    if circuits_fewest is not None and not circuits_fewest.empty and circuits_meta:
        rows = circuits_fewest.set_index("method")
        shown = [m for m in (LEARNED, "attribution patching", primary, "random ranking") if m in rows.index]
        parts = [f"{m} never" if pd.isna(rows.loc[m, "fraction_kept"]) else f"{m} all of them"
                 if rows.loc[m, "fraction_kept"] >= 1 else f"{m} {100 * rows.loc[m, 'fraction_kept']:.1f}%"
                 for m in shown]
        if parts:
            replaced = "set to 0" if circuits_meta.get("ablation") == "zero" else "set to their mean"
            claims.append(f"Fewest of all units (heads and neurons) whose circuit keeps 80% of the target "
                          f"probability on held-out images, the rest {replaced} ({circuits_meta.get('classes')} "
                          f"classes): " + ", ".join(parts) + ".")
    if layer_summary is not None and "share_of_jas" in layer_summary and layer_summary["share_of_jas"].notna().any():
        top = layer_summary.loc[layer_summary["share_of_jas"].idxmax()]
        claims.append(f"Layer {int(top['layer'])} carries the largest share of the JAS "
                      f"({100 * top['share_of_jas']:.0f}% on average).")
    return claims


def _causal(analysis_dir: Optional[Path], by_method: Mapping[str, List[PathRecord]]
            ) -> Optional[Tuple[str, pd.DataFrame]]:
    """``(method, per-class causal edges)`` from the analysis' ``causal_edges.csv``, or ``None`` (no
    file, or a method the records do not hold)."""
    edges = _read(analysis_dir, AnalysisFiles.CAUSAL_EDGES)
    if edges is None or edges.empty or edges["method"].nunique() != 1:
        return None
    method = str(edges["method"].iloc[0])
    if method not in by_method:
        return None
    return method, class_causal_edges(edges)


def _causal_meta(summary: Optional[pd.DataFrame], causal: Optional[Tuple[str, pd.DataFrame]]
                 ) -> Optional[Dict[str, Any]]:
    """What the page says about the causal edges: their method, images, ablation and shares."""
    if causal is None or summary is None or summary.empty:
        return None
    row = summary.iloc[0]
    return {"method": causal[0], "images": int(row["images"]), "ablation": str(row["ablation"]),
            "share_above_floor": _round(row["share_above_floor"]),
            "random_share_above_floor": _round(row["random_share_above_floor"])}


def _circuits(folder: Optional[Path], classes: Sequence[Any], graphs: Mapping[str, List[Dict[str, Any]]]
              ) -> Tuple[List[Optional[Dict[str, Any]]], Optional[Dict[str, Any]]]:
    """Per page class (``None`` for a class not studied) its circuit shown, from the circuits stage's
    folder: size, held-out faithfulness, units per layer, strongest units and their causal edges
    ``[source index, target index, mean normalised effect, share above the noise floor, images]``, the
    share of each method's path units inside it and, per method, the indices of its class-graph nodes
    inside it; and what the page says about the stage (``None`` without one)."""
    summary = _read_json(folder, CircuitFiles.SUMMARY)
    learned = _read_json(folder, CircuitFiles.CIRCUITS)
    study = _read(folder, CircuitFiles.STUDY)
    if summary is None or learned is None or study is None:
        return [None] * len(classes), None
    overlap = _read(folder, CircuitFiles.OVERLAP)
    edges = _read(folder, CircuitFiles.EDGES)
    names = {str(k): str(v) for k, v in summary.get("class_names", {}).items()}
    by_name = {names.get(label, label): label for label in learned}
    path_layers = summary.get("path_layers") or []
    kinds = summary.get("kinds") or []
    out: List[Optional[Dict[str, Any]]] = []
    for c, page_class in enumerate(classes):
        label = by_name.get(str(page_class))
        if label is None:
            out.append(None)
            continue
        entry = learned[label]
        circuit = entry["circuits"][entry["shown"]]
        units = [set(u) for u in circuit["units"]]
        rows = study[(study["method"] == LEARNED) & (study["label"].astype(str) == label)
                     & np.isclose(study["strength"], circuit["strength"])]
        row = rows.iloc[0] if len(rows) else None
        strongest: List[List[Any]] = []
        index: Dict[Tuple[int, int], int] = {}
        links: List[List[Any]] = []
        if edges is not None:
            mine = edges[edges["label"].astype(str) == label]
            for r in mine.itertuples(index=False):
                for layer, unit in ((int(r.source_layer), int(r.source_unit)), (int(r.target_layer), int(r.target_unit))):
                    if (layer, unit) not in index:
                        index[(layer, unit)] = len(strongest)
                        strongest.append([layer, unit, _round(circuit["log_alpha"][layer][unit])])
                links.append([index[(int(r.source_layer), int(r.source_unit))],
                              index[(int(r.target_layer), int(r.target_unit))], _round(r.mean_normalised_effect),
                              _round(r.share_above_floor), int(r.count)])
        inside = {}
        if overlap is not None:
            for r in overlap[overlap["label"].astype(str) == label].itertuples(index=False):
                inside[str(r.method)] = [_round(r.share), _round(r.chance), int(r.path_units)]
        nodes_inside = {}
        if len(path_layers):
            for method, per_class in graphs.items():
                nodes = per_class[c]["nodes"] if c < len(per_class) else []
                nodes_inside[method] = [i for i, n in enumerate(nodes)
                                        if n[0] < len(path_layers) and n[1] in units[path_layers[n[0]]]]
        out.append({
            "label": label, "strength": circuit["strength"], "units_kept": circuit["units_kept"],
            "total_units": circuit["total_units"], "kept_per_layer": circuit["kept_per_layer"],
            "widths": [len(a) for a in circuit["log_alpha"]],
            "heads": int(sum(k for k, kind in zip(circuit["kept_per_layer"], kinds) if kind == "head")),
            "mean_prob": None if row is None else _round(row["mean_prob"]),
            "mean_prob_full": None if row is None else _round(row["mean_prob_full"]),
            "held_out": None if row is None else int(row["images"]),
            "units": strongest, "edges": links, "inside": inside, "nodes_inside": nodes_inside,
        })
    meta = {"ablation": summary.get("ablation"), "kinds": kinds, "layer_names": summary.get("layer_names"),
            "classes": len(learned), "strengths": summary.get("strengths"), "fraction": summary.get("fraction"),
            "edge_units": summary.get("edge_units")}
    return out, meta


def _effects(deviation: Optional[pd.DataFrame], limits: ExplorerLimits, rng) -> Dict[str, Dict[str, List[float]]]:
    if deviation is None or deviation.empty:
        return {}
    out: Dict[str, Dict[str, List[float]]] = {}
    for (m, op), group in deviation.groupby(["method", "operation"], sort=False):
        out.setdefault(m, {})[op] = _sample(group["prob_deviation"].tolist(), limits.distribution_sample, rng)
    return out


def _tables(folders: Mapping[str, Optional[Path]], limits: ExplorerLimits, notes: List[str], primary: str
            ) -> List[Dict[str, Any]]:
    out = []
    for folder, file, title, note in _TABLES:
        note = note.replace(_PRIMARY, primary)
        df = _read(folders.get(folder), file)
        if df is None or df.empty:
            continue
        if len(df) > limits.table_rows:
            notes.append(f"The table '{title}' shows its first {limits.table_rows} of {len(df):,} rows.")
            df = df.head(limits.table_rows)
        out.append({"title": title, "note": note, "columns": list(df.columns),
                    "rows": [[_cell(v) for v in row] for row in df.itertuples(index=False)]})
    return out


def _read(folder: Optional[Path], name: str) -> Optional[pd.DataFrame]:
    if folder is None or not (Path(folder) / name).exists():
        return None
    return pd.read_csv(Path(folder) / name, dtype={"image_id": str})  # "007" stays "007"


def _read_json(folder: Optional[Path], name: str) -> Optional[Dict[str, Any]]:
    import json

    if folder is None or not (Path(folder) / name).exists():
        return None
    return json.loads((Path(folder) / name).read_text())


def _sample(values, n: int, rng) -> List[float]:
    values = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if len(values) > n:
        values = [values[i] for i in sorted(rng.choice(len(values), n, replace=False))]
    return [_round(v) for v in values]


def _round(value: Any, digits: int = 4) -> Optional[float]:
    """``value`` to ``digits`` significant digits (``None`` for missing or non-finite values)."""
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _cell(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return _round(value)
    if isinstance(value, (np.bool_,)):
        return bool(value)
    return value if isinstance(value, (int, str, bool)) or value is None else str(value)


def _native(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x
