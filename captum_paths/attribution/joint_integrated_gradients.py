"""Joint attribution of a set of units (FFN neurons, attention heads) spread over dependent layers."""
from __future__ import annotations

import warnings
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import torch
from captum.log import log_usage

from captum_paths.attribution._machinery import (
    APPROXIMATIONS,
    StepRows,
    edited_output,
    gate,
    gating,
    warn_if_constant_output,
)
from captum_paths.attribution.base import SiteAttribution
from captum_paths.attribution.layer_baselines import LayerBaseline, SiteValues, as_layer_baselines
from captum_paths.attribution.neuron_sets import NeuronSet, parse_neurons
from captum_paths.attribution.output import (
    check_finite_output,
    check_grad_mode,
    check_internal_batch_size,
    format_additional_args,
    format_inputs,
    output_value,
    resolve_target,
)

__all__ = ["JointNeuronIntegratedGradients", "MODES", "default_steps", "check_tolerance", "misses_tolerance",
           "MAX_TOLERANCE_STEPS", "check_paper_baseline"]

MODES = ("gate", "paper")
_DEFAULT_STEPS = {"gate": 50, "paper": 20}
_DEFAULT_METHOD = {"gate": "gausslegendre", "paper": "riemann_left"}


def default_steps(mode: str, n_steps: Optional[int], method: Optional[str]) -> Tuple[int, str]:
    """Resolve ``n_steps`` and ``method`` for a mode, validating both."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}; got {mode!r}")
    method = _DEFAULT_METHOD[mode] if method is None else method
    if method not in APPROXIMATIONS:
        raise ValueError(f"method must be one of {APPROXIMATIONS}; got {method!r}")
    if mode == "paper" and method != "riemann_left":
        raise ValueError(
            f"mode='paper' reproduces the released scripts' left Riemann grid, so method must be "
            f"'riemann_left' (or None); got {method!r}"
        )
    n_steps = _DEFAULT_STEPS[mode] if n_steps is None else n_steps
    if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 2:
        raise ValueError(f"n_steps must be an int >= 2; got {n_steps!r}")
    return n_steps, method


class JointNeuronIntegratedGradients(SiteAttribution):
    r"""Joint Attribution Score (JAS) of a set of units (FFN neurons, attention heads, or both)
    across dependent layers.

    From "Discovering Influential Neuron Path in Vision Transformers" (Wang et al.,
    ICLR 2025, https://arxiv.org/abs/2503.09046). Each neuron ``n`` of the set
    ``N`` gets a multiplicative gate ``g_n`` on its activation at the selected
    tokens; all gates of ``N`` are scaled together by ``alpha`` from 0 to 1 while
    everything downstream is recomputed, and

    ``phi_n = integral_0^1 dF/dg_n(alpha) d alpha``, ``JAS(N) = sum_n phi_n``.

    A gate interpolates between the unit's baseline ``b`` and its activation ``a``:
    ``g * a + (1 - g) * b``; ``b`` is 0 unless ``layer_baselines`` says otherwise (the
    unit's mean over reference images, its value on a counterfactual image, given
    values: :mod:`captum_paths.attribution.layer_baselines`).

    The integral is complete across layers: ``sum_n phi_n = F(x) - F(x; N replaced
    by its baseline)`` exactly. So in ``mode="gate"`` the JAS is that removal
    effect, computed by one forward with the set removed (exact, whatever the
    steps); the per-neuron contributions ``phi_n`` are quadratures of the
    integral, and the convergence delta ``sum_n phi_n - JAS`` is their gap
    (``tol`` adds steps until it is small). ``mode="paper"`` reproduces the
    released research scripts instead (freeze semantics, left Riemann grid,
    product of sums, zero baseline), which is not complete.

    ``attribute`` returns what Captum's attributions return: the contributions, or
    ``(contributions, delta)`` with ``return_convergence_delta=True``, so Captum's
    ``NoiseTunnel`` takes it as it is (``captum.metrics.sensitivity_max`` through a wrapper
    returning a 1-tuple, as for Captum's own layer attributions); ``return_jas=True`` adds
    the joint score: ``(contributions, jas)`` or ``(contributions, jas, delta)``.

    Captum's ``LayerIntegratedGradients`` over several layers treats the layers as
    independent; this class scales neurons of many layers *jointly*.

    The units are those of the ``sites``: with head sites
    (:meth:`~captum_paths.model.sites.NeuronSites.heads_from_model`) a unit ``(layer, h)`` is
    head ``h``, one gate on all its channels at the selected tokens; with mixed sites
    (:meth:`~captum_paths.model.sites.NeuronSites.mixed`) a set can hold heads and neurons of
    many blocks, and everything above holds unchanged (``"gate"`` mode only: the
    paper score is defined for FFN neurons).

    Args:
        model (nn.Module): A vision transformer returning logits (Hugging Face
            models returning ``ModelOutput`` are wrapped to return logits).
        sites (NeuronSites, nn.Module or list of nn.Module, optional): Where the units live
            (neurons, heads or both): a :class:`~captum_paths.model.sites.NeuronSites`, or, as
            Captum's layer arguments, a module of ``model`` (``model.blocks[3].mlp.act``) or a list
            of them, one layer each, read at the tokens of the backbone holding them
            (:meth:`~captum_paths.model.sites.NeuronSites.coerce`). Default:
            ``NeuronSites.from_model(model)`` (which also finds the backbone inside a wrapper).
        output (str, optional): ``"prob"`` explains the softmax probability of
            the target, ``"logit"`` its logit. Default: ``"prob"``.
    """

    @property
    def multiplies_by_inputs(self) -> bool:
        return True

    @log_usage()
    def attribute(
        self,
        inputs: Union[torch.Tensor, Tuple[torch.Tensor, ...]],
        neurons: Any,
        target: Any = None,
        additional_forward_args: Any = None,
        n_steps: Optional[int] = None,
        method: Optional[str] = None,
        internal_batch_size: Optional[int] = None,
        return_convergence_delta: bool = False,
        mode: str = "gate",
        tol: Optional[float] = None,
        layer_baselines: Any = None,
        return_jas: bool = False,
    ) -> Union[torch.Tensor, Tuple[torch.Tensor, ...]]:
        r"""
        Args:
            inputs (Tensor or tuple[Tensor, ...]): Images ``(batch, C, H, W)``
                (every tensor's first dimension is the batch).
            neurons: The unit set(s) (``(layer, j)``: neuron or head ``j`` of site
                ``layer``): a list of ``(layer, neuron)`` pairs shared
                by the batch, a list of such lists (one per example, equal sizes),
                a ``(batch, L, k)`` index tensor (a path, ``k`` neurons per layer),
                or a path-search result (anything with a ``paths`` tensor).
            target (int, list, Tensor, optional): Class explained per example
                (Captum semantics). Default: ``None``, the predicted class.
            additional_forward_args (Any, optional): Extra forward arguments;
                tensors whose first dimension is the batch are expanded with it.
            n_steps (int, optional): Quadrature steps. Default: 50 (``"gate"``),
                20 (``"paper"``).
            method (str, optional): Captum approximation method
                (``riemann_left|right|middle|trapezoid``, ``gausslegendre``).
                Default: ``"gausslegendre"`` (``"gate"``), ``"riemann_left"``
                (``"paper"``, the only grid it accepts).
            internal_batch_size (int, optional): At most this many
                (example, step) rows per forward/backward pass. Results equal one
                big batch. Default: ``None``, all rows at once.
            return_convergence_delta (bool, optional): Also return the
                convergence delta per example: ``sum_n phi_n - (F(x) - F(x; N
                removed))`` (the quadrature gap of the contributions) in
                ``"gate"`` mode, ``JAS - (F(x) - F(x; N removed))`` in
                ``"paper"`` mode. Default: ``False``.
            mode (str, optional): ``"gate"`` (joint gates, complete) or
                ``"paper"`` (the released scripts' score; FFN neuron sites only).
                Default: ``"gate"``.
            tol (float, optional): ``"gate"`` mode only: double the steps of the
                examples whose ``|delta| > tol * |JAS|`` (or above 1e-7) until it
                holds, up to 1024 steps (a warning names those that still miss).
                Default: ``None``, the steps given.
            layer_baselines (optional): The value a removed unit takes: ``None`` or 0
                (zero, the default), a :class:`~captum_paths.attribution.layer_baselines.MeanBaseline`
                (mean over reference images), a
                :class:`~captum_paths.attribution.layer_baselines.CounterfactualBaseline`
                (activation patching from counterfactual images), or per-site values (a dict
                ``{layer: tensor}``, a list, a ``SiteBaseline``). ``"gate"`` mode only for
                anything but zero. Default: ``None``.
            return_jas (bool, optional): Also return the joint score per example,
                after the contributions. Default: ``False`` (Captum's return).

        Per-example neuron sets (and counterfactual baselines) whose count divides the batch
        are repeated for consecutive groups of examples, as Captum's ``NoiseTunnel`` repeats
        each image ``nt_samples`` times in a row (``repeat_interleave``).

        The integral needs gradients: call it outside ``torch.inference_mode()`` (a
        ``RuntimeError`` says so); inside ``torch.no_grad()`` it enables them where needed.

        Returns:
            ``contributions``, ``(contributions, delta)`` with ``return_convergence_delta``;
            with ``return_jas``, ``(contributions, jas)`` or ``(contributions, jas, delta)``:

            - **contributions** (*Tensor*): per-neuron contributions, ``(batch, |N|)``
              in the order given, or ``(batch, L, k)`` for path input.
            - **jas** (*Tensor*): joint score per example, ``(batch,)``; in
              ``"gate"`` mode exactly ``F(x) - F(x; N removed)``.
            - **delta** (*Tensor*): convergence delta per example, ``(batch,)``.

        Examples::

            >>> jig = JointNeuronIntegratedGradients(model)
            >>> phi = jig.attribute(images, neurons=[(0, 12), (3, 101), (5, 7)], target=labels)
            >>> phi.shape
            torch.Size([4, 3])
            >>> phi, jas = jig.attribute(images, [(0, 12), (3, 101)], target=labels, return_jas=True)
            >>> jas.shape                       # F(x) - F(x; set zeroed), exactly
            torch.Size([4])
            >>> phi, delta = jig.attribute(images, [(0, 12)], target=labels,
            ...                            layer_baselines=MeanBaseline(reference_images),
            ...                            return_convergence_delta=True)
        """
        check_grad_mode("JointNeuronIntegratedGradients.attribute")
        n_steps, method = default_steps(mode, n_steps, method)
        baseline = as_layer_baselines(layer_baselines)
        if mode == "paper":
            self.sites.check_neurons_only("mode='paper' (the released scripts' score)")
            check_paper_baseline(baseline)
        check_internal_batch_size(internal_batch_size)
        tol = check_tolerance(tol, mode)
        inputs = format_inputs(inputs, self.model)
        args = format_additional_args(additional_forward_args)
        batch = inputs[0].shape[0]

        with torch.no_grad(), self.sites.record() as clean:
            logits = self.forward_func(*inputs, *args)
        check_finite_output(logits, batch=batch)
        self.sites.check_batch(clean, batch)
        self.sites.check_execution_order(clean)
        widths = [clean[l].shape[-1] for l in range(self.sites.num_layers)]
        device = logits.device
        target = resolve_target(target, logits)
        nset = parse_neurons(neurons, batch, self.sites.num_layers, widths, repeated=True)
        nset = NeuronSet(nset.layers.to(device), nset.units.to(device), nset.path_shape)
        f_clean = output_value(logits, target, self.output)
        base = baseline.resolve(self.sites, self.forward_func, inputs, args, clean)

        run = _Runner(self, inputs, args, target, nset, clean, widths, mode, base)
        everyone = torch.arange(batch, device=device)
        contributions, grad_sums = run.integrate(everyone, n_steps, method, internal_batch_size)
        f_removed = None
        if mode == "gate" or return_convergence_delta:
            with torch.no_grad():
                f_removed = run.value(everyone, torch.zeros(batch, device=device))
        if mode == "gate":
            # completeness: the joint score of the set is exactly its removal effect
            jas = (f_clean - f_removed).double()
            if tol is not None:
                contributions = _refine_to_tolerance(
                    run, contributions, jas, n_steps, method, internal_batch_size, tol
                )
            delta = contributions.sum(dim=1) - jas
        else:
            # paper score: [sum_k sum_n dF/da_n(alpha_k)] * [sum_n a0_n / m]
            jas = grad_sums * run.clean_set_activation() / n_steps
            delta = None if f_removed is None else jas - (f_clean - f_removed).double()
        if not bool((jas != 0).any()):  # a zero-initialised or constant head: say so rather than report zeros
            warn_if_constant_output(contributions, f_clean, f_removed, logits)
        dtype = f_clean.dtype
        result: Tuple[torch.Tensor, ...] = (nset.shape_like_input(contributions.to(dtype)),)
        if return_jas:
            result = result + (jas.to(dtype),)
        if return_convergence_delta:
            result = result + (delta.to(dtype),)
        return result[0] if len(result) == 1 else result

    def has_convergence_delta(self) -> bool:
        return True

    def compute_convergence_delta(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """Not available: Captum's version compares attributions with ``F(end) - F(start)``
        for two *inputs*, but the baseline here is the same input with a unit set
        removed. Use ``attribute(..., return_convergence_delta=True)``."""
        raise NotImplementedError(
            "JointNeuronIntegratedGradients.compute_convergence_delta: the baseline is the input with the "
            "unit set removed, not another input; call attribute(..., return_convergence_delta=True)"
        )


def check_paper_baseline(baseline: LayerBaseline) -> None:
    """``ValueError`` for a non-zero baseline in ``mode="paper"`` (the released scripts' score
    freezes activations scaled towards 0)."""
    if baseline.name != "zero":
        raise ValueError(
            f"mode='paper' reproduces the released scripts' score, which scales activations towards 0; got "
            f"layer_baselines={baseline!r}. Use mode='gate' for other baselines"
        )


#: the most Gauss-Legendre (or other) steps the contribution tolerance doubles up to
MAX_TOLERANCE_STEPS = 1024


def check_tolerance(tol: Any, mode: str) -> Optional[float]:
    """Validate ``tol`` (``None`` or a positive float, gate mode only)."""
    if tol is None:
        return None
    if isinstance(tol, bool) or not isinstance(tol, (int, float)) or not tol > 0:
        raise ValueError(f"tol must be None or a positive number; got {tol!r}")
    if mode != "gate":
        raise ValueError(f"tol applies to mode='gate' only (the paper score is not complete); got mode={mode!r}")
    return float(tol)


def misses_tolerance(delta: torch.Tensor, jas: torch.Tensor, tol: float) -> torch.Tensor:
    """``(batch,)`` bool: where ``|delta| > tol * |JAS|`` (and above 1e-7 absolute)."""
    return delta.abs() > torch.clamp(tol * jas.abs(), min=1e-7)


def _refine_to_tolerance(
    run: "_Runner",
    contributions: torch.Tensor,
    jas: torch.Tensor,
    n_steps: int,
    method: str,
    internal_batch_size: Optional[int],
    tol: float,
) -> torch.Tensor:
    """Double the quadrature steps of the examples whose contributions miss the
    removal effect by more than ``tol * |JAS|`` (or 1e-7 absolute), up to
    :data:`MAX_TOLERANCE_STEPS`. Returns the contributions ``(batch, |N|)``."""
    contributions = contributions.clone()
    while True:
        failing = misses_tolerance(contributions.sum(dim=1) - jas, jas, tol).nonzero().flatten()
        if failing.numel() == 0:
            return contributions
        if n_steps >= MAX_TOLERANCE_STEPS:
            warnings.warn(
                f"tol={tol}: {failing.numel()} example(s) still have |delta| > tol * |JAS| at "
                f"{n_steps} steps; their contributions are reported as they are",
                stacklevel=3,
            )
            return contributions
        n_steps = min(2 * n_steps, MAX_TOLERANCE_STEPS)
        contributions[failing] = run.integrate(failing, n_steps, method, internal_batch_size)[0]


class _Runner:
    """Forward passes with the set scaled by ``alpha``, on (example, step) rows."""

    def __init__(
        self,
        attr: JointNeuronIntegratedGradients,
        inputs: Tuple[torch.Tensor, ...],
        args: Tuple[Any, ...],
        target: torch.Tensor,
        nset: NeuronSet,
        clean: Dict[int, torch.Tensor],
        widths: List[int],
        mode: str,
        base: SiteValues,
    ) -> None:
        self.attr, self.inputs, self.args, self.target = attr, inputs, args, target
        self.nset, self.clean, self.mode, self.base = nset, clean, mode, base
        self.batch = inputs[0].shape[0]
        self.set_layers = sorted(set(nset.layers.unique().tolist()))
        self.masks = {l: nset.mask(l, widths[l]) for l in self.set_layers}
        # deepest layer of each example's set: paper mode freezes layers 0..deepest
        self.deepest = nset.layers.max(dim=1).values

    def _forward(self, ex: torch.Tensor, edits: Dict[int, Callable]) -> torch.Tensor:
        attr = self.attr
        return edited_output(attr.forward_func, attr.sites, attr.output, self.inputs, self.args, self.target, ex, edits)

    def _edits(self, ex: torch.Tensor, alpha: torch.Tensor, grad: bool):
        """Site edits for the rows and the leaves whose gradients are wanted."""
        leaves: Dict[int, torch.Tensor] = {}
        edits: Dict[int, Callable] = {}
        if self.mode == "gate":
            for l in self.set_layers:
                gates = gate(self.masks[l][ex], alpha).requires_grad_(grad)  # (rows, d_ff)
                leaves[l] = gates
                edits[l] = gating(gates, self.base.rows(l, ex))
            return edits, leaves
        frozen_rows = self.deepest[ex]
        for l in range(int(frozen_rows.max()) + 1):
            value = self.clean[l][ex]  # (rows, n_tokens, d_ff)
            if l in self.masks:
                value = (value * gate(self.masks[l][ex], alpha)[:, None, :]).requires_grad_(grad)
                leaves[l] = value
            frozen = (frozen_rows >= l)[:, None, None]
            edits[l] = lambda act, v=value, f=frozen: torch.where(f, v.to(act.dtype), act)
        return edits, leaves

    def integrate(
        self, examples: torch.Tensor, n_steps: int, method: str, internal_batch_size: Optional[int]
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """Quadrature of the integrand over ``examples``: per-neuron contributions
        ``(len(examples), |N|)`` and, for paper mode, the summed activation
        gradients ``(len(examples),)``; rows chunked by ``internal_batch_size``."""
        device = examples.device
        n = examples.numel()
        rows = StepRows(n, method, n_steps, device, internal_batch_size)
        contributions = torch.zeros(n, self.nset.size, dtype=torch.float64, device=device)
        grad_sums = torch.zeros(n, dtype=torch.float64, device=device)
        with torch.enable_grad():
            for _, local, st, alpha in rows:
                per_neuron, grad_total = self.gradients(examples[local], alpha)
                contributions.index_add_(0, local, per_neuron * rows.weights[st, None])
                grad_sums.index_add_(0, local, grad_total)
        return contributions, grad_sums

    def value(self, ex: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
        """``F_N(alpha)`` per row, ``(rows,)``."""
        edits, _ = self._edits(ex, alpha, grad=False)
        return self._forward(ex, edits)

    def gradients(self, ex: torch.Tensor, alpha: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Per-row, per-neuron integrand ``(rows, |N|)`` and, for paper mode, the
        row's sum of activation gradients over the set ``(rows,)``."""
        edits, leaves = self._edits(ex, alpha, grad=True)
        f = self._forward(ex, edits)
        order = list(leaves)
        grads = dict(zip(order, torch.autograd.grad(f.sum(), [leaves[l] for l in order])))
        layers, units = self.nset.layers[ex], self.nset.units[ex]
        per_neuron = torch.zeros(layers.shape, dtype=torch.float64, device=layers.device)
        grad_total = torch.zeros(layers.shape[0], dtype=torch.float64, device=layers.device)
        for l, g in grads.items():
            hit = layers == l
            # other layers' units may exceed this layer's width (hierarchical models); they are masked by `hit`
            here = units.clamp(max=g.shape[-1] - 1)
            if self.mode == "gate":
                # dF/dg_n at the rows' gates, (rows, d_ff)
                vals = g.double().gather(1, here)
            else:
                # dF/da_n per token, weighted by the clean activation: a0_n * dF/da_n
                index = here[:, None, :].expand(-1, g.shape[1], -1)
                g_tok = g.double().gather(2, index)
                a0 = self.clean[l][ex].double().gather(2, index)
                vals = (a0 * g_tok).sum(dim=1)
                grad_total += torch.where(hit, g_tok.sum(dim=1), torch.zeros_like(vals)).sum(dim=1)
            per_neuron = torch.where(hit, vals, per_neuron)
        return per_neuron, grad_total

    def clean_set_activation(self) -> torch.Tensor:
        """``sum_n a0_n`` over each example's set (summed over selected tokens), ``(batch,)``."""
        total = torch.zeros(self.batch, dtype=torch.float64, device=self.nset.layers.device)
        for l in self.set_layers:
            a0 = self.clean[l].double().sum(dim=1)  # (batch, d_ff)
            hit = self.nset.layers == l
            total += (a0.gather(1, self.nset.units.clamp(max=a0.shape[1] - 1)) * hit).sum(dim=1)
        return total
