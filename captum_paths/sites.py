"""Neuron sites: where the FFN neurons of a vision transformer live.

A *site* is one layer's FFN hidden activation, after the non-linearity and
before the second linear layer, shape ``(batch, tokens, d_ff)``. A *neuron*
``(layer, j)`` is channel ``j`` of site ``layer`` read at the token selection
(see "Sites and neurons" in docs/method.md). :class:`NeuronSites` finds the
sites of timm, torchvision and Hugging Face ViT-family models, accepts explicit
modules for any other model, and is the only place that hooks them:
:meth:`NeuronSites.record` and :meth:`NeuronSites.edit` are context managers
that remove every hook on exit, even when the forward raises.
"""
from __future__ import annotations

import contextlib
import difflib
from dataclasses import dataclass
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from captum_paths.models import LogitsOnly

__all__ = ["TokenSelection", "NeuronSites", "SiteEdit", "resolve_sites"]

TokenSpec = Union[int, str, Sequence[int], "TokenSelection"]
# An edit receives the activation at the selected tokens, (batch, n_tokens, d_ff),
# and returns its replacement of the same shape.
SiteEdit = Callable[[torch.Tensor], torch.Tensor]
_CAPTURES = ("output", "input")


@dataclass(frozen=True)
class TokenSelection:
    """Which token positions of a site hold the neurons.

    ``kind`` is ``"cls"`` (index 0), ``"indices"`` (the explicit ``indices``),
    ``"patches"`` (every token after the ``num_prefix_tokens`` class, distillation
    and register tokens) or ``"all"``. Selected positions are always taken in
    ascending order. A neuron read at several tokens is gated
    at every one of them with a single gate, so its attribution is the sum over
    those tokens.
    """

    kind: str = "cls"
    indices: Tuple[int, ...] = ()
    num_prefix_tokens: int = 1

    def __post_init__(self) -> None:
        if self.kind not in ("cls", "indices", "patches", "all"):
            raise ValueError(
                f"tokens kind must be one of 'cls', 'indices', 'patches', 'all'; got {self.kind!r}"
            )
        if self.kind == "indices" and not self.indices:
            raise ValueError("tokens: an explicit token selection needs at least one index")
        if self.num_prefix_tokens < 0:
            raise ValueError(
                f"num_prefix_tokens must be >= 0; got {self.num_prefix_tokens}"
            )

    @classmethod
    def parse(cls, tokens: TokenSpec, num_prefix_tokens: int = 1) -> "TokenSelection":
        """Build a selection from ``"cls"``, ``"patches"``, ``"all"``, an int or a list of ints."""
        if isinstance(tokens, TokenSelection):
            return tokens
        if isinstance(tokens, str):
            if tokens not in ("cls", "patches", "all"):
                raise ValueError(
                    f"tokens must be 'cls', 'patches', 'all', a token index or a list of "
                    f"indices; got {tokens!r}"
                )
            return cls(kind=tokens, num_prefix_tokens=num_prefix_tokens)
        if isinstance(tokens, bool):
            raise TypeError(f"tokens must not be a bool; got {tokens!r}")
        if isinstance(tokens, int):
            return cls(kind="indices", indices=(tokens,), num_prefix_tokens=num_prefix_tokens)
        if isinstance(tokens, Sequence) and all(
            isinstance(t, int) and not isinstance(t, bool) for t in tokens
        ):
            if len(set(tokens)) != len(tokens):
                raise ValueError(f"tokens: indices must be distinct; got {list(tokens)}")
            return cls(
                kind="indices", indices=tuple(int(t) for t in tokens),
                num_prefix_tokens=num_prefix_tokens,
            )
        raise TypeError(
            "tokens must be 'cls', 'patches', 'all', an int or a list of ints; "
            f"got {type(tokens).__name__}"
        )

    def index(self, seq_len: int) -> Union[slice, List[int]]:
        """The positions for a sequence of ``seq_len`` tokens, as a slice or index list."""
        if self.kind == "cls":
            return slice(0, 1)
        if self.kind == "all":
            return slice(0, seq_len)
        if self.kind == "patches":
            if self.num_prefix_tokens >= seq_len:
                raise ValueError(
                    f"tokens='patches' selects nothing: the sequence has {seq_len} tokens "
                    f"and {self.num_prefix_tokens} prefix tokens"
                )
            return slice(self.num_prefix_tokens, seq_len)
        bad = [i for i in self.indices if not -seq_len <= i < seq_len]
        if bad:
            raise ValueError(
                f"token indices {bad} are out of range for a sequence of {seq_len} tokens"
            )
        idx = sorted(i % seq_len for i in self.indices)
        if len(set(idx)) != len(idx):
            raise ValueError(
                f"token indices {list(self.indices)} name the same position twice in a sequence of {seq_len} tokens"
            )
        if idx == list(range(idx[0], idx[-1] + 1)):
            return slice(idx[0], idx[-1] + 1)
        return idx

    def __str__(self) -> str:
        if self.kind == "indices":
            return f"indices{list(self.indices)}"
        if self.kind == "patches":
            return f"patches(after {self.num_prefix_tokens} prefix tokens)"
        return self.kind


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
        width (int, optional): The FFN width ``d_ff``; inferred when ``None``.
        family (str, optional): Model family the sites were discovered for.

    Attributes:
        modules, num_layers, width, tokens, capture, names, family.

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
        width: Optional[int] = None,
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
        self.width = width if width is not None else _infer_width(modules, capture)
        self.family = family

    # ------------------------------------------------------------------ discovery
    @classmethod
    def from_model(cls, model: nn.Module, tokens: Optional[TokenSpec] = None) -> "NeuronSites":
        """Discover the sites of a timm, torchvision or Hugging Face ViT-family model.

        Args:
            model (nn.Module): timm ``VisionTransformer`` (DeiT, DINOv2-style
                LayerScale, ``global_pool='avg'``), torchvision
                ``VisionTransformer``, Hugging Face ViT / DeiT / DINOv2 image
                models, or any of them wrapped in :class:`LogitsOnly`.
            tokens (optional): Override the token selection the model's pooling
                implies (CLS for CLS-pooled heads, patch tokens for averaging heads).
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        inner = model.model if isinstance(model, LogitsOnly) else model
        for discover in (_discover_timm, _discover_torchvision, _discover_hf):
            found = discover(inner)
            if found is not None:
                modules, capture, default_tokens, family, width = found
                selection = default_tokens if tokens is None else TokenSelection.parse(
                    tokens, default_tokens.num_prefix_tokens
                )
                return cls(model, modules, selection, capture=capture, width=width, family=family)
        raise ValueError(
            f"cannot find neuron sites in a {type(inner).__name__}: looked for a timm "
            "VisionTransformer (`blocks[i].mlp.act`), a torchvision VisionTransformer "
            "(`encoder.layers[i].mlp[1]`) and a Hugging Face ViT/DeiT/DINOv2 model "
            "(`*.encoder.layer[i].intermediate` or `*.layers[i].mlp.fc2`). For other models pass the "
            "modules explicitly: NeuronSites.from_names(model, ['blocks.0.mlp.act', ...], tokens='cls')"
        )

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
        return (
            f"NeuronSites(family={self.family!r}, num_layers={self.num_layers}, "
            f"width={self.width}, tokens={self.tokens}, capture={self.capture!r}, "
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
            if act.dim() != 3:
                raise ValueError(
                    f"a neuron site must produce (batch, tokens, d_ff) activations; got shape {tuple(act.shape)}"
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


# ---------------------------------------------------------------------- discovery
# (modules, capture, default tokens, family, d_ff)
_Found = Optional[Tuple[List[nn.Module], str, TokenSelection, str, Optional[int]]]


def _discover_timm(model: nn.Module) -> _Found:
    blocks = getattr(model, "blocks", None)
    if not isinstance(blocks, nn.Sequential) or len(blocks) == 0:
        return None
    if not all(hasattr(b, "mlp") for b in blocks):
        return None
    modules, captures = [], set()
    for block in blocks:
        mlp = block.mlp
        if hasattr(mlp, "act") and hasattr(mlp, "fc1") and hasattr(mlp, "fc2") and not _is_gated_timm(mlp):
            modules.append(mlp.act)
            captures.add("output")
        elif hasattr(mlp, "fc2"):  # GluMlp / SwiGLU: the neuron is the gated product
            modules.append(mlp.fc2)
            captures.add("input")
        else:
            return None
    if len(captures) != 1:
        return None
    prefix = int(getattr(model, "num_prefix_tokens", 1))
    pool = getattr(model, "global_pool", "token")
    distilled = type(model).__name__ == "VisionTransformerDistilled"
    if pool == "token" and prefix > 0:
        tokens = TokenSelection("indices", (0, 1), prefix) if distilled else TokenSelection("cls", (), prefix)
    elif getattr(model, "pool_include_prefix", False) or prefix == 0:
        tokens = TokenSelection("all", (), prefix)
    else:
        tokens = TokenSelection("patches", (), prefix)
    capture = captures.pop()
    fc1 = getattr(blocks[0].mlp, "fc1", None)
    if capture == "output" and isinstance(fc1, nn.Linear):
        width = fc1.out_features
    else:
        width = _infer_width(modules, capture)
    return modules, capture, tokens, "timm", width


def _is_gated_timm(mlp: nn.Module) -> bool:
    return type(mlp).__name__ in ("GluMlp", "SwiGLU", "SwiGLUPacked", "GatedMlp")


def _discover_torchvision(model: nn.Module) -> _Found:
    encoder = getattr(model, "encoder", None)
    layers = getattr(encoder, "layers", None)
    if not isinstance(layers, nn.Sequential) or len(layers) == 0:
        return None
    modules = []
    for layer in layers:
        mlp = getattr(layer, "mlp", None)
        if not isinstance(mlp, nn.Sequential) or len(mlp) < 4:
            return None
        modules.append(mlp[1])
    fc1 = layers[0].mlp[0]
    width = fc1.out_features if isinstance(fc1, nn.Linear) else None
    return modules, "output", TokenSelection("cls", (), 1), "torchvision", width


def _discover_hf(model: nn.Module) -> _Found:
    # transformers < 5 keeps the blocks in `vit.encoder.layer`, transformers 5 in `vit.layers`.
    layer_list = None
    for name, module in model.named_modules():
        if (
            name.rsplit(".", 1)[-1] in ("layer", "layers")
            and isinstance(module, nn.ModuleList)
            and len(module)
            and all(hasattr(b, "intermediate") or hasattr(b, "mlp") for b in module)
        ):
            layer_list = module
            break
    if layer_list is None:
        return None
    modules, captures = [], set()
    for layer in layer_list:
        if hasattr(layer, "intermediate"):  # transformers < 5: ViTIntermediate = dense + act
            modules.append(layer.intermediate)
            captures.add("output")
        else:
            # the FFN's second linear layer; its input is the hidden activation
            # (`weights_out` / `down_proj`: DINOv2 SwiGLU in transformers < 5 / >= 5)
            mlp = getattr(layer, "mlp", None)
            out_proj = next(
                (getattr(mlp, n) for n in ("fc2", "weights_out", "down_proj") if hasattr(mlp, n)),
                None,
            )
            if not isinstance(out_proj, nn.Linear):
                return None
            modules.append(out_proj)
            captures.add("input")
    if len(captures) != 1:
        return None
    config = getattr(model, "config", None)
    cls_name = type(model).__name__
    registers = int(getattr(config, "num_register_tokens", 0) or 0)
    if cls_name.startswith("DeiT"):
        prefix = 2
        tokens = (
            TokenSelection("indices", (0, 1), prefix) if "WithTeacher" in cls_name
            else TokenSelection("cls", (), prefix)
        )
    elif cls_name.startswith("Dinov2") and "ImageClassification" in cls_name:
        # The DINOv2 head reads the CLS token and the mean of the patch tokens.
        tokens = TokenSelection("all", (), 1 + registers)
    else:
        tokens = TokenSelection("cls", (), 1 + registers)
    capture = captures.pop()
    return modules, capture, tokens, "hf", _infer_width(modules, capture)


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
