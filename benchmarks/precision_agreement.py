"""bf16 (and fp16) against fp32: path agreement and JAS error of the default search.

On the demo model (the first ``--demo-images`` test images) and on the real pretrained
ViT of ``benchmarks/real_model.py`` (``--per-class`` correctly classified test images
per class), the default ``LayerProgressiveNeuronPath`` runs once in fp32 and once
under ``torch.autocast`` in each lower precision, on the CPU (``--device cuda`` on a
GPU). Prints, per model and dtype: the share of (image, layer) neurons equal to
fp32's, the share of whole paths equal, the mean JAS of both, and the mean and
largest absolute JAS difference.

Usage::

    python -m benchmarks.precision_agreement [--dtype bf16 fp16] [--per-class 1] [--device cpu]
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import List, Optional

import torch

from captum_paths import LayerProgressiveNeuronPath
from captum_paths.pipeline.batches import DTYPES, precision


def compare(name: str, model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, dtypes: List[str],
            device: str) -> List[dict]:
    model, images, labels = model.to(device).eval(), images.to(device), labels.to(device)
    start = time.perf_counter()
    full = LayerProgressiveNeuronPath(model).attribute(images, target=labels)
    rows = [{"model": name, "dtype": "fp32", "images": len(images), "seconds": time.perf_counter() - start}]
    for dtype in dtypes:
        start = time.perf_counter()
        with precision(device, dtype):
            low = LayerProgressiveNeuronPath(model).attribute(images, target=labels)
        gap = (low.jas - full.jas).abs()
        rows.append({
            "model": name, "dtype": dtype, "images": len(images), "seconds": time.perf_counter() - start,
            "layer_agreement": float((low.paths == full.paths).float().mean()),
            "path_agreement": float((low.paths == full.paths).all(dim=(1, 2)).float().mean()),
            "mean_jas_fp32": float(full.jas.mean()), "mean_jas": float(low.jas.mean()),
            "mean_abs_jas_diff": float(gap.mean()), "max_abs_jas_diff": float(gap.max()),
        })
    return rows


def main(argv: Optional[List[str]] = None) -> int:
    import pandas as pd

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dtype", nargs="+", default=["bf16"], choices=[d for d in DTYPES if d != "fp32"])
    parser.add_argument("--demo-images", type=int, default=60)
    parser.add_argument("--per-class", type=int, default=1, help="real-model images per class (0: skip)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)

    from captum_paths.demo import load_demo_data, load_demo_model

    x, y = load_demo_data("test")
    rows = compare("demo digits ViT", load_demo_model(), x[: args.demo_images], y[: args.demo_images], args.dtype,
                   args.device)
    if args.per_class:
        from benchmarks.real_model import build_real_classifier, select_test_images

        case = build_real_classifier()
        images, labels = select_test_images(case, per_class=args.per_class)
        rows += compare("DINOv2 ViT-S/14, 112 px", case.model, images, labels, args.dtype, args.device)
    print(pd.DataFrame(rows).to_markdown(index=False, floatfmt=".4g"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
