"""Neuron sites: where the FFN neurons of a vision transformer live.

A *site* is one layer's FFN hidden activation, after the non-linearity and
before the second linear layer, shape ``(batch, tokens, d_ff)``. A *neuron*
``(layer, j)`` is channel ``j`` of site ``layer`` read at the token selection
(see "Sites and neurons" in docs/method.md). :class:`NeuronSites` finds the
sites of every registered model family (:mod:`captum_paths.families`), accepts explicit
modules for any other model, and is the only place that hooks them:
:meth:`NeuronSites.record` and :meth:`NeuronSites.edit` are context managers
that remove every hook on exit, even when the forward raises.
"""
from __future__ import annotations

import contextlib
import difflib
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Union

import torch
from torch import nn

from captum_paths.tokens import TokenSelection, TokenSpec

__all__ = ["TokenSelection", "NeuronSites", "SiteEdit", "resolve_sites"]

# An edit receives the activation at the selected tokens, (batch, n_tokens, d_ff),
# and returns its replacement of the same shape.
SiteEdit = Callable[[torch.Tensor], torch.Tensor]
_CAPTURES = ("output", "input")


class NeuronSites:
    """The FFN neuron sites of a model, one per transformer block.

    Args:
        model (nn.Module): The model the sites belong to.
        modules (list of nn.Module): One module per layer, in execution order.
        tokens (TokenSelection or str or int or list of int, optional): Token
            selection at which neurons are read. Default: ``"cls"``.
        capture (str, optional): ``"output"`` when the activation is the output of
            each module (``blocks[i].mlp.act``), ``"input"`` when it is the first
            input (``blocks[i].mlp.fc2``, used for gated FFNs). Default: ``"output"``.
        names (list of str, optional): Dotted module names, for display.
        width (int or list of int, optional): The FFN width ``d_ff``, or one width
            per layer for hierarchical models (Swin stages); inferred when ``None``.
        family (str, optional): Model family the sites were discovered for.

    Attributes:
        modules, num_layers, tokens, capture, names, family.
        width (int or None): the FFN width when every layer has the same one.
        widths (list of int or None): the width of each layer (``None`` when unknown
            until a forward).

    Examples::

        >>> sites = NeuronSites.from_model(timm_vit)
        >>> with sites.record() as acts:
        ...     timm_vit(images)
        >>> acts[3].shape          # (batch, selected tokens, d_ff)
    """

    def __init__(
        self,
        model: nn.Module,
        modules: Sequence[nn.Module],
        tokens: TokenSpec = "cls",
        capture: str = "output",
        names: Optional[Sequence[str]] = None,
        width: Optional[Union[int, Sequence[int]]] = None,
        family: str = "custom",
    ) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        modules = list(modules)
        if not modules:
            raise ValueError("modules must hold at least one module; got an empty list")
        for i, m in enumerate(modules):
            if not isinstance(m, nn.Module):
                raise TypeError(f"modules[{i}] must be an nn.Module; got {type(m).__name__}")
        if len({id(m) for m in modules}) != len(modules):
            raise ValueError(
                "modules must be distinct module objects: a module shared by several "
                "layers would be hooked once per call of each layer"
            )
        if capture not in _CAPTURES:
            raise ValueError(f"capture must be one of {_CAPTURES}; got {capture!r}")
        self.model = model
        self.modules: List[nn.Module] = modules
        self.tokens = TokenSelection.parse(tokens)
        self.capture = capture
        self.names = list(names) if names is not None else [_module_name(model, m) for m in modules]
        if width is None:
            widths = [_infer_width([m], capture) for m in modules]
            self.widths: Optional[List[int]] = None if None in widths else widths
        elif isinstance(width, int) and not isinstance(width, bool):
            self.widths = [width] * len(modules)
        else:
            self.widths = [int(w) for w in width]
            if len(self.widths) != len(modules):
                raise ValueError(f"width: give one width per layer ({len(modules)}); got {len(self.widths)}")
        self.width: Optional[int] = (self.widths[0] if self.widths is not None and len(set(self.widths)) == 1
                                     else None)
        self.family = family

    # ------------------------------------------------------------------ discovery
    @classmethod
    def from_model(cls, model: nn.Module, tokens: Optional[TokenSpec] = None) -> "NeuronSites":
        """Discover the sites of a model of a registered family (:mod:`captum_paths.families`).

        Args:
            model (nn.Module): a model of a registered family (timm ViT, EVA,
                BEiT, CaiT, torchvision ViT, Hugging Face ViT family, open_clip
                towers ...), or one wrapped in :class:`LogitsOnly`.
            tokens (optional): Override the token selection the model's pooling
                implies (CLS for CLS-pooled heads, patch tokens for averaging heads).
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        from captum_paths.families import find_family, inner_model, looked_for

        found = find_family(model)
        if found is None:
            raise ValueError(
                f"cannot find neuron sites in a {type(inner_model(model)).__name__}: looked for "
                f"{'; '.join(looked_for())}. For other models pass the modules explicitly: "
                "NeuronSites.from_names(model, ['blocks.0.mlp.act', ...], tokens='cls'), or register a "
                "FamilyAdapter with captum_paths.families.register_family"
            )
        adapter, spec = found
        selection = spec.tokens if tokens is None else TokenSelection.parse(tokens, spec.tokens.num_prefix_tokens)
        return cls(model, spec.modules, selection, capture=spec.capture, width=spec.width, family=adapter.name)

    @classmethod
    def from_names(
        cls,
        model: nn.Module,
        names: Sequence[str],
        tokens: TokenSpec = "cls",
        capture: str = "output",
        num_prefix_tokens: int = 1,
        width: Optional[int] = None,
    ) -> "NeuronSites":
        """Sites given as dotted module names, e.g. ``["blocks.0.mlp.act", ...]``.

        A name that does not exist raises ``ValueError`` listing close matches.
        """
        if isinstance(names, str):
            raise TypeError("names must be a list of module names, not a single string")
        available = dict(model.named_modules())
        modules = []
        for name in names:
            if name not in available:
                close = difflib.get_close_matches(name, list(available), n=5, cutoff=0.5)
                hint = f"; close matches: {close}" if close else ""
                raise ValueError(
                    f"names: {type(model).__name__} has no module named {name!r}{hint}"
                )
            modules.append(available[name])
        selection = TokenSelection.parse(tokens, num_prefix_tokens)
        return cls(model, modules, selection, capture=capture, names=names, width=width)

    # ----------------------------------------------------------------- properties
    @property
    def num_layers(self) -> int:
        return len(self.modules)

    def __len__(self) -> int:
        return len(self.modules)

    def __repr__(self) -> str:
        where = f"{self.names[0]} … {self.names[-1]}" if len(self.names) > 1 else self.names[0]
        width = self.width if self.width is not None or self.widths is None else self.widths
        return (
            f"NeuronSites(family={self.family!r}, num_layers={self.num_layers}, "
            f"width={width}, tokens={self.tokens}, capture={self.capture!r}, "
            f"modules=[{where}])"
        )

    def check_layer(self, layer: int, argument: str = "layer") -> int:
        """Validate a layer index and return it as an int."""
        if isinstance(layer, bool) or not isinstance(layer, int):
            raise TypeError(f"{argument} must be an int; got {type(layer).__name__}")
        if not 0 <= layer < self.num_layers:
            raise ValueError(
                f"{argument} {layer} is out of range: the model has {self.num_layers} "
                f"layers (0..{self.num_layers - 1})"
            )
        return layer

    def check_batch(self, acts: Mapping[int, torch.Tensor], batch: int) -> None:
        """ValueError when a recorded site holds another number of rows than the ``batch`` of
        images: the model folds windows or patches into the batch dimension there, so its
        neurons cannot be gated image by image."""
        for layer, act in acts.items():
            if act.shape[0] != batch:
                raise ValueError(
                    f"site {self.names[layer]!r} (layer {layer}) holds {act.shape[0]} rows for a batch of {batch} "
                    f"images: a {type(self.model).__name__} folds windows or patches into the batch there, so "
                    "its neurons cannot be gated per image; pass sites whose activations keep one row per image "
                    "(NeuronSites.from_names)"
                )

    # ---------------------------------------------------------------------- hooks
    @contextlib.contextmanager
    def edit(self, edits: Mapping[int, SiteEdit]) -> Iterator[None]:
        """Replace the activation at the selected tokens of some layers.

        Args:
            edits (dict): ``{layer: fn}``; ``fn`` maps the activation at the
                selected tokens ``(batch, n_tokens, d_ff)`` to its replacement.
                Other tokens pass unchanged and everything downstream is recomputed.
        """
        for layer in edits:
            self.check_layer(layer, "edits key")
        handles = []
        try:
            for layer, fn in edits.items():
                handles.append(self._register(self.modules[layer], self._editing(fn)))
            yield
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def record(
        self, layers: Optional[Sequence[int]] = None, detach: bool = True
    ) -> Iterator[Dict[int, torch.Tensor]]:
        """Record activations at the selected tokens, ``{layer: (batch, n_tokens, d_ff)}``.

        The dict fills while the model runs inside the ``with`` block; a second
        forward overwrites it. With ``detach=False`` the recorded tensors are part
        of the graph, so ``torch.autograd.grad(F, acts[l])`` works.
        """
        layers = range(self.num_layers) if layers is None else layers
        store: Dict[int, torch.Tensor] = {}

        def recorder(layer: int) -> SiteEdit:
            def fn(act: torch.Tensor) -> torch.Tensor:
                if detach:
                    store[layer] = act.detach()
                    return act
                # hand a new view downstream so that the recorded tensor sits on the
                # graph: gradients with respect to it are then available
                store[layer] = act
                return act.view_as(act)
            return fn

        with self.edit({self.check_layer(l, "layers"): recorder(l) for l in layers}):
            yield store

    def apply_edit(self, act: torch.Tensor, fn: SiteEdit) -> torch.Tensor:
        """``act`` ``(batch, tokens, d_ff)`` with ``fn`` applied at the selected tokens,
        exactly as :meth:`edit` would inside a forward."""
        return self._editing(fn)(act)

    def _editing(self, fn: SiteEdit) -> Callable[[torch.Tensor], torch.Tensor]:
        tokens = self.tokens

        def apply(act: torch.Tensor) -> torch.Tensor:
            if act.dim() == 4:  # (batch, H, W, d_ff) token grids: edited as (batch, H * W, d_ff)
                return apply(act.reshape(act.shape[0], -1, act.shape[-1])).reshape(act.shape)
            if act.dim() != 3:
                raise ValueError(
                    "a neuron site must produce (batch, tokens, d_ff) or (batch, H, W, d_ff) activations; got "
                    f"shape {tuple(act.shape)}"
                )
            idx = tokens.index(act.shape[1])
            selected = act[:, idx]
            new = fn(selected)
            if new is selected and isinstance(idx, slice):
                return act  # a slice is a view: in-place edits are already in `act`
            if new.shape != selected.shape:
                raise ValueError(
                    f"a site edit must keep the shape {tuple(selected.shape)}; got {tuple(new.shape)}"
                )
            if isinstance(idx, slice) and idx.start == 0 and idx.stop == act.shape[1]:
                return new
            out = act.clone()
            out[:, idx] = new.to(out.dtype)
            return out

        return apply

    def _register(self, module: nn.Module, apply: Callable[[torch.Tensor], torch.Tensor]):
        if self.capture == "output":
            def hook(_module, _args, output):
                return apply(output)
            return module.register_forward_hook(hook)

        def pre_hook(_module, args):
            return (apply(args[0]),) + tuple(args[1:])
        return module.register_forward_pre_hook(pre_hook)


def resolve_sites(model: nn.Module, sites: Optional[NeuronSites]) -> NeuronSites:
    """``sites`` itself, or the sites discovered in ``model`` when ``None`` (both checked)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    if sites is None:
        return NeuronSites.from_model(model)
    if not isinstance(sites, NeuronSites):
        raise TypeError(f"sites must be a NeuronSites or None; got {type(sites).__name__}")
    return sites


def _infer_width(modules: Sequence[nn.Module], capture: str) -> Optional[int]:
    widths = set()
    for m in modules:
        if capture == "input" and isinstance(m, nn.Linear):
            widths.add(m.in_features)
        elif isinstance(m, nn.Linear):
            widths.add(m.out_features)
        elif isinstance(getattr(m, "dense", None), nn.Linear):  # HF ViTIntermediate
            widths.add(m.dense.out_features)
        else:
            return None
    return widths.pop() if len(widths) == 1 else None


def _module_name(model: nn.Module, module: nn.Module) -> str:
    for name, m in model.named_modules():
        if m is module:
            return name
    return type(module).__name__
