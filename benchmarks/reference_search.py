"""Literal, deliberately slow reference implementations of the neuron path search.

This module is an *oracle* and a *speed baseline*, not a library component. It
mirrors the structure and the cost of the authors' released research scripts
(see "Paper semantics", "Layer-progressive search" and "Where the released
scripts differ" in docs/method.md) on a timm ``VisionTransformer``; clarity beats speed here.

Site ``l`` is the output of ``model.blocks[l].mlp.act`` (shape
``(batch, tokens, d_ff)``); a neuron ``(l, j)`` is channel ``j`` read at the CLS
token (index 0). ``F`` is the softmax probability of the target class
(``output="prob"``, the paper's choice) or its raw logit (``output="logit"``).

Three entry points:

``reference_paper_search``  -- layer-progressive search, ``mode="paper"``
    Per image (batch of 1, a Python loop over images):

    * one clean forward (``no_grad``) records ``a0[l]`` = CLS row of every site;
    * for ``t = 0 .. L-1``: one forward over the ``m`` alpha rows
      ``alpha_k = k/m, k = 0..m-1`` (left Riemann grid) in which the CLS row of
      every site ``l <= t`` is *overwritten* (freeze) by a leaf tensor of shape
      ``(m, d_ff)`` equal to ``a0[l]``, except for the set neurons, which hold
      ``alpha_k * a0[l]``. The set is the chosen prefix (``k`` neurons per layer
      ``l < t``) plus *all* ``d_ff`` neurons of site ``t``;
    * then one SEPARATE ``torch.autograd.grad(F.sum(), leaf_l,
      retain_graph=True)`` per patched layer ``l = 0..t`` (``t + 1`` calls),
      giving ``h_l(k) = dF/da_l`` at step ``k``;
    * candidate score of neuron ``j`` of site ``t``::

          [sum_k (h_{t,j}(k) + sum_{l<t} sum_{p in prefix_l} h_{l,p}(k))]
        * [a0_{t,j}/m + sum_{l<t} sum_{p in prefix_l} a0_{l,p}/m]

    * the ``k`` best ``j`` (``torch.topk``, best first) all join the prefix and
      all of them enter the sums of later layers (the released top-k script's
      bug of dropping ``k-1`` of them is NOT reproduced).

``reference_paper_jas``  -- the paper-mode JAS of given paths
    Freeze every site from layer 0 to the deepest layer of the path, set the path
    neurons to ``alpha_k * a0``, one forward over ``m`` rows, one separate gradient
    call per patched layer, and the product of sums
    ``[sum_k sum_{n in N} dF/da_n(alpha_k)] * [sum_{n in N} a0_n / m]``.

``reference_exact_greedy``  -- exact greedy (gate semantics, no freeze)
    At layer ``t``, for every candidate ``j`` of site ``t``:
    ``JAS(prefix + {j}) = F(x) - F(x with prefix + {j} zeroed at CLS)``, one full
    model forward row per candidate (candidates batched in chunks of
    ``chunk_size`` rows), no backward. Top-k, best first, all ``k`` join the
    prefix. This is the oracle for ``refine="all"``.

Work counters (``ReferenceStats``, pass ``stats=ReferenceStats()`` to collect;
counts are *added*, so one object can accumulate several calls). With ``B``
images, ``L`` layers, ``m`` steps, ``D`` = d_ff (same in every layer):

=========================  ==================  =====================  ==============  =================
function                   forward_calls       forward_rows           grad_calls      grad_rows
=========================  ==================  =====================  ==============  =================
reference_paper_search     B * (1 + L)         B * (1 + L*m)          B * L(L+1)/2    B * m * L(L+1)/2
reference_paper_jas (T     B * 2               B * (1 + m)            B * T           B * m * T
layers in the path)
reference_exact_greedy     B * (1 + L*ceil(    B * (1 + L*D)          0               0
                           D/chunk_size))
=========================  ==================  =====================  ==============  =================

``grad_rows`` counts, for every gradient call, the number of forward rows it
back-propagates through (``m``): each call is a separate backward over a retained
graph, so ``grad_rows`` is the number of image-backwards. For ViT-B/16
(``L = 12``, ``m = 20``) the search costs 241 image forwards and 78 gradient
calls = 1,560 image backwards per image.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import Tensor, nn

__all__ = [
    "ReferenceStats",
    "reference_paper_search",
    "reference_paper_jas",
    "reference_exact_greedy",
    "site_modules",
    "clean_cls_activations",
    "output_function",
]

TargetType = Union[int, Sequence[int], Tensor]


# ---------------------------------------------------------------------------
# Counters
# ---------------------------------------------------------------------------


@dataclass
class ReferenceStats:
    """Work done by the reference implementations (added to, never reset).

    ``forward_calls``: model forward calls; ``forward_rows``: image rows over all
    forward calls (one row = one image forward); ``grad_calls``: calls of
    ``torch.autograd.grad``; ``grad_rows``: image rows back-propagated over all
    gradient calls (one row = one image backward); ``images``: images processed.
    """

    forward_calls: int = 0
    forward_rows: int = 0
    grad_calls: int = 0
    grad_rows: int = 0
    images: int = 0

    def as_dict(self) -> dict:
        return {
            "forward_calls": self.forward_calls,
            "forward_rows": self.forward_rows,
            "grad_calls": self.grad_calls,
            "grad_rows": self.grad_rows,
            "images": self.images,
        }


def _count_forward(stats: Optional[ReferenceStats], rows: int) -> None:
    if stats is not None:
        stats.forward_calls += 1
        stats.forward_rows += int(rows)


def _count_grad(stats: Optional[ReferenceStats], rows: int) -> None:
    if stats is not None:
        stats.grad_calls += 1
        stats.grad_rows += int(rows)


# ---------------------------------------------------------------------------
# Plain helpers
# ---------------------------------------------------------------------------


def site_modules(model: nn.Module) -> List[nn.Module]:
    """``[model.blocks[l].mlp.act for l in range(L)]`` of a timm VisionTransformer."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError(
            "reference_search expects a timm VisionTransformer: looked for "
            "`model.blocks[i].mlp.act` and found no `blocks` attribute"
        )
    sites = []
    for i, block in enumerate(blocks):
        mlp = getattr(block, "mlp", None)
        act = getattr(mlp, "act", None) if mlp is not None else None
        if act is None:
            raise ValueError(f"reference_search: `model.blocks[{i}].mlp.act` not found")
        sites.append(act)
    if len(set(id(s) for s in sites)) != len(sites):
        raise ValueError("reference_search: `blocks[i].mlp.act` modules must be distinct objects")
    return sites


def _targets_tensor(targets: TargetType, batch: int, device: torch.device) -> Tensor:
    if isinstance(targets, int):
        return torch.full((batch,), targets, dtype=torch.long, device=device)
    t = torch.as_tensor(targets, dtype=torch.long, device=device).reshape(-1)
    if t.numel() == 1:
        t = t.expand(batch).clone()
    if t.numel() != batch:
        raise ValueError(f"got {t.numel()} targets for {batch} images")
    return t


def output_function(logits: Tensor, target: int, output: str) -> Tensor:
    """``F`` per row: softmax probability (``"prob"``) or logit (``"logit"``) of ``target``."""
    if output == "prob":
        return torch.softmax(logits, dim=-1)[:, target]
    if output == "logit":
        return logits[:, target]
    raise ValueError(f"output must be 'prob' or 'logit', got {output!r}")


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


def _run_with_hooks(model: nn.Module, x: Tensor, hooks: Sequence[Tuple[nn.Module, Callable]]) -> Tensor:
    """Forward ``x`` with the given ``(module, forward_hook)`` pairs installed, then remove them."""
    handles = [module.register_forward_hook(hook) for module, hook in hooks]
    try:
        return model(x)
    finally:
        for h in handles:
            h.remove()


def clean_cls_activations(
    model: nn.Module, x: Tensor, stats: Optional[ReferenceStats] = None
) -> Tuple[List[Tensor], Tensor]:
    """One clean forward (``no_grad``) of one image ``x`` (shape ``(1, C, H, W)``).

    Returns ``a0`` (list over layers of the CLS row, shape ``(d_ff,)``) and the logits
    ``(1, classes)``.
    """
    sites = site_modules(model)
    a0: List[Optional[Tensor]] = [None] * len(sites)

    def make_recorder(layer: int):
        def hook(module, inputs, out):
            a0[layer] = out[0, 0, :].detach().clone()

        return hook

    with torch.no_grad():
        logits = _run_with_hooks(model, x, [(s, make_recorder(l)) for l, s in enumerate(sites)])
    _count_forward(stats, x.shape[0])
    return a0, logits  # type: ignore[return-value]


def _freeze_hook(leaf: Tensor) -> Callable:
    """Forward hook: overwrite the CLS row of the site output by ``leaf`` (shape ``(rows, d_ff)``)."""

    def hook(module, inputs, out):
        return torch.cat([leaf.unsqueeze(1).to(out.dtype), out[:, 1:, :]], dim=1)

    return hook


def _gate_hook(gate: Tensor) -> Callable:
    """Forward hook: multiply the CLS row of the site output by ``gate`` (shape ``(rows, d_ff)``)."""

    def hook(module, inputs, out):
        cls_row = out[:, 0, :] * gate.to(out.dtype)
        return torch.cat([cls_row.unsqueeze(1), out[:, 1:, :]], dim=1)

    return hook


def _frozen_forward_and_grads(
    model: nn.Module,
    x: Tensor,
    target: int,
    a0: List[Tensor],
    set_masks: List[Tensor],
    m: int,
    output: str,
    stats: Optional[ReferenceStats],
) -> List[Tensor]:
    """The scripts' inner step, literally.

    Patches the sites ``0 .. len(set_masks)-1``: the CLS row of site ``l`` becomes a
    leaf of shape ``(m, d_ff)`` whose row ``k`` is ``a0[l]`` with the set neurons
    (``set_masks[l]``, bool ``(d_ff,)``) multiplied by ``alpha_k = k/m``. One forward
    over the ``m`` rows, then one separate ``autograd.grad(F.sum(), leaf_l,
    retain_graph=True)`` per patched layer. Returns ``[h_l]`` with ``h_l`` of shape
    ``(m, d_ff)``: ``h_l[k, j] = dF/da_{l,j}`` at step ``k``.
    """
    sites = site_modules(model)
    alphas = torch.arange(m, dtype=a0[0].dtype, device=a0[0].device) / m  # k/m, k = 0..m-1
    leaves = []
    for l, mask in enumerate(set_masks):
        scale = torch.ones(m, a0[l].shape[0], dtype=a0[l].dtype, device=a0[l].device)
        scale[:, mask] = alphas[:, None]  # set neurons -> alpha_k, others -> 1 (clean value)
        leaf = (a0[l].unsqueeze(0) * scale).detach().requires_grad_(True)
        leaves.append(leaf)

    xs = x.expand(m, *x.shape[1:])  # the m alpha steps batched into one forward
    with torch.enable_grad():
        logits = _run_with_hooks(model, xs, [(sites[l], _freeze_hook(leaf)) for l, leaf in enumerate(leaves)])
        _count_forward(stats, m)
        f = output_function(logits, target, output)
        grads = []
        for l, leaf in enumerate(leaves):  # one separate gradient call per patched layer
            (g,) = torch.autograd.grad(f.sum(), leaf, retain_graph=True)
            _count_grad(stats, m)
            grads.append(g.detach())
    return grads


# ---------------------------------------------------------------------------
# Paper-mode search (mode="paper")
# ---------------------------------------------------------------------------


def reference_paper_search(
    model: nn.Module,
    images: Tensor,
    targets: TargetType,
    k: int = 1,
    m: int = 20,
    output: str = "prob",
    stats: Optional[ReferenceStats] = None,
) -> Tuple[Tensor, Tensor]:
    """Layer-progressive neuron path search, paper semantics, literal and slow.

    ``model`` must be a timm VisionTransformer in eval mode (the oracle does not
    change its mode).

    Returns ``paths`` (``(batch, L, k)`` long, best first within a layer) and the
    chosen candidate scores ``scores`` (``(batch, L, k)``, the scripts' product of
    sums at the layer where each neuron was chosen).
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    if m < 1:
        raise ValueError("m must be >= 1")
    device = _model_device(model)
    images = images.to(device)
    batch = images.shape[0]
    tgt = _targets_tensor(targets, batch, device)
    num_layers = len(site_modules(model))

    all_paths = []
    all_scores = []
    for i in range(batch):  # batch of 1: loop over images
        x = images[i : i + 1]
        target = int(tgt[i])
        a0, _ = clean_cls_activations(model, x, stats)
        if stats is not None:
            stats.images += 1

        prefix: List[Tensor] = []  # prefix[l]: the k chosen neuron indices of layer l
        chosen_scores: List[Tensor] = []
        for t in range(num_layers):
            d_ff = a0[t].shape[0]
            if k > d_ff:
                raise ValueError(f"k={k} exceeds d_ff={d_ff} of layer {t}")
            # the set: prefix neurons of layers < t, and every neuron of site t
            set_masks = []
            for l in range(t):
                mask = torch.zeros(a0[l].shape[0], dtype=torch.bool, device=device)
                mask[prefix[l]] = True
                set_masks.append(mask)
            set_masks.append(torch.ones(d_ff, dtype=torch.bool, device=device))

            h = _frozen_forward_and_grads(model, x, target, a0, set_masks, m, output, stats)

            # prefix terms: sum over the chosen neurons of earlier layers
            prefix_grad = torch.zeros(m, dtype=h[t].dtype, device=device)  # per step k
            prefix_act = torch.zeros((), dtype=a0[t].dtype, device=device)
            for l in range(t):
                for p in prefix[l].tolist():
                    prefix_grad = prefix_grad + h[l][:, p]
                    prefix_act = prefix_act + a0[l][p] / m

            # candidate score of every j of site t (loop kept literal, one j at a time)
            cand = torch.empty(d_ff, dtype=h[t].dtype, device=device)
            for j in range(d_ff):
                grad_sum = (h[t][:, j] + prefix_grad).sum()  # sum over k
                act_sum = a0[t][j] / m + prefix_act
                cand[j] = grad_sum * act_sum

            best_scores, best = torch.topk(cand, k)
            prefix.append(best)
            chosen_scores.append(best_scores)

        all_paths.append(torch.stack(prefix))
        all_scores.append(torch.stack(chosen_scores))

    paths = torch.stack(all_paths).to(torch.long)
    scores = torch.stack(all_scores)
    return paths, scores


def reference_paper_jas(
    model: nn.Module,
    images: Tensor,
    targets: TargetType,
    paths: Tensor,
    m: int = 20,
    output: str = "prob",
    stats: Optional[ReferenceStats] = None,
    return_terms: bool = False,
):
    """Paper-mode JAS of ``paths``, literal and slow.

    ``paths``: ``(batch, T, k)`` or ``(batch, T)`` neuron indices of layers
    ``0 .. T-1`` (``T <= L``; a full path has ``T = L``). Sites ``0 .. T-1`` are
    frozen (the deepest layer holding a path neuron is ``T-1``), path neurons set to
    ``alpha_k * a0``. Returns ``jas`` of shape ``(batch,)``::

        [sum_k sum_{n in N} dF/da_n(alpha_k)] * [sum_{n in N} a0_n / m]

    With ``return_terms=True`` also returns the per-neuron terms
    ``(a0_n/m) * sum_k dF/da_n(alpha_k)``, shaped like ``paths`` (``(batch, T, k)``).
    A neuron listed twice in one layer counts once in the set (and once in the sums).
    """
    device = _model_device(model)
    images = images.to(device)
    paths = torch.as_tensor(paths, device=device).to(torch.long)
    squeeze = paths.dim() == 2
    if squeeze:
        paths = paths.unsqueeze(-1)
    batch, depth, _ = paths.shape
    if images.shape[0] != batch:
        raise ValueError(f"{images.shape[0]} images but {batch} paths")
    num_layers = len(site_modules(model))
    if not 1 <= depth <= num_layers:
        raise ValueError(f"paths cover {depth} layers, model has {num_layers}")
    tgt = _targets_tensor(targets, batch, device)

    jas = []
    terms_all = []
    for i in range(batch):
        x = images[i : i + 1]
        target = int(tgt[i])
        a0, _ = clean_cls_activations(model, x, stats)
        if stats is not None:
            stats.images += 1
        set_masks = []
        for l in range(depth):
            mask = torch.zeros(a0[l].shape[0], dtype=torch.bool, device=device)
            mask[paths[i, l]] = True
            set_masks.append(mask)
        h = _frozen_forward_and_grads(model, x, target, a0, set_masks, m, output, stats)

        grad_sum = torch.zeros((), dtype=h[0].dtype, device=device)
        act_sum = torch.zeros((), dtype=a0[0].dtype, device=device)
        for l in range(depth):
            for n in torch.nonzero(set_masks[l]).flatten().tolist():
                grad_sum = grad_sum + h[l][:, n].sum()
                act_sum = act_sum + a0[l][n] / m
        jas.append(grad_sum * act_sum)

        terms = torch.empty(paths.shape[1:], dtype=h[0].dtype, device=device)
        for l in range(depth):
            for r, n in enumerate(paths[i, l].tolist()):
                terms[l, r] = (a0[l][n] / m) * h[l][:, n].sum()
        terms_all.append(terms)

    jas_t = torch.stack(jas)
    if not return_terms:
        return jas_t
    terms_t = torch.stack(terms_all)
    if squeeze:
        terms_t = terms_t.squeeze(-1)
    return jas_t, terms_t


# ---------------------------------------------------------------------------
# Exact greedy (gate semantics; oracle for refine="all")
# ---------------------------------------------------------------------------


def reference_exact_greedy(
    model: nn.Module,
    images: Tensor,
    targets: TargetType,
    k: int = 1,
    output: str = "prob",
    chunk_size: int = 256,
    stats: Optional[ReferenceStats] = None,
) -> Tuple[Tensor, Tensor]:
    """Exact greedy path search under gate semantics, literal and slow.

    At layer ``t`` every candidate ``j`` of site ``t`` is scored by
    ``JAS(prefix + {j}) = F(x) - F(x; prefix + {j} zeroed at the CLS token)``
    (no freeze: everything downstream of a zeroed neuron is recomputed), with one
    full model forward row per candidate (candidates batched ``chunk_size`` rows
    per forward). The ``k`` best (``torch.topk``, best first) all join the prefix.
    Returns ``paths`` ``(batch, L, k)`` long and ``scores`` ``(batch, L, k)`` (the
    exact JAS of ``prefix + {j}`` for each chosen ``j``).
    """
    if k < 1:
        raise ValueError("k must be >= 1")
    if chunk_size < 1:
        raise ValueError("chunk_size must be >= 1")
    device = _model_device(model)
    images = images.to(device)
    batch = images.shape[0]
    tgt = _targets_tensor(targets, batch, device)
    sites = site_modules(model)
    num_layers = len(sites)

    all_paths = []
    all_scores = []
    for i in range(batch):
        x = images[i : i + 1]
        target = int(tgt[i])
        a0, logits = clean_cls_activations(model, x, stats)  # a0 only gives d_ff per layer
        if stats is not None:
            stats.images += 1
        f_clean = output_function(logits, target, output)[0]

        prefix: List[Tensor] = []
        chosen_scores: List[Tensor] = []
        for t in range(num_layers):
            d_ff = a0[t].shape[0]
            if k > d_ff:
                raise ValueError(f"k={k} exceeds d_ff={d_ff} of layer {t}")
            cand = torch.empty(d_ff, dtype=f_clean.dtype, device=device)
            for start in range(0, d_ff, chunk_size):
                js = list(range(start, min(start + chunk_size, d_ff)))
                rows = len(js)
                hooks = []
                for l in range(t + 1):
                    gate = torch.ones(rows, a0[l].shape[0], dtype=a0[l].dtype, device=device)
                    if l < t:
                        gate[:, prefix[l]] = 0.0  # prefix removed in every row
                    else:
                        for r, j in enumerate(js):
                            gate[r, j] = 0.0  # row r removes candidate j
                    hooks.append((sites[l], _gate_hook(gate)))
                with torch.no_grad():
                    out = _run_with_hooks(model, x.expand(rows, *x.shape[1:]), hooks)
                _count_forward(stats, rows)
                f_removed = output_function(out, target, output)
                for r, j in enumerate(js):
                    cand[j] = f_clean - f_removed[r]
            best_scores, best = torch.topk(cand, k)
            prefix.append(best)
            chosen_scores.append(best_scores)
        all_paths.append(torch.stack(prefix))
        all_scores.append(torch.stack(chosen_scores))

    return torch.stack(all_paths).to(torch.long), torch.stack(all_scores)
