"""The evaluation room under neuron baselines, against literal hooks written here.

Every removal, enhancement, pruning and ablation with ``layer_baselines=`` is checked
against forward hooks registered by hand on the site modules (``blocks[l].mlp.act`` of the
demo model, ``blocks[l].attn.proj``'s input for heads of a tiny random-weight ViT) that
write the chosen units' baseline values into the activation; the removal row of
``probability_deviation`` against JIG's joint score with the same baseline; the zero
baseline against no baseline, bit for bit; the faithfulness curves' mean ablation against
the previous implementation, written out literally.
"""
from __future__ import annotations

import copy

import pandas as pd
import pytest
import torch

from captum_paths import JointNeuronIntegratedGradients, NeuronSites
from captum_paths.attribution.layer_baselines import (
    ABLATIONS,
    CounterfactualBaseline,
    LayerBaseline,
    MeanBaseline,
    SiteBaseline,
    ZeroBaseline,
)
from captum_paths.demo import load_demo_data, load_demo_model
from captum_paths.evaluation import (
    class_consensus,
    jas_comparison,
    probability_deviation,
    pruning_study,
    split_by_class,
)
from captum_paths.evaluation import faithfulness
from captum_paths.evaluation.faithfulness import faithfulness_study, keep_units, random_ranking, unit_means, unit_ranking
from captum_paths.evaluation.interventions import enhance_neurons, prune_neurons, remove_neurons, scale_neurons
from captum_paths.search import create_path_method
from _literal import logits_with_outputs_replaced, module_outputs
from _models import tiny_vit

CLS = slice(0, 1)  # the demo model's sites read the class token


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def demo():
    torch.manual_seed(0)
    model = load_demo_model()
    images, labels = load_demo_data("test")
    pick = torch.cat([torch.nonzero(labels == c).flatten()[:4] for c in range(3)])  # 12 images, 3 classes
    others = torch.cat([torch.nonzero(labels == c).flatten()[4:9] for c in range(3, 8)])  # disjoint
    g = torch.Generator().manual_seed(0)
    reference = images[others[torch.randperm(others.numel(), generator=g)[:20]]]
    counterfactual = images[others[torch.randperm(others.numel(), generator=g)[:12]]]
    return model, images[pick], labels[pick], reference, counterfactual


def _random_paths(n, L, k, width, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.stack([torch.stack([torch.randperm(width, generator=g)[:k] for _ in range(L)]) for _ in range(n)])


def _record_literal(model, images, tokens=CLS):
    """``{layer: (batch, positions, d_ff)}`` of every block's ``mlp.act`` at ``tokens``, one forward."""
    outputs = module_outputs(model, [block.mlp.act for block in model.blocks], images)
    return {l: out[:, tokens] for l, out in outputs.items()}


def _literal_means(model, reference, tokens=CLS):
    """The reference means of every site, float64 sums over the images, in the sites' dtype."""
    acts = _record_literal(model, reference, tokens)
    return {l: (a.double().sum(0) / reference.shape[0]).to(a.dtype) for l, a in acts.items()}


def _literal_probs(model, images, edit, tokens=CLS):
    """Softmax (float64) with every block's ``mlp.act`` at ``tokens`` replaced by ``edit(layer, act)``."""
    def replaced(layer):
        def fn(out):
            out = out.clone()
            out[:, tokens] = edit(layer, out[:, tokens])
            return out
        return fn

    modules = [block.mlp.act for block in model.blocks]
    replace = {l: replaced(l) for l in range(len(modules))}
    return logits_with_outputs_replaced(model, modules, images, replace).double().softmax(1)


def _masks(paths, L, width):
    """Per layer ``(batch, width)`` bool masks of a ``(batch, L, k)`` path tensor."""
    out = []
    for l in range(L):
        m = torch.zeros(paths.shape[0], width, dtype=torch.bool)
        m.scatter_(1, paths[:, l], True)
        out.append(m)
    return out


def _replace(masks, values):
    """A literal edit: units of ``masks[l]`` ``(rows, width)`` take ``values[l]`` (broadcastable)."""
    def edit(layer, act):
        return torch.where(masks[layer][:, None, :], values[layer].to(act.dtype).expand_as(act), act)
    return edit


def _probs(model, images, context):
    with torch.no_grad(), context:
        return model(images).double().softmax(1)


# --------------------------------------------------------------------- interventions
def test_remove_with_a_mean_baseline_is_the_literal_hook(demo):
    model, images, _, reference, _ = demo
    sites = NeuronSites.from_model(model)
    means = _literal_means(model, reference)
    paths = _random_paths(images.shape[0], 6, 3, 256, seed=1)
    expected = _literal_probs(model, images, _replace(_masks(paths, 6, 256), means))
    got = _probs(model, images, remove_neurons(sites, paths, layer_baselines=MeanBaseline(reference)))
    assert torch.equal(got, expected)
    # a shared set of pairs, and the means a MeanBaseline computes
    pairs = [(0, 5), (2, 100), (2, 7), (5, 255)]
    shared = [torch.zeros(1, 256, dtype=torch.bool) for _ in range(6)]
    for l, n in pairs:
        shared[l][0, n] = True
    baseline = MeanBaseline(reference)  # one batch of 20, as the literal means
    got = _probs(model, images, remove_neurons(sites, pairs, layer_baselines=baseline))
    assert torch.equal(got, _literal_probs(model, images, _replace(shared, means)))
    assert all(torch.equal(baseline.means(sites, model)[l], means[l]) for l in range(6))
    # batches of 7: float64 sums in another order, the same means to float32 rounding
    batched = MeanBaseline(reference, batch_size=7).means(sites, model)
    assert all(torch.allclose(batched[l], means[l], rtol=1e-6, atol=1e-7) for l in range(6))
    # the values differ from zero ablation (the test sees the baseline at all)
    zeroed = _probs(model, images, remove_neurons(sites, pairs))
    assert not torch.allclose(zeroed, got)


def test_remove_with_a_counterfactual_is_literal_activation_patching(demo):
    model, images, _, _, counterfactual = demo
    sites = NeuronSites.from_model(model)
    patched = _record_literal(model, counterfactual)  # (12, 1, 256) per site
    paths = _random_paths(images.shape[0], 6, 4, 256, seed=2)
    masks = _masks(paths, 6, 256)
    expected = _literal_probs(model, images, _replace(masks, patched))
    got = _probs(model, images, remove_neurons(sites, paths, layer_baselines=CounterfactualBaseline(counterfactual)))
    assert torch.equal(got, expected)
    # one counterfactual for every image
    one = counterfactual[3:4]
    expected = _literal_probs(model, images, _replace(masks, _record_literal(model, one)))
    got = _probs(model, images, remove_neurons(sites, paths, layer_baselines=CounterfactualBaseline(one)))
    assert torch.equal(got, expected)


@pytest.mark.parametrize("form", ["units", "positions_units", "per_image", "list", "site_baseline"])
def test_remove_with_given_values_is_the_literal_hook(demo, form):
    model, images, _, _, _ = demo
    sites = NeuronSites.from_model(model)
    g = torch.Generator().manual_seed(3)
    pairs = [(1, 3), (1, 4), (4, 200)]
    masks = [torch.zeros(1, 256, dtype=torch.bool) for _ in range(6)]
    for l, n in pairs:
        masks[l][0, n] = True
    if form == "per_image":
        values = {1: torch.randn(12, 1, 256, generator=g), 4: torch.randn(12, 1, 256, generator=g)}
    else:
        values = {1: torch.randn(256, generator=g), 4: torch.randn(256, generator=g)}
        if form != "units":
            values = {l: v[None] for l, v in values.items()}  # (positions, units)
    literal = {l: values.get(l, torch.zeros(1, 1, 256)).reshape(-1, 1, 256) for l in range(6)}
    expected = _literal_probs(model, images, _replace(masks, literal))
    given = {"list": [None, values[1], None, None, values[4], None], "site_baseline": SiteBaseline(values)}.get(
        form, values)
    got = _probs(model, images, remove_neurons(sites, pairs, layer_baselines=given))
    assert torch.equal(got, expected)


def test_scale_and_enhance_move_away_from_the_baseline(demo):
    """``a' = s a + (1 - s) b``: 2 enhances the departure from the mean, 1 is the model, 0 the mean."""
    model, images, _, reference, _ = demo
    sites = NeuronSites.from_model(model)
    means = _literal_means(model, reference)
    paths = _random_paths(images.shape[0], 6, 2, 256, seed=4)
    masks = _masks(paths, 6, 256)
    baseline = MeanBaseline(reference)
    for s in (2.0, -0.5, 0.5):
        def edit(layer, act, s=s):
            return torch.where(masks[layer][:, None, :], act * s + means[layer] * (1.0 - s), act)
        expected = _literal_probs(model, images, edit)
        got = _probs(model, images, scale_neurons(sites, paths, s, layer_baselines=baseline))
        assert torch.equal(got, expected)
    enhanced = _probs(model, images, enhance_neurons(sites, paths, 2.0, layer_baselines=baseline))
    assert torch.equal(enhanced, _probs(model, images, scale_neurons(sites, paths, 2.0, layer_baselines=baseline)))
    assert torch.equal(_probs(model, images, scale_neurons(sites, paths, 1.0, layer_baselines=baseline)),
                       _literal_probs(model, images, lambda l, a: a))


def test_prune_with_a_mean_baseline_is_the_literal_hook(demo):
    model, images, _, reference, _ = demo
    sites = NeuronSites.from_model(model)
    means = _literal_means(model, reference)
    keep = {0: [1, 2], 3: [9]}
    with torch.no_grad(), prune_neurons(sites, keep, 0.5, 4, seed=7, layer_baselines=MeanBaseline(reference)) as drop:
        got = model(images).double().softmax(1)
    # the mask is the zero pruning's mask: drawn the same way, literally
    generator = torch.Generator().manual_seed(7)
    u = torch.rand(4, 256, generator=generator, dtype=torch.float64)
    masks = []
    for l in range(6):
        m = (u[l] < 0.5) if l < 4 else torch.zeros(256, dtype=torch.bool)
        m[keep.get(l, [])] = False
        masks.append(m[None])
        assert l >= 4 or torch.equal(drop[l], m)
    assert torch.equal(got, _literal_probs(model, images, _replace(masks, means)))


def test_heads_of_a_tiny_random_model_take_their_means():
    """Head ``h`` of ``blocks[l].attn.proj``'s input: its 16 channels at the class token."""
    model = tiny_vit(seed=5)
    torch.manual_seed(5)
    x, reference = torch.randn(4, 3, 16, 16), torch.randn(9, 3, 16, 16)
    sites = NeuronSites.heads_from_model(model)
    seen = {}
    handles = [b.attn.proj.register_forward_pre_hook(lambda _m, args, l=l: seen.__setitem__(l, args[0][:, 0]))
               for l, b in enumerate(model.blocks)]
    with torch.no_grad():
        model(reference)
    for h in handles:
        h.remove()
    means = {l: (v.double().sum(0) / 9).float() for l, v in seen.items()}  # (channels,)
    removed = [(0, 1), (2, 0)]

    def pre(_m, args, l):
        inp = args[0].clone()
        for layer, head in removed:
            if layer == l:
                inp[:, 0, head * 16:(head + 1) * 16] = means[l][head * 16:(head + 1) * 16]
        return (inp,) + tuple(args[1:])

    handles = [b.attn.proj.register_forward_pre_hook(lambda m, a, l=l: pre(m, a, l)) for l, b in enumerate(model.blocks)]
    try:
        with torch.no_grad():
            expected = model(x)
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad(), remove_neurons(sites, removed, layer_baselines=MeanBaseline(reference)):
        got = model(x)
    assert torch.equal(got, expected)


def test_the_zero_baseline_is_bit_identical_to_no_baseline(demo):
    model, images, labels, _, _ = demo
    sites = NeuronSites.from_model(model)
    paths = _random_paths(images.shape[0], 6, 3, 256, seed=5)
    for zero in (ZeroBaseline(), 0, 0.0):
        for make in (lambda b: remove_neurons(sites, paths, layer_baselines=b),
                     lambda b: scale_neurons(sites, paths, 1.5, layer_baselines=b),
                     lambda b: enhance_neurons(sites, paths, 2.0, layer_baselines=b),
                     lambda b: prune_neurons(sites, {0: [1]}, 0.5, 3, seed=1, layer_baselines=b),
                     lambda b: keep_units(sites, [torch.rand(256) < 0.5 for _ in range(6)], layer_baselines=b)):
            torch.manual_seed(0)
            plain = _probs(model, images, make(None))
            torch.manual_seed(0)
            assert torch.equal(_probs(model, images, make(zero)), plain)
    paths_by_method = {"random": paths}
    for study in (lambda b: probability_deviation(model, images, labels, paths_by_method, batch_size=5,
                                                  layer_baselines=b),
                  lambda b: jas_comparison(model, images, labels, paths_by_method, batch_size=5, layer_baselines=b)):
        plain = study(None)
        again = study(ZeroBaseline())
        pd.testing.assert_frame_equal(plain, again, check_exact=True)
        assert set(plain["ablation"]) == {"zero"} and plain.attrs["layer_baselines"] == {"ablation": "zero"}


# -------------------------------------------------------------------------- harness
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_the_removal_row_is_the_joint_score_under_the_same_baseline(demo, dtype):
    """In float64 the two agree to 1e-12; in float32 JIG's probabilities carry float32 rounding
    (an ulp of p = 0.93 is 6e-8), so to a few 1e-7."""
    model, images, labels, reference, counterfactual = demo
    model = copy.deepcopy(model).to(dtype)
    images, reference, counterfactual = images.to(dtype), reference.to(dtype), counterfactual.to(dtype)
    tolerance = 1e-12 if dtype == torch.float64 else 5e-7
    sites = NeuronSites.from_model(model)
    paths = _random_paths(images.shape[0], 6, 2, 256, seed=6)
    jig = JointNeuronIntegratedGradients(model, sites=sites)
    for baseline in (MeanBaseline(reference), CounterfactualBaseline(counterfactual)):
        df = probability_deviation(model, images, labels, {"random": paths}, batch_size=5, layer_baselines=baseline)
        assert set(df["ablation"]) == {baseline.name} and df.attrs["layer_baselines"] == baseline.settings()
        removed = df[df.operation == "remove"].sort_values("image")
        _, jas = jig.attribute(images, paths, target=labels, n_steps=4, layer_baselines=baseline, return_jas=True)
        assert (removed.p_before - removed.p_after).to_numpy() == pytest.approx(jas.double().numpy(), abs=tolerance)
        assert float(jas.abs().max()) > 1e-3  # the paths matter at all
        gate = jas_comparison(model, images, labels, {"random": paths}, modes=("gate",), batch_size=5,
                              layer_baselines=baseline)
        assert gate["jas"].to_numpy() == pytest.approx(jas.double().numpy(), abs=tolerance)
        assert set(gate["ablation"]) == {baseline.name}
        # the enhance row: every path unit at b + 2 (a - b), literally
        values = (_literal_means(model, reference) if baseline.name == "mean"
                  else _record_literal(model, counterfactual))
        masks = _masks(paths, 6, 256)

        def edit(layer, act):
            return torch.where(masks[layer][:, None, :], act * 2.0 + values[layer] * (1.0 - 2.0), act)
        enhanced = _literal_probs(model, images, edit)[torch.arange(12), labels]
        got = df[df.operation == "enhance"].sort_values("image")["p_after"].to_numpy()
        assert got == pytest.approx(enhanced.numpy(), abs=1e-12)


def test_pruning_under_a_mean_baseline_is_the_literal_hook(demo):
    model, images, labels, reference, _ = demo
    sites = NeuronSites.from_model(model)
    baseline = MeanBaseline(reference)
    df = pruning_study(model, images, labels, ks=(2,), ps=(0.5, 1.0), depths=(4,), n_steps=4, seed=3,
                       batch_size=5, layer_baselines=baseline)
    assert set(df["ablation"]) == {"mean"} and df.attrs["layer_baselines"] == baseline.settings()
    split = df.attrs["split"]
    # the consensus paths come from a search under the same baseline
    consensus_idx = torch.tensor([i for s in split.values() for i in s["consensus"]])
    search = create_path_method("neuron-path", model, sites=sites)
    found = torch.cat([search.attribute(images[part], target=labels[part], k=2, n_steps=4, mode="gate",
                                        layer_baselines=baseline).paths for part in consensus_idx.split(5)])
    consensus = class_consensus(found, labels[consensus_idx], 2)
    assert {label: c.tolist() for label, c in consensus.items()} == df.attrs["consensus"][2]
    means = _literal_means(model, reference)
    for row in df.itertuples():
        keep = consensus[row.label]
        u = torch.rand(4, 256, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        masks = []
        for l in range(6):
            m = (u[l] < row.p) if l < 4 else torch.zeros(256, dtype=torch.bool)
            m[keep[l]] = False
            masks.append(m[None])
        held = torch.tensor(split[row.label]["evaluation"])
        probs = _literal_probs(model, images[held], _replace(masks, means))
        assert row.mean_prob == pytest.approx(float(probs[:, row.label].mean()), abs=1e-12)


# ---------------------------------------------------------------------- faithfulness
def _old_unit_means(model, sites, images, batch_size=64):
    """The implementation before neuron baselines, verbatim."""
    sums = {}
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            with sites.record() as acts:
                model(images[start:start + batch_size])
            for layer, act in acts.items():
                part = act.double().sum(dim=0)
                sums[layer] = part if layer not in sums else sums[layer] + part
    return [(sums[layer] / images.shape[0]).float() for layer in range(sites.num_layers)]


@pytest.fixture(scope="module")
def paths_of_demo(demo):
    model, images, labels, _, _ = demo
    g = torch.Generator().manual_seed(8)
    contributions = torch.rand(images.shape[0], 6, 3, generator=g)
    return _random_paths(images.shape[0], 6, 3, 256, seed=8), contributions


def test_unit_means_are_the_mean_baseline_and_the_old_numbers(demo):
    model, images, _, reference, _ = demo
    sites = NeuronSites.from_model(model)
    for batch_size in (64, 6):
        old = _old_unit_means(model, sites, reference, batch_size)
        new = unit_means(model, sites, reference, batch_size)
        assert all(torch.equal(a, b) for a, b in zip(old, new))
        means = MeanBaseline(reference, batch_size=batch_size).means(sites, model)
        assert all(torch.equal(means[l], new[l]) for l in range(6))
    assert faithfulness.ABLATIONS is ABLATIONS and "ABLATIONS" in faithfulness.__all__


@pytest.mark.parametrize("tokens", ["all", "selected"])
def test_faithfulness_mean_ablation_keeps_its_numbers(demo, paths_of_demo, tokens):
    """The old study's mean ablation written out: old means over the ranking images, every
    config's masks config-major in one batch, literal hooks; the same numbers exactly."""
    model, images, labels, _, _ = demo
    paths, contributions = paths_of_demo
    ns = [0, 2, 256]
    df = faithfulness_study(model, images, labels, {"random paths": (paths, contributions)}, ns=ns,
                            ablations=["mean"], tokens=tokens, seed=0, batch_size=64)
    assert set(df["ablation"]) == {"mean"}
    rows = slice(None) if tokens == "all" else CLS
    sites = NeuronSites.from_model(model, tokens="all" if tokens == "all" else None)
    split = split_by_class(labels, 0.5, 0)
    rank_idx = torch.tensor(sorted(i for s in split.values() for i in s["consensus"]))
    old_means = _old_unit_means(model, sites, images[rank_idx], 64)
    for label, parts in split.items():
        ranked, held = torch.tensor(parts["consensus"]), torch.tensor(parts["evaluation"])
        rankings = {"random paths": unit_ranking(paths[ranked], sites, contributions[ranked], seed=0),
                    "random ranking": random_ranking(sites, 0 + label)}
        configs = [(name, n) for name in rankings for n in ns]
        n_img = held.numel()
        masks = []
        for l in range(6):
            m = torch.zeros(len(configs), 256, dtype=torch.bool)
            for c, (name, n) in enumerate(configs):
                m[c, rankings[name][l][:min(n, 256)]] = True
            masks.append(m.repeat_interleave(n_img, dim=0))
        x = images[held][torch.arange(len(configs) * n_img) % n_img]
        probs = _literal_probs(model, x, lambda l, act: torch.where(masks[l][:, None, :], act,
                                                                   old_means[l].to(act.dtype)[None]), rows)
        for (name, n), p in zip(configs, probs.split(n_img)):
            got = df[(df.method == name) & (df.label == label) & (df.n == n)]["mean_prob"].item()
            assert got == float(p[:, label].mean())


def test_faithfulness_takes_other_baselines(demo, paths_of_demo):
    model, images, labels, reference, counterfactual = demo
    paths, contributions = paths_of_demo
    given = {"random paths": (paths, contributions)}
    common = dict(ns=[0, 256], tokens="selected", seed=0, random_control=False)
    default = faithfulness_study(model, images, labels, given, ablations=["mean"], **common)
    split = split_by_class(labels, 0.5, 0)
    rank_idx = torch.tensor(sorted(i for s in split.values() for i in s["consensus"]))
    # a MeanBaseline of the ranking images is the default mean ablation
    same = faithfulness_study(model, images, labels, given, ablations=["mean"],
                              layer_baselines=MeanBaseline(images[rank_idx], batch_size=64), **common)
    pd.testing.assert_frame_equal(default, same, check_exact=True)
    # another reference replaces it; a counterfactual per image adds its own rows
    other = faithfulness_study(model, images, labels, given, ablations=["mean"],
                               layer_baselines=MeanBaseline(reference), **common)
    assert not other["mean_prob"].equals(default["mean_prob"])
    df = faithfulness_study(model, images, labels, given, ablations=["zero"],
                            layer_baselines=CounterfactualBaseline(counterfactual), **common)
    assert list(dict.fromkeys(df["ablation"])) == ["zero", "counterfactual"]
    assert df.attrs["layer_baselines"]["counterfactual"] == {"ablation": "counterfactual"}
    patched = _record_literal(model, counterfactual)
    for label, parts in split.items():
        held = torch.tensor(parts["evaluation"])
        literal = _literal_probs(model, images[held], lambda l, act: patched[l][held].to(act.dtype))
        none = df[(df.label == label) & (df.n == 0) & (df.ablation == "counterfactual")]["mean_prob"].item()
        assert none == pytest.approx(float(literal[:, label].mean()), abs=1e-9)
        full = df[(df.label == label) & (df.n == 256) & (df.ablation == "counterfactual")]
        assert full["mean_prob"].item() == pytest.approx(full["mean_prob_full"].item(), abs=1e-12)


# ---------------------------------------------------------------------------- errors
class _Custom(LayerBaseline):
    name = "custom"

    def resolve(self, sites, forward_func, inputs, args, clean):
        return ZeroBaseline().resolve(sites, forward_func, inputs, args, clean)


def test_bad_baselines_are_named(demo):
    model, images, labels, reference, counterfactual = demo
    sites = NeuronSites.from_model(model)
    pairs = [(0, 1)]
    for bad, kind in (("mean", TypeError), (torch.zeros(3), TypeError), (1.5, TypeError)):
        with pytest.raises(kind, match="layer_baselines"):
            with remove_neurons(sites, pairs, layer_baselines=bad):
                pass
        with pytest.raises(kind, match="layer_baselines"):
            probability_deviation(model, images, labels, {"p": _random_paths(12, 6, 1, 256)}, layer_baselines=bad)
        with pytest.raises(kind, match="layer_baselines"):
            faithfulness_study(model, images, labels, {"p": _random_paths(12, 6, 1, 256)}, layer_baselines=bad)
    # per-image counterfactuals need exactly their batch inside the block
    with pytest.raises(ValueError, match=r"12 counterfactual images.*batch of 5"):
        with torch.no_grad(), remove_neurons(sites, pairs, layer_baselines=CounterfactualBaseline(counterfactual)):
            model(images[:5])
    with pytest.raises(ValueError, match=r"CounterfactualBaseline holds 5 counterfactual images for the 12 images"):
        probability_deviation(model, images, labels, {"p": _random_paths(12, 6, 1, 256)},
                              layer_baselines=CounterfactualBaseline(counterfactual[:5]))
    with pytest.raises(ValueError, match=r"layer_baselines.*\(7,\).*256 units"):
        with torch.no_grad(), remove_neurons(sites, pairs, layer_baselines={0: torch.zeros(7)}):
            model(images)
    with pytest.raises(ValueError, match=r"SiteBaseline holds per-image values for 5 images but the study has 12"):
        pruning_study(model, images, labels, ks=(1,), ps=(1.0,), layer_baselines={0: torch.zeros(5, 1, 256)})
    with pytest.raises(TypeError, match=r"layer_baselines: a _Custom .* SiteValues"):
        with remove_neurons(sites, pairs, layer_baselines=_Custom()):
            pass
    with pytest.raises(ValueError, match=r"modes: mode='paper'"):
        jas_comparison(model, images, labels, {"p": _random_paths(12, 6, 1, 256)},
                       layer_baselines=MeanBaseline(reference))
    with pytest.raises(ValueError, match="either ablation .* or layer_baselines"):
        with keep_units(sites, [torch.ones(256, dtype=torch.bool)] * 6, "mean", [torch.zeros(1, 256)] * 6,
                        layer_baselines=MeanBaseline(reference)):
            pass
    with pytest.raises(ValueError, match=r"ablations must hold values of \('zero', 'mean'\)"):
        faithfulness_study(model, images, labels, {"p": _random_paths(12, 6, 1, 256)}, ablations=["counterfactual"])


def test_a_custom_baseline_is_resolved_batch_by_batch_in_studies(demo):
    """Any LayerBaseline the studies resolve from the batch itself: here zero under another name."""
    model, images, labels, _, _ = demo
    paths = {"p": _random_paths(12, 6, 2, 256, seed=9)}
    plain = probability_deviation(model, images, labels, paths, batch_size=5)
    custom = probability_deviation(model, images, labels, paths, batch_size=5, layer_baselines=_Custom())
    assert set(custom["ablation"]) == {"custom"}
    pd.testing.assert_frame_equal(plain.drop(columns="ablation"), custom.drop(columns="ablation"), check_exact=True)
