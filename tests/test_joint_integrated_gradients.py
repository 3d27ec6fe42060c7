"""JointNeuronIntegratedGradients against literal implementations and exact identities."""
from __future__ import annotations

import types

import numpy as np
import pytest
import torch
from torch import nn

from captum_paths import JointNeuronIntegratedGradients, NeuronSites
from captum_paths.demo import load_demo_data, load_demo_model
from _models import tiny_vit as _tiny_vit


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def demo():
    model = load_demo_model()
    x, y = load_demo_data("test")
    return model, x[:6], y[:6]




@pytest.fixture(scope="module")
def tiny():
    model = _tiny_vit()
    torch.manual_seed(1)
    x = torch.randn(4, 3, 16, 16)
    return model, x


def _acts(model: nn.Module, x: torch.Tensor):
    """Clean FFN activations of a timm ViT via plain hooks: {layer: (batch, tokens, d_ff)}."""
    store, handles = {}, []
    for l, blk in enumerate(model.blocks):
        handles.append(blk.mlp.act.register_forward_hook(lambda m, a, o, l=l: store.__setitem__(l, o.detach())))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return logits, store


def _top_path(model, x, k):
    """(batch, L, k): the k most active CLS neurons per layer."""
    _, acts = _acts(model, x)
    return torch.stack([acts[l][:, 0].topk(k, dim=1).indices for l in sorted(acts)], dim=1)


def _prob_with_zeroed(model, x, target, path, token=slice(0, 1)):
    """F(x with the path's neurons zeroed at the CLS token), written with plain hooks."""
    handles = []
    for l, blk in enumerate(model.blocks):
        def hook(m, a, out, l=l):
            out = out.clone()
            for i in range(out.shape[0]):
                out[i, token, path[i, l]] = 0.0
            return out
        handles.append(blk.mlp.act.register_forward_hook(hook))
    try:
        with torch.no_grad():
            logits = model(x)
    finally:
        for h in handles:
            h.remove()
    return logits.double().softmax(-1).gather(1, target[:, None])[:, 0]


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


# ------------------------------------------------------------------------- completeness
@pytest.mark.parametrize("which", ["demo", "tiny"])
def test_completeness_for_sets_spanning_all_layers(which, demo, tiny):
    if which == "demo":
        model, x, y = demo
    else:
        model, x = tiny
        y = torch.tensor([0, 1, 2, 3])
    path = _top_path(model, x, k=8)
    jig = JointNeuronIntegratedGradients(model)
    phi, jas, delta = jig.attribute(x, path, target=y, n_steps=64, return_convergence_delta=True, return_jas=True)
    assert phi.shape == path.shape and jas.shape == (len(x),)
    logits, _ = _acts(model, x)
    f_clean = logits.double().softmax(-1).gather(1, y[:, None])[:, 0]
    diff = f_clean - _prob_with_zeroed(model, x, y, path)
    assert (diff.abs() > 1e-3).all(), "the test needs sets that move the output"
    assert torch.all(delta.abs() <= 1e-3 * diff.abs())
    # the reported JAS is the removal effect itself; the contributions integrate to it
    torch.testing.assert_close(jas.double(), diff, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(phi.sum(dim=(1, 2)) - jas, delta, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(phi.sum(dim=(1, 2)).double(), diff, rtol=1e-3, atol=0)


@pytest.mark.parametrize("method", ["gausslegendre", "riemann_trapezoid"])
def test_delta_shrinks_as_steps_grow(method, tiny):
    model, x = tiny
    model64 = _tiny_vit().double()
    path = _top_path(model, x, k=6)
    jig = JointNeuronIntegratedGradients(model64, output="logit")
    deltas = [
        jig.attribute(x.double(), path, target=0, n_steps=n, method=method, return_convergence_delta=True)[1]
        .abs().sum().item()
        for n in (2, 4, 8, 16)
    ]
    assert all(a > b for a, b in zip(deltas, deltas[1:])), deltas
    # Gauss-Legendre converges fast; Captum's trapezoid weights sum to 1 - 1/n, so O(1/n)
    assert deltas[-1] < (1e-3 if method == "gausslegendre" else 0.25) * deltas[0]


def test_convergence_delta_matches_its_definition(tiny):
    model, x = tiny
    path = _top_path(model, x, k=3)
    jig = JointNeuronIntegratedGradients(model, output="logit")
    _, jas, delta = jig.attribute(x, path, target=1, n_steps=8, return_convergence_delta=True, return_jas=True)
    logits, _ = _acts(model, x)
    f1 = logits[:, 1].double()
    handles = []
    for l, blk in enumerate(model.blocks):
        handles.append(blk.mlp.act.register_forward_hook(lambda m, a, o, l=l: _zero_cls(o, path[:, l])))
    try:
        with torch.no_grad():
            f0 = model(x)[:, 1].double()
    finally:
        for h in handles:
            h.remove()
    phi, jas, delta = jig.attribute(x, path, target=1, n_steps=8, return_convergence_delta=True, return_jas=True)
    torch.testing.assert_close(jas.double(), f1 - f0, rtol=0, atol=1e-5)
    torch.testing.assert_close(delta.double(), phi.sum(dim=(1, 2)).double() - (f1 - f0), rtol=0, atol=1e-5)


@pytest.mark.parametrize("steps", [2, 4, 50])
def test_reported_jas_is_the_removal_effect_at_any_steps(steps, tiny):
    """Gate mode: the JAS of an arbitrary set equals F(x) - F(x; set zeroed) however
    coarse the quadrature; only the contributions depend on the steps."""
    model, x = tiny
    torch.manual_seed(11)
    sets = [[(int(l), int(u)) for l, u in zip(torch.randint(0, 3, (5,)), torch.randint(0, 64, (5,)))]
            for _ in range(len(x))]
    target = torch.tensor([3, 1, 0, 2])
    _, jas = JointNeuronIntegratedGradients(model).attribute(x, sets, target=target, n_steps=steps, return_jas=True)
    with torch.no_grad():
        clean = model(x).softmax(-1)
        for i, members in enumerate(sets):
            def zero(layer, members=members):
                return lambda a: a * torch.tensor([0.0 if (layer, u) in members else 1.0 for u in range(64)])
            with NeuronSites.from_model(model).edit({l: zero(l) for l in range(3)}):
                removed = model(x[i : i + 1]).softmax(-1)[0, target[i]]
            torch.testing.assert_close(jas[i], clean[i, target[i]] - removed, rtol=1e-5, atol=1e-7)


def test_tolerance_makes_the_contributions_add_up(tiny):
    model, x = tiny
    path = _top_path(model, x, k=6)
    jig = JointNeuronIntegratedGradients(model, output="logit")
    _, jas2, coarse = jig.attribute(x, path, target=0, n_steps=2, return_convergence_delta=True, return_jas=True)
    tol = 1e-4
    assert (coarse.abs() > tol * jas2.abs()).any(), "the test needs a coarse delta above the tolerance"
    phi, jas, delta = jig.attribute(x, path, target=0, n_steps=2, tol=tol, return_convergence_delta=True,
                                    return_jas=True)
    torch.testing.assert_close(jas, jas2)
    assert (delta.abs() <= torch.clamp(tol * jas.abs(), min=1e-7) + 1e-7).all()
    torch.testing.assert_close(phi.sum(dim=(1, 2)) - jas, delta, rtol=0, atol=1e-6)
    # the refined contributions are those of a fine quadrature
    fine = jig.attribute(x, path, target=0, n_steps=64)
    torch.testing.assert_close(phi, fine, rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("tol, mode", [(0, "gate"), (-1e-3, "gate"), ("a", "gate"), (1e-3, "paper")])
def test_bad_tolerance_is_refused(tol, mode, tiny):
    model, x = tiny
    with pytest.raises(ValueError, match="tol"):
        JointNeuronIntegratedGradients(model).attribute(x, [(0, 1)], target=0, tol=tol, mode=mode)


def test_has_convergence_delta(tiny):
    jig = JointNeuronIntegratedGradients(tiny[0])
    assert jig.has_convergence_delta()
    with pytest.raises(NotImplementedError, match="return_convergence_delta=True"):
        jig.compute_convergence_delta(torch.zeros(1, 3), tiny[1][:1], tiny[1][:1])


def _zero_cls(out, units):
    out = out.clone()
    cls = out[:, 0]
    cls.scatter_(1, units, 0.0)
    out[:, 0] = cls
    return out


# ----------------------------------------------------------------- single-neuron identity
def _single_neuron_ig(model, x, target, layer, unit, n_steps, output):
    """Integrated gradients of one neuron by a direct loop over alpha with autograd."""
    _, acts = _acts(model, x)
    a0 = acts[layer][:, 0, unit]
    xs, ws = np.polynomial.legendre.leggauss(n_steps)
    alphas, weights = 0.5 * (xs + 1), 0.5 * ws
    phi = torch.zeros(x.shape[0], dtype=torch.float64)
    for alpha, w in zip(alphas, weights):
        value = (float(alpha) * a0).clone().requires_grad_(True)

        def hook(m, a, out):
            out = out.clone()
            out[:, 0, unit] = value
            return out

        h = model.blocks[layer].mlp.act.register_forward_hook(hook)
        try:
            logits = model(x)
        finally:
            h.remove()
        f = logits.softmax(-1) if output == "prob" else logits
        f = f.gather(1, target[:, None])[:, 0]
        (g,) = torch.autograd.grad(f.sum(), value)
        phi += float(w) * (a0 * g).double()
    return phi


@pytest.mark.parametrize("output", ["prob", "logit"])
@pytest.mark.parametrize("layer,unit", [(0, 5), (2, 17)])
def test_single_neuron_equals_integrated_gradients(tiny, output, layer, unit):
    model, x = tiny
    target = torch.tensor([0, 1, 2, 3])
    jig = JointNeuronIntegratedGradients(model, output=output)
    phi, jas = jig.attribute(x, [(layer, unit)], target=target, n_steps=16, return_jas=True)
    expected = _single_neuron_ig(model, x, target, layer, unit, 16, output)
    torch.testing.assert_close(phi[:, 0].double(), expected, rtol=1e-4, atol=1e-7)
    torch.testing.assert_close(jas, phi[:, 0])


# ----------------------------------------------------------------------- paper parity
def _literal_paper_jas(model, x, target, neurons, m=20, output="prob"):
    """The paper score, literally: one example at a time, hooks overwrite activations,
    a Python loop over the left Riemann steps. ``neurons``: list of (layer, unit)."""
    results, per_neuron = [], []
    for i in range(x.shape[0]):
        xi = x[i : i + 1]
        _, acts = _acts(model, xi)
        deepest = max(l for l, _ in neurons)
        grad_sum = 0.0
        terms = [0.0] * len(neurons)
        for k in range(m):
            alpha = k / m
            leaves = {}
            handles = []
            for l in range(deepest + 1):
                row = acts[l][:, 0].clone()
                for (nl, nu) in neurons:
                    if nl == l:
                        row[0, nu] = alpha * acts[l][0, 0, nu]
                row.requires_grad_(True)
                leaves[l] = row

                def hook(mod, a, out, row=row):
                    out = out.clone()
                    out[:, 0] = row
                    return out

                handles.append(model.blocks[l].mlp.act.register_forward_hook(hook))
            try:
                logits = model(xi)
            finally:
                for h in handles:
                    h.remove()
            f = (logits.softmax(-1) if output == "prob" else logits)[0, target[i]]
            f.backward()
            for idx, (nl, nu) in enumerate(neurons):
                g = leaves[nl].grad[0, nu].item()
                grad_sum += g
                terms[idx] += acts[nl][0, 0, nu].item() / m * g
        act_sum = sum(_acts(model, xi)[1][nl][0, 0, nu].item() for nl, nu in neurons)
        results.append(grad_sum * act_sum / m)
        per_neuron.append(terms)
    return torch.tensor(results, dtype=torch.float64), torch.tensor(per_neuron, dtype=torch.float64)


@pytest.mark.parametrize("neurons", [[(0, 3), (1, 40), (2, 9)], [(0, 3), (1, 40)], [(1, 7)]])
def test_paper_mode_equals_literal_implementation(tiny, neurons):
    model, x = tiny
    target = torch.tensor([4, 3, 2, 1])
    jig = JointNeuronIntegratedGradients(model)
    phi, jas = jig.attribute(x, neurons, target=target, mode="paper", return_jas=True)
    exp_jas, exp_phi = _literal_paper_jas(model, x, target, neurons)
    torch.testing.assert_close(jas.double(), exp_jas, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(phi.double(), exp_phi, rtol=1e-5, atol=1e-7)


def test_paper_mode_on_demo_path(demo):
    model, x, y = demo
    x, y = x[:2], y[:2]
    path = _top_path(model, x, k=1)
    jig = JointNeuronIntegratedGradients(model)
    phi, jas = jig.attribute(x, path, target=y, mode="paper", n_steps=10, return_jas=True)
    for i in range(2):
        neurons = [(l, int(path[i, l, 0])) for l in range(path.shape[1])]
        exp_jas, exp_phi = _literal_paper_jas(model, x[i : i + 1], y[i : i + 1], neurons, m=10)
        torch.testing.assert_close(jas[i : i + 1].double(), exp_jas, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(phi[i, :, 0].double(), exp_phi[0], rtol=1e-5, atol=1e-8)


def test_paper_mode_single_neuron_is_left_riemann_ig(tiny):
    """Paper semantics: with |N| = 1 the paper score is left-Riemann IG."""
    model, x = tiny
    jig = JointNeuronIntegratedGradients(model)
    _, paper = jig.attribute(x, [(1, 11)], target=2, mode="paper", return_jas=True)
    gate = jig.attribute(x, [(1, 11)], target=2, n_steps=20, method="riemann_left")
    # freezing layers 0..1 at their clean values changes nothing for a single neuron
    torch.testing.assert_close(paper, gate[:, 0], rtol=1e-5, atol=1e-8)


# ----------------------------------------------------------------- batching invariants
@pytest.mark.parametrize("mode", ["gate", "paper"])
def test_per_example_sets_equal_one_example_at_a_time(tiny, mode):
    model, x = tiny
    sets = [
        [(0, 1), (2, 5), (1, 9)],
        [(1, 3), (1, 4), (0, 60)],
        [(2, 0), (2, 63), (0, 7)],
        [(0, 2), (0, 3), (0, 4)],
    ]
    target = torch.tensor([1, 0, 3, 2])
    jig = JointNeuronIntegratedGradients(model)
    phi, jas, delta = jig.attribute(x, sets, target=target, mode=mode, return_convergence_delta=True, return_jas=True)
    for i in range(4):
        p, j, d = jig.attribute(
            x[i : i + 1], [sets[i]], target=target[i : i + 1], mode=mode, return_convergence_delta=True, return_jas=True
        )
        torch.testing.assert_close(phi[i : i + 1], p, rtol=1e-5, atol=1e-8)
        # gate: a difference of two float32 probabilities, equal to float32 resolution
        torch.testing.assert_close(jas[i : i + 1], j, rtol=1e-5, atol=6e-8)
        torch.testing.assert_close(delta[i : i + 1], d, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("mode", ["gate", "paper"])
@pytest.mark.parametrize("internal_batch_size", [3, 7, 20])
def test_internal_batch_size_gives_same_results(tiny, mode, internal_batch_size):
    model, x = tiny
    path = _top_path(model, x, k=2)
    jig = JointNeuronIntegratedGradients(model)
    full = jig.attribute(x, path, target=0, mode=mode, n_steps=10, return_convergence_delta=True, return_jas=True)
    part = jig.attribute(
        x, path, target=0, mode=mode, n_steps=10, internal_batch_size=internal_batch_size,
        return_convergence_delta=True, return_jas=True,
    )
    for a, b in zip(full, part):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)


def test_path_result_object_and_pair_lists_agree(tiny):
    model, x = tiny
    path = _top_path(model, x, k=2)
    jig = JointNeuronIntegratedGradients(model)
    phi_obj, jas_obj = jig.attribute(x, types.SimpleNamespace(paths=path), target=1, return_jas=True)
    pairs = [[(l, int(path[i, l, r])) for l in range(3) for r in range(2)] for i in range(4)]
    phi_pairs, jas_pairs = jig.attribute(x, pairs, target=1, return_jas=True)
    assert phi_obj.shape == (4, 3, 2) and phi_pairs.shape == (4, 6)
    torch.testing.assert_close(phi_obj.reshape(4, 6), phi_pairs)
    torch.testing.assert_close(jas_obj, jas_pairs)


def test_default_target_is_predicted_class(tiny):
    model, x = tiny
    jig = JointNeuronIntegratedGradients(model)
    pred = model(x).argmax(1)
    a = jig.attribute(x, [(0, 1), (2, 2)], return_jas=True)
    b = jig.attribute(x, [(0, 1), (2, 2)], target=pred, return_jas=True)
    for u, v in zip(a, b):
        torch.testing.assert_close(u, v)


def test_additional_forward_args_are_expanded_with_the_batch():
    base = _tiny_vit()

    class Scaled(nn.Module):
        def __init__(self):
            super().__init__()
            self.vit = base

        def forward(self, x, scale):
            return self.vit(x * scale[:, None, None, None])

    model = Scaled().eval()
    torch.manual_seed(3)
    x, scale = torch.randn(3, 3, 16, 16), torch.tensor([0.5, 1.0, 2.0])
    sites = NeuronSites.from_names(model, [f"vit.blocks.{i}.mlp.act" for i in range(3)], tokens="cls")
    jig = JointNeuronIntegratedGradients(model, sites=sites)
    got = jig.attribute(x, [(0, 4), (2, 8)], target=0, additional_forward_args=(scale,), internal_batch_size=5,
                        return_jas=True)
    ref = JointNeuronIntegratedGradients(base).attribute(x * scale[:, None, None, None], [(0, 4), (2, 8)], target=0,
                                                         return_jas=True)
    for u, v in zip(got, ref):
        torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-8)


def test_patch_token_selection_is_complete():
    model = _tiny_vit(seed=2, global_pool="avg")
    torch.manual_seed(4)
    x = torch.randn(2, 3, 16, 16)
    sites = NeuronSites.from_model(model)
    assert sites.tokens.kind == "patches"
    jig = JointNeuronIntegratedGradients(model, output="logit")
    neurons = [(l, u) for l in range(3) for u in range(0, 64, 4)]
    _, jas, delta = jig.attribute(x, neurons, target=1, n_steps=32, return_convergence_delta=True, return_jas=True)
    with torch.no_grad():
        f1 = model(x)[:, 1]
        with sites.edit({l: (lambda a: a * torch.tensor([0.0 if u % 4 == 0 else 1.0 for u in range(64)])) for l in range(3)}):
            f0 = model(x)[:, 1]
    torch.testing.assert_close(jas, f1 - f0, rtol=1e-3, atol=1e-5)
    assert (delta.abs() <= 1e-3 * (f1 - f0).abs()).all()


def test_hugging_face_model_is_supported():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=16, patch_size=4, num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
        intermediate_size=48, num_labels=3,
    )
    model = transformers.ViTForImageClassification(config).eval()
    x = torch.randn(2, 3, 16, 16)
    jig = JointNeuronIntegratedGradients(model, output="logit")
    phi, jas, delta = jig.attribute(x, [(0, 1), (1, 2), (1, 40)], target=2, return_convergence_delta=True,
                                    return_jas=True)
    assert phi.shape == (2, 3)
    assert (delta.abs() < 1e-4).all()
    assert _no_hooks(model)


# ---------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "kwargs,exc,words",
    [
        (dict(neurons=[(3, 0)]), ValueError, ["layer", "3", "0..2"]),
        (dict(neurons=[(0, 64)]), ValueError, ["neuron", "64", "0..63"]),
        (dict(neurons=[(-1, 0)]), ValueError, ["layer", "-1"]),
        (dict(neurons=[]), ValueError, ["empty"]),
        # a set count that divides the batch is repeated (NoiseTunnel's layout); any other is refused
        (dict(neurons=[[(0, 1)], [(0, 2)], [(1, 3)]]), ValueError, ["3 sets", "4 examples"]),
        (dict(neurons=[[(0, 1)], []]), ValueError, ["empty"]),
        (dict(neurons=[(0, 1), (0, 1)]), ValueError, ["twice"]),
        (dict(neurons=torch.zeros(4, 3, dtype=torch.long)), ValueError, ["(batch, L, k)"]),
        (dict(neurons=torch.zeros(4, 2, 1, dtype=torch.long)), ValueError, ["(batch, L, k)", "3"]),
        (dict(neurons=torch.zeros(4, 3, 1)), TypeError, ["integer"]),
        (dict(neurons="0,1"), TypeError, ["neurons"]),
        (dict(neurons=[(0, 1.5)]), TypeError, ["pair"]),
        (dict(neurons=[(0, 1)], target=5), ValueError, ["target", "5", "0..4"]),
        (dict(neurons=[(0, 1)], target=[0, 1]), ValueError, ["target", "2", "4"]),
        (dict(neurons=[(0, 1)], target=0.5), TypeError, ["target"]),
        (dict(neurons=[(0, 1)], method="simpson"), ValueError, ["method", "gausslegendre"]),
        (dict(neurons=[(0, 1)], mode="fast"), ValueError, ["mode", "gate", "paper"]),
        (dict(neurons=[(0, 1)], mode="paper", method="gausslegendre"), ValueError, ["riemann_left"]),
        (dict(neurons=[(0, 1)], n_steps=1), ValueError, ["n_steps"]),
        (dict(neurons=[(0, 1)], internal_batch_size=0), ValueError, ["internal_batch_size"]),
    ],
)
def test_bad_arguments_raise_clear_errors(tiny, kwargs, exc, words):
    model, x = tiny
    jig = JointNeuronIntegratedGradients(model)
    with pytest.raises(exc) as info:
        jig.attribute(x, **kwargs)
    for w in words:
        assert w in str(info.value), (w, str(info.value))
    assert _no_hooks(model)


def test_non_finite_inputs_and_bad_constructor_arguments(tiny):
    model, x = tiny
    bad = x.clone()
    bad[1, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="non-finite"):
        JointNeuronIntegratedGradients(model).attribute(bad, [(0, 1)])
    with pytest.raises(ValueError, match="output"):
        JointNeuronIntegratedGradients(model, output="softmax")
    with pytest.raises(TypeError, match="sites"):
        JointNeuronIntegratedGradients(model, sites=["blocks.0.mlp.act"])
    with pytest.raises(TypeError, match="inputs"):
        JointNeuronIntegratedGradients(model).attribute([x], [(0, 1)])


# ---------------------------------------------------------------------- hook hygiene
class _FailOnCall(nn.Module):
    """Delegates to a model and raises on the n-th call."""

    def __init__(self, model, fail_at):
        super().__init__()
        self.model, self.fail_at, self.calls = model, fail_at, 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError("boom")
        return self.model(x)


@pytest.mark.parametrize("mode", ["gate", "paper"])
@pytest.mark.parametrize("train", [False, True])
def test_hooks_removed_and_model_unchanged(mode, train):
    model = _tiny_vit(seed=5, drop_rate=0.0)
    model.train(train)
    x = torch.randn(2, 3, 16, 16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    jig = JointNeuronIntegratedGradients(model)
    jig.attribute(x, [(0, 1), (2, 3)], target=0, mode=mode, internal_batch_size=8)
    for fail_at in (1, 2, 3):
        wrapper = _FailOnCall(model, fail_at)
        sites = NeuronSites.from_model(model)
        with pytest.raises(RuntimeError, match="boom"):
            JointNeuronIntegratedGradients(wrapper, sites=sites).attribute(
                x, [(0, 1), (2, 3)], target=0, mode=mode, internal_batch_size=8
            )
    assert _no_hooks(model)
    assert model.training is train
    assert all(m.training is train for m in model.modules())
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.parameters())


# --------------------------------------------------------------------- dtypes, devices
def test_bfloat16_autocast_on_cpu(demo):
    model, x, y = demo
    path = _top_path(model, x, k=4)
    jig = JointNeuronIntegratedGradients(model)
    phi32, jas32 = jig.attribute(x, path, target=y, n_steps=16, return_jas=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        phi16, jas16 = jig.attribute(x, path, target=y, n_steps=16, return_jas=True)
    assert phi16.dtype == torch.float32 and torch.isfinite(phi16).all()
    torch.testing.assert_close(jas16, jas32, rtol=0.1, atol=2e-2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu(demo):
    model, x, y = demo
    path = _top_path(model, x, k=4)
    cpu = JointNeuronIntegratedGradients(model).attribute(x, path, target=y, return_convergence_delta=True,
                                                          return_jas=True)
    gpu_model = load_demo_model(device="cuda")
    gpu = JointNeuronIntegratedGradients(gpu_model).attribute(
        x.cuda(), path.cuda(), target=y.cuda(), return_convergence_delta=True, return_jas=True
    )
    for a, b in zip(cpu, gpu):
        assert b.device.type == "cuda"
        torch.testing.assert_close(a, b.cpu(), rtol=1e-3, atol=1e-5)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        phi, jas = JointNeuronIntegratedGradients(gpu_model).attribute(x.cuda(), path.cuda(), target=y.cuda(),
                                                                       return_jas=True)
    torch.testing.assert_close(jas.cpu(), cpu[1], rtol=0.1, atol=2e-2)
