"""Layer-progressive neuron path search (SPEC §4, §4.1).

Per layer ``t`` the already chosen neurons of layers ``< t`` and the whole site
``t`` are scaled together by ``alpha``; every neuron of site ``t`` is scored by
its integrated gate gradient in one batched pass over all images x steps, and
the best ``k`` join the path.

The engine (``mode="gate"``) exploits the structure of the problem:

- one clean forward for every site at once (done by the base class);
- the residual stream entering block ``t-1`` computed for layer ``t-1`` is the
  one needed for layer ``t``: it is cached, so each layer runs blocks ``t-1..L-1``
  once forward and blocks ``L-1..t`` once backward (the prefix's contribution is
  the same constant for every candidate, so no gradient below site ``t`` is needed);
- exact refinement re-scores candidates with forwards from the cached stream with
  the prefix removed, no integral (``JAS(prefix + j) = F(x) - F(x; prefix + j removed)``).

Models whose blocks cannot be run one by one (and any call with extra forward
arguments) take a generic path that runs the whole model per layer, with the same
results. ``mode="paper"`` reproduces the released scripts' freeze semantics, left
Riemann grid and product-of-sums candidate score, batched into one forward and one
backward per layer.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from captum.attr._utils.approximation_methods import approximation_parameters

from captum_paths.attribution.joint_integrated_gradients import JointNeuronIntegratedGradients
from captum_paths.attribution.output import output_value, select_rows
from captum_paths.search.base import PathAttribution, SearchContext
from captum_paths.stream import ResidualStream

__all__ = ["LayerProgressiveNeuronPath"]

Refine = Union[int, str]


class LayerProgressiveNeuronPath(PathAttribution):
    r"""The influential neuron path of each image: one (or ``k``) FFN neurons per layer.

    From "Discovering Influential Neuron Path in Vision Transformers" (Wang et al.,
    ICLR 2025, https://arxiv.org/abs/2503.09046), SPEC §4.

    Args:
        model (nn.Module): A vision transformer returning logits.
        sites (NeuronSites, optional): Default ``NeuronSites.from_model(model)``.
        output (str, optional): ``"prob"`` (default) or ``"logit"``.

    ``attribute(inputs, target=None, additional_forward_args=None, k=1, n_steps=None,
    method=None, mode="gate", internal_batch_size=None, refine=0)`` returns a
    :class:`~captum_paths.search.PathResult`. ``refine=c`` re-scores the best ``c``
    candidates of each layer exactly and keeps the best ``k``; ``refine="all"``
    scores every candidate exactly (the exact greedy). In ``mode="paper"`` the
    exact re-scoring uses the paper score of the set ``prefix + {j}``.

    Examples::

        >>> search = LayerProgressiveNeuronPath(model)
        >>> result = search.attribute(images, target=labels)
        >>> result.paths.shape          # (batch, layers, k)
        >>> result.jas                  # joint score of each path
    """

    name = "neuron-path"

    def _check_options(self, options: Dict[str, Any]) -> None:
        unknown = set(options) - {"refine"}
        if unknown:
            raise TypeError(f"LayerProgressiveNeuronPath.attribute() got unexpected arguments {sorted(unknown)}")
        refine = options.get("refine", 0)
        if refine == "all":
            return
        if isinstance(refine, bool) or not isinstance(refine, int) or refine < 0:
            raise ValueError(f"refine must be a non-negative int or 'all'; got {refine!r}")

    def _settings(self, options: Dict[str, Any]) -> Dict[str, Any]:
        return {"refine": options.get("refine", 0)}

    def _select(self, ctx: SearchContext, refine: Refine = 0):
        width = ctx.width
        candidates = width if refine == "all" else int(refine)
        if 0 < candidates < ctx.k:
            raise ValueError(f"refine must be 0, 'all' or at least k={ctx.k}; got {refine!r}")
        candidates = min(candidates, width)
        stream = None
        if ctx.mode == "gate" and len(ctx.inputs) == 1 and not ctx.args:
            stream = ResidualStream.from_sites(self.sites)
            if stream is not None and not stream.matches(ctx.inputs[0], ctx.logits):
                stream = None
        search = _GateSearch(self, ctx, stream) if ctx.mode == "gate" else _PaperSearch(self, ctx)
        L, k, B = self.sites.num_layers, ctx.k, ctx.batch
        paths = torch.zeros(B, L, k, dtype=torch.long, device=ctx.device)
        scores = torch.zeros(B, L, k, dtype=torch.float32, device=ctx.device)
        refined = torch.zeros(B, dtype=torch.long, device=ctx.device)
        for t in range(L):
            approx = search.layer_scores(t, paths)  # (B, d_ff)
            best = approx.topk(k, dim=1)
            chosen, chosen_scores = best.indices, best.values
            if candidates:
                pool = approx.topk(candidates, dim=1).indices  # (B, c)
                exact = search.exact_scores(t, paths, pool)  # (B, c)
                top = exact.topk(k, dim=1)
                refined_choice = pool.gather(1, top.indices)
                changed = (refined_choice.sort(1).values != chosen.sort(1).values).any(1)
                refined += changed.long()
                chosen, chosen_scores = refined_choice, top.values
            paths[:, t] = chosen
            scores[:, t] = chosen_scores.float()
        extra = {"refined_layers": refined} if candidates else {}
        return paths, scores, extra


class _Rows:
    """(example, step) rows of a batch, chunked by ``internal_batch_size``."""

    def __init__(self, ctx: SearchContext) -> None:
        step_sizes, alphas = approximation_parameters(ctx.method)
        self.m = ctx.n_steps
        self.weights = torch.tensor(step_sizes(self.m), dtype=torch.float64, device=ctx.device)
        self.alphas = torch.tensor(alphas(self.m), dtype=torch.float32, device=ctx.device)
        self.count = ctx.batch * self.m
        self.chunk = ctx.internal_batch_size or self.count

    def __iter__(self):
        rows = torch.arange(self.count, device=self.alphas.device)
        for part in rows.split(self.chunk):
            ex, st = part // self.m, part % self.m
            yield part, ex, st, self.alphas[st]


def _gate(mask_rows: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """Gates ``(rows, d_ff)``: ``alpha`` where the mask is 1, else 1."""
    return 1.0 + mask_rows * (alpha[:, None] - 1.0)


def _gating(gate: torch.Tensor) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda act: (act * gate[:, None, :]).to(act.dtype)


def _layer_mask(paths: torch.Tensor, layer: int, width: int) -> torch.Tensor:
    """``(batch, d_ff)`` 0/1 mask of the path's neurons in ``layer``."""
    mask = torch.zeros(paths.shape[0], width, device=paths.device)
    return mask.scatter_(1, paths[:, layer], 1.0)


class _GateSearch:
    """SPEC §3 semantics: whole-site scoring and exact refinement."""

    def __init__(self, owner: LayerProgressiveNeuronPath, ctx: SearchContext, stream: Optional[ResidualStream]):
        self.owner, self.ctx, self.stream = owner, ctx, stream
        self.sites = owner.sites
        self.rows = _Rows(ctx)
        self.cache: Optional[torch.Tensor] = None  # stream entering block t, per row
        self.removed: Optional[torch.Tensor] = None  # stream entering block t, prefix removed, per image
        if stream is not None:
            with torch.no_grad():
                self.embedded = stream.embed(ctx.inputs[0])

    def _forward(self, ex: torch.Tensor, edits: Dict[int, Callable]) -> torch.Tensor:
        ctx = self.ctx
        inputs = tuple(t[ex] for t in ctx.inputs)
        with self.sites.edit(edits):
            logits = self.owner.forward_func(*inputs, *select_rows(ctx.args, ex, ctx.batch))
        return output_value(logits, ctx.target[ex], self.owner.output)

    def layer_scores(self, t: int, paths: torch.Tensor) -> torch.Tensor:
        ctx, width = self.ctx, self.ctx.width
        scores = torch.zeros(ctx.batch, width, dtype=torch.float64, device=ctx.device)
        prev_mask = _layer_mask(paths, t - 1, width) if t > 0 else None
        if self.stream is not None and t == 0:
            self.cache = self.embedded[torch.arange(self.rows.count, device=ctx.device) // self.rows.m]
        for part, ex, st, alpha in self.rows:
            site_gate = torch.full((len(part), width), 1.0, device=ctx.device)
            site_gate = (site_gate * alpha[:, None]).requires_grad_(True)
            if self.stream is not None:
                h = self.cache[part]
                if t > 0:
                    with torch.no_grad(), self.sites.edit({t - 1: _gating(_gate(prev_mask[ex], alpha))}):
                        h = self.stream.blocks[t - 1](h)
                    self.cache[part] = h
                with torch.enable_grad(), self.sites.edit({t: _gating(site_gate)}):
                    logits = self.stream.logits(h, t)
                    f = output_value(logits, ctx.target[ex], self.owner.output)
                    (grad,) = torch.autograd.grad(f.sum(), site_gate)
            else:
                edits = {l: _gating(_gate(_layer_mask(paths, l, width)[ex], alpha)) for l in range(t)}
                edits[t] = _gating(site_gate)
                with torch.enable_grad():
                    f = self._forward(ex, edits)
                    (grad,) = torch.autograd.grad(f.sum(), site_gate)
            scores.index_add_(0, ex, grad.double() * self.rows.weights[st, None])
        return scores

    def exact_scores(self, t: int, paths: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        """``JAS(prefix + {j}) = F(x) - F(x; prefix + {j} removed)`` for each candidate, ``(B, c)``."""
        ctx, width = self.ctx, self.ctx.width
        B, c = pool.shape
        if self.stream is not None:
            with torch.no_grad():
                if t == 0:
                    self.removed = self.embedded
                else:
                    keep = 1.0 - _layer_mask(paths, t - 1, width)
                    with self.sites.edit({t - 1: _gating(keep)}):
                        self.removed = self.stream.blocks[t - 1](self.removed)
        flat = torch.arange(B * c, device=ctx.device)
        f_removed = torch.empty(B * c, dtype=ctx.f_clean.dtype, device=ctx.device)
        chunk = ctx.internal_batch_size or B * c
        with torch.no_grad():
            for part in flat.split(chunk):
                ex, j = part // c, pool.reshape(-1)[part]
                keep = torch.ones(len(part), width, device=ctx.device)
                keep[torch.arange(len(part), device=ctx.device), j] = 0.0
                if self.stream is not None:
                    with self.sites.edit({t: _gating(keep)}):
                        logits = self.stream.logits(self.removed[ex], t)
                    f_removed[part] = output_value(logits, ctx.target[ex], self.owner.output)
                else:
                    edits = {l: _gating(1.0 - _layer_mask(paths, l, width)[ex]) for l in range(t)}
                    edits[t] = _gating(keep)
                    f_removed[part] = self._forward(ex, edits)
        return ctx.f_clean[:, None] - f_removed.view(B, c)


class _PaperSearch:
    """SPEC §3.1/§4 paper semantics: freeze, left Riemann grid, product of sums."""

    def __init__(self, owner: LayerProgressiveNeuronPath, ctx: SearchContext):
        self.owner, self.ctx = owner, ctx
        self.sites = owner.sites
        self.rows = _Rows(ctx)
        # clean activations summed over the selected tokens, (B, d_ff) per layer
        self.a0 = {l: a.double().sum(dim=1) for l, a in ctx.clean.items()}

    def layer_scores(self, t: int, paths: torch.Tensor) -> torch.Tensor:
        ctx, width, m = self.ctx, self.ctx.width, self.rows.m
        site_grad = torch.zeros(ctx.batch, width, dtype=torch.float64, device=ctx.device)
        prefix_grad = torch.zeros(ctx.batch, dtype=torch.float64, device=ctx.device)
        masks = {l: _layer_mask(paths, l, width) for l in range(t)}
        for part, ex, st, alpha in self.rows:
            leaves, edits = [], {}
            for l in range(t + 1):
                mask = masks[l][ex] if l < t else torch.ones(len(part), width, device=ctx.device)
                value = (ctx.clean[l][ex] * _gate(mask, alpha)[:, None, :]).requires_grad_(True)
                leaves.append(value)
                edits[l] = lambda act, v=value: v.to(act.dtype)
            with torch.enable_grad():
                inputs = tuple(x[ex] for x in ctx.inputs)
                with self.sites.edit(edits):
                    logits = self.owner.forward_func(*inputs, *select_rows(ctx.args, ex, ctx.batch))
                f = output_value(logits, ctx.target[ex], self.owner.output)
                grads = torch.autograd.grad(f.sum(), leaves)
            per_layer = [g.double().sum(dim=1) for g in grads]  # (rows, d_ff), summed over tokens
            site_grad.index_add_(0, ex, per_layer[t])
            if t:
                prefix = sum((per_layer[l] * masks[l][ex]).sum(dim=1) for l in range(t))
                prefix_grad.index_add_(0, ex, prefix)
        prefix_act = torch.zeros(ctx.batch, dtype=torch.float64, device=ctx.device)
        for l in range(t):
            prefix_act += (self.a0[l] * masks[l]).sum(dim=1)
        return (site_grad + prefix_grad[:, None]) * (self.a0[t] + prefix_act[:, None]) / m

    def exact_scores(self, t: int, paths: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        """Paper JAS of ``prefix + {j}`` for each candidate, ``(B, c)``."""
        ctx = self.ctx
        B, c = pool.shape
        ex = torch.arange(B, device=ctx.device).repeat_interleave(c)
        prefix = [(l, paths[:, l]) for l in range(t)]
        sets = []
        for row, i in enumerate(ex.tolist()):
            members = [(l, int(u)) for l, units in prefix for u in units[i]]
            sets.append(members + [(t, int(pool.reshape(-1)[row]))])
        jig = JointNeuronIntegratedGradients(self.owner.model, sites=self.sites, output=self.owner.output)
        inputs = tuple(x[ex] for x in ctx.inputs)
        _, jas = jig.attribute(
            inputs, sets, target=ctx.target[ex],
            additional_forward_args=select_rows(ctx.args, ex, ctx.batch) or None,
            n_steps=ctx.n_steps, mode="paper", internal_batch_size=ctx.internal_batch_size,
        )
        return jas.double().view(B, c)
