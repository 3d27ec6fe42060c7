"""The paper's experiments as a harness: manipulation, JAS comparison, pruning.

Every function takes a model, images, labels and paths (one ``(N, L, k)`` tensor
or :class:`~captum_paths.search.PathResult` per method, aligned with the images)
and returns a tidy :class:`pandas.DataFrame`, one row per observation, which
:func:`save_table` writes as CSV and JSON and ``captum_paths.plots`` draws.

- :func:`probability_deviation`: remove / enhance every path neuron at once;
  ``prob_deviation = p_after(y) / p_before(y) - 1`` per image, with top-1
  correctness before and after. :func:`summarize_deviation` aggregates it per
  method (or per method and class), including the accuracy deviation
  ``accuracy_after - accuracy_before``.
- :func:`jas_comparison`: the JAS of every method's paths, gate (exact removal
  effect) and paper (the released scripts' score) semantics.
- :func:`class_consensus` and :func:`pruning_study`: class consensus paths from
  top-k paths of some images of a class, and the pruned model evaluated on the
  *other* images of that class.

Everything runs batched on the model's device under ``torch.no_grad`` (except
the JAS integrals), and every random choice is seeded.

What a removed (or pruned) unit becomes is ``layer_baselines=``
(:mod:`captum_paths.attribution.layer_baselines`): zero by default, the unit's mean over
reference images (``MeanBaseline``), its activation on counterfactual images aligned with
``images`` (``CounterfactualBaseline``), or given values. Every table records it in its
``ablation`` column (``"zero"``, ``"mean"``, ``"counterfactual"``, ``"given"``) and in
``df.attrs["layer_baselines"]`` (:meth:`LayerBaseline.settings`, e.g. ``{"ablation": "mean",
"reference_images": 64}``).
"""
from __future__ import annotations

import logging
import os
from numbers import Real
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
from torch import nn

from captum_paths.attribution.joint_integrated_gradients import (MODES, JointNeuronIntegratedGradients,
                                                                 check_paper_baseline)
from captum_paths.attribution.layer_baselines import (CounterfactualBaseline, MeanBaseline,
                                                      SiteBaseline, ZeroBaseline, as_layer_baselines)
from captum_paths.attribution.output import select_rows
from captum_paths.analysis.consensus import consensus_path
from captum_paths.evaluation.interventions import _check_scale, _model_forward, prune_neurons, scale_neurons
from captum_paths.model.loading import as_logits_model
from captum_paths.records import write_text_atomic
from captum_paths.search.registry import create_path_method
from captum_paths.model.sites import NeuronSites, resolve_sites

__all__ = [
    "DEVIATION_COLUMNS",
    "JAS_COLUMNS",
    "PRUNING_COLUMNS",
    "SUMMARY_COLUMNS",
    "probability_deviation",
    "summarize_deviation",
    "jas_comparison",
    "class_consensus",
    "pruning_study",
    "split_by_class",
    "save_table",
]

logger = logging.getLogger(__name__)

DEVIATION_COLUMNS = (
    "image", "label", "method", "operation", "p_before", "p_after", "prob_deviation",
    "correct_before", "correct_after", "ablation",
)
#: the columns :func:`summarize_deviation` reads (besides its ``by`` columns)
_SUMMARIZED = ("operation", "p_before", "p_after", "prob_deviation", "correct_before", "correct_after")
SUMMARY_COLUMNS = (
    "operation", "mean_prob_deviation", "median_prob_deviation", "accuracy_before",
    "accuracy_after", "accuracy_deviation", "images",
)  # after the ``by`` columns
JAS_COLUMNS = ("image", "label", "method", "mode", "jas", "ablation")
PRUNING_COLUMNS = (
    "k", "p", "depth", "label", "images", "mean_prob", "accuracy", "mean_prob_unpruned",
    "accuracy_unpruned", "ablation",
)

PathsLike = Union[torch.Tensor, Any]  # (N, L, k) tensor or PathResult


# ----------------------------------------------------------------------------- helpers
def _device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


def _check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    return batch_size


def _check_data(images: Any, labels: Any) -> Tuple[torch.Tensor, torch.Tensor]:
    if not isinstance(images, torch.Tensor) or images.dim() < 2 or images.shape[0] == 0:
        shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"images must be a non-empty (N, C, H, W) tensor; got {shape}")
    labels = torch.as_tensor(labels)
    if labels.is_floating_point() or labels.dtype == torch.bool or labels.dim() != 1:
        raise TypeError(f"labels must be a 1-D integer tensor; got dtype {labels.dtype}, shape {tuple(labels.shape)}")
    if labels.shape[0] != images.shape[0]:
        raise ValueError(f"labels hold {labels.shape[0]} entries but images hold {images.shape[0]}")
    return images, labels.long().cpu()


def _as_paths(name: str, paths: PathsLike, n: int, num_layers: int) -> torch.Tensor:
    tensor = getattr(paths, "paths", paths)
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(
            f"paths_by_method[{name!r}] must be a PathResult or an (N, L, k) index tensor; "
            f"got {type(paths).__name__}"
        )
    if tensor.is_floating_point() or tensor.dim() != 3 or tensor.shape[0] != n or tensor.shape[1] != num_layers:
        raise ValueError(
            f"paths_by_method[{name!r}] must be an integer tensor of shape (N, L, k) = ({n}, "
            f"{num_layers}, k), one path per image; got dtype {tensor.dtype}, shape {tuple(tensor.shape)}"
        )
    return tensor.long().cpu()


def _check_methods(paths_by_method: Any) -> Mapping[str, PathsLike]:
    if not isinstance(paths_by_method, Mapping) or not paths_by_method:
        raise TypeError(
            "paths_by_method must be a non-empty dict {method name: PathResult or (N, L, k) tensor}; "
            f"got {type(paths_by_method).__name__}"
        )
    return paths_by_method


def _probabilities(
    forward: nn.Module, images: torch.Tensor, batch_size: int, device: torch.device,
    index: Optional[torch.Tensor] = None, context=None,
) -> torch.Tensor:
    """Softmax probabilities ``(N, classes)`` float64 on CPU, batched, under no_grad.

    ``context(start, stop)`` (optional) returns the context manager to run each
    batch in, e.g. an intervention with the batch's paths.
    """
    rows = torch.arange(images.shape[0]) if index is None else index
    out = []
    with torch.no_grad():
        for start in range(0, rows.numel(), batch_size):
            part = rows[start:start + batch_size]
            x = images[part].to(device)
            if context is None:
                logits = forward(x)
            else:
                with context(part):
                    logits = forward(x)
            out.append(logits.double().softmax(dim=1).cpu())
    return torch.cat(out)


def _sites(model: nn.Module, sites: Any) -> NeuronSites:
    """``sites`` as :class:`NeuronSites` (``None``: the model's; a module or a list of modules as
    Captum's layer arguments, see :meth:`NeuronSites.coerce`)."""
    return resolve_sites(model, sites)


class _StudyBaselines:
    """A study's ``layer_baselines`` (for its ``N`` images) as the baseline of any rows of them.

    Whatever needs forwards is computed here with the study's model: the reference means
    once, a single counterfactual once, per-image counterfactuals (one per image of the
    study, aligned with ``images``) for the rows asked. :meth:`rows` gives ``None`` (zero)
    or a :class:`SiteBaseline` that interventions, the joint integral and the path search
    all take.
    """

    def __init__(self, layer_baselines: Any, sites: NeuronSites, model: nn.Module, images: torch.Tensor) -> None:
        baseline = as_layer_baselines(layer_baselines)
        self.baseline, self.sites, self.images = baseline, sites, images
        self.name = baseline.name
        self.settings = baseline.settings()
        self.forward = _model_forward(model)
        self.count = n = images.shape[0]
        self.shared: Optional[SiteBaseline] = None
        self.per_image = False
        if isinstance(baseline, ZeroBaseline):
            return
        if isinstance(baseline, MeanBaseline):
            self.shared = SiteBaseline(baseline.means(sites, self.forward), name=baseline.name)
        elif isinstance(baseline, SiteBaseline):
            counts = sorted({v.shape[0] for v in baseline.values.values() if v.dim() == 3 and v.shape[0] > 1})
            if counts and counts != [n]:
                raise ValueError(
                    f"layer_baselines: SiteBaseline holds per-image values for {counts[0]} images but the study "
                    f"has {n} images: give one row per image (aligned with images) or values shared by every image"
                )
            self.per_image = bool(counts)
            self.shared = None if self.per_image else baseline
        elif isinstance(baseline, CounterfactualBaseline):
            m = int(baseline.counterfactual[0].shape[0])
            if m == 1:
                self.shared = SiteBaseline(self._record(baseline.counterfactual, baseline.args), name=baseline.name)
            elif m != n:
                raise ValueError(
                    f"layer_baselines: CounterfactualBaseline holds {m} counterfactual images for the {n} images of "
                    "the study: give one counterfactual per image (aligned with images) or one for all"
                )
            else:
                self.per_image = True
        else:  # any other LayerBaseline: resolved batch by batch from the images themselves
            self.per_image = True

    @property
    def is_zero(self) -> bool:
        return isinstance(self.baseline, ZeroBaseline)

    def _record(self, inputs: Tuple[torch.Tensor, ...], args: Tuple[Any, ...]) -> Dict[int, torch.Tensor]:
        with torch.no_grad(), self.sites.record() as acts:
            self.forward(*inputs, *args)
        return dict(acts)

    def rows(self, index: torch.Tensor) -> Optional[SiteBaseline]:
        """The baseline of the images ``index`` ``(rows,)`` (in that order); ``None`` for zero."""
        if not self.per_image:
            return self.shared
        baseline = self.baseline
        index = torch.as_tensor(index).long().reshape(-1)
        if isinstance(baseline, SiteBaseline):
            values = {l: v[index.to(v.device)] if v.dim() == 3 and v.shape[0] > 1 else v
                      for l, v in baseline.values.items()}
            return SiteBaseline(values, name=baseline.name)
        if isinstance(baseline, CounterfactualBaseline):
            inputs = tuple(x[index.to(x.device)] for x in baseline.counterfactual)
            return SiteBaseline(self._record(inputs, select_rows(baseline.args, index, self.count)),
                                name=baseline.name)
        inputs = (self.images[index],)
        clean = self._record(inputs, ())
        values = baseline.resolve(self.sites, self.forward, inputs, (), clean)
        return None if values.is_zero else SiteBaseline(values.values, name=baseline.name)


# ---------------------------------------------------------------------- manipulation
def probability_deviation(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    paths_by_method: Mapping[str, PathsLike],
    factor: float = 2.0,
    sites: Optional[NeuronSites] = None,
    batch_size: int = 64,
    layer_baselines: Any = None,
) -> pd.DataFrame:
    """Remove (×0) and enhance (×``factor``) every path neuron at once; per image deviation.

    Removal sets the path's units to their baseline ``b`` (zero by default); enhancement is
    ``b + factor * (a - b)`` (:func:`~captum_paths.evaluation.interventions.scale_neurons`),
    ``factor * a`` for the zero baseline. With ``layer_baselines`` the removal is exactly what
    the joint score measures: ``p_before - p_after`` of the ``"remove"`` rows is the gate JAS
    of :class:`~captum_paths.attribution.JointNeuronIntegratedGradients` with the same
    ``layer_baselines`` (``F`` the label's probability).

    Args:
        model (nn.Module): Model returning logits (HF models are wrapped).
        images (Tensor): ``(N, C, H, W)`` preprocessed images.
        labels (Tensor): ``(N,)`` ground-truth classes; ``p`` is the softmax
            probability of the label.
        paths_by_method (dict): ``{method: PathResult or (N, L, k) tensor}``, row
            ``i`` the path of image ``i``.
        factor (float, optional): Enhancement factor. Default: 2.0.
        sites (NeuronSites, optional): Default ``NeuronSites.from_model(model)``.
        batch_size (int, optional): Images per forward. Default: 64.
        layer_baselines (optional): What a removed unit becomes: ``None`` or 0 (zero, the
            default); ``MeanBaseline(reference_images)`` (reference ``(n, C, H, W)``; the
            means ``{layer: (positions, units)}`` are computed once); ``CounterfactualBaseline(
            counterfactual_images)`` with one counterfactual per image ``(N, C, H, W)``, aligned
            with ``images``, or one for all ``(1, C, H, W)``; per-site values ``{layer: tensor}``
            (each ``(units,)``, ``(positions, units)``, or ``(N, positions, units)`` aligned with
            ``images``); any other
            :class:`~captum_paths.attribution.layer_baselines.LayerBaseline` (resolved batch by
            batch). See :mod:`captum_paths.attribution.layer_baselines`.

    Returns:
        DataFrame with columns :data:`DEVIATION_COLUMNS`: ``image`` (row index in
        ``images``), ``label``, ``method``, ``operation`` (``"remove"`` or
        ``"enhance"``), ``p_before``, ``p_after``, ``prob_deviation`` (``p_after /
        p_before - 1``), ``correct_before``, ``correct_after`` (top-1 equals the
        label), ``ablation`` (the baseline's name: ``"zero"``, ``"mean"``, ...). Rows
        ordered by method (as given), operation, image. ``df.attrs["layer_baselines"]``
        holds the baseline's settings (``{"ablation": "mean", "reference_images": n}``).

    Example::

        >>> df = probability_deviation(model, images, labels, {"neuron-path": result},
        ...                            layer_baselines=MeanBaseline(reference_images))
        >>> removed = df[df.operation == "remove"]
        >>> jas = removed.p_before - removed.p_after          # the JAS under mean ablation
    """
    images, labels = _check_data(images, labels)
    batch_size = _check_batch_size(batch_size)
    paths_by_method = _check_methods(paths_by_method)
    sites = _sites(model, sites)
    forward, device, n = as_logits_model(model), _device(model), images.shape[0]
    operations = (("remove", 0.0), ("enhance", _check_scale(factor, "factor")))
    table = {name: _as_paths(name, paths, n, sites.num_layers) for name, paths in paths_by_method.items()}
    base = _StudyBaselines(layer_baselines, sites, model, images)

    before = _probabilities(forward, images, batch_size, device)
    rows = torch.arange(n)
    p_before = before[rows, labels]
    correct_before = before.argmax(dim=1) == labels
    frames = []
    for name, paths in table.items():
        for operation, scale in operations:
            after = _probabilities(
                forward, images, batch_size, device,
                context=lambda part, paths=paths, scale=scale: scale_neurons(
                    sites, paths[part], scale, layer_baselines=base.rows(part)),
            )
            p_after = after[rows, labels]
            frames.append(pd.DataFrame({
                "image": rows.numpy(),
                "label": labels.numpy(),
                "method": name,
                "operation": operation,
                "p_before": p_before.numpy(),
                "p_after": p_after.numpy(),
                "prob_deviation": (p_after / p_before - 1.0).numpy(),
                "correct_before": correct_before.numpy(),
                "correct_after": (after.argmax(dim=1) == labels).numpy(),
                "ablation": base.name,
            }))
    df = pd.concat(frames, ignore_index=True)[list(DEVIATION_COLUMNS)]
    df.attrs["layer_baselines"] = base.settings
    return df


def summarize_deviation(df: pd.DataFrame, by: Sequence[str] = ("method",)) -> pd.DataFrame:
    """Aggregate :func:`probability_deviation` per group and operation.

    Args:
        df (DataFrame): Output of :func:`probability_deviation`.
        by (sequence of str, optional): Grouping columns, e.g. ``("method",)`` or
            ``("method", "label")`` for per-class results. Default: ``("method",)``.

    Returns:
        DataFrame with the ``by`` columns, then :data:`SUMMARY_COLUMNS`:
        ``operation``, ``mean_prob_deviation``, ``median_prob_deviation``,
        ``accuracy_before``, ``accuracy_after``, ``accuracy_deviation`` (after minus
        before) and ``images``. Groups keep their order of appearance.
    """
    if isinstance(by, str):
        by = (by,)
    by = list(by)
    missing = [c for c in by + list(_SUMMARIZED) if c not in df.columns]
    if missing:
        raise ValueError(
            f"df lacks the columns {missing}; pass the output of probability_deviation "
            f"(columns {list(DEVIATION_COLUMNS)})"
        )
    if "operation" in by:
        raise ValueError("by must not contain 'operation': results are always split by operation")
    grouped = df.groupby(by + ["operation"], sort=False)
    out = grouped.agg(
        mean_prob_deviation=("prob_deviation", "mean"),
        median_prob_deviation=("prob_deviation", "median"),
        accuracy_before=("correct_before", "mean"),
        accuracy_after=("correct_after", "mean"),
        images=("prob_deviation", "size"),
    ).reset_index()
    out["accuracy_deviation"] = out["accuracy_after"] - out["accuracy_before"]
    return out[by + list(SUMMARY_COLUMNS)]


# ---------------------------------------------------------------------- JAS comparison
def jas_comparison(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    paths_by_method: Mapping[str, PathsLike],
    modes: Sequence[str] = MODES,
    n_steps: Optional[int] = None,
    sites: Optional[NeuronSites] = None,
    batch_size: int = 64,
    internal_batch_size: Optional[int] = None,
    layer_baselines: Any = None,
) -> pd.DataFrame:
    """The JAS of every method's path on the same images, for each semantics.

    Args:
        model, images, labels, paths_by_method, sites, batch_size: as in
            :func:`probability_deviation`; ``F`` is the softmax probability of the label.
        modes (sequence of str, optional): ``"gate"`` (joint gates: the JAS is
            exactly ``F(x) - F(x; path removed)``, one forward per batch, no
            integral) and/or ``"paper"`` (the released scripts' score, an
            integral). Default: both.
        n_steps (int, optional): Quadrature steps of the paper score. Default:
            20 left Riemann steps, as the released scripts.
        internal_batch_size (int, optional): Rows per forward/backward pass of the
            paper integral. Default: ``None``, ``batch_size × n_steps`` rows at once.
        layer_baselines (optional): What a removed unit becomes, as in
            :func:`probability_deviation` (``None``: zero; ``MeanBaseline(reference_images)``;
            ``CounterfactualBaseline(images_aligned)``; ``{layer: tensor}``): the gate JAS is
            ``F(x) - F(x; path set to its baseline)``. The paper score is defined against zero
            only: with another baseline ``modes`` must be ``("gate",)`` (``ValueError``
            otherwise).

    Returns:
        DataFrame with columns :data:`JAS_COLUMNS`: ``image``, ``label``, ``method``,
        ``mode``, ``jas``, ``ablation`` (the baseline's name); rows ordered by method, mode,
        image. ``df.attrs["layer_baselines"]`` holds the baseline's settings.

    Example::

        >>> jas = jas_comparison(model, images, labels, {"neuron-path": result}, modes=("gate",),
        ...                      layer_baselines=MeanBaseline(reference_images))
    """
    images, labels = _check_data(images, labels)
    batch_size = _check_batch_size(batch_size)
    paths_by_method = _check_methods(paths_by_method)
    if isinstance(modes, str):
        modes = (modes,)
    bad = [m for m in modes if m not in MODES]
    if bad or not modes:
        raise ValueError(f"modes must be a non-empty subset of {MODES}; got {list(modes)!r}")
    sites = _sites(model, sites)
    device, n = _device(model), images.shape[0]
    table = {name: _as_paths(name, paths, n, sites.num_layers) for name, paths in paths_by_method.items()}
    if "paper" in modes:
        try:
            check_paper_baseline(as_layer_baselines(layer_baselines))
        except ValueError as error:
            raise ValueError(f"modes: {error}; e.g. jas_comparison(..., modes=('gate',))") from None
    base = _StudyBaselines(layer_baselines, sites, model, images)
    jig = JointNeuronIntegratedGradients(model, sites=sites)
    forward = as_logits_model(model)
    rows = torch.arange(n)
    p_clean = _probabilities(forward, images, batch_size, device)[rows, labels] if "gate" in modes else None
    frames = []
    for name, paths in table.items():
        for mode in modes:
            values = []
            if mode == "gate":
                removed = _probabilities(forward, images, batch_size, device,
                                         context=lambda part, paths=paths: scale_neurons(
                                             sites, paths[part], 0.0, layer_baselines=base.rows(part)))
                values.append(p_clean - removed[rows, labels])
            for start in range(0, n if mode == "paper" else 0, batch_size):
                stop = min(start + batch_size, n)
                _, jas = jig.attribute(
                    images[start:stop].to(device), paths[start:stop], target=labels[start:stop].to(device),
                    n_steps=n_steps, mode=mode, internal_batch_size=internal_batch_size, return_jas=True,
                )
                values.append(jas.detach().double().cpu())
            frames.append(pd.DataFrame({
                "image": np.arange(n), "label": labels.numpy(), "method": name, "mode": mode,
                "jas": torch.cat(values).numpy(), "ablation": base.name,
            }))
    df = pd.concat(frames, ignore_index=True)[list(JAS_COLUMNS)]
    df.attrs["layer_baselines"] = base.settings
    return df


# --------------------------------------------------------------------------- pruning
def class_consensus(
    paths: PathsLike, labels: torch.Tensor, k: Optional[int] = None
) -> Dict[int, torch.Tensor]:
    """Class consensus paths (:func:`captum_paths.analysis.consensus.consensus_path`): per class,
    layer and rank, the mode of the images' rank-``r`` neurons, kept distinct within a
    layer (the same consensus as :func:`captum_paths.analysis.consensus_paths`).

    Args:
        paths: ``(N, L, K)`` top-``K`` paths (best first) or a PathResult.
        labels (Tensor): ``(N,)`` class of each path.
        k (int, optional): Use the first ``k <= K`` ranks. Default: ``K``.

    Returns:
        dict: ``{label: (L, k) LongTensor}`` for every class present in ``labels``.
    """
    tensor = getattr(paths, "paths", paths)
    if not isinstance(tensor, torch.Tensor) or tensor.is_floating_point() or tensor.dim() != 3:
        raise TypeError(
            "paths must be an (N, L, K) integer index tensor or a PathResult; got "
            f"{tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else type(tensor).__name__}"
        )
    labels = torch.as_tensor(labels).reshape(-1).long().cpu()
    if labels.numel() != tensor.shape[0]:
        raise ValueError(f"labels hold {labels.numel()} entries but paths hold {tensor.shape[0]}")
    K = tensor.shape[2]
    k = K if k is None else k
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= K:
        raise ValueError(f"k must be an int in 1..{K} (the paths hold {K} neurons per layer); got {k!r}")
    tensor = tensor[..., :k].long().cpu()
    out: Dict[int, torch.Tensor] = {}
    for label in sorted(set(labels.tolist())):
        members = tensor[labels == label].numpy()  # (n_c, L, k)
        out[int(label)] = torch.tensor(consensus_path(members, k), dtype=torch.long)
    return out


def split_by_class(
    labels: torch.Tensor, consensus_fraction: float = 0.5, seed: int = 0
) -> Dict[int, Dict[str, List[int]]]:
    """Split each class's images into consensus and evaluation images, never overlapping.

    A class with ``n`` images gets ``round(n * consensus_fraction)`` consensus
    images, clipped to ``1 .. n-1``; the permutation is drawn from
    ``numpy.random.default_rng([seed, label])``, so a class's split does not depend on
    the other classes. Classes with fewer than 2 images are left out (with a warning).

    Returns:
        ``{label: {"consensus": [image indices], "evaluation": [image indices]}}``,
        each list sorted.
    """
    if isinstance(consensus_fraction, bool) or not isinstance(consensus_fraction, Real) or not (
        0.0 < float(consensus_fraction) < 1.0
    ):
        raise ValueError(f"consensus_fraction must be a number in (0, 1); got {consensus_fraction!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int; got {seed!r}")
    labels = torch.as_tensor(labels).reshape(-1).long().cpu()
    split: Dict[int, Dict[str, List[int]]] = {}
    for label in sorted(set(labels.tolist())):
        members = np.flatnonzero(labels.numpy() == label)
        n = members.size
        if n < 2:
            logger.warning("class %d has %d image(s): too few to split, left out of the pruning study", label, n)
            continue
        n_consensus = min(max(int(round(n * float(consensus_fraction))), 1), n - 1)
        order = np.random.default_rng([seed, int(label)]).permutation(members)
        consensus, evaluation = sorted(order[:n_consensus].tolist()), sorted(order[n_consensus:].tolist())
        if set(consensus) & set(evaluation):
            raise AssertionError(f"class {label}: consensus and evaluation images overlap")
        split[int(label)] = {"consensus": consensus, "evaluation": evaluation}
    return split


def pruning_study(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    ks: Sequence[int] = (1, 3, 5),
    ps: Sequence[float] = (0.25, 0.5, 0.75, 1.0),
    depths: Optional[Sequence[int]] = None,
    consensus_fraction: float = 0.5,
    method: str = "neuron-path",
    seed: int = 0,
    n_steps: Optional[int] = None,
    sites: Optional[NeuronSites] = None,
    batch_size: int = 64,
    layer_baselines: Any = None,
) -> pd.DataFrame:
    """Keep a class consensus path, prune the rest, evaluate on other images of the class.

    Per class, the images are split (:func:`split_by_class`) into consensus images
    and evaluation images that never overlap. Top-``max(ks)`` paths of the
    consensus images (``method``, gate mode, target = label) give the class
    consensus of each ``k`` (:func:`class_consensus` on the first ``k`` ranks).
    On the evaluation images of the class, every non-consensus neuron of the
    selected tokens is zeroed with probability ``p`` in the first ``depth`` layers
    (:func:`~captum_paths.evaluation.interventions.prune_neurons`, seeded with ``seed`` for
    every cell: common random numbers, so a larger ``p`` zeroes a superset).

    Args:
        model, images, labels, sites, batch_size: as in :func:`probability_deviation`.
        ks (sequence of int, optional): Consensus neurons kept per layer. Default: (1, 3, 5).
        ps (sequence of float, optional): Pruning probabilities in [0, 1].
            Default: (0.25, 0.5, 0.75, 1.0).
        depths (sequence of int, optional): Numbers of pruned layers (from the
            first). Default: ``(L // 2, L)``.
        consensus_fraction (float, optional): Share of each class's images used to
            build the consensus. Default: 0.5.
        method (str, optional): Registered path method. Default: ``"neuron-path"``.
        seed (int, optional): Seed of the split and of the pruning masks. Default: 0.
        n_steps (int, optional): Quadrature steps of the path search.
        layer_baselines (optional): What a removed unit becomes, in the path search of the
            consensus images and for every pruned unit of the evaluation images, as in
            :func:`probability_deviation`: ``None`` (zero), ``MeanBaseline(reference_images)``
            (means ``{layer: (positions, units)}``), ``CounterfactualBaseline(images_aligned)``
            ``(N, C, H, W)`` or ``(1, C, H, W)``, or ``{layer: tensor}``. Default: ``None``.

    Returns:
        DataFrame with columns :data:`PRUNING_COLUMNS`: ``k``, ``p``, ``depth``,
        ``label``, ``images`` (evaluation images), ``mean_prob`` (mean softmax
        probability of the label), ``accuracy`` (top-1), ``mean_prob_unpruned``,
        ``accuracy_unpruned``, ``ablation`` (the baseline's name). ``df.attrs["split"]`` holds the split
        (``{label: {"consensus": [...], "evaluation": [...]}}``),
        ``df.attrs["consensus"]`` the consensus paths (``{k: {label: L x k list}}``) and
        ``df.attrs["layer_baselines"]`` the baseline's settings.

    Example::

        >>> df = pruning_study(model, images, labels, ks=(3,), ps=(1.0,),
        ...                    layer_baselines=MeanBaseline(reference_images))
        >>> df[["k", "depth", "label", "mean_prob", "ablation"]]     # every pruned unit at its mean
    """
    images, labels = _check_data(images, labels)
    batch_size = _check_batch_size(batch_size)
    sites = _sites(model, sites)
    L = sites.num_layers
    width = min(sites.widths) if sites.widths is not None else None
    ks = _check_ints("ks", ks, 1, width)
    depths = _check_ints("depths", sorted({L // 2, L} - {0}) if depths is None else depths, 1, L)
    if isinstance(ps, (str, bytes)) or not isinstance(ps, Sequence) or not ps or not all(
        isinstance(p, Real) and not isinstance(p, bool) and 0.0 <= float(p) <= 1.0 for p in ps
    ):
        raise ValueError(f"ps must be a non-empty list of probabilities in [0, 1]; got {ps!r}")
    forward, device = as_logits_model(model), _device(model)
    base = _StudyBaselines(layer_baselines, sites, model, images)

    split = split_by_class(labels, consensus_fraction, seed)
    if not split:
        raise ValueError("no class has at least 2 images: nothing to split into consensus and evaluation images")
    consensus_idx = torch.tensor([i for s in split.values() for i in s["consensus"]], dtype=torch.long)
    evaluation_idx = torch.tensor([i for s in split.values() for i in s["evaluation"]], dtype=torch.long)
    if set(consensus_idx.tolist()) & set(evaluation_idx.tolist()):
        raise AssertionError("pruning_study: consensus and evaluation images overlap")

    search = create_path_method(method, model, sites=sites)
    found = []
    for start in range(0, consensus_idx.numel(), batch_size):
        part = consensus_idx[start:start + batch_size]
        result = search.attribute(
            images[part].to(device), target=labels[part].to(device), k=max(ks), n_steps=n_steps, mode="gate",
            **({} if base.is_zero else {"layer_baselines": base.rows(part)}),
        )
        found.append(result.paths.cpu())
    consensus_paths = torch.cat(found)
    consensus = {k: class_consensus(consensus_paths, labels[consensus_idx], k) for k in ks}

    unpruned = _probabilities(forward, images, batch_size, device, index=evaluation_idx)
    eval_labels = labels[evaluation_idx]
    p_unpruned = unpruned[torch.arange(evaluation_idx.numel()), eval_labels]
    correct_unpruned = unpruned.argmax(dim=1) == eval_labels

    rows = []
    for label, parts in split.items():
        index = torch.tensor(parts["evaluation"], dtype=torch.long)
        in_class = eval_labels == label
        base_prob = float(p_unpruned[in_class].mean())
        base_acc = float(correct_unpruned[in_class].double().mean())
        y = labels[index]
        for k in ks:
            keep = consensus[k][label]
            for depth in depths:
                for p in ps:
                    probs = _probabilities(
                        forward, images, batch_size, device, index=index,
                        context=lambda part, keep=keep, p=p, depth=depth: prune_neurons(
                            sites, keep, float(p), depth, seed=seed, layer_baselines=base.rows(part)
                        ),
                    )
                    rows.append({
                        "k": k, "p": float(p), "depth": depth, "label": label, "images": index.numel(),
                        "mean_prob": float(probs[torch.arange(index.numel()), y].mean()),
                        "accuracy": float((probs.argmax(dim=1) == y).double().mean()),
                        "mean_prob_unpruned": base_prob,
                        "accuracy_unpruned": base_acc,
                        "ablation": base.name,
                    })
    df = pd.DataFrame(rows, columns=list(PRUNING_COLUMNS))
    df.attrs["split"] = split
    df.attrs["consensus"] = {k: {label: c.tolist() for label, c in by_label.items()} for k, by_label in consensus.items()}
    df.attrs["method"] = method
    df.attrs["seed"] = seed
    df.attrs["layer_baselines"] = base.settings
    return df


def _check_ints(name: str, values: Any, low: int, high: Optional[int]) -> List[int]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
        raise ValueError(f"{name} must be a non-empty list of ints; got {values!r}")
    allowed = f"{low}..{high}" if high is not None else f">= {low}"
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or v < low or (high is not None and v > high):
            raise ValueError(f"{name} must hold ints in {allowed}; got {v!r} in {list(values)!r}")
    return list(dict.fromkeys(int(v) for v in values))


# ------------------------------------------------------------------------------ I/O
def save_table(df: pd.DataFrame, stem: Union[str, os.PathLike]) -> Tuple[Path, Path]:
    """Write ``stem.csv`` and ``stem.json`` (records orient), each atomically.

    Returns:
        ``(csv_path, json_path)``.
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"df must be a pandas DataFrame; got {type(df).__name__}")
    stem = Path(stem)
    csv_path = stem.with_name(stem.name + ".csv")
    json_path = stem.with_name(stem.name + ".json")
    write_text_atomic(csv_path, df.to_csv(index=False))
    write_text_atomic(json_path, df.to_json(orient="records", indent=2) + "\n")
    return csv_path, json_path
