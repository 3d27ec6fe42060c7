"""Faithfulness against sparsity: how much of a class's decision survives when only the
units its paths use are kept.

For a class, the units of every layer (FFN neurons, attention heads, or both) are
ranked by how many of the class's paths hold them (ties: the larger summed
contribution, then a seeded random order). Keeping the top ``N`` units of every
layer and ablating every other unit of the same sites (set to zero, or to its mean
over a reference set) gives the mean target probability and the accuracy on
held-out images of the class, as a function of ``N``. ``N = 0`` ablates every unit;
``N`` at least the layer's width keeps the model unchanged. A random ranking is the
control: a structure worth the name reaches the model's numbers with far fewer units.

Units are ablated at every token by default (``tokens="all"``): a CLS-pooled model
whose units are read at the class token still moves information through the patch
tokens' FFNs and heads, and ablating the class token alone leaves that route open.
``tokens="selected"`` ablates them only where the paths read them.

The ablations are the neuron baselines of :mod:`captum_paths.attribution.layer_baselines`:
``"zero"``, and ``"mean"``, a :class:`~captum_paths.attribution.layer_baselines.MeanBaseline`
over the ranking images (:func:`unit_means` is its ``.means``). ``layer_baselines=`` adds
(or replaces) one ablation with any other baseline.
"""
from __future__ import annotations

import contextlib
import copy
import logging
from numbers import Real
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import numpy as np
import pandas as pd
import torch
from torch import nn

from captum_paths.attribution.layer_baselines import ABLATIONS, MeanBaseline, as_layer_baselines
from captum_paths.evaluation.harness import _StudyBaselines, _check_batch_size, _check_data, _device, split_by_class
from captum_paths.evaluation.interventions import _model_forward, _Removal
from captum_paths.model.loading import as_logits_model
from captum_paths.model.sites import NeuronSites, resolve_sites
from captum_paths.model.tokens import TokenSelection

__all__ = ["ABLATIONS", "FAITHFULNESS_COLUMNS", "RANDOM_RANKING", "unit_ranking", "random_ranking", "unit_means",
           "keep_units", "faithfulness_study", "faithfulness_summary", "fewest_units", "default_ns"]

logger = logging.getLogger(__name__)

# ABLATIONS ("zero", "mean") is captum_paths.attribution.layer_baselines.ABLATIONS, exported here as before
#: The name of the random-ranking control in the study's tables.
RANDOM_RANKING = "random ranking"
FAITHFULNESS_COLUMNS = ("method", "ablation", "label", "n", "units_kept", "images", "mean_prob", "accuracy",
                        "mean_prob_full", "accuracy_full")

#: Per layer, unit indices best first: a list of ``L`` int64 tensors ``(width_l,)``.
Ranking = List[torch.Tensor]


def _widths(sites: NeuronSites) -> List[int]:
    if sites.widths is None:
        raise ValueError("the sites' widths are unknown; pass width=... to NeuronSites (or run one forward first)")
    return list(sites.widths)


def unit_ranking(
    paths: Union[torch.Tensor, "object"],
    sites: NeuronSites,
    contributions: Optional[torch.Tensor] = None,
    seed: int = 0,
) -> Ranking:
    """Rank every unit of every layer by how many of ``paths`` hold it.

    Args:
        paths: ``(N, L, k)`` unit indices (or a :class:`~captum_paths.search.PathResult`).
        sites: the sites the paths index (their widths bound the ranking).
        contributions: ``(N, L, k)``; ties in the count go to the larger summed contribution.
        seed: the order of units tied in both (most units of a wide layer are never used).

    Returns:
        ``L`` tensors, each a permutation of ``range(width_l)``, most used first.
    """
    if contributions is None:
        contributions = getattr(paths, "contributions", None)
    paths = getattr(paths, "paths", paths)
    widths = _widths(sites)
    if not isinstance(paths, torch.Tensor) or paths.dim() != 3 or paths.shape[1] != len(widths):
        shape = tuple(paths.shape) if isinstance(paths, torch.Tensor) else type(paths).__name__
        raise ValueError(f"paths must be an (N, L, k) tensor with L = {len(widths)} (the sites' layers); got {shape}")
    paths = paths.long().cpu()
    contrib = None if contributions is None else torch.nan_to_num(contributions.double().cpu())
    rng = np.random.default_rng(seed)
    ranking = []
    for layer, width in enumerate(widths):
        units = paths[:, layer].reshape(-1)
        if units.numel() and (units.min() < 0 or units.max() >= width):
            raise ValueError(f"paths hold unit {int(units.max())} at layer {layer}, which has {width} units")
        count = np.bincount(units.numpy(), minlength=width).astype(float)
        total = (np.bincount(units.numpy(), weights=contrib[:, layer].reshape(-1).numpy(), minlength=width)
                 if contrib is not None else np.zeros(width))
        tie = rng.permutation(width)
        ranking.append(torch.from_numpy(np.lexsort((tie, -total, -count))).long())
    return ranking


def random_ranking(sites: NeuronSites, seed: int = 0) -> Ranking:
    """A seeded random permutation of every layer's units (the control)."""
    rng = np.random.default_rng([seed, 1])
    return [torch.from_numpy(rng.permutation(w)).long() for w in _widths(sites)]


def unit_means(model: nn.Module, sites: NeuronSites, images: torch.Tensor, batch_size: int = 64
               ) -> List[torch.Tensor]:
    """The mean activation of every layer over ``images``, ``(positions, units)`` per layer
    (the reference of mean ablation), in float32.

    A thin wrapper over :meth:`MeanBaseline.means
    <captum_paths.attribution.layer_baselines.MeanBaseline.means>` (``MeanBaseline(images,
    batch_size=batch_size).means(sites, model)``: the same batches, sums in float64),
    kept for compatibility; mean ablation itself uses the means in the sites' dtype.

    Args:
        model (nn.Module): the model (logits out); the images go to its device batch by batch.
        sites (NeuronSites): the sites (their token selection sets ``positions``).
        images (Tensor): reference images ``(n, C, H, W)``.
        batch_size (int, optional): images per forward. Default: 64.

    Returns:
        list of Tensor: one ``(positions, units)`` float32 tensor per layer.

    Example::

        >>> means = unit_means(model, sites, images[reference])
        >>> with keep_units(sites, keep, "mean", means):
        ...     logits = model(images)
    """
    means = MeanBaseline(images, batch_size=batch_size).means(sites, _model_forward(model))
    return [means[layer].float() for layer in range(sites.num_layers)]


@contextlib.contextmanager
def keep_units(
    sites: NeuronSites,
    keep: Sequence[torch.Tensor],
    ablation: str = "zero",
    means: Optional[Sequence[torch.Tensor]] = None,
    layer_baselines: Any = None,
) -> Iterator[None]:
    """Ablate every unit of every layer outside ``keep`` while the ``with`` block runs.

    Args:
        sites (NeuronSites): the sites (their token selection says where units are ablated).
        keep (list of Tensor): per layer a bool mask ``(width_l,)`` (the same for every image) or
            ``(batch, width_l)`` (one row per image of the batch).
        ablation (str, optional): ``"zero"``, or ``"mean"`` (each ablated unit takes its value in
            ``means``). Default: ``"zero"``.
        means (list of Tensor, optional): :func:`unit_means` of a reference set, one
            ``(positions, units)`` tensor per layer (``ablation="mean"``).
        layer_baselines (optional): instead of ``ablation`` and ``means``, what an ablated unit
            becomes, as in :func:`~captum_paths.evaluation.interventions.scale_neurons`: a
            ``MeanBaseline(reference_images)``, a ``CounterfactualBaseline(images)`` (one per image
            of the batch run inside the block, or one for all), per-site values ``{layer:
            tensor}`` (each ``(units,)``, ``(positions, units)`` or ``(batch, positions, units)``),
            or ``None`` (use ``ablation``). Default: ``None``.

    Example::

        >>> keep = [torch.zeros(w, dtype=torch.bool) for w in sites.widths]   # keep nothing
        >>> with keep_units(sites, keep, layer_baselines=MeanBaseline(reference_images)):
        ...     logits = model(images)        # every unit at its reference mean
    """
    if ablation not in ABLATIONS:
        raise ValueError(f"ablation must be one of {ABLATIONS}; got {ablation!r}")
    if layer_baselines is not None and (ablation != "zero" or means is not None):
        raise ValueError("keep_units: give either ablation (and means) or layer_baselines, not both")
    if ablation == "mean" and means is None:
        raise ValueError("ablation='mean' needs means (unit_means of a reference set)")
    if len(keep) != sites.num_layers:
        raise ValueError(f"keep needs one mask per layer ({sites.num_layers}); got {len(keep)}")
    removal = None if layer_baselines is None else _Removal(sites, layer_baselines)
    if removal is not None and removal.is_zero:
        removal = None  # the zero ablation, exactly

    def edit(layer: int):
        def fn(act: torch.Tensor) -> torch.Tensor:
            mask = keep[layer].to(act.device)
            mask = mask[:, None, :] if mask.dim() == 2 else mask[None, None, :]
            if removal is not None:
                base = removal.value(layer, act)
                if base is not None:
                    return torch.where(mask, act, base)
                return act * mask.to(act.dtype)
            if ablation == "zero":
                return act * mask.to(act.dtype)
            return torch.where(mask, act, means[layer].to(device=act.device, dtype=act.dtype)[None])
        return fn

    with sites.edit({layer: edit(layer) for layer in range(sites.num_layers)}):
        yield


def default_ns(sites: NeuronSites) -> List[int]:
    """0, 1, 2, 4, ... up to the widest layer (which keeps every unit)."""
    top = max(_widths(sites))
    ns, n = [0], 1
    while n < top:
        ns.append(n)
        n *= 2
    return ns + [top]


def faithfulness_study(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    paths_by_method: Mapping[str, object],
    sites: Optional[NeuronSites] = None,
    ns: Optional[Sequence[int]] = None,
    ablations: Sequence[str] = ABLATIONS,
    rank_fraction: float = 0.5,
    random_control: bool = True,
    tokens: str = "all",
    seed: int = 0,
    batch_size: int = 64,
    layer_baselines: Any = None,
) -> pd.DataFrame:
    """Faithfulness-sparsity curves of each method's paths, per class.

    Per class, the images are split (seeded, per class) into ranking images, whose
    paths rank the units (:func:`unit_ranking`), and held-out images, on which the
    model runs with the top ``N`` units of every layer kept and every other unit of
    the sites ablated (:func:`keep_units`). Mean ablation uses the mean over every
    ranking image of every class (a
    :class:`~captum_paths.attribution.layer_baselines.MeanBaseline` of them).

    Args:
        model: the model (logits out).
        images, labels: ``(N, C, H, W)`` and ``(N,)``; the target is the label.
        paths_by_method: ``{method: paths}``, aligned with ``images``: a PathResult, ``(N, L, k)``
            paths, or a pair ``(paths, contributions)`` (ties in the count go to the larger
            summed contribution).
        sites: the sites the paths index (default: the model's FFN neurons).
        ns: units kept per layer (default :func:`default_ns`).
        ablations: any of ``"zero"``, ``"mean"``.
        rank_fraction: share of each class's images that rank the units.
        random_control: add the random-ranking control (:data:`RANDOM_RANKING`).
        tokens: ``"all"`` (ablate units at every token) or ``"selected"`` (at the sites' token
            selection only).
        layer_baselines (optional): one more ablation, named by the baseline (its ``name``:
            ``"mean"``, ``"counterfactual"``, ``"given"``, ...), or, when that name is in
            ``ablations``, the baseline of that ablation: ``MeanBaseline(reference_images)``
            replaces the ranking images as the reference of ``"mean"``;
            ``CounterfactualBaseline(images_aligned)`` holds one counterfactual per image
            ``(N, C, H, W)`` aligned with ``images`` (or one for all); per-site values
            ``{layer: tensor}`` are shaped as the sites record with ``tokens`` (every token
            for ``"all"``): ``(units,)``, ``(positions, units)`` or ``(N, positions, units)``.
            Default: ``None`` (the ``ablations`` alone).

    Returns:
        DataFrame with columns :data:`FAITHFULNESS_COLUMNS`, one row per method,
        ablation, class and ``n``: ``units_kept`` over all layers, ``mean_prob`` (mean
        softmax probability of the label) and ``accuracy`` (top-1) on the held-out
        images, and the unablated ``mean_prob_full`` / ``accuracy_full``.
        ``df.attrs["layer_baselines"]`` holds each ablation's settings.

    Example::

        >>> df = faithfulness_study(model, images, labels, {"neuron-path": result},
        ...                         ablations=("zero",),
        ...                         layer_baselines=CounterfactualBaseline(other_images))
        >>> set(df.ablation)
        {'zero', 'counterfactual'}
    """
    images, labels = _check_data(images, labels)
    batch_size = _check_batch_size(batch_size)
    sites = resolve_sites(model, sites)  # None: the model's; modules as Captum's layer arguments
    widths = _widths(sites)
    ns = default_ns(sites) if ns is None else _check_ns(ns)
    if tokens not in ("all", "selected"):
        raise ValueError(f"tokens must be 'all' or 'selected'; got {tokens!r}")
    if tokens == "all":
        sites = copy.copy(sites)  # the same modules, read at every token
        sites.tokens = TokenSelection("all", (), sites.tokens.num_prefix_tokens)
    if isinstance(ablations, str):
        ablations = (ablations,)
    ablations = list(dict.fromkeys(ablations))
    given = None if layer_baselines is None else as_layer_baselines(layer_baselines)
    allowed = ABLATIONS if given is None or given.name in ABLATIONS else ABLATIONS + (given.name,)
    for ablation in ablations:
        if ablation not in allowed:
            raise ValueError(f"ablations must hold values of {allowed}; got {ablation!r}")
    if given is not None and given.name not in ablations:
        ablations.append(given.name)
    if not isinstance(paths_by_method, Mapping) or not paths_by_method:
        raise TypeError("paths_by_method must be a non-empty dict {method: (N, L, k) paths or PathResult}")
    if isinstance(rank_fraction, bool) or not isinstance(rank_fraction, Real) or not 0 < rank_fraction < 1:
        raise ValueError(f"rank_fraction must be in (0, 1); got {rank_fraction!r}")
    split = split_by_class(labels, rank_fraction, seed)
    if not split:
        raise ValueError("no class has at least 2 images: nothing to split into ranking and held-out images")
    forward, device = as_logits_model(model), _device(model)
    rank_idx = torch.tensor(sorted(i for s in split.values() for i in s["consensus"]), dtype=torch.long)
    baselines: Dict[str, _StudyBaselines] = {}
    for ablation in ablations:
        if given is not None and ablation == given.name:
            baseline = given
            if isinstance(baseline, MeanBaseline):  # its own means, for these sites and tokens
                baseline = MeanBaseline(given.reference, additional_forward_args=given.args or None,
                                        batch_size=given.batch_size, image_ids=given.image_ids)
        elif ablation == "mean":
            baseline = MeanBaseline(images[rank_idx], batch_size=batch_size)
        else:
            baseline = None
        baselines[ablation] = _StudyBaselines(baseline, sites, model, images)

    rows = []
    for label, parts in split.items():
        ranked, held = torch.tensor(parts["consensus"]), torch.tensor(parts["evaluation"])
        rankings: Dict[str, Ranking] = {}
        for name, paths in paths_by_method.items():
            if isinstance(paths, tuple):
                tensor, contrib = paths
            else:
                tensor, contrib = getattr(paths, "paths", paths), getattr(paths, "contributions", None)
            rankings[name] = unit_ranking(tensor[ranked], sites, None if contrib is None else contrib[ranked],
                                          seed=seed)
        if random_control:
            rankings[RANDOM_RANKING] = random_ranking(sites, seed + label)
        x = images[held]
        with torch.no_grad():
            full = torch.cat([forward(x[s:s + batch_size].to(device)).double().softmax(1).cpu()
                              for s in range(0, len(held), batch_size)])
        full_prob = float(full[:, label].mean())
        full_acc = float((full.argmax(1) == label).double().mean())
        configs = [(name, n) for name in rankings for n in ns]
        for ablation in ablations:
            probs = _run_configs(forward, sites, x, configs, rankings, widths, baselines[ablation], held, batch_size,
                                 device)
            for (name, n), p in zip(configs, probs):
                rows.append({"method": name, "ablation": ablation, "label": label, "n": n,
                             "units_kept": int(sum(min(n, w) for w in widths)), "images": len(held),
                             "mean_prob": float(p[:, label].mean()),
                             "accuracy": float((p.argmax(1) == label).double().mean()),
                             "mean_prob_full": full_prob, "accuracy_full": full_acc})
    df = pd.DataFrame(rows, columns=list(FAITHFULNESS_COLUMNS))
    df.attrs.update(split=split, ns=list(ns), widths=widths, tokens=tokens,
                    kinds=list(getattr(sites, "kinds", ["neuron"] * len(widths))),
                    layer_baselines={a: b.settings for a, b in baselines.items()})
    return df


def _run_configs(forward, sites, x, configs, rankings, widths, baseline: _StudyBaselines, held: torch.Tensor,
                 batch_size, device) -> List[torch.Tensor]:
    """Softmax ``(images, classes)`` for every ``(method, n)`` config: rows are config-major
    copies of ``x`` (the images ``held``), each with its own keep masks, batched; ablated
    units take ``baseline`` (zero: multiplied by 0, as ever)."""
    n_img = x.shape[0]
    masks = []
    for layer, width in enumerate(widths):
        rows = torch.zeros(len(configs), width, dtype=torch.bool)
        for c, (name, n) in enumerate(configs):
            rows[c, rankings[name][layer][: min(n, width)]] = True
        masks.append(rows.repeat_interleave(n_img, dim=0))  # (configs * images, width)
    total = len(configs) * n_img
    out = []
    with torch.no_grad():
        for start in range(0, total, batch_size):
            stop = min(start + batch_size, total)
            index = torch.arange(start, stop) % n_img
            keep = [m[start:stop] for m in masks]
            with keep_units(sites, keep, layer_baselines=None if baseline.is_zero else baseline.rows(held[index])):
                out.append(forward(x[index].to(device)).double().softmax(1).cpu())
    probs = torch.cat(out)
    return list(probs.split(n_img))


def faithfulness_summary(df: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Mean over classes per method, ablation and ``n`` (each class weighs the same), with the
    share of the unablated probability kept (``fraction_of_full``) and a 95% bootstrap
    confidence interval of the mean probability over the classes (``mean_prob_ci_low``,
    ``mean_prob_ci_high``; :func:`captum_paths.statistics.mean_interval`, ``nan`` for one class)."""
    from captum_paths.statistics import mean_interval

    groups = df.groupby(["method", "ablation", "n"], sort=False)
    summary = groups[["units_kept", "mean_prob", "accuracy", "mean_prob_full", "accuracy_full"]].mean().reset_index()
    summary["fraction_of_full"] = summary["mean_prob"] / summary["mean_prob_full"]
    bounds = [mean_interval(group["mean_prob"], n_resamples=1000, seed=seed)[1:3] for _, group in groups]
    summary["mean_prob_ci_low"] = [low for low, _ in bounds]
    summary["mean_prob_ci_high"] = [high for _, high in bounds]
    return summary


def fewest_units(df: pd.DataFrame, fraction: float = 0.8) -> pd.DataFrame:
    """Per method and ablation: the smallest ``n`` (and units kept) whose mean target probability
    reaches ``fraction`` of the unablated one (NaN when none does)."""
    summary = faithfulness_summary(df) if "fraction_of_full" not in df else df
    rows = []
    for (method, ablation), group in summary.groupby(["method", "ablation"], sort=False):
        hit = group[group["fraction_of_full"] >= fraction].sort_values("n")
        first = hit.iloc[0] if len(hit) else None
        rows.append({"method": method, "ablation": ablation, "fraction": fraction,
                     "n": None if first is None else int(first["n"]),
                     "units_kept": None if first is None else int(first["units_kept"]),
                     "mean_prob": None if first is None else float(first["mean_prob"])})
    return pd.DataFrame(rows)


def _check_ns(ns) -> List[int]:
    if isinstance(ns, (str, bytes)) or not isinstance(ns, Sequence) or not ns or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in ns):
        raise ValueError(f"ns must be a non-empty list of non-negative ints; got {ns!r}")
    return sorted(set(ns))
