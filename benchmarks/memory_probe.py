"""Peak memory of one search, measured in a fresh process.

Run as ``python -m benchmarks.memory_probe RUN`` (RUN from :data:`RUNS`); prints
one JSON line. What it measures: the resident set size (RSS) of this process.
Just before the call (after importing torch, building the ViT-S-shaped case of
:mod:`benchmarks.common` and its clean forward for the targets) the kernel's
RSS high-water mark is reset to the current RSS (``echo 5 >
/proc/self/clear_refs``); just after the call ``VmHWM`` of ``/proc/self/status``
is the peak RSS during the call. ``delta_mib = VmHWM - VmRSS before``: the extra
memory the call needed at its worst moment, on top of the process as it stood
-- every CPU tensor (activations kept for backward, gradients, caches) plus
allocator retention. A fresh process per run means no earlier run's
freed-but-retained memory hides the peak. (``getrusage().ru_maxrss`` would be
wrong here: Linux carries it over ``exec`` from the parent, the pytest process.)
A thread sampling RSS every 5 ms (``sampled_delta_mib``) cross-checks it and is
the fallback where ``clear_refs`` cannot be written.
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import vit_small_case

#: run name -> (kind, keyword arguments)
RUNS = {  # gate runs: the whole-site search (refine=0), the engine these numbers describe
    "reference_m20": ("reference", {"m": 20}),
    "gate_riemann_left_m20": ("engine", {"n_steps": 20, "method": "riemann_left", "refine": 0}),
    "gate_gausslegendre_m20": ("engine", {"n_steps": 20, "method": "gausslegendre", "refine": 0}),
    "paper_m20": ("engine", {"mode": "paper", "n_steps": 20}),
    "gate_defaults": ("engine", {"refine": 0}),
    "gate_gausslegendre_16": ("engine", {"n_steps": 16, "method": "gausslegendre", "refine": 0}),
    "gate_gausslegendre_16_ibs16": ("engine", {"n_steps": 16, "method": "gausslegendre", "internal_batch_size": 16,
                                               "refine": 0}),
}


def _status_mib(field: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0  # kB
    raise KeyError(field)


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


class _Sampler(threading.Thread):
    """Samples ``VmRSS`` every ``interval`` seconds; ``peak`` is the largest sample."""

    def __init__(self, interval: float = 0.005) -> None:
        super().__init__(daemon=True)
        self.interval, self.peak, self._stop_event = interval, _status_mib("VmRSS"), threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.peak = max(self.peak, _status_mib("VmRSS"))
            time.sleep(self.interval)

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        self.peak = max(self.peak, _status_mib("VmRSS"))
        return self.peak


def measure(run: str, threads: int = 1, images: int = 4) -> dict:
    if threads:
        torch.set_num_threads(threads)
    kind, kwargs = RUNS[run]
    case = vit_small_case(images)
    if kind == "reference":
        from benchmarks.reference_search import reference_paper_search

        def call():
            return reference_paper_search(case.model, case.images, case.targets, k=1, **kwargs)[0]
    else:
        from captum_paths import LayerProgressiveNeuronPath

        engine = LayerProgressiveNeuronPath(case.model)

        def call():
            return engine.attribute(case.images, target=case.targets, k=1, **kwargs).paths

    reset = _reset_peak()
    before = _status_mib("VmRSS")
    sampler = _Sampler()
    sampler.start()
    start, cpu = time.perf_counter(), time.process_time()
    paths = call()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    sampled = sampler.stop()
    peak = _status_mib("VmHWM") if reset else sampled
    return {
        "run": run, "kwargs": kwargs, "threads": torch.get_num_threads(), "images": images,
        "rss_before_mib": round(before, 1), "rss_peak_mib": round(peak, 1),
        "delta_mib": round(peak - before, 1), "sampled_delta_mib": round(sampled - before, 1),
        "peak_source": "VmHWM after clear_refs" if reset else "5 ms RSS sampling",
        "wall_s": round(wall, 2), "cpu_s": round(cpu, 2),
        "paths": paths[:, :, 0].tolist(),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("run", choices=sorted(RUNS))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (0: torch's default)")
    parser.add_argument("--images", type=int, default=4)
    args = parser.parse_args(argv)
    print(json.dumps(measure(args.run, args.threads, args.images)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
