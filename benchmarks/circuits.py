"""Class circuits on the real DINOv2: learned hard-concrete circuits against attribution
patching, path-use rankings (the default search and knowledge neurons) and random units, on
held-out images.

Units: every attention head and FFN neuron (12 x 6 heads + 12 x 1,536 neurons = 18,504);
ablated units take their mean over training images of every class (256, seed 0) at every
token (``--ablation mean``) or zero (``--ablation zero``). Per class, ``--train`` training digits learn the masks and rank the units (the
default search's paths of ``--path-images`` of them rank by path use) and ``--held``
held-out test digits measure the circuits. The goal: at least 80% of the unablated
target probability with at most 10% of the units. The last table is the share of each
class's path units (the default search's, on its training images) inside its circuit, beside
the share a random unit has (the circuit's share of the FFN neurons).

Usage::

    python -m benchmarks.circuits [--classes 0 1 2 3 4] [--ablation mean|zero] [--strengths 8 32]
        [--steps 150] [--train 32] [--held 24] [--path-images 8] [--threads 2] [--out FILE.md]
        [--save DIR]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import List, Optional

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd
import torch

from benchmarks.common import emit
from captum_paths import KnowledgeNeuronPath, LayerProgressiveNeuronPath, MeanBaseline, NeuronSites
from captum_paths.evaluation.circuits import (
    circuit_path_overlap,
    circuit_study,
    circuit_summary,
    fewest_circuit_units,
)
from captum_paths.records import write_json_atomic


def main(argv: Optional[List[str]] = None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--strengths", type=float, nargs="+", default=[8.0, 32.0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--train", type=int, default=32, help="training images per class")
    parser.add_argument("--held", type=int, default=24, help="held-out images per class")
    parser.add_argument("--path-images", type=int, default=8, help="training images per class searched for paths")
    parser.add_argument("--reference", type=int, default=256, help="images of the mean (every class)")
    parser.add_argument("--ablation", choices=("mean", "zero"), default="mean")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--save", type=Path, default=None, help="folder for the table (CSV) and circuits (JSON)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    from benchmarks.real_model import build_real_classifier

    start = time.perf_counter()
    case = build_real_classifier(img_size=112)
    model = case.model.eval()
    rng = np.random.default_rng(0)
    train, held = [], []
    for c in args.classes:
        tr = np.flatnonzero(case.train_labels.numpy() == c)
        te = np.flatnonzero(case.test_labels.numpy() == c)
        train.append(rng.permutation(tr)[: args.train])
        held.append(rng.permutation(te)[: args.held])
    x = torch.cat([case.train_images[np.concatenate(train)], case.test_images[np.concatenate(held)]])
    y = torch.cat([case.train_labels[np.concatenate(train)], case.test_labels[np.concatenate(held)]])
    n_train = sum(len(t) for t in train)
    reference = case.train_images[torch.randperm(len(case.train_images),
                                                 generator=torch.Generator().manual_seed(0))[: args.reference]]
    baseline = MeanBaseline(reference) if args.ablation == "mean" else "zero"
    # the default search and knowledge neurons on the first path-images training images of each class
    # (path-use rankings)
    searched = torch.cat([torch.arange(sum(len(t) for t in train[:i]), sum(len(t) for t in train[:i]) + args.path_images)
                          for i in range(len(train))])
    neurons = NeuronSites.from_model(model)
    t0 = time.perf_counter()
    result = LayerProgressiveNeuronPath(model, sites=neurons).attribute(x[searched], target=y[searched])
    search_s = time.perf_counter() - t0
    knowledge = KnowledgeNeuronPath(model, sites=neurons).attribute(x[searched], target=y[searched],
                                                                   internal_batch_size=32)
    paths_by_method = {}
    for name, found in (("neuron-path", result), ("knowledge-neurons", knowledge)):
        paths = torch.full((len(x),) + tuple(found.paths.shape[1:]), -1, dtype=torch.long)
        paths[searched] = found.paths
        paths_by_method[name] = _SearchedOnly(paths, searched)
    print(f"setup {time.perf_counter() - start:.0f} s, search {search_s:.0f} s, knowledge neurons "
          f"{time.perf_counter() - t0 - search_s:.0f} s", flush=True)
    t1 = time.perf_counter()
    table, circuits = _study(model, x, y, n_train, paths_by_method, baseline, args)
    study_s = time.perf_counter() - t1
    summary = circuit_summary(table)
    fewest = fewest_circuit_units(table)
    kept = pd.DataFrame([{"class": label, "strength": c.strength, "units": c.units_kept,
                          "heads": sum(int(k.sum()) for k, kind in zip(c.keep, c.kinds) if kind == "head"),
                          "share": c.units_kept / c.total_units}
                         for label, cs in circuits.items() for c in cs])
    overlap = pd.DataFrame([{"class": label, "strength": c.strength,
                             **circuit_path_overlap(c, result.paths[y[searched] == label], neurons.names)}
                            for label, cs in circuits.items() for c in cs])
    if args.save:
        args.save.mkdir(parents=True, exist_ok=True)
        table.to_csv(args.save / f"circuits_{args.ablation}.csv", index=False)
        torch.save({"neuron-path": result.paths, "knowledge-neurons": knowledge.paths, "labels": y[searched]},
                   args.save / f"paths_{args.ablation}.pt")
        write_json_atomic(args.save / f"circuits_{args.ablation}.json",
                          {str(label): [c.to_json() for c in cs] for label, cs in circuits.items()})
    text = "\n\n".join([
        "# Class circuits on DINOv2 ViT-S/14 (`python -m benchmarks.circuits " + " ".join(argv or sys.argv[1:]) + "`)",
        f"classes {args.classes}; {args.train} training and {args.held} held-out digits per class; "
        + (f"mean ablation over {args.reference} training digits of every class" if args.ablation == "mean"
           else "zero ablation") + f"; search {search_s:.0f} s, study {study_s:.0f} s, "
        f"{args.threads} threads",
        "Mean over classes (held-out images):",
        summary.to_markdown(index=False, floatfmt=".4g"),
        "Fewest units for 80% of the unablated target probability:",
        fewest.to_markdown(index=False, floatfmt=".4g"),
        "Learned circuits per class:",
        kept.to_markdown(index=False, floatfmt=".4g"),
        "Path units (the default search's, per class) inside the circuits, against a random unit's chance:",
        overlap.to_markdown(index=False, floatfmt=".4g"),
    ])
    emit(text, args.out)
    return table


def _study(model, x, y, n_train, paths_by_method, baseline, args):
    """:func:`circuit_study` with the benchmark's own split: training digits train, test digits are held out."""
    split = {}
    for c in args.classes:
        rows = (y == c).nonzero().flatten().tolist()
        split[c] = {"consensus": [r for r in rows if r < n_train], "evaluation": [r for r in rows if r >= n_train]}
    return circuit_study(model, x, y, paths_by_method, layer_baselines=baseline,
                         strengths=args.strengths, steps=args.steps, batch_size=8, seed=0, classes=args.classes,
                         split=split)


class _SearchedOnly:
    """Paths of the searched rows; indexing with training rows keeps only those searched."""

    def __init__(self, paths: torch.Tensor, searched: torch.Tensor) -> None:
        self.full, self.searched = paths, set(searched.tolist())

    def __getitem__(self, rows):
        keep = [int(r) for r in rows if int(r) in self.searched]
        return self.full[torch.tensor(keep, dtype=torch.long)]


if __name__ == "__main__":
    main()
