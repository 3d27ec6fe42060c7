"""Interventions: exact identities against plain hooks and edited weights, pruning, hygiene."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from captum_paths import NeuronSites, PathResult
from captum_paths.demo import load_demo_data, load_demo_model
from captum_paths.evaluation.interventions import enhance_neurons, prune_neurons, remove_neurons, scale_neurons
from _literal import module_outputs
from _models import tiny_vit as _tiny_vit


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny():
    model = _tiny_vit()
    torch.manual_seed(1)
    return model, torch.randn(4, 3, 16, 16)


@pytest.fixture(scope="module")
def demo():
    x, _ = load_demo_data("test")
    return load_demo_model(), x[:5]


def _logits(model, x):
    with torch.no_grad():
        return model(x)


def _random_paths(batch, L, k, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.stack([torch.randperm(width, generator=g)[:k] for _ in range(L)]) for _ in range(batch)])


def _no_hooks(model: nn.Module) -> bool:
    return all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def _full_site_outputs(model, x):
    """Outputs of every ``blocks[l].mlp.act`` over all tokens, seen after any edit hooks."""
    return module_outputs(model, [blk.mlp.act for blk in model.blocks], x)


# ------------------------------------------------------------------------- identities
@pytest.mark.parametrize("tokens", ["cls", "all", "patches"])
def test_factor_one_changes_nothing_bitwise(tiny, tokens):
    model, x = tiny
    sites = NeuronSites.from_model(model, tokens=tokens)
    clean = _logits(model, x)
    paths = _random_paths(4, 3, 5, sites.width)
    for neurons in ([(0, 1), (2, 7), (1, 63)], paths, PathResult(paths, torch.zeros(4, 3, 5), torch.zeros(4), torch.zeros(4, dtype=torch.long), "x")):
        with scale_neurons(sites, neurons, 1.0):
            assert torch.equal(_logits(model, x), clean)
        with enhance_neurons(sites, neurons, factor=1):
            assert torch.equal(_logits(model, x), clean)
    assert _no_hooks(model)


def test_removing_neurons_with_zero_activation_changes_nothing():
    """A ReLU FFN has exact zeros; removing those neurons must not change a bit."""
    model = _tiny_vit(seed=3, act_layer=nn.ReLU)
    torch.manual_seed(4)
    x = torch.randn(3, 3, 16, 16)
    sites = NeuronSites.from_model(model)
    with sites.record() as acts:
        clean = _logits(model, x)
    # neurons that are exactly zero at the CLS token for every image
    neurons = [(l, int(j)) for l in range(3) for j in (acts[l][:, 0] == 0).all(0).nonzero()[:, 0]]
    assert len(neurons) >= 3 and {l for l, _ in neurons} == {0, 1, 2}
    with remove_neurons(sites, neurons):
        assert torch.equal(_logits(model, x), clean)
    # per-example: each image's own zero neurons (k per layer)
    k = 2
    per_image = torch.stack([
        torch.stack([(acts[l][i, 0] == 0).nonzero()[:k, 0] for l in range(3)]) for i in range(3)
    ])
    with remove_neurons(sites, per_image):
        assert torch.equal(_logits(model, x), clean)
    # and removing a non-zero neuron does change the output
    active = [(l, int(acts[l][:, 0].abs().sum(0).argmax())) for l in range(3)]
    with remove_neurons(sites, active):
        assert not torch.equal(_logits(model, x), clean)


def _zero_fc2_columns(model, neurons):
    edited = copy.deepcopy(model)
    with torch.no_grad():
        for l, j in neurons:
            edited.blocks[l].mlp.fc2.weight[:, j] = 0.0
    return edited


@pytest.mark.parametrize("which", ["tiny", "demo"])
def test_removal_with_all_tokens_equals_zeroed_fc2_columns(which, tiny, demo):
    model, x = tiny if which == "tiny" else demo
    sites = NeuronSites.from_model(model, tokens="all")
    neurons = [(0, 3), (0, 10), (1, 20), (2, 5)]
    edited = _zero_fc2_columns(model, neurons)
    with remove_neurons(sites, neurons):
        removed = _logits(model, x)
    torch.testing.assert_close(removed, _logits(edited, x), rtol=0, atol=1e-6)
    assert not torch.allclose(removed, _logits(model, x), atol=1e-6)


def test_removal_at_cls_equals_manual_hook_zeroing_the_cls_row(tiny):
    model, x = tiny
    sites = NeuronSites.from_model(model)  # CLS token
    paths = _random_paths(4, 3, 2, sites.width, seed=5)
    handles = []
    for l, blk in enumerate(model.blocks):
        def hook(m, a, out, l=l):
            out = out.clone()
            for i in range(out.shape[0]):
                out[i, 0, paths[i, l]] = 0.0
            return out
        handles.append(blk.mlp.act.register_forward_hook(hook))
    try:
        expected = _logits(model, x)
    finally:
        for h in handles:
            h.remove()
    with remove_neurons(sites, paths):
        assert torch.equal(_logits(model, x), expected)


def test_scaled_activations_are_what_the_next_layer_sees(tiny):
    model, x = tiny
    sites = NeuronSites.from_model(model)
    clean = _full_site_outputs(model, x)
    neurons = [(0, 4), (2, 9)]
    with scale_neurons(sites, neurons, -0.5):
        seen = _full_site_outputs(model, x)
    assert torch.equal(seen[0][:, 0, 4], clean[0][:, 0, 4] * -0.5)
    assert torch.equal(seen[0][:, 1:], clean[0][:, 1:])  # other tokens untouched
    others = torch.ones(sites.width, dtype=torch.bool)
    others[4] = False
    assert torch.equal(seen[0][:, 0, others], clean[0][:, 0, others])
    assert not torch.equal(seen[1], clean[1])  # layer 1 responds to the change in layer 0
    with scale_neurons(sites, [(2, 9)], -0.5):
        last = _full_site_outputs(model, x)
    assert torch.equal(last[2][:, 0, 9], clean[2][:, 0, 9] * -0.5)
    assert torch.equal(last[0], clean[0]) and torch.equal(last[1], clean[1])


def test_per_example_sets_equal_one_example_at_a_time(tiny):
    model, x = tiny
    sites = NeuronSites.from_model(model)
    paths = _random_paths(4, 3, 3, sites.width, seed=7)
    for scale in (0.0, 2.0):
        with scale_neurons(sites, paths, scale):
            batched = _logits(model, x)
        singles = []
        for i in range(4):
            with scale_neurons(sites, paths[i:i + 1], scale):
                singles.append(_logits(model, x[i:i + 1]))
        torch.testing.assert_close(batched, torch.cat(singles), rtol=0, atol=1e-6)
        # the same sets given as one list of (layer, neuron) pairs per example
        lists = [[(l, int(j)) for l in range(3) for j in paths[i, l]] for i in range(4)]
        with scale_neurons(sites, lists, scale):
            assert torch.equal(_logits(model, x), batched)


def test_shared_set_works_for_any_batch_and_equals_repeated_per_example_sets(tiny):
    model, x = tiny
    sites = NeuronSites.from_model(model)
    neurons = [(0, 1), (1, 2), (2, 3)]
    repeated = torch.tensor([[[1], [2], [3]]]).expand(4, 3, 1)
    with remove_neurons(sites, repeated):
        expected = _logits(model, x)
    with remove_neurons(sites, neurons):
        assert torch.equal(_logits(model, x), expected)
        torch.testing.assert_close(_logits(model, x[:1]), expected[:1], rtol=0, atol=1e-6)


def test_per_example_batch_mismatch_raises_and_cleans_up(tiny):
    model, x = tiny
    sites = NeuronSites.from_model(model)
    paths = _random_paths(4, 3, 1, sites.width)
    with pytest.raises(ValueError, match="per-example sets for 4 examples.*batch of 2"):
        with remove_neurons(sites, paths):
            _logits(model, x[:2])
    assert _no_hooks(model)


def test_sites_without_known_width_are_parsed_at_the_first_forward(tiny):
    model, x = tiny
    names = [f"blocks.{l}.mlp.act" for l in range(3)]
    sites = NeuronSites.from_names(model, names)
    assert sites.width is None
    neurons = [(0, 3), (2, 60)]
    with remove_neurons(NeuronSites.from_model(model), neurons):
        expected = _logits(model, x)
    with remove_neurons(sites, neurons):
        assert torch.equal(_logits(model, x), expected)
    with pytest.raises(ValueError, match="out of range"):
        with remove_neurons(sites, [(0, 64)]):
            _logits(model, x)
    assert _no_hooks(model)


def test_model_is_accepted_in_place_of_sites(tiny):
    model, x = tiny
    with remove_neurons(NeuronSites.from_model(model), [(1, 5)]):
        expected = _logits(model, x)
    with remove_neurons(model, [(1, 5)]):
        assert torch.equal(_logits(model, x), expected)


# ---------------------------------------------------------------------------- pruning
def test_pruning_with_p_zero_or_keeping_everything_changes_nothing(tiny):
    model, x = tiny
    sites = NeuronSites.from_model(model)
    clean = _logits(model, x)
    with prune_neurons(sites, keep={}, p=0.0, depth=3) as zeroed:
        assert torch.equal(_logits(model, x), clean)
    assert all(not z.any() for z in zeroed.values())
    everything = torch.arange(sites.width).expand(3, -1)
    with prune_neurons(sites, keep=everything, p=1.0, depth=3):
        assert torch.equal(_logits(model, x), clean)
    assert _no_hooks(model)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_pruning_everything_zeroes_the_selected_tokens_of_the_first_depth_layers(tiny, depth):
    model, x = tiny
    sites = NeuronSites.from_model(model)
    clean = _full_site_outputs(model, x)
    with prune_neurons(sites, keep={}, p=1.0, depth=depth) as zeroed:
        seen = _full_site_outputs(model, x)
    assert sorted(zeroed) == list(range(depth)) and all(z.all() for z in zeroed.values())
    for l in range(3):
        if l < depth:
            assert torch.equal(seen[l][:, 0], torch.zeros_like(seen[l][:, 0]))
        else:
            assert seen[l][:, 0].abs().sum() > 0
    assert torch.equal(seen[0][:, 1:], clean[0][:, 1:])  # patch tokens are not pruned


def test_pruning_mask_is_seeded_nested_in_p_and_spares_the_kept_neurons(tiny):
    model, x = tiny
    sites = NeuronSites.from_model(model)
    keep = torch.tensor([[0, 1], [2, 3], [4, 5]])
    with prune_neurons(sites, keep, p=0.5, depth=3, seed=11) as a:
        out_a = _logits(model, x)
        out_a2 = _logits(model, x)  # the mask is drawn once per context
    with prune_neurons(sites, keep, p=0.5, depth=3, seed=11) as b:
        out_b = _logits(model, x)
    with prune_neurons(sites, keep, p=0.5, depth=3, seed=12) as c:
        pass
    with prune_neurons(sites, keep, p=0.8, depth=3, seed=11) as d:
        pass
    assert torch.equal(out_a, out_b) and torch.equal(out_a, out_a2)
    assert all(torch.equal(a[l], b[l]) for l in range(3))
    assert any(not torch.equal(a[l], c[l]) for l in range(3))
    for l in range(3):
        assert not a[l][keep[l]].any()
        assert not (a[l] & ~d[l]).any()  # larger p zeroes a superset
        assert 0.3 < a[l].float().mean() < 0.7
    # every image sees the same pruned model: a batch equals its images one by one
    with prune_neurons(sites, keep, p=0.5, depth=3, seed=11):
        singles = torch.cat([_logits(model, x[i:i + 1]) for i in range(4)])
    torch.testing.assert_close(singles, out_a, rtol=0, atol=1e-6)
    # a list of per-layer index lists is the same keep set
    with prune_neurons(sites, keep.tolist(), p=0.5, depth=3, seed=11):
        assert torch.equal(_logits(model, x), out_a)


def test_pruning_equals_a_manual_hook_with_the_drawn_mask(tiny):
    model, x = tiny
    sites = NeuronSites.from_model(model)
    with prune_neurons(sites, [[1], [2], [3]], p=0.5, depth=2, seed=3) as zeroed:
        pruned = _logits(model, x)
    handles = []
    for l in range(2):
        def hook(m, a, out, l=l):
            out = out.clone()
            out[:, 0, zeroed[l]] = 0.0
            return out
        handles.append(model.blocks[l].mlp.act.register_forward_hook(hook))
    try:
        assert torch.equal(_logits(model, x), pruned)
    finally:
        for h in handles:
            h.remove()


# ------------------------------------------------------------------------------ errors
@pytest.mark.parametrize(
    "kwargs, exc, words",
    [
        (dict(keep={}, p=1.5, depth=1), ValueError, "p must be a probability in \\[0, 1\\]; got 1.5"),
        (dict(keep={}, p=-0.1, depth=1), ValueError, "p must be"),
        (dict(keep={}, p=0.5, depth=0), ValueError, "depth must be an int in 1..3"),
        (dict(keep={}, p=0.5, depth=4), ValueError, "depth must be an int in 1..3"),
        (dict(keep=[[1], [2]], p=0.5, depth=1), ValueError, "one list of neuron indices per layer \\(3\\)"),
        (dict(keep={0: [64]}, p=0.5, depth=1), ValueError, "neuron index 64 \\(layer 0\\) is out of range"),
        (dict(keep={5: [1]}, p=0.5, depth=1), ValueError, "layer key 5"),
        (dict(keep=torch.zeros(2, 1, dtype=torch.long), p=0.5, depth=1), ValueError, "shape \\(L, k\\)"),
        (dict(keep=torch.zeros(3, 1), p=0.5, depth=1), TypeError, "integer neuron indices"),
        (dict(keep="abc", p=0.5, depth=1), TypeError, "keep must be"),
        (dict(keep={}, p=0.5, depth=1, seed=1.5), TypeError, "seed must be an int"),
    ],
)
def test_pruning_arguments_are_validated(tiny, kwargs, exc, words):
    model, _ = tiny
    with pytest.raises(exc, match=words):
        with prune_neurons(NeuronSites.from_model(model), **kwargs):
            pass
    assert _no_hooks(model)


@pytest.mark.parametrize(
    "neurons, scale, exc, words",
    [
        ([(0, 1)], float("nan"), ValueError, "scale must be finite"),
        ([(0, 1)], True, TypeError, "scale must be a real number"),
        ([(0, 1)], "2", TypeError, "scale must be a real number"),
        ([(3, 1)], 0.0, ValueError, "layer index 3"),
        ([(0, 64)], 0.0, ValueError, "neuron index 64"),
        ([], 0.0, ValueError, "neurons is empty"),
        ("abc", 0.0, TypeError, "neurons must be"),
        (torch.zeros(2, 2, 1, dtype=torch.long), 0.0, ValueError, "shape \\(batch, L, k\\)"),
        (torch.zeros(2, 3), 0.0, ValueError, "shape \\(batch, L, k\\)"),
    ],
)
def test_scale_arguments_are_validated(tiny, neurons, scale, exc, words):
    model, _ = tiny
    with pytest.raises(exc, match=words):
        with scale_neurons(NeuronSites.from_model(model), neurons, scale):
            pass
    assert _no_hooks(model)


def test_factor_is_validated(tiny):
    model, _ = tiny
    with pytest.raises(ValueError, match="factor must be finite"):
        enhance_neurons(NeuronSites.from_model(model), [(0, 1)], factor=float("inf"))


# ----------------------------------------------------------------------------- hygiene
@pytest.mark.parametrize("which", ["scale", "prune"])
def test_cleanup_after_an_exception_inside_the_context(tiny, which):
    model, x = tiny
    sites = NeuronSites.from_model(model)
    clean = _logits(model, x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    ctx = (
        remove_neurons(sites, _random_paths(4, 3, 2, sites.width))
        if which == "scale" else prune_neurons(sites, {}, p=1.0, depth=3)
    )
    with pytest.raises(RuntimeError, match="boom"):
        with ctx:
            assert not torch.equal(_logits(model, x), clean)
            raise RuntimeError("boom")
    assert _no_hooks(model)
    assert torch.equal(_logits(model, x), clean)
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())
