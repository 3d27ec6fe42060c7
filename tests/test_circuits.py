"""Learned class circuits and attribution patching, against literal hooks and a planted circuit."""
from __future__ import annotations

import pytest
import torch

from captum_paths import CounterfactualBaseline, MeanBaseline, NeuronSites
from captum_paths.evaluation.circuits import (
    HardConcrete,
    attribution_patching,
    circuit_probabilities,
    learn_circuits,
)
from _literal import logits_with_outputs_replaced, module_outputs
from _models import tiny_vit


@pytest.fixture(scope="module")
def tiny():
    model = tiny_vit()
    torch.manual_seed(2)
    return model, torch.randn(12, 3, 16, 16)


def _site_outputs(model):
    return [block.mlp.act for block in model.blocks]


def _literal_probs(model, x, replace):
    """Softmax with each FFN activation (every token) passed through ``replace[layer](out)``."""
    return logits_with_outputs_replaced(model, _site_outputs(model), x, replace).double().softmax(-1)


def _literal_means(model, x):
    return {l: a.double().mean(0).float() for l, a in module_outputs(model, _site_outputs(model), x).items()}


def test_masks_fully_on_and_off_are_the_model_and_the_fully_ablated_model(tiny):
    model, x = tiny
    on = [torch.ones(64, dtype=torch.bool)] * 3
    off = [torch.zeros(64, dtype=torch.bool)] * 3
    half = [torch.arange(64) % 2 == 0] * 3
    mean = MeanBaseline(x[:6])
    probs = circuit_probabilities(model, x, [on, off, half], layer_baselines=mean, batch_size=5)
    with torch.no_grad():
        torch.testing.assert_close(probs[0], model(x).double().softmax(-1), rtol=0, atol=1e-6)
    means = _literal_means(model, x[:6])
    full_ablation = _literal_probs(model, x, {l: (lambda out, l=l: means[l].expand_as(out).clone())
                                              for l in range(3)})
    torch.testing.assert_close(probs[1], full_ablation, rtol=0, atol=1e-6)

    def keep_even(l):
        def fn(out):
            out = out.clone()
            out[..., 1::2] = means[l][:, 1::2]
            return out
        return fn

    torch.testing.assert_close(probs[2], _literal_probs(model, x, {l: keep_even(l) for l in range(3)}),
                               rtol=0, atol=1e-6)
    zero = circuit_probabilities(model, x, [off])
    torch.testing.assert_close(zero[0], _literal_probs(model, x, {l: torch.zeros_like for l in range(3)}),
                               rtol=0, atol=1e-6)


def test_a_planted_sparse_circuit_is_recovered():
    """Every FFN neuron but three per block has a zero output column: the others cannot
    change the output, so a learned mask must keep exactly the planted ones."""
    model = tiny_vit(seed=3)
    planted = {0: [5, 17, 40], 1: [2, 33, 60], 2: [9, 10, 50]}
    with torch.no_grad():
        for l, block in enumerate(model.blocks):
            keep = torch.zeros(64, dtype=torch.bool)
            keep[planted[l]] = True
            block.mlp.fc2.weight[:, ~keep] = 0.0
            block.mlp.fc2.weight[:, keep] *= 8.0
    torch.manual_seed(4)
    x = torch.randn(16, 3, 16, 16)
    label = int(model(x).argmax(1).mode().values)
    (circuit,) = learn_circuits(model, x, label, strengths=(0.01,), objective="kl", layer_baselines="zero",
                                steps=150, lr=0.1, batch_size=8, seed=0)
    assert circuit.units() == [(l, u) for l in range(3) for u in planted[l]]
    assert circuit.units_kept == 9 and circuit.total_units == 192


def test_larger_strengths_keep_fewer_units_and_training_is_seeded(tiny):
    model, x = tiny
    label = int(model(x).argmax(1).mode().values)
    mean = MeanBaseline(x)
    first = learn_circuits(model, x, label, strengths=(0.1, 4.0), steps=40, batch_size=6, seed=1, layer_baselines=mean)
    again = learn_circuits(model, x, label, strengths=(0.1, 4.0), steps=40, batch_size=6, seed=1, layer_baselines=mean)
    for a, b in zip(first, again):
        assert all(torch.equal(u, v) for u, v in zip(a.log_alpha, b.log_alpha))
        assert a.losses == b.losses
    assert first[0].units_kept > first[1].units_kept
    assert [c.strength for c in first] == [0.1, 4.0]
    data = first[1].to_json()
    assert data["units_kept"] == first[1].units_kept and len(data["units"]) == 3


def test_hard_concrete_gates():
    hc = HardConcrete()
    log_alpha = torch.tensor([-10.0, 0.0, 10.0])
    torch.testing.assert_close(hc.deterministic(log_alpha), torch.tensor([0.0, 0.5, 1.0]))
    samples = torch.stack([hc.sample(log_alpha, torch.Generator().manual_seed(i)) for i in range(200)])
    assert samples.min() >= 0 and samples.max() <= 1
    assert (samples[:, 0] == 0).float().mean() > 0.9 and (samples[:, 2] == 1).float().mean() > 0.9
    assert hc.expected_kept(torch.tensor([-10.0]))[0] < 1e-3 and hc.expected_kept(torch.tensor([10.0]))[0] > 0.999


def test_attribution_patching_is_activation_gap_times_gradient(tiny):
    model, x = tiny
    label = 1
    scores = attribution_patching(model, x, label, layer_baselines=MeanBaseline(x), batch_size=5)
    means = _literal_means(model, x)
    seen = {}

    def keep(l):
        def hook(_m, _a, out):
            out.retain_grad()
            seen[l] = out
        return hook

    handles = [m.register_forward_hook(keep(l)) for l, m in enumerate(_site_outputs(model))]
    try:
        logp = model(x).double().log_softmax(-1)[:, label]
        logp.sum().backward()
    finally:
        for h in handles:
            h.remove()
        model.zero_grad()
    for l in range(3):
        a, g = seen[l].detach().double(), seen[l].grad.double()
        expected = ((a - means[l].double()) * g).sum(dim=1).abs().mean(dim=0)
        torch.testing.assert_close(scores[l], expected, rtol=1e-6, atol=1e-9)


def test_bad_arguments_name_what_was_given(tiny):
    model, x = tiny
    with pytest.raises(ValueError, match="objective must be one of"):
        learn_circuits(model, x, 0, objective="mse", steps=1)
    with pytest.raises(ValueError, match="differs per image"):
        learn_circuits(model, x, 0, layer_baselines=CounterfactualBaseline(x), steps=1)
    with pytest.raises(ValueError, match="label must be a class of the model"):
        learn_circuits(model, x, 9, steps=1)
    with pytest.raises(ValueError, match=r"images must be a \(N, C, H, W\) tensor"):
        learn_circuits(model, x[0], 0, steps=1)
    with pytest.raises(ValueError, match="keeps\\[0\\] holds 2 layer masks"):
        circuit_probabilities(model, x, [[torch.ones(64, dtype=torch.bool)] * 2])
    with pytest.raises(TypeError, match="reference images of every class"):
        learn_circuits(model, x, 0, layer_baselines="mean", steps=1)
    with pytest.raises(ValueError, match="steps must be a positive int"):
        learn_circuits(model, x, 0, steps=0)


def test_heads_and_neurons_together(tiny):
    model, x = tiny
    sites = NeuronSites.mixed(NeuronSites.heads_from_model(model), NeuronSites.from_model(model))
    (circuit,) = learn_circuits(model, x, 0, sites=sites, strengths=(1.0,), steps=5, batch_size=4)
    assert circuit.kinds == ["head", "neuron"] * 3 and circuit.total_units == 3 * (2 + 64)
    probs = circuit_probabilities(model, x, [circuit.keep], sites=sites, layer_baselines=MeanBaseline(x))
    assert probs.shape == (1, 12, 5)


def test_circuit_study_compares_learned_circuits_with_rankings(tiny):
    from captum_paths.evaluation.circuits import CIRCUIT_COLUMNS, circuit_study, circuit_summary, fewest_circuit_units

    model, x = tiny
    x = torch.cat([x, x.flip(0)])  # 24 images
    labels = torch.arange(24) % 2
    paths = torch.randint(0, 64, (24, 3, 1), generator=torch.Generator().manual_seed(0))
    table, circuits = circuit_study(model, x, labels, {"toy": paths}, strengths=(0.5, 8.0), fractions=(0.0, 0.1, 1.0),
                                    steps=5, batch_size=4)
    assert list(table.columns) == list(CIRCUIT_COLUMNS) and set(circuits) == {0, 1}
    assert set(table["method"]) == {"learned circuit", "attribution patching", "toy", "random ranking"}
    everything = table[table["fraction_kept"] == 1.0]
    assert (everything["mean_prob"] - everything["mean_prob_full"]).abs().max() < 1e-6  # all kept: the model
    nothing = table[table["units_kept"] == 0]
    assert nothing["mean_prob"].nunique() == 2  # all ablated: one value per class, whatever the ranking
    # the toy method's 10% budget holds every unit its training paths use (at most 12 per class x 3 layers)
    summary = circuit_summary(table)
    assert set(summary["method"]) == set(table["method"]) and summary["reaches"].any()
    fewest = fewest_circuit_units(table)
    assert fewest.set_index("method").loc["random ranking", "fraction_kept"] <= 1.0


def _circuit(keep_units, widths, names=None):
    from captum_paths.evaluation.circuits import LearnedCircuit

    keep = []
    for units, w in zip(keep_units, widths):
        mask = torch.zeros(w, dtype=torch.bool)
        mask[list(units)] = True
        keep.append(mask)
    alpha = [torch.linspace(-1, 1, w) for w in widths]
    return LearnedCircuit(3, 2.0, keep, alpha, [0.5, 0.25], ["head", "neuron"] * (len(widths) // 2),
                          names or [f"s{l}" for l in range(len(widths))])


def test_path_overlap_is_the_literal_count():
    from captum_paths.evaluation.circuits import circuit_path_overlap

    # circuit layers: 0 heads(4), 1 neurons(10), 2 heads(4), 3 neurons(10); paths index layers 1 and 3
    circuit = _circuit([{0}, {1, 2, 7}, {3}, {0, 9}], [4, 10, 4, 10])
    paths = torch.tensor([[[1, 5], [9, -1]],
                          [[1, 2], [4, 9]],
                          [[7, 7], [0, 3]]])  # (N=3, L=2, k=2), -1: no unit
    out = circuit_path_overlap(circuit, paths, [1, 3])
    # distinct (layer, unit): layer 1 {1, 5, 2, 7}, layer 3 {9, 4, 0, 3}; inside: 1, 2, 7 and 9, 0
    assert out["path_units"] == 8 and out["inside"] == 5 and out["share"] == pytest.approx(5 / 8)
    # entries: layer 1 -> 1,5,1,2,7,7 (5 inside); layer 3 -> 9,4,9,0,3 (3 inside)
    assert out["occurrence_share"] == pytest.approx(8 / 11)
    assert out["chance"] == pytest.approx(5 / 20)
    assert circuit_path_overlap(circuit, paths, ["s1", "s3"]) == out  # by site name
    with pytest.raises(ValueError, match="path_layers"):
        circuit_path_overlap(circuit, paths, [1])
    with pytest.raises(ValueError, match="'nope' is not a layer"):
        circuit_path_overlap(circuit, paths, ["s1", "nope"])
    with pytest.raises(ValueError, match="outside the circuit layer"):
        circuit_path_overlap(circuit, paths, [0, 3])  # unit 5, 7 on a 4-head layer
    with pytest.raises(ValueError, match=r"\(N, L, k\)"):
        circuit_path_overlap(circuit, paths[0], [1, 3])


def test_a_circuit_reads_back_from_its_json():
    import json

    from captum_paths.evaluation.circuits import LearnedCircuit

    circuit = _circuit([{0}, {1, 2, 7}, {3}, {0, 9}], [4, 10, 4, 10])
    back = LearnedCircuit.from_json(json.loads(json.dumps(circuit.to_json())))
    assert back.units() == circuit.units() and back.units_kept == 7 and back.total_units == 28
    assert [k.tolist() for k in back.keep] == [k.tolist() for k in circuit.keep]
    for a, b in zip(back.log_alpha, circuit.log_alpha):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-5)
    assert (back.label, back.strength, back.kinds, back.names, back.losses) == (3, 2.0, circuit.kinds,
                                                                                 circuit.names, [0.25])


def test_path_use_ranks_path_units_first_and_every_other_unit_alike():
    from captum_paths.evaluation.circuits import _global_keep, _path_use

    widths = [4, 10, 4, 10]  # heads, neurons, heads, neurons; paths index circuit layers 1 and 3
    paths = torch.tensor([[[2], [7]], [[2], [1]], [[5], [-1]]])  # (3 images, 2 layers, k=1)
    contributions = torch.tensor([[[0.3], [-0.2]], [[0.1], [0.4]], [[0.05], [0.0]]])
    scores = _path_use(paths, widths, [1, 3], contributions)
    assert scores[1][2] == pytest.approx(2 + 0.5 * torch.sigmoid(torch.tensor(0.4, dtype=torch.float64)))
    assert scores[1][5] == pytest.approx(1 + 0.5 * torch.sigmoid(torch.tensor(0.05, dtype=torch.float64)))
    assert scores[3][7] == pytest.approx(1 + 0.5 * torch.sigmoid(torch.tensor(-0.2, dtype=torch.float64)))
    used = {(1, 2), (1, 5), (3, 7), (3, 1)}
    for layer, s in enumerate(scores):
        for unit, value in enumerate(s.tolist()):
            assert (value > 0) == ((layer, unit) in used)  # unused neurons and heads alike: 0
    # a budget past the path units fills with the others in a seeded random order, heads not last
    keeps = [_global_keep(scores, 10, seed) for seed in range(40)]
    assert all(all(bool(k[l][u]) for l, u in used) for k in keeps)
    heads_kept = sum(int(k[0].sum() + k[2].sum()) for k in keeps) / 40
    assert heads_kept == pytest.approx(6 * 8 / 24, abs=0.6)  # 6 of the 24 other units are drawn, 8 are heads
