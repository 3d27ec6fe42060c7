"""Faithfulness-sparsity curves of neuron, head and mixed paths, and of every baseline.

For each kind of unit (FFN neurons, attention heads, a head and a neuron site per
block) every method that can hold it finds paths (k = 1, target = label) for
``--per-class`` images per class; per class, half of them rank the units (how many
paths hold each), the other half are held out
(:func:`captum_paths.evaluation.faithfulness.faithfulness_study`: the top N units per layer
kept, every other unit of the same sites ablated at every token, to zero and to its
mean; a random ranking as control). Prints, per kind and method, the share of the
unablated target probability kept at a few N and the fewest units per layer that
keep 80% of it, then a plain statement of which units carry the decision.

Usage::

    python -m benchmarks.faithfulness_curves --case demo [--per-class 10]
    python -m benchmarks.faithfulness_curves --case real [--per-class 6] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional, Tuple

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd
import torch

from benchmarks.common import emit
from captum_paths.evaluation.faithfulness import RANDOM_RANKING, faithfulness_study, faithfulness_summary, fewest_units
from captum_paths.pipeline.report import markdown
from captum_paths.search import PATH_METHODS
from captum_paths.model.sites import UNITS as KINDS, NeuronSites


def load_case(case: str, per_class: int, img_size: int) -> Tuple[torch.nn.Module, torch.Tensor, torch.Tensor, str]:
    """``(model, images, labels, description)``."""
    if case == "demo":
        from captum_paths.demo import load_demo_data, load_demo_model

        model = load_demo_model().eval()
        images, labels = load_demo_data("test")
        pick = torch.cat([torch.nonzero(labels == c).flatten()[:per_class] for c in range(10)])
        return model, images[pick], labels[pick], f"demo digits ViT, {len(pick)} test images ({per_class} per class)"
    from benchmarks.real_model import build_real_classifier, select_test_images

    real = build_real_classifier(img_size=img_size)
    images, labels = select_test_images(real, per_class=per_class)
    return (real.model.eval(), images, labels,
            f"DINOv2 ViT-S/14 + linear probe, {img_size} px digits, {len(images)} correctly classified test "
            f"images ({per_class} per class)")


def find_paths(model, sites, images, labels, n_steps: Optional[int]) -> Tuple[Dict[str, object], Dict[str, float]]:
    """Every registered method that can hold the sites' units: ``({method: PathResult}, {method: seconds})``."""
    paths, seconds = {}, {}
    for name, cls in PATH_METHODS.items():
        method = cls(model, sites=sites)
        try:
            method.check_sites()
        except ValueError:
            continue  # defined on FFN neurons only
        start = time.perf_counter()
        paths[name] = method.attribute(images, target=labels, n_steps=n_steps)
        seconds[name] = time.perf_counter() - start
    return paths, seconds


def main(argv: Optional[List[str]] = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--case", choices=("demo", "real"), default="demo")
    parser.add_argument("--per-class", type=int, default=10, help="images per class (default 10)")
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--n-steps", type=int, default=None, help="quadrature steps of the searches")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown tables here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model, images, labels, description = load_case(args.case, args.per_class, args.img_size)
    parts = [f"{description}; k = 1, target = label, {args.threads} torch threads"]
    print(parts[0], flush=True)

    summaries, fewest = [], []
    for kind in args.kinds:
        sites = NeuronSites.for_units(model, kind)
        start = time.perf_counter()
        paths, seconds = find_paths(model, sites, images, labels, args.n_steps)
        df = faithfulness_study(model, images, labels, paths, sites=sites)
        summary = faithfulness_summary(df).assign(units=kind)
        summaries.append(summary)
        fewest.append(fewest_units(summary).assign(units=kind))
        print(f"{kind}: {len(paths)} methods, search {sum(seconds.values()):.1f} s, whole kind "
              f"{time.perf_counter() - start:.1f} s", flush=True)
    summary = pd.concat(summaries, ignore_index=True)
    fewest = pd.concat(fewest, ignore_index=True)

    shown = sorted({n for n in summary["n"] if n in (0, 1, 2, 4, 16, 64, 256, 1024)} | {int(summary["n"].max())})
    for ablation in ("zero", "mean"):
        part = summary[(summary["ablation"] == ablation) & summary["n"].isin(shown)]
        wide = part.pivot_table(index=["units", "method"], columns="n", values="fraction_of_full", sort=False)
        wide.columns = [f"N={n}" for n in wide.columns]
        few = fewest[fewest["ablation"] == ablation].set_index(["units", "method"])["n"]
        wide["fewest N for 80%"] = [few.get(key) for key in wide.index]
        parts.append(f"\nShare of the unablated target probability kept, every other unit set to "
                     f"{'0' if ablation == 'zero' else 'its mean'} (classes averaged; N = units kept per layer)\n\n"
                     + markdown(wide.reset_index(), floatfmt=".3f"))
    parts.append("\n" + statement(summary, fewest))
    emit("\n".join(parts), args.out)
    return summary


def statement(summary: pd.DataFrame, fewest: pd.DataFrame) -> str:
    """Which units carry the decision: the kind and method that keep 80% of the target
    probability with the fewest units in all (every other unit set to 0), against the
    random control; or, when none does short of every unit, the most any ranking keeps."""
    zero = summary[summary["ablation"] == "zero"]
    total = zero.groupby("units")["units_kept"].max()
    hits = fewest[(fewest["ablation"] == "zero") & fewest["units_kept"].notna()]
    hits = hits[hits["units_kept"] < hits["units"].map(total)]
    if hits.empty:
        partial = zero[zero["units_kept"] < zero["units"].map(total)]
        best = partial.sort_values(["fraction_of_full", "units_kept"], ascending=[False, True]).iloc[0]
        return (f"No ranking of any kind keeps 80% of the target probability short of every unit (every other "
                f"unit set to 0): the most any keeps is {best['fraction_of_full']:.0%}, by {best['units']} ranked "
                f"by {best['method']} at N = {int(best['n'])} per layer ({int(best['units_kept'])} of "
                f"{int(total[best['units']])} units). The decision is spread over the units; no small set carries it.")
    best = hits.sort_values(["units_kept", "n"]).iloc[0]
    control = hits[(hits["method"] == RANDOM_RANKING) & (hits["units"] == best["units"])]
    against = (f"; a random ranking of the same units needs {int(control.iloc[0]['units_kept'])}"
               if len(control) else "; a random ranking of the same units does not get there short of all of them")
    return (f"Fewest units for 80% of the target probability (every other unit set to 0): {best['units']} "
            f"ranked by {best['method']}, N = {int(best['n'])} per layer ({int(best['units_kept'])} of "
            f"{int(total[best['units']])} units{against}).")


if __name__ == "__main__":
    main()
