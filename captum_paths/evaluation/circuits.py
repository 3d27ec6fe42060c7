"""Class circuits: sparse sets of units that keep a class's decision when every other
unit is ablated, learned with hard-concrete masks; and attribution patching, the cheap
ranking they are compared with.

A circuit of class ``c`` is a keep mask over the units of the sites (FFN neurons,
attention heads, or both): kept units run as they are, every other unit takes its
baseline at every token: zero, or (mean ablation) its mean activation over reference
images of *every* class. A mean over the class's own images would carry the class: on
the pretrained DINOv2 ViT-S/14 two heads kept with everything else at the class-3
mean keep 99.8% of class 3's probability on held-out images, whatever those heads do. :func:`learn_circuits` learns one mask per sparsity
strength ``lambda`` on the class's training images by minimising

``loss = -mean log p_c(x; masked) + lambda * E[units kept] / units``

with a hard-concrete relaxation of the binary mask (Louizos, Welling and Kingma,
"Learning Sparse Neural Networks through L0 Regularization", ICLR 2018): unit ``u``
has a logit ``log_alpha_u``; a sample is ``z = clip(sigmoid((log u - log(1 - u) +
log_alpha) / beta) * (zeta - gamma) + gamma, 0, 1)`` with ``u ~ U(0, 1)``, and the
expected number of units kept is ``sum_u sigmoid(log_alpha_u - beta * log(-gamma /
zeta))``. After training a unit is kept when its deterministic gate
``clip(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)`` exceeds 0.5. Every
strength is trained in the same batches (rows are ``strengths x images``), seeded:
deterministic on the CPU.

:func:`attribution_patching` ranks units by the first-order estimate of ablating each
one alone, ``|sum_tokens (a_u - b_u) * dF/da_u|`` averaged over images (one forward and
one backward per batch; Nanda 2023, Syed et al. 2023), the peer baseline of learned
masks in circuit discovery.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass, field
from typing import Any, ContextManager, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from captum_paths.attribution.layer_baselines import (
    CounterfactualBaseline,
    LayerBaseline,
    MeanBaseline,
    SiteValues,
    as_layer_baselines,
    blend,
)
from captum_paths.model.loading import as_logits_model
from captum_paths.model.sites import NeuronSites, resolve_sites
from captum_paths.model.tokens import TokenSelection

__all__ = ["HardConcrete", "LearnedCircuit", "learn_circuits", "attribution_patching", "circuit_probabilities",
           "circuit_path_overlap", "unit_sites",
           "circuit_sites", "circuit_study", "circuit_summary", "fewest_circuit_units", "DEFAULT_STRENGTHS",
           "DEFAULT_FRACTIONS", "CIRCUIT_COLUMNS", "OBJECTIVES"]

logger = logging.getLogger(__name__)

#: sparsity strengths swept by default (``lambda``, per unit fraction kept)
DEFAULT_STRENGTHS: Tuple[float, ...] = (0.25, 0.5, 1.0, 2.0, 4.0)
#: what the masked model is trained to keep
OBJECTIVES = ("logprob", "kl")


@dataclass(frozen=True)
class HardConcrete:
    """The hard-concrete distribution of a gate in [0, 1] with mass at 0 and 1.

    Attributes:
        beta (float): temperature. Default: 2/3.
        gamma (float): lower end of the stretched interval (< 0). Default: -0.1.
        zeta (float): upper end (> 1). Default: 1.1.
    """

    beta: float = 2.0 / 3.0
    gamma: float = -0.1
    zeta: float = 1.1

    def sample(self, log_alpha: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """A gate sample of the shape of ``log_alpha``, differentiable in it."""
        u = torch.rand(log_alpha.shape, generator=generator, dtype=log_alpha.dtype).to(log_alpha.device)
        u = u.clamp(1e-6, 1 - 1e-6)
        s = torch.sigmoid((torch.log(u) - torch.log1p(-u) + log_alpha) / self.beta)
        return (s * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def deterministic(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """The gate at test time: ``clip(sigmoid(log_alpha) * (zeta - gamma) + gamma, 0, 1)``."""
        return (torch.sigmoid(log_alpha) * (self.zeta - self.gamma) + self.gamma).clamp(0.0, 1.0)

    def expected_kept(self, log_alpha: torch.Tensor) -> torch.Tensor:
        """``P(gate > 0)`` per unit: the expected L0 norm's terms."""
        return torch.sigmoid(log_alpha - self.beta * np.log(-self.gamma / self.zeta))


@dataclass
class LearnedCircuit:
    """The circuit of one class at one sparsity strength.

    Attributes:
        label (int): the class.
        strength (float): the sparsity strength ``lambda`` it was trained with.
        keep (list of Tensor): per layer a bool mask ``(width_l,)``: the units kept.
        log_alpha (list of Tensor): per layer the learned gate logits ``(width_l,)`` (the
            units' ranking: larger is kept longer).
        losses (list of float): the training loss per step (faithfulness + sparsity).
        kinds (list of str): the kind of unit of each layer (``"neuron"``, ``"head"``).
        names (list of str): the module name of each layer's site.
    """

    label: int
    strength: float
    keep: List[torch.Tensor]
    log_alpha: List[torch.Tensor]
    losses: List[float] = field(default_factory=list)
    kinds: List[str] = field(default_factory=list)
    names: List[str] = field(default_factory=list)

    @property
    def units_kept(self) -> int:
        """Units in the circuit, over all layers."""
        return int(sum(int(k.sum()) for k in self.keep))

    @property
    def total_units(self) -> int:
        """Units of the sites, over all layers."""
        return int(sum(k.numel() for k in self.keep))

    def units(self) -> List[Tuple[int, int]]:
        """The circuit's ``(layer, unit)`` pairs, layer by layer."""
        return [(layer, int(u)) for layer, k in enumerate(self.keep) for u in k.nonzero().flatten().tolist()]

    def to_json(self) -> Dict[str, Any]:
        """A JSON-able dict: label, strength, units kept per layer, their indices and mask logits."""
        return {"label": int(self.label), "strength": float(self.strength), "units_kept": self.units_kept,
                "total_units": self.total_units, "kinds": list(self.kinds), "names": list(self.names),
                "kept_per_layer": [int(k.sum()) for k in self.keep],
                "units": [k.nonzero().flatten().tolist() for k in self.keep],
                "log_alpha": [[round(float(v), 5) for v in a.tolist()] for a in self.log_alpha],
                "final_loss": self.losses[-1] if self.losses else None}

    @classmethod
    def from_json(cls, data: Dict[str, Any]) -> "LearnedCircuit":
        """The circuit :meth:`to_json` wrote (the losses keep only the final one).

        Example::

            >>> LearnedCircuit.from_json(circuit.to_json()).units() == circuit.units()
            True
        """
        log_alpha = [torch.tensor(a, dtype=torch.float32) for a in data["log_alpha"]]
        keep = []
        for units, alpha in zip(data["units"], log_alpha):
            mask = torch.zeros(alpha.numel(), dtype=torch.bool)
            mask[torch.tensor(units, dtype=torch.long)] = True
            keep.append(mask)
        losses = [] if data.get("final_loss") is None else [float(data["final_loss"])]
        return cls(int(data["label"]), float(data["strength"]), keep, log_alpha, losses,
                   list(data.get("kinds", [])), list(data.get("names", [])))


def circuit_path_overlap(circuit: LearnedCircuit, paths: Any, path_layers: Sequence[Any]) -> Dict[str, float]:
    """How much of a set of paths lies inside a circuit.

    Args:
        circuit (LearnedCircuit): the circuit.
        paths (Tensor or PathResult): ``(N, L, k)`` unit indices of the paths (``-1`` for none).
        path_layers (sequence of int or str): the circuit layer of each path layer, by index or by
            site name (``circuit.names``), ``L`` of them.

    Returns:
        dict: ``path_units`` (distinct ``(layer, unit)`` pairs of the paths), ``inside`` (those in the
        circuit), ``share`` (``inside / path_units``), ``occurrence_share`` (share of the paths'
        entries, an entry per image, layer and slot, that the circuit keeps) and ``chance`` (the share
        of all units of the path layers that the circuit keeps: the share a random unit has).

    Example::

        >>> circuit_path_overlap(circuits[3][-1], result.paths[labels == 3], sites.names)["share"]
    """
    tensor = getattr(paths, "paths", paths)
    tensor = torch.as_tensor(tensor).long().cpu()
    if tensor.dim() != 3:
        raise ValueError(f"paths must be (N, L, k) unit indices; got shape {tuple(tensor.shape)}")
    if len(path_layers) != tensor.shape[1]:
        raise ValueError(f"path_layers must name the circuit layer of each of the paths' {tensor.shape[1]} layers; "
                         f"got {len(path_layers)}")
    layers = []
    for layer in path_layers:
        if isinstance(layer, str):
            if layer not in circuit.names:
                raise ValueError(f"path_layers: {layer!r} is not a layer of the circuit {list(circuit.names)}")
            layer = list(circuit.names).index(layer)
        if not 0 <= int(layer) < len(circuit.keep):
            raise ValueError(f"path_layers: layer {layer!r} is not one of the circuit's {len(circuit.keep)} layers")
        layers.append(int(layer))
    distinct, inside, entries, kept_entries = set(), 0, 0, 0
    for p, layer in enumerate(layers):
        keep = circuit.keep[layer]
        units = tensor[:, p].reshape(-1)
        units = units[units >= 0]
        if len(units) and int(units.max()) >= keep.numel():
            raise ValueError(f"paths: unit {int(units.max())} at path layer {p} is outside the circuit layer "
                             f"{layer} of {keep.numel()} units")
        entries += len(units)
        kept_entries += int(keep[units].sum())
        for u in units.unique().tolist():
            distinct.add((layer, u))
            inside += bool(keep[u])
    chance_layers = sorted(set(layers))
    chance = sum(int(circuit.keep[l].sum()) for l in chance_layers) / max(1, sum(circuit.keep[l].numel()
                                                                                  for l in chance_layers))
    return {"path_units": len(distinct), "inside": inside, "share": inside / len(distinct) if distinct else float("nan"),
            "occurrence_share": kept_entries / entries if entries else float("nan"), "chance": chance}


def unit_sites(model: nn.Module, units: str = "mixed") -> NeuronSites:
    """The sites of a circuit made of ``units`` of ``model``: ``"mixed"`` (every attention head and
    FFN neuron, :meth:`NeuronSites.for_units <captum_paths.model.sites.NeuronSites.for_units>`; the
    FFN neurons alone where the model's heads are unknown), ``"neurons"`` or ``"heads"``.

    Example::

        >>> unit_sites(model).kinds                   # ['head', 'neuron', 'head', 'neuron', ...]
    """
    from captum_paths.model.sites import UNITS

    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}; got {units!r}")
    try:
        return NeuronSites.for_units(model, units)
    except ValueError:
        if units != "mixed":
            raise
        logger.info("circuits: the model's heads are unknown; the circuits are made of FFN neurons")
        return NeuronSites.from_model(model)


def circuit_sites(model: nn.Module, sites: Any = None, tokens: str = "all") -> NeuronSites:
    """The sites a circuit masks: ``sites`` (default the model's FFN neurons) read at every
    token (``tokens="all"``, the default: a CLS-pooled model moves information through the
    patch tokens too) or at their own selection (``"selected"``).

    Args:
        model (nn.Module): the model.
        sites (NeuronSites, module or list, optional): the units (default: FFN neurons).
        tokens (str): ``"all"`` or ``"selected"``.

    Returns:
        NeuronSites (a copy when the tokens change).
    """
    sites = resolve_sites(model, sites)
    if tokens not in ("all", "selected"):
        raise ValueError(f"tokens must be 'all' or 'selected'; got {tokens!r}")
    if tokens == "all":
        sites = copy.copy(sites)
        sites.tokens = TokenSelection("all", (), sites.tokens.num_prefix_tokens)
    return sites


def _masking(sites: NeuronSites, gates: Sequence[torch.Tensor], base: SiteValues) -> ContextManager[None]:
    """Site edits ``gates * a + (1 - gates) * b`` per layer; ``gates[l]`` is ``(1 or rows, width_l)``
    and the baseline ``b`` is shared by the rows."""
    first = torch.zeros(1, dtype=torch.long)

    def edit(layer: int):
        def fn(act: torch.Tensor) -> torch.Tensor:
            return blend(act, gates[layer].to(act.device, act.dtype), base.rows(layer, first))
        return fn

    return sites.edit({layer: edit(layer) for layer in range(sites.num_layers)})


def _resolve(baseline: LayerBaseline, sites: NeuronSites, forward, images: torch.Tensor
             ) -> Tuple[SiteValues, Dict[int, torch.Tensor], torch.Tensor]:
    """The baseline of every image (``ValueError`` for one that differs per image), with the site
    activations ``{layer: (1, positions, units)}`` and logits ``(1, classes)`` of the first image that
    resolved it."""
    if isinstance(baseline, CounterfactualBaseline):
        raise ValueError(f"layer_baselines: a circuit's ablated units take one baseline for every image (zero, mean "
                         f"or values given per unit or per token); got {baseline!r}, which differs per image")
    with torch.no_grad(), sites.record() as clean:
        logits = forward(images[:1])
    clean = dict(clean)
    base = baseline.resolve(sites, forward, (images[:1],), (), clean)
    if base.per_image:
        raise ValueError(f"layer_baselines: a circuit's ablated units take one baseline for every image (zero, mean "
                         f"or values given per unit or per token); got {baseline!r}, which differs per image")
    return base, clean, logits


def _check_images(images: Any, name: str = "images") -> torch.Tensor:
    if not isinstance(images, torch.Tensor) or images.dim() != 4 or images.shape[0] < 1:
        raise ValueError(f"{name} must be a (N, C, H, W) tensor with N >= 1; got "
                         f"{tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__}")
    return images


def _check_positive(name: str, value: Any, kind: type = int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int) or not value > 0:
        raise ValueError(f"{name} must be a positive {kind.__name__}; got {value!r}")


def learn_circuits(
    model: nn.Module,
    images: torch.Tensor,
    label: int,
    sites: Any = None,
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    layer_baselines: Any = None,
    objective: str = "logprob",
    steps: int = 200,
    lr: float = 0.1,
    batch_size: int = 16,
    init: float = 3.0,
    tokens: str = "all",
    seed: int = 0,
    progress: bool = False,
) -> List[LearnedCircuit]:
    """Learn the circuit of class ``label`` at each sparsity strength.

    Args:
        model (nn.Module): the model (logits out), in eval mode; its weights are not changed.
        images (Tensor): ``(N, C, H, W)`` training images of the class.
        label (int): the class.
        sites (NeuronSites, module or list, optional): the units masked (default: FFN neurons;
            ``NeuronSites.mixed(heads, neurons)`` for heads and neurons).
        strengths (sequence of float): sparsity strengths ``lambda`` (one circuit each).
        layer_baselines: what masked-out units become: ``None`` or ``"zero"`` (default: 0), or any
            ``layer_baselines`` value; for mean ablation a
            :class:`~captum_paths.attribution.layer_baselines.MeanBaseline` of reference images of
            every class (not the class's own: their mean carries the class).
        objective (str): ``"logprob"`` (keep ``log p_label``) or ``"kl"`` (KL from the full
            model's prediction to the masked one's).
        steps (int): optimisation steps (Adam on the gate logits).
        lr (float): Adam's learning rate.
        batch_size (int): images per step (rows are ``strengths x batch``).
        init (float): initial gate logit (3: every gate near 1, the full model).
        tokens (str): ``"all"`` (mask at every token) or ``"selected"``.
        seed (int): the gate samples and the image batches.
        progress (bool): a progress bar over the steps.

    Returns:
        list of :class:`LearnedCircuit`, one per strength, in the order given.

    Example::

        >>> mean = MeanBaseline(reference_images_of_every_class)
        >>> circuits = learn_circuits(model, images[labels == 3], 3, strengths=(2.0, 8.0), layer_baselines=mean)
        >>> [c.units_kept for c in circuits]          # fewer with a larger strength
    """
    images = _check_images(images)
    if objective not in OBJECTIVES:
        raise ValueError(f"objective must be one of {OBJECTIVES}; got {objective!r}")
    strengths = [float(s) for s in strengths]
    if not strengths or any(s < 0 for s in strengths):
        raise ValueError(f"strengths must be a non-empty list of non-negative numbers; got {strengths!r}")
    for name, value in (("steps", steps), ("batch_size", batch_size)):
        _check_positive(name, value)
    _check_positive("lr", lr, float)
    sites = circuit_sites(model, sites, tokens)
    forward = as_logits_model(model)
    device = next(model.parameters()).device
    images = images.to(device)
    base, acts, full_logits = _resolve(_baseline(layer_baselines), sites, forward, images)
    widths = [acts[l].shape[-1] for l in range(sites.num_layers)]
    if not 0 <= int(label) < full_logits.shape[-1]:
        raise ValueError(f"label must be a class of the model (0..{full_logits.shape[-1] - 1}); got {label!r}")
    total = sum(widths)
    hc = HardConcrete()
    generator = torch.Generator().manual_seed(seed)
    S = len(strengths)
    log_alpha = [torch.full((S, w), float(init), device=device, requires_grad=True) for w in widths]
    optimiser = torch.optim.Adam(log_alpha, lr=lr)
    lam = torch.tensor(strengths, device=device)
    losses: List[List[float]] = [[] for _ in strengths]
    n = images.shape[0]
    for p in model.parameters():
        p.requires_grad_(False)
    bar = tqdm(range(steps), desc=f"circuit of class {label}", disable=not progress, leave=False)
    try:
        for _ in bar:
            batch = torch.randperm(n, generator=generator)[: min(batch_size, n)].to(device)
            x = images[batch]
            b = len(batch)
            gates = [hc.sample(a, generator).repeat_interleave(b, dim=0) for a in log_alpha]  # (S * b, w)
            with torch.enable_grad(), _masking(sites, gates, base):
                logits = forward(x.repeat(S, 1, 1, 1))
            logp = logits.double().log_softmax(-1)
            if objective == "logprob":
                faith = -logp[:, int(label)].view(S, b).mean(dim=1)
            else:
                with torch.no_grad():
                    target = forward(x).double().log_softmax(-1)
                faith = (target.exp() * (target - logp.view(S, b, -1))).sum(-1).mean(dim=1)
            kept = sum(hc.expected_kept(a).sum(dim=1) for a in log_alpha) / total  # (S,)
            loss = faith + lam.double() * kept.double()
            optimiser.zero_grad()
            loss.sum().backward()
            optimiser.step()
            for i, value in enumerate(loss.tolist()):
                losses[i].append(float(value))
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
        bar.close()
    kinds = list(getattr(sites, "kinds", ["neuron"] * len(widths)))
    circuits = []
    for i, strength in enumerate(strengths):
        final = [a[i].detach().cpu() for a in log_alpha]
        keep = [hc.deterministic(a) > 0.5 for a in final]
        circuits.append(LearnedCircuit(int(label), strength, keep, final, losses[i], kinds, list(sites.names)))
    return circuits


def _baseline(layer_baselines: Any) -> LayerBaseline:
    """``layer_baselines`` with ``"zero"`` for 0 (``"mean"`` needs reference images: an error saying so)."""
    if isinstance(layer_baselines, str) and layer_baselines == "zero":
        return as_layer_baselines(None)
    if isinstance(layer_baselines, str) and layer_baselines == "mean":
        raise TypeError("layer_baselines='mean' needs reference images of every class: give "
                        "MeanBaseline(reference_images) (a mean over the class's own images carries the class)")
    return as_layer_baselines(layer_baselines)


def circuit_probabilities(
    model: nn.Module,
    images: torch.Tensor,
    keeps: Sequence[Sequence[torch.Tensor]],
    sites: Any = None,
    layer_baselines: Any = None,
    tokens: str = "all",
    batch_size: int = 64,
) -> torch.Tensor:
    """Softmax of the model on ``images`` with each keep mask applied (every other unit of the
    sites replaced by its baseline at every token).

    Args:
        model (nn.Module): the model (logits out).
        images (Tensor): ``(N, C, H, W)``.
        keeps (sequence): ``M`` keep masks, each a list of per-layer bool tensors ``(width_l,)``.
        sites (optional): the units (default: FFN neurons); read at every token with ``tokens="all"``.
        layer_baselines: what ablated units become (default zero; ``"mean"`` is not accepted
            here: give a :class:`~captum_paths.attribution.layer_baselines.MeanBaseline`).
        tokens (str): ``"all"`` or ``"selected"``.
        batch_size (int): rows (masks x images) per forward.

    Returns:
        Tensor ``(M, N, classes)`` float64 on the CPU.

    Example::

        >>> probs = circuit_probabilities(model, held_out, [c.keep for c in circuits],
        ...                               layer_baselines=MeanBaseline(train_images))
        >>> probs[:, :, label].mean(dim=1)           # mean target probability per circuit
    """
    images = _check_images(images)
    _check_positive("batch_size", batch_size)
    sites = circuit_sites(model, sites, tokens)
    forward = as_logits_model(model)
    device = next(model.parameters()).device
    base, _, _ = _resolve(as_layer_baselines(layer_baselines), sites, forward, images.to(device))
    n, M = images.shape[0], len(keeps)
    if M == 0:
        raise ValueError("keeps must hold at least one keep mask")
    for m, keep in enumerate(keeps):
        if len(keep) != sites.num_layers:
            raise ValueError(f"keeps[{m}] holds {len(keep)} layer masks; the sites have {sites.num_layers} layers")
    masks = [torch.stack([keep[l].to(torch.bool).reshape(-1) for keep in keeps]).float() for l in
             range(sites.num_layers)]  # (M, width_l)
    out = []
    with torch.no_grad():
        for rows in torch.arange(M * n).split(batch_size):
            config, image = rows // n, rows % n
            gates = [m[config].to(device) for m in masks]
            with _masking(sites, gates, base):
                out.append(forward(images[image].to(device)).double().softmax(-1).cpu())
    return torch.cat(out).view(M, n, -1)


def attribution_patching(
    model: nn.Module,
    images: torch.Tensor,
    label: int,
    sites: Any = None,
    layer_baselines: Any = None,
    tokens: str = "all",
    batch_size: int = 32,
) -> List[torch.Tensor]:
    """Attribution-patching scores of every unit for class ``label``: the first-order estimate
    of the change of ``log p_label`` when the unit alone takes its baseline,
    ``|sum_tokens (a_u - b_u) * d log p / d a_u|``, averaged over ``images``.

    Args:
        model (nn.Module): the model (logits out).
        images (Tensor): ``(N, C, H, W)`` images of the class.
        label (int): the class.
        sites (optional): the units (default: FFN neurons).
        layer_baselines: what a unit is patched to: ``None`` or ``"zero"`` (default), or any
            ``layer_baselines`` value (a ``MeanBaseline`` of reference images of every class).
        tokens (str): ``"all"`` (every token, the default) or ``"selected"``.
        batch_size (int): images per forward and backward.

    Returns:
        list of Tensor: per layer the scores ``(width_l,)`` float64 (rank with ``argsort``).

    Example::

        >>> scores = attribution_patching(model, images[labels == 3], 3, layer_baselines=MeanBaseline(reference))
        >>> ranking = [s.argsort(descending=True) for s in scores]   # per layer, best first
    """
    images = _check_images(images)
    _check_positive("batch_size", batch_size)
    sites = circuit_sites(model, sites, tokens)
    forward = as_logits_model(model)
    device = next(model.parameters()).device
    images = images.to(device)
    base, _, _ = _resolve(_baseline(layer_baselines), sites, forward, images)
    totals: Optional[List[torch.Tensor]] = None
    for rows in torch.arange(images.shape[0]).split(batch_size):
        with torch.enable_grad(), sites.record(detach=False) as acts:
            logits = forward(images[rows.to(device)])
            logp = logits.double().log_softmax(-1)[:, int(label)]
            layers = list(range(sites.num_layers))
            grads = torch.autograd.grad(logp.sum(), [acts[l] for l in layers])
        scores = []
        for l, g in zip(layers, grads):
            a = acts[l].detach().double()
            b = base.rows(l, torch.zeros(1, dtype=torch.long))
            gap = a if b is None else a - b.double()
            scores.append((gap * g.double()).sum(dim=1).abs().sum(dim=0).cpu())  # (width,)
        totals = scores if totals is None else [t + s for t, s in zip(totals, scores)]
    return [t / images.shape[0] for t in totals]


#: the columns of :func:`circuit_study`'s table
CIRCUIT_COLUMNS = ("method", "ablation", "label", "strength", "units_kept", "fraction_kept", "images", "mean_prob",
                   "accuracy", "mean_prob_full", "accuracy_full")
#: learned circuits and attribution patching in the study's tables
LEARNED, PATCHING, RANDOM = "learned circuit", "attribution patching", "random ranking"
#: shares of all units kept by the rankings' circuits when no budgets are given
DEFAULT_FRACTIONS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)


def _global_keep(scores: Sequence[torch.Tensor], budget: int, seed: int) -> List[torch.Tensor]:
    """Keep masks of the ``budget`` best units over all layers by ``scores`` (ties: a seeded order)."""
    flat = torch.cat([s.double().reshape(-1) for s in scores])
    tie = torch.from_numpy(np.random.default_rng([seed, 7]).permutation(flat.numel())).double()
    order = np.lexsort((tie.numpy(), -flat.numpy()))[:budget]
    keep = torch.zeros(flat.numel(), dtype=torch.bool)
    keep[torch.from_numpy(order).long()] = True
    return list(keep.split([s.numel() for s in scores]))


def _path_use(paths: torch.Tensor, widths: Sequence[int], where: Sequence[int],
              contributions: Optional[torch.Tensor]) -> List[torch.Tensor]:
    """Per circuit layer, how many paths hold each unit (path layer ``l`` is circuit layer
    ``where[l]``), plus, for units some path holds, a tie-break below one path by their summed
    contribution. Every unit no path holds scores 0, whatever its layer: the paths say nothing about
    it, so those units follow the path units in the ranking's seeded random order (units of layers
    the paths do not cover, heads for neuron paths, are not pushed behind unused neurons)."""
    scores = [torch.zeros(w, dtype=torch.float64) for w in widths]
    for layer, target in enumerate(where):
        width = widths[target]
        units = paths[:, layer].reshape(-1).long().cpu()
        used = units >= 0  # -1: no unit in that slot
        units = units[used]
        count = torch.bincount(units, minlength=width).double()
        if contributions is not None:
            values = contributions[:, layer].reshape(-1).double().cpu()[used]
            total = torch.zeros(width, dtype=torch.float64).index_add_(0, units, torch.nan_to_num(values))
            count = count + 0.5 * torch.sigmoid(total) * (count > 0)  # < 1: never above one more path
        scores[target] = count
    return scores


def circuit_study(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    paths_by_method: Optional[Dict[str, Any]] = None,
    sites: Any = None,
    path_sites: Any = None,
    classes: Optional[Sequence[int]] = None,
    layer_baselines: Any = "mean",
    strengths: Sequence[float] = DEFAULT_STRENGTHS,
    fractions: Sequence[float] = DEFAULT_FRACTIONS,
    train_fraction: float = 0.5,
    split: Optional[Dict[int, Dict[str, List[int]]]] = None,
    steps: int = 200,
    lr: float = 0.1,
    batch_size: int = 16,
    seed: int = 0,
    progress: bool = False,
) -> Tuple["pd.DataFrame", Dict[int, List[LearnedCircuit]]]:
    """Class circuits against rankings, on held-out images: per class, learned circuits (one per
    strength), and the circuits of the best units over all layers by attribution patching, by
    path use (each method of ``paths_by_method``) and at random, at each share of all units.

    Each class's images are split (seeded, :func:`~captum_paths.evaluation.harness.split_by_class`)
    into training images, which learn the masks and rank the units, and held-out images, on
    which every circuit runs with every other unit at its baseline, at every token.

    Args:
        model (nn.Module): the model (logits out).
        images (Tensor): ``(N, C, H, W)``; ``labels`` ``(N,)`` their classes (the target).
        paths_by_method (dict, optional): ``{method: PathResult or (N, L, k) paths}`` aligned with
            ``images``, indexing ``path_sites``: their units ranked by path use (units no training
            path holds, those of layers the paths do not cover included, follow in a seeded random
            order).
        sites (optional): the units (default: every attention head and FFN neuron,
            ``NeuronSites.for_units(model, "mixed")``, or the FFN neurons where heads are unknown).
        path_sites (optional): the sites the paths index, each layer one of ``sites`` (same module
            name); default: the model's FFN neurons.
        classes (sequence of int, optional): the classes studied (default: every class with 2 images).
        layer_baselines: ``"mean"`` (default: the units' mean over the training images of every
            class), ``None``/``"zero"``, or any ``layer_baselines`` value shared by the images.
        strengths, steps, lr, batch_size: the learned circuits' (see :func:`learn_circuits`).
        fractions (sequence of float): shares of all units kept by the rankings' circuits.
        train_fraction (float): share of each class's images that train and rank.
        split (dict, optional): the split itself, ``{label: {"consensus": training rows, "evaluation":
            held-out rows}}`` (default: :func:`~captum_paths.evaluation.harness.split_by_class`).
        seed (int): the splits, the training, the tie-breaks and the random ranking.
        progress (bool): progress bars.

    Returns:
        ``(table, circuits)``: a DataFrame with :data:`CIRCUIT_COLUMNS` (one row per method, class and
        circuit; ``strength`` is NaN for rankings) and ``{label: [LearnedCircuit per strength]}``.

    Example::

        >>> table, circuits = circuit_study(model, images, labels, {"neuron-path": result}, classes=[0, 3])
        >>> circuit_summary(table)                   # mean over classes, fewest units for 80%
    """
    import pandas as pd

    from captum_paths.evaluation.harness import split_by_class

    images = _check_images(images)
    labels = torch.as_tensor(labels).reshape(-1).long().cpu()
    if len(labels) != len(images):
        raise ValueError(f"labels must hold one class per image: {len(labels)} labels for {len(images)} images")
    if sites is None:
        sites = unit_sites(model)
    sites = circuit_sites(model, sites, "all")
    where: List[int] = []
    if paths_by_method:
        path_sites = resolve_sites(model, path_sites)
        missing = [name for name in path_sites.names if name not in sites.names]
        if missing:
            raise ValueError(f"path_sites: layers {missing} of the paths are not among the circuit's sites "
                             f"{list(sites.names)}")
        where = [list(sites.names).index(name) for name in path_sites.names]
    if split is None:
        split = split_by_class(labels, train_fraction, seed)
    else:
        split = {int(c): {"consensus": list(p["consensus"]), "evaluation": list(p["evaluation"])}
                 for c, p in split.items()}
        for c, p in split.items():
            rows = p["consensus"] + p["evaluation"]
            if not p["consensus"] or not p["evaluation"] or set(p["consensus"]) & set(p["evaluation"]) or any(
                    int(labels[r]) != c for r in rows):
                raise ValueError(f"split: class {c} needs training and held-out rows of that class, apart")
    if classes is not None:
        missing = [c for c in classes if int(c) not in split]
        if missing:
            raise ValueError(f"classes {missing} have fewer than 2 images (or none); studied can be: {sorted(split)}")
        split = {int(c): split[int(c)] for c in classes}
    if not split:
        raise ValueError("no class has at least 2 images: nothing to split into training and held-out images")
    train_all = torch.tensor(sorted(i for s in split.values() for i in s["consensus"]), dtype=torch.long)
    if isinstance(layer_baselines, str) and layer_baselines == "mean":
        baseline: Any = MeanBaseline(images[train_all])
        ablation = "mean"
    else:
        baseline = _baseline(layer_baselines)
        ablation = baseline.name
    widths = list(sites.widths) if sites.widths is not None else None
    rows, circuits = [], {}
    for label, parts in split.items():
        train, held = torch.tensor(parts["consensus"]), torch.tensor(parts["evaluation"])
        learned = learn_circuits(model, images[train], label, sites=sites, strengths=strengths,
                                 layer_baselines=baseline, steps=steps, lr=lr, batch_size=batch_size,
                                 seed=seed + label, progress=progress)
        circuits[label] = learned
        if widths is None:
            widths = [k.numel() for k in learned[0].keep]
        total = sum(widths)
        configs: List[Tuple[str, float, List[torch.Tensor]]] = [(LEARNED, c.strength, c.keep) for c in learned]
        rankings = {PATCHING: attribution_patching(model, images[train], label, sites=sites,
                                                   layer_baselines=baseline, batch_size=batch_size)}
        for name, paths in (paths_by_method or {}).items():
            tensor = paths[0] if isinstance(paths, tuple) else getattr(paths, "paths", paths)
            contrib = paths[1] if isinstance(paths, tuple) else getattr(paths, "contributions", None)
            rankings[name] = _path_use(tensor[train], widths, where, None if contrib is None else contrib[train])
        rng = np.random.default_rng([seed, label, 3])
        rankings[RANDOM] = [torch.from_numpy(rng.random(w)) for w in widths]
        budgets = sorted({max(0, min(total, int(round(f * total)))) for f in fractions})
        for name, scores in rankings.items():
            configs += [(name, float("nan"), _global_keep(scores, b, seed + label)) for b in budgets]
        x = images[held]
        probs = circuit_probabilities(model, x, [keep for _, _, keep in configs], sites=sites,
                                      layer_baselines=baseline, batch_size=max(batch_size, 32))
        with torch.no_grad():
            full = as_logits_model(model)(x.to(next(model.parameters()).device)).double().softmax(-1).cpu()
        full_prob, full_acc = float(full[:, label].mean()), float((full.argmax(1) == label).double().mean())
        for (name, strength, keep), p in zip(configs, probs):
            kept = int(sum(int(k.sum()) for k in keep))
            rows.append({"method": name, "ablation": ablation, "label": label, "strength": strength,
                         "units_kept": kept, "fraction_kept": kept / total, "images": len(held),
                         "mean_prob": float(p[:, label].mean()), "accuracy": float((p.argmax(1) == label).double().mean()),
                         "mean_prob_full": full_prob, "accuracy_full": full_acc})
    table = pd.DataFrame(rows, columns=list(CIRCUIT_COLUMNS))
    table.attrs.update(split=split, widths=widths, kinds=list(sites.kinds), fractions=list(fractions))
    return table, circuits


def circuit_summary(table: "pd.DataFrame", fraction: float = 0.8) -> "pd.DataFrame":
    """Per method (and strength for learned circuits), the mean over classes of the units kept and the
    target probability, its share of the unablated one, and whether it reaches ``fraction``.

    Args:
        table (DataFrame): :func:`circuit_study`'s table.
        fraction (float): the share of the unablated target probability asked for.

    Returns:
        DataFrame: ``method, strength, fraction_kept, units_kept, mean_prob, mean_prob_full,
        fraction_of_full, accuracy, reaches``, one row per learned strength and per ranking budget
        (the budget's share of all units in ``fraction_kept``).
    """
    table = table.copy()
    table["budget"] = np.where(table["strength"].isna(), table["fraction_kept"], np.nan)
    keys = ["method", "strength", "budget"]
    summary = (table.groupby(keys, dropna=False, sort=False)[
        ["fraction_kept", "units_kept", "mean_prob", "mean_prob_full", "accuracy"]].mean().reset_index())
    summary["fraction_of_full"] = summary["mean_prob"] / summary["mean_prob_full"]
    summary["reaches"] = summary["fraction_of_full"] >= fraction
    return summary.drop(columns="budget").sort_values(["method", "fraction_kept"]).reset_index(drop=True)


def fewest_circuit_units(table: "pd.DataFrame", fraction: float = 0.8) -> "pd.DataFrame":
    """Per method, the smallest mean share of all units whose circuits keep ``fraction`` of the
    unablated target probability on held-out images (NaN when none does).

    Args:
        table (DataFrame): :func:`circuit_study`'s table.
        fraction (float): the share of the unablated target probability asked for.

    Returns:
        DataFrame: ``method, fraction, fraction_kept, units_kept, fraction_of_full``.
    """
    import pandas as pd

    summary = circuit_summary(table, fraction)
    rows = []
    for method, group in summary.groupby("method", sort=False):
        hit = group[group["reaches"]].sort_values("fraction_kept")
        first = hit.iloc[0] if len(hit) else None
        rows.append({"method": method, "fraction": fraction,
                     "fraction_kept": float("nan") if first is None else float(first["fraction_kept"]),
                     "units_kept": float("nan") if first is None else float(first["units_kept"]),
                     "fraction_of_full": float("nan") if first is None else float(first["fraction_of_full"])})
    return pd.DataFrame(rows)
