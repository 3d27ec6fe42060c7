"""How many quadrature steps does the gate-mode path search need?

For each model (the ViT-S-shaped random model of ``benchmarks.common`` and the
embedded digits demo model), the gate-mode paths of a 128-step Gauss-Legendre
run are the reference. Every approximation method x step count is compared to
it: the % of (image, layer) neurons that agree (for ``k > 1``: the % of the
reference's ``k`` neurons per (image, layer) that the run also chose), the % of
images whose whole path is identical, and the wall and CPU time of the run (a full
``LayerProgressiveNeuronPath.attribute``: search + final JAS, in this process,
one torch thread unless ``--threads`` says otherwise).

Paths are greedy: one different neuron at layer ``t`` changes the prefix of every
later layer, so a single early disagreement can cost several later layers too.
That is part of the measure (it is what a user gets).

Run::

    python -m benchmarks.path_agreement                 # both models, k=1
    python -m benchmarks.path_agreement --models demo --k 3
    python benchmarks/path_agreement.py --steps 4,8,16 --methods gausslegendre

Prints Markdown tables and the recommended default: the smallest Gauss-Legendre
step count with >= ``--threshold`` % agreement on every model.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.common import Case, demo_case, markdown_table, vit_small_case
from captum_paths import LayerProgressiveNeuronPath

METHODS = ("gausslegendre", "riemann_left", "riemann_middle", "riemann_trapezoid", "riemann_right")
STEPS = (2, 4, 8, 16, 32, 64)


def agreement(paths: torch.Tensor, ref: torch.Tensor) -> float:
    """% of the reference's neurons per (image, layer) that ``paths`` also holds."""
    hit = (paths.unsqueeze(-1) == ref.unsqueeze(-2)).any(-2)  # (B, L, k): ref neuron found in run
    return 100.0 * hit.float().mean().item()


def identical_paths(paths: torch.Tensor, ref: torch.Tensor) -> float:
    same = (paths.sort(-1).values == ref.sort(-1).values).flatten(1).all(1)
    return 100.0 * same.float().mean().item()


def first_divergence(paths: torch.Tensor, ref: torch.Tensor) -> List[Optional[int]]:
    """Per image, the first layer whose neuron set differs (``None``: identical)."""
    diff = (paths.sort(-1).values != ref.sort(-1).values).any(-1)  # (B, L)
    return [int(row.nonzero()[0]) if row.any() else None for row in diff]


def search(case: Case, k: int, n_steps: int, method: str, internal_batch_size: Optional[int]):
    engine = LayerProgressiveNeuronPath(case.model)
    start, cpu = time.perf_counter(), time.process_time()
    result = engine.attribute(
        case.images, target=case.targets, k=k, n_steps=n_steps, method=method,
        internal_batch_size=internal_batch_size, refine=0,  # the whole-site ranking itself
    )
    return result.paths, time.perf_counter() - start, time.process_time() - cpu


def run_case(case: Case, args) -> Dict:
    print(f"\n## {case.name}\n", flush=True)
    for key, value in case.info.items():
        print(f"- {key}: {value}")
    ref, ref_time, ref_cpu = search(case, args.k, args.ref_steps, "gausslegendre", args.internal_batch_size)
    print(
        f"- reference: gausslegendre, {args.ref_steps} steps, k={args.k}: {ref_time:.1f} s wall, "
        f"{ref_cpu:.1f} s CPU", flush=True,
    )
    out = {"case": case.name, "info": case.info, "ref_time": ref_time, "ref_cpu": ref_cpu, "runs": []}
    for method in args.methods:
        for steps in args.steps:
            paths, wall, cpu = search(case, args.k, steps, method, args.internal_batch_size)
            run = {
                "method": method, "steps": steps, "wall_s": wall, "cpu_s": cpu,
                "agree": agreement(paths, ref), "identical": identical_paths(paths, ref),
                "first_divergence": first_divergence(paths, ref),
            }
            out["runs"].append(run)
            print(
                f"  {method:18s} {steps:3d} steps: {run['agree']:6.2f}% neurons, "
                f"{run['identical']:6.2f}% paths, {wall:7.2f} s wall, {cpu:7.2f} s CPU", flush=True,
            )
    return out


def tables(result: Dict, args) -> str:
    runs = {(r["method"], r["steps"]): r for r in result["runs"]}
    header = ["method \\ steps"] + [str(s) for s in args.steps]
    parts = [f"### {result['case']}: % of (image, layer) neurons equal to GL-{args.ref_steps} (k={args.k})\n"]
    parts.append(markdown_table(header, [
        [m] + [f"{runs[(m, s)]['agree']:.1f}" for s in args.steps] for m in args.methods
    ]))
    parts.append(f"\n### {result['case']}: % of images with the whole path identical\n")
    parts.append(markdown_table(header, [
        [m] + [f"{runs[(m, s)]['identical']:.1f}" for s in args.steps] for m in args.methods
    ]))
    parts.append(
        f"\n### {result['case']}: wall time of attribute() (s; reference GL-{args.ref_steps}: "
        f"{result['ref_time']:.1f} s)\n"
    )
    parts.append(markdown_table(header, [
        [m] + [f"{runs[(m, s)]['wall_s']:.2f}" for s in args.steps] for m in args.methods
    ]))
    parts.append(
        f"\n### {result['case']}: CPU time of attribute() (s, this process; reference GL-{args.ref_steps}: "
        f"{result['ref_cpu']:.1f} s)\n"
    )
    parts.append(markdown_table(header, [
        [m] + [f"{runs[(m, s)]['cpu_s']:.2f}" for s in args.steps] for m in args.methods
    ]))
    return "\n".join(parts)


def recommend(results: List[Dict], args) -> str:
    if "gausslegendre" not in args.methods:
        return "no recommendation: gausslegendre was not run"
    ok = []
    for steps in sorted(args.steps):
        worst = min(
            next(r["agree"] for r in res["runs"] if r["method"] == "gausslegendre" and r["steps"] == steps)
            for res in results
        )
        if worst >= args.threshold:
            ok.append((steps, worst))
    if not ok:
        return f"no Gauss-Legendre step count in {list(args.steps)} reaches {args.threshold}% on every model"
    steps, worst = ok[0]
    return (
        f"smallest Gauss-Legendre step count with >= {args.threshold:g}% agreement on every model "
        f"(k={args.k}): n_steps={steps} (worst model: {worst:.1f}%)"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="demo,vit", help="comma list of: demo, vit")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", default=",".join(map(str, STEPS)))
    parser.add_argument("--ref-steps", type=int, default=128)
    parser.add_argument("--k", type=int, default=1)
    parser.add_argument("--demo-images", type=int, default=64)
    parser.add_argument("--vit-images", type=int, default=4)
    parser.add_argument(
        "--internal-batch-size", type=int, default=256,
        help="rows (image x step) per forward/backward pass (default 256; 0 = all rows at once). The engine's "
        "memory grows with the rows of one pass: ViT-S shape, 4 images x 128 steps at once needs ~14 GB",
    )
    parser.add_argument("--threshold", type=float, default=95.0)
    parser.add_argument(
        "--threads", type=int, default=1,
        help="torch.set_num_threads (default 1: stable timings on a shared machine; 0 = leave torch's default)",
    )
    parser.add_argument("--json", default=None, help="also write the raw results to this file")
    args = parser.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    args.steps = [int(s) for s in args.steps.split(",") if s]
    args.internal_batch_size = args.internal_batch_size or None
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"# Path agreement with the GL-{args.ref_steps} reference (gate mode, k={args.k})")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"internal_batch_size={args.internal_batch_size}")
    builders = {"demo": lambda: demo_case(args.demo_images), "vit": lambda: vit_small_case(args.vit_images)}
    results = []
    for name in args.models.split(","):
        results.append(run_case(builders[name](), args))
    print()
    for res in results:
        print(tables(res, args))
        print()
    print("**Recommendation:** " + recommend(results, args))
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
