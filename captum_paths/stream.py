"""Block-by-block execution of a ViT's residual stream.

The path search resumes the forward from a cached residual stream
instead of re-running the early blocks. :class:`ResidualStream` splits a model
into ``embed`` (images -> stream entering block 0), ``blocks[i]`` and ``head``
(stream after the last block -> logits) for the families that
:class:`~captum_paths.sites.NeuronSites` discovers. Hooks on the sites stay
active because the very same modules run.

Two further savings, both checked numerically before use (:meth:`ResidualStream.matches`):

- blocks whose structure is known (timm ``Block`` with ``Mlp``, torchvision
  ``EncoderBlock``) are split at their neuron site, so that a block can be
  finished several times with different site edits while the attention and the
  first FFN layer run once (:class:`BlockRun`);
- when the head reads the class token only and the neurons are read there, the
  last block computes the class token row only (its attention still reads every
  token).
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from captum_paths.models import LogitsOnly
from captum_paths.sites import NeuronSites, SiteEdit

__all__ = ["ResidualStream", "BlockRun", "SplitBlock"]


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
                act = self.act if edit is None else sites.apply_edit(self.act, edit)
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
        self.embed = embed
        self.blocks = blocks
        self.head = head
        self.sites = sites
        self.splits = splits
        self.cls_readout = bool(cls_readout and splits is not None and splits[-1] is not None)

    @classmethod
    def from_sites(cls, sites: NeuronSites) -> Optional["ResidualStream"]:
        """The stream of a timm, torchvision or Hugging Face (ViT, DeiT, DINOv2) classifier
        whose blocks hold the sites, else ``None``."""
        model = sites.model.model if isinstance(sites.model, LogitsOnly) else sites.model
        if sites.family == "timm":
            blocks = list(model.blocks)
            embed, head = _timm_embed(model), (lambda h: model.forward_head(model.norm(h)))
            splits = [_timm_split(b, s, sites.capture) for b, s in zip(blocks, sites.modules)]
            reads_cls = (
                getattr(model, "global_pool", None) == "token"
                and getattr(model, "attn_pool", None) is None
                and not hasattr(model, "head_dist")
            )
        elif sites.family == "torchvision":
            blocks = list(model.encoder.layers)
            embed, head = _torchvision_embed(model), (lambda h: model.heads(model.encoder.ln(h)[:, 0]))
            splits = [_torchvision_split(b, s, sites.capture) for b, s in zip(blocks, sites.modules)]
            reads_cls = True
        elif sites.family == "hf":
            found = _hf_parts(model)
            if found is None:
                return None
            embed, blocks, head = found
            splits, reads_cls = None, False
        else:
            return None
        if len(blocks) != sites.num_layers or not all(
            _contains(block, site) for block, site in zip(blocks, sites.modules)
        ):
            return None
        cls_tokens = sites.tokens.kind == "cls" or tuple(sites.tokens.indices) == (0,)
        return cls(embed, blocks, head, sites, splits, cls_readout=reads_cls and cls_tokens)

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
        """Whether the split forward reproduces the model's logits on ``inputs``."""
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


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a.float(), b.float(), rtol=1e-4, atol=1e-5)


def _contains(block: nn.Module, module: nn.Module) -> bool:
    return any(m is module for m in block.modules())


def _timm_embed(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def embed(x: torch.Tensor) -> torch.Tensor:
        x = model.patch_embed(x)
        x = model._pos_embed(x)
        x = model.patch_drop(x)
        return model.norm_pre(x)
    return embed


def _torchvision_embed(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def embed(x: torch.Tensor) -> torch.Tensor:
        x = model._process_input(x)
        x = torch.cat([model.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return model.encoder.dropout(x + model.encoder.pos_embedding)
    return embed


class _TensorOutput(nn.Module):
    """A Hugging Face layer that returns its hidden states only (transformers < 5 returns a tuple)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__()
        self.layer = layer

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        out = self.layer(h)
        return out[0] if isinstance(out, (tuple, list)) else out


def _hf_parts(model: nn.Module):
    """``(embed, blocks, head)`` of Hugging Face ViT, DeiT and DINOv2 image classifiers, else ``None``."""
    name = type(model).__name__
    base = next((getattr(model, a) for a in ("vit", "deit", "dinov2") if hasattr(model, a)), None)
    if base is None or not hasattr(base, "embeddings") or not hasattr(base, "layernorm"):
        return None
    layers = getattr(base, "layers", None)
    if layers is None:
        layers = getattr(getattr(base, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList):
        return None
    dtype = base.embeddings.patch_embeddings.projection.weight.dtype

    def embed(x: torch.Tensor) -> torch.Tensor:
        return base.embeddings(x.to(dtype))

    if name in ("ViTForImageClassification", "DeiTForImageClassification"):
        def head(h: torch.Tensor) -> torch.Tensor:
            return model.classifier(base.layernorm(h)[:, 0])
    elif name == "DeiTForImageClassificationWithTeacher":
        def head(h: torch.Tensor) -> torch.Tensor:
            s = base.layernorm(h)
            return (model.cls_classifier(s[:, 0]) + model.distillation_classifier(s[:, 1])) / 2
    elif name in ("Dinov2ForImageClassification", "Dinov2WithRegistersForImageClassification"):
        registers = int(getattr(model.config, "num_register_tokens", 0) or 0)

        def head(h: torch.Tensor) -> torch.Tensor:
            s = base.layernorm(h)
            return model.classifier(torch.cat([s[:, 0], s[:, 1 + registers:].mean(dim=1)], dim=1))
    else:
        return None
    return embed, [_TensorOutput(layer) for layer in layers], head


def _timm_split(block: nn.Module, site: nn.Module, capture: str) -> Optional[SplitBlock]:
    """timm ``Block`` with a plain ``Mlp`` whose ``act`` output is the site."""
    try:
        from timm.layers import Mlp
        from timm.models.vision_transformer import Block
    except ImportError:  # pragma: no cover - timm is a dependency
        return None
    if type(block) is not Block or type(block.mlp) is not Mlp or site is not block.mlp.act or capture != "output":
        return None
    mlp = block.mlp
    cls_attention = _timm_cls_attention(block.attn)

    def pre(h: torch.Tensor, cls_only: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        x = block.norm1(h)
        if cls_only:
            attn = cls_attention(x) if cls_attention is not None else block.attn(x)[:, :1]
            h = h[:, :1]
        else:
            attn = block.attn(x)
        mid = h + block.drop_path1(block.ls1(attn))
        return mid, mlp.act(mlp.fc1(block.norm2(mid)))

    def post(mid: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return mid + block.drop_path2(block.ls2(mlp.drop2(mlp.fc2(mlp.norm(mlp.drop1(act))))))

    return SplitBlock(pre, post)


def _timm_cls_attention(attn: nn.Module) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
    """The class token's output of timm's standard ``Attention``, ``(B, N, C) -> (B, 1, C)``:
    its query alone, keys and values of every token (the same arithmetic as
    ``Attention.forward`` in eval mode)."""
    from timm.layers import Attention

    if type(attn) is not Attention or getattr(attn, "gate", None) is not None:
        return None
    heads, head_dim = attn.num_heads, attn.head_dim
    width = getattr(attn, "attn_dim", heads * head_dim)

    def cls_attention(x: torch.Tensor) -> torch.Tensor:
        if attn.training and attn.attn_drop.p > 0:
            return attn(x)[:, :1]
        batch, tokens, _ = x.shape
        weight, bias = attn.qkv.weight, attn.qkv.bias
        q = F.linear(x[:, :1], weight[:width], None if bias is None else bias[:width])
        kv = F.linear(x, weight[width:], None if bias is None else bias[width:])
        q = q.reshape(batch, 1, heads, head_dim).transpose(1, 2)
        k, v = kv.reshape(batch, tokens, 2, heads, head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(attn.q_norm(q), attn.k_norm(k), v)
        out = attn.norm(out.transpose(1, 2).reshape(batch, 1, width))
        return attn.proj_drop(attn.proj(out))

    return cls_attention


def _torchvision_split(block: nn.Module, site: nn.Module, capture: str) -> Optional[SplitBlock]:
    """torchvision ``EncoderBlock`` whose ``MLPBlock`` is Linear, GELU (the site), Dropout, Linear, Dropout."""
    from torchvision.models.vision_transformer import EncoderBlock

    mlp = getattr(block, "mlp", None)
    if type(block) is not EncoderBlock or not isinstance(mlp, nn.Sequential) or len(mlp) != 5:
        return None
    if site is not mlp[1] or capture != "output":
        return None

    def pre(h: torch.Tensor, cls_only: bool) -> Tuple[torch.Tensor, torch.Tensor]:
        x = block.ln_1(h)
        query, h = (x[:, :1], h[:, :1]) if cls_only else (x, h)
        attn, _ = block.self_attention(query, x, x, need_weights=False)
        mid = block.dropout(attn) + h
        return mid, mlp[1](mlp[0](block.ln_2(mid)))

    def post(mid: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return mid + mlp[4](mlp[3](mlp[2](act)))

    return SplitBlock(pre, post)
