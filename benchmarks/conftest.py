"""Fixtures of the speed benchmarks (run explicitly, never part of the test suite)::

    /work/venv/bin/pytest benchmarks/ --benchmark-only

Environment:

* ``BENCH_THREADS`` (default ``1``): ``torch.set_num_threads`` for the tests of
  ``test_search_speed.py`` (other benchmark modules are left alone) and for the
  memory subprocesses. One thread keeps timings stable on a
  shared machine (with 2 threads and other load, OpenMP barriers make a run
  vary by 3-5x); ``0`` leaves torch's default.
* ``BENCH_IMAGES`` (default ``4``): images of the ViT-S-shaped case (``1`` for a
  quick smoke run; the numbers to report use 4).
* ``BENCH_MARKDOWN``: if set, the Markdown report is also written to that file.

The Markdown report (speed ratios, peak memory) is printed in the terminal
summary at the end of the session.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List

import pytest
import torch

from benchmarks.common import markdown_table, vit_small_case

#: filled by the benchmarks, printed at the end of the session
REPORT: Dict[str, Any] = {"case": None, "speed": [], "memory": [], "reference": None, "threads": None}


def bench_threads() -> int:
    return int(os.environ.get("BENCH_THREADS", "1"))


def bench_images() -> int:
    return int(os.environ.get("BENCH_IMAGES", "4"))


@pytest.fixture(scope="module")
def torch_threads():
    """``torch.set_num_threads(BENCH_THREADS)`` for a module (used autouse by test_search_speed.py only)."""
    n = bench_threads()
    old = torch.get_num_threads()
    if n:
        torch.set_num_threads(n)
    REPORT["threads"] = torch.get_num_threads()
    yield REPORT["threads"]
    torch.set_num_threads(old)


@pytest.fixture(scope="session")
def vit_case():
    case = vit_small_case(bench_images())
    REPORT["case"] = case.info
    return case


@pytest.fixture(scope="session")
def report() -> Dict[str, Any]:
    return REPORT


def _fmt(x, digits=2):
    return "-" if x is None else f"{x:.{digits}f}"


def render_report() -> str:
    parts: List[str] = ["## captum_paths search speed (benchmarks/test_search_speed.py)", ""]
    parts.append(f"torch {torch.__version__}, torch threads: {REPORT['threads']}")
    if REPORT["case"]:
        for key, value in REPORT["case"].items():
            parts.append(f"- {key}: {value}")
    ref = REPORT["reference"]
    if ref:
        parts.append(
            f"- reference_paper_search(m=20): {ref['wall_s']:.1f} s wall, {ref['cpu_s']:.1f} s CPU; "
            f"work {ref['stats']}"
        )
    if REPORT["speed"]:
        parts += ["", "| run | wall s (best) | CPU s (best) | speed-up vs ref@20 (wall) | (CPU) | target | paths vs ref |",
                  "|---|---|---|---|---|---|---|"]
        for r in REPORT["speed"]:
            parts.append(
                f"| {r['name']} | {_fmt(r['wall_s'])} | {_fmt(r['cpu_s'])} | {_fmt(r.get('ratio_wall'))}x | "
                f"{_fmt(r.get('ratio_cpu'))}x | {r.get('target', '-')} | {r.get('paths', '-')} |"
            )
    if REPORT["memory"]:
        parts += ["", "Peak memory (benchmarks/memory_probe.py): a fresh process per run; extra peak RSS = "
                  "VmHWM during the call (high-water mark reset just before it) minus VmRSS before it "
                  "(model, inputs, imports already resident); cross-checked by 5 ms RSS sampling.", ""]
        parts.append(markdown_table(
            ["run", "extra peak RSS (MiB)", "sampled (MiB)", "RSS before (MiB)", "wall s (probe)", "CPU s (probe)"],
            [[m["run"], m["delta_mib"], m["sampled_delta_mib"], m["rss_before_mib"], m["wall_s"], m["cpu_s"]]
             for m in REPORT["memory"]],
        ))
    return "\n".join(parts)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if not (REPORT["speed"] or REPORT["memory"] or REPORT["reference"]):
        return
    text = render_report()
    terminalreporter.write_sep("=", "captum_paths benchmark report (Markdown)")
    terminalreporter.write_line(text)
    out = os.environ.get("BENCH_MARKDOWN")
    if out:
        Path(out).write_text(text + "\n")
