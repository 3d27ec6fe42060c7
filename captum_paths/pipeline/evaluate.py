"""The evaluate stage: the paper's experiments on a run's paths.

See "Evaluation" in docs/method.md. :func:`evaluate_paths` works on a model,
images and paths in memory and writes its tables and figures to a folder;
:func:`evaluate` runs it on a run folder's records, with the run's model and
images (loaded once by the :class:`~captum_paths.pipeline.run.Run`).
"""
from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd

from captum_paths.records import EvaluationFiles, as_path_records, complete_images, write_json_atomic
from captum_paths.search.registry import DEFAULT_METHOD, primary_method

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from captum_paths.model.sites import NeuronSites

    from captum_paths.pipeline.run import Run
    from captum_paths.search import PathResult

__all__ = ["evaluate", "evaluate_paths", "method_table", "pruning_table", "complete_images", "SEARCHED"]

logger = logging.getLogger(__name__)

#: The searched paths' name (:data:`~captum_paths.search.registry.DEFAULT_METHOD`), kept under its old
#: name; the method the others are compared with is :func:`~captum_paths.search.registry.primary_method`.
SEARCHED = DEFAULT_METHOD


def _stem(folder: Path, csv_name: str) -> Path:
    """Where :func:`~captum_paths.evaluation.harness.save_table` writes the table named ``csv_name``
    (it adds ``.csv`` and ``.json``)."""
    return folder / Path(csv_name).stem


def method_table(deviation: pd.DataFrame, jas: pd.DataFrame, paths: Mapping[str, "PathResult"]) -> pd.DataFrame:
    """Per method: mean JAS per mode, mean / median probability deviation and accuracy deviation per
    operation, and the share of path neurons equal to the primary method's
    (:func:`~captum_paths.search.registry.primary_method`: the searched paths when ``paths`` has them)."""
    from captum_paths.evaluation.harness import summarize_deviation

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
    if paths:
        reference = paths[primary_method(paths)].paths
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


def evaluate_paths(
    model: "nn.Module",
    images: "torch.Tensor",
    labels: "torch.Tensor",
    paths: Mapping[str, "PathResult"],
    out: Union[str, Path],
    batch_size: int = 64,
    factor: float = 2.0,
    jas_modes: Sequence[str] = ("gate", "paper"),
    pruning: bool = True,
    pruning_ks: Sequence[int] = (1, 3, 5),
    pruning_ps: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
    n_steps: Optional[int] = None,
    seed: int = 0,
    faithfulness: bool = True,
    faithfulness_classes: Optional[int] = 10,
    sites: Optional["NeuronSites"] = None,
    image_ids: Optional[Sequence[str]] = None,
    layer_baselines: Any = None,
) -> Dict[str, Any]:
    """The paper's experiments on ``paths`` (one :class:`PathResult` per method, rows
    aligned with ``images`` ``(N, C, H, W)`` and ``labels`` ``(N,)``); tables and figures go to ``out``.

    Tables (CSV + JSON): ``deviation``, ``deviation_by_method``, ``jas``,
    ``methods_summary``, ``intervals`` (per method the mean JAS and effects with 95%
    bootstrap confidence intervals over the images) and ``comparisons`` (every method
    against the primary method, :func:`~captum_paths.search.registry.primary_method`: the
    searched paths when ``paths`` has them, image by image: the mean difference with its interval,
    the share of images where the searched path is better, Wilcoxon signed-rank and
    Holm-adjusted p-values; :mod:`captum_paths.statistics`), and with ``pruning``
    ``pruning``, ``pruning_grid``;
    figures (PNG + SVG): ``deviation``, ``jas``, ``pruning``. ``n_steps`` sets the
    quadrature steps of the JAS comparison and of the pruning study's top-k path
    search (default: each mode's default). With ``faithfulness``, the
    faithfulness-sparsity curves (:func:`captum_paths.evaluation.faithfulness.faithfulness_study`,
    zero and mean ablation, a random-ranking control) of ``faithfulness_classes``
    classes (a seeded draw; ``None``: every class): tables ``faithfulness``,
    ``faithfulness_summary``, ``faithfulness_fewest`` and figure ``faithfulness``.
    ``sites`` are the sites the paths index (default: the model's FFN neurons); the
    released scripts' score (JAS mode ``paper``) is left out for heads. ``image_ids``
    (one per image) add an ``image_id`` column to the ``deviation`` and ``jas`` tables.
    ``layer_baselines`` is what removed units become in the deviation, the JAS and the
    pruning study (default zero; see :mod:`captum_paths.attribution.layer_baselines`); the
    released scripts' score is left out under any other (it is defined against zero). The
    faithfulness curves run zero and mean ablation both, as always.

    Returns:
        ``{"deviation", "jas", "methods", "intervals", "comparisons", "pruning", "faithfulness", "timings",
        "accuracy", "jas_modes"}``:
        the tables as DataFrames (``pruning`` and ``faithfulness`` are ``None`` when
        skipped), the seconds per experiment, the clean top-1 accuracy and the JAS modes compared.
    """
    if image_ids is not None and len(image_ids) != len(images):
        raise ValueError(f"image_ids must name every image: got {len(image_ids)} ids for {len(images)} images")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if sites is not None and sites.widths is not None:  # a model with 4 heads keeps k <= 4 in the pruning grid
        pruning_ks = [k for k in pruning_ks if k <= min(sites.widths)] or [1]
    if sites is not None and sites.has_heads and "paper" in jas_modes:
        logger.info("evaluate: JAS mode 'paper' is defined on FFN neurons only; left out for these heads")
        jas_modes = [m for m in jas_modes if m != "paper"]
    if layer_baselines is not None and "paper" in jas_modes:
        logger.info("evaluate: JAS mode 'paper' is defined against zero; left out under %r", layer_baselines)
        jas_modes = [m for m in jas_modes if m != "paper"] or ["gate"]
    timings: Dict[str, float] = {}
    common = dict(sites=sites, batch_size=batch_size, layer_baselines=layer_baselines)
    with _timed(timings, "deviation_s"):
        deviation = _deviation(model, images, labels, paths, out, factor, image_ids, **common)
    with _timed(timings, "jas_s"):
        jas = _jas(model, images, labels, paths, out, jas_modes, n_steps, image_ids, **common)
    methods = method_table(deviation, jas, paths)
    _save(methods, out, EvaluationFiles.METHODS_SUMMARY)
    with _timed(timings, "statistics_s"):
        intervals, comparisons = _uncertainty(deviation, jas, primary_method(paths), out, seed)
    counts = np.bincount(labels.cpu().numpy())
    study = faithful = None
    if pruning and (counts >= 2).any():
        with _timed(timings, "pruning_s"):
            study = _pruning(model, images, labels, out, pruning_ks, pruning_ps, n_steps, seed, **common)
    elif pruning:
        logger.warning("evaluate: pruning study skipped (it needs at least 2 images per class)")
    if faithfulness and (counts >= 2).any():
        with _timed(timings, "faithfulness_s"):
            faithful = _faithfulness(model, images, labels, paths, out, counts, faithfulness_classes, seed,
                                     sites=sites, batch_size=batch_size)
    elif faithfulness:
        logger.warning("evaluate: faithfulness curves skipped (they need at least 2 images of a class)")
    accuracy = float(deviation.drop_duplicates("image")["correct_before"].mean())
    return {"deviation": deviation, "jas": jas, "methods": methods, "intervals": intervals,
            "comparisons": comparisons, "pruning": study, "faithfulness": faithful, "timings": timings,
            "accuracy": accuracy, "jas_modes": list(jas_modes)}


def _save(table: pd.DataFrame, out: Path, csv_name: str) -> None:
    """Write ``table`` as the evaluation's table ``csv_name`` (CSV and JSON, atomically)."""
    from captum_paths.evaluation.harness import save_table

    save_table(table, _stem(out, csv_name))


@contextlib.contextmanager
def _timed(timings: Dict[str, float], key: str) -> Iterator[None]:
    """Add the block's wall seconds to ``timings[key]``."""
    start = time.perf_counter()
    yield
    timings[key] = time.perf_counter() - start


def _deviation(model, images, labels, paths, out: Path, factor: float, image_ids, sites, batch_size,
               layer_baselines) -> pd.DataFrame:
    """Remove / enhance every path at once: the ``deviation`` tables and figure."""
    from captum_paths.evaluation.harness import probability_deviation, summarize_deviation
    from captum_paths.plots import plot_deviation, save_figure

    logger.info("evaluate: remove / enhance deviation on %d images, %d methods", len(images), len(paths))
    deviation = probability_deviation(model, images, labels, paths, factor=factor, sites=sites,
                                      batch_size=batch_size, layer_baselines=layer_baselines)
    _name_images(deviation, image_ids)
    _save(deviation, out, EvaluationFiles.DEVIATION)
    _save(summarize_deviation(deviation), out, EvaluationFiles.DEVIATION_BY_METHOD)
    save_figure(plot_deviation(deviation), out / "deviation")
    return deviation


def _jas(model, images, labels, paths, out: Path, jas_modes, n_steps, image_ids, sites, batch_size,
         layer_baselines) -> pd.DataFrame:
    """The JAS of every method's paths in each semantics: the ``jas`` table and figure."""
    from captum_paths.evaluation.harness import jas_comparison
    from captum_paths.plots import plot_jas, save_figure

    logger.info("evaluate: JAS comparison (%s)", ", ".join(jas_modes))
    jas = jas_comparison(model, images, labels, paths, modes=tuple(jas_modes), n_steps=n_steps, sites=sites,
                         batch_size=batch_size, layer_baselines=layer_baselines)
    _name_images(jas, image_ids)
    _save(jas, out, EvaluationFiles.JAS)
    save_figure(plot_jas(jas), out / "jas")
    return jas


def _uncertainty(deviation: pd.DataFrame, jas: pd.DataFrame, reference: str, out: Path, seed: int
                 ) -> Tuple[pd.DataFrame, pd.DataFrame]:
    """Intervals per method and comparisons with ``reference``, image by image."""
    from captum_paths.statistics import method_intervals, paired_comparisons, per_image_values

    values = per_image_values(deviation, jas)
    intervals = method_intervals(values, seed=seed)
    comparisons = paired_comparisons(values, reference, seed=seed)
    _save(intervals, out, EvaluationFiles.INTERVALS)
    _save(comparisons, out, EvaluationFiles.COMPARISONS)
    return intervals, comparisons


def _pruning(model, images, labels, out: Path, ks, ps, n_steps, seed: int, sites, batch_size,
             layer_baselines) -> pd.DataFrame:
    """The pruning study with class-consensus paths: its tables and figure."""
    from captum_paths.evaluation.harness import pruning_study
    from captum_paths.plots import plot_pruning, save_figure

    logger.info("evaluate: pruning study")
    study = pruning_study(model, images, labels, ks=ks, ps=ps, seed=seed, n_steps=n_steps, sites=sites,
                          batch_size=batch_size, layer_baselines=layer_baselines)
    _save(study, out, EvaluationFiles.PRUNING)
    _save(pruning_table(study), out, EvaluationFiles.PRUNING_GRID)
    save_figure(plot_pruning(study), out / "pruning")
    return study


def _faithfulness(model, images, labels, paths, out: Path, counts: np.ndarray, max_classes: Optional[int],
                  seed: int, sites, batch_size) -> pd.DataFrame:
    """Faithfulness-sparsity curves of ``max_classes`` classes with two images or more (a seeded draw)."""
    import torch

    from captum_paths.evaluation.faithfulness import faithfulness_study, faithfulness_summary, fewest_units
    from captum_paths.plots import plot_faithfulness, save_figure

    classes = np.flatnonzero(counts >= 2)
    if max_classes is not None and len(classes) > max_classes:
        classes = np.sort(np.random.default_rng(seed).choice(classes, max_classes, replace=False))
    chosen = torch.from_numpy(np.isin(labels.cpu().numpy(), classes))
    logger.info("evaluate: faithfulness curves (%d classes)", len(classes))
    faithful = faithfulness_study(model, images[chosen], labels[chosen],
                                  {name: (result.paths[chosen], result.contributions[chosen])
                                   for name, result in paths.items()},
                                  sites=sites, seed=seed, batch_size=batch_size)
    _save(faithful, out, EvaluationFiles.FAITHFULNESS)
    summary = faithfulness_summary(faithful, seed=seed)
    _save(summary, out, EvaluationFiles.FAITHFULNESS_SUMMARY)
    _save(fewest_units(summary), out, EvaluationFiles.FAITHFULNESS_FEWEST)
    save_figure(plot_faithfulness(summary), out / "faithfulness")
    return faithful


def _name_images(table: pd.DataFrame, image_ids: Optional[Sequence[str]]) -> None:
    """Insert the ``image_id`` of each row's ``image`` index after that column (in place)."""
    if image_ids is not None:
        table.insert(table.columns.get_loc("image") + 1, "image_id", np.asarray(list(image_ids), dtype=object)[
            table["image"].to_numpy()])


def evaluate(
    run: "Run",
    batch_size: int = 64,
    factor: float = 2.0,
    jas_modes: Sequence[str] = ("gate", "paper"),
    pruning: bool = True,
    pruning_ks: Sequence[int] = (1, 3, 5),
    pruning_ps: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
    n_steps: Optional[int] = None,
    seed: int = 0,
    faithfulness: bool = True,
    faithfulness_classes: Optional[int] = 10,
    max_images: Optional[int] = 5000,
) -> Path:
    """:func:`evaluate_paths` on the images every method of ``run`` has a record of (at most
    ``max_images`` of them, an even seeded draw over the classes; ``None``: every one);
    writes ``RUN/evaluation/`` (with ``summary.json``: settings, the images evaluated and
    timings) and returns it. The images are held in memory while it runs (about 0.6 MB
    each at 224 px), which is what the cap bounds; the tables give each number's
    confidence interval over the images evaluated.

    The folder is replaced as a whole when the stage succeeds (readers never see a
    mix of two evaluations), under the run folder's writer lock."""
    from captum_paths.search import PathResult

    if max_images is not None and (isinstance(max_images, bool) or not isinstance(max_images, int)
                                   or max_images < 1):
        raise ValueError(f"max_images must be a positive int or None (every image); got {max_images!r}")
    records = as_path_records(run.records())  # parsed once: the views below take them as they are
    run.check_units(records)
    digest = run.records_digest(records)
    image_ids, by_method = complete_images(records)
    if not image_ids:
        raise ValueError(f"no image of run {str(run.folder)!r} has a record for every method")
    recorded = len(image_ids)
    if max_images is not None and recorded > max_images:
        from captum_paths.statistics import even_class_sample

        first = next(iter(by_method.values()))
        labels_of = pd.factorize(pd.Series([str(first[i].label) for i in image_ids]), sort=True)[0]
        image_ids = [image_ids[i] for i in even_class_sample(labels_of, max_images, np.random.default_rng(seed))]
        logger.info("evaluate: %d of %d images (an even draw over the classes, seed %d)", len(image_ids), recorded,
                    seed)
    model = run.model()
    sites = run.sites()
    images, labels = run.images(image_ids)
    paths = {name: PathResult.from_records([rows[i] for i in image_ids]) for name, rows in by_method.items()}
    baseline = run.layer_baselines()  # the run's ablation: the records were scored against it
    with run.lock(), run.replacing(run.evaluation_dir) as out:
        result = evaluate_paths(model, images, labels, paths, out, batch_size=batch_size, factor=factor,
                                jas_modes=jas_modes, pruning=pruning, pruning_ks=pruning_ks, pruning_ps=pruning_ps,
                                n_steps=n_steps, seed=seed, faithfulness=faithfulness,
                                faithfulness_classes=faithfulness_classes, sites=sites, image_ids=image_ids,
                                layer_baselines=baseline)
        write_json_atomic(out / EvaluationFiles.SUMMARY, {
            "images": len(image_ids), "images_recorded": recorded, "max_images": max_images, "seed": seed,
            "methods": list(paths), "factor": factor, "units": run.settings.get("units"),
            "jas_modes": result["jas_modes"],
            "n_steps": n_steps, "accuracy": result["accuracy"], "timings": result["timings"],
            "model": run.settings["model"], "records_sha256": digest,
            "ablation": run.run_settings.ablation,
        })
    return run.evaluation_dir
