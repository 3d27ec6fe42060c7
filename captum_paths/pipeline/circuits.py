"""The circuits stage: learned class circuits of a run's classes, against rankings of units.

See "Class circuits" in docs/method.md. For ``classes`` classes of the run (a seeded draw of
those with two images or more), :func:`~captum_paths.evaluation.circuits.circuit_study` splits
each class's recorded images into training images, which learn the circuits (hard-concrete
masks over heads and FFN neurons, one per sparsity strength) and rank the units (attribution
patching, path use of every method of the run, random), and held-out images, on which every
circuit runs with every other unit ablated. Then, per class, the circuit shown (the sparsest
that keeps 80% of the unablated target probability on held-out images, else the most
faithful) is read three ways: how much of each method's paths lies inside it
(:func:`~captum_paths.evaluation.circuits.circuit_path_overlap`), its units per layer, and the
causal edges between its strongest units (:class:`~captum_paths.analysis.CausalEdges`).

Everything goes to ``RUN/circuits/`` (:class:`~captum_paths.records.CircuitFiles`), replaced as
a whole under the run folder's writer lock.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import pandas as pd

from captum_paths.records import CircuitFiles, as_path_records, complete_images, write_json_atomic

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from captum_paths.evaluation.circuits import LearnedCircuit
    from captum_paths.pipeline.run import Run

__all__ = ["circuits", "chosen_circuit", "circuit_units_table", "CIRCUIT_ABLATIONS", "SHOWN_FRACTION"]

logger = logging.getLogger(__name__)

#: What a circuit's ablated units become in the stage: their mean over the training images of every
#: studied class, or zero.
CIRCUIT_ABLATIONS = ("mean", "zero")
#: The share of the unablated target probability the circuit shown per class keeps on held-out images.
SHOWN_FRACTION = 0.8


def circuits(
    run: "Run",
    classes: Optional[int] = 10,
    units: str = "mixed",
    ablation: str = "mean",
    strengths: Optional[Sequence[float]] = None,
    steps: int = 200,
    lr: float = 0.1,
    batch_size: int = 16,
    train_fraction: float = 0.5,
    max_per_class: Optional[int] = 64,
    edge_units: int = 2,
    seed: int = 0,
    progress: bool = True,
) -> Path:
    """Learn the circuits of ``classes`` classes of ``run`` and compare them with rankings of units;
    writes ``RUN/circuits/`` and returns it.

    Args:
        run (Run): a run folder with records (its model is loaded).
        classes (int, optional): classes studied, a seeded draw of those with two recorded images or
            more (``None``: every one). Default: 10.
        units (str): the units a circuit is made of: ``"mixed"`` (every attention head and FFN
            neuron; the FFN neurons alone where the model's heads are unknown), ``"neurons"`` or
            ``"heads"``. Default: ``"mixed"``.
        ablation (str): what units outside a circuit become, at every token: ``"mean"`` (their
            mean over the training images of every studied class) or ``"zero"``. Default: ``"mean"``.
        strengths (sequence of float, optional): sparsity strengths, one circuit each. Default:
            :data:`~captum_paths.evaluation.circuits.DEFAULT_STRENGTHS`.
        steps, lr, batch_size: the training's
            (:func:`~captum_paths.evaluation.circuits.learn_circuits`).
        train_fraction (float): share of each class's images that train and rank; the rest are
            held out. Default: 0.5.
        max_per_class (int, optional): images per class at most (a seeded draw; ``None``: all).
            Default: 64.
        edge_units (int): per layer, the circuit's strongest units whose causal edges are measured
            (0: none). Default: 2.
        seed (int): the draws, the splits, the training and the random ranking. Default: 0.
        progress (bool): progress bars.

    Returns:
        Path: ``RUN/circuits``.

    Example::

        >>> run = Run("runs/digits")
        >>> folder = run.circuits(classes=3, strengths=(0.5, 2.0), steps=100)
        >>> pd.read_csv(folder / "circuit_fewest.csv")   # fewest units for 80% per method
    """
    import torch

    from captum_paths.attribution.layer_baselines import MeanBaseline
    from captum_paths.evaluation.circuits import DEFAULT_STRENGTHS, circuit_study, circuit_summary, \
        fewest_circuit_units, unit_sites
    from captum_paths.evaluation.harness import split_by_class
    from captum_paths.plots import save_figure
    from captum_paths.plots.evaluation import plot_circuits
    from captum_paths.search import PathResult

    _check(classes, "classes", allow_none=True)
    _check(max_per_class, "max_per_class", allow_none=True)
    if ablation not in CIRCUIT_ABLATIONS:
        raise ValueError(f"ablation must be one of {CIRCUIT_ABLATIONS}; got {ablation!r}")
    if isinstance(edge_units, bool) or not isinstance(edge_units, int) or edge_units < 0:
        raise ValueError(f"edge_units must be 0 (no edges) or a positive int; got {edge_units!r}")
    strengths = tuple(DEFAULT_STRENGTHS if strengths is None else strengths)
    start = time.perf_counter()
    records = as_path_records(run.records())
    run.check_units(records)
    digest = run.records_digest(records)
    image_ids, by_method = complete_images(records)
    if not image_ids:
        raise ValueError(f"no image of run {str(run.folder)!r} has a record of every method")
    first = next(iter(by_method.values()))
    names = pd.Series([str(first[i].label) for i in image_ids])
    codes = pd.factorize(names, sort=True)[0]
    counts = np.bincount(codes)
    eligible = np.flatnonzero(counts >= 2)
    if not len(eligible):
        raise ValueError(f"circuits need at least 2 recorded images of a class (training and held-out); run "
                         f"{str(run.folder)!r} has one per class")
    rng = np.random.default_rng(seed)
    if classes is not None and len(eligible) > classes:
        eligible = np.sort(rng.choice(eligible, classes, replace=False))
    rows: List[int] = []
    for code in eligible:
        members = np.flatnonzero(codes == code)
        if max_per_class is not None and len(members) > max_per_class:
            members = np.sort(rng.choice(members, max_per_class, replace=False))
        rows += members.tolist()
    ids = [image_ids[i] for i in sorted(rows)]
    model = run.model()
    path_sites = run.sites()
    sites = unit_sites(model, units)
    images, labels = run.images(ids)
    paths = {name: PathResult.from_records([rows_[i] for i in ids]) for name, rows_ in by_method.items()}
    if any(name not in sites.names for name in path_sites.names):  # e.g. neuron paths, head circuits
        logger.warning("circuits: the run's paths hold units the circuits' %s do not; no path-use rankings and no "
                       "overlap with the paths", units)
        paths = {}
    chosen_labels = sorted({int(v) for v in labels.tolist()})
    logger.info("circuits: %d classes, %d images, %d units, %s ablation", len(chosen_labels), len(ids),
                sum(sites.widths or ()), ablation)
    split = split_by_class(labels, train_fraction, seed)
    train = torch.tensor(sorted(i for part in split.values() for i in part["consensus"]), dtype=torch.long)
    # the mean over the training images of every studied class (a class's own mean carries the class)
    baseline = MeanBaseline(images[train]) if ablation == "mean" else None
    table, learned = circuit_study(model, images, labels, paths, sites=sites, path_sites=path_sites,
                                   classes=chosen_labels, layer_baselines=baseline, strengths=strengths,
                                   split=split, steps=steps, lr=lr, batch_size=batch_size, seed=seed,
                                   progress=progress)
    study_s = time.perf_counter() - start
    shown = {label: chosen_circuit(table, learned[label]) for label in learned}
    overlap = _overlap(learned, shown, paths, labels, path_sites)
    edges = _edges(model, sites, images, labels, learned, shown, baseline, edge_units, seed)
    summary = circuit_summary(table, SHOWN_FRACTION)
    fewest = fewest_circuit_units(table, SHOWN_FRACTION)
    with run.lock(), run.replacing(run.circuits_dir) as out:
        table.to_csv(out / CircuitFiles.STUDY, index=False)
        summary.to_csv(out / CircuitFiles.SUMMARY_TABLE, index=False)
        fewest.to_csv(out / CircuitFiles.FEWEST, index=False)
        circuit_units_table(learned, shown).to_csv(out / CircuitFiles.UNITS, index=False)
        overlap.to_csv(out / CircuitFiles.OVERLAP, index=False)
        if edges is not None:
            edges.to_csv(out / CircuitFiles.EDGES, index=False)
        write_json_atomic(out / CircuitFiles.CIRCUITS, {
            str(label): {"shown": shown[label], "circuits": [c.to_json() for c in cs]}
            for label, cs in learned.items()})
        save_figure(plot_circuits(table, SHOWN_FRACTION), out / "circuits")
        write_json_atomic(out / CircuitFiles.SUMMARY, {
            "classes": chosen_labels, "class_names": {str(int(v)): str(first[i].label) for i, v in
                                                      zip(ids, labels.tolist())},
            "images": len(ids), "units": units, "kinds": list(sites.kinds), "layer_names": list(sites.names),
            "total_units": int(sum(sites.widths)), "ablation": ablation,
            "path_layers": [list(sites.names).index(name) for name in path_sites.names] if paths else [],
            "strengths": list(strengths),
            "steps": steps, "lr": lr, "batch_size": batch_size, "train_fraction": train_fraction,
            "max_per_class": max_per_class, "edge_units": edge_units, "seed": seed, "fraction": SHOWN_FRACTION,
            "methods": list(paths), "image_ids": ids,
            "split": {str(k): v for k, v in split.items() if k in learned},
            "model": run.settings["model"], "records_sha256": digest,
            "timings": {"study_s": study_s, "total_s": time.perf_counter() - start},
        })
    return run.circuits_dir


def chosen_circuit(table: pd.DataFrame, learned: Sequence["LearnedCircuit"], fraction: float = SHOWN_FRACTION
                   ) -> int:
    """The index in ``learned`` (one class's circuits) of the circuit to show: the sparsest that keeps
    ``fraction`` of the unablated target probability on the held-out images of ``table``
    (:func:`~captum_paths.evaluation.circuits.circuit_study`'s), else the most faithful.

    Example::

        >>> table, circuits = circuit_study(model, images, labels, classes=[3])
        >>> circuits[3][chosen_circuit(table, circuits[3])].units()
    """
    from captum_paths.evaluation.circuits import LEARNED

    rows = table[(table["method"] == LEARNED) & (table["label"] == learned[0].label)]
    share = (rows["mean_prob"] / rows["mean_prob_full"]).to_numpy()
    strengths = rows["strength"].to_numpy()
    index = {float(c.strength): i for i, c in enumerate(learned)}
    reaching = [(learned[index[float(s)]].units_kept, i) for i, s in enumerate(strengths) if share[i] >= fraction]
    if reaching:
        return index[float(strengths[min(reaching)[1]])]
    return index[float(strengths[int(np.argmax(share))])]


def circuit_units_table(learned: Dict[int, Sequence["LearnedCircuit"]], shown: Optional[Dict[int, int]] = None
                        ) -> pd.DataFrame:
    """Units kept per class, strength and layer.

    Args:
        learned (dict): ``{label: [LearnedCircuit per strength]}``.
        shown (dict, optional): ``{label: index}`` of the circuit shown (:func:`chosen_circuit`).

    Returns:
        DataFrame ``label, strength, shown, layer, name, kind, units_kept, width, units`` (``units``:
        the kept unit indices, space-separated).
    """
    rows = []
    for label, cs in learned.items():
        for i, c in enumerate(cs):
            for layer, keep in enumerate(c.keep):
                rows.append({"label": int(label), "strength": c.strength,
                             "shown": shown is not None and shown.get(label) == i, "layer": layer,
                             "name": c.names[layer] if c.names else "", "kind": c.kinds[layer] if c.kinds else "",
                             "units_kept": int(keep.sum()), "width": keep.numel(),
                             "units": " ".join(str(u) for u in keep.nonzero().flatten().tolist())})
    return pd.DataFrame(rows, columns=["label", "strength", "shown", "layer", "name", "kind", "units_kept", "width",
                                       "units"])


def _check(value: Any, name: str, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int{' or None' if allow_none else ''}; got {value!r}")


def _overlap(learned, shown: Dict[int, int], paths, labels: "torch.Tensor", path_sites) -> pd.DataFrame:
    """Per class and method, the share of the class's path units inside its circuit shown."""
    from captum_paths.evaluation.circuits import circuit_path_overlap

    rows = []
    for label, cs in learned.items():
        circuit = cs[shown[label]]
        mine = labels == label
        for method, result in paths.items():
            rows.append({"label": int(label), "method": method, "strength": circuit.strength,
                         **circuit_path_overlap(circuit, result.paths[mine], list(path_sites.names))})
    return pd.DataFrame(rows, columns=["label", "method", "strength", "path_units", "inside", "share",
                                       "occurrence_share", "chance"])


def _edges(model, sites, images, labels, learned, shown, baseline, edge_units: int, seed: int
           ) -> Optional[pd.DataFrame]:
    """Causal edges between the ``edge_units`` strongest units per layer of each class's circuit shown,
    on the class's images, under the circuits' baseline (``None`` when ``edge_units`` is 0)."""
    from captum_paths.analysis import CausalEdges, class_causal_edges
    from captum_paths.evaluation.circuits import circuit_sites

    if edge_units == 0:
        return None
    edge_sites = circuit_sites(model, sites, "all")
    device = next(model.parameters()).device
    frames = []
    for label, cs in learned.items():
        circuit = cs[shown[label]]
        units = _strongest(circuit, edge_units)
        rows = (labels == label).nonzero().flatten()
        if len(units) < 2 or len(rows) < 2:
            continue
        result = CausalEdges(model, sites=edge_sites).attribute(images[rows].to(device), units,
                                                                 layer_baselines=baseline, seed=seed,
                                                                 internal_batch_size=64)
        frame = result.to_frame(labels=[int(label)] * len(rows), consecutive_only=True)
        frames.append(frame)
    if not frames:
        return None
    return class_causal_edges(pd.concat(frames, ignore_index=True))


def _strongest(circuit: "LearnedCircuit", per_layer: int) -> List[Tuple[int, int]]:
    """Per layer the ``per_layer`` kept units of ``circuit`` with the largest gate logits."""
    units = []
    for layer, (keep, alpha) in enumerate(zip(circuit.keep, circuit.log_alpha)):
        kept = keep.nonzero().flatten()
        if len(kept):
            order = alpha[kept].argsort(descending=True, stable=True)[:per_layer]
            units += [(layer, int(u)) for u in sorted(kept[order].tolist())]
    return units
