"""Tests for benchmarks/reference_search.py, the literal (slow) oracle implementations.

Every check recomputes the quantity independently in the test (own hooks, and for
the paper mode ONE joint ``autograd.grad`` over all leaves instead of the oracle's
one call per layer) on a tiny random-weight timm ViT (3 blocks, d_ff 64).
"""
from __future__ import annotations

import math
import sys
from pathlib import Path
from typing import List

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.reference_search import (  # noqa: E402
    ReferenceStats,
    reference_exact_greedy,
    reference_paper_jas,
    reference_paper_search,
)

timm = pytest.importorskip("timm")

M = 20
BATCH = 2
TARGETS = [1, 3]


def _tiny_vit(depth: int = 3):
    torch.manual_seed(0)
    return timm.create_model(
        "vit_tiny_patch16_224",
        pretrained=False,
        img_size=16,
        patch_size=4,
        depth=depth,
        embed_dim=32,
        num_heads=2,
        mlp_ratio=2.0,
        num_classes=5,
    ).eval()


@pytest.fixture(scope="module")
def model():
    return _tiny_vit(3)


@pytest.fixture(scope="module")
def model1():
    return _tiny_vit(1)


@pytest.fixture(scope="module")
def images():
    torch.manual_seed(0)
    return torch.randn(BATCH, 3, 16, 16)


@pytest.fixture(scope="module")
def paper_k1(model, images):
    return reference_paper_search(model, images, TARGETS, k=1, m=M)


@pytest.fixture(scope="module")
def paper_k2(model, images):
    return reference_paper_search(model, images, TARGETS, k=2, m=M)


@pytest.fixture(scope="module")
def exact_k1(model, images):
    return reference_exact_greedy(model, images, TARGETS, k=1)


@pytest.fixture(scope="module")
def exact_k2(model, images):
    return reference_exact_greedy(model, images, TARGETS, k=2)


# ---------------------------------------------------------------------------
# Independent re-implementations used by the tests
# ---------------------------------------------------------------------------


def _acts(model):
    return [blk.mlp.act for blk in model.blocks]


def _prob(logits, target):
    return torch.softmax(logits, dim=-1)[:, target]


def _clean_a0(model, x) -> List[torch.Tensor]:
    rec = {}
    handles = [
        a.register_forward_hook(lambda mod, i, o, l=l: rec.__setitem__(l, o[0, 0].detach().clone()))
        for l, a in enumerate(_acts(model))
    ]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return [rec[l] for l in range(len(handles))]


def _frozen_joint_grads(model, x, target, a0, masks, m, output="prob"):
    """Freeze sites 0..len(masks)-1 at CLS, set neurons -> alpha*a0; ONE joint grad call."""
    alphas = torch.arange(m, dtype=torch.float32) / m
    leaves = []
    for l, mask in enumerate(masks):
        rows = a0[l].repeat(m, 1)
        rows[:, mask] = rows[:, mask] * alphas[:, None]
        leaves.append(rows.requires_grad_(True))

    def hook_for(leaf):
        def hook(mod, inp, out):
            out = out.clone()
            out[:, 0, :] = leaf
            return out

        return hook

    acts = _acts(model)
    handles = [acts[l].register_forward_hook(hook_for(leaf)) for l, leaf in enumerate(leaves)]
    try:
        logits = model(x.repeat(m, 1, 1, 1))
    finally:
        for h in handles:
            h.remove()
    f = _prob(logits, target) if output == "prob" else logits[:, target]
    return [g.detach() for g in torch.autograd.grad(f.sum(), leaves)], f.detach()


def _indep_paper_candidate_scores(model, x, target, prefix, t, m, output="prob"):
    """Paper candidate scores of every neuron of site t given the chosen prefix (list of index tensors)."""
    a0 = _clean_a0(model, x)
    masks = []
    for l in range(t):
        mk = torch.zeros_like(a0[l], dtype=torch.bool)
        mk[prefix[l]] = True
        masks.append(mk)
    masks.append(torch.ones_like(a0[t], dtype=torch.bool))
    h, _ = _frozen_joint_grads(model, x, target, a0, masks, m, output)
    grad_prefix = sum((h[l][:, masks[l]].sum() for l in range(t)), torch.tensor(0.0))
    act_prefix = sum((a0[l][masks[l]].sum() / m for l in range(t)), torch.tensor(0.0))
    return (h[t].sum(0) + grad_prefix) * (a0[t] / m + act_prefix)


def _f_with_cls_zeroed(model, x, target, zero):
    """F(x) with neurons zeroed at the CLS token; ``zero``: {layer: [indices]}. One row."""
    acts = _acts(model)

    def hook_for(idx):
        def hook(mod, inp, out):
            out = out.clone()
            out[:, 0, idx] = 0.0
            return out

        return hook

    handles = [acts[l].register_forward_hook(hook_for(list(idx))) for l, idx in zero.items()]
    try:
        with torch.no_grad():
            return _prob(model(x), target)[0]
    finally:
        for h in handles:
            h.remove()


# ---------------------------------------------------------------------------
# Shapes, ordering, determinism
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["paper_k1", "paper_k2", "exact_k1", "exact_k2"])
def test_shapes_order_and_distinctness(which, request, model):
    paths, scores = request.getfixturevalue(which)
    k = int(which[-1])
    L, d_ff = len(model.blocks), model.blocks[0].mlp.fc1.out_features
    assert paths.shape == (BATCH, L, k) and paths.dtype == torch.long
    assert scores.shape == (BATCH, L, k) and scores.dtype == torch.float32
    assert paths.min() >= 0 and paths.max() < d_ff
    for b in range(BATCH):
        for l in range(L):
            assert len(set(paths[b, l].tolist())) == k  # top-k distinct
    assert torch.all(scores[..., :-1] >= scores[..., 1:])  # best first
    assert torch.isfinite(scores).all()


def test_deterministic(model, images, paper_k2, exact_k2):
    p2, s2 = reference_paper_search(model, images, TARGETS, k=2, m=M)
    assert torch.equal(p2, paper_k2[0]) and torch.equal(s2, paper_k2[1])
    e2, es2 = reference_exact_greedy(model, images, TARGETS, k=2)
    assert torch.equal(e2, exact_k2[0]) and torch.equal(es2, exact_k2[1])


def test_k1_is_first_column_of_k2_at_layer0(paper_k1, paper_k2, exact_k1, exact_k2):
    # at t = 0 the prefix is empty, so the top-1 is the first of the top-2
    assert torch.equal(paper_k1[0][:, 0, 0], paper_k2[0][:, 0, 0])
    assert torch.equal(exact_k1[0][:, 0, 0], exact_k2[0][:, 0, 0])


# ---------------------------------------------------------------------------
# Paper mode
# ---------------------------------------------------------------------------


def test_depth1_candidate_score_is_whole_site_product(model1, images):
    k = 3
    paths, scores = reference_paper_search(model1, images, TARGETS, k=k, m=M)
    for b in range(BATCH):
        x = images[b : b + 1]
        a0 = _clean_a0(model1, x)[0]
        alphas = torch.arange(M, dtype=torch.float32) / M
        leaf = (alphas[:, None] * a0[None, :]).requires_grad_(True)  # whole site scaled

        def hook(mod, inp, out):
            out = out.clone()
            out[:, 0, :] = leaf
            return out

        h = model1.blocks[0].mlp.act.register_forward_hook(hook)
        try:
            f = _prob(model1(x.repeat(M, 1, 1, 1)), TARGETS[b])
        finally:
            h.remove()
        (g,) = torch.autograd.grad(f.sum(), leaf)
        expected = g.sum(0) * (a0 / M)  # [sum_k h_j(k)] * [a0_j / m]
        top_s, top_j = torch.topk(expected, k)
        assert torch.equal(paths[b, 0], top_j)
        torch.testing.assert_close(scores[b, 0], top_s, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("which,k", [("paper_k1", 1), ("paper_k2", 2)])
def test_paper_scores_match_joint_backward_every_layer(which, k, request, model, images):
    paths, scores = request.getfixturevalue(which)
    for b in range(BATCH):
        x = images[b : b + 1]
        prefix = []
        for t in range(len(model.blocks)):
            cand = _indep_paper_candidate_scores(model, x, TARGETS[b], prefix, t, M)
            top_s, top_j = torch.topk(cand, k)
            assert torch.equal(paths[b, t], top_j), (b, t)
            torch.testing.assert_close(scores[b, t], top_s, rtol=1e-5, atol=1e-8)
            prefix.append(paths[b, t])


def test_paper_search_logit_output_and_int_target(model, images):
    paths, scores = reference_paper_search(model, images, 2, k=1, m=5, output="logit")
    x = images[1:2]
    cand = _indep_paper_candidate_scores(model, x, 2, [], 0, 5, output="logit")
    assert int(paths[1, 0, 0]) == int(cand.argmax())
    torch.testing.assert_close(scores[1, 0, 0], cand.max(), rtol=1e-5, atol=1e-7)


def test_paper_jas_single_neuron_is_left_riemann_ig_and_complete(model, images):
    # one neuron of layer 0: freeze layer 0 only; product of sums = left-Riemann IG
    j = 5
    path = torch.full((BATCH, 1), j, dtype=torch.long)
    jas, terms = reference_paper_jas(model, images, TARGETS, path, m=M, return_terms=True)
    assert jas.shape == (BATCH,) and terms.shape == (BATCH, 1)
    torch.testing.assert_close(jas, terms[:, 0])  # |N| = 1: product of sums == the one term
    m_fine = 400
    jas_fine = reference_paper_jas(model, images, TARGETS, path, m=m_fine)
    for b in range(BATCH):
        x = images[b : b + 1]
        a0 = _clean_a0(model, x)
        mask = torch.zeros_like(a0[0], dtype=torch.bool)
        mask[j] = True
        h, f = _frozen_joint_grads(model, x, TARGETS[b], a0, [mask], M)
        expected = (a0[0][j] / M) * h[0][:, j].sum()
        torch.testing.assert_close(jas[b], expected, rtol=1e-5, atol=1e-9)
        # completeness of single-neuron IG: F(alpha=1) - F(alpha=0)
        diff = _f_with_cls_zeroed(model, x, TARGETS[b], {}) - f[0]
        assert abs(float(jas_fine[b] - diff)) <= 0.02 * abs(float(diff)) + 1e-7


@pytest.mark.parametrize("which", ["paper_k1", "paper_k2"])
def test_paper_jas_full_path_product_of_sums(which, request, model, images):
    paths, _ = request.getfixturevalue(which)
    jas, terms = reference_paper_jas(model, images, TARGETS, paths, m=M, return_terms=True)
    assert terms.shape == paths.shape
    for b in range(BATCH):
        x = images[b : b + 1]
        a0 = _clean_a0(model, x)
        masks = []
        for l in range(len(model.blocks)):
            mk = torch.zeros_like(a0[l], dtype=torch.bool)
            mk[paths[b, l]] = True
            masks.append(mk)
        h, _ = _frozen_joint_grads(model, x, TARGETS[b], a0, masks, M)  # freeze up to last layer
        g_sum = sum(h[l][:, masks[l]].sum() for l in range(len(masks)))
        a_sum = sum(a0[l][masks[l]].sum() / M for l in range(len(masks)))
        torch.testing.assert_close(jas[b], g_sum * a_sum, rtol=1e-5, atol=1e-9)
        for l in range(len(masks)):
            for r, n in enumerate(paths[b, l].tolist()):
                torch.testing.assert_close(terms[b, l, r], a0[l][n] / M * h[l][:, n].sum(), rtol=1e-5, atol=1e-9)


# ---------------------------------------------------------------------------
# Exact greedy
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("which,k", [("exact_k1", 1), ("exact_k2", 2)])
def test_exact_greedy_matches_brute_force(which, k, request, model, images):
    paths, scores = request.getfixturevalue(which)
    d_ff = model.blocks[0].mlp.fc1.out_features
    for b in range(1):  # the first image: one forward per candidate is slow
        x = images[b : b + 1]
        f_clean = _f_with_cls_zeroed(model, x, TARGETS[b], {})
        prefix = {}
        for t in range(2):  # layers 0 and 1, one single-row forward per candidate
            jas = torch.stack(
                [f_clean - _f_with_cls_zeroed(model, x, TARGETS[b], {**prefix, t: [j]}) for j in range(d_ff)]
            )
            top_s, top_j = torch.topk(jas, k)
            assert torch.equal(paths[b, t], top_j), (b, t)
            torch.testing.assert_close(scores[b, t], top_s, rtol=1e-5, atol=1e-7)
            prefix[t] = paths[b, t].tolist()


def test_exact_greedy_chunking_invariant(model, images, exact_k2):
    p, s = reference_exact_greedy(model, images, TARGETS, k=2, chunk_size=7)
    assert torch.equal(p, exact_k2[0])
    torch.testing.assert_close(s, exact_k2[1], rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------
# Work counters (formulas documented in the module docstring)
# ---------------------------------------------------------------------------


def test_counters_match_documented_formulas(model, images):
    B, L, m = BATCH, len(model.blocks), 4
    D = model.blocks[0].mlp.fc1.out_features

    st = ReferenceStats()
    reference_paper_search(model, images, TARGETS, k=2, m=m, stats=st)
    assert st.as_dict() == dict(
        forward_calls=B * (1 + L),
        forward_rows=B * (1 + L * m),
        grad_calls=B * L * (L + 1) // 2,
        grad_rows=B * m * L * (L + 1) // 2,
        images=B,
    )

    st = ReferenceStats()
    T = 2
    reference_paper_jas(model, images, TARGETS, torch.zeros(B, T, 1, dtype=torch.long), m=m, stats=st)
    assert st.as_dict() == dict(forward_calls=B * 2, forward_rows=B * (1 + m), grad_calls=B * T, grad_rows=B * m * T, images=B)

    st = ReferenceStats()
    chunk = 24
    reference_exact_greedy(model, images, TARGETS, k=1, chunk_size=chunk, stats=st)
    assert st.as_dict() == dict(
        forward_calls=B * (1 + L * math.ceil(D / chunk)),
        forward_rows=B * (1 + L * D),
        grad_calls=0,
        grad_rows=0,
        images=B,
    )
