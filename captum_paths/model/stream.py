"""Block-by-block execution of a ViT's residual stream.

The path search resumes the forward from a cached residual stream
instead of re-running the early blocks. :class:`ResidualStream` splits a model
into ``embed`` (images -> stream entering block 0), ``blocks[i]`` and ``head``
(stream after the last block -> logits) for the model families whose adapter
declares one (:mod:`captum_paths.model.families`). Hooks on the sites stay
active because the very same modules run.

Two further savings, both checked numerically before use (:meth:`ResidualStream.matches`):

- blocks whose structure the adapter knows (timm ``Block`` with ``Mlp``, torchvision
  ``EncoderBlock``) are split at their neuron site, so that a block can be
  finished several times with different site edits while the attention and the
  first FFN layer run once (:class:`BlockRun`);
- when the head reads the class token only and the neurons are read there, the
  last block computes the class token row only (its attention still reads every
  token).

Sites found in the backbone of a wrapper (a linear probe, ``nn.Sequential(normalize,
backbone, head)``, ...) run on the backbone's stream: ``embed`` runs the wrapper up to the
backbone's call and embeds what the backbone receives, ``head`` finishes the backbone and runs
the wrapper on that output (:func:`through_wrapper`). It is used only when it reproduces the
whole model's logits on the batch, with the wrapper's own input replaced by NaNs: a wrapper
whose output depends on the images other than through the backbone is run whole.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import torch
from torch import nn

from captum_paths.model.families.base import SiteSpec, SplitBlock, StreamParts
from captum_paths.model.sites import NeuronSites, SiteEdit

logger = logging.getLogger(__name__)

__all__ = ["ResidualStream", "BlockRun", "SplitBlock", "through_wrapper"]


class BlockRun:
    """Block ``layer`` on the stream ``h`` ``(rows, tokens, D)``, run up to its site once.

    :meth:`finish` completes the block under a site edit and may be called many
    times: for a :class:`SplitBlock` only the part after the site runs again,
    other blocks run whole under :meth:`NeuronSites.edit`.
    """

    def __init__(self, stream: "ResidualStream", layer: int, h: torch.Tensor, cls_only: bool = False) -> None:
        self.stream, self.layer, self.h = stream, layer, h
        self.split = stream.splits[layer] if stream.splits is not None else None
        self.mid: Optional[torch.Tensor] = None
        self.act: Optional[torch.Tensor] = None
        self._unedited: Optional[torch.Tensor] = None
        if self.split is not None:
            self.mid, self.act = self.split.pre(h, cls_only)

    def take(self, index: torch.Tensor) -> "BlockRun":
        """The same run restricted (or repeated) to rows ``index``."""
        run = BlockRun.__new__(BlockRun)
        run.stream, run.layer, run.split = self.stream, self.layer, self.split
        run.h = self.h[index]
        run.mid, run.act, run._unedited = (None if x is None else x[index] for x in (self.mid, self.act, self._unedited))
        return run

    def finish(self, edit: Optional[SiteEdit] = None) -> torch.Tensor:
        """The block's output with ``edit`` applied at the site's selected tokens."""
        sites = self.stream.sites
        if self.split is not None:
            idx = sites.tokens.index(self.act.shape[1])
            if edit is None or (isinstance(idx, slice) and idx == slice(0, self.act.shape[1])):
                act = self.act if edit is None else sites.apply_edit(self.act, edit, self.layer)
                return self.split.post(self.mid, act)
            # the rest of the block is token-wise: the unselected tokens' output does
            # not depend on the edit, so it is computed once and only the selected
            # tokens are finished again
            if self._unedited is None:
                self._unedited = self.split.post(self.mid, self.act)
            out = self._unedited.clone()
            out[:, idx] = self.split.post(self.mid[:, idx], edit(self.act[:, idx])).to(out.dtype)
            return out
        block = self.stream.blocks[self.layer]
        if edit is None:
            return block(self.h)
        with sites.edit({self.layer: edit}):
            return block(self.h)


class ResidualStream:
    """``embed``, ``blocks`` and ``head`` of a model, with ``model(x) == head(blocks(embed(x)))``.

    Args:
        embed (callable): images ``(batch, C, H, W)`` -> stream ``(batch, T, D)``.
        blocks (list of nn.Module): one transformer block per site, in order.
        head (callable): final stream ``(batch, T, D)`` -> logits ``(batch, classes)``.
        sites (NeuronSites, optional): the sites inside the blocks (needed by :class:`BlockRun`).
        splits (list, optional): a :class:`SplitBlock` or ``None`` per block.
        cls_readout (bool, optional): the last block may compute the class token
            only (the head reads nothing else and the neurons are read there).
    """

    def __init__(
        self,
        embed: Callable[[torch.Tensor], torch.Tensor],
        blocks: List[nn.Module],
        head: Callable[[torch.Tensor], torch.Tensor],
        sites: Optional[NeuronSites] = None,
        splits: Optional[List[Optional[SplitBlock]]] = None,
        cls_readout: bool = False,
    ) -> None:
        from captum_paths.model.outputs import to_logits

        self.embed = embed
        self.blocks = blocks
        self.head = head if getattr(head, "_logits", False) else _logits_head(head, to_logits)
        self.sites = sites
        self.splits = splits
        self.cls_readout = bool(cls_readout and splits is not None and splits[-1] is not None)

    @classmethod
    def from_sites(cls, sites: NeuronSites) -> Optional["ResidualStream"]:
        """The stream of a model whose family adapter declares one and whose blocks hold
        the sites, else ``None`` (also when building it fails: the search then runs the
        whole model). Head sites (one per block) run their blocks whole; mixed sites (the
        heads, then the FFN neurons of every block) run each block as its attention half
        and its FFN half where the adapter declares them (:meth:`FamilyAdapter.block_halves`),
        else get ``None``."""
        from captum_paths.model.families import get_family, inner_model

        model = inner_model(sites.model)
        try:
            adapter = get_family(sites.family)
        except ValueError:  # explicit sites ("custom"): no stream
            return None
        mixed = len(set(sites.kinds)) > 1
        if mixed and (sites.kinds[0::2] != ["head"] * (sites.num_layers // 2)
                      or sites.kinds[1::2] != ["neuron"] * (sites.num_layers // 2)):
            return None  # not the heads-then-neurons interleaving of NeuronSites.mixed
        # the blocks hold the FFN sites (mixed: every second layer)
        ffn = range(1, sites.num_layers, 2) if mixed else range(sites.num_layers)
        spec = SiteSpec([sites.modules[l] for l in ffn], sites.captures[ffn[0]], sites.tokens,
                        sites.widths[1] if mixed and sites.widths is not None else sites.width)
        try:
            backbone = inner_model(sites.model.get_submodule(sites.backbone)) if sites.backbone else None
            parts = adapter.stream(model if backbone is None else backbone, spec)
            if parts is not None and mixed:
                halves = [adapter.block_halves(block) for block in parts.blocks]
                if any(h is None for h in halves):
                    return None
                parts.blocks = [half for pair in halves for half in pair]
                parts.splits = None
            if parts is not None and backbone is not None:
                parts = through_wrapper(sites.model, backbone, parts)
        except Exception as exc:  # an unknown variant of a known family: run the model whole
            logger.info("no residual stream for %s (%s: %s); the search runs the whole model",
                        type(model).__name__, type(exc).__name__, exc)
            return None
        if parts is None:
            return None
        if len(parts.blocks) != sites.num_layers or not all(
            _contains(block, site) for block, site in zip(parts.blocks, sites.modules)
        ):
            return None
        cls_tokens = sites.tokens.kind == "cls" or tuple(sites.tokens.indices) == (0,)
        splits = None if sites.has_heads else parts.splits  # blocks split at their FFN site only
        return cls(parts.embed, parts.blocks, parts.head, sites, splits,
                   cls_readout=parts.reads_cls and cls_tokens)

    def plain(self) -> "ResidualStream":
        """The same stream without block splits or the class-token shortcut."""
        return ResidualStream(self.embed, self.blocks, self.head, self.sites)

    def begin(self, layer: int, h: torch.Tensor) -> BlockRun:
        """Run block ``layer`` on ``h`` up to its site (class token only in the last
        block when the shortcut applies)."""
        return BlockRun(self, layer, h, cls_only=self.cls_readout and layer == len(self.blocks) - 1)

    def run(self, h: torch.Tensor, start: int, stop: Optional[int] = None) -> torch.Tensor:
        """Run blocks ``start .. stop-1`` on the stream entering block ``start``."""
        stop = len(self.blocks) if stop is None else stop
        for layer in range(start, stop):
            h = self.begin(layer, h).finish() if self.cls_readout and layer == len(self.blocks) - 1 else self.blocks[layer](h)
        return h

    def logits(self, h: torch.Tensor, start: int) -> torch.Tensor:
        """Logits from the stream entering block ``start``."""
        return self.head(self.run(h, start))

    def matches(self, inputs: torch.Tensor, logits: torch.Tensor) -> bool:
        """Whether the split forward reproduces the model's logits on ``inputs`` (``False`` too when it
        cannot run on them)."""
        try:
            return self._matches(inputs, logits)
        except Exception as exc:  # a stream that cannot run on the batch is not used: the model runs whole
            logger.info("the residual stream does not run on the batch (%s: %s); the search runs the whole model",
                        type(exc).__name__, exc)
            return False

    def _matches(self, inputs: torch.Tensor, logits: torch.Tensor) -> bool:
        with torch.no_grad():
            mine = self.logits(self.embed(inputs), 0)
            if self.splits is not None:
                h = self.embed(inputs)
                for layer in range(len(self.blocks)):
                    whole = self.blocks[layer](h)
                    if self.splits[layer] is not None and not _close(self.begin(layer, h).finish(), whole[:, :1] if (
                        self.cls_readout and layer == len(self.blocks) - 1) else whole):
                        return False
                    h = whole
        return mine.shape == logits.shape and _close(mine, logits)


def _logits_head(head: Callable[[torch.Tensor], Any], to_logits: Callable[[Any], torch.Tensor]):
    """``head`` returning the logits tensor of what it returns (a Hugging Face classifier's ``ModelOutput``)."""
    def logits(h: torch.Tensor) -> torch.Tensor:
        return to_logits(head(h))

    logits._logits = True  # type: ignore[attr-defined]
    return logits


class _Stop(Exception):
    """Raised inside a wrapper's forward once its backbone's input is caught."""


class _NotThrough(RuntimeError):
    """A wrapper that does not call its backbone once with the images (as its first argument or
    ``pixel_values``): its output is not a function of the backbone's output on the images."""


@contextlib.contextmanager
def _forward_replaced(module: nn.Module, forward: Callable[..., Any]) -> Iterator[None]:
    """``module.forward`` is ``forward`` inside the block (hooks on ``module`` still run)."""
    had = "forward" in module.__dict__
    old = module.__dict__.get("forward")
    module.forward = forward  # an instance attribute: nn.Module.__call__ looks it up first
    try:
        yield
    finally:
        if had:
            module.forward = old
        else:
            del module.forward


def _images(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> torch.Tensor:
    """The image batch a backbone was called with: its only tensor argument (first positional or
    ``pixel_values``)."""
    tensors = [a for a in args if isinstance(a, torch.Tensor)] + [v for v in kwargs.values()
                                                                  if isinstance(v, torch.Tensor)]
    first = args[0] if args else kwargs.get("pixel_values", kwargs.get("x"))
    if len(tensors) != 1 or not isinstance(first, torch.Tensor):
        raise _NotThrough(f"the backbone is called with {len(tensors)} tensor arguments; its stream takes the images "
                          "alone")
    return first


def through_wrapper(model: nn.Module, backbone: nn.Module, parts: StreamParts) -> StreamParts:
    """The stream of ``model``, a wrapper whose forward calls ``backbone`` (whose stream ``parts`` are),
    as the backbone's blocks between two runs of the wrapper.

    ``embed(x)`` runs ``model(x)`` until it calls the backbone and embeds what the backbone receives
    (after the wrapper's own preprocessing); ``head(h)`` finishes the backbone on ``h`` and runs
    ``model`` with the backbone's forward returning that output, on images replaced by NaNs, so the
    result is the wrapper's output as a function of the backbone's output alone (a wrapper that also
    reads the images, or calls the backbone twice, gives NaNs or an error, and
    :meth:`ResidualStream.matches` refuses the stream)."""
    from captum_paths.model.outputs import to_logits

    seen: Dict[str, Any] = {}

    def embed(x: torch.Tensor) -> torch.Tensor:
        caught: Dict[str, torch.Tensor] = {}

        def catch(*args: Any, **kwargs: Any) -> Any:
            caught["images"] = _images(args, kwargs)
            raise _Stop

        with _forward_replaced(backbone, catch):
            try:
                model(x)
            except _Stop:
                pass
        if "images" not in caught:
            raise _NotThrough(f"the forward of the {type(model).__name__} does not call its backbone's forward")
        seen["input"] = (tuple(x.shape[1:]), x.dtype, x.device)
        return parts.embed(caught["images"])

    def head(h: torch.Tensor) -> torch.Tensor:
        out = parts.head(h)
        calls = []

        def finished(*args: Any, **kwargs: Any) -> Any:
            calls.append(1)
            if len(calls) > 1:
                raise _NotThrough(f"the {type(model).__name__} calls its backbone more than once")
            return out

        shape, dtype, device = seen["input"]
        fill = float("nan") if dtype.is_floating_point or dtype.is_complex else 0
        placeholder = torch.full((h.shape[0],) + shape, fill, dtype=dtype, device=device)
        with _forward_replaced(backbone, finished):
            logits = to_logits(model(placeholder))
        if not calls:
            raise _NotThrough(f"the forward of the {type(model).__name__} does not call its backbone's forward")
        return logits

    return StreamParts(embed, parts.blocks, head, parts.splits, parts.reads_cls)


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5)


def _contains(block: nn.Module, module: nn.Module) -> bool:
    return any(m is module for m in block.modules())
