"""What a model family adapter declares, and the registry that holds the adapters.

An adapter recognises the models of one family and says where their FFN neurons
are (:class:`SiteSpec`), where their attention heads are (optional), how the
residual stream splits into embedding, blocks and head for the fast search engine
(:class:`StreamParts`, optional), the patch grid of pixel figures, the family's
default preprocessing and the loader spec that rebuilds a model
(:func:`default_transform`, :func:`loader_spec`). :func:`register_family` adds an
adapter; :func:`find_family` asks each one in turn, the ones registered last first, so a
user's adapter can take over any model.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Type, TypeVar, Union

import torch
from torch import nn

from captum_paths.model.tokens import TokenSelection
from captum_paths.model.transforms import Transform

logger = logging.getLogger(__name__)

__all__ = ["SiteSpec", "SplitBlock", "StreamParts", "FamilyAdapter", "register_family", "find_family",
           "get_family", "families", "inner_model", "looked_for", "linear_width", "as_pair", "default_transform",
           "loader_spec", "heads_spec", "multihead_attention", "projected_heads", "Backbone", "find_backbones",
           "find_backbone", "LAYOUTS"]

#: how a site's 4-D activation holds its channels: ``(batch, H, W, C)`` token grids (what a linear
#: layer produces) or ``(batch, C, H, W)`` maps (what a convolution produces)
LAYOUTS = ("channels_last", "channels_first")


@dataclass
class SiteSpec:
    """Where a model's units are: one module per layer.

    Attributes:
        modules (list of nn.Module): the site of each layer, in execution order.
        capture (str): ``"output"`` (the module's output is the activation, e.g.
            ``mlp.act``), ``"input"`` (its first input, e.g. ``mlp.fc2`` of a gated FFN,
            ``attn.proj`` for heads) or ``"mha"`` (the heads of an ``nn.MultiheadAttention``).
        tokens (TokenSelection): the tokens the model's pooling reads.
        width (int or list of int, optional): the FFN width ``d_ff`` (the number of heads
            for head sites), or one per layer (hierarchical models).
        unit (int or list of int, optional): channels per unit: ``None`` for neurons, the
            head dimension for head sites (:meth:`FamilyAdapter.head_sites`).
        layout (str): how a 4-D activation of the sites holds its channels: ``"channels_last"``
            (``(batch, H, W, d_ff)`` token grids, as the linear FFNs of every built-in family
            produce) or ``"channels_first"`` (``(batch, d_ff, H, W)``, 1x1-convolution FFNs).
            3-D activations are ``(batch, tokens, d_ff)`` either way.
    """

    modules: List[nn.Module]
    capture: str
    tokens: TokenSelection
    width: Optional[Union[int, List[int]]] = None
    unit: Optional[Union[int, List[int]]] = None
    layout: str = "channels_last"


class SplitBlock:
    """A transformer block cut at its neuron site: ``block(h) == post(*pre(h))``.

    ``post`` must act on each token separately (FFN, layer scale, residual add).

    Args:
        pre (callable): ``(h, cls_only) -> (mid, act)``: the stream after the
            attention residual and the full site activation ``(batch, tokens, d_ff)``;
            with ``cls_only`` both hold the class token row only.
        post (callable): ``(mid, act) -> h_out``: the rest of the block.
    """

    def __init__(
        self,
        pre: Callable[[torch.Tensor, bool], Tuple[torch.Tensor, torch.Tensor]],
        post: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    ) -> None:
        self.pre, self.post = pre, post


@dataclass
class StreamParts:
    """``model(x) == head(blocks[-1](...blocks[0](embed(x))))`` with the sites inside ``blocks``.

    Attributes:
        embed (callable): images ``(batch, C, H, W)`` -> stream ``(batch, T, D)``.
        blocks (list of nn.Module): one block per site, each ``(batch, T, D) -> (batch, T, D)``.
        head (callable): final stream -> logits ``(batch, classes)``.
        splits (list, optional): a :class:`SplitBlock` or ``None`` per block.
        reads_cls (bool): the head reads the class token only.
    """

    embed: Callable[[torch.Tensor], torch.Tensor]
    blocks: List[nn.Module]
    head: Callable[[torch.Tensor], torch.Tensor]
    splits: Optional[List[Optional[SplitBlock]]] = None
    reads_cls: bool = False


class FamilyAdapter:
    """Base class of model family adapters.

    Subclasses set :attr:`name` and implement :meth:`sites`; :meth:`head_sites`,
    :meth:`stream`, :meth:`patch_size`, :meth:`transform` and :meth:`loader_spec` are optional.
    Every method receives the model itself (a :class:`~captum_paths.model.outputs.LogitsOnly`
    wrapper already removed).
    """

    #: The family's name, recorded in ``NeuronSites.family``.
    name: str = ""
    #: What :meth:`sites` looks for, for the error when no family recognises a model.
    looks_for: str = ""
    #: The prefix of the loader that builds the family's models from a spec
    #: (``"timm"``, ``"torchvision"``, ``"hf"``, ``"open_clip"``; see ``captum_paths.model.loading.register_loader``).
    loader: str = ""

    def sites(self, model: nn.Module) -> Optional[SiteSpec]:
        """The model's sites, or ``None`` when the model is not of this family."""
        raise NotImplementedError

    def owns(self, model: nn.Module) -> bool:
        """Whether a model whose :meth:`sites` this adapter found *is* a model of the family, rather
        than a module that merely holds one somewhere inside (an adapter that searches every
        submodule for its blocks finds them in any wrapper too). Site discovery takes a model the
        adapter owns as it is; in a model it does not own, it first looks for the backbone inside
        (:func:`find_backbone`). Default: ``True``."""
        return True

    def head_sites(self, model: nn.Module) -> Optional[SiteSpec]:
        """The model's attention head sites (one layer per attention block, ``width`` heads of
        ``unit`` channels each, read at the tokens of :meth:`sites`), or ``None`` when the
        family does not expose its heads (then ``NeuronSites.heads_from_model`` raises)."""
        return None

    def stream(self, model: nn.Module, spec: SiteSpec) -> Optional[StreamParts]:
        """The model's residual stream, or ``None`` (the search then runs the whole model)."""
        return None

    def block_halves(self, block: nn.Module) -> Optional[Tuple[nn.Module, nn.Module]]:
        """A block of :meth:`stream` as ``(attention half, FFN half)``, each stream -> stream with
        ``block(h) == ffn_half(attention_half(h))``, or ``None``. With them, mixed sites (the heads
        and then the FFN neurons of every block) search on the residual stream too."""
        return None

    def patch_size(self, model: nn.Module) -> Optional[Tuple[int, int]]:
        """The model's patch size ``(ph, pw)`` for pixel figures, or ``None``."""
        return None

    def transform(self, model: nn.Module) -> Optional[Transform]:
        """The family's evaluation preprocessing for ``model`` (PIL image -> ``(C, H, W)``), or ``None``."""
        return None

    def loader_spec(self, model: nn.Module) -> Optional[str]:
        """The spec (``"PREFIX:NAME"``) whose loader builds ``model``'s architecture, or ``None`` when
        the model does not record one. Constructor arguments (``img_size=...``) are not part of it."""
        return None


_REGISTRY: Dict[str, FamilyAdapter] = {}
A = TypeVar("A", bound=Type[FamilyAdapter])


def register_family(adapter: A) -> A:
    """Class decorator: register a :class:`FamilyAdapter` subclass (an instance is kept).

    Adapters registered later are asked first, so registering an adapter for a
    model an existing one also recognises takes the model over. Registering a name
    again replaces the old adapter.
    """
    if not (isinstance(adapter, type) and issubclass(adapter, FamilyAdapter)):
        raise TypeError(f"register_family expects a FamilyAdapter subclass; got {adapter!r}")
    if not adapter.name:
        raise ValueError(f"{adapter.__name__} must set a non-empty `name`")
    _REGISTRY.pop(adapter.name, None)
    _REGISTRY[adapter.name] = adapter()
    return adapter


def _installed() -> Dict[str, FamilyAdapter]:
    """The registry, with the adapters of installed plugins (the ``captum_paths.families`` entry
    points, :mod:`captum_paths.model.plugins`) registered the first time it is asked: after the
    built-in ones, so asked before them."""
    from captum_paths.model.plugins import FAMILIES_GROUP, PluginError, plugin_objects

    for name, adapter in plugin_objects(FAMILIES_GROUP):
        if not (isinstance(adapter, type) and issubclass(adapter, FamilyAdapter)):
            raise PluginError(f"plugin family {name!r} is {adapter!r}, not a FamilyAdapter subclass")
        if adapter.name not in _REGISTRY:
            register_family(adapter)
    return _REGISTRY


def families() -> List[str]:
    """Registered family names, in the order they are asked."""
    return list(reversed(_installed()))


def get_family(name: str) -> FamilyAdapter:
    """The registered adapter named ``name`` (``ValueError`` naming the registered ones otherwise)."""
    try:
        return _installed()[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; registered: {families()}") from None


def find_family(model: nn.Module, exclude: Sequence[str] = ()) -> Optional[Tuple[FamilyAdapter, SiteSpec]]:
    """The first adapter (latest registered first, those named in ``exclude`` skipped) that finds
    sites in ``model``, with them."""
    inner = inner_model(model)
    for name in families():
        if name in exclude:
            continue
        adapter = _REGISTRY[name]
        try:
            spec = adapter.sites(inner)
        except Exception as exc:  # an adapter that trips over an unknown variant does not claim the model
            logger.debug("family %r: %s: %s", name, type(exc).__name__, exc)
            continue
        if spec is not None:
            return adapter, spec
    return None


@dataclass
class Backbone:
    """A module of a registered family found inside a model (or the model itself).

    Attributes:
        path (str): its dotted module path in the model searched (``"backbone"``,
            ``"model.encoder"``); ``""`` when the family recognises the model itself (through a
            :class:`~captum_paths.model.outputs.LogitsOnly` wrapper).
        module (nn.Module): the backbone (its ``LogitsOnly`` wrapper removed).
        adapter (FamilyAdapter): its family.
        spec (SiteSpec): its neuron sites.
    """

    path: str
    module: nn.Module
    adapter: FamilyAdapter
    spec: SiteSpec

    def describe(self) -> str:
        """``'backbone' (timm: a VisionTransformer)``, for messages."""
        where = repr(self.path) if self.path else "the model itself"
        return f"{where} ({self.adapter.name}: a {type(self.module).__name__})"


def find_backbones(model: nn.Module) -> List[Backbone]:
    """The backbones of registered families in ``model``: the model itself when a family owns it
    (:meth:`FamilyAdapter.owns`), else the outermost owned modules inside it, in definition order
    (a module shared under several names counted once); a model a family finds but does not own
    is its own backbone when nothing inside it is owned. Empty when no family finds anything."""
    inner = inner_model(model)
    prefix = "model." if inner is not model else ""
    root = find_family(model)
    if root is not None and _owns(root[0], inner):
        return [Backbone("", inner, *root)]
    found: List[Backbone] = []
    seen = {id(inner)}

    def descend(module: nn.Module, path: str) -> None:
        for name, child in module.named_children():
            if id(child) in seen:
                continue
            seen.add(id(child))
            where = f"{path}.{name}" if path else name
            hit = find_family(child)
            if hit is not None and _owns(hit[0], inner_model(child)):
                found.append(Backbone(prefix + where, inner_model(child), *hit))
                continue
            before = len(found)
            descend(child, where)
            if hit is not None and len(found) == before:  # found, not owned, nothing owned inside: itself
                found.append(Backbone(prefix + where, inner_model(child), *hit))

    descend(inner, "")
    if not found and root is not None:
        return [Backbone("", inner, *root)]
    return found


def find_backbone(model: nn.Module, backbone: Union[None, str, nn.Module] = None) -> Optional[Backbone]:
    """The one backbone of a registered family in ``model`` (see :func:`find_backbones`), or the one
    ``backbone`` names (its dotted path in ``model``, or the module itself); ``None`` when no family
    finds one.

    Raises:
        ValueError: several backbones and no ``backbone`` (the message names their paths), or a
            ``backbone`` that is not in ``model`` or that no family recognises.
    """
    if backbone is None:
        found = find_backbones(model)
        if len(found) > 1:
            raise ValueError(
                f"found {len(found)} backbones in a {type(inner_model(model)).__name__}: "
                f"{', '.join(b.describe() for b in found)}; pick one with backbone=, e.g. "
                f"NeuronSites.from_model(model, backbone={found[0].path!r})"
            )
        return found[0] if found else None
    path, module = _named_submodule(model, backbone)
    hit = find_family(module)
    if hit is None:
        raise ValueError(
            f"backbone {path!r} (a {type(inner_model(module)).__name__}) is not a model of a registered family: "
            f"looked for {'; '.join(looked_for())}"
        )
    inner = inner_model(model)
    if path == "" or module is model or module is inner:
        return Backbone("", inner, *hit)
    return Backbone(path, inner_model(module), *hit)


def _owns(adapter: FamilyAdapter, model: nn.Module) -> bool:
    try:
        return bool(adapter.owns(model))
    except Exception as exc:  # an adapter that trips over a model does not own it
        logger.debug("family %r owns(): %s: %s", adapter.name, type(exc).__name__, exc)
        return False


def _named_submodule(model: nn.Module, backbone: Union[str, nn.Module]) -> Tuple[str, nn.Module]:
    """``(path, module)`` of a submodule of ``model`` given by its dotted path or itself."""
    import difflib

    named = dict(model.named_modules(remove_duplicate=False))
    if isinstance(backbone, nn.Module):
        for name, module in named.items():
            if module is backbone:
                return name, module
        raise ValueError(f"backbone: the {type(backbone).__name__} given is not a submodule of the "
                         f"{type(model).__name__}")
    if not isinstance(backbone, str):
        raise TypeError(f"backbone must be a dotted module path (str) or a submodule; got {type(backbone).__name__}")
    inner = inner_model(model)
    for candidate in (backbone, f"model.{backbone}" if inner is not model else None):
        if candidate is not None and candidate in named:
            return candidate, named[candidate]
    close = difflib.get_close_matches(backbone, [n for n in named if n], n=5, cutoff=0.5)
    hint = f"; close matches: {close}" if close else ""
    raise ValueError(f"backbone: a {type(model).__name__} has no module named {backbone!r}{hint}")


def default_transform(model: nn.Module) -> Optional[Transform]:
    """The evaluation preprocessing ``model``'s family declares for it (PIL image -> ``(C, H, W)``),
    or ``None`` when no registered family recognises the model or declares none."""
    found = find_family(model)
    return None if found is None else found[0].transform(inner_model(model))


def loader_spec(model: nn.Module) -> Optional[str]:
    """The spec that rebuilds ``model``'s architecture with :func:`~captum_paths.model.loading.load_model`
    (``"timm:vit_base_patch16_224.augreg2_in21k_ft_in1k"``, ``"hf:google/vit-base-patch16-224"``),
    or ``None`` when the model does not record its name."""
    found = find_family(model)
    return None if found is None else found[0].loader_spec(inner_model(model))


def looked_for() -> Sequence[str]:
    """What each registered family looks for (for error messages)."""
    return [a.looks_for for a in (_REGISTRY[n] for n in families()) if a.looks_for]


def inner_model(model: nn.Module) -> nn.Module:
    """The model inside a :class:`~captum_paths.model.outputs.LogitsOnly` wrapper (the model itself otherwise)."""
    from captum_paths.model.outputs import LogitsOnly

    return model.model if isinstance(model, LogitsOnly) else model


def heads_spec(found: Sequence[Optional[Tuple[nn.Module, int, int]]], capture: str,
               tokens: TokenSelection) -> Optional[SiteSpec]:
    """A head :class:`SiteSpec` from ``(module, heads, head_dim)`` per block, or ``None`` when a
    block has none; one number of heads (and head dimension) when all blocks share it."""
    if not found or any(f is None for f in found):
        return None
    heads, dims = [int(f[1]) for f in found], [int(f[2]) for f in found]
    width = heads[0] if len(set(heads)) == 1 else heads
    unit = dims[0] if len(set(dims)) == 1 else dims
    return SiteSpec([f[0] for f in found], capture, tokens, width, unit)


def multihead_attention(module: Optional[nn.Module]) -> Optional[Tuple[nn.Module, int, int]]:
    """``(module, heads, head_dim)`` of an ``nn.MultiheadAttention`` (its heads are read with
    ``capture="mha"``), else ``None``."""
    if isinstance(module, nn.MultiheadAttention):
        return module, module.num_heads, module.head_dim
    return None


def projected_heads(proj: Optional[nn.Module], heads: Optional[int]) -> Optional[Tuple[nn.Module, int, int]]:
    """``(proj, heads, head_dim)`` when ``proj`` is a linear output projection whose input holds
    ``heads`` contiguous heads (read with ``capture="input"``), else ``None``."""
    if not isinstance(proj, nn.Linear) or isinstance(heads, bool) or not isinstance(heads, int) or heads < 1:
        return None
    if proj.in_features % heads:
        return None
    return proj, heads, proj.in_features // heads


def linear_width(module: Optional[nn.Module], side: str = "out") -> Optional[int]:
    """``out_features`` (or ``in_features``) of a linear layer, else ``None``."""
    if isinstance(module, nn.Linear):
        return module.out_features if side == "out" else module.in_features
    return None


def as_pair(size) -> Optional[Tuple[int, int]]:
    """``(h, w)`` from an int or a pair, else ``None``."""
    if size is None:
        return None
    if isinstance(size, int):
        return (size, size)
    try:
        h, w = size
        return int(h), int(w)
    except (TypeError, ValueError):
        return None



class CallWith(nn.Module):
    """A block that takes extra keyword arguments, called as ``block(h, **extra())``.

    Families whose blocks need more than the stream (EVA's rotary embedding, BEiT's
    shared relative position bias) hand such wrappers to :class:`StreamParts`.
    """

    def __init__(self, block: nn.Module, extra: Callable[[], Dict[str, object]]) -> None:
        super().__init__()
        self.block = block
        self.extra = extra

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.block(h, **self.extra())


__all__ += ["CallWith"]
