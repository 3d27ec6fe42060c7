"""``extract`` under a GPU memory size: no out-of-memory at a large model, a clear error where one image cannot fit.

On a GPU with more memory than the size studied, a ballast tensor takes the
difference first, so the run sees the free memory of the smaller card (the row
budget reads the free memory, ``torch.cuda.mem_get_info``). Two checks, each in
this process:

- ``fits``: ViT-L/16 at 224 px (timm ``vit_large_patch16_224``, seeded random
  weights), ``--batch-size`` 32, one batch of synthetic images, at the free memory
  of an 80 GB card (``--free-gib 79``); reports the images/s, the peak memory
  PyTorch allocated, and how often a batch ran out of memory and was searched in
  halves (0 means the row budget sized every pass to fit);
- ``too_small``: the same model on one image with ``--tight-gib`` free beyond what
  the model's weights take; the search must end in one
  ``MemoryError`` naming the device and its free memory, or complete if one image
  does fit; an out-of-memory error before the search (the model or the clean
  forward) is reported as such (the CLI turns it into one line).

Usage::

    python benchmarks/gpu_memory.py --device cuda            # the ViT-L/16 check on an 80 GB budget
    python benchmarks/gpu_memory.py --device cpu --model vit_tiny_patch16_224 --images 2 --batch-size 2
"""
from __future__ import annotations

import argparse
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch

from benchmarks.throughput import write_images
from captum_paths.pipeline import Run

ROOT = Path(__file__).resolve().parents[1]
GIB = 2 ** 30


class _Halvings(logging.Handler):
    """Counts the extract loop's out-of-memory halvings (its warnings say "in halves")."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += "in halves" in record.getMessage()


def ballast(device: torch.device, free_bytes: int) -> Optional[torch.Tensor]:
    """A tensor that leaves about ``free_bytes`` free on ``device`` (None on the CPU or when less is free)."""
    if device.type != "cuda":
        return None
    torch.cuda.empty_cache()
    free = torch.cuda.mem_get_info(device)[0]
    extra = free - free_bytes
    return torch.empty(extra, dtype=torch.uint8, device=device) if extra > 0 else None


def one_run(args: argparse.Namespace, folder: Path, data: Path, free_bytes: int, images: int,
            batch_size: int) -> Dict[str, object]:
    device = torch.device(args.device)
    counter = _Halvings()
    logging.getLogger("captum_paths.pipeline.extract").addHandler(counter)
    weight = ballast(device, free_bytes)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    shutil.rmtree(folder, ignore_errors=True)
    row: Dict[str, object] = {"free GiB at start": (torch.cuda.mem_get_info(device)[0] / GIB
                                                    if device.type == "cuda" else float("nan"))}
    start = time.perf_counter()
    try:
        summary = Run(folder, device=args.device).extract(
            f"timm:{args.model}", data, random_weights=0, limit=images, batch_size=batch_size,
            progress=False, dtype=args.dtype, workers=args.workers)
        seconds = time.perf_counter() - start
        row.update(outcome="completed", images=summary["new_records"], **{"images/s": summary["new_records"] / seconds})
    except MemoryError as err:  # the extract loop's own message
        row.update(outcome=f"MemoryError: {err}")
    except torch.cuda.OutOfMemoryError as err:  # outside the search: the CLI prints it as one line
        row.update(outcome=f"CUDA out of memory outside the search: {str(err).strip().splitlines()[0]}")
    finally:
        logging.getLogger("captum_paths.pipeline.extract").removeHandler(counter)
        del weight
    row["halvings"] = counter.count
    if device.type == "cuda":
        row["peak allocated GiB"] = torch.cuda.max_memory_allocated(device) / GIB
        torch.cuda.empty_cache()
    return row


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--model", default="vit_large_patch16_224")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--images", type=int, default=32)
    parser.add_argument("--dtype", default="fp32")
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--free-gib", type=float, default=79.0,
                        help="free memory the run sees (79: an 80 GB card after its CUDA context)")
    parser.add_argument("--tight-gib", type=float, nargs="*", default=[0.25, 0.05],
                        help="free memory beyond the weights for each too-small check (none: skip them)")
    parser.add_argument("--out", default=str(ROOT / "runs" / "gpu_memory"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    out = Path(args.out)
    data = write_images(out / "images", args.images)
    rows = [{"check": f"fits: {args.model}, batch {args.batch_size}, {args.free_gib:g} GiB free",
             **one_run(args, out / "fits", data, int(args.free_gib * GIB), args.images, args.batch_size)}]
    if args.device.startswith("cuda"):
        import timm

        weights = sum(p.numel() * p.element_size() for p in timm.create_model(args.model).parameters())
        for i, tight in enumerate(args.tight_gib):
            rows.append({"check": f"too small: {args.model}, one image, weights + {tight:g} GiB free",
                         **one_run(args, out / f"too_small{i}", data, weights + int(tight * GIB), 1, 1)})
    import pandas as pd

    text = pd.DataFrame(rows).to_markdown(index=False, floatfmt=".3g")
    (out / "gpu_memory.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
