"""Neuron sites: where the units of a vision transformer live.

A *site* is one layer's activation, and a *unit* ``(layer, j)`` is unit ``j`` of site
``layer`` read at the token selection (see "Sites and neurons" in docs/method.md).
Two kinds of unit:

- an FFN **neuron**: one channel of the FFN hidden activation, after the
  non-linearity and before the second linear layer, ``(batch, tokens, d_ff)``;
- an attention **head**: the ``head_dim`` channels of one head's output before the
  attention's output projection, ``(batch, tokens, heads * head_dim)``, heads contiguous.

:class:`NeuronSites` finds the FFN sites (:meth:`NeuronSites.from_model`) and the head
sites (:meth:`NeuronSites.heads_from_model`) of every registered model family
(:mod:`captum_paths.model.families`), also in the backbone of a wrapper (a linear
probe, ``nn.Sequential(normalize, backbone, head)``, a Lightning module), interleaves
the two (:meth:`NeuronSites.mixed`), accepts explicit modules for any other model
(:meth:`NeuronSites.coerce`, what every ``sites=`` argument goes through, and
:meth:`NeuronSites.from_names`), and is the only place that hooks them:
:meth:`NeuronSites.record` and :meth:`NeuronSites.edit` are context managers that
remove every hook on exit, even when the forward raises.

Edits and records see every site as ``(batch, positions, units)``: a unit is one
column, so multiplying column ``j`` by a gate gates unit ``j``. For neuron sites the
positions are the selected tokens; for head sites they are the selected tokens times
the head's ``head_dim`` channels (token-major), so sums over the positions of a head
are sums over its channels at every selected token.
"""
from __future__ import annotations

import contextlib
import difflib
import operator
from typing import Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from captum_paths.model.tokens import TokenSelection, TokenSpec

__all__ = ["TokenSelection", "NeuronSites", "SiteEdit", "resolve_sites", "KINDS", "UNITS"]

# An edit receives the activation at the selected tokens, (batch, positions, units),
# and returns its replacement of the same shape.
SiteEdit = Callable[[torch.Tensor], torch.Tensor]
#: where a site's activation is read: a module's output, its first input, or the
#: per-head outputs of an ``nn.MultiheadAttention`` (recomputed, see ``NeuronSites``)
_CAPTURES = ("output", "input", "mha")
#: the kinds of unit a site holds
KINDS = ("neuron", "head")
#: how a site's 4-D activation holds its channels (see ``NeuronSites``' ``layout``)
LAYOUTS = ("channels_last", "channels_first")
#: What a run's paths hold (:meth:`NeuronSites.for_units`): FFN neurons, attention heads, or per
#: block its heads and then its FFN neurons.
UNITS = ("neurons", "heads", "mixed")


class NeuronSites:
    """The sites of a model's units, one module per layer: FFN neurons, attention heads, or both.

    Args:
        model (nn.Module): The model the sites belong to.
        modules (list of nn.Module): One module per layer, in execution order.
        tokens (TokenSelection or str or int or list of int, optional): Token
            selection at which units are read. Default: ``"cls"``.
        capture (str or list of str, optional): Where each layer's activation is read:
            ``"output"`` of the module (``blocks[i].mlp.act``), its first ``"input"``
            (``blocks[i].mlp.fc2`` of a gated FFN, ``blocks[i].attn.proj`` for heads), or
            ``"mha"``: the per-head outputs of an ``nn.MultiheadAttention``, which calls
            its output projection as a function so no module sees them. One value for
            every layer, or one per layer. Default: ``"output"``.
        names (list of str, optional): Dotted module names, for display.
        width (int or list, optional): The units of each layer (FFN width ``d_ff``, or
            number of heads): one value, or one per layer (hierarchical models, mixed
            sites; ``None`` entries are inferred); inferred when ``None``.
        family (str, optional): Model family the sites were discovered for.
        kind (str or list of str, optional): ``"neuron"`` or ``"head"``, for every layer
            or per layer. Default: ``"neuron"``.
        unit (int or list of int, optional): Channels per unit: 1 for neurons, the
            head dimension for heads (inferred from ``width`` and the module when
            ``None``). Default: ``None``.
        layout (str or list, optional): How a 4-D activation holds its channels:
            ``"channels_last"`` (``(batch, H, W, C)`` token grids) or ``"channels_first"``
            (``(batch, C, H, W)`` maps, e.g. a convolution's output; also ``(batch, C, L)``);
            either way it is read as ``H * W`` tokens of ``C`` channels. One value, or one per
            layer. ``None`` (default): activations are ``(batch, tokens, channels)``, and a 4-D
            one is refused, as its layout cannot be told from its shape (except at a linear
            layer, which is channels-last). Discovered sites take their family's layout.
        backbone (str, optional): The dotted path in ``model`` of the backbone that holds the
            sites, when they were found inside a wrapper (:meth:`from_model`); ``None`` when
            the model itself is the backbone or the sites were given.

    Attributes:
        modules, num_layers, tokens, names, family.
        captures (list of str): where each layer is read; ``capture`` is the value they
            share, or ``"mixed"``.
        kinds (list of str): the kind of unit of each layer.
        unit_sizes (list of int): channels per unit of each layer (1 for neurons).
        width (int or None): the units per layer when every layer has the same number.
        widths (list of int or None): the units of each layer (``None`` when unknown
            until a forward).
        layouts (list of str or None): the layout of each layer (``None``: 3-D only).
        backbone (str or None): where the backbone holding the sites is in ``model``.

    ``nn.MultiheadAttention`` heads (``capture="mha"``) are read by recomputing the
    heads from the module's own weights and inputs inside a forward hook; the edited
    output is ``out + W_o (new - heads)`` (exactly ``out`` when nothing is edited) and
    gradients flow through the recomputed heads. The module must run without masks,
    ``bias_k``/``bias_v`` or attention dropout.

    Examples::

        >>> sites = NeuronSites.from_model(timm_vit)
        >>> with sites.record() as acts:
        ...     timm_vit(images)
        >>> acts[3].shape          # (batch, selected tokens, d_ff)
        >>> heads = NeuronSites.heads_from_model(timm_vit)
        >>> both = NeuronSites.mixed(heads, sites)   # head of block l, then its FFN
    """

    def __init__(
        self,
        model: nn.Module,
        modules: Sequence[nn.Module],
        tokens: TokenSpec = "cls",
        capture: Union[str, Sequence[str]] = "output",
        names: Optional[Sequence[str]] = None,
        width: Optional[Union[int, Sequence[Optional[int]]]] = None,
        family: str = "custom",
        kind: Union[str, Sequence[str]] = "neuron",
        unit: Optional[Union[int, Sequence[Optional[int]]]] = None,
        layout: Optional[Union[str, Sequence[Optional[str]]]] = None,
        backbone: Optional[str] = None,
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
        L = len(modules)
        captures = _per_layer(capture, L, "capture", str)
        for c in captures:
            if c not in _CAPTURES:
                raise ValueError(f"capture must be one of {_CAPTURES}; got {c!r}")
        kinds = _per_layer(kind, L, "kind", str)
        for k in kinds:
            if k not in KINDS:
                raise ValueError(f"kind must be one of {KINDS}; got {k!r}")
        given_widths = _per_layer(width, L, "width", int, optional=True)
        given_units = _per_layer(unit, L, "unit", int, optional=True)
        layouts = _per_layer(layout, L, "layout", str, optional=True)
        for value in layouts:
            if value is not None and value not in LAYOUTS:
                raise ValueError(f"layout must be one of {LAYOUTS} (or None); got {value!r}")
        if backbone is not None and not isinstance(backbone, str):
            raise TypeError(f"backbone must be the backbone's dotted module path or None; got {type(backbone).__name__}")
        self.model = model
        self.modules: List[nn.Module] = modules
        self.tokens = TokenSelection.parse(tokens)
        self.captures: List[str] = captures
        self.capture = captures[0] if len(set(captures)) == 1 else "mixed"
        self.kinds: List[str] = kinds
        self.names = list(names) if names is not None else [_module_name(model, m) for m in modules]
        widths, units = [], []
        for layer, m in enumerate(modules):
            w, u = _layer_shape(m, captures[layer], kinds[layer], given_widths[layer], given_units[layer],
                                self.names[layer])
            widths.append(w)
            units.append(u)
        self.unit_sizes: List[int] = units
        self.widths: Optional[List[int]] = None if None in widths else [int(w) for w in widths]
        self.width: Optional[int] = (self.widths[0] if self.widths is not None and len(set(self.widths)) == 1
                                     else None)
        self.family = family
        # a linear layer's input and output hold their channels last, whatever their shape
        self.layouts: List[Optional[str]] = [
            value if value is not None or not isinstance(m, nn.Linear) else "channels_last"
            for value, m in zip(layouts, modules)
        ]
        self.backbone: Optional[str] = backbone or None

    # ------------------------------------------------------------------ discovery
    @classmethod
    def from_model(cls, model: nn.Module, tokens: Optional[TokenSpec] = None,
                   backbone: Union[None, str, nn.Module] = None) -> "NeuronSites":
        """Discover the FFN neuron sites of a model of a registered family (:mod:`captum_paths.model.families`),
        or of the backbone of one inside a wrapper.

        A model no family recognises is searched for the one backbone of a registered family
        inside it: a linear probe's ``backbone``, the backbone of ``nn.Sequential(normalize,
        backbone, head)``, a Lightning-style module's ``model``, an image tower under a
        hand-written zero-shot head. Its sites keep their full names (``backbone.blocks.3.mlp.act``)
        and hooks on them act inside the whole model, so every score is one of the wrapper's output.
        The fast residual-stream engine of the path search runs the backbone's blocks and then
        the wrapper on the backbone's output; it is used only where that reproduces the whole
        model's output on the batch (checked, and where the wrapper's output depends on the
        images through the backbone only), else the whole model runs, with the same results.

        Args:
            model (nn.Module): a model of a registered family (timm ViT, EVA,
                BEiT, CaiT, torchvision ViT, Hugging Face ViT family, open_clip
                towers ...), one wrapped in :class:`LogitsOnly`, or any module holding one.
            tokens (optional): Override the token selection the model's pooling
                implies (CLS for CLS-pooled heads, patch tokens for averaging heads). In a
                wrapper the default is the backbone's own pooling (its class token for a timm
                ``VisionTransformer`` with ``global_pool="token"``, a Hugging Face ``ViTModel``'s
                pooler); a wrapper that pools otherwise (a probe on the mean of the patch
                tokens) is explained at the tokens it reads with ``tokens="patches"`` (or
                ``"all"``, indices). The joint score is the removal effect at the tokens chosen
                whatever they are.
            backbone (str or nn.Module, optional): The backbone to take when the model holds
                several (its dotted path, e.g. ``"encoder"``, or the module itself); several
                backbones without it are a ``ValueError`` naming them.
        """
        found = _found_family(model, "neuron sites", backbone)
        spec = found.spec
        selection = spec.tokens if tokens is None else TokenSelection.parse(tokens, spec.tokens.num_prefix_tokens)
        return cls(model, spec.modules, selection, capture=spec.capture, width=spec.width, family=found.adapter.name,
                   layout=spec.layout, backbone=found.path or None)

    @classmethod
    def heads_from_model(cls, model: nn.Module, tokens: Optional[TokenSpec] = None,
                         backbone: Union[None, str, nn.Module] = None) -> "NeuronSites":
        """Discover the attention head sites of a model of a registered family: one layer per
        attention block, one unit per head, read at the same tokens as its FFN neurons.

        Head ``h`` of a layer is the slice ``h * head_dim .. (h + 1) * head_dim`` of the
        attention output before the output projection (timm: the input of ``attn.proj``;
        Hugging Face: of ``o_proj`` / ``out_proj`` / ``attention.output.dense``;
        torchvision and open_clip's ``nn.MultiheadAttention``: recomputed, ``capture="mha"``).

        Args:
            model (nn.Module): a model of a family whose adapter declares head sites
                (:meth:`~captum_paths.model.families.FamilyAdapter.head_sites`), or a wrapper
                holding one (as in :meth:`from_model`).
            tokens (optional): Override the token selection, as in :meth:`from_model`.
            backbone (str or nn.Module, optional): The backbone, as in :meth:`from_model`.

        Raises:
            ValueError: no family recognises the model, or its family declares no heads
                (windowed and staged models); pass the heads explicitly with
                :meth:`from_names` (``kind="head"``).
        """
        found = _found_family(model, "attention heads", backbone)
        adapter = found.adapter
        spec = adapter.head_sites(found.module)
        if spec is None:
            raise ValueError(
                f"the {adapter.name!r} family declares no attention head sites for a "
                f"{type(found.module).__name__} (windowed or staged attention, or heads its modules do not "
                "expose); pass them explicitly: NeuronSites.from_names(model, ['blocks.0.attn.proj', ...], "
                "capture='input', kind='head', num_heads=...)"
            )
        base = spec.tokens
        selection = base if tokens is None else TokenSelection.parse(tokens, base.num_prefix_tokens)
        return cls(model, spec.modules, selection, capture=spec.capture, width=spec.width, family=adapter.name,
                   kind="head", unit=spec.unit, layout=spec.layout, backbone=found.path or None)

    @classmethod
    def from_names(
        cls,
        model: nn.Module,
        names: Sequence[str],
        tokens: TokenSpec = "cls",
        capture: str = "output",
        num_prefix_tokens: int = 1,
        width: Optional[int] = None,
        kind: str = "neuron",
        num_heads: Optional[int] = None,
        layout: Optional[str] = None,
    ) -> "NeuronSites":
        """Sites given as dotted module names, e.g. ``["blocks.0.mlp.act", ...]``, or as the
        modules themselves (``[model.blocks[0].mlp.act, ...]``; names and modules may mix).

        A name that does not exist raises ``ValueError`` listing close matches, a module
        that is not part of ``model`` one naming its type.
        With ``kind="head"`` each module's activation (its ``capture``) is the
        concatenated output of ``num_heads`` heads, e.g. ``["blocks.0.attn.proj", ...]``
        with ``capture="input"``; ``nn.MultiheadAttention`` modules are read as
        ``capture="mha"`` and give their own number of heads. ``layout`` says how a 4-D
        activation holds its channels (``"channels_first"`` for a convolution's
        ``(batch, C, H, W)`` output, ``"channels_last"`` for ``(batch, H, W, C)`` grids);
        without it a 4-D activation is refused (see :class:`NeuronSites`).
        """
        if isinstance(names, (str, nn.Module)):
            raise TypeError("names must be a list of module names (or modules), not a single "
                            f"{'string' if isinstance(names, str) else type(names).__name__}")
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        if num_heads is not None and kind != "head":
            raise ValueError(f"num_heads applies to kind='head' only; got kind={kind!r}")
        modules, names = _named_modules(model, names, "names")
        selection = TokenSelection.parse(tokens, num_prefix_tokens)
        if kind == "neuron":
            return cls(model, modules, selection, capture=capture, names=names, width=width, layout=layout)
        captures = ["mha" if isinstance(m, nn.MultiheadAttention) else capture for m in modules]
        heads = [m.num_heads if c == "mha" else num_heads for m, c in zip(modules, captures)]
        if any(h is None for h in heads):
            raise ValueError("num_heads: give the number of heads of each site for kind='head' (only "
                             "nn.MultiheadAttention modules know their own)")
        return cls(model, modules, selection, capture=captures, names=names, width=heads, kind="head", layout=layout)

    @classmethod
    def for_units(cls, model: nn.Module, units: str = "neurons") -> "NeuronSites":
        """The sites of a run's ``units`` (:data:`UNITS`) on a model of a registered family.

        Args:
            model (nn.Module): the model.
            units (str): ``"neurons"`` (its FFN neurons, :meth:`from_model`), ``"heads"``
                (its attention heads, :meth:`heads_from_model`) or ``"mixed"`` (per block its
                heads, then its FFN neurons, each a layer: :meth:`mixed`).
        """
        if units not in UNITS:
            raise ValueError(f"units must be one of {UNITS}; got {units!r}")
        if units == "neurons":
            return cls.from_model(model)
        heads = cls.heads_from_model(model)
        return heads if units == "heads" else cls.mixed(heads, cls.from_model(model))

    @classmethod
    def mixed(cls, heads: "NeuronSites", neurons: "NeuronSites") -> "NeuronSites":
        """Head sites and FFN neuron sites of the same blocks, interleaved in execution order:
        layer ``2l`` holds the heads of block ``l``, layer ``2l + 1`` its FFN neurons.

        Args:
            heads (NeuronSites): head sites, one per block (:meth:`heads_from_model`).
            neurons (NeuronSites): neuron sites of the same model and blocks (:meth:`from_model`).

        Both must share the model, the number of layers and the token selection, and
        every head site must be defined before its block's FFN site and after the
        previous block's (definition order stands for execution order).
        """
        for name, sites in (("heads", heads), ("neurons", neurons)):
            if not isinstance(sites, NeuronSites):
                raise TypeError(f"{name} must be a NeuronSites; got {type(sites).__name__}")
        if set(heads.kinds) != {"head"} or set(neurons.kinds) != {"neuron"}:
            raise ValueError(f"mixed needs head sites then neuron sites; got kinds {sorted(set(heads.kinds))} and "
                             f"{sorted(set(neurons.kinds))}")
        if heads.model is not neurons.model:
            raise ValueError("heads and neurons must be sites of the same model object")
        if heads.num_layers != neurons.num_layers:
            raise ValueError(f"heads and neurons must have one site per block each; got {heads.num_layers} head "
                             f"sites and {neurons.num_layers} neuron sites")
        if heads.tokens != neurons.tokens:
            raise ValueError(f"heads and neurons must be read at the same tokens; got {heads.tokens} and "
                             f"{neurons.tokens}")
        order = {id(m): i for i, (_, m) in enumerate(heads.model.named_modules())}
        sequence = [order.get(id(m), -1) for pair in zip(heads.modules, neurons.modules) for m in pair]
        if any(b <= a for a, b in zip(sequence, sequence[1:])):
            raise ValueError(
                "heads and neurons do not interleave: each block's head site must come before its FFN site and "
                "after the previous block's FFN site in the model's definition order; build the sites with "
                "NeuronSites(model, modules, kind=[...], capture=[...]) in execution order instead"
            )

        def both(a: Sequence, b: Sequence) -> List:
            return [v for pair in zip(a, b) for v in pair]

        head_widths = heads.widths or [None] * heads.num_layers
        neuron_widths = neurons.widths or [None] * neurons.num_layers
        same = heads.family == neurons.family and heads.backbone == neurons.backbone
        return cls(
            heads.model, both(heads.modules, neurons.modules), heads.tokens,
            capture=both(heads.captures, neurons.captures), names=both(heads.names, neurons.names),
            width=both(head_widths, neuron_widths), family=heads.family if same else "custom",
            kind=both(heads.kinds, neurons.kinds), unit=both(heads.unit_sizes, neurons.unit_sizes),
            layout=both(heads.layouts, neurons.layouts), backbone=heads.backbone if same else None,
        )

    @classmethod
    def coerce(
        cls,
        model: nn.Module,
        sites: Union[None, "NeuronSites", nn.Module, Sequence[nn.Module]] = None,
        *,
        tokens: Optional[TokenSpec] = None,
        capture: Optional[str] = None,
        layout: Optional[str] = None,
        kind: Optional[str] = None,
        num_heads: Optional[int] = None,
        width: Optional[int] = None,
        backbone: Union[None, str, nn.Module] = None,
    ) -> "NeuronSites":
        """The sites of ``model`` from what a ``sites=`` argument holds, taken as Captum takes layers.

        Every attribution, path method and intervention normalises its ``sites`` here:

        - ``None``: the discovered FFN neuron sites (:meth:`from_model`; ``tokens`` and
          ``backbone`` apply);
        - a :class:`NeuronSites`: itself;
        - a module of ``model`` or a list of them (``model.blocks[3].mlp.act``,
          ``[b.mlp.act for b in model.blocks]``): one layer each, in execution order.

        For modules: each one's activation is its ``"output"``, unless the module is one of
        the sites its family discovers, which are read as the family reads them (the
        ``"input"`` of ``mlp.fc2`` in a gated FFN); an ``nn.MultiheadAttention`` holds heads
        (``capture="mha"``); ``capture`` says otherwise. They are read at the tokens of the
        backbone that holds them (its own pooling, as :meth:`from_model`); modules outside
        every backbone of a registered family need ``tokens``. A 4-D activation needs
        ``layout`` unless the family or the module's type tells it. Modules that are exactly
        the discovered sites (same capture and tokens) give :meth:`from_model`'s sites, with
        the fast residual-stream engine.

        Args:
            model (nn.Module): the model the sites belong to.
            sites: ``None``, a :class:`NeuronSites`, a module of ``model`` or a list of modules.
            tokens (optional): the token selection (see :class:`NeuronSites`); default: the
                backbone's.
            capture (str, optional): ``"output"``, ``"input"`` or ``"mha"`` for every module.
            layout (str, optional): ``"channels_last"`` or ``"channels_first"`` (4-D activations).
            kind (str, optional): ``"neuron"`` or ``"head"``; default ``"head"`` for an
                ``nn.MultiheadAttention`` and ``"neuron"`` otherwise.
            num_heads (int, optional): the heads of each head site (``kind="head"``) whose module
                does not know them (an ``nn.MultiheadAttention``, or a discovered head site, does).
            width (int, optional): the units of each layer, when they cannot be inferred.
            backbone (str or nn.Module, optional): the backbone (see :meth:`from_model`).

        Raises:
            TypeError: ``sites`` is none of the above (module names go to :meth:`from_names`).
            ValueError: a module that is not part of ``model``; no tokens for modules outside a backbone.
        """
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
        if sites is None:
            return cls.from_model(model, tokens=tokens, backbone=backbone)
        if isinstance(sites, NeuronSites):
            return sites
        if sites is model:
            return cls.from_model(model, tokens=tokens, backbone=backbone)
        if isinstance(sites, nn.Module) and not isinstance(sites, nn.ModuleList):
            given: List = [sites]
        elif isinstance(sites, (list, tuple, nn.ModuleList)) and all(isinstance(m, nn.Module) for m in sites):
            given = list(sites)
        else:
            raise TypeError(
                "sites must be a NeuronSites, a module of the model or a list of its modules (as Captum's layer "
                f"arguments), or None; got {_described(sites)}"
                + ("; for module names use NeuronSites.from_names(model, names)"
                   if isinstance(sites, str) or (isinstance(sites, (list, tuple)) and any(isinstance(s, str)
                                                                                        for s in sites)) else "")
            )
        if kind is not None and kind not in KINDS:
            raise ValueError(f"kind must be one of {KINDS}; got {kind!r}")
        modules, names = _named_modules(model, given, "sites")
        holder = _holding_backbone(model, modules, backbone)
        kinds = [kind or ("head" if isinstance(m, nn.MultiheadAttention) else "neuron") for m in modules]
        if holder is not None and capture is None and width is None and layout is None and num_heads is None:
            same = _discovered_as(model, holder, modules, kinds, tokens)
            if same is not None:
                return same
        if tokens is None:
            if holder is None:
                raise ValueError(
                    f"tokens: the sites {names} are not inside a backbone of a registered family, so the tokens "
                    "they are read at cannot be inferred; give tokens= ('cls', 'patches', 'all', an index or a "
                    "list of indices), e.g. NeuronSites.coerce(model, modules, tokens='cls')"
                )
            selection = holder.spec.tokens
        else:
            prefix = holder.spec.tokens.num_prefix_tokens if holder is not None else 1
            selection = TokenSelection.parse(tokens, prefix)
        head_spec = None
        if holder is not None and "head" in kinds:
            head_spec = holder.adapter.head_sites(holder.module)
        neuron_at = {id(m): i for i, m in enumerate(holder.spec.modules)} if holder is not None else {}
        head_at = {id(m): i for i, m in enumerate(head_spec.modules)} if head_spec is not None else {}
        captures, widths, units, layouts = [], [], [], []
        for m, k in zip(modules, kinds):
            spec, at = (holder.spec if holder is not None else None, neuron_at) if k == "neuron" else (head_spec,
                                                                                                        head_at)
            known = spec is not None and id(m) in at
            if k == "head" and isinstance(m, nn.MultiheadAttention) and capture in (None, "mha"):
                c = "mha"
            else:
                c = capture or (spec.capture if known else "output")
            from_spec = known and c == spec.capture
            w = width if width is not None else (_layer_value(spec.width, at[id(m)]) if from_spec else None)
            u = _layer_value(spec.unit, at[id(m)]) if from_spec and k == "head" else None
            if k == "head" and c != "mha" and w is None:
                w = num_heads
                if w is None:
                    raise ValueError(
                        f"num_heads: give the number of heads of the head site {_module_name(model, m)!r} (only "
                        "nn.MultiheadAttention modules and the head sites a family discovers know their own)")
            captures.append(c)
            widths.append(w)
            units.append(u)
            layouts.append(layout if layout is not None else (spec.layout if known else None))
        return cls(model, modules, selection, capture=captures, names=names, width=widths, kind=kinds, unit=units,
                   layout=layouts, backbone=holder.path or None if holder is not None else None)

    # ----------------------------------------------------------------- properties
    @property
    def num_layers(self) -> int:
        return len(self.modules)

    @property
    def has_heads(self) -> bool:
        """Whether any layer holds attention heads."""
        return "head" in self.kinds

    def __len__(self) -> int:
        return len(self.modules)

    def __repr__(self) -> str:
        where = f"{self.names[0]} … {self.names[-1]}" if len(self.names) > 1 else self.names[0]
        width = self.width if self.width is not None or self.widths is None else self.widths
        kinds = sorted(set(self.kinds))
        kind = f"kind={kinds[0]!r}, " if len(kinds) == 1 else "kind='mixed', "
        backbone = f", backbone={self.backbone!r}" if self.backbone else ""
        return (
            f"NeuronSites(family={self.family!r}, {kind}num_layers={self.num_layers}, "
            f"width={width}, tokens={self.tokens}, capture={self.capture!r}, "
            f"modules=[{where}]{backbone})"
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

    def check_neurons_only(self, what: str) -> None:
        """ValueError naming ``what`` when some layers hold heads (for computations defined on
        FFN neurons only)."""
        if self.has_heads:
            layers = [l for l, k in enumerate(self.kinds) if k == "head"]
            raise ValueError(
                f"{what} is defined for FFN neuron sites only; these sites hold attention heads at layers "
                f"{layers}. Use NeuronSites.from_model(model) for neurons"
            )

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

    def check_execution_order(self, acts: Mapping[int, torch.Tensor]) -> None:
        """ValueError when the sites did not run in layer order in the forward that filled
        ``acts`` (a :meth:`record`, whose dict fills in call order), or some did not run: a path's
        layers are searched and gated in execution order, so sites given out of order (e.g.
        ``from_names(model, ["blocks.3.mlp.act", "blocks.1.mlp.act"])``) would be scored wrongly."""
        missing = [self.names[l] for l in range(self.num_layers) if l not in acts]
        if missing:
            raise ValueError(
                f"sites {missing} did not run in the forward of {type(self.model).__name__}; pass sites that "
                "the model calls (NeuronSites.from_names)"
            )
        called = list(acts)
        if called != sorted(called):
            raise ValueError(
                f"the sites are not in execution order: given {self.names}, but the forward of "
                f"{type(self.model).__name__} runs them as {[self.names[l] for l in called]}; pass them in the "
                "order the model runs them (a path's layers are searched one after the other)"
            )

    # ---------------------------------------------------------------------- hooks
    @contextlib.contextmanager
    def edit(self, edits: Mapping[int, SiteEdit]) -> Iterator[None]:
        """Replace the activation at the selected tokens of some layers.

        Args:
            edits (dict): ``{layer: fn}``; ``fn`` maps the activation at the
                selected tokens ``(batch, positions, units)`` (see the module
                docstring; ``(batch, n_tokens, d_ff)`` for neuron sites) to its
                replacement of the same shape (or to the tensor it was given,
                edited in place). Other tokens pass unchanged and everything
                downstream is recomputed.
        """
        for layer in edits:
            self.check_layer(layer, "edits key")
        handles = []
        try:
            for layer, fn in edits.items():
                handles.append(self._register(layer, self._editing(fn, self.unit_sizes[layer], layer)))
            yield
        finally:
            for h in handles:
                h.remove()

    @contextlib.contextmanager
    def record(
        self, layers: Optional[Sequence[int]] = None, detach: bool = True
    ) -> Iterator[Dict[int, torch.Tensor]]:
        """Record activations at the selected tokens, ``{layer: (batch, positions, units)}``
        (``(batch, n_tokens, d_ff)`` for neuron sites, ``(batch, n_tokens * head_dim, heads)``
        for head sites).

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

    def apply_edit(self, act: torch.Tensor, fn: SiteEdit, layer: Optional[int] = None) -> torch.Tensor:
        """``act`` ``(batch, tokens, channels)`` with ``fn`` applied at the selected tokens,
        exactly as :meth:`edit` would inside a forward (of ``layer``'s units; neurons when
        ``None``)."""
        unit = 1 if layer is None else self.unit_sizes[self.check_layer(layer)]
        return self._editing(fn, unit, layer)(act)

    def _editing(self, fn: SiteEdit, unit: int = 1, layer: Optional[int] = None) -> Callable[[torch.Tensor], torch.Tensor]:
        tokens = self.tokens
        layout = "channels_last" if layer is None else self.layouts[layer]
        where = "a site" if layer is None else f"site {self.names[layer]!r} (layer {layer})"

        def apply(act: torch.Tensor) -> torch.Tensor:
            if not isinstance(act, torch.Tensor):
                raise ValueError(
                    f"{where} is a {type(act).__name__}, not a tensor: give a module whose output (or first "
                    "input, capture='input') is the activation"
                )
            if layout == "channels_first" and act.dim() >= 3:  # (batch, C, ...): edited as (batch, positions, C)
                moved = act.movedim(1, -1)
                flat = tokens_last(moved.reshape(moved.shape[0], -1, moved.shape[-1]))
                return flat.reshape(moved.shape).movedim(-1, 1)
            if act.dim() == 4:
                if layout != "channels_last":
                    raise ValueError(
                        f"{where} produced a 4-D activation of shape {tuple(act.shape)}, whose layout cannot be "
                        "told from its shape: say how it holds its channels, layout='channels_first' for "
                        "(batch, C, H, W) maps (a convolution's output) or layout='channels_last' for "
                        "(batch, H, W, C) token grids (NeuronSites.coerce, NeuronSites.from_names or "
                        "NeuronSites(..., layout=...))"
                    )
                # (batch, H, W, d_ff) token grids: edited as (batch, H * W, d_ff)
                return tokens_last(act.reshape(act.shape[0], -1, act.shape[-1])).reshape(act.shape)
            return tokens_last(act)

        def tokens_last(act: torch.Tensor) -> torch.Tensor:
            if act.dim() != 3:
                raise ValueError(
                    f"{where} must produce (batch, tokens, d_ff) activations (or 4-D ones of a known layout: "
                    f"(batch, H, W, d_ff), or (batch, d_ff, H, W) with layout='channels_first'); got shape "
                    f"{tuple(act.shape)}"
                )
            idx = tokens.index(act.shape[1])
            selected = act[:, idx]
            if unit == 1:
                new = fn(selected)
                if new is selected and isinstance(idx, slice):
                    return act  # a slice is a view: in-place edits are already in `act`
            else:
                units = _unit_view(selected, unit)  # (batch, n_tokens * unit, heads), a copy
                new = fn(units)  # when it is `units` itself, in-place edits are written back below
                if new.shape != units.shape:
                    raise ValueError(
                        f"a site edit must keep the shape {tuple(units.shape)}; got {tuple(new.shape)}"
                    )
                new = _channel_view(new, selected.shape[1], unit)
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

    def _register(self, layer: int, apply: Callable[[torch.Tensor], torch.Tensor]):
        module, capture = self.modules[layer], self.captures[layer]
        if capture == "output":
            def hook(_module, _args, output):
                return apply(output)
            return module.register_forward_hook(hook)
        if capture == "mha":
            def mha_hook(mha, args, kwargs, output):
                return _edited_attention(mha, args, kwargs, output, apply)
            return module.register_forward_hook(mha_hook, with_kwargs=True)

        def pre_hook(_module, args):
            return (apply(args[0]),) + tuple(args[1:])
        return module.register_forward_pre_hook(pre_hook)


def resolve_sites(model: nn.Module, sites: Union[None, NeuronSites, nn.Module, Sequence[nn.Module]]) -> NeuronSites:
    """``sites`` as :class:`NeuronSites` (:meth:`NeuronSites.coerce`): itself, the sites discovered in
    ``model`` when ``None``, or a module of ``model`` / a list of its modules (both checked)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    return NeuronSites.coerce(model, sites)


def _found_family(model: nn.Module, what: str, backbone: Union[None, str, nn.Module] = None):
    """The :class:`~captum_paths.model.families.base.Backbone` of ``model`` (the model itself, or the one
    backbone of a registered family inside it), else ``ValueError`` naming ``what``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    from captum_paths.model.families.base import find_backbone, inner_model, looked_for

    found = find_backbone(model, backbone)
    if found is None:
        raise ValueError(
            f"cannot find {what} in a {type(inner_model(model)).__name__}: looked for "
            f"{'; '.join(looked_for())}, in the model and in each of its submodules. For other models pass the "
            "modules explicitly: NeuronSites.from_names(model, ['blocks.0.mlp.act', ...], tokens='cls') or "
            "sites=[module, ...] with NeuronSites.coerce(model, modules, tokens='cls'), or register a "
            "FamilyAdapter with captum_paths.model.families.register_family"
        )
    return found


def _named_modules(model: nn.Module, items: Sequence, argument: str) -> Tuple[List[nn.Module], List[str]]:
    """The modules and dotted names of ``items`` (names or modules of ``model``); ``ValueError`` for a
    name ``model`` does not have (with close matches) or a module that is not part of it."""
    available = dict(model.named_modules())
    index = {id(m): name for name, m in available.items()}
    modules, names = [], []
    for i, item in enumerate(items):
        if isinstance(item, nn.Module):
            if id(item) not in index:
                raise ValueError(
                    f"{argument}[{i}]: the {type(item).__name__} given is not a submodule of the "
                    f"{type(model).__name__} (a site must be a module the model holds and calls)"
                )
            modules.append(item)
            names.append(index[id(item)])
        elif isinstance(item, str):
            if item not in available:
                close = difflib.get_close_matches(item, list(available), n=5, cutoff=0.5)
                hint = f"; close matches: {close}" if close else ""
                raise ValueError(f"{argument}: {type(model).__name__} has no module named {item!r}{hint}")
            modules.append(available[item])
            names.append(item)
        else:
            raise TypeError(f"{argument}[{i}] must be a module of the model or its dotted name; got "
                            f"{_described(item)}")
    return modules, names


def _holding_backbone(model: nn.Module, modules: Sequence[nn.Module], backbone: Union[None, str, nn.Module]):
    """The backbone of a registered family (the one ``backbone`` names, else any found) that holds every
    module of ``modules``, or ``None``."""
    from captum_paths.model.families.base import find_backbone, find_backbones

    candidates = [find_backbone(model, backbone)] if backbone is not None else find_backbones(model)
    for candidate in candidates:
        inside = {id(m) for m in candidate.module.modules()}
        if all(id(m) in inside for m in modules):
            return candidate
    return None


def _discovered_as(model: nn.Module, holder, modules: Sequence[nn.Module], kinds: Sequence[str],
                   tokens: Optional[TokenSpec]) -> Optional["NeuronSites"]:
    """The discovered sites (:meth:`NeuronSites.from_model`, :meth:`~NeuronSites.heads_from_model` or
    their :meth:`~NeuronSites.mixed`) when ``modules`` are exactly them, else ``None``."""
    where = holder.path or None
    ids = [id(m) for m in modules]
    if set(kinds) == {"neuron"} and ids == [id(m) for m in holder.spec.modules]:
        return NeuronSites.from_model(model, tokens=tokens, backbone=where)
    if "head" not in kinds:
        return None
    head_spec = holder.adapter.head_sites(holder.module)
    if head_spec is None:
        return None
    heads = [id(m) for m in head_spec.modules]
    if set(kinds) == {"head"} and ids == heads:
        return NeuronSites.heads_from_model(model, tokens=tokens, backbone=where)
    neurons = [id(m) for m in holder.spec.modules]
    if len(heads) == len(neurons) and ids == [i for pair in zip(heads, neurons) for i in pair] and list(kinds) == [
            "head", "neuron"] * len(heads):
        return NeuronSites.mixed(NeuronSites.heads_from_model(model, tokens=tokens, backbone=where),
                                 NeuronSites.from_model(model, tokens=tokens, backbone=where))
    return None


def _layer_value(value, layer: int):
    """A per-layer value of a :class:`SiteSpec` (one for every layer, or a list)."""
    return value[layer] if isinstance(value, (list, tuple)) else value


def _described(obj) -> str:
    """``str ('blocks.0.mlp.act')``, ``list of 2 (str, str)``: what a user passed, for messages."""
    if isinstance(obj, (str, int, float)):
        return f"{type(obj).__name__} ({obj!r})"
    if isinstance(obj, (list, tuple)):
        inner = ", ".join(type(v).__name__ for v in list(obj)[:4]) + (", ..." if len(obj) > 4 else "")
        return f"{type(obj).__name__} of {len(obj)} ({inner})"
    return type(obj).__name__


def _per_layer(value, num_layers: int, argument: str, kind: type, optional: bool = False) -> List:
    """One value per layer from a single value or a per-layer sequence (any iterable), type-checked;
    ints may be any integer type (numpy, 0-d tensors)."""
    def checked(v):
        if v is None and optional:
            return None
        if kind is int and not isinstance(v, bool):
            try:
                return operator.index(v)
            except TypeError:
                pass
        elif isinstance(v, kind):
            return v
        raise TypeError(f"{argument} must be {'an int' if kind is int else 'a str'} or one per layer; got {v!r}")

    if value is None or isinstance(value, str) or not hasattr(value, "__iter__") or getattr(value, "ndim", 1) == 0:
        return [checked(value)] * num_layers
    values = list(value)
    if len(values) != num_layers:
        raise ValueError(f"{argument}: give one value per layer ({num_layers}); got {len(values)}")
    return [checked(v) for v in values]


def _layer_shape(module: nn.Module, capture: str, kind: str, width: Optional[int], unit: Optional[int],
                 name: str) -> Tuple[Optional[int], int]:
    """``(units, channels per unit)`` of one layer, from what is given and the module."""
    for argument, value in (("width", width), ("unit", unit)):
        if value is not None and value < 1:
            raise ValueError(f"{argument} must be positive; got {value} (layer {name!r})")
    if capture == "mha":
        if kind != "head" or not isinstance(module, nn.MultiheadAttention):
            raise ValueError(f"capture='mha' reads the heads of an nn.MultiheadAttention; layer {name!r} is a "
                             f"{type(module).__name__} of kind {kind!r}")
        heads, head_dim = module.num_heads, module.head_dim
        if (width or heads) != heads or (unit or head_dim) != head_dim:
            raise ValueError(f"layer {name!r}: the nn.MultiheadAttention has {heads} heads of {head_dim} channels; "
                             f"got width={width}, unit={unit}")
        return heads, head_dim
    if kind == "neuron":
        if unit not in (None, 1):
            raise ValueError(f"unit must be 1 for neuron sites; got {unit} (layer {name!r})")
        return (width if width is not None else _infer_width([module], capture)), 1
    channels = _infer_width([module], capture)
    if width is not None and unit is not None:
        if channels is not None and width * unit != channels:
            raise ValueError(f"layer {name!r}: {width} heads of {unit} channels do not make its {channels} channels")
        return width, unit
    if channels is None:
        raise ValueError(f"layer {name!r}: cannot infer the channels of a {type(module).__name__}; give both width "
                         "(heads) and unit (channels per head)")
    given = width if width is not None else unit
    if given is None:
        raise ValueError(f"layer {name!r}: a head site needs its number of heads (width) or the channels per head "
                         "(unit)")
    if channels % given:
        raise ValueError(f"layer {name!r}: {channels} channels do not split into units of {given}")
    return (width, channels // width) if width is not None else (channels // unit, unit)


def _unit_view(selected: torch.Tensor, unit: int) -> torch.Tensor:
    """``(batch, n_tokens, units * unit)`` -> ``(batch, n_tokens * unit, units)``: one column per unit."""
    batch, n, channels = selected.shape
    if channels % unit:
        raise ValueError(f"a head site must hold a whole number of heads of {unit} channels; got {channels} channels")
    return selected.reshape(batch, n, channels // unit, unit).transpose(2, 3).reshape(batch, n * unit, -1)


def _channel_view(units: torch.Tensor, n_tokens: int, unit: int) -> torch.Tensor:
    """The inverse of :func:`_unit_view`: ``(batch, n_tokens * unit, units)`` -> ``(batch, n_tokens, units * unit)``."""
    batch = units.shape[0]
    return units.reshape(batch, n_tokens, unit, -1).transpose(2, 3).reshape(batch, n_tokens, -1)


def _edited_attention(mha: nn.MultiheadAttention, args, kwargs, output, apply: Callable[[torch.Tensor], torch.Tensor]):
    """The output of ``mha`` with its per-head outputs ``(batch, tokens, heads * head_dim)`` passed
    through ``apply``. The heads are recomputed from the module's weights and inputs; the
    result is ``out + W_o (new - heads)``, in which only the recomputed heads carry gradients
    (so upstream gradients are not counted twice): exactly ``out`` where nothing changed."""
    import inspect

    bound = inspect.signature(mha.forward).bind(*args, **kwargs)
    bound.apply_defaults()
    call = bound.arguments
    for option in ("key_padding_mask", "attn_mask"):
        if call.get(option) is not None:
            raise ValueError(f"head sites of an nn.MultiheadAttention need a call without {option}; "
                             f"{type(mha).__name__} got one")
    if call.get("is_causal") or mha.bias_k is not None or mha.add_zero_attn:
        raise ValueError("head sites of an nn.MultiheadAttention need plain attention (no is_causal, bias_k/bias_v "
                         "or add_zero_attn)")
    if mha.training and mha.dropout > 0:
        raise ValueError("head sites of an nn.MultiheadAttention with attention dropout need the model in eval mode")
    query, key, value = call["query"], call["key"], call["value"]
    if not mha.batch_first:
        query, key, value = (t.transpose(0, 1) for t in (query, key, value))
    heads, head_dim = mha.num_heads, mha.head_dim
    if mha._qkv_same_embed_dim:
        w_q, w_k, w_v = mha.in_proj_weight.chunk(3)
    else:
        w_q, w_k, w_v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
    b_q, b_k, b_v = (None,) * 3 if mha.in_proj_bias is None else mha.in_proj_bias.chunk(3)

    def split(x: torch.Tensor) -> torch.Tensor:  # (batch, tokens, heads * head_dim) -> (batch, heads, tokens, head_dim)
        return x.reshape(x.shape[0], x.shape[1], heads, head_dim).transpose(1, 2)

    q, k, v = split(F.linear(query, w_q, b_q)), split(F.linear(key, w_k, b_k)), split(F.linear(value, w_v, b_v))
    per_head = F.scaled_dot_product_attention(q, k, v).transpose(1, 2)
    per_head = per_head.reshape(per_head.shape[0], per_head.shape[1], -1)  # (batch, tokens, heads * head_dim)
    new = apply(per_head)
    weight = mha.out_proj.weight
    change = F.linear(new, weight) - F.linear(per_head, weight).detach()
    out = output[0] if mha.batch_first else output[0].transpose(0, 1)
    edited = out.detach() + change.to(out.dtype)
    if not mha.batch_first:
        edited = edited.transpose(0, 1)
    return (edited,) + tuple(output[1:])


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
