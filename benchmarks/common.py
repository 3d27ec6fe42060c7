"""Shared setup of the benchmarks: the ViT-S-shaped case, the demo case, timers.

The ViT-S-shaped case
---------------------
``timm.create_model("vit_small_patch16_224", img_size=64, patch_size=8,
num_classes=10)`` built without weights (12 blocks, width 384, d_ff 1536,
8x8 patches of a 64x64 image: 64 patch tokens + CLS), eval mode, seeded with
``torch.manual_seed(MODEL_SEED)``; images ``torch.randn(4, 3, 64, 64)`` drawn
after ``torch.manual_seed(IMAGE_SEED)``; targets = the predicted class.

timm's default init draws every ``Linear`` weight from a truncated
``N(0, 0.02^2)``. At that scale each residual branch adds little, the CLS token
barely depends on the image and the logits differ by ~0.2: the softmax is
almost uniform (max probability 0.14-0.17 on the 4 images) and ``F`` hardly
moves. To make the model less degenerate (``degenerate=False``, the default
here) we rescale, after the seeded init and without changing any shape or cost:

* the weights of ``qkv``, ``proj``, ``fc1`` and ``fc2`` of every block by
  ``BLOCK_WEIGHT_SCALE = 2.5`` (std 0.05 ~ 1/sqrt(384)), so attention and FFN
  branches really move the residual stream;
* the classifier weight by ``HEAD_WEIGHT_SCALE = 10``.

Result: predicted classes [6, 8, 9, 1], max probability 0.47-0.96 (neither
uniform nor saturated), and paths that differ between the 4 images. The
compute is identical to the unscaled model, so speed numbers do not depend on
this choice; path agreement and the paper-mode equality check do.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Tuple

import torch

__all__ = [
    "MODEL_SEED",
    "IMAGE_SEED",
    "BLOCK_WEIGHT_SCALE",
    "HEAD_WEIGHT_SCALE",
    "Case",
    "vit_small_case",
    "demo_case",
    "Timer",
    "timed",
    "markdown_table",
    "removal_effect",
    "emit",
]

MODEL_SEED = 0
IMAGE_SEED = 1
BLOCK_WEIGHT_SCALE = 2.5
HEAD_WEIGHT_SCALE = 10.0


@dataclass
class Case:
    """A model, its images and the targets to explain."""

    name: str
    model: torch.nn.Module
    images: torch.Tensor
    targets: torch.Tensor
    info: Dict[str, Any] = field(default_factory=dict)


def build_vit_small(degenerate: bool = False) -> torch.nn.Module:
    """The ViT-S-shaped timm model of the module docstring (no weights downloaded)."""
    import timm

    torch.manual_seed(MODEL_SEED)
    model = timm.create_model(
        "vit_small_patch16_224", pretrained=False, img_size=64, patch_size=8, num_classes=10
    ).eval()
    if not degenerate:
        with torch.no_grad():
            for block in model.blocks:
                for linear in (block.attn.qkv, block.attn.proj, block.mlp.fc1, block.mlp.fc2):
                    linear.weight.mul_(BLOCK_WEIGHT_SCALE)
            model.head.weight.mul_(HEAD_WEIGHT_SCALE)
    return model


def vit_small_case(batch: int = 4, degenerate: bool = False) -> Case:
    model = build_vit_small(degenerate)
    torch.manual_seed(IMAGE_SEED)
    images = torch.randn(batch, 3, 64, 64)
    with torch.no_grad():
        probs = model(images).softmax(-1)
    targets = probs.argmax(1)
    info = {
        "model": "timm vit_small_patch16_224, img_size=64, patch_size=8, num_classes=10 (12 blocks, d_ff 1536, 65 tokens)",
        "weights": "random (seed %d)%s" % (
            MODEL_SEED,
            "" if degenerate else f", block Linear weights x{BLOCK_WEIGHT_SCALE:g}, head weight x{HEAD_WEIGHT_SCALE:g}",
        ),
        "images": f"torch.randn({batch}, 3, 64, 64), seed {IMAGE_SEED}",
        "targets": targets.tolist(),
        "target_prob": [round(p, 3) for p in probs.max(1).values.tolist()],
    }
    return Case("vit-s (random)", model, images, targets, info)


def demo_case(num_images: int = 64) -> Case:
    from captum_paths.demo import load_demo_data, load_demo_model

    model = load_demo_model().eval()
    images, labels = load_demo_data("test")
    images, labels = images[:num_images], labels[:num_images]
    with torch.no_grad():
        acc = (model(images).argmax(1) == labels).float().mean().item()
    info = {
        "model": "captum_paths.demo (6 blocks, d_ff 256, 17 tokens)",
        "images": f"first {num_images} of load_demo_data('test')",
        "targets": "labels",
        "accuracy": round(acc, 3),
    }
    return Case("demo digits ViT", model, images, labels, info)


class Timer:
    """Wraps a function; records wall time and process CPU time of every call."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.fn = fn
        self.wall: List[float] = []
        self.cpu: List[float] = []
        self.result: Any = None

    def __call__(self) -> Any:
        w, c = time.perf_counter(), time.process_time()
        self.result = self.fn()
        self.cpu.append(time.process_time() - c)
        self.wall.append(time.perf_counter() - w)
        return self.result

    @property
    def best(self) -> float:
        return min(self.wall)

    @property
    def best_cpu(self) -> float:
        return min(self.cpu)


def timed(fn: Callable[[], Any]) -> Tuple[Any, float]:
    """``(fn(), wall seconds)``."""
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def markdown_table(header: List[str], rows: List[List[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def removal_effect(model: torch.nn.Module, sites, images: torch.Tensor, labels: torch.Tensor,
                   paths: torch.Tensor) -> torch.Tensor:
    """``F(x) - F(x; every path neuron zeroed)`` per image, F = probability of the label:
    ``(N,)`` float64 (the exact gate JAS of the path)."""
    from captum_paths.evaluation.interventions import remove_neurons

    with torch.no_grad():
        clean = model(images).softmax(-1).gather(1, labels[:, None])[:, 0]
        with remove_neurons(sites, paths):
            removed = model(images).softmax(-1).gather(1, labels[:, None])[:, 0]
    return (clean - removed).double()


def emit(text: str, out=None) -> None:
    """Print a benchmark's Markdown and, when ``out`` is given, write it there atomically."""
    from captum_paths.records import write_text_atomic

    print(text, flush=True)
    if out:
        write_text_atomic(out, text + "\n")


def real_case_with_reference(per_class: int, reference: int, seed: int):
    """The DINOv2 digits classifier, ``per_class`` correctly classified held-out digits per class
    and ``reference`` training digits drawn with ``seed``: ``(model, images, labels, reference)``."""
    from benchmarks.real_model import build_real_classifier, select_test_images

    case = build_real_classifier(img_size=112)
    images, labels = select_test_images(case, per_class=per_class)
    drawn = torch.randperm(len(case.train_images), generator=torch.Generator().manual_seed(seed))[:reference]
    return case.model.eval(), images, labels, case.train_images[drawn]


def demo_case_with_reference(per_class: int, reference: int, seed: int):
    """The demo model, the first ``per_class`` test digits per class and ``reference`` training
    digits drawn with ``seed``: ``(model, images, labels, reference)``."""
    from captum_paths.demo import load_demo_data, load_demo_model

    model = load_demo_model().eval()
    x, y = load_demo_data("test")
    index = torch.cat([(y == c).nonzero().flatten()[:per_class] for c in range(10)])
    train, _ = load_demo_data("train")
    drawn = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[:reference]
    return model, x[index], y[index], train[drawn]


def reference_cases(skip_real: bool) -> List[Tuple[str, Callable[[int, int, int], Tuple]]]:
    """``(name, builder)`` of the real DINOv2 case (unless ``skip_real``) and the demo case."""
    cases: List[Tuple[str, Callable[[int, int, int], Tuple]]] = [("demo digits ViT", demo_case_with_reference)]
    if not skip_real:
        cases.insert(0, ("DINOv2 ViT-S/14 + digits probe", real_case_with_reference))
    return cases


def measure_reference_cases(args, measure: Callable[..., Any]) -> List[Tuple[str, Any]]:
    """Each of :func:`reference_cases` (``args`` from :func:`add_reference_case_arguments`) built and
    measured, with ``args.threads`` torch threads and torch seeded 0: ``[(name, measure(name, model,
    images, labels, reference))]``."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = []
    for name, build in reference_cases(args.skip_real):
        model, images, labels, reference = build(args.per_class, args.reference, args.seed)
        results.append((name, measure(name, model, images, labels, reference)))
    return results


def add_reference_case_arguments(parser, threads: int) -> None:
    """The options of the benchmarks over :func:`reference_cases`: ``--per-class``, ``--reference``,
    ``--seed``, ``--threads`` (default ``threads``), ``--skip-real`` and ``--out``."""
    from pathlib import Path

    parser.add_argument("--per-class", type=int, default=2, help="images per class (default 2)")
    parser.add_argument("--reference", type=int, default=64, help="reference images of the mean (default 64)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the reference draw (default 0)")
    parser.add_argument("--threads", type=int, default=threads, help=f"torch threads (default {threads})")
    parser.add_argument("--skip-real", action="store_true", help="the demo model only")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown tables here")

