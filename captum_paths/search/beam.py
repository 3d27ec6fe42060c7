"""Beam search over neuron paths, scored exactly.

The greedy search keeps one partial path per image and extends it by the neuron
whose addition gives the highest joint score. A beam of width ``b`` keeps the
``b`` best partial paths of each image instead: at layer ``t`` every partial path
proposes its best ``c`` neurons by the whole-site approximation, each proposal
``prefix + {j}`` is scored exactly (``F(x) - F(x; prefix + {j} removed)``, one
forward), and the ``b`` best proposals of the image survive. After the last layer
the best survivor is the image's path; its exact score is the path's JAS. With
``b = 1`` this is the refined greedy.

The layer work is delegated to a *layer searcher* (see :class:`LayerSearcher`):
the search engine's own classes, run on a context whose rows are the beam's
members (``(image, partial path)`` pairs) instead of images.
"""
from __future__ import annotations

from typing import List, Protocol, Tuple

import torch

from captum_paths.attribution.output import select_rows
from captum_paths.search.base import SearchContext
from captum_paths.search.candidates import proposal_pool

__all__ = ["LayerSearcher", "beam_search", "member_context"]


class LayerSearcher(Protocol):
    """What the beam needs from a search engine, per member row of ``ctx``."""

    def layer_scores(self, t: int, paths: torch.Tensor) -> torch.Tensor:
        """Whole-site approximate score of every neuron of layer ``t`` given the
        members' prefixes ``paths[:, :t]``: ``(members, d_ff)``."""

    def proposal_scores(self, t: int, paths: torch.Tensor) -> List[torch.Tensor]:
        """Further rankings ``(members, d_ff)`` the candidate pool draws from (may be empty)."""

    def exact_scores(self, t: int, paths: torch.Tensor, pool: torch.Tensor) -> torch.Tensor:
        """Exact joint score of ``prefix + {pool[r, i]}`` per member: ``(members, c)``."""

    def advance(self, t: int, paths: torch.Tensor, parents: torch.Tensor, ctx: SearchContext) -> "LayerSearcher":
        """The searcher for the next layer, whose members descend from ``parents``
        ``(members',)`` and hold ``paths`` ``(members', L, 1)`` (layer ``t`` chosen)."""


def member_context(ctx: SearchContext, images: torch.Tensor) -> SearchContext:
    """``ctx`` with one row per beam member; ``images`` ``(members,)`` names each member's image."""
    return SearchContext(
        inputs=tuple(x[images.to(x.device)] for x in ctx.inputs),
        args=select_rows(ctx.args, images, ctx.batch),
        target=ctx.target[images],
        logits=ctx.logits[images],
        clean={l: a[images] for l, a in ctx.clean.items()},
        f_clean=ctx.f_clean[images],
        k=ctx.k, n_steps=ctx.n_steps, method=ctx.method, mode=ctx.mode,
        internal_batch_size=ctx.internal_batch_size, base=ctx.base.take(images),
    )


def beam_search(
    searcher: LayerSearcher, ctx: SearchContext, beam: int, candidates: int, num_layers: int
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Beam search of one neuron per layer.

    Args:
        searcher: a layer searcher over ``ctx`` (one member per image to start).
        ctx: the images' context.
        beam: partial paths kept per image.
        candidates: proposals re-scored exactly per member and layer.
        num_layers: ``L``.

    Returns:
        ``(paths (batch, L, 1), scores (batch, L, 1))``: each image's best path and
        the exact joint score of each of its prefixes.
    """
    B, device = ctx.batch, ctx.device
    image = torch.arange(B, device=device)  # member -> image, sorted by image
    paths = torch.zeros(B, num_layers, 1, dtype=torch.long, device=device)
    scores = torch.zeros(B, num_layers, 1, dtype=torch.float64, device=device)
    for t in range(num_layers):
        approx = searcher.layer_scores(t, paths)  # (R, d_ff)
        extra = searcher.proposal_scores(t, paths) if candidates < approx.shape[1] else []
        pool = proposal_pool([approx] + extra, candidates)  # (R, c)
        exact = searcher.exact_scores(t, paths, pool).double()  # (R, c)
        parents, chosen, chosen_scores = _survivors(image, exact, pool, beam, B)
        image = image[parents]
        paths, scores = paths[parents].clone(), scores[parents].clone()
        paths[:, t, 0], scores[:, t, 0] = chosen, chosen_scores
        if t + 1 < num_layers:
            searcher = searcher.advance(t, paths, parents, member_context(ctx, image))
    # members are sorted by image, best first: the first member of each image wins
    first = torch.ones_like(image, dtype=torch.bool)
    first[1:] = image[1:] != image[:-1]
    return paths[first], scores[first].to(ctx.f_clean.dtype)


def _survivors(
    image: torch.Tensor, exact: torch.Tensor, pool: torch.Tensor, beam: int, batch: int
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``beam`` best ``(member, candidate)`` proposals of each image, sorted by
    image and then by score (best first): ``(parents, neurons, scores)``, each ``(members',)``."""
    R, c = exact.shape
    counts = torch.bincount(image, minlength=batch)
    start = torch.cumsum(counts, 0) - counts
    slot = torch.arange(R, device=image.device) - start[image]  # member's rank within its image
    width = int(counts.max()) * c
    padded = torch.full((batch, width), float("-inf"), dtype=exact.dtype, device=exact.device)
    position = (slot[:, None] * c + torch.arange(c, device=image.device)).reshape(-1)
    padded[image.repeat_interleave(c), position] = exact.reshape(-1)
    best = padded.topk(min(beam, width), dim=1)
    keep = torch.isfinite(best.values)  # images with fewer proposals than the beam
    img = torch.arange(batch, device=image.device)[:, None].expand_as(keep)[keep]
    pos = best.indices[keep]
    parents = start[img] + pos // c
    return parents, pool[parents, pos % c], best.values[keep]
