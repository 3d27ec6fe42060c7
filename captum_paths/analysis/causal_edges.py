"""Causal edges: does a path's unit at one layer drive its units at later layers?

The edges of a :class:`~captum_paths.analysis.PathGraph` count co-occurrence: two units on the
same image's path. Whether the unit at layer ``l`` actually drives the path's unit at layer
``l + 1``, or the path is a row of independent units, is a causal question, answered here by
intervention. For a set of units of one image (its path, or any list of ``(layer, unit)``
pairs), the **effect** of a unit ``u`` on a later unit ``v`` of the set is

``e(u -> v) = a_v(x) - a_v(x; u replaced by its baseline)``

with every layer between them recomputed: ``u`` is set to its neuron baseline (zero, its mean
over reference images, its value on a counterfactual image: ``layer_baselines=``, as
everywhere in the library) at the site's selected tokens, and the model runs on. ``a_v`` is
``v``'s activation **summed over its site's selected positions**: the activation itself for a
unit read at the class token (the default of CLS-pooled models), the sum over the patch tokens
for ``tokens="patches"``, and for an attention head the sum over its ``head_dim`` channels at
the selected tokens (a linear read-out: a change that spreads over the channels with opposite
signs cancels there). The sum is the quantity a unit's removal takes away at those positions,
the same selection every joint score gates.

**Normalised** effects compare across layers: ``e(u -> v) / sigma_v``, where ``sigma_v`` is the
standard deviation of ``a_v`` over images: over the explained batch (``scale="batch"``, the
default: no extra forward, at least two images), over reference images (``scale=images``), or
given. A normalised effect of 1 moves ``v`` by one standard deviation of its natural
variation, whatever its layer's activation scale. A unit whose ``sigma_v`` is 0 (constant over
the images) has no normalised effect (NaN).

**Noise floor.** The same normalised effect for random unit pairs ``(u', v')`` of the same
layer pairs: per source layer, ``noise_sources`` random (image, unit) draws ``u'``, each with
``noise_targets`` random units ``v'`` of every later layer of the set, all seeded. The floor of
a layer pair is the ``noise_quantile`` (default 95%) quantile of ``|normalised effect|`` over its
random pairs; an edge is **above the floor** when its ``|normalised effect|`` exceeds it. Random
pairs sit above their own floor 5% of the time by construction; the random pairs' share
reported beside the edges' is held out (2-fold: each half against the other half's floor).

Units of the same layer never affect each other (an edit of one unit's column leaves the
site's other columns as they are) and earlier units are not downstream: those pairs are not
computed (zero in the tensors, absent from the tables). A unit that does not feed ``v`` (its
path to ``v`` cut, e.g. by a zero weight column) has no effect, up to the rounding that makes two
forwards of different batch sizes differ in the last bits (the clean pass runs the images, the
edited one the rows).

- :class:`CausalEdges`: the computation (``attribute``), batched: one forward per source unit
  per image, all images of a batch at once, in chunks of ``internal_batch_size`` rows.
- :class:`CausalEdgeResult`: the tensors ``(batch, n, n)``, the noise pairs and the floors,
  with tidy tables (:meth:`~CausalEdgeResult.to_frame`, :meth:`~CausalEdgeResult.summary`,
  :meth:`~CausalEdgeResult.by_layer`).
- :func:`class_causal_edges`: per class, the mean normalised effect of each consecutive path
  edge and the share of its images above the floor (what
  :meth:`PathGraph.with_causal_edges <captum_paths.analysis.PathGraph.with_causal_edges>` attaches
  to the path graph).
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import pandas as pd
import torch
from torch import nn

from captum_paths.model.sites import NeuronSites, resolve_sites

if TYPE_CHECKING:  # pragma: no cover
    from captum_paths.attribution.layer_baselines import SiteValues

__all__ = ["CausalEdges", "CausalEdgeResult", "class_causal_edges", "EDGE_COLUMNS", "CLASS_EDGE_COLUMNS"]

#: The columns of :meth:`CausalEdgeResult.to_frame`, in order (``label`` only when labels are given).
EDGE_COLUMNS = ("image", "label", "source_layer", "source_unit", "target_layer", "target_unit", "consecutive",
                "effect", "normalised_effect", "noise_floor", "above_floor")
_NOISE_COLUMNS = ("image", "source_layer", "source_unit", "target_layer", "target_unit", "effect",
                  "normalised_effect", "fold", "noise_floor", "above_floor")


@dataclass
class CausalEdgeResult:
    """What :meth:`CausalEdges.attribute` returns: the effect of every unit of each image's set on
    every later unit of the set, normalised, against a noise floor.

    Row ``s`` and column ``t`` of the ``(batch, n, n)`` tensors are units ``s`` and ``t`` of the
    image's set, in the order given (layer-major for a path: unit ``l * k + j`` is the ``j``-th
    unit of layer ``l``).

    Attributes:
        effects (Tensor): ``(batch, n, n)`` float64: ``a_t(x) - a_t(x; s replaced by its
            baseline)``; 0 where ``computed`` is False.
        normalised (Tensor): ``(batch, n, n)`` float64: ``effects / sigma_t``; 0 where not
            computed, NaN where ``sigma_t`` is 0.
        computed (Tensor): ``(batch, n, n)`` bool: the target's layer comes after the source's.
        consecutive (Tensor): ``(batch, n, n)`` bool: computed, and the target's layer is the
            next layer of the set after the source's (``l + 1`` on a path).
        layers (Tensor): ``(batch, n)`` the layer of each unit of the set.
        units (Tensor): ``(batch, n)`` its index within the layer's site.
        activations (Tensor): ``(batch, n)`` float64: ``a`` of each unit of the set on the clean image.
        scale (Tensor): ``(batch, n)`` float64: ``sigma`` of each unit of the set.
        floors (Tensor): ``(L, L)`` float64: the noise floor of each (source, target) layer pair;
            NaN for pairs without random pairs.
        noise (DataFrame): the random pairs: ``image, source_layer, source_unit, target_layer,
            target_unit, effect, normalised_effect, fold, noise_floor, above_floor`` (the floor
            of the other fold, so ``above_floor`` is held out).
        settings (dict): how it was computed (``ablation``, ``scale``, ``noise_sources``,
            ``noise_targets``, ``noise_quantile``, ``seed``).
        path_shape (tuple, optional): ``(L, k)`` when the sets came from a path tensor.
    """

    effects: torch.Tensor
    normalised: torch.Tensor
    computed: torch.Tensor
    consecutive: torch.Tensor
    layers: torch.Tensor
    units: torch.Tensor
    activations: torch.Tensor
    scale: torch.Tensor
    floors: torch.Tensor
    noise: pd.DataFrame
    settings: Dict[str, Any] = field(default_factory=dict)
    path_shape: Optional[Tuple[int, int]] = None

    @property
    def above_floor(self) -> torch.Tensor:
        """``(batch, n, n)`` bool: computed pairs whose ``|normalised effect|`` exceeds their layer
        pair's noise floor (False where the floor or the normalised effect is NaN)."""
        floor = self.floors.to(self.layers.device)[self.layers[:, :, None], self.layers[:, None, :]]
        return self.computed & (self.normalised.abs() > floor)

    def to_frame(self, image_ids: Optional[Sequence[Any]] = None, labels: Optional[Sequence[Any]] = None,
                 consecutive_only: bool = False) -> pd.DataFrame:
        """One row per computed (image, source unit, target unit) pair (:data:`EDGE_COLUMNS`).

        Args:
            image_ids (sequence, optional): one id per image of the batch for the ``image``
                column. Default: the image's index in the batch.
            labels (sequence, optional): one class per image: adds a ``label`` column
                (what :func:`class_causal_edges` groups by).
            consecutive_only (bool, optional): keep only edges to the next layer of the set
                (the path graph's edges). Default: ``False``.

        Returns:
            DataFrame sorted by image, source layer, source unit, target layer, target unit.
        """
        batch = self.layers.shape[0]
        image_ids = _per_image(image_ids, batch, "image_ids")
        labels = _per_image(labels, batch, "labels")
        mask = self.consecutive if consecutive_only else self.computed
        img, s, t = (a.cpu().numpy() for a in mask.nonzero(as_tuple=True))
        layers, units = self.layers.cpu().numpy(), self.units.cpu().numpy()
        floors = self.floors.cpu().numpy()
        normalised = self.normalised.cpu().numpy()[img, s, t]
        floor = floors[layers[img, s], layers[img, t]]
        with np.errstate(invalid="ignore"):
            above = np.abs(normalised) > floor
        frame = pd.DataFrame({
            "image": img if image_ids is None else [image_ids[i] for i in img],
            "label": None if labels is None else [labels[i] for i in img],
            "source_layer": layers[img, s], "source_unit": units[img, s],
            "target_layer": layers[img, t], "target_unit": units[img, t],
            "consecutive": self.consecutive.cpu().numpy()[img, s, t],
            "effect": self.effects.cpu().numpy()[img, s, t], "normalised_effect": normalised,
            "noise_floor": floor, "above_floor": above,
        }, columns=list(EDGE_COLUMNS))
        if labels is None:
            frame = frame.drop(columns="label")
        return frame

    def summary(self) -> pd.DataFrame:
        """Are the sets chains? One row: the consecutive edges (the path graph's edges) and the
        share of them above the noise floor, against the random pairs of the same layer pairs
        (held out: ~5% by construction).

        Returns:
            DataFrame with ``images``, ``edges``, ``share_above_floor``,
            ``mean_normalised_effect``, ``mean_abs_normalised_effect``,
            ``median_abs_normalised_effect``, ``random_pairs``, ``random_share_above_floor``,
            ``random_mean_abs_normalised_effect``, and ``whole_chains``: the share of images
            whose every consecutive edge is above the floor (of those with any).
        """
        edges = self.to_frame(consecutive_only=True)
        row = _share_row(edges, self.noise, images=int(self.layers.shape[0]))
        row["whole_chains"] = float(edges.groupby("image")["above_floor"].all().mean()) if len(edges) \
            else float("nan")
        return pd.DataFrame([row])

    def by_layer(self) -> pd.DataFrame:
        """:meth:`summary` per (source layer, target layer) pair of the consecutive edges, with the
        pair's ``noise_floor``.

        Returns:
            DataFrame with ``source_layer``, ``target_layer``, ``noise_floor`` and the columns of
            :meth:`summary` (``images`` left out).
        """
        edges = self.to_frame(consecutive_only=True)
        rows = []
        for (a, b), group in edges.groupby(["source_layer", "target_layer"], sort=True):
            noise = self.noise[(self.noise["source_layer"] == a) & (self.noise["target_layer"] == b)]
            row = {"source_layer": int(a), "target_layer": int(b), "noise_floor": float(self.floors[a, b])}
            row.update(_share_row(group, noise))
            row.pop("images")
            rows.append(row)
        columns = ["source_layer", "target_layer", "noise_floor"] + [c for c in _SHARE_COLUMNS if c != "images"]
        return pd.DataFrame(rows, columns=columns)


_SHARE_COLUMNS = ("images", "edges", "share_above_floor", "mean_normalised_effect", "mean_abs_normalised_effect",
                  "median_abs_normalised_effect", "random_pairs", "random_share_above_floor",
                  "random_mean_abs_normalised_effect")


def _share_row(edges: pd.DataFrame, noise: pd.DataFrame, images: Optional[int] = None) -> Dict[str, Any]:
    """The share above the floor of ``edges`` (finite normalised effects), and of the random pairs of
    the same layer pairs."""
    edges = edges[np.isfinite(edges["normalised_effect"].to_numpy(dtype=float))]
    pairs = set(zip(edges["source_layer"], edges["target_layer"]))
    keep = [p in pairs for p in zip(noise["source_layer"], noise["target_layer"])]
    noise = noise[np.asarray(keep, dtype=bool)] if len(noise) else noise
    noise = noise[np.isfinite(noise["normalised_effect"].to_numpy(dtype=float))]
    held_out = noise[np.isfinite(noise["noise_floor"].to_numpy(dtype=float))]
    absolute = edges["normalised_effect"].abs()
    return {
        "images": images if images is not None else int(edges["image"].nunique()),
        "edges": int(len(edges)),
        "share_above_floor": float(edges["above_floor"].mean()) if len(edges) else float("nan"),
        "mean_normalised_effect": float(edges["normalised_effect"].mean()) if len(edges) else float("nan"),
        "mean_abs_normalised_effect": float(absolute.mean()) if len(edges) else float("nan"),
        "median_abs_normalised_effect": float(absolute.median()) if len(edges) else float("nan"),
        "random_pairs": int(len(noise)),
        "random_share_above_floor": float(held_out["above_floor"].mean()) if len(held_out) else float("nan"),
        "random_mean_abs_normalised_effect": float(noise["normalised_effect"].abs().mean()) if len(noise)
        else float("nan"),
    }


class CausalEdges:
    """The effect of each unit of a set on every later unit of the set, by intervention.

    For each image ``x`` and each unit ``u`` of its set with a later unit in the set, one forward
    of ``x`` with ``u`` replaced by its baseline at the selected tokens (everything downstream
    recomputed) gives ``e(u -> v) = a_v(x) - a_v(x; u replaced)`` for every later ``v``: ``a_v``
    is ``v``'s activation summed over its site's selected positions. Effects are divided by
    ``sigma_v``, the standard deviation of ``a_v`` over images, and compared with a noise floor of
    random unit pairs of the same layer pairs (see :mod:`captum_paths.analysis.causal_edges`).

    Every edit and record goes through the sites' context managers
    (:meth:`~captum_paths.model.sites.NeuronSites.edit`), so no hook outlives a call.

    Args:
        model (nn.Module): a vision transformer (a Hugging Face model returning ``ModelOutput``
            is wrapped to return logits; its output is not used).
        sites (NeuronSites, nn.Module or list of nn.Module, optional): where the units live, as
            everywhere (:meth:`~captum_paths.model.sites.NeuronSites.coerce`). Default: the model's
            FFN neuron sites.

    Example::

        >>> from captum_paths import LayerProgressiveNeuronPath
        >>> paths = LayerProgressiveNeuronPath(model).attribute(images, target=labels).paths  # (8, 6, 1)
        >>> edges = CausalEdges(model).attribute(images, paths)
        >>> edges.effects.shape                       # (batch, n, n), n = L * k
        torch.Size([8, 6, 6])
        >>> edges.summary()[["edges", "share_above_floor", "random_share_above_floor"]]
        >>> edges.to_frame(labels=labels.tolist(), consecutive_only=True).head()
    """

    def __init__(self, model: nn.Module, sites: Union[None, NeuronSites, nn.Module, Sequence[nn.Module]] = None
                 ) -> None:
        from captum_paths.model.outputs import as_logits_model

        self.sites = resolve_sites(model, sites)
        self.model = model
        self.forward_func: Callable[..., Any] = as_logits_model(model)

    def attribute(
        self,
        inputs: Union[torch.Tensor, Tuple[torch.Tensor, ...]],
        neurons: Any,
        additional_forward_args: Any = None,
        layer_baselines: Any = None,
        internal_batch_size: Optional[int] = None,
        scale: Any = "batch",
        noise_sources: int = 64,
        noise_targets: int = 16,
        noise_quantile: float = 0.95,
        seed: int = 0,
    ) -> CausalEdgeResult:
        r"""
        Args:
            inputs (Tensor or tuple[Tensor, ...]): images ``(batch, C, H, W)`` (every tensor's
                first dimension is the batch).
            neurons: the unit set of each image, in any form the joint attribution takes: a
                ``(batch, L, k)`` path tensor (or a path-search result), a list of ``(layer, unit)``
                pairs shared by the batch, or one such list per image (equal sizes).
            additional_forward_args (Any, optional): extra forward arguments; tensors whose first
                dimension is the batch follow the rows. Default: ``None``.
            layer_baselines (optional): the value a removed unit takes: ``None`` or 0 (zero), a
                :class:`~captum_paths.attribution.layer_baselines.MeanBaseline`, a
                :class:`~captum_paths.attribution.layer_baselines.CounterfactualBaseline`, or
                per-site values (:func:`~captum_paths.attribution.layer_baselines.as_layer_baselines`).
                Default: ``None`` (zero).
            internal_batch_size (int, optional): at most this many rows (image x removed unit,
                the set's and the noise draws') per forward. Results equal one big batch.
                Default: ``None``, every row at once.
            scale (optional): ``sigma_v``, what effects are divided by: ``"batch"`` (the standard
                deviation of ``a_v`` over ``inputs``; at least 2 images), reference images
                ``(m, C, H, W)`` (a tensor or tuple of tensors: the standard deviation over them,
                ``m >= 2``, without ``additional_forward_args``), or given values ``{layer:
                Tensor (units,)}`` for every layer of the set. Default: ``"batch"``.
            noise_sources (int, optional): random (image, unit) draws ``u'`` per source layer of
                the noise floor; 0: no floor (NaN, nothing above it). Default: 64.
            noise_targets (int, optional): random units ``v'`` per draw and later layer. Default: 16.
            noise_quantile (float, optional): the quantile of ``|normalised effect|`` of the random
                pairs that is the floor, in (0, 1). Default: 0.95.
            seed (int, optional): seed of the random pairs (a CPU ``torch.Generator``).
                Default: 0.

        Returns:
            :class:`CausalEdgeResult`: effects ``(batch, n, n)`` (units ordered as given),
            normalised effects, the pairs computed, the noise pairs and the floors ``(L, L)``.

        Raises:
            ValueError: an argument out of range (the message names it), ``scale="batch"`` with
                one image, sites that do not keep one row per image or do not run in order.
        """
        from captum_paths.attribution.layer_baselines import as_layer_baselines
        from captum_paths.attribution.neuron_sets import parse_neurons
        from captum_paths.attribution.output import (
            check_internal_batch_size,
            format_additional_args,
            format_inputs,
        )

        check_internal_batch_size(internal_batch_size)
        noise_sources = _count(noise_sources, "noise_sources", minimum=0)
        noise_targets = _count(noise_targets, "noise_targets", minimum=1)
        seed = _count(seed, "seed", minimum=0)
        if isinstance(noise_quantile, bool) or not isinstance(noise_quantile, numbers.Real) \
                or not 0 < float(noise_quantile) < 1:
            raise ValueError(f"noise_quantile must be a number in (0, 1); got {noise_quantile!r}")
        baseline = as_layer_baselines(layer_baselines)
        inputs = format_inputs(inputs, self.model)
        args = format_additional_args(additional_forward_args)
        batch = inputs[0].shape[0]
        sites = self.sites

        with torch.no_grad(), sites.record() as clean:
            self.forward_func(*inputs, *args)
        clean = dict(clean)
        sites.check_batch(clean, batch)
        sites.check_execution_order(clean)
        widths = [clean[l].shape[-1] for l in range(sites.num_layers)]
        device = clean[0].device
        nset = parse_neurons(neurons, batch, sites.num_layers, widths)
        layers, units = nset.layers.to(device), nset.units.to(device)
        base = baseline.resolve(sites, self.forward_func, inputs, args, clean)
        sums = {l: a.double().sum(dim=1) for l, a in clean.items()}  # (batch, units) per layer
        del clean
        sigma = self._scale(scale, sums, layers, widths, internal_batch_size)

        # the rows: (image, removed unit) of each set unit with a later unit in the set, then the noise draws
        later = layers[:, None, :] > layers[:, :, None]  # (batch, n source, n target)
        img_p, src_p = later.any(dim=2).nonzero(as_tuple=True)
        noise = _noise_draws(layers, widths, batch, noise_sources, noise_targets, seed)
        noise = {k: v.to(device) for k, v in noise.items()}
        row_image = torch.cat([img_p, noise["image"]])
        row_layer = torch.cat([layers[img_p, src_p], noise["layer"]])
        row_unit = torch.cat([units[img_p, src_p], noise["unit"]])
        n_path, n_rows = len(img_p), len(row_image)

        n = layers.shape[1]
        effects = torch.zeros(batch, n, n, dtype=torch.float64, device=device)
        noise_effect = torch.zeros(len(noise["pair_row"]), dtype=torch.float64, device=device)
        clean_set = _gather_set(sums, layers, units)  # (batch, n)
        chunk = internal_batch_size or max(1, n_rows)
        for start in range(0, n_rows, chunk):
            end = min(start + chunk, n_rows)
            edited = self._edited_sums(inputs, args, batch, base, row_image[start:end], row_layer[start:end],
                                       row_unit[start:end], widths)
            if start < n_path:  # rows of the sets
                i, s = img_p[start:min(end, n_path)], src_p[start:min(end, n_path)]
                values = _gather_rows(edited, layers[i], units[i])
                effects[i, s] = torch.where(later[i, s], clean_set[i] - values, torch.zeros_like(values))
            if end > n_path:  # noise rows: row r of the noise is row n_path + r of the chunked rows
                _noise_effects(edited, sums, noise, max(start, n_path) - n_path, end - n_path,
                               max(start, n_path) - start, noise_effect)

        consecutive = later & (layers[:, None, :] == _next_layer(layers)[:, :, None])
        sigma_set = _gather_set(sigma, layers, units)
        normalised = _normalise(effects, sigma_set[:, None, :])
        normalised = torch.where(later, normalised, torch.zeros_like(normalised))
        noise_frame = _noise_frame(noise, noise_effect, sigma)
        floors = _floors(noise_frame, sites.num_layers, float(noise_quantile))
        settings = {"ablation": baseline.name, "scale": _scale_name(scale), "noise_sources": noise_sources,
                    "noise_targets": noise_targets, "noise_quantile": float(noise_quantile), "seed": seed}
        return CausalEdgeResult(
            effects=effects, normalised=normalised, computed=later, consecutive=consecutive, layers=layers,
            units=units, activations=clean_set, scale=sigma_set, floors=floors, noise=noise_frame,
            settings=settings, path_shape=nset.path_shape,
        )

    # ------------------------------------------------------------------ pieces
    def _edited_sums(self, inputs: Tuple[torch.Tensor, ...], args: Tuple[Any, ...], batch: int,
                     base: "SiteValues", image: torch.Tensor, layer: torch.Tensor, unit: torch.Tensor,
                     widths: List[int]) -> Dict[int, torch.Tensor]:
        """One forward of the rows ``image`` with unit ``unit`` of site ``layer`` replaced by its
        baseline (one per row); ``{layer: (rows, units)}`` summed activations of every site after
        the first edited one."""
        from captum_paths.attribution.output import select_rows

        rows = len(image)
        first = int(layer.min())
        store: Dict[int, torch.Tensor] = {}
        edits = {}
        for l in range(first, self.sites.num_layers):
            hit = (layer == l).nonzero().flatten()
            gates = None
            if len(hit):
                gates = torch.ones(rows, widths[l], device=image.device)
                gates[hit, unit[hit]] = 0.0
            edits[l] = _recording_edit(l, gates, None if gates is None else base.rows(l, image), store)
        with torch.no_grad(), self.sites.edit(edits):
            self.forward_func(*(x[image.to(x.device)] for x in inputs), *select_rows(args, image, batch))
        return store

    def _scale(self, scale: Any, sums: Mapping[int, torch.Tensor], layers: torch.Tensor, widths: List[int],
               internal_batch_size: Optional[int]) -> Dict[int, torch.Tensor]:
        """``sigma`` of every unit of every site ``{layer: (units,)}`` float64."""
        from captum_paths.attribution.output import format_inputs

        if isinstance(scale, str):
            if scale != "batch":
                raise ValueError(f"scale must be 'batch', reference images (a tensor) or {{layer: tensor}}; got "
                                 f"{scale!r}")
            batch = next(iter(sums.values())).shape[0]
            if batch < 2:
                raise ValueError("scale='batch' divides by the standard deviation over the images explained, which "
                                 "needs at least 2 of them; pass reference images as scale=images, or values as "
                                 "scale={layer: tensor}")
            return {l: s.std(dim=0) for l, s in sums.items()}
        if isinstance(scale, Mapping):
            out: Dict[int, torch.Tensor] = {}
            needed = sorted({int(l) for l in layers.flatten().tolist()})
            for l in needed:
                value = scale.get(l)
                if not isinstance(value, torch.Tensor) or tuple(value.shape) != (widths[l],):
                    got = "nothing" if value is None else (f"shape {tuple(value.shape)}" if isinstance(
                        value, torch.Tensor) else type(value).__name__)
                    raise ValueError(f"scale: give a tensor of shape ({widths[l]},) for layer {l}, a layer of the "
                                     f"set; got {got}")
                out[l] = value.detach().double().to(sums[l].device)
            for l, s in sums.items():
                out.setdefault(l, torch.full_like(s[0], float("nan")))
            return out
        if isinstance(scale, torch.Tensor) or (isinstance(scale, tuple) and scale
                                               and all(isinstance(t, torch.Tensor) for t in scale)):
            reference = format_inputs(scale, self.model)
            m = reference[0].shape[0]
            if m < 2:
                raise ValueError(f"scale: the standard deviation over reference images needs at least 2; got {m}")
            chunk = internal_batch_size or m
            parts: Dict[int, List[torch.Tensor]] = {}
            for start in range(0, m, chunk):
                store: Dict[int, torch.Tensor] = {}
                edits = {l: _recording_edit(l, None, None, store) for l in range(self.sites.num_layers)}
                with torch.no_grad(), self.sites.edit(edits):
                    self.forward_func(*(x[start:start + chunk] for x in reference))
                for l, s in store.items():
                    parts.setdefault(l, []).append(s)
            return {l: torch.cat(p).std(dim=0) for l, p in parts.items()}
        raise TypeError(f"scale must be 'batch', reference images (a tensor or tuple of tensors) or {{layer: "
                        f"tensor}}; got {type(scale).__name__}")


# ------------------------------------------------------------------ helpers
def _recording_edit(layer: int, gates: Optional[torch.Tensor], base: Optional[torch.Tensor],
                    store: Dict[int, torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    """The site edit of ``layer``: the removal ``gates * act + (1 - gates) * base`` (none when
    ``gates`` is None), then the activation summed over the positions into ``store[layer]``."""
    from captum_paths.attribution.layer_baselines import blend

    def edit(act: torch.Tensor) -> torch.Tensor:
        new = act if gates is None else blend(act, gates, base)
        store[layer] = new.detach().double().sum(dim=1)
        return new
    return edit


def _gather_set(values: Mapping[int, torch.Tensor], layers: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """``values[layers[i, m]][i, units[i, m]]`` ``(batch, n)``: a per-layer ``(batch or 1, units)`` value at
    each unit of each image's set (a ``(units,)`` value is shared by the images)."""
    out = torch.zeros(layers.shape, dtype=torch.float64, device=layers.device)
    for l in torch.unique(layers).tolist():
        hit = layers == l
        value = values[l]
        if value.dim() == 1:
            out[hit] = value[units[hit]]
        else:
            rows = torch.arange(layers.shape[0], device=layers.device)[:, None].expand_as(layers)
            out[hit] = value[rows[hit], units[hit]]
    return out


def _gather_rows(edited: Mapping[int, torch.Tensor], layers: torch.Tensor, units: torch.Tensor) -> torch.Tensor:
    """``(rows, n)``: the edited summed activation of each set unit, row by row (0 at layers not recorded)."""
    out = torch.zeros(layers.shape, dtype=torch.float64, device=layers.device)
    for l, value in edited.items():
        hit = layers == l
        if hit.any():
            gathered = value[: len(layers)].gather(1, torch.where(hit, units, torch.zeros_like(units)))
            out = torch.where(hit, gathered, out)
    return out


def _next_layer(layers: torch.Tensor) -> torch.Tensor:
    """``(batch, n)``: the next layer of each image's set after each unit's layer (-1 for the last)."""
    later = layers[:, None, :] > layers[:, :, None]
    big = torch.iinfo(layers.dtype).max
    candidates = torch.where(later, layers[:, None, :].expand_as(later), torch.full_like(later, big,
                                                                                         dtype=layers.dtype))
    nxt = candidates.min(dim=2).values
    return torch.where(nxt == big, torch.full_like(nxt, -1), nxt)


def _normalise(effects: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """``effects / sigma``, NaN where ``sigma`` is 0 or not finite."""
    ok = torch.isfinite(sigma) & (sigma > 0)
    safe = torch.where(ok, sigma, torch.ones_like(sigma))
    return torch.where(ok.expand_as(effects), effects / safe, torch.full_like(effects, float("nan")))


def _noise_draws(layers: torch.Tensor, widths: List[int], batch: int, sources: int, targets: int, seed: int
                 ) -> Dict[str, torch.Tensor]:
    """The random pairs, drawn on a seeded CPU generator. Per source layer (one with a later layer in
    some image's set), ``sources`` draws ``(image, layer, unit)`` (``draw``: its number within the
    layer); per draw and later layer of the sets, ``targets`` random units: the pairs
    ``(pair_row, pair_layer, pair_unit)``, ``pair_row`` indexing the draws."""
    g = torch.Generator().manual_seed(seed)
    present = sorted({int(l) for l in layers.flatten().tolist()})
    rows: Dict[str, List[torch.Tensor]] = {k: [] for k in ("image", "layer", "unit", "draw", "pair_row",
                                                           "pair_layer", "pair_unit")}
    count = 0
    for l in present:
        after = [t for t in present if t > l]
        if not after or sources == 0:
            continue
        index = torch.arange(count, count + sources)
        rows["image"].append(torch.randint(batch, (sources,), generator=g))
        rows["unit"].append(torch.randint(widths[l], (sources,), generator=g))
        rows["layer"].append(torch.full((sources,), l, dtype=torch.long))
        rows["draw"].append(torch.arange(sources))
        for t in after:
            rows["pair_row"].append(index.repeat_interleave(targets))
            rows["pair_layer"].append(torch.full((sources * targets,), t, dtype=torch.long))
            rows["pair_unit"].append(torch.randint(widths[t], (sources * targets,), generator=g))
        count += sources
    return {k: torch.cat(v) if v else torch.zeros(0, dtype=torch.long) for k, v in rows.items()}


def _noise_effects(edited: Mapping[int, torch.Tensor], sums: Mapping[int, torch.Tensor],
                   noise: Mapping[str, torch.Tensor], lo: int, hi: int, offset: int, out: torch.Tensor) -> None:
    """Write into ``out`` the effects of the random pairs whose draw is one of the noise rows
    ``lo .. hi - 1``, which sit at ``offset ..`` of this chunk's ``edited`` rows."""
    pair_row, pair_layer, pair_unit = noise["pair_row"], noise["pair_layer"], noise["pair_unit"]
    mine = (pair_row >= lo) & (pair_row < hi)
    for t in torch.unique(pair_layer[mine]).tolist():
        sel = (mine & (pair_layer == t)).nonzero().flatten()
        r, v = pair_row[sel], pair_unit[sel]
        out[sel] = sums[t][noise["image"][r], v] - edited[t][r - lo + offset, v]


def _noise_frame(noise: Mapping[str, torch.Tensor], effect: torch.Tensor, sigma: Mapping[int, torch.Tensor]
                 ) -> pd.DataFrame:
    """The random pairs as a table with their normalised effects and folds (the held-out floor and
    flag are filled by :func:`_floors`)."""
    r, t, v = noise["pair_row"], noise["pair_layer"], noise["pair_unit"]
    scales = torch.zeros(len(r), dtype=torch.float64, device=effect.device)
    for layer in torch.unique(t).tolist():
        hit = t == layer
        scales[hit] = sigma[layer].to(effect.device)[v[hit]]
    frame = pd.DataFrame({
        "image": noise["image"][r].cpu().numpy(), "source_layer": noise["layer"][r].cpu().numpy(),
        "source_unit": noise["unit"][r].cpu().numpy(), "target_layer": t.cpu().numpy(),
        "target_unit": v.cpu().numpy(), "effect": effect.cpu().numpy(),
        "normalised_effect": _normalise(effect, scales).cpu().numpy(),
        "fold": (noise["draw"][r] % 2).cpu().numpy(),
    }, columns=list(_NOISE_COLUMNS[:-2]))
    frame["noise_floor"] = np.nan
    frame["above_floor"] = False
    return frame


def _floors(noise: pd.DataFrame, num_layers: int, quantile: float) -> torch.Tensor:
    """``(L, L)`` floors from every random pair; fills the noise frame's held-out floor and flag."""
    floors = torch.full((num_layers, num_layers), float("nan"), dtype=torch.float64)
    if not len(noise):
        return floors
    absolute = noise["normalised_effect"].abs()
    for (a, b), group in noise.groupby(["source_layer", "target_layer"], sort=True):
        values = absolute[group.index].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        if len(values):
            floors[int(a), int(b)] = float(np.quantile(values, quantile))
        for fold in (0, 1):
            mine = group[group["fold"] == fold]
            other = absolute[group.index[group["fold"] != fold]].to_numpy(dtype=float)
            other = other[np.isfinite(other)]
            if not len(mine) or not len(other):
                continue
            floor = float(np.quantile(other, quantile))
            noise.loc[mine.index, "noise_floor"] = floor
            noise.loc[mine.index, "above_floor"] = (absolute[mine.index] > floor).to_numpy()
    return floors


def _scale_name(scale: Any) -> str:
    if isinstance(scale, str):
        return scale
    if isinstance(scale, Mapping):
        return "given"
    return "reference images"


def _count(value: Any, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < minimum:
        what = "a non-negative int" if minimum == 0 else f"an int >= {minimum}"
        raise ValueError(f"{name} must be {what}; got {value!r}")
    return int(value)


def _per_image(values: Optional[Sequence[Any]], batch: int, name: str) -> Optional[List[Any]]:
    if values is None:
        return None
    if isinstance(values, torch.Tensor):
        values = values.tolist()
    values = list(values)
    if len(values) != batch:
        raise ValueError(f"{name} must give one value per image ({batch}); got {len(values)}")
    return values


# ------------------------------------------------------------------ per class
#: The columns of :func:`class_causal_edges`.
CLASS_EDGE_COLUMNS = ("label", "source_layer", "source_unit", "target_layer", "target_unit", "count",
                      "mean_normalised_effect", "share_above_floor", "mean_effect")


def class_causal_edges(edges: pd.DataFrame, label_key: str = "label") -> pd.DataFrame:
    """Per class, each consecutive edge's images aggregated: how many, the mean normalised effect, the
    share above the noise floor and the mean raw effect.

    Args:
        edges (DataFrame): per-image edges (:meth:`CausalEdgeResult.to_frame` with ``labels``);
            only ``consecutive`` rows count (all rows when the column is absent).
        label_key (str, optional): the column holding the class. Default: ``"label"``.

    Returns:
        DataFrame with ``label, source_layer, source_unit, target_layer, target_unit, count,
        mean_normalised_effect, share_above_floor, mean_effect``, sorted; rows without a normalised
        effect (a target constant over the images) are left out.

    Example::

        >>> frame = edges.to_frame(labels=labels.tolist(), consecutive_only=True)
        >>> class_causal_edges(frame).head()
    """
    if label_key not in edges:
        raise ValueError(f"edges has no {label_key!r} column; build it with to_frame(labels=...)")
    if "consecutive" in edges:
        edges = edges[edges["consecutive"].astype(bool)]
    edges = edges[np.isfinite(edges["normalised_effect"].to_numpy(dtype=float))]  # a target constant over images
    keys = [label_key, "source_layer", "source_unit", "target_layer", "target_unit"]
    if not len(edges):
        return pd.DataFrame(columns=list(CLASS_EDGE_COLUMNS))
    grouped = edges.groupby(keys, sort=True)
    out = grouped.agg(count=("effect", "size"), mean_normalised_effect=("normalised_effect", "mean"),
                      share_above_floor=("above_floor", "mean"), mean_effect=("effect", "mean")).reset_index()
    out["share_above_floor"] = out["share_above_floor"].astype(float)
    return out.rename(columns={label_key: "label"})[list(CLASS_EDGE_COLUMNS)]
