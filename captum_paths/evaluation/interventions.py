"""Interventions on units (FFN neurons, attention heads): remove, enhance, rescale and prune.

See "Evaluation" in docs/method.md.

Every intervention is a context manager built on :meth:`NeuronSites.edit`, so
it changes the model only inside its ``with`` block and its hooks are removed on
exit, even when the forward raises. Only the activation at the sites' selected
tokens (the CLS token by default) is changed; other tokens pass unchanged and
everything downstream is recomputed. With head sites (or mixed sites) of
:class:`~captum_paths.model.sites.NeuronSites` a unit ``(layer, h)`` is head ``h``: all its
channels are scaled, removed or pruned together.

- :func:`scale_neurons` multiplies a neuron set by a factor (0 removes, 2
  enhances); :func:`remove_neurons` and :func:`enhance_neurons` name the two
  manipulations of the paper.
- :func:`prune_neurons` keeps a set per layer and zeroes every other neuron
  with probability ``p`` in the first ``depth`` layers, with one seeded
  Bernoulli draw per context shared by every image.

What a removed unit becomes is its neuron baseline ``b`` (``layer_baselines=``,
:mod:`captum_paths.attribution.layer_baselines`): 0 by default, or its mean over
reference images, its activation on a counterfactual image, or given values.
Scaling is the gate of :class:`~captum_paths.attribution.JointNeuronIntegratedGradients`
with ``g = scale``: ``a' = scale * a + (1 - scale) * b``, so ``scale = 0`` is exactly
``b`` (removal), ``scale = 1`` exactly ``a``, and ``scale = 2`` doubles the unit's
departure from its baseline (``b + 2 (a - b)``; ``2 a`` for the zero baseline). A
baseline that needs forwards (the reference means, the counterfactual activations) is
computed when the ``with`` block is entered, with the sites' model, before any hook is
installed (entered inside another intervention, that forward sees the outer one: give the
values, e.g. ``SiteBaseline(mean_baseline.means(sites, model))``, or enter it first; a
``MeanBaseline`` keeps the means it computed); inside the block every forward's activation
is checked against it.

Examples::

    >>> sites = NeuronSites.from_model(model)
    >>> with remove_neurons(sites, result):          # per-example paths (batch, L, k)
    ...     probs_removed = model(images).softmax(-1)
    >>> with enhance_neurons(sites, [(0, 12), (3, 101)], factor=2.0):   # shared set
    ...     logits = model(images)
    >>> with prune_neurons(sites, keep=consensus, p=0.5, depth=6, seed=0) as zeroed:
    ...     logits = model(images)                   # zeroed[l]: (d_ff,) bool mask
    >>> with remove_neurons(sites, result, layer_baselines=MeanBaseline(reference_images)):
    ...     probs_mean_ablated = model(images).softmax(-1)
"""
from __future__ import annotations

import contextlib
import math
from numbers import Real
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from captum_paths.attribution.layer_baselines import (CounterfactualBaseline, MeanBaseline,
                                                      SiteBaseline, SiteValues, ZeroBaseline,
                                                      as_layer_baselines)
from captum_paths.attribution.neuron_sets import (NeuronSet, canonical_neurons, layer_widths, looks_like_pair,
                                                  parse_neurons)
from captum_paths.model.outputs import as_logits_model
from captum_paths.model.sites import NeuronSites

__all__ = ["scale_neurons", "remove_neurons", "enhance_neurons", "prune_neurons"]

Keep = Union[torch.Tensor, Sequence[Sequence[int]], Mapping[int, Sequence[int]]]


def _as_sites(sites: Union[NeuronSites, nn.Module]) -> NeuronSites:
    """``sites`` itself, or the sites discovered in a model (:meth:`NeuronSites.coerce`, which also finds
    the backbone inside a wrapper). Modules as sites need their model: ``NeuronSites.coerce(model, modules)``."""
    if isinstance(sites, NeuronSites):
        return sites
    if isinstance(sites, nn.Module):
        return NeuronSites.coerce(sites)
    hint = ""
    if isinstance(sites, (list, tuple)) and sites and all(isinstance(m, nn.Module) for m in sites):
        hint = "; for modules as sites pass NeuronSites.coerce(model, modules) (their model names them and their tokens)"
    raise TypeError(f"sites must be a NeuronSites or an nn.Module (the model); got {type(sites).__name__}{hint}")


def _check_scale(scale: Any, argument: str = "scale") -> float:
    if isinstance(scale, bool) or not isinstance(scale, Real):
        raise TypeError(f"{argument} must be a real number (0 removes, 2 enhances); got {scale!r}")
    scale = float(scale)
    if not math.isfinite(scale):
        raise ValueError(f"{argument} must be finite; got {scale!r}")
    return scale


def _model_forward(model: nn.Module) -> Callable[..., Any]:
    """``model``'s logits forward, with tensor inputs moved to its device first."""
    forward = as_logits_model(model)
    param = next(model.parameters(), None)
    device = param.device if param is not None else None

    def run(*inputs: Any) -> Any:
        if device is not None:
            inputs = tuple(x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs)
        return forward(*inputs)
    return run


class _Removal:
    """What removed units become inside an intervention: ``layer_baselines`` prepared on
    entry of the ``with`` block and shaped, layer by layer, against the activation each
    forward produces.

    ``values`` maps a layer to its baseline in any form :class:`SiteBaseline` accepts
    (``(units,)``, ``(positions, units)``, ``(1, positions, units)`` or ``(count, positions,
    units)``, one row per image); a layer without an entry is zero. Per-image values
    need a batch of exactly ``count`` images inside the block.
    """

    def __init__(self, sites: NeuronSites, layer_baselines: Any) -> None:
        self.sites = sites
        self.values: Dict[int, torch.Tensor] = {}
        self.per_image: Optional[int] = None  # number of images the per-image values hold
        self.what: Optional[str] = None  # how the per-image values are named in errors
        if isinstance(layer_baselines, SiteValues):
            self.name = "given"
            self.values = dict(layer_baselines.values)
            if layer_baselines.per_image and self.values:
                self.per_image = int(next(iter(self.values.values())).shape[0])
            return
        baseline = as_layer_baselines(layer_baselines)
        self.name = baseline.name
        if isinstance(baseline, ZeroBaseline):
            return
        if isinstance(baseline, SiteBaseline):
            self.values = dict(baseline.values)
            counts = {v.shape[0] for v in self.values.values() if v.dim() == 3 and v.shape[0] > 1}
            if len(counts) > 1:
                raise ValueError(f"layer_baselines: the per-image values of the sites hold different numbers of "
                                 f"images {sorted(counts)}; give one row per image of the batch at every site")
            self.per_image = counts.pop() if counts else None
            return
        if isinstance(baseline, MeanBaseline):
            self.values = dict(baseline.means(sites, _model_forward(sites.model)))
            return
        if isinstance(baseline, CounterfactualBaseline):
            with torch.no_grad(), sites.record() as acts:
                _model_forward(sites.model)(*baseline.counterfactual, *baseline.args)
            self.values = dict(acts)
            count = int(baseline.counterfactual[0].shape[0])
            self.per_image = count if count > 1 else None
            self.what = f"CounterfactualBaseline holds {count} counterfactual images"
            return
        raise TypeError(
            f"layer_baselines: a {type(baseline).__name__} is resolved from the batch it explains, which an "
            "intervention does not see before its forward; resolve it for the batch yourself "
            "(baseline.resolve(sites, forward_func, inputs, args, clean) gives SiteValues) and pass that, or pass "
            "a SiteBaseline, MeanBaseline, CounterfactualBaseline or ZeroBaseline"
        )

    @property
    def is_zero(self) -> bool:
        return not self.values

    def value(self, layer: int, act: torch.Tensor) -> Optional[torch.Tensor]:
        """The baseline of ``layer`` broadcastable to its selected activation ``act``
        ``(batch, positions, units)``, in ``act``'s dtype and device; ``None`` for zero."""
        value = self.values.get(layer)
        if value is None:
            return None
        batch = act.shape[0]
        if self.per_image is not None and value.dim() == 3 and value.shape[0] > 1 and value.shape[0] != batch:
            what = self.what or f"the values of site {self.sites.names[layer]!r} hold {value.shape[0]} images"
            raise ValueError(
                f"layer_baselines: {what} (one per image) but the model ran a batch of {batch} images inside the "
                f"intervention: run exactly those {value.shape[0]} images, in their order, inside the with block, "
                "or give one baseline for every image"
            )
        return SiteValues.checked({layer: value}, {layer: act}, self.sites, batch).values[layer]


class _SetMasks:
    """Per-layer boolean masks ``(rows, d_ff)`` of a neuron set; ``rows`` is 1 for a
    set shared by every example, else the number of examples.

    When the sites do not know their width the set is parsed at the first forward.
    """

    def __init__(self, sites: NeuronSites, neurons: Any) -> None:
        neurons = canonical_neurons(neurons)  # one pair, numpy and (n, 2) arrays in the plain forms
        self.sites = sites
        self.neurons = neurons
        paths = getattr(neurons, "paths", None)
        source = paths if isinstance(paths, torch.Tensor) else neurons
        if isinstance(source, torch.Tensor):
            if source.dim() != 3:
                raise ValueError(
                    f"neurons: a path tensor must have shape (batch, L, k); got {tuple(source.shape)}"
                )
            self.rows: Optional[int] = source.shape[0]
            self.shared = False
        elif isinstance(source, Sequence) and not isinstance(source, (str, bytes)) and source and (
            looks_like_pair(source[0])
        ):
            self.rows, self.shared = 1, True
        elif isinstance(source, Sequence) and not isinstance(source, (str, bytes)) and source:
            self.rows, self.shared = len(source), False
        else:
            # let parse_neurons raise its message (wrong type or empty list)
            parse_neurons(neurons, 1, sites.num_layers, sites.widths or 1)
            raise TypeError(f"neurons: unsupported specification {type(neurons).__name__}")
        self._masks: Optional[Dict[int, torch.Tensor]] = None
        self._on_device: Dict[tuple, torch.Tensor] = {}
        if sites.widths is not None:
            self._build(sites.widths)

    def _build(self, width: Union[int, List[int]]) -> None:
        """Masks for the FFN width of every layer, or per-layer widths."""
        widths = layer_widths(width, self.sites.num_layers)
        nset: NeuronSet = parse_neurons(self.neurons, self.rows, self.sites.num_layers, widths)
        masks = {}
        for layer in sorted(set(nset.layers.unique().tolist())):
            masks[int(layer)] = nset.mask(int(layer), widths[int(layer)]).bool()
        self._masks = masks

    def layers(self) -> List[int]:
        if self._masks is not None:
            return list(self._masks)
        # width unknown: every layer may hold a neuron; layers without one pass unchanged
        return list(range(self.sites.num_layers))

    def get(self, layer: int, act: torch.Tensor) -> Optional[torch.Tensor]:
        """Mask for ``layer`` broadcastable to the selected activation ``act``."""
        if self._masks is None:
            self._build(act.shape[-1])
        mask = self._masks.get(layer)
        if mask is None:
            return None
        if mask.shape[-1] != act.shape[-1]:
            raise ValueError(
                f"layer {layer} has {act.shape[-1]} neurons but the neuron set was built for "
                f"{mask.shape[-1]}"
            )
        if not self.shared and act.shape[0] != mask.shape[0]:
            raise ValueError(
                f"neurons hold per-example sets for {mask.shape[0]} examples but the model was "
                f"called with a batch of {act.shape[0]}: call it with exactly those examples, or "
                "give one list of (layer, neuron) pairs shared by every example"
            )
        key = (layer, act.device)
        if key not in self._on_device:
            self._on_device[key] = mask.to(act.device)[:, None, :]  # (rows, 1, d_ff)
        return self._on_device[key]


@contextlib.contextmanager
def scale_neurons(
    sites: Union[NeuronSites, nn.Module], neurons: Any, scale: float, layer_baselines: Any = None
) -> Iterator[None]:
    """Scale a neuron set by ``scale`` towards its baseline at the selected tokens, inside a ``with`` block:
    ``a' = scale * a + (1 - scale) * b``.

    With the zero baseline (the default) this multiplies the set by ``scale``, bit for bit
    as before baselines existed.

    Args:
        sites (NeuronSites or nn.Module): Where the neurons live; a model is turned
            into ``NeuronSites.from_model(model)``.
        neurons: A list of ``(layer, neuron)`` pairs shared by every example (any
            batch size); a list of such lists, one per example; a ``(batch, L, k)``
            path tensor; or a :class:`~captum_paths.search.PathResult`. Per-example
            sets require the model to be called with exactly that batch
            (``ValueError`` otherwise).
        scale (float): ``0`` removes the neurons (they become their baseline), ``1``
            leaves them, ``2`` enhances them (``b + 2 (a - b)``), any finite float
            rescales them. Other neurons are left bit for bit unchanged.
        layer_baselines (optional): The baseline ``b`` (what a removed unit becomes):
            ``None`` or 0 (zero, the default);
            :class:`~captum_paths.attribution.layer_baselines.MeanBaseline` (reference
            images ``(n, C, H, W)``; the means ``{layer: (positions, units)}`` are computed
            on entry with ``sites.model``);
            :class:`~captum_paths.attribution.layer_baselines.CounterfactualBaseline`
            (counterfactual images ``(m, C, H, W)``, recorded on entry: with ``m > 1``
            every forward inside the block must run exactly ``m`` images, image ``i``
            patched from counterfactual ``i``; ``m = 1`` serves every image);
            per-site values (``{layer: tensor}``, a list, a
            :class:`~captum_paths.attribution.layer_baselines.SiteBaseline`: each
            ``(units,)``, ``(positions, units)`` or ``(batch, positions, units)``); or
            :class:`~captum_paths.attribution.layer_baselines.SiteValues` already resolved
            for the batch. Default: ``None``.

    Returns:
        A context manager (its hooks are removed when the block ends, even by an error).

    Raises:
        TypeError: ``layer_baselines`` of a form not listed (the message names the argument).
        ValueError: inside the block, a baseline whose positions, units or images do not
            match the forward's activation (the message names both).

    Examples::

        >>> with scale_neurons(sites, result.paths, 0.0):
        ...     logits = model(images)
        >>> with scale_neurons(sites, result.paths, 2.0, layer_baselines=MeanBaseline(reference)):
        ...     logits = model(images)              # each path unit: mean + 2 (a - mean)
    """
    sites = _as_sites(sites)
    scale = _check_scale(scale)
    masks = _SetMasks(sites, neurons)
    removal = _Removal(sites, layer_baselines)

    def editing(layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def fn(act: torch.Tensor) -> torch.Tensor:
            mask = masks.get(layer, act)
            if mask is None:
                return act
            base = removal.value(layer, act)
            if base is None:
                return torch.where(mask, act * scale, act)
            if scale == 0.0:  # exactly the baseline
                return torch.where(mask, base, act)
            return torch.where(mask, act * scale + base * (1.0 - scale), act)
        return fn

    with sites.edit({layer: editing(layer) for layer in masks.layers()}):
        yield


def remove_neurons(sites: Union[NeuronSites, nn.Module], neurons: Any, layer_baselines: Any = None
                   ) -> contextlib.AbstractContextManager:
    """Set a neuron set to its baseline (zero by default) at the selected tokens
    (:func:`scale_neurons` with 0).

    Args:
        sites (NeuronSites or nn.Module): Where the neurons live, as in :func:`scale_neurons`.
        neurons: The neuron set(s), as in :func:`scale_neurons`.
        layer_baselines (optional): What the removed units become, as in :func:`scale_neurons`:
            ``None`` (zero), a ``MeanBaseline(reference_images)``, a
            ``CounterfactualBaseline(images)`` (one counterfactual per image of the batch run
            inside the block, or one for all), or per-site values ``{layer: tensor}``, each
            ``(units,)``, ``(positions, units)`` or ``(batch, positions, units)``. Default: ``None``.

    Returns:
        A context manager: the model's forwards inside it see the neurons removed.

    Example::

        >>> with remove_neurons(sites, result, layer_baselines=MeanBaseline(reference_images)):
        ...     p_removed = model(images).softmax(-1)      # F(x; path set to its means)
    """
    return scale_neurons(sites, neurons, 0.0, layer_baselines=layer_baselines)


def enhance_neurons(
    sites: Union[NeuronSites, nn.Module], neurons: Any, factor: float = 2.0, layer_baselines: Any = None
) -> contextlib.AbstractContextManager:
    """Amplify a neuron set by ``factor`` away from its baseline at the selected tokens, inside a
    ``with`` block: ``a' = b + factor * (a - b)`` (``factor * a`` for the zero baseline).

    Args:
        sites (NeuronSites or nn.Module): Where the neurons live, as in :func:`scale_neurons`.
        neurons: The neuron set(s), as in :func:`scale_neurons`.
        factor (float, optional): The multiplier. Default: 2.
        layer_baselines (optional): The baseline ``b``, as in :func:`scale_neurons`.
            Default: ``None`` (zero: the neurons are multiplied by ``factor``).

    Returns:
        A context manager: the model's forwards inside it see the enhanced neurons.

    Example::

        >>> with enhance_neurons(sites, [(0, 12)], 2.0, layer_baselines={0: means_of_layer_0}):
        ...     logits = model(images)           # (0, 12): m + 2 (a - m), m = means_of_layer_0[..., 12]
    """
    return scale_neurons(sites, neurons, _check_scale(factor, "factor"), layer_baselines=layer_baselines)


def _parse_keep(keep: Keep, num_layers: int) -> Dict[int, List[int]]:
    """``{layer: sorted distinct indices}`` for every layer (empty where nothing is kept)."""
    out: Dict[int, List[int]] = {l: [] for l in range(num_layers)}
    if isinstance(keep, torch.Tensor):
        if keep.is_floating_point() or keep.is_complex() or keep.dtype == torch.bool:
            raise TypeError(f"keep: a tensor must hold integer neuron indices; got dtype {keep.dtype}")
        if keep.dim() != 2 or keep.shape[0] != num_layers:
            raise ValueError(
                f"keep: a tensor must have shape (L, k) = ({num_layers}, k) for a model with "
                f"{num_layers} layers; got {tuple(keep.shape)}"
            )
        for l in range(num_layers):
            out[l] = sorted(set(keep[l].tolist()))
        return out
    if isinstance(keep, Mapping):
        items = list(keep.items())
        for layer, _ in items:
            if isinstance(layer, bool) or not isinstance(layer, int) or not 0 <= layer < num_layers:
                raise ValueError(
                    f"keep: layer key {layer!r} is not a layer index 0..{num_layers - 1}"
                )
    elif isinstance(keep, Sequence) and not isinstance(keep, (str, bytes)):
        if len(keep) != num_layers:
            raise ValueError(
                f"keep: a list must hold one list of neuron indices per layer ({num_layers}); "
                f"got {len(keep)} entries. Use a dict {{layer: indices}} to name some layers only"
            )
        items = list(enumerate(keep))
    else:
        raise TypeError(
            "keep must be an (L, k) index tensor, a list of per-layer index lists or a dict "
            f"{{layer: indices}}; got {type(keep).__name__}"
        )
    for layer, units in items:
        if isinstance(units, torch.Tensor):
            units = units.reshape(-1).tolist()
        if not isinstance(units, Sequence) or isinstance(units, (str, bytes)) or not all(
            isinstance(u, int) and not isinstance(u, bool) for u in units
        ):
            raise TypeError(f"keep: layer {layer} must list int neuron indices; got {units!r}")
        out[layer] = sorted(set(units))
    return out


@contextlib.contextmanager
def prune_neurons(
    sites: Union[NeuronSites, nn.Module],
    keep: Keep,
    p: float,
    depth: int,
    seed: int = 0,
    layer_baselines: Any = None,
) -> Iterator[Dict[int, torch.Tensor]]:
    """Zero (or set to its baseline), with probability ``p``, every neuron not in ``keep`` in the
    first ``depth`` layers.

    The Bernoulli mask (per layer, per neuron) is drawn once per context from a
    ``torch.Generator`` seeded with ``seed``: the same call gives the same pruned
    model, and every image of every forward inside the block sees that model. The
    draws are uniforms ``u`` of shape ``(depth, d_ff)`` and a neuron is zeroed when
    ``u < p``, so for a fixed seed a larger ``p`` zeroes a superset of neurons.
    Only the selected tokens are changed.

    Args:
        sites (NeuronSites or nn.Module): Where the neurons live.
        keep: Neurons never zeroed, shared by the batch: an ``(L, k)`` index tensor
            (a class consensus path), a list of ``L`` per-layer index lists, or a dict
            ``{layer: indices}`` (missing layers keep nothing).
        p (float): Probability in ``[0, 1]`` that a non-kept neuron is zeroed.
        depth (int): Prune layers ``0 .. depth-1``; ``1 <= depth <= L``.
        seed (int, optional): Seed of the Bernoulli draw. Default: 0.
        layer_baselines (optional): What a pruned neuron becomes, as in :func:`scale_neurons`:
            ``None`` (zero), a ``MeanBaseline(reference_images)`` (its mean ``(positions,
            units)`` per site), a ``CounterfactualBaseline(images)``, or per-site values
            ``{layer: tensor}``. The mask does not depend on it. Default: ``None``.

    Yields:
        dict: ``{layer: (d_ff,) bool}``, True where the neuron is pruned (zeroed, or set to
        its baseline); filled on entry, or at the first forward when the sites do not know
        their width.

    Example::

        >>> with prune_neurons(sites, consensus, p=1.0, depth=6,
        ...                    layer_baselines=MeanBaseline(reference_images)) as pruned:
        ...     logits = model(images)      # every non-consensus neuron at its mean
    """
    sites = _as_sites(sites)
    L = sites.num_layers
    if isinstance(p, bool) or not isinstance(p, Real) or not 0.0 <= float(p) <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1]; got {p!r}")
    if isinstance(depth, bool) or not isinstance(depth, int) or not 1 <= depth <= L:
        raise ValueError(f"depth must be an int in 1..{L} (the model has {L} layers); got {depth!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int; got {seed!r}")
    p = float(p)
    kept = _parse_keep(keep, L)
    removal = _Removal(sites, layer_baselines)
    zeroed: Dict[int, torch.Tensor] = {}

    def draw(width: Union[int, List[int]]) -> None:
        widths = layer_widths(width, L)
        for layer, units in kept.items():
            bad = [u for u in units if not 0 <= u < widths[layer]]
            if bad:
                raise ValueError(
                    f"keep: neuron index {bad[0]} (layer {layer}) is out of range; sites have "
                    f"{widths[layer]} neurons (0..{widths[layer] - 1})"
                )
        generator = torch.Generator().manual_seed(seed)
        if len(set(widths)) == 1:
            u = list(torch.rand(depth, widths[0], generator=generator, dtype=torch.float64))
        else:  # hierarchical models: one draw per layer, in layer order
            u = [torch.rand(widths[layer], generator=generator, dtype=torch.float64) for layer in range(depth)]
        for layer in range(depth):
            drop = u[layer] < p
            if kept[layer]:
                drop[torch.tensor(kept[layer], dtype=torch.long)] = False
            zeroed[layer] = drop

    if sites.widths is not None:
        draw(sites.widths)
    on_device: Dict[tuple, torch.Tensor] = {}

    def editing(layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
        def fn(act: torch.Tensor) -> torch.Tensor:
            if not zeroed:
                draw(act.shape[-1])
            drop = zeroed[layer]
            if drop.shape[0] != act.shape[-1]:
                raise ValueError(
                    f"layer {layer} has {act.shape[-1]} neurons but the pruning mask was drawn "
                    f"for {drop.shape[0]}"
                )
            key = (layer, act.device)
            if key not in on_device:
                on_device[key] = drop.to(act.device)
            base = removal.value(layer, act)
            if base is None:
                return torch.where(on_device[key], torch.zeros((), dtype=act.dtype, device=act.device), act)
            return torch.where(on_device[key], base, act)
        return fn

    with sites.edit({layer: editing(layer) for layer in range(depth)}):
        yield zeroed
