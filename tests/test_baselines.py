"""Baseline path methods against literal implementations and Captum run directly."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from captum.attr import LayerActivation, LayerConductance
from torch import nn

from captum_paths import JointNeuronIntegratedGradients, NeuronSites
from captum_paths.demo import load_demo_data, load_demo_model
from captum_paths.search.baselines import (
    ActivationPath,
    ConductancePath,
    InfluencePatternPath,
    KnowledgeNeuronPath,
    RandomPath,
)
from captum_paths.search.result import PathResult
from _models import tiny_vit as _tiny_vit

METHODS = [ActivationPath, KnowledgeNeuronPath, ConductancePath, InfluencePatternPath, RandomPath]
NAMES = {
    ActivationPath: "activation",
    KnowledgeNeuronPath: "knowledge-neurons",
    ConductancePath: "conductance",
    InfluencePatternPath: "influence-pattern",
    RandomPath: "random",
}
WIDTH = 64  # d_ff of the tiny ViT


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny():
    model = _tiny_vit()
    torch.manual_seed(0)
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        target = model(x).argmax(1)
    return model, x, target


@pytest.fixture(scope="module")
def results(tiny):
    """Cached ``attribute`` results of the tiny ViT, keyed by (class, k, mode)."""
    model, x, target = tiny
    cache = {}

    def get(cls, k=1, mode="gate"):
        if (cls, k, mode) not in cache:
            cache[cls, k, mode] = cls(model).attribute(x, target=target, k=k, mode=mode)
        return cache[cls, k, mode]

    return get


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _prob(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return logits.float().softmax(-1).gather(1, target[:, None])[:, 0]


def _hooked(model, x):
    """Logits and clean FFN activations {layer: (batch, tokens, d_ff)} read with plain forward hooks."""
    acts, handles = {}, []
    for l, blk in enumerate(model.blocks):
        handles.append(blk.mlp.act.register_forward_hook(lambda m, a, o, l=l: acts.__setitem__(l, o.detach())))
    with torch.no_grad():
        logits = model(x)
    for h in handles:
        h.remove()
    return logits, acts


def _gauss_legendre(n_steps: int):
    nodes, weights = np.polynomial.legendre.leggauss(n_steps)
    return 0.5 * (nodes + 1.0), 0.5 * weights


# --------------------------------------------------------------------------- contract
@pytest.mark.parametrize("k", [1, 3])
@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_path_result_contract(tiny, results, cls, k):
    model, x, target = tiny
    r = results(cls, k)
    assert isinstance(r, PathResult)
    assert r.method == cls.name == NAMES[cls]
    assert r.paths.shape == (4, 3, k) and r.paths.dtype == torch.long
    assert ((r.paths >= 0) & (r.paths < WIDTH)).all()
    for row in r.paths.reshape(-1, k).tolist():
        assert len(set(row)) == k  # distinct within a layer
    assert torch.equal(r.targets, target)
    assert r.contributions.shape == (4, 3, k) and torch.isfinite(r.jas).all()
    assert r.settings["k"] == k and r.settings["mode"] == "gate"
    if cls is RandomPath:
        assert r.scores is None and r.settings["seed"] == 0
    else:
        assert r.scores.shape == (4, 3, k) and torch.isfinite(r.scores).all()
        assert (r.scores[..., :-1] >= r.scores[..., 1:]).all()  # best first
        assert torch.equal(r.paths[..., 0], results(cls, 1).paths[..., 0])
    assert _no_hooks(model)


@pytest.mark.parametrize("mode", ["gate", "paper"])
@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_final_jas_is_the_joint_score_of_the_path(tiny, results, cls, mode):
    model, x, target = tiny
    r = results(cls, 3, mode)
    assert r.settings["approximation"] == ("gausslegendre" if mode == "gate" else "riemann_left")
    _, jas = JointNeuronIntegratedGradients(model).attribute(
        x, r.paths, target=r.targets, mode=mode, n_steps=r.settings["n_steps"], return_jas=True
    )
    torch.testing.assert_close(r.jas, jas, rtol=1e-5, atol=1e-7)
    if cls in (ActivationPath, RandomPath):  # no integral: the mode changes only the final score
        assert torch.equal(r.paths, results(cls, 3, "gate").paths)


@pytest.mark.parametrize("cls", METHODS, ids=lambda c: c.name)
def test_batch_independence(tiny, results, cls):
    model, x, target = tiny
    batch = results(cls, 3)
    method = cls(model)
    for i in range(4):
        alone = method.attribute(x[i : i + 1], target=target[i : i + 1], k=3)
        assert torch.equal(alone.paths[0], batch.paths[i])
        if batch.scores is not None:
            torch.testing.assert_close(alone.scores[0], batch.scores[i], rtol=1e-4, atol=1e-6)
    if cls is not RandomPath:  # chunked rows give the same scores
        chunked = method.attribute(x, target=target, k=3, internal_batch_size=40)
        assert torch.equal(chunked.paths, batch.paths)
        torch.testing.assert_close(chunked.scores, batch.scores, rtol=1e-4, atol=1e-6)


# ------------------------------------------------------------------------- activation
def test_activation_path_is_topk_of_hooked_activations(tiny, results):
    model, x, target = tiny
    _, acts = _hooked(model, x)  # plain forward hooks on blocks[t].mlp.act
    cls_acts = torch.stack([acts[l][:, 0] for l in range(3)], dim=1)  # (batch, L, d_ff)
    top = cls_acts.topk(3, dim=-1)
    r = results(ActivationPath, 3)
    assert torch.equal(r.paths, top.indices)
    torch.testing.assert_close(r.scores, top.values)
    # Captum's LayerActivation run directly agrees
    direct = LayerActivation(model, [b.mlp.act for b in model.blocks]).attribute(x)
    torch.testing.assert_close(torch.stack([a[:, 0] for a in direct], dim=1), cls_acts)


def test_input_captured_sites_and_several_tokens(tiny):
    """``capture="input"`` reads the layer input (fc2's input equals act's output in
    eval mode); several tokens are summed."""
    model, x, target = tiny
    fc2 = NeuronSites.from_names(model, [f"blocks.{l}.mlp.fc2" for l in range(3)], capture="input")
    act = NeuronSites.from_model(model)
    for cls in (ActivationPath, ConductancePath):
        a = cls(model, sites=act).attribute(x, target=target, k=3, n_steps=8)
        b = cls(model, sites=fc2).attribute(x, target=target, k=3, n_steps=8)
        assert torch.equal(a.paths, b.paths)
        torch.testing.assert_close(a.scores, b.scores)
    patches = NeuronSites.from_model(model, tokens="patches")
    r = ActivationPath(model, sites=patches).attribute(x, target=target, k=2)
    _, acts = _hooked(model, x)
    top = torch.stack([acts[l][:, 1:].sum(1) for l in range(3)], dim=1).topk(2, dim=-1)
    assert torch.equal(r.paths, top.indices)
    torch.testing.assert_close(r.scores, top.values)


# ------------------------------------------------------------------ knowledge neurons
def _literal_knowledge_scores(model, x, target, n_steps):
    """Per-layer IG of site t alone: the whole CLS row scaled by alpha, one gate per neuron."""
    alphas, weights = _gauss_legendre(n_steps)
    out = torch.zeros(x.shape[0], 3, WIDTH, dtype=torch.float64)
    for t, blk in enumerate(model.blocks):
        for a, w in zip(alphas, weights):
            gate = torch.full((x.shape[0], WIDTH), float(a), requires_grad=True)

            def hook(m, i, o, gate=gate):
                out = o.clone()
                out[:, 0] = o[:, 0] * gate
                return out

            h = blk.mlp.act.register_forward_hook(hook)
            try:
                f = _prob(model(x), target)
            finally:
                h.remove()
            (g,) = torch.autograd.grad(f.sum(), gate)
            out[:, t] += w * g.double()
    return out


def _prob_with_site_zeroed(model, x, target, t):
    def hook(m, i, o):
        o = o.clone()
        o[:, 0] = 0.0
        return o

    h = model.blocks[t].mlp.act.register_forward_hook(hook)
    try:
        with torch.no_grad():
            return _prob(model(x), target)
    finally:
        h.remove()


def test_knowledge_neuron_scores_equal_literal_loop(tiny):
    model, x, target = tiny
    r = KnowledgeNeuronPath(model).attribute(x, target=target, k=WIDTH, n_steps=16)
    literal = _literal_knowledge_scores(model, x, target, 16)
    torch.testing.assert_close(r.scores.double(), literal.gather(2, r.paths), rtol=0, atol=1e-5)


def test_knowledge_neuron_scores_are_complete_per_layer(tiny):
    model, x, target = tiny
    r = KnowledgeNeuronPath(model).attribute(x, target=target, k=WIDTH, n_steps=64)
    with torch.no_grad():
        f = _prob(model(x), target)
    for t in range(3):
        expected = f - _prob_with_site_zeroed(model, x, target, t)
        torch.testing.assert_close(r.scores[:, t].sum(-1), expected, rtol=1e-3, atol=1e-6)


# ----------------------------------------------------------------------- conductance
def test_conductance_path_is_argmax_of_captum_layer_conductance(tiny, results):
    model, x, target = tiny
    r = results(ConductancePath, 3)

    def forward(inp):
        return model(inp).softmax(-1)

    for t, blk in enumerate(model.blocks):
        attr = LayerConductance(forward, blk.mlp.act).attribute(
            x, target=target, n_steps=r.settings["n_steps"], method="gausslegendre"
        )
        top = attr[:, 0].topk(3, dim=-1)  # CLS token
        assert torch.equal(r.paths[:, t], top.indices)
        torch.testing.assert_close(r.scores[:, t], top.values, rtol=1e-4, atol=1e-7)


def test_conductance_logit_output(tiny):
    model, x, target = tiny
    r = ConductancePath(model, output="logit").attribute(x, target=target, k=2, n_steps=10, method="riemann_trapezoid")
    attr = LayerConductance(model, model.blocks[1].mlp.act).attribute(
        x, target=target, n_steps=10, method="riemann_trapezoid"
    )
    assert torch.equal(r.paths[:, 1], attr[:, 0].topk(2, dim=-1).indices)


# ------------------------------------------------------------------ influence pattern
def test_influence_pattern_equals_literal_loop(tiny):
    model, x, target = tiny
    n_steps = 12
    r = InfluencePatternPath(model).attribute(x, target=target, k=WIDTH, n_steps=n_steps)
    alphas, weights = _gauss_legendre(n_steps)
    literal = torch.zeros(4, 3, WIDTH, dtype=torch.float64)
    for a, w in zip(alphas, weights):
        acts, handles = {}, []
        for l, blk in enumerate(model.blocks):
            handles.append(blk.mlp.act.register_forward_hook(lambda m, i, o, l=l: acts.__setitem__(l, o)))
        try:
            f = _prob(model(torch.tensor(a, dtype=torch.float32) * x), target)
        finally:
            for h in handles:
                h.remove()
        grads = torch.autograd.grad(f.sum(), [acts[l] for l in range(3)])
        for l, g in enumerate(grads):
            literal[:, l] += w * g[:, 0].double()
    torch.testing.assert_close(r.scores.double(), literal.gather(2, r.paths), rtol=1e-5, atol=1e-8)
    assert torch.equal(r.paths[..., :3], literal.topk(3, dim=-1).indices)


def test_influence_pattern_paper_mode_uses_left_riemann(tiny):
    model, x, target = tiny
    r = InfluencePatternPath(model).attribute(x[:1], target=target[:1], k=1, mode="paper", n_steps=4)
    assert r.settings["approximation"] == "riemann_left"
    acts = {}
    total = torch.zeros(WIDTH, dtype=torch.float64)
    for a in (0.0, 0.25, 0.5, 0.75):
        h = model.blocks[2].mlp.act.register_forward_hook(lambda m, i, o: acts.__setitem__(2, o))
        try:
            f = _prob(model(a * x[:1]), target[:1])
        finally:
            h.remove()
        (g,) = torch.autograd.grad(f.sum(), acts[2])
        total += g[0, 0].double() / 4
    assert int(r.paths[0, 2, 0]) == int(total.argmax())


# ----------------------------------------------------------------------------- random
def test_random_path_deterministic_batch_independent_and_seeded(tiny):
    model, x, target = tiny
    method = RandomPath(model, seed=3)
    a = method.attribute(x, target=target, k=4, n_steps=2, method="riemann_left")
    b = RandomPath(model, seed=3).attribute(x, target=target, k=4, n_steps=2, method="riemann_left")
    assert torch.equal(a.paths, b.paths) and a.settings["seed"] == 3
    perm = torch.tensor([2, 0, 3, 1])
    shuffled = method.attribute(x[perm], k=4, n_steps=2, method="riemann_left")
    assert torch.equal(shuffled.paths, a.paths[perm])
    alone = method.attribute(x[1:2], k=4, n_steps=2, method="riemann_left")
    assert torch.equal(alone.paths[0], a.paths[1])
    other = RandomPath(model, seed=4).attribute(x, target=target, k=4, n_steps=2, method="riemann_left")
    assert not torch.equal(other.paths, a.paths)
    assert not torch.equal(a.paths[0], a.paths[1])  # images differ, so do their paths


def test_random_path_covers_neurons_uniformly(tiny):
    model, _, _ = tiny
    torch.manual_seed(5)
    x = torch.randn(150, 3, 16, 16)
    r = RandomPath(model).attribute(x, k=4, n_steps=2, method="riemann_left")
    counts = torch.bincount(r.paths.reshape(-1), minlength=WIDTH).double()
    assert (counts > 0).all()
    expected = counts.sum() / WIDTH  # 150 * 3 * 4 / 64 = 28.1 per neuron
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 110.0  # 63 degrees of freedom: p < 0.001 above ~103
    for layer_row in r.paths.reshape(-1, 4).tolist():
        assert len(set(layer_row)) == 4


def test_random_path_rejects_bad_seed(tiny):
    with pytest.raises(TypeError, match="seed"):
        RandomPath(tiny[0], seed="0")


def test_influence_pattern_rejects_integer_inputs():
    class Embed(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(10, 3 * 16 * 16)
            self.vit = _tiny_vit()

        def forward(self, ids):
            return self.vit(self.emb(ids).view(-1, 3, 16, 16))

    model = Embed().eval()
    sites = NeuronSites(model, [b.mlp.act for b in model.vit.blocks])
    with pytest.raises(TypeError, match="floating point"):
        InfluencePatternPath(model, sites=sites).attribute(torch.tensor([1, 2]), n_steps=2)


# ------------------------------------------------------------------------- demo model
def test_demo_model_all_methods():
    model = load_demo_model()
    x, y = load_demo_data("test")
    x, y = x[:3], y[:3]
    jig = JointNeuronIntegratedGradients(model)
    paths = {}
    for cls in METHODS:
        r = cls(model).attribute(x, target=y, k=2, n_steps=16)
        assert r.paths.shape == (3, 6, 2) and ((r.paths >= 0) & (r.paths < 256)).all()
        assert (r.paths[..., 0] != r.paths[..., 1]).all()
        _, jas = jig.attribute(x, r.paths, target=y, n_steps=16, return_jas=True)
        torch.testing.assert_close(r.jas, jas, rtol=1e-5, atol=1e-7)
        assert r.delta.abs().max() < 1e-3
        paths[cls] = r.paths
    # activation path: the CLS activations read directly
    _, acts = _hooked(model, x)
    assert torch.equal(paths[ActivationPath], torch.stack([acts[l][:, 0].topk(2).indices for l in range(6)], 1))
    assert _no_hooks(model)
