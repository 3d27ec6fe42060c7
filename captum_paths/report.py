"""Evaluate, analyze and report a run folder written by :func:`captum_paths.extract.extract_run`.

- :func:`evaluate_run` reloads the run's model and images (from ``run.json``) and
  runs the paper's experiments (see "Evaluation" in docs/method.md) on the paths
  of the records: remove / enhance deviation, JAS comparison, pruning study.
  Output: ``RUN/evaluation/``.
- :func:`analyze_run` reads records only: path sharing, class similarity,
  consensus paths, shared neurons, the path graph. Output: ``RUN/analysis/``.
- :func:`write_report` gathers both into ``RUN/report.html`` (self-contained:
  tables and figures embedded as base64 PNG) and ``RUN/summary.md``.
"""
from __future__ import annotations

import base64
import html
import logging
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from captum_paths.extract import RECORDS_FILE, read_run
from captum_paths.search.registry import PATH_METHODS
from captum_paths.records import read_records, write_json_atomic, write_text_atomic

__all__ = ["evaluate_run", "analyze_run", "write_report", "method_table", "pruning_table", "load_run", "markdown"]

logger = logging.getLogger(__name__)

SEARCHED = "neuron-path"
PathLike = Union[str, Path]


def load_run(run: PathLike) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """``(settings, records)`` of a run folder; errors name what is missing."""
    run = Path(run)
    if not run.is_dir():
        raise FileNotFoundError(f"run folder {str(run)!r} does not exist; create it with `captum-paths extract`")
    settings = read_run(run)
    if settings is None:
        raise FileNotFoundError(f"run folder {str(run)!r} has no run.json; create it with `captum-paths extract`")
    records = read_records(run / RECORDS_FILE)
    if not records:
        raise ValueError(f"run folder {str(run)!r} has no records in {RECORDS_FILE}; run `captum-paths extract` "
                         "(or `captum-paths merge` after a torchrun that stopped early)")
    return settings, records


def _complete_images(records: List[Dict[str, Any]]) -> Tuple[List[str], Dict[str, Dict[str, dict]]]:
    by_method: Dict[str, Dict[str, dict]] = {}
    for r in records:
        by_method.setdefault(r["method"], {})[str(r["image_id"])] = r
    common = set.intersection(*(set(rows) for rows in by_method.values()))
    return sorted(common), by_method


def _load_images(settings: Dict[str, Any], image_ids: Sequence[str], device: Optional[str]):
    import torch

    from captum_paths.data import ImageFolderDataset
    from captum_paths.distributed import default_device
    from captum_paths.models import load_model

    if settings.get("data") is None:
        raise ValueError("run.json names no data folder; evaluation needs the run's images")
    device = default_device(device)
    model, transform = load_model(settings["model"], pretrained=bool(settings.get("pretrained")),
                                  checkpoint=settings.get("checkpoint"), num_classes=settings.get("num_classes"),
                                  device=device)
    dataset = ImageFolderDataset(settings["data"], transform=transform, label_map=settings.get("label_map"))
    where = {image_id: i for i, image_id in enumerate(dataset.image_ids)}
    missing = [i for i in image_ids if i not in where]
    if missing:
        raise ValueError(f"{len(missing)} recorded images are not in the data folder {settings['data']!r} "
                         f"(e.g. {missing[0]!r})")
    items = [dataset[where[i]] for i in image_ids]
    images = torch.stack([x for x, _, _ in items])
    labels = torch.tensor([y for _, y, _ in items])
    return model, images, labels


def method_table(deviation: pd.DataFrame, jas: pd.DataFrame, paths: Dict[str, Any]) -> pd.DataFrame:
    """Per method: mean JAS per mode, mean / median probability deviation and accuracy deviation per
    operation, and the share of path neurons equal to the searched path's."""
    from captum_paths.evaluation import summarize_deviation

    summary = summarize_deviation(deviation)
    wide = summary.pivot(index="method", columns="operation",
                         values=["mean_prob_deviation", "median_prob_deviation", "accuracy_deviation"])
    wide.columns = [f"{a}_{b}" for a, b in wide.columns]
    mean_jas = jas.groupby(["method", "mode"])["jas"].mean().unstack("mode").add_prefix("mean_jas_")
    order = list(dict.fromkeys(deviation["method"]))
    table = mean_jas.join(wide).reindex(order)
    columns = [c for c in (
        "mean_jas_gate", "mean_jas_paper",
        "mean_prob_deviation_remove", "mean_prob_deviation_enhance",
        "median_prob_deviation_remove", "median_prob_deviation_enhance",
        "accuracy_deviation_remove", "accuracy_deviation_enhance",
    ) if c in table.columns]
    table = table[columns]
    if SEARCHED in paths:
        reference = paths[SEARCHED].paths
        table["same_neurons_as_searched"] = [
            float((paths[m].paths == reference).double().mean()) if m in paths else float("nan")
            for m in table.index
        ]
    return table.reset_index()


def pruning_table(pruning: pd.DataFrame) -> pd.DataFrame:
    """Mean over classes per (depth, k, p) of mean true-class probability and accuracy."""
    return (
        pruning.groupby(["depth", "k", "p"])[["mean_prob", "accuracy", "mean_prob_unpruned", "accuracy_unpruned"]]
        .mean()
        .reset_index()
    )


def evaluate_run(
    run: PathLike,
    batch_size: int = 64,
    device: Optional[str] = None,
    factor: float = 2.0,
    jas_modes: Sequence[str] = ("gate", "paper"),
    pruning: bool = True,
    pruning_ks: Sequence[int] = (1, 3, 5),
    pruning_ps: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
    jas_steps: Optional[int] = None,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """The paper's experiments on a run's paths; writes ``RUN/evaluation/`` and returns that folder.

    Only images recorded by every method are used. Tables: ``deviation``,
    ``deviation_by_method``, ``jas``, ``methods_summary``, ``pruning``,
    ``pruning_grid`` (CSV + JSON); figures ``deviation``, ``jas``, ``pruning``
    (PNG + SVG); ``summary.json`` with the settings and timings. ``jas_steps``
    sets the quadrature steps of the JAS comparison and of the pruning study's
    top-k path search (default: each mode's default).
    """
    from captum_paths.evaluation import (
        jas_comparison,
        probability_deviation,
        pruning_study,
        save_table,
        summarize_deviation,
    )
    from captum_paths.plots import plot_deviation, plot_jas, plot_pruning, save_figure
    from captum_paths.search import PathResult

    settings, records = load_run(run)
    out = Path(run) / "evaluation"
    out.mkdir(parents=True, exist_ok=True)
    image_ids, by_method = _complete_images(records)
    if not image_ids:
        raise ValueError(f"no image of run {str(run)!r} has a record for every method")
    model, images, labels = _load_images(settings, image_ids, device)
    paths = {name: PathResult.from_records([rows[i] for i in image_ids]) for name, rows in by_method.items()}
    timings: Dict[str, float] = {}

    start = time.perf_counter()
    logger.info("evaluate: remove / enhance deviation on %d images, %d methods", len(image_ids), len(paths))
    deviation = probability_deviation(model, images, labels, paths, factor=factor, batch_size=batch_size)
    save_table(deviation, out / "deviation")
    save_table(summarize_deviation(deviation), out / "deviation_by_method")
    save_figure(plot_deviation(deviation), out / "deviation")
    timings["deviation_s"] = time.perf_counter() - start

    start = time.perf_counter()
    logger.info("evaluate: JAS comparison (%s)", ", ".join(jas_modes))
    jas = jas_comparison(model, images, labels, paths, modes=tuple(jas_modes), n_steps=jas_steps,
                         batch_size=batch_size)
    save_table(jas, out / "jas")
    save_figure(plot_jas(jas), out / "jas")
    timings["jas_s"] = time.perf_counter() - start

    methods = method_table(deviation, jas, paths)
    save_table(methods, out / "methods_summary")

    counts = np.bincount(labels.numpy())
    if pruning and (counts >= 2).any():
        start = time.perf_counter()
        logger.info("evaluate: pruning study")
        study = pruning_study(model, images, labels, ks=pruning_ks, ps=pruning_ps,
                              seed=seed, n_steps=jas_steps, batch_size=batch_size)
        save_table(study, out / "pruning")
        save_table(pruning_table(study), out / "pruning_grid")
        save_figure(plot_pruning(study), out / "pruning")
        timings["pruning_s"] = time.perf_counter() - start
    elif pruning:
        logger.warning("evaluate: pruning study skipped (it needs at least 2 images per class)")

    accuracy = float(deviation.drop_duplicates("image")["correct_before"].mean())
    write_json_atomic(out / "summary.json", {
        "images": len(image_ids), "methods": list(paths), "factor": factor, "jas_modes": list(jas_modes),
        "accuracy": accuracy, "timings": timings, "model": settings["model"],
    })
    return out


def analyze_run(run: PathLike, method: Optional[str] = None, permutations: int = 1000, seed: int = 0,
                pixels: bool = True, device: Optional[str] = None) -> Path:
    """Class-level path analysis from a run's records; writes ``RUN/analysis/`` and returns it.

    With ``pixels`` (and the run's model and data folder at hand) it also draws
    which pixels drive the last-layer neuron of one image's path (Captum
    ``NeuronIntegratedGradients``); without them that figure is skipped with a warning."""
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
    from captum_paths.plots.paths import (
        plot_class_similarity,
        plot_neuron_frequency_heatmap,
        plot_path_graph,
    )

    settings, records = load_run(run)
    methods = list(dict.fromkeys(r["method"] for r in records))
    if method is None:
        method = SEARCHED if SEARCHED in methods else methods[0]
    if method not in methods:
        raise ValueError(f"run {str(run)!r} has no records of method {method!r}; it has {methods}")
    records = [r for r in records if r["method"] == method]
    out = Path(run) / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    table = PathTable.from_records(records)
    if len(table.classes) < 2:
        raise ValueError(f"analysis needs images of at least 2 classes; run {str(run)!r} has {len(table.classes)}")
    sharing = path_sharing(table, permutations=permutations, seed=seed)
    cosine = class_similarity(table, metric="cosine")
    jaccard = class_similarity(table, metric="jaccard")
    cons = consensus_paths(table)
    shared = shared_neurons(table, among="consensus")
    graph = PathGraph.from_table(table)

    sharing.to_frame().to_csv(out / "path_sharing.csv", index=False)
    sharing.per_class.to_csv(out / "path_sharing_by_class.csv", index=False)
    cosine.to_csv(out / "class_similarity_cosine.csv")
    jaccard.to_csv(out / "class_similarity_jaccard.csv")
    cons.to_csv(out / "consensus_paths.csv", index=False)
    table.layer_summary().to_csv(out / "layer_summary.csv", index=False)
    shared.to_csv(out / "shared_consensus_neurons.csv", index=False)
    graph.to_graphml(out / "path_graph.graphml")
    write_json_atomic(out / "consensus_paths.json", {str(k): v for k, v in consensus_path_lists(cons).items()})

    per_class = sharing.per_class
    best = per_class["class"].iloc[int(np.nanargmax(per_class["within"].to_numpy()))]
    figures = {
        "class_similarity_cosine": plot_class_similarity(
            cosine, title="Cosine similarity of the classes' neuron-frequency vectors"),
        "neuron_frequency_heatmap": plot_neuron_frequency_heatmap(table, top=12),
        f"path_graph_class_{best}": plot_path_graph(graph, cls=best, max_nodes_per_layer=5),
    }
    if pixels:
        figures.update(_pixel_figure(settings, [r for r in records if r["label"] == best][0], device))
    for stale in [*out.glob("*.png"), *out.glob("*.svg")]:  # figures of an earlier analysis (another method)
        stale.unlink()
    for name, fig in figures.items():
        save_figure(fig, out / name)
    write_json_atomic(out / "summary.json", {
        "method": method, "images": len(records), "classes": [str(c) for c in table.classes],
        "within": sharing.within, "between": sharing.between, "ratio": sharing.ratio,
        "p_value": sharing.p_value, "permutations": sharing.permutations,
        "mean_consensus_support": float(cons["support"].mean()),
        "graph_nodes": graph.graph.number_of_nodes(), "graph_edges": graph.graph.number_of_edges(),
    })
    return out


def _pixel_figure(settings: Dict[str, Any], record: Dict[str, Any], device: Optional[str]) -> Dict[str, Any]:
    """``{name: figure}`` of the pixels behind the last neuron of ``record``'s path, or ``{}``."""
    from captum_paths.models import ModelLoadError
    from captum_paths.plots.paths import plot_neuron_pixels

    try:
        model, images, _ = _load_images(settings, [str(record["image_id"])], device)
    except (ValueError, OSError, ModelLoadError) as exc:
        logger.warning("pixel figure skipped: %s", exc)
        return {}
    layer = len(record["path"]) - 1
    fig, _, _ = plot_neuron_pixels(model, images[0].to(next(model.parameters()).device), layer,
                                   int(record["path"][layer][0]))
    fig.text(0.01, 0.01, f"image {record['image_id']} (class {record['label']}), method {record['method']}",
             fontsize=8)
    return {"neuron_pixels": fig}


# ---------------------------------------------------------------------------------- report

def _as_text(df: pd.DataFrame, floatfmt: str = ".4f") -> pd.DataFrame:
    """Floats with ``floatfmt`` and integers as integers, column by column."""
    cells = df.copy()
    for col in cells.columns:
        if pd.api.types.is_float_dtype(cells[col]):
            cells[col] = [format(v, floatfmt) for v in cells[col]]
        else:
            cells[col] = cells[col].astype(str)
    return cells


def markdown(df: pd.DataFrame, floatfmt: str = ".4f", index: bool = False) -> str:
    """Markdown table of ``df``: floats with ``floatfmt``, integers as integers."""
    return _as_text(df, floatfmt).to_markdown(index=index, disable_numparse=True, stralign="right")


def _html_table(df: pd.DataFrame) -> str:
    return _as_text(df).to_html(index=False, border=0, classes="t")


def _image(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<figure><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"/>' \
           f"<figcaption>{html.escape(path.stem)}</figcaption></figure>"


def _read_csv(path: Path) -> Optional[pd.DataFrame]:
    return pd.read_csv(path) if path.exists() else None


def write_report(run: PathLike) -> Tuple[Path, Path]:
    """Write ``RUN/report.html`` and ``RUN/summary.md`` from what evaluate / analyze left; returns both."""
    settings, records = load_run(run)
    run = Path(run)
    methods = list(dict.fromkeys(r["method"] for r in records))
    overview = pd.DataFrame(
        {"method": r["method"], "jas": r["jas"], "abs_delta": abs(r["delta"] or 0.0),
         "correct": r["label"] == r["prediction"]} for r in records
    ).groupby("method", sort=False).agg(
        images=("jas", "size"), mean_jas=("jas", "mean"), median_jas=("jas", "median"),
        mean_abs_delta=("abs_delta", "mean"), accuracy=("correct", "mean"),
    ).reset_index()
    overview["method"] = pd.Categorical(overview["method"], [m for m in PATH_METHODS if m in methods]
                                        + [m for m in methods if m not in PATH_METHODS])
    overview = overview.sort_values("method").astype({"method": str})
    shown = {k: settings.get(k) for k in ("model", "checkpoint", "mode", "steps", "approximation", "k", "target",
                                          "data")}
    sections: List[Tuple[str, str, Optional[pd.DataFrame]]] = [("Paths per method (from the records)", "", overview)]
    eva, ana = run / "evaluation", run / "analysis"
    for title, note, file in (
        ("Evaluation per method", "Probability deviation = p_edit(y)/p(y) - 1 after removing (x0) or enhancing "
         "every path neuron at once; accuracy deviation = top-1 after - before.", eva / "methods_summary.csv"),
        ("Pruning (mean over classes)", "Keep the top-k class-consensus neurons per layer, zero every other "
         "neuron with probability p in the first `depth` layers; images disjoint from the consensus images.",
         eva / "pruning_grid.csv"),
        ("Path sharing", "Mean Jaccard of image paths within vs between classes, label-permutation p-value.",
         ana / "path_sharing.csv"),
        ("Path sharing per class", "", ana / "path_sharing_by_class.csv"),
        ("Paths per layer", "Distinct neurons, the most frequent neuron and the share of paths holding it, "
         "the layer's mean contribution and its mean share of the JAS.", ana / "layer_summary.csv"),
        ("Consensus paths", "Most frequent neuron per layer and class, with its support.", ana / "consensus_paths.csv"),
        ("Neurons shared by several classes' consensus paths", "", ana / "shared_consensus_neurons.csv"),
    ):
        df = _read_csv(file)
        if df is not None:
            sections.append((title, note, df))
    figures = sorted(eva.glob("*.png")) + sorted(ana.glob("*.png"))

    settings_md = ", ".join(f"{k} = {v}" for k, v in shown.items() if v is not None)
    lines = ["# captum-paths report", "", f"Run `{run}`: {len(records)} records, methods {', '.join(methods)}.",
             "", f"Settings: {settings_md}.", ""]
    for title, note, df in sections:
        lines += [f"## {title}", ""] + ([note, ""] if note else []) + [markdown(df), ""]
    if figures:
        lines += ["## Figures", ""] + [f"- `{p.relative_to(run)}` (and `.svg`)" for p in figures] + [""]
    if not (eva / "methods_summary.csv").exists():
        lines += ["(No evaluation yet: run `captum-paths evaluate --run RUN`.)", ""]
    if not (ana / "path_sharing.csv").exists():
        lines += ["(No analysis yet: run `captum-paths analyze --run RUN`.)", ""]
    summary = run / "summary.md"
    write_text_atomic(summary, "\n".join(lines))

    body = [f"<h1>captum-paths report</h1><p>Run <code>{html.escape(str(run))}</code>: {len(records)} records, "
            f"methods {html.escape(', '.join(methods))}.</p><p>Settings: {html.escape(settings_md)}.</p>"]
    for title, note, df in sections:
        body.append(f"<h2>{html.escape(title)}</h2>" + (f"<p>{html.escape(note)}</p>" if note else "")
                    + _html_table(df))
    if figures:
        body.append("<h2>Figures</h2>" + "".join(_image(p) for p in figures))
    page = (
        "<!DOCTYPE html><html><head><meta charset='utf-8'><title>captum-paths report</title><style>"
        "body{font-family:sans-serif;max-width:1100px;margin:auto;padding:1em}"
        "table.t{border-collapse:collapse;font-size:13px}table.t td,table.t th{padding:2px 8px;"
        "border-bottom:1px solid #ddd;text-align:right}img{max-width:100%}figure{margin:1em 0}"
        "</style></head><body>" + "\n".join(body) + "</body></html>\n"
    )
    report = run / "report.html"
    write_text_atomic(report, page)
    return report, summary
