"""The main job on the embedded demo: every path method on the digits test images."""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Union

import pandas as pd

from captum_paths.demo import load_demo_data, load_demo_model
from captum_paths.extract import extract_paths
from captum_paths.records import write_json_atomic, write_text_atomic
from captum_paths.search.registry import PATH_METHODS

__all__ = ["run_demo"]


def run_demo(out: Union[str, Path], limit: Optional[int] = None, progress: bool = True) -> Path:
    """Find paths with every registered method on the demo test split; returns the summary file.

    Writes ``records.jsonl`` (SPEC §7), ``settings.json`` and ``summary.md`` in ``out``.
    Rerunning resumes: images already recorded are skipped.
    """
    out = Path(out)
    model = load_demo_model()
    images, labels = load_demo_data("test")
    if limit is not None:
        images, labels = images[:limit], labels[:limit]
    image_ids = [f"test/{i:04d}" for i in range(len(images))]
    methods = list(PATH_METHODS)
    write_json_atomic(out / "settings.json", {"model": "demo", "split": "test", "images": len(images),
                                               "methods": methods, "target": "label"})
    records = extract_paths(model, images, labels, image_ids, out / "records.jsonl", methods=methods,
                            batch_size=64, model_id="demo", progress=progress)
    table = pd.DataFrame(
        {"method": r["method"], "jas": r["jas"], "abs_delta": abs(r["delta"] or 0.0),
         "correct": r["label"] == r["prediction"]} for r in records
    )
    summary = (
        table.groupby("method", sort=False)
        .agg(images=("jas", "size"), mean_jas=("jas", "mean"), median_jas=("jas", "median"),
             mean_abs_delta=("abs_delta", "mean"), accuracy=("correct", "mean"))
        .sort_values("mean_jas", ascending=False)
    )
    text = (
        "# captum-paths demo\n\n"
        f"Embedded digits ViT, {len(images)} test images, target = true label, gate semantics.\n\n"
        + summary.to_markdown(floatfmt=".4f") + "\n"
    )
    report = out / "summary.md"
    write_text_atomic(report, text)
    return report
