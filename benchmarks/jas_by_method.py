"""Mean JAS of every path method's path on the demo's test images, with and without
refinement of the searched path (issue 4).

Every registered method finds one neuron per layer (k=1, gate semantics, target =
label) on the 360 test images; the searched path also with ``refine=8`` and
``refine="all"`` (the exact greedy). Each path is then scored the same way:

* ``jas_gl50``: the gate JAS with 50 Gauss-Legendre steps
  (:func:`captum_paths.evaluation.jas_comparison`, the evaluation table's setting);
* ``removal_drop``: ``F(x) - F(x; path removed)``, the exact value the JAS
  integrates to (completeness), which the exact greedy maximises layer by layer.

Usage::

    python -m benchmarks.jas_by_method [--limit N] [--out FILE.md]

Prints a Markdown table: per variant the mean of both scores and, per image, how
often the searched path (no refinement) scores at least as high (ties count).
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
import torch

from captum_paths import NeuronSites
from captum_paths.demo import load_demo_data, load_demo_model
from captum_paths.evaluation import jas_comparison
from captum_paths.interventions import remove_neurons
from captum_paths.records import write_text_atomic
from captum_paths.report import markdown
from captum_paths.search import PATH_METHODS

SEARCHED = "neuron-path"
#: (row name, registry name, extra attribute kwargs)
VARIANTS: List[Tuple[str, str, Dict]] = [
    (SEARCHED, SEARCHED, {}),
    (f"{SEARCHED}, refine=8", SEARCHED, {"refine": 8}),
    (f"{SEARCHED}, refine='all'", SEARCHED, {"refine": "all"}),
] + [(name, name, {}) for name in PATH_METHODS if name != SEARCHED]


def removal_drop(model, sites, images, labels, paths) -> torch.Tensor:
    """``F(x) - F(x; every path neuron zeroed)`` per image, F = probability of the label."""
    with torch.no_grad():
        clean = model(images).softmax(-1).gather(1, labels[:, None])[:, 0]
        with remove_neurons(sites, paths):
            removed = model(images).softmax(-1).gather(1, labels[:, None])[:, 0]
    return clean - removed


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=None, help="first N test images (default: all 360)")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown table here")
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    model = load_demo_model()
    sites = NeuronSites.from_model(model)
    images, labels = load_demo_data("test")
    if args.limit:
        images, labels = images[: args.limit], labels[: args.limit]
    paths, seconds = {}, {}
    for row, name, kwargs in VARIANTS:
        start = time.perf_counter()
        paths[row] = PATH_METHODS[name](model).attribute(images, target=labels, **kwargs).paths
        seconds[row] = time.perf_counter() - start
    jas = jas_comparison(model, images, labels, paths, modes=("gate",), n_steps=50)
    base_jas = jas[jas["method"] == SEARCHED]["jas"].to_numpy()
    base_drop = removal_drop(model, sites, images, labels, paths[SEARCHED]).numpy()
    rows = []
    for row, _, _ in VARIANTS:
        values = jas[jas["method"] == row]["jas"].to_numpy()
        drop = removal_drop(model, sites, images, labels, paths[row]).numpy()
        rows.append({
            "path": row, "mean_jas_gl50": values.mean(), "mean_removal_drop": drop.mean(),
            "searched_jas_at_least_as_high": (base_jas >= values - 1e-12).mean(),
            "searched_drop_at_least_as_high": (base_drop >= drop - 1e-12).mean(),
            "search_s": seconds[row],
        })
    table = pd.DataFrame(rows)
    text = f"{len(images)} demo test images, k = 1, target = label\n\n" + markdown(table)
    print(text)
    if args.out:
        write_text_atomic(args.out, text + "\n")
    return table


if __name__ == "__main__":
    main()
