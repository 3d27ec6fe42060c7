"""timm ``VisionTransformer`` and its variants (DeiT, DeiT-III, distilled DeiT, DINOv2 with
registers, FlexiViT, CLIP / SigLIP towers, MAE-style averaging heads), and any model
laid out like it: ``blocks[i].mlp`` with ``fc1``, ``act``, ``fc2`` (or a gated FFN).

The neuron is ``mlp.act``'s output (gated FFNs: the input of ``mlp.fc2``); the heads are
the input of ``attn.proj``. The residual stream (and the split of plain blocks at their site) is built for
``VisionTransformer`` itself; other models of this layout run whole.
"""
from __future__ import annotations

from typing import Callable, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from captum_paths.model.families.base import (
    SiteSpec,
    SplitBlock,
    StreamParts,
    as_pair,
    register_family,
)
from captum_paths.model.families._timm import TimmFamily, attention_heads_spec, blocks_spec
from captum_paths.model.tokens import TokenSelection

__all__ = ["TimmBlocks", "pooled_tokens"]

def pooled_tokens(model: nn.Module, prefix: int) -> TokenSelection:
    """The tokens a timm head reads: the class token (and the distillation token of a
    distilled DeiT), every token, or the patch tokens of an averaging head."""
    pool = getattr(model, "global_pool", "token")
    if pool == "token" and prefix > 0:
        if hasattr(model, "head_dist"):
            return TokenSelection("indices", (0, 1), prefix)
        return TokenSelection("cls", (), prefix)
    if getattr(model, "pool_include_prefix", False) or prefix == 0:
        return TokenSelection("all", (), prefix)
    return TokenSelection("patches", (), prefix)


@register_family
class TimmBlocks(TimmFamily):
    name = "timm"
    looks_for = "a timm-style ViT (`blocks[i].mlp.act`, or `blocks[i].mlp.fc2` of a gated FFN)"

    def layer_blocks(self, model: nn.Module) -> Optional[List[nn.Module]]:
        """The blocks that are layers, in order (the FFN and the attention heads of each)."""
        blocks = getattr(model, "blocks", None)
        if not isinstance(blocks, (nn.Sequential, nn.ModuleList)) or len(blocks) == 0:
            return None
        return list(blocks)

    def tokens(self, model: nn.Module) -> TokenSelection:
        """The tokens the model's head reads."""
        default = 1 if getattr(model, "cls_token", None) is not None else 0  # models without one (Hiera) average
        return pooled_tokens(model, int(getattr(model, "num_prefix_tokens", default)))

    def sites(self, model: nn.Module) -> Optional[SiteSpec]:
        blocks = self.layer_blocks(model)
        return None if blocks is None else blocks_spec(blocks, self.tokens(model))

    def head_sites(self, model: nn.Module) -> Optional[SiteSpec]:
        """The input of ``blocks[i].attn.proj`` (``attn.num_heads`` heads), at the FFN sites' tokens."""
        spec = self.sites(model)
        return None if spec is None else attention_heads_spec(self.layer_blocks(model), spec.tokens)

    def patch_size(self, model: nn.Module) -> Optional[Tuple[int, int]]:
        return as_pair(getattr(getattr(model, "patch_embed", None), "patch_size", None))

    def stream(self, model: nn.Module, spec: SiteSpec) -> Optional[StreamParts]:
        from timm.models.vision_transformer import VisionTransformer

        if not isinstance(model, VisionTransformer):
            return None
        blocks = list(model.blocks)
        reads_cls = (getattr(model, "global_pool", None) == "token" and getattr(model, "attn_pool", None) is None
                     and not hasattr(model, "head_dist"))
        return StreamParts(
            embed=_embed(model),
            blocks=blocks,
            head=lambda h: model.forward_head(model.norm(h)),
            splits=[_split(b, s, spec.capture) for b, s in zip(blocks, spec.modules)],
            reads_cls=reads_cls,
        )

    def block_halves(self, block: nn.Module) -> Optional[Tuple[nn.Module, nn.Module]]:
        from timm.models.vision_transformer import Block

        if type(block) is not Block:
            return None
        return (_Residual(block.norm1, block.attn, block.ls1, block.drop_path1),
                _Residual(block.norm2, block.mlp, block.ls2, block.drop_path2))


class _Residual(nn.Module):
    """``h + drop_path(scale(fn(norm(h))))``: the attention or the FFN half of a timm ``Block``."""

    def __init__(self, norm: nn.Module, fn: nn.Module, scale: nn.Module, drop_path: nn.Module) -> None:
        super().__init__()
        self.norm, self.fn, self.scale, self.drop_path = norm, fn, scale, drop_path

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.drop_path(self.scale(self.fn(self.norm(h))))


def _embed(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    def embed(x: torch.Tensor) -> torch.Tensor:
        x = model.patch_embed(x)
        x = model._pos_embed(x)
        x = model.patch_drop(x)
        return model.norm_pre(x)
    return embed


def _split(block: nn.Module, site: nn.Module, capture: str) -> Optional[SplitBlock]:
    """timm ``Block`` with a plain ``Mlp`` whose ``act`` output is the site."""
    from timm.layers import Mlp
    from timm.models.vision_transformer import Block

    if type(block) is not Block or type(block.mlp) is not Mlp or site is not block.mlp.act or capture != "output":
        return None
    mlp = block.mlp
    cls_attention = _cls_attention(block.attn)

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


def _cls_attention(attn: nn.Module) -> Optional[Callable[[torch.Tensor], torch.Tensor]]:
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
