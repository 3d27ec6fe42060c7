"""The report stage: ``RUN/report.html`` and ``RUN/summary.md`` from what the other stages left.

The HTML page is self-contained (tables and figures embedded as base64 PNG);
the Markdown summary lists the same tables and the figure files.
"""
from __future__ import annotations

import base64
import html
import logging
from pathlib import Path
from typing import TYPE_CHECKING, List, Optional, Tuple

import pandas as pd

from captum_paths.records import write_text_atomic
from captum_paths.search.registry import PATH_METHODS

if TYPE_CHECKING:  # pragma: no cover
    from captum_paths.pipeline.run import Run

__all__ = ["write_report", "markdown"]

logger = logging.getLogger(__name__)


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


def _correct(record) -> float:
    """1.0 when the record's prediction is its label, 0.0 when not, NaN when either is missing."""
    label, prediction = record.get("label"), record.get("prediction")
    return float("nan") if label is None or prediction is None else float(label == prediction)


def write_report(run: "Run") -> Tuple[Path, Path]:
    """Write ``RUN/report.html`` and ``RUN/summary.md`` from what evaluate / analyze left; returns both."""
    records = run.records()
    settings = run.settings
    methods = list(dict.fromkeys(r["method"] for r in records))
    models = list(dict.fromkeys(str(r.get("model_id")) for r in records))
    if len(models) > 1:
        logger.warning("run %s holds records of %d models (%s); the report averages them together",
                       run.folder, len(models), ", ".join(models))
    overview = pd.DataFrame(
        {"method": r["method"], "jas": r.get("jas"), "abs_delta": abs(r.get("delta") or 0.0),
         "correct": _correct(r)} for r in records
    ).groupby("method", sort=False).agg(
        images=("jas", "size"), mean_jas=("jas", "mean"), median_jas=("jas", "median"),
        mean_abs_delta=("abs_delta", "mean"), accuracy=("correct", "mean"),
    ).reset_index()
    overview["method"] = pd.Categorical(overview["method"], [m for m in PATH_METHODS if m in methods]
                                        + [m for m in methods if m not in PATH_METHODS])
    overview = overview.sort_values("method").astype({"method": str})
    shown = {k: settings.get(k) for k in ("model", "checkpoint", "mode", "n_steps", "approximation", "k", "target",
                                          "data")}
    sections: List[Tuple[str, str, Optional[pd.DataFrame]]] = [("Paths per method (from the records)", "", overview)]
    eva, ana = run.evaluation_dir, run.analysis_dir
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
    lines = ["# captum-paths report", "", f"Run `{run.folder}`: {len(records)} records, methods {', '.join(methods)}.",
             "", f"Settings: {settings_md}.", ""]
    if len(models) > 1:
        lines += [f"Warning: the records come from {len(models)} models ({', '.join(models)}); the tables average "
                  "them together.", ""]
    for title, note, df in sections:
        lines += [f"## {title}", ""] + ([note, ""] if note else []) + [markdown(df), ""]
    if figures:
        lines += ["## Figures", ""] + [f"- `{p.relative_to(run.folder)}` (and `.svg`)" for p in figures] + [""]
    if not (eva / "methods_summary.csv").exists():
        lines += ["(No evaluation yet: run `captum-paths evaluate --run RUN`.)", ""]
    if not (ana / "path_sharing.csv").exists():
        lines += ["(No analysis yet: run `captum-paths analyze --run RUN`.)", ""]
    summary = run.summary_file

    body = [f"<h1>captum-paths report</h1><p>Run <code>{html.escape(str(run.folder))}</code>: {len(records)} records, "
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
    report = run.report_file
    with run.lock():
        write_text_atomic(summary, "\n".join(lines))
        write_text_atomic(report, page)
    return report, summary
