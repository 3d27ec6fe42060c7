"""Where does the engine's time go? Phase breakdown and op-level hot spots.

Run::

    python -m benchmarks.profile_search                       # gate defaults
    python -m benchmarks.profile_search --n-steps 20 --method riemann_left
    python -m benchmarks.profile_search --mode paper

On the ViT-S-shaped case of :mod:`benchmarks.common` (4 images, k=1, one torch
thread unless ``--threads``): one ``LayerProgressiveNeuronPath.attribute`` call
with timing wrappers around the engine's phases (wall and CPU seconds of this
process), then the same call under ``torch.profiler`` for the top ops by self
CPU time with their input shapes. Nothing in the package is modified: the
wrappers are installed on the classes for the duration of the run only.
"""
from __future__ import annotations

import argparse
import contextlib
import sys
import time
from collections import defaultdict
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import markdown_table, vit_small_case
from captum_paths import JointNeuronIntegratedGradients, LayerProgressiveNeuronPath
from captum_paths.search import neuron_path
from captum_paths.model.stream import ResidualStream

TOTALS = defaultdict(lambda: [0.0, 0.0, 0])  # name -> [wall, cpu, calls]
_STACK = []


@contextlib.contextmanager
def phase(name):
    _STACK.append(name)
    w, c = time.perf_counter(), time.process_time()
    try:
        yield
    finally:
        entry = TOTALS["/".join(_STACK)]
        entry[0] += time.perf_counter() - w
        entry[1] += time.process_time() - c
        entry[2] += 1
        _STACK.pop()


def _wrap(owner, attr, name):
    original = getattr(owner, attr)

    def wrapper(*args, **kwargs):
        with phase(name):
            return original(*args, **kwargs)

    setattr(owner, attr, wrapper)
    return owner, attr, original


@contextlib.contextmanager
def instrumented(mode: str):
    patched = [
        _wrap(LayerProgressiveNeuronPath, "_select", "search (_select)"),
        _wrap(JointNeuronIntegratedGradients, "attribute", "final JAS + contributions + delta (JointNeuronIntegratedGradients)"),
        _wrap(ResidualStream, "matches", "ResidualStream.matches (extra clean forward)"),
        _wrap(ResidualStream, "logits", "stream.logits: forward blocks t..L-1 + head"),
        _wrap(neuron_path._GateSearch, "layer_scores", "layer_scores"),
        _wrap(neuron_path._PaperSearch, "layer_scores", "layer_scores"),
    ]
    grad = torch.autograd.grad

    def timed_grad(*args, **kwargs):
        with phase("autograd.grad (backward)"):
            return grad(*args, **kwargs)

    torch.autograd.grad = timed_grad
    try:
        yield
    finally:
        torch.autograd.grad = grad
        for owner, attr, original in patched:
            setattr(owner, attr, original)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n-steps", type=int, default=None)
    parser.add_argument("--method", default=None)
    parser.add_argument("--mode", default="gate")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--internal-batch-size", type=int, default=None)
    parser.add_argument("--no-profiler", action="store_true", help="skip the torch.profiler op table")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    case = vit_small_case(args.images)
    engine = LayerProgressiveNeuronPath(case.model)
    kwargs = dict(n_steps=args.n_steps, method=args.method, mode=args.mode,
                  internal_batch_size=args.internal_batch_size)

    with instrumented(args.mode), phase("attribute (total)"):
        result = engine.attribute(case.images, target=case.targets, **kwargs)
    total_wall, total_cpu, _ = TOTALS["attribute (total)"]
    print(f"# Engine profile: ViT-S shape, {args.images} images, {result.settings}, "
          f"{torch.get_num_threads()} thread(s)\n")
    rows = []
    for name, (wall, cpu, calls) in sorted(TOTALS.items(), key=lambda kv: kv[0]):
        rows.append([name, calls, f"{wall:.2f}", f"{cpu:.2f}", f"{100 * cpu / total_cpu:.1f}"])
    print(markdown_table(["phase (nested with /)", "calls", "wall s", "CPU s", "% of CPU"], rows))

    if not args.no_profiler:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
            engine.attribute(case.images, target=case.targets, **kwargs)
        print("\n## top ops by self CPU time (torch.profiler, second call)\n")
        print(prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=40,
            max_shapes_column_width=60,
        ))
        print("\n## top ops by self CPU time, all shapes together\n")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.top, max_name_column_width=50))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
