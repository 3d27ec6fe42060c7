"""Baseline path methods: the same path shape and evaluation, other per-layer scores.

See "Baselines" in docs/method.md.

Each method scores every neuron of every layer on its own, independently per
layer, and keeps the ``k`` best per layer (best first). The base class
(:class:`~captum_paths.search.base.PathAttribution`) then scores the whole path
with the joint attribution (gate semantics, or paper semantics for
``mode="paper"``), so every
method is compared on the same footing.

Per layer ``t``, the score of neuron ``j`` (registry name: score, built on):

- ``activation``: the clean activation (Captum ``LayerActivation``).
- ``knowledge-neurons``: ``∫₀¹ dF/dg_{t,j} dα`` with the whole site ``t`` gated
  by ``α`` and nothing else (site gates and autograd, as in the joint attribution).
- ``conductance``: conductance of site ``t`` from a zero input baseline
  (Captum ``LayerConductance``).
- ``influence-pattern``: ``dF/da_{t,j}`` averaged over the inputs ``α·x``
  (autograd).
- ``random``: uniform distinct neurons, seeded per image (``torch.Generator``).

A neuron read at several tokens gets the sum of its per-token values.
``knowledge-neurons`` and ``random`` also score attention heads (head or mixed
sites, :class:`~captum_paths.model.sites.NeuronSites`); the others are defined on FFN
neurons and raise ``ValueError`` for sites holding heads.
The quadrature of the integral methods is the search's ``n_steps`` / ``method``
(Captum approximation names); ``mode`` changes only the final path score.
"""
from __future__ import annotations

import hashlib
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import torch
from captum.attr import LayerActivation, LayerConductance
from torch import nn

from captum_paths.attribution._machinery import StepRows, edited_output, gating
from captum_paths.attribution.output import select_rows
from captum_paths.search.base import PathAttribution, SearchContext
from captum_paths.search.registry import register_path_method
from captum_paths.model.sites import NeuronSites, SiteEdit

__all__ = [
    "ActivationPath",
    "KnowledgeNeuronPath",
    "ConductancePath",
    "InfluencePatternPath",
    "RandomPath",
]

_Selection = Tuple[torch.Tensor, Optional[torch.Tensor], Dict[str, Any]]


class _TopKPath(PathAttribution):
    """A baseline that scores all neurons of every layer and keeps the top ``k``."""

    def _select(self, ctx: SearchContext, **options: Any) -> _Selection:
        scores = self._neuron_scores(ctx)  # (batch, L, d_ff)
        for layer, w in enumerate(ctx.widths):  # narrower layers of hierarchical models: padding never wins
            scores[:, layer, w:] = float("-inf")
        top = scores.topk(ctx.k, dim=-1)
        return top.indices, top.values.to(ctx.f_clean.dtype), {}

    def _neuron_scores(self, ctx: SearchContext) -> torch.Tensor:
        """Score of every neuron, ``(batch, L, d_ff)`` (``d_ff``: the largest width; layers
        narrower than it fill their first ``widths[l]`` entries)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ helpers
    def _token_sum(self, act: torch.Tensor) -> torch.Tensor:
        """A full site tensor ``(batch, seq, d_ff)`` (or ``(batch, H, W, d_ff)``) summed over the
        selected tokens: ``(batch, d_ff)``."""
        if act.dim() == 4:
            act = act.reshape(act.shape[0], -1, act.shape[-1])
        return act[:, self.sites.tokens.index(act.shape[1])].sum(dim=1)

    def _rows_output(
        self,
        ctx: SearchContext,
        ex: torch.Tensor,
        edits: Dict[int, SiteEdit],
        scale: Optional[torch.Tensor] = None,
    ) -> torch.Tensor:
        """``F`` on the rows ``ex`` (images repeated per step), with site edits and
        the inputs optionally scaled per row by ``scale`` ``(rows,)``: ``(rows,)``."""
        return edited_output(self.forward_func, self.sites, self.output, ctx.inputs, ctx.args, ctx.target,
                             ex, edits, scale=scale)


def _step_rows(ctx: SearchContext) -> StepRows:
    """The ``batch x n_steps`` (example, step) rows of ``ctx``'s quadrature, in chunks of
    at most ``internal_batch_size`` rows."""
    return StepRows(ctx.batch, ctx.method, ctx.n_steps, ctx.device, ctx.internal_batch_size)


def _image_chunks(batch: int, size: Optional[int], device: torch.device) -> Iterator[torch.Tensor]:
    return iter(torch.arange(batch, device=device).split(size or batch))


def _scores_of(logits: torch.Tensor, output: str) -> torch.Tensor:
    """All classes' ``F``: softmax probabilities or logits, ``(batch, classes)`` (as ``output_value``)."""
    if logits.dtype != torch.float64:
        logits = logits.float()
    return logits.softmax(dim=1) if output == "prob" else logits


# --------------------------------------------------------------------------- methods
@register_path_method
class ActivationPath(_TopKPath):
    r"""Path of the most active neurons: per layer, the top ``k`` clean activations
    at the selected tokens (summed over the tokens when several).

    Activations are read with Captum's :class:`~captum.attr.LayerActivation` on
    every site at once (the layer input for sites with ``capture="input"``).

    Args:
        model (nn.Module): A vision transformer returning logits.
        sites (NeuronSites, optional): Where the neurons live. Default:
            ``NeuronSites.from_model(model)``.
        output (str, optional): ``"prob"`` or ``"logit"``, for the final JAS.
            Default: ``"prob"``.

    Examples::

        >>> result = ActivationPath(model).attribute(images, target=labels, k=3)
        >>> result.paths.shape, result.scores.shape     # (batch, L, 3) each
    """

    name = "activation"

    def check_sites(self) -> None:
        self.sites.check_neurons_only("the 'activation' baseline (Captum LayerActivation on each site module)")

    @torch.no_grad()
    def _neuron_scores(self, ctx: SearchContext) -> torch.Tensor:
        layer_act = LayerActivation(self.forward_func, list(self.sites.modules))
        parts = []
        for ex in _image_chunks(ctx.batch, ctx.internal_batch_size, ctx.device):
            inputs = tuple(t[ex.to(t.device)] for t in ctx.inputs)
            args = select_rows(ctx.args, ex, ctx.batch)
            acts = layer_act.attribute(
                inputs if len(inputs) > 1 else inputs[0],
                additional_forward_args=args or None,
                attribute_to_layer_input=self.sites.capture == "input",
            )
            part = torch.zeros(len(ex), len(acts), ctx.width, dtype=torch.float64, device=ctx.device)
            for layer, a in enumerate(acts):
                summed = self._token_sum(a.double())
                part[:, layer, : summed.shape[-1]] = summed
            parts.append(part)
        return torch.cat(parts)


@register_path_method
class KnowledgeNeuronPath(_TopKPath):
    r"""Knowledge-neuron path: per layer, the top ``k`` per-neuron integrated gradients
    of that layer alone (Dai et al. 2022 applied to each layer).

    Site ``t`` alone gets one gate per neuron on its activation at the selected
    tokens, all set to ``α`` (the whole site scaled 0→1, no prefix, other layers
    untouched), and ``score_t(j) = ∫₀¹ dF/dg_{t,j}(α) dα`` with the search's
    ``n_steps`` / ``method``. All images × steps of one layer run in one batched
    pass (chunked by ``internal_batch_size`` rows) with one backward. The score
    sums to ``F(x) − F(x with site t zeroed)`` up to quadrature error.

    The selection score keeps these gate semantics in ``mode="paper"`` too (on
    the paper's left Riemann grid); the mode changes only the final JAS.

    Args:
        model (nn.Module): A vision transformer returning logits.
        sites (NeuronSites, optional): Where the neurons live.
        output (str, optional): ``"prob"`` or ``"logit"``. Default: ``"prob"``.

    Examples::

        >>> result = KnowledgeNeuronPath(model).attribute(images, target=labels)
        >>> result.scores[:, :, 0]      # (batch, L) IG of each layer's best neuron
    """

    name = "knowledge-neurons"

    def _neuron_scores(self, ctx: SearchContext) -> torch.Tensor:
        rows, widths = _step_rows(ctx), ctx.widths
        scores = torch.zeros(ctx.batch, self.sites.num_layers, ctx.width, dtype=torch.float64, device=ctx.device)
        with torch.enable_grad():
            for t in range(self.sites.num_layers):
                for _, ex, st, alpha in rows:
                    gates = alpha[:, None].expand(-1, widths[t]).clone().requires_grad_(True)  # (rows, d_ff)
                    f = self._rows_output(ctx, ex, {t: gating(gates, ctx.base.rows(t, ex))})
                    (grad,) = torch.autograd.grad(f.sum(), gates)
                    scores[:, t, : widths[t]].index_add_(0, ex, grad.double() * rows.weights[st, None])
        return scores


@register_path_method
class ConductancePath(_TopKPath):
    r"""Conductance path: per layer, the top ``k`` neurons by Captum's
    :class:`~captum.attr.LayerConductance` of site ``t`` (Dhamdhere et al. 2019).

    Conductance integrates along the input path from a zero input baseline to
    ``x`` and attributes ``F`` (softmax probability or logit of the target). It is
    computed per token; the score sums it over the selected tokens. The site's
    layer input is used for sites with ``capture="input"``. ``n_steps``,
    ``method`` and ``internal_batch_size`` are passed to Captum; images are
    chunked so that a pass holds at most ``internal_batch_size`` (image, step)
    rows, or 2 when it is 1 (conductance differences consecutive steps).

    Args:
        model (nn.Module): A vision transformer returning logits.
        sites (NeuronSites, optional): Where the neurons live.
        output (str, optional): ``"prob"`` or ``"logit"``. Default: ``"prob"``.

    Examples::

        >>> result = ConductancePath(model).attribute(images, target=labels, internal_batch_size=64)
    """

    name = "conductance"

    def check_sites(self) -> None:
        self.sites.check_neurons_only("the 'conductance' baseline (Captum LayerConductance on each site module)")

    def _neuron_scores(self, ctx: SearchContext) -> torch.Tensor:
        forward_func, output = self.forward_func, self.output

        def forward(*args: Any) -> torch.Tensor:
            return _scores_of(forward_func(*args), output)

        ibs = ctx.internal_batch_size
        # images per Captum call: all their steps in one pass when they fit
        per_chunk = None if ibs is None else max(1, min(ctx.batch, ibs // (ctx.n_steps + 1)))
        scores = torch.zeros(
            ctx.batch, self.sites.num_layers, ctx.width, dtype=torch.float64, device=ctx.device
        )
        with torch.enable_grad():
            for t, module in enumerate(self.sites.modules):
                conductance = LayerConductance(forward, module)
                for ex in _image_chunks(ctx.batch, per_chunk, ctx.device):
                    inputs = tuple(x[ex.to(x.device)] for x in ctx.inputs)
                    args = select_rows(ctx.args, ex, ctx.batch)
                    attr = conductance.attribute(
                        inputs if len(inputs) > 1 else inputs[0],
                        baselines=None,  # Captum's default: zeros
                        target=ctx.target[ex],
                        additional_forward_args=args or None,
                        n_steps=ctx.n_steps,
                        method=ctx.method,
                        internal_batch_size=ibs,
                        attribute_to_layer_input=self.sites.capture == "input",
                    )
                    summed = self._token_sum(attr.detach().double())
                    scores[ex, t, : summed.shape[-1]] = summed
        return scores


@register_path_method
class InfluencePatternPath(_TopKPath):
    r"""Influence-pattern path, the released scripts' simplified form of Lu et al. (2021):
    per layer, the top ``k`` neurons by the gradient of ``F`` with respect to the
    site activation (summed over the selected tokens), averaged over the
    input-space integrated-gradients path ``α·x`` (zero input baseline) with the
    quadrature's step weights. Layers are scored independently.

    All layers' gradients come from one backward per chunk of
    ``internal_batch_size`` (image, step) rows: each site adds a zero probe
    tensor to its selected activation, and the probes' gradients are the
    activation gradients.

    Args:
        model (nn.Module): A vision transformer returning logits; the inputs
            must be floating point (they are scaled by ``α``).
        sites (NeuronSites, optional): Where the neurons live.
        output (str, optional): ``"prob"`` or ``"logit"``. Default: ``"prob"``.

    Examples::

        >>> result = InfluencePatternPath(model).attribute(images, target=labels)
    """

    name = "influence-pattern"

    def check_sites(self) -> None:
        self.sites.check_neurons_only("the 'influence-pattern' baseline (a per-channel activation gradient)")

    def _neuron_scores(self, ctx: SearchContext) -> torch.Tensor:
        for i, x in enumerate(ctx.inputs):
            if not x.is_floating_point():
                raise TypeError(
                    f"{type(self).__name__} scales the inputs by alpha, so they must be floating "
                    f"point; inputs[{i}] has dtype {x.dtype}"
                )
        rows = _step_rows(ctx)
        layers = range(self.sites.num_layers)
        scores = torch.zeros(ctx.batch, len(layers), ctx.width, dtype=torch.float64, device=ctx.device)
        with torch.enable_grad():
            for _, ex, st, alpha in rows:
                probes: Dict[int, torch.Tensor] = {}
                f = self._rows_output(ctx, ex, {l: _probe(probes, l) for l in layers}, scale=alpha)
                missing = [l for l in layers if l not in probes]
                if missing:
                    raise RuntimeError(f"the forward pass did not run the sites of layers {missing}")
                grads = torch.autograd.grad(f.sum(), [probes[l] for l in layers])
                for l, g in zip(layers, grads):
                    scores[:, l, : g.shape[-1]].index_add_(0, ex, g.double().sum(dim=1) * rows.weights[st, None])
        return scores


def _probe(store: Dict[int, torch.Tensor], layer: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A site edit adding a zero leaf to the activation; its gradient is ``dF/da``."""

    def fn(act: torch.Tensor) -> torch.Tensor:
        zero = torch.zeros_like(act, requires_grad=True)
        store[layer] = zero
        return act + zero

    return fn


@register_path_method
class RandomPath(PathAttribution):
    r"""Random control path: ``k`` distinct neurons per layer, uniformly at random.

    Deterministic and batch-independent: each image's generator is seeded from
    ``seed`` and a SHA-256 hash of the image's bytes (every input tensor's row,
    with its dtype and shape), so an image gets the same path whatever batch it
    is in and wherever it sits. ``scores`` is ``None``.

    Args:
        model (nn.Module): A vision transformer returning logits.
        sites (NeuronSites, optional): Where the neurons live.
        output (str, optional): ``"prob"`` or ``"logit"``, for the final JAS.
            Default: ``"prob"``.
        seed (int, optional): Seed of the draw; recorded in ``settings``.
            Default: 0.

    Examples::

        >>> result = RandomPath(model, seed=1).attribute(images, target=labels, k=5)
    """

    name = "random"

    def __init__(
        self,
        model: nn.Module,
        sites: Optional[NeuronSites] = None,
        output: str = "prob",
        seed: int = 0,
    ) -> None:
        super().__init__(model, sites=sites, output=output)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise TypeError(f"seed must be an int; got {type(seed).__name__}")
        self.seed = seed

    def _settings(self, options: Dict[str, Any]) -> Dict[str, Any]:
        return {**options, "seed": self.seed}

    def _select(self, ctx: SearchContext, **options: Any) -> _Selection:
        paths = torch.stack([self._draw(ctx, i) for i in range(ctx.batch)])
        return paths.to(ctx.device), None, {}

    def _draw(self, ctx: SearchContext, i: int) -> torch.Tensor:
        """The path of image ``i``, ``(L, k)`` long on the CPU."""
        digest = hashlib.sha256(f"captum_paths.random:{self.seed}".encode())
        for x in ctx.inputs:
            row = x[i].detach().cpu().contiguous()
            digest.update(f"|{row.dtype}{tuple(row.shape)}|".encode())
            digest.update(row.reshape(-1).view(torch.uint8).numpy().tobytes())
        gen = torch.Generator().manual_seed(int.from_bytes(digest.digest()[:8], "little"))
        return torch.stack([torch.randperm(w, generator=gen)[: ctx.k] for w in ctx.widths])
