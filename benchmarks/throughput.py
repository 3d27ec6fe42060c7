"""Throughput of ``extract`` at its defaults against the literal reference and the FLOP floor.

ViT-B/16 at 224 px with seeded random weights (``--random-weights``), synthetic
images written to a folder, ``neuron-path`` only; on the CPU or a GPU. Prints one
Markdown table row per dtype and ``--refine`` setting:

- ``images/s``: images over the wall time of ``Run.extract`` (model loading
  excluded: a first one-image run warms the process up);
- ``reference images/s``: the literal implementation of the released algorithm
  (``benchmarks/reference_search.py``, paper semantics, m = 20) on the first
  ``--reference-images`` of the same images, and the ratio;
- ``floor TFLOP/s``: the FLOP floor per image (per layer, one forward and one
  backward of the remaining blocks on ``n_steps`` rows: ``3 * n_steps * F * (L + 1)
  / 2`` with ``F`` one forward's FLOPs, counted by ``torch.utils.flop_counter``)
  times images/s, and its share of the device's matmul rate measured here.

Usage::

    python benchmarks/throughput.py --device cuda --images 512 --dtype fp32 bf16
    python benchmarks/throughput.py --device cpu --images 4 --reference-images 1
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from captum_paths.pipeline import Run
from captum_paths.pipeline.batches import DTYPES

ROOT = Path(__file__).resolve().parents[1]


def write_images(folder: Path, count: int, size: int = 224, classes: int = 10, seed: int = 0) -> Path:
    """``count`` random RGB JPEGs in ``classes`` class folders (kept between runs)."""
    from PIL import Image

    marker = folder / ".complete.json"
    wanted = {"count": count, "size": size, "classes": classes, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == wanted:
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    rng = np.random.default_rng(seed)
    for i in range(count):
        cls = folder / f"class{i % classes:02d}"
        cls.mkdir(parents=True, exist_ok=True)
        # smooth random images (JPEG-friendly): upsampled noise
        small = rng.integers(0, 256, (size // 16, size // 16, 3), dtype=np.uint8)
        Image.fromarray(small).resize((size, size), Image.BILINEAR).save(cls / f"{i:06d}.jpg", quality=90)
    marker.write_text(json.dumps(wanted))
    return folder


def forward_flops(model: torch.nn.Module, image: torch.Tensor) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        model(image[None])
    return float(counter.get_total_flops())


def matmul_rate(device: str, dtype: torch.dtype, n: int = 4096, repeats: int = 10) -> float:
    """FLOP/s of an ``n x n`` matmul on ``device`` in ``dtype`` (TF32 allowed for fp32 on CUDA)."""
    n = n if device.startswith("cuda") else 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    before = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        a @ b
        _sync(device)
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        _sync(device)
        return 2 * n ** 3 * repeats / (time.perf_counter() - start)
    finally:
        torch.set_float32_matmul_precision(before)


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def run(args: argparse.Namespace) -> List[Dict[str, object]]:
    sys.path.insert(0, str(ROOT))
    from benchmarks.reference_search import reference_paper_search

    work = Path(args.out)
    data = write_images(work / "images", args.images + 1)  # one to warm up, then the timed ones
    model_spec, seed = f"timm:{args.model}", 0
    rows = []
    for dtype, refine in [(d, r) for d in args.dtype for r in args.refine]:
        folder = work / f"run_{args.device.replace(':', '')}_{dtype}_refine{refine}"
        shutil.rmtree(folder, ignore_errors=True)
        run = Run(folder, device=args.device)
        options = dict(random_weights=seed, batch_size=args.batch_size, progress=False, dtype=dtype,
                       workers=args.workers, refine=None if refine == "default" else int(refine))
        # warm up: model load, first kernels (one image), then the timed run resumes the rest
        run.extract(model_spec, data, limit=1, **options)
        _sync(run.device)
        start = time.perf_counter()
        summary = run.extract(model_spec, data, limit=args.images + 1, **options)
        _sync(run.device)
        seconds = time.perf_counter() - start
        images = summary["new_records"]
        rate = images / seconds
        model = run.model()
        first, _ = run.images([sorted(run.dataset().image_ids)[0]])
        flops = forward_flops(model, first[0].to(run.device))
        layers = len(model.blocks)
        n_steps = run.records()[0]["settings"]["n_steps"]
        floor = 3 * n_steps * flops * (layers + 1) / 2
        peak = matmul_rate(run.device, DTYPES[dtype])
        rows.append({"device": _device_name(run.device), "dtype": dtype, "refine": run.records()[0]["settings"].get(
                         "refine", refine), "images": images, "seconds": seconds,
                     "images_per_s": rate, "forward_GFLOP": flops / 1e9, "floor_TFLOP_per_s": floor * rate / 1e12,
                     "matmul_TFLOP_per_s": peak / 1e12, "share_of_matmul_rate": floor * rate / peak})
    if args.reference_images:
        images, _ = run.images(sorted(run.dataset().image_ids)[: args.reference_images])
        model = run.model()
        with torch.no_grad():
            targets = model(images.to(run.device)).argmax(1)
        _sync(run.device)
        start = time.perf_counter()
        reference_paper_search(model, images.to(run.device), targets, m=20)
        _sync(run.device)
        ref_rate = args.reference_images / (time.perf_counter() - start)
        for row in rows:
            row["reference_images_per_s"] = ref_rate
            row["speedup_vs_reference"] = row["images_per_s"] / ref_rate
    return rows


def _device_name(device: str) -> str:
    if device.startswith("cuda"):
        return torch.cuda.get_device_name(torch.device(device))
    import platform

    return f"CPU ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="vit_base_patch16_224")
    parser.add_argument("--images", type=int, default=None, help="images timed (default: 512 on CUDA, 4 on CPU)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 64 on CUDA, 4 on CPU")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--dtype", nargs="+", default=["fp32"], choices=sorted(DTYPES))
    parser.add_argument("--refine", nargs="+", default=["default"],
                        help="refine settings, each timed with each dtype ('default': the method's own)")
    parser.add_argument("--reference-images", type=int, default=None,
                        help="images for the literal reference (default: 4 on CUDA, 1 on CPU; 0 skips it)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "throughput"))
    args = parser.parse_args(argv)
    cuda = args.device.startswith("cuda")
    args.images = args.images or (512 if cuda else 4)
    args.batch_size = args.batch_size or (64 if cuda else 4)
    args.reference_images = (4 if cuda else 1) if args.reference_images is None else args.reference_images
    rows = run(args)
    import pandas as pd

    table = pd.DataFrame(rows)
    text = table.to_markdown(index=False, floatfmt=".3g")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"throughput_{args.device.replace(':', '')}.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
