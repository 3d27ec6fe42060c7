"""Mean JAS of every path method's path on the demo's test images, for each setting
of the searched path.

Every registered method finds one neuron per layer (k=1, gate semantics, target =
label, each method's defaults) on the 360 test images; the searched path also with
``refine=0`` (the paper's whole-site search), ``refine="all"`` (the exact greedy)
and ``beam=4``. Per variant:

* ``mean_jas``: the JAS the method reports (``PathResult.jas``);
* ``mean_removal_effect``: ``F(x) - F(x; path removed)`` computed here
  independently; in gate mode the two are equal by construction;
* ``abs_delta_share``: ``sum |delta| / sum |JAS|`` over the images, how far the
  reported per-neuron contributions are from adding up;
* ``searched_at_least_as_high``: share of images on which the default searched
  path scores at least as high as the variant (ties count);
* ``search_s``: wall time of the search, one process.

Usage::

    python -m benchmarks.jas_by_method [--limit N] [--out FILE.md]
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

from benchmarks.common import emit, removal_effect
from captum_paths import NeuronSites
from captum_paths.demo import load_demo_data, load_demo_model
from captum_paths.pipeline.report import markdown
from captum_paths.search import PATH_METHODS
from captum_paths.search.neuron_path import DEFAULT_REFINE

SEARCHED = "neuron-path"
#: (row name, registry name, extra attribute kwargs)
VARIANTS: List[Tuple[str, str, Dict]] = [
    (f"{SEARCHED} (default, refine={DEFAULT_REFINE})", SEARCHED, {}),
    (f"{SEARCHED}, refine=0", SEARCHED, {"refine": 0}),
    (f"{SEARCHED}, refine='all'", SEARCHED, {"refine": "all"}),
    (f"{SEARCHED}, beam=4", SEARCHED, {"beam": 4}),
] + [(name, name, {}) for name in PATH_METHODS if name != SEARCHED]


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
    results, seconds = {}, {}
    for row, name, kwargs in VARIANTS:
        start = time.perf_counter()
        results[row] = PATH_METHODS[name](model).attribute(images, target=labels, **kwargs)
        seconds[row] = time.perf_counter() - start
    base = results[VARIANTS[0][0]].jas.double()
    rows = []
    for row, _, _ in VARIANTS:
        result = results[row]
        jas = result.jas.double()
        rows.append({
            "path": row, "mean_jas": jas.mean().item(),
            "mean_removal_effect": removal_effect(model, sites, images, labels, result.paths).mean().item(),
            "abs_delta_share": (result.delta.double().abs().sum() / jas.abs().sum().clamp(min=1e-12)).item(),
            "searched_at_least_as_high": (base >= jas - 1e-9).double().mean().item(),
            "search_s": seconds[row],
        })
    table = pd.DataFrame(rows)
    text = f"{len(images)} demo test images, k = 1, target = label\n\n" + markdown(table)
    emit(text, args.out)
    return table


if __name__ == "__main__":
    main()
