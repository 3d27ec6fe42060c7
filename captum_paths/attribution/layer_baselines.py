"""What a removed unit becomes: its neuron baseline (zero, mean, counterfactual, given).

Removing a set of units replaces their activation at the selected tokens by a
baseline value ``b``; every joint score, path search and intervention is defined
against it. The gate that scales a unit from "removed" to "present" becomes

``a'(g) = g * a + (1 - g) * b``

so ``g = 1`` is the clean activation exactly and ``g = 0`` is the baseline exactly,
and the completeness of the joint integral reads
``sum_n phi_n = F(x) - F(x; set replaced by b)``. The name follows Captum's
``LayerFeatureAblation(..., layer_baselines=...)``: the reference values that replace
a layer's units when they are ablated (Captum's ``baselines`` are input baselines).

- :class:`ZeroBaseline` (the default): ``b = 0``, the paper's removal.
- :class:`MeanBaseline`: the unit's mean activation over reference images, at each
  selected position ("mean ablation").
- :class:`CounterfactualBaseline`: the unit's activation on a counterfactual input,
  image by image ("activation patching").
- :class:`SiteBaseline`: given tensors, one per site.

Any of them (or ``None``, ``0``, a dict or list of tensors) goes wherever
``layer_baselines=`` is taken; :func:`as_layer_baselines` says which forms are
accepted.
"""
from __future__ import annotations

import numbers
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import torch

from captum_paths.attribution.output import format_additional_args, format_inputs, select_rows
from captum_paths.model.sites import NeuronSites

__all__ = [
    "ABLATIONS",
    "CounterfactualBaseline",
    "LayerBaseline",
    "MeanBaseline",
    "SiteBaseline",
    "SiteValues",
    "ZeroBaseline",
    "as_layer_baselines",
    "blend",
]

#: the baselines a run can name on the command line (``--ablation``)
ABLATIONS = ("zero", "mean")

_ACCEPTED = (
    "None or 0 (zero ablation), a ZeroBaseline, MeanBaseline(reference_images), "
    "CounterfactualBaseline(counterfactual_images), SiteBaseline(values), or values given per site: "
    "a dict {layer: tensor} or a list with one tensor (or None) per site"
)


def blend(act: torch.Tensor, gates: torch.Tensor, base: Optional[torch.Tensor]) -> torch.Tensor:
    """``gates * act + (1 - gates) * base`` at the selected positions, in ``act``'s dtype.

    Args:
        act (Tensor): activations ``(rows, positions, units)``.
        gates (Tensor): ``(rows, units)``: 1 keeps a unit, 0 replaces it by its baseline.
        base (Tensor, optional): broadcastable to ``act`` (``None``: zero).

    Returns:
        Tensor ``(rows, positions, units)``; exactly ``act`` where the gate is 1 and exactly
        ``base`` where it is 0.
    """
    g = gates[:, None, :]
    if base is None:
        return (act * g).to(act.dtype)
    return (act * g + base.to(act.dtype) * (1.0 - g)).to(act.dtype)


class SiteValues:
    """A baseline resolved for a batch: per site a tensor broadcastable to its recorded
    activations ``(batch, positions, units)``, shared by the images ``(1, positions, units)``
    or one per image ``(batch, positions, units)``; a site missing from ``values`` is zero.

    Args:
        values (dict): ``{layer: tensor}``, each ``(1, positions, units)`` or ``(batch, positions, units)``.
        per_image (bool): whether the tensors hold one row per image of the batch.

    Example::

        >>> values = ZeroBaseline().resolve(sites, model, (images,), (), clean)
        >>> values.rows(0, torch.tensor([0, 0, 1])) is None     # zero: nothing to add
        True
    """

    def __init__(self, values: Mapping[int, torch.Tensor], per_image: bool = False) -> None:
        self.values = dict(values)
        self.per_image = per_image

    @classmethod
    def checked(cls, values: Mapping[int, torch.Tensor], acts: Mapping[int, torch.Tensor], sites: NeuronSites,
                batch: int, what: str = "layer_baselines") -> "SiteValues":
        """Values given per site, checked against recorded activations ``acts`` ``{layer: (rows,
        positions, units)}`` and shaped ``(1, positions, units)`` (shared: the value was ``(units,)``,
        ``(positions, units)`` or ``(1, positions, units)``) or ``(batch, positions, units)`` (per image).

        Raises:
            ValueError: a site that did not run, or a value of another shape (the message, led by
                ``what``, names the site and the shapes allowed).

        Example::

            >>> with sites.record() as acts:
            ...     model(images)                      # 8 images
            >>> SiteValues.checked({0: torch.zeros(256)}, dict(acts), sites, batch=8).rows(0, torch.arange(8))
        """
        return _shaped(values, acts, sites, batch, what)

    @property
    def is_zero(self) -> bool:
        """``True`` when every site's baseline is zero (no tensor stored)."""
        return not self.values

    def rows(self, layer: int, examples: torch.Tensor) -> Optional[torch.Tensor]:
        """The baseline of site ``layer`` for rows of the given example indices ``(rows,)``:
        ``(rows, positions, units)`` per image, ``(1, positions, units)`` shared, ``None`` for zero."""
        value = self.values.get(layer)
        if value is None or not self.per_image:
            return value
        return value[examples.to(value.device)]

    def take(self, examples: torch.Tensor) -> "SiteValues":
        """The baseline of a sub-batch (the images ``examples`` ``(n,)``, repeats allowed)."""
        if not self.per_image:
            return self
        return SiteValues({l: v[examples.to(v.device)] for l, v in self.values.items()}, per_image=True)

    def to(self, device: torch.device) -> "SiteValues":
        """The same values on ``device``."""
        return SiteValues({l: v.to(device) for l, v in self.values.items()}, self.per_image)


class LayerBaseline:
    """The value removed units take, resolved per batch into :class:`SiteValues`.

    Subclasses set :attr:`name` and implement :meth:`resolve`. ``settings()`` is what a
    run records about it.
    """

    #: short name recorded in results and run settings
    name: str = ""

    def resolve(self, sites: NeuronSites, forward_func: Callable[..., Any], inputs: Tuple[torch.Tensor, ...],
                args: Tuple[Any, ...], clean: Mapping[int, torch.Tensor]) -> SiteValues:
        """Per-site baselines for the batch ``inputs`` (each ``(batch, ...)``) of ``forward_func``.

        Args:
            sites (NeuronSites): the sites whose units are removed.
            forward_func (callable): the model returning logits.
            inputs (tuple of Tensor): the batch explained.
            args (tuple): its extra forward arguments.
            clean (dict): the batch's recorded activations ``{layer: (batch, positions, units)}``
                (``NeuronSites.record``), which the values are checked against.

        Returns:
            :class:`SiteValues`.
        """
        raise NotImplementedError

    def settings(self) -> Dict[str, Any]:
        """What identifies this baseline in results: ``{"ablation": name, ...}``."""
        return {"ablation": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class ZeroBaseline(LayerBaseline):
    """Removed units are set to 0 (the paper's removal, and the default).

    Example::

        >>> jig.attribute(images, neurons, layer_baselines=ZeroBaseline())   # same as None
    """

    name = "zero"

    def resolve(self, sites, forward_func, inputs, args, clean) -> SiteValues:
        """No tensor at all: zero everywhere (see :meth:`LayerBaseline.resolve`)."""
        return SiteValues({})


class SiteBaseline(LayerBaseline):
    """Removed units take given values, one tensor per site.

    Args:
        values (dict or sequence): ``{layer: tensor}`` or one tensor (or ``None``: zero) per
            site. Each tensor is ``(units,)`` (every selected position), ``(positions, units)``
            or ``(batch, positions, units)`` (one row per image), in the layout the sites record
            (``NeuronSites.record``: ``(batch, n_tokens, d_ff)`` for FFN neurons).
        name (str, optional): what results call it. Default: ``"given"``.

    Example::

        >>> means = {l: acts[l].mean(0) for l in acts}          # from NeuronSites.record
        >>> jig.attribute(images, neurons, layer_baselines=SiteBaseline(means))
    """

    name = "given"

    def __init__(self, values: Union[Mapping[int, Optional[torch.Tensor]], Sequence[Optional[torch.Tensor]]],
                 name: str = "given") -> None:
        if isinstance(values, Mapping):
            items = list(values.items())
        elif isinstance(values, Sequence) and not isinstance(values, (str, bytes)):
            items = list(enumerate(values))
        else:
            raise TypeError(f"SiteBaseline values must be a dict {{layer: tensor}} or a list of tensors, one per "
                            f"site; got {type(values).__name__}")
        self.values: Dict[int, torch.Tensor] = {}
        for layer, value in items:
            if isinstance(layer, bool) or not isinstance(layer, numbers.Integral):
                raise TypeError(f"SiteBaseline: site keys must be layer indices (ints); got {layer!r}")
            if value is None:
                continue
            if not isinstance(value, torch.Tensor) or not value.is_floating_point():
                raise TypeError(f"SiteBaseline: the value of site {layer} must be a floating-point tensor; got "
                                f"{_described(value)}")
            if not 1 <= value.dim() <= 3:
                raise ValueError(f"SiteBaseline: the value of site {layer} must be (units,), (positions, units) or "
                                 f"(batch, positions, units); got shape {tuple(value.shape)}")
            self.values[int(layer)] = value.detach()
        self.name = name

    def resolve(self, sites, forward_func, inputs, args, clean) -> SiteValues:
        """Check each tensor against the recorded activations and shape it for the batch."""
        return _shaped(self.values, clean, sites, inputs[0].shape[0], "SiteBaseline")

    def __repr__(self) -> str:
        shapes = {l: tuple(v.shape) for l, v in self.values.items()}
        return f"SiteBaseline({shapes}, name={self.name!r})"


class MeanBaseline(LayerBaseline):
    """Removed units take their mean activation over reference images, at each selected
    position ("mean ablation").

    The means are computed once per set of sites (in float64, then kept in the sites'
    dtype) and reused for every batch.

    Args:
        reference (Tensor or tuple of Tensor): reference images ``(n, C, H, W)``: a sample of
            the data the model sees (not the explained images themselves, to keep them apart).
        additional_forward_args (Any, optional): extra forward arguments of the reference batch.
        batch_size (int, optional): images per forward while averaging. Default: 32.
        image_ids (sequence of str, optional): names of the reference images, kept as
            :attr:`image_ids` for the record. Default: ``None``.

    Example::

        >>> reference = images_of_the_dataset[torch.randperm(n, generator=g)[:64]]
        >>> phi, delta = jig.attribute(x, neurons, layer_baselines=MeanBaseline(reference),
        ...                            return_convergence_delta=True)
    """

    name = "mean"

    def __init__(self, reference: Union[torch.Tensor, Tuple[torch.Tensor, ...]],
                 additional_forward_args: Any = None, batch_size: int = 32,
                 image_ids: Optional[Sequence[str]] = None) -> None:
        self.reference = format_inputs(reference)
        if image_ids is not None and len(image_ids) != self.reference[0].shape[0]:
            raise ValueError(f"MeanBaseline: image_ids names {len(image_ids)} images for {self.reference[0].shape[0]} "
                             "reference images")
        self.image_ids = None if image_ids is None else list(image_ids)
        if self.reference[0].shape[0] < 1:
            raise ValueError("MeanBaseline: reference holds no images; give at least one")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"MeanBaseline: batch_size must be a positive int; got {batch_size!r}")
        self.args = format_additional_args(additional_forward_args)
        self.batch_size = batch_size
        self._means: list = []  # (model, site names, {layer: mean}) per set of sites seen

    @property
    def count(self) -> int:
        """Number of reference images."""
        return int(self.reference[0].shape[0])

    def means(self, sites: NeuronSites, forward_func: Callable[..., Any]) -> Dict[int, torch.Tensor]:
        """The mean activation of every site ``{layer: (positions, units)}`` over the reference images."""
        # the same modules read at other tokens (or of another kind) have other means
        key = (tuple(sites.names), sites.tokens, tuple(sites.captures), tuple(sites.unit_sizes))
        for model, seen, means in self._means:
            if model is sites.model and seen == key:
                return means
        n = self.count
        sums: Dict[int, torch.Tensor] = {}
        dtypes: Dict[int, torch.dtype] = {}
        for rows in torch.arange(n).split(self.batch_size):
            inputs = tuple(x[rows.to(x.device)] for x in self.reference)
            acts = _record(sites, forward_func, inputs, select_rows(self.args, rows, n))
            for l, a in acts.items():
                total = a.double().sum(dim=0)
                if l in sums and sums[l].shape != total.shape:
                    raise ValueError(f"MeanBaseline: site {sites.names[l]!r} holds {tuple(total.shape)} "
                                     f"positions x units in one reference batch and {tuple(sums[l].shape)} in "
                                     "another: give reference images of one size")
                sums[l] = total if l not in sums else sums[l] + total
                dtypes[l] = a.dtype
        means = {l: (s / n).to(dtypes[l]) for l, s in sums.items()}
        self._means.append((sites.model, key, means))
        return means

    def resolve(self, sites, forward_func, inputs, args, clean) -> SiteValues:
        """The reference means, checked against the batch's positions and units."""
        return _shaped(self.means(sites, forward_func), clean, sites, inputs[0].shape[0], "MeanBaseline")

    def settings(self) -> Dict[str, Any]:
        """``{"ablation": "mean", "reference_images": n}``."""
        return {"ablation": self.name, "reference_images": self.count}

    def __repr__(self) -> str:
        return f"MeanBaseline({self.count} reference images)"


class CounterfactualBaseline(LayerBaseline):
    """Removed units take their activation on a counterfactual input, image by image
    ("activation patching"): removing unit ``n`` from image ``i`` patches in its value
    on counterfactual ``i``.

    Args:
        counterfactual (Tensor or tuple of Tensor): one counterfactual per explained image
            ``(batch, C, H, W)``, or one image ``(1, C, H, W)`` for all. Under Captum's
            ``NoiseTunnel``, whose batch holds each image ``nt_samples`` times in a row, the
            counterfactuals are repeated the same way.
        additional_forward_args (Any, optional): extra forward arguments of the counterfactuals.

    Example::

        >>> # what of image i's decision do the path's units carry, against image j?
        >>> phi, delta = jig.attribute(x, path, layer_baselines=CounterfactualBaseline(other_images),
        ...                            return_convergence_delta=True)
    """

    name = "counterfactual"

    def __init__(self, counterfactual: Union[torch.Tensor, Tuple[torch.Tensor, ...]],
                 additional_forward_args: Any = None) -> None:
        self.counterfactual = format_inputs(counterfactual)
        self.args = format_additional_args(additional_forward_args)

    def resolve(self, sites, forward_func, inputs, args, clean) -> SiteValues:
        """The counterfactuals' activations, one row per explained image."""
        batch = inputs[0].shape[0]
        n = self.counterfactual[0].shape[0]
        if n == 1:
            acts = _record(sites, forward_func, self.counterfactual, self.args)
            return _shaped(acts, clean, sites, batch, "CounterfactualBaseline")
        if batch % n:
            raise ValueError(f"CounterfactualBaseline holds {n} counterfactual images for {batch} explained images: "
                             "give one per image, one for all, or a number that the batch repeats (NoiseTunnel)")
        acts = _record(sites, forward_func, self.counterfactual, self.args)
        repeats = batch // n
        acts = {l: a.repeat_interleave(repeats, dim=0) if repeats > 1 else a for l, a in acts.items()}
        return _shaped(acts, clean, sites, batch, "CounterfactualBaseline")

    def __repr__(self) -> str:
        return f"CounterfactualBaseline({self.counterfactual[0].shape[0]} images)"


def as_layer_baselines(layer_baselines: Any) -> LayerBaseline:
    """The :class:`LayerBaseline` a ``layer_baselines=`` argument stands for.

    Args:
        layer_baselines: ``None`` or ``0`` (zero), a :class:`LayerBaseline`, or per-site values
            (a dict ``{layer: tensor}`` or a list of tensors: a :class:`SiteBaseline`).

    Returns:
        :class:`LayerBaseline`.

    Raises:
        TypeError: anything else (the message names what was given and the accepted forms).

    Example::

        >>> as_layer_baselines(None).name
        'zero'
    """
    if layer_baselines is None:
        return ZeroBaseline()
    if isinstance(layer_baselines, LayerBaseline):
        return layer_baselines
    if isinstance(layer_baselines, numbers.Number) and not isinstance(layer_baselines, bool) \
            and layer_baselines == 0:
        return ZeroBaseline()
    if isinstance(layer_baselines, str):
        hint = ""
        if layer_baselines in ("zero", "mean", "counterfactual"):
            hint = (f" ({layer_baselines!r}: use " + {"zero": "None", "mean": "MeanBaseline(reference_images)",
                                                         "counterfactual": "CounterfactualBaseline(images)"}[
                layer_baselines] + ")")
        raise TypeError(f"layer_baselines must be {_ACCEPTED}; got the string {layer_baselines!r}{hint}")
    if isinstance(layer_baselines, torch.Tensor):
        raise TypeError(
            f"layer_baselines must be {_ACCEPTED}; got a tensor of shape {tuple(layer_baselines.shape)}. These are "
            "the values removed units take, per site, not input images: to patch in the activations of "
            "counterfactual images use CounterfactualBaseline(images); for one site's values use {layer: tensor}"
        )
    if isinstance(layer_baselines, (Mapping, list, tuple)):
        return SiteBaseline(layer_baselines)
    raise TypeError(f"layer_baselines must be {_ACCEPTED}; got {_described(layer_baselines)}")


def _record(sites: NeuronSites, forward_func: Callable[..., Any], inputs: Tuple[torch.Tensor, ...],
            args: Tuple[Any, ...]) -> Dict[int, torch.Tensor]:
    with torch.no_grad(), sites.record() as acts:
        forward_func(*inputs, *args)
    return dict(acts)


def _shaped(values: Mapping[int, torch.Tensor], acts: Mapping[int, torch.Tensor], sites: NeuronSites, batch: int,
            what: str) -> SiteValues:
    """``values`` checked against the recorded ``acts`` ``{layer: (rows, positions, units)}`` and
    shaped ``(1, positions, units)`` (shared) or ``(batch, positions, units)`` (per image)."""
    shaped: Dict[int, torch.Tensor] = {}
    per_image = False
    for layer, value in values.items():
        sites.check_layer(layer, f"{what} site")
        if layer not in acts:
            raise ValueError(f"{what}: site {sites.names[layer]!r} (layer {layer}) did not run in the forward")
        positions, units = acts[layer].shape[1:]
        device, dtype = acts[layer].device, acts[layer].dtype
        shape = tuple(value.shape)
        name = f"site {sites.names[layer]!r} (layer {layer})"
        if value.dim() == 1 and shape == (units,):
            value = value.reshape(1, 1, units).expand(1, positions, units)
        elif value.dim() == 2 and shape == (positions, units):
            value = value[None]
        elif value.dim() == 3 and shape[1:] == (positions, units) and shape[0] == 1:
            pass
        elif value.dim() == 3 and shape[1:] == (positions, units) and shape[0] == batch:
            per_image = True
        else:
            raise ValueError(
                f"{what}: the baseline of {name} has shape {shape}, but the site holds {positions} positions x "
                f"{units} units per image ({batch} images): give (units,) = ({units},), (positions, units) = "
                f"({positions}, {units}) or (batch, positions, units) = ({batch}, {positions}, {units})"
            )
        shaped[layer] = value.to(device=device, dtype=dtype)
    if per_image:
        shaped = {l: v.expand(batch, *v.shape[1:]) for l, v in shaped.items()}
    return SiteValues(shaped, per_image=per_image)


def _described(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"[:120]
