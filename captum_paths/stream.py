"""Block-by-block execution of a ViT's residual stream.

The path search (SPEC §4.1) resumes the forward from a cached residual stream
instead of re-running the early blocks. :class:`ResidualStream` splits a model
into ``embed`` (images -> stream entering block 0), ``blocks[i]`` and ``head``
(stream after the last block -> logits) for the families that
:class:`~captum_paths.sites.NeuronSites` discovers. Hooks on the sites stay
active because the very same modules run.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch
from torch import nn

from captum_paths.models import LogitsOnly
from captum_paths.sites import NeuronSites

__all__ = ["ResidualStream"]


class ResidualStream:
    """``embed``, ``blocks`` and ``head`` of a model, with ``model(x) == head(blocks(embed(x)))``.

    Args:
        embed (callable): images ``(batch, C, H, W)`` -> stream ``(batch, T, D)``.
        blocks (list of nn.Module): one transformer block per site, in order.
        head (callable): final stream ``(batch, T, D)`` -> logits ``(batch, classes)``.
    """

    def __init__(
        self,
        embed: Callable[[torch.Tensor], torch.Tensor],
        blocks: List[nn.Module],
        head: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        self.embed = embed
        self.blocks = blocks
        self.head = head

    @classmethod
    def from_sites(cls, sites: NeuronSites) -> Optional["ResidualStream"]:
        """The stream of a timm or torchvision ViT whose blocks hold the sites, else ``None``."""
        model = sites.model.model if isinstance(sites.model, LogitsOnly) else sites.model
        if sites.family == "timm":
            stream = cls(_timm_embed(model), list(model.blocks), lambda h: model.forward_head(model.norm(h)))
        elif sites.family == "torchvision":
            stream = cls(
                _torchvision_embed(model), list(model.encoder.layers),
                lambda h: model.heads(model.encoder.ln(h)[:, 0]),
            )
        else:
            return None
        if len(stream.blocks) != sites.num_layers or not all(
            _contains(block, site) for block, site in zip(stream.blocks, sites.modules)
        ):
            return None
        return stream

    def run(self, h: torch.Tensor, start: int, stop: Optional[int] = None) -> torch.Tensor:
        """Run blocks ``start .. stop-1`` on the stream entering block ``start``."""
        for block in self.blocks[start:stop]:
            h = block(h)
        return h

    def logits(self, h: torch.Tensor, start: int) -> torch.Tensor:
        """Logits from the stream entering block ``start``."""
        return self.head(self.run(h, start))

    def matches(self, inputs: torch.Tensor, logits: torch.Tensor) -> bool:
        """Whether the split forward reproduces the model's logits on ``inputs``."""
        with torch.no_grad():
            mine = self.logits(self.embed(inputs), 0)
        return mine.shape == logits.shape and torch.allclose(
            mine.float(), logits.float(), rtol=1e-4, atol=1e-5
        )


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
