"""Size and load time of the path explorer for an ImageNet-size run.

Synthetic records of 1,000 classes x 50 images (50,000 paths, 12 layers, d_ff 3,072;
each class prefers 16 neurons per layer, Zipf-weighted, a fifth of the path neurons
anywhere), thumbnails of random 64x64 images (noise compresses worse than photos)
and 14x14 heatmaps; the page built at the default limits, then opened from its file
in headless Chromium with the network off. Prints the build time, the page size and
the time to the first view (the overview, charts drawn), and exits non-zero when the
page is over 30 MB or the first view takes over 5 s.

Usage::

    python benchmarks/explorer_scale.py [--chromium /usr/bin/chromium] [--out report.html]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List

import numpy as np


def synthetic_records(classes: int = 1000, per_class: int = 50, layers: int = 12, d_ff: int = 3072,
                      seed: int = 0) -> List[Dict[str, Any]]:
    """Path records of an ImageNet-size run (one method, ``k = 1``)."""
    rng = np.random.default_rng(seed)
    favourites = rng.integers(0, d_ff, size=(classes, layers, 16))
    weights = 1.0 / np.arange(1, 17)
    labels = np.repeat(np.arange(classes), per_class)
    pick = rng.choice(16, size=(len(labels), layers), p=weights / weights.sum())
    paths = favourites[labels[:, None], np.arange(layers)[None, :], pick]
    paths = np.where(rng.random(paths.shape) < 0.2, rng.integers(0, d_ff, size=paths.shape), paths)
    contributions = rng.normal(0.02, 0.03, size=paths.shape)
    return [{"schema": 3, "method": "neuron-path", "image_id": f"n{labels[i]:05d}/{i:06d}.JPEG",
             "label": int(labels[i]), "target": int(labels[i]), "prediction": int(labels[i]),
             "path": paths[i][:, None].tolist(), "contributions": contributions[i][:, None].tolist(),
             "jas": float(contributions[i].sum()), "delta": 1e-6, "model_id": "synthetic",
             "settings": {"k": 1, "mode": "gate", "n_steps": 16}} for i in range(len(labels))]


def build_page(out: Path, seed: int = 1) -> Dict[str, Any]:
    """Write the synthetic run's page to ``out``; returns its payload."""
    from PIL import Image

    from captum_paths.explorer import explorer_payload, render_page

    records = synthetic_records()
    rng = np.random.default_rng(seed)
    payload = explorer_payload(
        records, image_loader=lambda i: Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)),
        heatmap=lambda i, layer, n: rng.normal(size=(14, 14)))
    out.write_text(render_page(payload), encoding="utf-8")
    return payload


def first_view_seconds(page_file: Path, chromium: str) -> float:
    """Seconds from opening ``page_file`` (network off) until its overview is drawn."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        context = browser.new_context(viewport={"width": 1280, "height": 900})
        context.set_offline(True)
        page = context.new_page()
        start = time.perf_counter()
        page.goto(page_file.resolve().as_uri())
        page.wait_for_selector("body[data-ready=overview]", timeout=60_000)
        elapsed = time.perf_counter() - start
        browser.close()
    return elapsed


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chromium", default=shutil.which("chromium") or shutil.which("google-chrome"))
    parser.add_argument("--out", type=Path, default=None, help="keep the page here")
    args = parser.parse_args(argv)
    out = args.out or Path(tempfile.mkdtemp()) / "report.html"
    start = time.perf_counter()
    build_page(out)
    built = time.perf_counter() - start
    size = out.stat().st_size / 1e6
    print(f"page built in {built:.1f} s: {size:.1f} MB ({out})")
    if args.chromium is None:
        print("no Chromium: load time not measured")
        return 0 if size < 30 else 1
    runs = [first_view_seconds(out, args.chromium) for _ in range(3)]
    print(f"first view: {', '.join(f'{s:.2f}' for s in runs)} s (3 loads; median {sorted(runs)[1]:.2f} s)")
    return 0 if size < 30 and sorted(runs)[1] < 5 else 1


if __name__ == "__main__":
    sys.exit(main())
