"""Neuron baselines (zero, mean, counterfactual, given) in the joint attribution and the
path search, against literal patching hooks written here."""
from __future__ import annotations

import pytest
import torch

import captum_paths.search.neuron_path as neuron_path
from captum_paths import JointNeuronIntegratedGradients, LayerProgressiveNeuronPath, NeuronSites
from captum_paths.attribution.layer_baselines import (
    CounterfactualBaseline,
    MeanBaseline,
    SiteBaseline,
    ZeroBaseline,
    as_layer_baselines,
)
from captum_paths.search.baselines import KnowledgeNeuronPath
from _literal import logits_with_outputs_replaced, module_outputs
from _models import tiny_vit


@pytest.fixture(scope="module")
def tiny():
    model = tiny_vit()
    torch.manual_seed(1)
    x = torch.randn(4, 3, 16, 16)
    y = torch.tensor([0, 1, 2, 3])
    reference = torch.randn(10, 3, 16, 16)
    counterfactual = torch.randn(4, 3, 16, 16)
    return model, x, y, reference, counterfactual


def _literal_values(model, sites, kind, x, reference, counterfactual):
    """Per layer, the values a removed unit takes for each image ``(batch, tokens, d_ff)``, from
    forward hooks on the site modules written here (no library recording)."""
    def run(images):
        return module_outputs(model, sites.modules, images)

    batch = len(x)
    if kind == "zero":
        return {l: torch.zeros_like(a) for l, a in run(x).items()}
    if kind == "mean":
        return {l: a.double().mean(0).float()[None].expand(batch, *a.shape[1:]) for l, a in run(reference).items()}
    return run(counterfactual)


def _literal_removed(model, sites, x, y, sets, values):
    """``F(x; each image's set replaced by its values)`` by forward hooks that write the values
    into the site modules' outputs, every token (the sites read every token)."""
    def patch(layer):
        def fn(output):
            out = output.clone()
            for i, s in enumerate(sets):
                for (l, u) in s:
                    if l == layer:
                        out[i, :, u] = values[layer][i, :, u]
            return out
        return fn

    replace = {l: patch(l) for l in range(len(sites.modules))}
    return logits_with_outputs_replaced(model, sites.modules, x, replace).softmax(-1).gather(1, y[:, None])[:, 0]


def _baseline(kind, reference, counterfactual):
    return {"zero": None, "mean": MeanBaseline(reference, batch_size=3),
            "counterfactual": CounterfactualBaseline(counterfactual)}[kind]


@pytest.mark.parametrize("kind", ["zero", "mean", "counterfactual"])
def test_joint_score_is_the_literal_patching_effect(tiny, kind):
    model, x, y, reference, counterfactual = tiny
    sites = NeuronSites.from_model(model, tokens="all")
    jig = JointNeuronIntegratedGradients(model, sites=sites)
    sets = [[(0, 3), (1, 10), (2, 5)], [(0, 7), (2, 60), (2, 1)], [(1, 0), (1, 2), (2, 2)], [(0, 1), (1, 1), (2, 9)]]
    phi, jas, delta = jig.attribute(x, sets, target=y, n_steps=64, layer_baselines=_baseline(kind, reference,
                                                                                              counterfactual),
                                    return_jas=True, return_convergence_delta=True)
    values = _literal_values(model, sites, kind, x, reference, counterfactual)
    with torch.no_grad():
        p = model(x).softmax(-1).gather(1, y[:, None])[:, 0]
    expected = p - _literal_removed(model, sites, x, y, sets, values)
    torch.testing.assert_close(jas, expected, rtol=0, atol=1e-6)
    # completeness: the contributions integrate from the baseline to the activation
    torch.testing.assert_close(phi.sum(1), expected, rtol=1e-3, atol=1e-6)
    assert delta.abs().max() < 1e-3 * expected.abs().max()


def test_given_values_equal_the_mean_baseline_and_zero_values_equal_zero(tiny):
    model, x, y, reference, _ = tiny
    jig = JointNeuronIntegratedGradients(model)
    path = torch.tensor([[[1], [2], [3]]]).expand(4, 3, 1)
    mean = MeanBaseline(reference)
    means = mean.means(jig.sites, jig.forward_func)
    by_mean = jig.attribute(x, path, target=y, layer_baselines=mean, return_jas=True)
    by_values = jig.attribute(x, path, target=y, layer_baselines=dict(means), return_jas=True)
    by_list = jig.attribute(x, path, target=y, layer_baselines=SiteBaseline([means[0], means[1], means[2]]),
                            return_jas=True)
    for a, b in ((by_mean, by_values), (by_mean, by_list)):
        assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    zero = jig.attribute(x, path, target=y, return_jas=True)
    zero_values = jig.attribute(x, path, target=y, layer_baselines={l: torch.zeros(64) for l in range(3)},
                                return_jas=True)
    for a, b in zip(zero, zero_values):
        assert torch.equal(a, b)
    for same in (0, 0.0, ZeroBaseline()):
        assert all(torch.equal(a, b) for a, b in zip(zero, jig.attribute(x, path, target=y, layer_baselines=same,
                                                                         return_jas=True)))


def test_mean_baseline_is_the_mean_of_recorded_activations(tiny):
    model, _, _, reference, _ = tiny
    sites = NeuronSites.from_model(model)
    means = MeanBaseline(reference, batch_size=4).means(sites, model)
    with torch.no_grad(), sites.record() as acts:
        model(reference)
    for l in range(3):
        torch.testing.assert_close(means[l], acts[l].double().mean(0).float(), rtol=0, atol=1e-7)
        assert means[l].shape == acts[l].shape[1:]


def test_head_sites_take_baselines(tiny):
    model, x, y, reference, _ = tiny
    heads = NeuronSites.heads_from_model(model)
    jig = JointNeuronIntegratedGradients(model, sites=heads)
    mean = MeanBaseline(reference)
    sets = [(0, 1), (2, 0)]
    _, jas = jig.attribute(x, sets, target=y, layer_baselines=mean, return_jas=True)
    # the literal mean of each head's channels over the reference images, (positions, heads) per layer
    with torch.no_grad(), heads.record() as acts:
        model(reference)
    literal = {l: a.double().mean(0).float() for l, a in acts.items()}

    def edit(layer):
        def fn(act):  # (batch, positions, heads)
            out = act.clone()
            for (ll, h) in sets:
                if ll == layer:
                    out[:, :, h] = literal[layer][None, :, h]
            return out
        return fn

    with torch.no_grad():
        p = model(x).softmax(-1).gather(1, y[:, None])[:, 0]
        with heads.edit({0: edit(0), 2: edit(2)}):
            removed = model(x).softmax(-1).gather(1, y[:, None])[:, 0]
    torch.testing.assert_close(jas, p - removed, rtol=0, atol=1e-6)


# ------------------------------------------------------------------------- path search
def _literal_greedy(model, sites, x, y, values):
    """The exact greedy with one neuron per layer: at each layer the neuron whose addition
    to the prefix has the largest ``F(x) - F(x; prefix + j replaced)``, by literal hooks."""
    L, width = sites.num_layers, 64
    with torch.no_grad():
        p = model(x).softmax(-1).gather(1, y[:, None])[:, 0]
    paths = torch.zeros(len(x), L, 1, dtype=torch.long)
    for t in range(L):
        scores = torch.zeros(len(x), width)
        for j in range(width):
            sets = [[(l, int(paths[i, l, 0])) for l in range(t)] + [(t, j)] for i in range(len(x))]
            scores[:, j] = p - _literal_removed(model, sites, x, y, sets, values)
        paths[:, t, 0] = scores.argmax(1)
    return paths


@pytest.mark.parametrize("kind", ["mean", "counterfactual"])
@pytest.mark.parametrize("stream", [True, False])
def test_exact_greedy_equals_the_literal_greedy(tiny, kind, stream, monkeypatch):
    model, x, y, reference, counterfactual = tiny
    if not stream:
        monkeypatch.setattr(neuron_path.ResidualStream, "from_sites", classmethod(lambda cls, sites: None))
    sites = NeuronSites.from_model(model, tokens="all")
    result = LayerProgressiveNeuronPath(model, sites=sites).attribute(
        x, target=y, refine="all", layer_baselines=_baseline(kind, reference, counterfactual))
    values = _literal_values(model, sites, kind, x, reference, counterfactual)
    assert torch.equal(result.paths, _literal_greedy(model, sites, x, y, values))
    sets = [[(l, int(result.paths[i, l, 0])) for l in range(3)] for i in range(len(x))]
    with torch.no_grad():
        p = model(x).softmax(-1).gather(1, y[:, None])[:, 0]
    torch.testing.assert_close(result.jas, p - _literal_removed(model, sites, x, y, sets, values), rtol=0,
                               atol=1e-6)
    assert result.settings["ablation"] == kind


@pytest.mark.parametrize("kind", ["mean", "counterfactual"])
def test_stream_and_generic_engines_agree_under_a_baseline(tiny, kind, monkeypatch):
    model, x, y, reference, counterfactual = tiny
    search = LayerProgressiveNeuronPath(model)
    baseline = _baseline(kind, reference, counterfactual)
    fast = search.attribute(x, target=y, k=2, refine=5, internal_batch_size=7, layer_baselines=baseline)
    zero = search.attribute(x, target=y, k=2, refine=5, internal_batch_size=7)
    monkeypatch.setattr(neuron_path.ResidualStream, "from_sites", classmethod(lambda cls, sites: None))
    slow = search.attribute(x, target=y, k=2, refine=5, internal_batch_size=7, layer_baselines=baseline)
    assert torch.equal(fast.paths, slow.paths)
    torch.testing.assert_close(fast.scores, slow.scores, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fast.jas, slow.jas)
    torch.testing.assert_close(fast.contributions, slow.contributions, rtol=1e-5, atol=1e-7)
    assert not torch.equal(fast.jas, zero.jas)  # the baseline is not ignored
    # the fused scores equal the joint attribution under the same baseline
    phi, jas, delta = JointNeuronIntegratedGradients(model).attribute(
        x, fast.paths, target=y, n_steps=fast.settings["n_steps"], layer_baselines=baseline,
        return_convergence_delta=True, return_jas=True)
    torch.testing.assert_close(fast.contributions, phi)
    torch.testing.assert_close(fast.jas, jas)
    torch.testing.assert_close(fast.delta, delta)


@pytest.mark.parametrize("stream", [True, False])
def test_beam_under_a_counterfactual_baseline(tiny, stream, monkeypatch):
    model, x, y, reference, counterfactual = tiny
    if not stream:
        monkeypatch.setattr(neuron_path.ResidualStream, "from_sites", classmethod(lambda cls, sites: None))
    sites = NeuronSites.from_model(model, tokens="all")
    baseline = CounterfactualBaseline(counterfactual)
    search = LayerProgressiveNeuronPath(model, sites=sites)
    beam = search.attribute(x, target=y, beam=3, refine=4, layer_baselines=baseline)
    greedy = search.attribute(x, target=y, refine="all", layer_baselines=baseline)
    values = _literal_values(model, sites, "counterfactual", x, reference, counterfactual)
    sets = [[(l, int(beam.paths[i, l, 0])) for l in range(3)] for i in range(len(x))]
    with torch.no_grad():
        p = model(x).softmax(-1).gather(1, y[:, None])[:, 0]
    torch.testing.assert_close(beam.jas, p - _literal_removed(model, sites, x, y, sets, values), rtol=0, atol=1e-6)
    # the beam's last survivor score is its path's exact JAS
    torch.testing.assert_close(beam.scores[:, -1, 0], beam.jas, rtol=0, atol=1e-6)
    assert greedy.jas.shape == beam.jas.shape


def test_other_methods_score_their_paths_against_the_baseline(tiny):
    model, x, y, reference, _ = tiny
    mean = MeanBaseline(reference)
    result = KnowledgeNeuronPath(model).attribute(x, target=y, k=2, layer_baselines=mean)
    _, jas = JointNeuronIntegratedGradients(model).attribute(
        x, result.paths, target=y, layer_baselines=mean, return_jas=True)
    torch.testing.assert_close(result.jas, jas)
    assert result.settings["ablation"] == "mean" and result.settings["reference_images"] == 10


# ------------------------------------------------------------------------------ errors
def test_bad_baselines_say_what_was_given(tiny):
    model, x, y, reference, counterfactual = tiny
    jig = JointNeuronIntegratedGradients(model)
    with pytest.raises(TypeError, match=r"MeanBaseline\(reference_images\)"):
        jig.attribute(x, [(0, 1)], target=y, layer_baselines="mean")
    with pytest.raises(TypeError, match="CounterfactualBaseline"):
        jig.attribute(x, [(0, 1)], target=y, layer_baselines=counterfactual)
    with pytest.raises(ValueError, match=r"shape \(7,\).*\(units,\) = \(64,\)"):
        jig.attribute(x, [(0, 1)], target=y, layer_baselines={0: torch.zeros(7)})
    with pytest.raises(ValueError, match="3 counterfactual images for 4 explained"):
        jig.attribute(x, [(0, 1)], target=y, layer_baselines=CounterfactualBaseline(counterfactual[:3]))
    with pytest.raises(ValueError, match="mode='paper'"):
        jig.attribute(x, [(0, 1)], target=y, mode="paper", layer_baselines=MeanBaseline(reference))
    with pytest.raises(ValueError, match="mode='paper'"):
        LayerProgressiveNeuronPath(model).attribute(x, target=y, mode="paper", layer_baselines=MeanBaseline(reference))
    with pytest.raises(TypeError, match="floating-point tensor"):
        as_layer_baselines({0: torch.zeros(64, dtype=torch.long)})
    with pytest.raises(TypeError, match="layer indices"):
        as_layer_baselines({"blocks.0": torch.zeros(64)})
