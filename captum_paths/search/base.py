"""The shared contract of every path method: choose k neurons per layer, then
score the whole path with the joint attribution."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Tuple, Union

import torch
from captum.log import log_usage

from captum_paths.attribution._machinery import warn_if_constant_output
from captum_paths.attribution.base import SiteAttribution
from captum_paths.attribution.joint_integrated_gradients import (
    JointNeuronIntegratedGradients,
    check_paper_baseline,
    check_tolerance,
    default_steps,
    misses_tolerance,
)
from captum_paths.attribution.layer_baselines import SiteBaseline, SiteValues, as_layer_baselines
from captum_paths.attribution.output import (
    check_finite_output,
    check_grad_mode,
    check_internal_batch_size,
    format_additional_args,
    format_inputs,
    output_value,
    resolve_target,
    select_rows,
)
from captum_paths.search.result import PathResult

__all__ = ["PathAttribution", "SearchContext", "MethodOption", "MethodOptionError", "UnknownMethodOption",
           "BadMethodOption"]


@dataclass(frozen=True)
class MethodOption:
    """A method-specific keyword option of ``attribute``, declared in the method's
    :attr:`PathAttribution.options`: what it allows, checked without a model or images.

    Attributes:
        allowed: what a value may be, as errors and help say it (``"a positive int"``).
        check: whether a given value is allowed.
        default: the value searched with when none is given, or a function of the search's
            ``k`` and ``mode`` that returns it (``None``: the method's ``_select`` default).
    """

    allowed: str
    check: Callable[[Any], bool]
    default: Any = None

    def resolve(self, value: Any, k: int, mode: str) -> Any:
        """``value``, or the default for ``k`` and ``mode`` when it is ``None``."""
        if value is not None:
            return value
        return self.default(k=k, mode=mode) if callable(self.default) else self.default


class MethodOptionError(Exception):
    """A method-specific option a path method does not take, or a value it does not allow.

    Attributes:
        method: the method's registry name.
        option: the option's name (``None`` when the method itself is unknown).
    """

    def __init__(self, message: str, method: str, option: Optional[str] = None) -> None:
        super().__init__(message)
        self.method, self.option = method, option


class UnknownMethodOption(MethodOptionError, TypeError):
    """An option the method does not declare (a ``TypeError``, as an unexpected keyword argument)."""


class BadMethodOption(MethodOptionError, ValueError):
    """A value the method's option does not allow."""


def positive_int(value: Any) -> bool:
    """Whether ``value`` is an int of at least 1 (not a bool): the check of count options."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


@dataclass
class SearchContext:
    """What every path method gets: the batch, its clean pass and the settings.

    Attributes:
        inputs, args: formatted inputs and additional forward args.
        target (Tensor): ``(batch,)`` class per image.
        logits (Tensor): ``(batch, classes)`` clean logits.
        clean (dict): ``{layer: (batch, positions, units)}`` clean activations
            (``(batch, n_tokens, d_ff)`` for neuron sites; see :class:`NeuronSites`).
        f_clean (Tensor): ``(batch,)`` clean output F(x).
        k, n_steps, method, mode, internal_batch_size: the search settings.
        base (SiteValues): the value a removed unit takes, per site (zero when empty); the
            edits of a search use ``gating(gates, ctx.base.rows(layer, images))``.
    """

    inputs: Tuple[torch.Tensor, ...]
    args: Tuple[Any, ...]
    target: torch.Tensor
    logits: torch.Tensor
    clean: Dict[int, torch.Tensor]
    f_clean: torch.Tensor
    k: int
    n_steps: int
    method: str
    mode: str
    internal_batch_size: Optional[int]
    base: SiteValues = field(default_factory=lambda: SiteValues({}))

    @property
    def batch(self) -> int:
        return self.inputs[0].shape[0]

    @property
    def widths(self) -> List[int]:
        """The units of each layer (FFN width, or number of heads)."""
        return [self.clean[l].shape[-1] for l in range(len(self.clean))]

    @property
    def width(self) -> int:
        """The largest width (every layer's, for models of one width)."""
        return max(self.widths)

    @property
    def device(self) -> torch.device:
        return self.logits.device


class PathAttribution(SiteAttribution):
    """Base class of path methods: ``attribute(...)`` returns a :class:`PathResult`.

    Subclasses set ``name`` (the registry name) and implement :meth:`_select`,
    which returns the ``(batch, L, k)`` path and the selection scores.

    Args:
        model (nn.Module): The model, returning logits (Hugging Face models are wrapped).
        sites (NeuronSites, module or list of modules, optional): The units the paths hold.
            Default: ``NeuronSites.from_model(model)``, its FFN neurons.
        output (str, optional): ``F``, what the joint score explains: ``"prob"`` (the
            target's softmax probability) or ``"logit"``. Default: ``"prob"``.
    """

    name: ClassVar[str] = ""
    #: Method-specific keyword options of ``attribute``: name -> :class:`MethodOption` (what it
    #: allows, its default). Run pipelines pass a method only its own, after
    #: :meth:`check_options`; ``captum-paths extract --method-option NAME.OPTION=VALUE`` sets
    #: them. A tuple of names is accepted too (their values are then checked by ``_check_options``).
    options: ClassVar[Union[Mapping[str, MethodOption], Tuple[str, ...]]] = {}
    # Gauss-Legendre steps of the gate-mode integrals (search and final JAS) when
    # n_steps is None; shared by every path method so their JAS are comparable.
    # 4 steps: paths agree with a 128-step run on 99.7% (demo ViT, 64 images) and
    # 100% (ViT-S shape, 4 images) of (image, layer) neurons, and the final JAS
    # stays complete to 1e-4 relative on the demo (benchmarks/path_agreement.py).
    default_n_steps: ClassVar[int] = 4

    @log_usage()
    def attribute(
        self,
        inputs: Union[torch.Tensor, Tuple[torch.Tensor, ...]],
        target: Any = None,
        additional_forward_args: Any = None,
        k: int = 1,
        n_steps: Optional[int] = None,
        method: Optional[str] = None,
        mode: str = "gate",
        internal_batch_size: Optional[int] = None,
        tol: Optional[float] = None,
        layer_baselines: Any = None,
        **options: Any,
    ) -> PathResult:
        r"""Find a path per image and score it.

        Args:
            inputs (Tensor or tuple[Tensor, ...]): Images ``(batch, C, H, W)``.
            target (int, list, Tensor, optional): Class per image (Captum
                semantics). Default: ``None``, the predicted class.
            additional_forward_args (Any, optional): Extra forward arguments.
            k (int, optional): Units (neurons or heads) per layer. Default: 1.
            n_steps (int, optional): Quadrature steps of the integrals (search and
                final JAS). Default: ``default_n_steps`` (4) Gauss-Legendre steps in
                ``"gate"`` mode, 20 left Riemann steps in ``"paper"`` mode.
            method (str, optional): Captum approximation method name.
            mode (str, optional): ``"gate"`` (joint gates) or ``"paper"`` (the released scripts' score,
                FFN neuron sites only).
            internal_batch_size (int, optional): (image, step) rows per
                forward/backward pass. Default: ``None``: the fast engine of
                :class:`LayerProgressiveNeuronPath` sizes its passes to a memory
                budget (512 MiB of autograd graph on CPU, a quarter of the free
                memory on CUDA); other methods run all rows at once.
            tol (float, optional): ``"gate"`` mode: re-integrate the path's
                contributions with doubled steps until ``|delta| <= tol * |JAS|``
                per image (see :class:`JointNeuronIntegratedGradients`). Default:
                ``None``. The JAS itself is exact either way.
            layer_baselines (optional): The value a removed unit takes, in the search and in
                the path's joint score: ``None`` or 0 (zero, the default), a
                :class:`~captum_paths.attribution.layer_baselines.MeanBaseline`, a
                :class:`~captum_paths.attribution.layer_baselines.CounterfactualBaseline`, or
                per-site values (see :class:`JointNeuronIntegratedGradients`). ``"gate"`` mode
                only for anything but zero. Methods that rank units by their own criterion
                (activation, conductance, influence, random) choose the same units whatever the
                baseline; their paths are scored against it.

        The search integrates gradients: call it outside ``torch.inference_mode()`` (a
        ``RuntimeError`` says so); inside ``torch.no_grad()`` it enables them where needed.

        Returns:
            PathResult: ``paths`` ``(batch, L, k)``, ``contributions``
            ``(batch, L, k)``, ``jas`` ``(batch,)`` (``"gate"``: exactly ``F(x) -
            F(x; path replaced by its baseline)``), ``delta`` (``sum(contributions) - jas``),
            ``settings`` (with ``kinds``, the kind of unit of each layer, when the
            sites hold heads, and ``ablation`` when the baseline is not zero).

        Example::

            >>> result = LayerProgressiveNeuronPath(model).attribute(
            ...     images, target=labels, layer_baselines=MeanBaseline(reference_images))
            >>> result.settings["ablation"]
            'mean'
        """
        check_grad_mode(f"{type(self).__name__}.attribute")
        n_steps, method, tol = self.check_arguments(k=k, n_steps=n_steps, method=method, mode=mode, tol=tol,
                                                    **options)
        baseline = as_layer_baselines(layer_baselines)
        if mode == "paper":
            self.sites.check_neurons_only("mode='paper' (the released scripts' score)")
            check_paper_baseline(baseline)
        self.check_sites()
        check_internal_batch_size(internal_batch_size)
        inputs = format_inputs(inputs, self.model)
        args = format_additional_args(additional_forward_args)
        with torch.no_grad(), self.sites.record() as clean:
            logits = self.forward_func(*inputs, *args)
        check_finite_output(logits, batch=inputs[0].shape[0])
        self.sites.check_batch(clean, inputs[0].shape[0])
        self.sites.check_execution_order(clean)
        width = min(a.shape[-1] for a in clean.values())
        if k > width:
            raise ValueError(f"k must be at most the site width {width}; got {k}")
        target = resolve_target(target, logits)
        ctx = SearchContext(
            inputs, args, target, logits, dict(clean), output_value(logits, target, self.output),
            k, n_steps, method, mode, internal_batch_size,
            base=baseline.resolve(self.sites, self.forward_func, inputs, args, clean),
        )
        options = self.resolve_options(options, k=k, mode=mode)
        paths, scores, extra = self._select(ctx, **options)
        scored = extra.pop("scored", None)
        by_engine = scored is not None  # scored by the method's own engine, not by JIG (which warns itself)
        jig = JointNeuronIntegratedGradients(self.model, sites=self.sites, output=self.output)
        if scored is None:
            scored = jig.attribute(
                inputs, paths, target=target, additional_forward_args=additional_forward_args,
                n_steps=n_steps, method=method, internal_batch_size=ctx.internal_batch_size,
                return_convergence_delta=True, mode=mode, tol=tol, return_jas=True,
                layer_baselines=_resolved(ctx.base, baseline.name),
            )
        elif tol is not None:
            scored = _meet_tolerance(jig, ctx, paths, *scored, tol)
        contributions, jas, delta = scored
        if by_engine and not bool((jas != 0).any()):
            warn_if_constant_output(contributions.flatten(1), ctx.f_clean,
                                    ctx.f_clean - jas.to(ctx.f_clean.dtype), logits, what=type(self).__name__,
                                    stacklevel=3)
        settings = {
            "mode": mode, "n_steps": n_steps, "approximation": method, "k": k, "output": self.output,
            **({"tol": tol} if tol is not None else {}), **self._settings({"mode": mode, "k": k, **options}),
            **({} if baseline.name == "zero" else baseline.settings()),
        }
        if len(set(ctx.widths)) > 1:  # hierarchical models, mixed sites: the width of each layer
            settings["widths"] = ctx.widths
        if self.sites.has_heads:  # the kind of unit of each layer (absent: every layer holds neurons)
            settings["kinds"] = list(self.sites.kinds)
        return PathResult(
            paths=paths, contributions=contributions, jas=jas, delta=delta, targets=target,
            method=self.name, settings=settings, scores=scores, **extra,
        )

    @classmethod
    def check_arguments(
        cls,
        k: int = 1,
        n_steps: Optional[int] = None,
        method: Optional[str] = None,
        mode: str = "gate",
        tol: Optional[float] = None,
        **options: Any,
    ) -> Tuple[int, str, Optional[float]]:
        """Validate ``attribute``'s settings without a model or images; returns the
        resolved ``(n_steps, method, tol)``. Run pipelines call it before they write anything."""
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int; got {k!r}")
        n_steps, method = cls._default_steps(mode, n_steps, method)
        tol = check_tolerance(tol, mode)
        cls.check_options(options, k=k, mode=mode)
        return n_steps, method, tol

    @classmethod
    def check_options(cls, options: Mapping[str, Any], k: int = 1, mode: str = "gate") -> Dict[str, Any]:
        """Validate method-specific options (see :attr:`options`) without a model or images.

        Args:
            options: option name -> value; ``None`` values stand for the default.
            k: the units per layer the options go with.
            mode: the search mode they go with.

        Returns:
            The options given, ``None`` values left out.

        Raises:
            UnknownMethodOption: (a ``TypeError``) an option the method does not declare.
            BadMethodOption: (a ``ValueError``) a value the option does not allow; the
                message names the method, the option and what it allows.
        """
        declared = cls._declared_options()
        given = {}
        for option, value in options.items():
            if option not in declared:
                raise UnknownMethodOption(f"path method {cls.name or cls.__name__!r} has no option {option!r}; it "
                                          f"{cls.describe_options()}", cls.name, option)
            spec = declared[option]
            if value is not None and spec is not None and not spec.check(value):
                raise cls.bad_option(option, value, spec.allowed)
            if value is not None:
                given[option] = value
        cls._check_options(given, k=k, mode=mode)
        return given

    @classmethod
    def resolve_options(cls, options: Mapping[str, Any], k: int = 1, mode: str = "gate") -> Dict[str, Any]:
        """The options a search runs with: ``options`` checked (:meth:`check_options`), every
        declared option not given at its default for ``k`` and ``mode`` (options without a
        default are left out: ``_select`` keeps its own)."""
        given = cls.check_options(options, k=k, mode=mode)
        resolved = {option: spec.resolve(given.get(option), k, mode)
                    for option, spec in cls._declared_options().items() if spec is not None}
        return {**{o: v for o, v in resolved.items() if v is not None}, **given}

    @classmethod
    def describe_options(cls) -> str:
        """The method's options and what each allows, in one line (``"takes refine (...), beam (...)"``)."""
        declared = cls._declared_options()
        if not declared:
            return "takes no options"
        return "takes " + ", ".join(option if spec is None else f"{option} ({spec.allowed})"
                                    for option, spec in declared.items())

    @classmethod
    def bad_option(cls, option: str, value: Any, allowed: str) -> BadMethodOption:
        """The error of a value ``option`` does not allow: ``"NAME option OPTION must be ALLOWED; got VALUE"``."""
        return BadMethodOption(f"{cls.name or cls.__name__} option {option} must be {allowed}; got {value!r}",
                               cls.name, option)

    # ------------------------------------------------------------------ for subclasses
    @classmethod
    def _declared_options(cls) -> Dict[str, Optional[MethodOption]]:
        if isinstance(cls.options, Mapping):
            return dict(cls.options)
        return {option: None for option in cls.options}

    @classmethod
    def _default_steps(cls, mode: str, n_steps: Optional[int], method: Optional[str]) -> Tuple[int, str]:
        if mode == "gate" and n_steps is None:
            n_steps = cls.default_n_steps
        return default_steps(mode, n_steps, method)

    @classmethod
    def _check_options(cls, options: Dict[str, Any], k: int = 1, mode: str = "gate") -> None:
        """Checks of the given options beyond each one's own (:class:`MethodOption`): how they go
        together, or with ``k`` and ``mode``; raise with :meth:`bad_option`. Nothing by default."""

    def _settings(self, options: Dict[str, Any]) -> Dict[str, Any]:
        return dict(options)

    def check_sites(self) -> None:
        """Raise when the method cannot score the units of ``self.sites`` (every method scores
        neurons and heads unless it overrides this)."""

    def _select(self, ctx: SearchContext, **options: Any) -> Tuple[torch.Tensor, Optional[torch.Tensor], Dict[str, Any]]:
        """Return ``(paths (batch, L, k) long, scores (batch, L, k) or None, extra fields)``.

        ``extra["scored"]``, when present, is the path's ``(contributions, jas, delta)``
        computed on the way (it must equal :class:`JointNeuronIntegratedGradients` on
        the path with the same settings); otherwise that is run afterwards."""
        raise NotImplementedError


def _meet_tolerance(
    jig: JointNeuronIntegratedGradients,
    ctx: SearchContext,
    paths: torch.Tensor,
    contributions: torch.Tensor,
    jas: torch.Tensor,
    delta: torch.Tensor,
    tol: float,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Re-integrate, with ``tol``, the contributions of the images whose ``|delta|``
    exceeds ``tol * |jas|``: ``(contributions (batch, L, k), jas, delta (batch,))``."""
    failing = misses_tolerance(delta, jas, tol).nonzero().flatten()
    if failing.numel() == 0:
        return contributions, jas, delta
    contributions, delta = contributions.clone(), delta.clone()
    phi, _, gap = jig.attribute(
        tuple(x[failing] for x in ctx.inputs), paths[failing], target=ctx.target[failing],
        additional_forward_args=tuple(select_rows(ctx.args, failing, ctx.batch)) or None,
        n_steps=2 * ctx.n_steps, method=ctx.method, internal_batch_size=ctx.internal_batch_size,
        return_convergence_delta=True, tol=tol, return_jas=True,
        layer_baselines=_resolved(ctx.base.take(failing), "given"),
    )
    contributions[failing], delta[failing] = phi.to(contributions.dtype), gap.to(delta.dtype)
    return contributions, jas, delta


def _resolved(base: SiteValues, name: str) -> Optional[SiteBaseline]:
    """The resolved baseline of a batch as ``layer_baselines`` for JIG (``None``: zero)."""
    return None if base.is_zero else SiteBaseline(base.values, name=name)
