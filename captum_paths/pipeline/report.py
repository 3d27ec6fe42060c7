"""The report stage: ``RUN/report.html`` and ``RUN/summary.md`` from what the other stages left.

The HTML page is the path explorer (:mod:`captum_paths.explorer`): self-contained,
interactive, offline. The Markdown summary lists the tables and the figure files
(PNG and SVG) for papers.
"""
from __future__ import annotations

import functools
import logging
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import TYPE_CHECKING, Any, Callable, Dict, Iterable, List, Optional, Sequence, Set, Tuple

import pandas as pd

from captum_paths.records import (AnalysisFiles, CircuitFiles, EvaluationFiles, PathRecord, RunFiles,
                                  as_path_records, write_text_atomic)
from captum_paths.search.registry import primary_method

if TYPE_CHECKING:  # pragma: no cover
    from captum_paths.explorer import ExplorerLimits
    from captum_paths.pipeline.run import Run

__all__ = ["write_report", "markdown"]

logger = logging.getLogger(__name__)


def _as_text(df: pd.DataFrame, floatfmt: str = ".4f") -> pd.DataFrame:
    """Floats with ``floatfmt`` (p-values, columns named ``*_p`` or ``p_value``, in 3
    significant digits: fixed decimals hide the small ones) and integers as integers."""
    cells = df.copy()
    for col in cells.columns:
        if pd.api.types.is_float_dtype(cells[col]):
            fmt = ".3g" if str(col).endswith("_p") or col == "p_value" else floatfmt
            cells[col] = [format(v, fmt) for v in cells[col]]
        else:
            cells[col] = cells[col].astype(str)
    return cells


def markdown(df: pd.DataFrame, floatfmt: str = ".4f", index: bool = False) -> str:
    """Markdown table of ``df``: floats with ``floatfmt``, integers as integers."""
    return _as_text(df, floatfmt).to_markdown(index=index, disable_numparse=True, stralign="right")


def _read_csv(path: Path) -> Optional[pd.DataFrame]:
    return pd.read_csv(path) if path.exists() else None


def _evaluated_images(evaluation_dir: Path) -> str:
    """`` N images`` (and how they were drawn) from the evaluation's summary.json, or ``""``."""
    import json

    try:
        summary = json.loads((evaluation_dir / EvaluationFiles.SUMMARY).read_text())
    except (OSError, ValueError):
        return ""
    images, recorded = summary.get("images"), summary.get("images_recorded")
    if images is None:
        return ""
    if recorded is not None and recorded > images:
        return (f" Evaluated on {images:,} of the {recorded:,} images with a record of every method (an even draw "
                f"over the classes, seed {summary.get('seed', 0)}).")
    return f" Evaluated on {images:,} images."


def _interval_cells(intervals: Optional[pd.DataFrame]) -> Optional[pd.DataFrame]:
    """The evaluation's ``intervals`` table as one row per method, one ``mean [low, high]`` cell per quantity."""
    if intervals is None or intervals.empty:
        return None
    cells = intervals.assign(cell=[f"{m:.4f} [{lo:.4f}, {hi:.4f}]" for m, lo, hi in
                                   zip(intervals["mean"], intervals["ci_low"], intervals["ci_high"])])
    wide = cells.pivot(index="method", columns="quantity", values="cell")
    wide = wide.reindex(index=list(dict.fromkeys(intervals["method"])),
                        columns=list(dict.fromkeys(intervals["quantity"])))
    wide.columns.name = None
    return wide.reset_index()


def _non_empty(df: Optional[pd.DataFrame]) -> Optional[pd.DataFrame]:
    return None if df is None or df.empty else df


#: The summary's tables: ``(title, note, stage folder, file)``; the note of the evaluation's
#: table gets the images it used, and its uncertainty tables follow it (:func:`_uncertainty_sections`).
_SECTIONS = (
    ("Evaluation per method", "Probability deviation = p_edit(y)/p(y) - 1 after removing (x0) or enhancing "
     "every path neuron at once; accuracy deviation = top-1 after - before.", "evaluate",
     EvaluationFiles.METHODS_SUMMARY),
    ("Fewest units for 80% of the target probability", "Per class, the units its paths use most are kept "
     "(N per layer) and every other unit of the sites is ablated (to 0, or to its mean); the smallest N whose "
     "mean target probability on held-out images reaches 80% of the unablated model's. Full curves: "
     f"{RunFiles.EVALUATION}/{EvaluationFiles.FAITHFULNESS_SUMMARY}.", "evaluate", EvaluationFiles.FAITHFULNESS_FEWEST),
    ("Pruning (mean over classes)", "Keep the top-k class-consensus neurons per layer, zero every other "
     "neuron with probability p in the first `depth` layers; images disjoint from the consensus images.",
     "evaluate", EvaluationFiles.PRUNING_GRID),
    ("Path sharing", "Mean Jaccard of image paths within vs between classes, label-permutation p-value.",
     "analyze", AnalysisFiles.PATH_SHARING),
    ("Path sharing per class", "", "analyze", AnalysisFiles.PATH_SHARING_BY_CLASS),
    ("Paths per layer", "Distinct neurons, the most frequent neuron and the share of paths holding it, "
     "the layer's mean contribution and its mean share of the JAS.", "analyze", AnalysisFiles.LAYER_SUMMARY),
    ("Consensus paths", "Most frequent neuron per layer and class, with its support.", "analyze",
     AnalysisFiles.CONSENSUS_PATHS),
    ("Neurons shared by several classes' consensus paths", "", "analyze", AnalysisFiles.SHARED_CONSENSUS_NEURONS),
    ("Are paths chains? Causal edges between consecutive path units", "Each path unit of the drawn images is "
     "replaced by its baseline (the run's ablation) and the path's unit of the next layer read again, everything "
     "between recomputed; the change, divided by that unit's standard deviation over the images, is the "
     "normalised effect. An edge is above the noise floor when its |normalised effect| exceeds the 95% quantile "
     "of random unit pairs of the same layers (seeded); random pairs, held out, sit above it about 5% of the "
     f"time. Per image: {RunFiles.ANALYSIS}/{AnalysisFiles.CAUSAL_EDGES}.", "analyze",
     AnalysisFiles.CAUSAL_EDGE_SUMMARY),
    ("Causal edges per layer pair", "", "analyze", AnalysisFiles.CAUSAL_EDGES_BY_LAYER),
    ("Class circuits: fewest units for 80% of the target probability", "Per class, learned circuits "
     "(hard-concrete masks over heads and neurons, one per sparsity strength) and the best units over all layers "
     "by attribution patching, by path use of each method and at random are kept, every other unit ablated at "
     "every token; the smallest share of all units (mean over the classes) whose mean target probability on "
     "held-out images reaches 80% of the unablated model's. Every circuit: "
     f"{RunFiles.CIRCUITS}/{CircuitFiles.SUMMARY_TABLE}; units per layer: {RunFiles.CIRCUITS}/{CircuitFiles.UNITS}.",
     "circuits", CircuitFiles.FEWEST),
    ("Path units inside the class circuits", "Per class and method, the share of the class's distinct path units "
     "inside its circuit shown (the sparsest keeping 80%), of its paths' entries, and the share a random unit "
     "of those layers has (chance).", "circuits", CircuitFiles.OVERLAP),
)

Section = Tuple[str, str, Optional[pd.DataFrame]]


def write_report(run: "Run", limits: Optional["ExplorerLimits"] = None, heatmaps: bool = True
                 ) -> Tuple[Path, Path]:
    """Write ``RUN/report.html`` (the path explorer) and ``RUN/summary.md`` from what extract,
    evaluate and analyze left; returns both.

    Args:
        limits: caps on what the page embeds (default :class:`~captum_paths.explorer.ExplorerLimits`).
        heatmaps: compute the pixel attribution of the most used neurons (loads the run's model).

    Returns:
        ``(report.html, summary.md)``: the paths of the two files written.
    """
    from captum_paths.explorer import ExplorerLimits

    limits = ExplorerLimits() if limits is None else limits
    if not isinstance(limits, ExplorerLimits):
        raise TypeError(f"limits must be an ExplorerLimits; got {type(limits).__name__}")
    records = as_path_records(run.records())  # parsed once: the overview and the explorer take them as they are
    run.check_units(records)
    folders = _current_outputs(run, records)
    summary = _summary_markdown(run, records, folders)
    page = _page(run, records, folders, limits, heatmaps)
    with run.lock():
        write_text_atomic(run.summary_file, summary)
        write_text_atomic(run.report_file, page)
    return run.report_file, run.summary_file


def _current_outputs(run: "Run", records: Sequence[PathRecord]) -> Dict[str, Optional[Path]]:
    """``{"evaluate": folder, "analyze": folder, "circuits": folder}``: each stage's output folder, or ``None`` when
    it was made from other records than the run holds now (a ``--restart``, more images since;
    left out, with a warning, rather than shown as this run's)."""
    folders: Dict[str, Optional[Path]] = {"evaluate": run.evaluation_dir, "analyze": run.analysis_dir,
                                          "circuits": run.circuits_dir}
    digest = run.records_digest(records)  # once for both stages
    for stage, folder in folders.items():
        if run.stale(folder, records, digest):
            logger.warning("report: %s/ was made from other records than the run holds now; it is left out (rerun "
                           "`captum-paths %s --run %s`)", folder.name, stage, run.folder)
            folders[stage] = None
    return folders


def _table(folder: Optional[Path], name: str) -> Optional[pd.DataFrame]:
    return None if folder is None else _read_csv(folder / name)


def _sections(records: Sequence[PathRecord], folders: Dict[str, Optional[Path]]) -> List[Section]:
    """The summary's sections: the records' overview, then every stage table there is."""
    from captum_paths.explorer import method_overview

    eva = folders["evaluate"]
    sections: List[Section] = [("Paths per method (from the records)", "", method_overview(records))]
    for title, note, stage, name in _SECTIONS:
        df = _table(folders[stage], name)
        if df is not None:
            if name == EvaluationFiles.METHODS_SUMMARY:
                note += _evaluated_images(eva)
            sections.append((title, note, df))
        if name == EvaluationFiles.METHODS_SUMMARY:  # its uncertainty right below it
            sections += _uncertainty_sections(eva, primary_method(r.method for r in records))
    return sections


def _uncertainty_sections(eva: Optional[Path], primary: str) -> List[Section]:
    """The evaluation's intervals and its comparisons with the primary method, where there are any."""
    return [section for section in (
        ("Confidence intervals", "Mean over the evaluated images and its 95% bootstrap confidence interval "
         "(BCa up to 5,000 images, percentile above).", _interval_cells(_table(eva, EvaluationFiles.INTERVALS))),
        (f"Compared with {primary}", f"Image by image: mean difference ({primary} minus the method) and its "
         f"95% bootstrap interval; reference_better: share of images where {primary}'s path is better "
         "(higher JAS, lower removal deviation, higher enhancement deviation; ties count half); two-sided "
         "Wilcoxon signed-rank p, Holm-adjusted over the table.",
         _non_empty(_table(eva, EvaluationFiles.COMPARISONS))),
    ) if section[2] is not None]


def _summary_markdown(run: "Run", records: Sequence[PathRecord], folders: Dict[str, Optional[Path]]) -> str:
    """``summary.md``: the run, its settings, every table and figure, and what is missing or stale."""
    settings = run.settings
    methods = list(dict.fromkeys(r.method for r in records))
    shown = {k: settings.get(k) for k in ("model", "checkpoint", "mode", "n_steps", "approximation", "k", "target",
                                          "ablation", "ablation_images", "ablation_seed", "data")}
    settings_md = ", ".join(f"{k} = {v}" for k, v in shown.items() if v is not None)
    lines = ["# captum-paths report", "", f"Run `{run.folder}`: {len(records)} records, methods {', '.join(methods)}.",
             "", f"Settings: {settings_md}.", ""]
    for title, note, df in _sections(records, folders):
        lines += [f"## {title}", ""] + ([note, ""] if note else []) + [markdown(df), ""]
    figures = [p for folder in folders.values() if folder is not None for p in sorted(folder.glob("*.png"))]
    if figures:
        lines += ["## Figures", ""] + [f"- `{p.relative_to(run.folder)}` (and `.svg`)" for p in figures] + [""]
    if folders["circuits"] is None:
        lines += ["(The class circuits were made from other records than the run holds now and are left out: run "
                  "`captum-paths circuits --run RUN`.)", ""]
    for stage, what, name in (("evaluate", "evaluation", EvaluationFiles.METHODS_SUMMARY),
                              ("analyze", "analysis", AnalysisFiles.PATH_SHARING)):
        if folders[stage] is None:
            lines += [f"(The {what} was made from other records than the run holds now and is left out: run "
                      f"`captum-paths {stage} --run RUN`.)", ""]
        elif not (folders[stage] / name).exists():
            lines += [f"(No {what} yet: run `captum-paths {stage} --run RUN`.)", ""]
    return "\n".join(lines)


def _page(run: "Run", records: Sequence[PathRecord], folders: Dict[str, Optional[Path]],
          limits: "ExplorerLimits", heatmaps: bool) -> str:
    """``report.html``: the explorer over the records and the current stage outputs."""
    from captum_paths.explorer import explorer_payload, render_page

    class_names, image_loader = _folder_access(run)
    heatmap = _heatmap_fn(run, limits, image_loader) if heatmaps and image_loader is not None else None
    payload = explorer_payload(records, settings=run.settings, evaluation_dir=folders["evaluate"],
                               analysis_dir=folders["analyze"], class_names=class_names, image_loader=image_loader,
                               heatmap=heatmap, limits=limits, run_name=str(run.folder),
                               circuits_dir=folders["circuits"])
    if image_loader is not None and image_loader.refused:
        refused = sorted(image_loader.refused)
        logger.warning("report: %d recorded image ids lead outside the data folder %s (e.g. %r); the page shows "
                       "no thumbnail or pixel attribution of them", len(refused), image_loader.root, refused[0])
        payload["meta"]["notes"].append(
            f"{len(refused)} recorded image {'id leads' if len(refused) == 1 else 'ids lead'} outside the data folder "
            "(an absolute path, '..', or a file its scan does not list); the page shows no "
            "thumbnail or pixel attribution of them.")
    return render_page(payload, title=f"captum-paths: {run.folder.name}")


class _DataImages:
    """Reads the run's images by id for the page, only the data folder's own: an id is refused (no
    image, the id kept in :attr:`refused`) unless it is a relative path without ``..`` that the
    folder's scan lists (the scan decides which symbolic links are part of the data, as it does for
    extract). A record cannot make the page embed any other file."""

    def __init__(self, root: Path, image_ids: Iterable[str]) -> None:
        self.root = root
        self._listed = frozenset(image_ids)
        self.refused: Set[str] = set()

    def path(self, image_id: str) -> Optional[Path]:
        """The file of ``image_id`` inside the data folder, or ``None`` (and the id noted) when it is not one."""
        if _listed_image(image_id, self._listed):
            return self.root / image_id
        self.refused.add(str(image_id))
        return None

    def __call__(self, image_id: str) -> Any:
        from captum_paths.model.data import open_image

        path = self.path(image_id)
        return None if path is None else open_image(path)


def _listed_image(image_id: Any, listed: frozenset) -> bool:
    """Whether ``image_id`` is one of the data folder's images (see :class:`_DataImages`)."""
    if not isinstance(image_id, str) or not image_id or "\0" in image_id or image_id not in listed:
        return False
    posix, windows = PurePosixPath(image_id), PureWindowsPath(image_id)
    if posix.is_absolute() or windows.drive or windows.root or ".." in posix.parts or ".." in windows.parts:
        return False
    return True


def _folder_access(run: "Run") -> Tuple[Optional[List[str]], Optional[_DataImages]]:
    """The class names and an image reader of the run's data folder, or ``(None, None)`` without it."""
    data = run.settings.get("data")
    if data is None or not Path(data).is_dir():
        if data is not None:
            logger.warning("report: the data folder %s is not here; the page has no thumbnails", data)
        return None, None
    try:
        folder = run._folder()
        names = folder.class_names()
    except (ValueError, OSError) as exc:
        logger.warning("report: cannot read the data folder (%s); the page has no thumbnails", exc)
        return None, None
    return names, _DataImages(Path(data), folder.image_ids)


def _heatmap_fn(run: "Run", limits: "ExplorerLimits", images: _DataImages
                ) -> Optional[Callable[[str, int, int], Any]]:
    """``(image_id, layer, neuron) -> (H, W)`` integrated gradients of the neuron summed per patch,
    or ``None`` when the run's model cannot be loaded here. Only images ``images`` would read are
    decoded (an image id outside the data folder raises ``ValueError``)."""
    from captum_paths.analysis.pixels import neuron_pixel_attribution
    from captum_paths.model.loading import ModelLoadError

    try:
        model = run.model()
        sites = run.sites()
    except (ValueError, OSError, ModelLoadError) as exc:
        logger.warning("report: no pixel attributions (%s)", exc)
        return None
    device = next(model.parameters()).device

    @functools.lru_cache(maxsize=256)  # the most used neurons share their images: decode each once
    def image(image_id: str):
        if images.path(image_id) is None:
            raise ValueError(f"image id {image_id!r} leads outside the data folder {str(images.root)!r}")
        return run.images([image_id])[0][0].to(device)

    def heatmap(image_id: str, layer: int, neuron: int):
        return neuron_pixel_attribution(model, image(image_id), layer, neuron, sites=sites,
                                        n_steps=limits.heatmap_steps).upsampled_patches()
    return heatmap
