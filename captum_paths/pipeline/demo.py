"""The main job on the embedded demo, end to end: paths, evaluation, analysis, circuits, report.

The demo's test images are written as an image folder (``OUT/data``), so the demo
runs exactly what a user runs on their own data: the stages of one
:class:`~captum_paths.pipeline.Run` (extract with every path method,
evaluate, analyze, circuits, report), which loads the model and the images once.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Optional, Union

from captum_paths.demo import save_demo_image_folder
from captum_paths.pipeline import Run
from captum_paths.records import write_json_atomic
from captum_paths.search.registry import PATH_METHODS

__all__ = ["run_demo", "DEMO_PER_CLASS", "DEMO_THREADS"]

logger = logging.getLogger(__name__)

#: Test images per class by default: 40 of the 360 keep the whole job under 2 minutes on 2 CPU cores.
DEMO_PER_CLASS = 4

#: Classes whose circuits the demo learns (a seeded draw).
DEMO_CIRCUIT_CLASSES = 3

#: Intra-op threads of torch during the demo. The demo model is tiny, so a second thread buys little,
#: and when another process keeps a core busy each of the demo's many small ops waits at an
#: OpenMP barrier for a descheduled thread: on 2 cores beside a one-core benchmark the whole demo took
#: 113-120 s with torch's default of 2 threads and 14-15 s with 1 (same paths and numbers).
DEMO_THREADS = 1


@contextlib.contextmanager
def _torch_threads(threads: Optional[int]):
    """Run the block with ``threads`` intra-op threads (``None``: leave torch's setting), then restore it."""
    import torch

    if threads is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_demo(
    out: Union[str, Path],
    limit: Optional[int] = None,
    progress: bool = True,
    per_class: Optional[int] = DEMO_PER_CLASS,
    n_steps: Optional[int] = None,
    threads: Optional[int] = DEMO_THREADS,
    restart: bool = False,
) -> Path:
    """Run the whole job on the demo model's test images; returns the Markdown summary.

    Args:
        out: run folder (``data/``, ``run.json``, ``records.jsonl``, ``evaluation/``,
            ``analysis/``, ``circuits/``, ``report.html``, ``summary.md``, ``settings.json``).
        limit: use only the first ``limit`` images (sorted by id) of the image folder.
        per_class: test images per class written to ``OUT/data`` (``None`` or 0: all 360).
        n_steps: integration steps of the path search, the JAS comparison and the pruning
            study's search (default: the methods' own for the search, 16 for the rest).
        threads: torch intra-op threads for the run, restored afterwards (``None`` or 0: torch's
            own setting). Default: :data:`DEMO_THREADS` (1).
        restart: replace a demo run of other settings (``per_class``) in ``out``.

    Rerunning resumes the path search; evaluation, analysis, circuits and report are redone. Only
    what the demo wrote is ever replaced: a folder that holds another run, files a run
    would replace without its ``run.json``, or an ``out/data`` the demo did not write is
    refused (``ValueError``), and so is a demo run of other settings unless ``restart``.
    """
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 0):
        raise ValueError(f"threads must be a non-negative int (0 or None: torch's default); got {threads!r}")
    with _torch_threads(threads or None):
        return _run_demo(Path(out), limit, progress, per_class, n_steps, threads or None, restart)


def _run_demo(out: Path, limit: Optional[int], progress: bool, per_class: Optional[int], n_steps: Optional[int],
              threads: Optional[int], restart: bool) -> Path:
    start = time.perf_counter()
    per_class = per_class or None
    methods = list(PATH_METHODS)
    run = Run(out, device="cpu")
    data = out / "data"
    if out.is_dir():
        _check_folder(run, data, {"split": "test", "per_class": per_class}, restart)
    with run.lock():  # one demo per folder, from its images to its report
        _check_folder(run, data, {"split": "test", "per_class": per_class}, restart)  # again, now that it is ours
        _write_images(data, per_class)
        summary = run.extract("demo", data, methods=methods, batch_size=64, limit=limit, progress=progress,
                              n_steps=n_steps, restart=restart)
        return _finish(run, out, summary, methods, per_class, n_steps, threads, start, progress)


def _demo_marker(data: Path) -> Optional[dict]:
    """What the demo wrote ``data`` for (``{"split", "per_class"}``), or ``None`` when the demo did not write it."""
    try:
        marker = json.loads((data / ".demo.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return marker if isinstance(marker, dict) else None


def _check_folder(run: Run, data: Path, wanted: dict, restart: bool) -> None:
    """``ValueError`` unless the demo may write its run into ``run.folder``: nothing there is
    replaced that the demo did not write, and a demo of other settings only with ``restart``."""
    marker = _demo_marker(data)
    if data.exists() and marker is None:
        raise ValueError(f"{str(data)!r} is not the image folder the demo writes (it has no .demo.json); the demo "
                         "would replace it: use another --out")
    run.check_output(own=("settings.json",))
    old = run.read_settings()
    if old is None:
        return
    if old.get("model") != "demo" or old.get("data") != str(data.resolve()):
        raise ValueError(f"output folder {str(run.folder)!r} holds a run of model {old.get('model')!r} on "
                         f"{old.get('data')!r}, not a demo; use another --out")
    if marker is not None and marker != wanted and not restart:
        raise ValueError(f"output folder {str(run.folder)!r} holds the demo of --per-class "
                         f"{marker.get('per_class') or 0}; --restart replaces it, or use another --out")


def _write_images(data: Path, per_class: Optional[int]) -> bool:
    """Write the demo's test images to ``data`` unless a complete folder of the same
    ``per_class`` is there; returns whether it was (re)written (a folder the demo did not
    write is never here: :func:`_check_folder` refused it)."""
    wanted = {"split": "test", "per_class": per_class}
    if data.exists():
        if _demo_marker(data) == wanted:
            return False
        logger.info("rewriting %s (written for other settings)", data)
        shutil.rmtree(data)
    partial = data.with_name(f".{data.name}.new")
    if partial.exists():
        shutil.rmtree(partial)
    save_demo_image_folder(partial, split="test", limit_per_class=per_class)
    write_json_atomic(partial / ".demo.json", wanted)  # written last: the folder is complete
    os.replace(partial, data)
    return True


def _finish(run: Run, out: Path, summary, methods, per_class, n_steps, threads, start: float, progress: bool
            ) -> Path:
    timings = {"extract_s": time.perf_counter() - start}
    t = time.perf_counter()
    run.evaluate(jas_modes=("gate",), n_steps=n_steps or 16, pruning_ks=(1, 3), pruning_ps=(0.5, 1.0))
    timings["evaluate_s"] = time.perf_counter() - t
    t = time.perf_counter()
    try:
        run.analyze(permutations=200)
    except ValueError as exc:  # e.g. a --limit that leaves a single class
        logger.warning("analysis skipped: %s", exc)
    timings["analyze_s"] = time.perf_counter() - t
    t = time.perf_counter()
    try:  # 3 classes: the circuits' size and faithfulness on the demo's held-out images
        run.circuits(classes=DEMO_CIRCUIT_CLASSES, strengths=(0.5, 2.0, 8.0), steps=100, progress=progress)
    except ValueError as exc:  # one image per class: nothing to hold out
        logger.warning("circuits skipped: %s", exc)
    timings["circuits_s"] = time.perf_counter() - t
    t = time.perf_counter()
    from captum_paths.explorer import ExplorerLimits

    # the demo model is small enough to give every neuron of the page its pixel attributions
    html, markdown = run.report(limits=ExplorerLimits(heatmap_neurons=100_000))
    timings["report_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - start
    write_json_atomic(out / "settings.json", {"model": "demo", "split": "test", "images": summary["images"],
                                               "per_class": per_class, "methods": methods, "target": "label",
                                               "threads": threads, "report": str(html), "timings": timings})
    return markdown
