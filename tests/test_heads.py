"""Attention heads as units: head sites of every covered family, head gates against literal
hooks, the joint score of mixed sets (heads and FFN neurons) against the removal effect, and
the head and mixed path searches against a brute-force greedy written out here."""
from __future__ import annotations

import copy
from typing import Callable, Dict, List, Sequence, Tuple

import pytest
import timm
import torch
from torch import nn

from captum_paths import JointNeuronIntegratedGradients, LayerProgressiveNeuronPath, NeuronSites
from captum_paths.analysis import PathTable
from captum_paths.attribution._machinery import gating
from captum_paths.evaluation.interventions import prune_neurons, remove_neurons
from captum_paths.records import PathRecord, unit_kinds
from captum_paths.search import PathResult, neuron_path
from captum_paths.search.baselines import ActivationPath, ConductancePath, InfluencePatternPath, KnowledgeNeuronPath
from captum_paths.model.stream import ResidualStream
from test_families import CASES, _hf, _sharpen

HEADS, HEAD_DIM = 4, 8  # every tiny model below: width 32, 4 heads of 8 channels


def _timm_vit() -> nn.Module:
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=32,
                              num_heads=HEADS, num_classes=5)
    return _sharpen(model, model.head)


def _hf_vit() -> nn.Module:
    import transformers

    torch.manual_seed(0)
    config = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                    num_hidden_layers=2, num_attention_heads=HEADS, num_labels=5)
    from captum_paths.model.loading import as_logits_model

    model = transformers.ViTForImageClassification(config)
    return as_logits_model(_sharpen(model, model.classifier))


def _torchvision_vit() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=HEADS, hidden_dim=32, mlp_dim=64,
                              num_classes=5)
    return _sharpen(model, model.heads.head)


def _open_clip_tower() -> nn.Module:
    from open_clip.transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, width=32, layers=2, heads=HEADS, mlp_ratio=2.0,
                              output_dim=5)
    return _sharpen(model).eval()


MODELS: Dict[str, Callable[[], nn.Module]] = {
    "timm": _timm_vit, "hf": _hf_vit, "torchvision": _torchvision_vit, "open_clip": _open_clip_tower,
}


@pytest.fixture(scope="module", params=sorted(MODELS))
def family(request):
    if request.param == "open_clip":
        pytest.importorskip("open_clip")
    torch.manual_seed(1)
    return request.param, MODELS[request.param](), torch.randn(3, 3, 32, 32)


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(1)
    return _timm_vit(), torch.randn(3, 3, 32, 32)


def _no_hooks(model: nn.Module) -> bool:
    return not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _prob(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).softmax(-1).gather(1, target[:, None])[:, 0]


# --------------------------------------------------------------------------- literal hooks
def _projection_inputs(name: str, model: nn.Module) -> List[nn.Module]:
    """The attention output projections whose input holds the heads (timm, Hugging Face)."""
    suffix = {"timm": "attn.proj", "hf": "attention.o_proj"}[name]
    return [m for n, m in model.named_modules() if n.endswith(suffix)]


def _zeroing_hooks(model: nn.Module, layout: Sequence[Tuple[str, int]], sets: Sequence[Sequence[Tuple[int, int]]],
                   scale: float = 0.0) -> List:
    """Plain hooks on a timm ViT multiplying, at the class token of row ``r``, every unit of
    ``sets[r]`` by ``scale``: ``(layer, j)`` with ``layout[layer] = ("head", block)`` is the
    slice ``j * 8 .. j * 8 + 8`` of ``blocks[block].attn.proj``'s input, ``("neuron", block)``
    the channel ``j`` of ``blocks[block].mlp.act``'s output."""
    handles = []
    for layer, (kind, block) in enumerate(layout):
        def edit(t: torch.Tensor, layer=layer, kind=kind) -> torch.Tensor:
            t = t.clone()
            for r, units in enumerate(sets):
                for l, j in units:
                    if l != layer:
                        continue
                    if kind == "head":
                        t[r, 0, j * HEAD_DIM:(j + 1) * HEAD_DIM] *= scale
                    else:
                        t[r, 0, j] *= scale
            return t

        if kind == "head":
            handles.append(model.blocks[block].attn.proj.register_forward_pre_hook(lambda m, a, e=edit: (e(a[0]),)))
        else:
            handles.append(model.blocks[block].mlp.act.register_forward_hook(lambda m, a, o, e=edit: e(o)))
    return handles


def _removed_prob(model, x, target, layout, sets) -> torch.Tensor:
    handles = _zeroing_hooks(model, layout, sets)
    try:
        return _prob(model, x, target)
    finally:
        for h in handles:
            h.remove()


# --------------------------------------------------------------------------- 1. head gates
def test_head_gate_at_one_leaves_every_family_unchanged(family):
    name, model, x = family
    sites = NeuronSites.heads_from_model(model)
    with torch.no_grad():
        clean = model(x)
        with sites.edit({l: gating(torch.ones(3, HEADS)) for l in range(sites.num_layers)}):
            gated = model(x)
    assert torch.equal(gated, clean), name
    assert _no_hooks(model)


@pytest.mark.parametrize("name", ["timm", "hf"])
@pytest.mark.parametrize("value", [0.0, 0.37])
def test_head_gate_equals_scaling_its_slice_of_the_projection_input(name, value):
    model = MODELS[name]()
    torch.manual_seed(2)
    x = torch.randn(3, 3, 32, 32)
    sites = NeuronSites.heads_from_model(model)
    assert sites.modules == _projection_inputs(name, model)
    for layer, head in ((0, 1), (1, 3)):
        gates = torch.ones(3, HEADS)
        gates[:, head] = value

        def literal(module, args):
            t = args[0].clone()
            t[:, 0, head * HEAD_DIM:(head + 1) * HEAD_DIM] *= value  # the class token's slice of head `head`
            return (t,) + args[1:]

        handle = _projection_inputs(name, model)[layer].register_forward_pre_hook(literal)
        try:
            with torch.no_grad():
                expected = model(x)
        finally:
            handle.remove()
        with torch.no_grad(), sites.edit({layer: gating(gates)}):
            assert torch.equal(model(x), expected), (name, layer, head)


@pytest.mark.parametrize("name", ["torchvision", "open_clip"])
def test_multihead_attention_head_gate_zero_equals_zeroing_its_value_rows(name):
    """``nn.MultiheadAttention`` calls its output projection as a function, so the heads are
    recomputed; zeroing head ``h`` at every token equals zeroing the value projection rows (and
    bias) of head ``h`` in a copy of the model, since each softmax row sums to 1."""
    if name == "open_clip":
        pytest.importorskip("open_clip")
    model = MODELS[name]()
    torch.manual_seed(2)
    x = torch.randn(3, 3, 32, 32)
    sites = NeuronSites.heads_from_model(model, tokens="all")
    assert sites.captures == ["mha", "mha"]
    for layer, head in ((0, 2), (1, 0)):
        edited = copy.deepcopy(model)
        mha = [m for m in edited.modules() if isinstance(m, nn.MultiheadAttention)][layer]
        rows = slice(2 * 32 + head * HEAD_DIM, 2 * 32 + (head + 1) * HEAD_DIM)
        with torch.no_grad():
            mha.in_proj_weight[rows] = 0
            mha.in_proj_bias[rows] = 0
            expected = edited(x)
        gates = torch.ones(3, HEADS)
        gates[:, head] = 0
        with torch.no_grad(), sites.edit({layer: gating(gates)}):
            got = model(x)
        torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
        assert not torch.allclose(got, model(x).detach(), atol=1e-4), "the head should matter"


def test_remove_neurons_on_head_sites_removes_the_heads(vit):
    model, x = vit
    sites = NeuronSites.heads_from_model(model)
    target = torch.tensor([0, 1, 2])
    layout = [("head", 0), ("head", 1)]
    units = [(0, 1), (1, 2)]
    with torch.no_grad(), remove_neurons(sites, units):
        got = model(x).softmax(-1).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(got, _removed_prob(model, x, target, layout, [units] * 3), rtol=0, atol=0)
    with prune_neurons(sites, keep=[[0], [1]], p=1.0, depth=2) as zeroed:
        with torch.no_grad():
            pruned = model(x)
    assert [z.tolist() for z in zeroed.values()] == [[False, True, True, True], [True, False, True, True]]
    everything_else = [(0, 1), (0, 2), (0, 3), (1, 0), (1, 2), (1, 3)]
    torch.testing.assert_close(pruned.softmax(-1).gather(1, target[:, None])[:, 0],
                               _removed_prob(model, x, target, layout, [everything_else] * 3), rtol=0, atol=0)
    assert _no_hooks(model)


# --------------------------------------------------------------------------- 2. mixed sets
MIXED_SET = [(0, 1), (1, 5), (1, 40), (2, 3), (3, 7)]  # heads of blocks 0 and 1, neurons of both


def test_mixed_set_jas_is_the_removal_effect_and_the_contributions_complete(vit):
    model, x = vit
    target = torch.tensor([0, 1, 2])
    sites = NeuronSites.mixed(NeuronSites.heads_from_model(model), NeuronSites.from_model(model))
    assert sites.kinds == ["head", "neuron", "head", "neuron"] and sites.widths == [HEADS, 128, HEADS, 128]
    phi, jas, delta = JointNeuronIntegratedGradients(model, sites=sites).attribute(
        x, MIXED_SET, target=target, n_steps=64, return_convergence_delta=True, return_jas=True)
    layout = [("head", 0), ("neuron", 0), ("head", 1), ("neuron", 1)]
    removal = _prob(model, x, target) - _removed_prob(model, x, target, layout, [MIXED_SET] * 3)
    torch.testing.assert_close(jas, removal, rtol=1e-6, atol=1e-9)
    assert (jas.abs() > 1e-4).all()
    torch.testing.assert_close(phi.double().sum(1) - jas.double(), delta.double(), rtol=1e-4, atol=1e-8)
    assert (delta.abs() <= 1e-4 * jas.abs() + 1e-7).all(), (delta, jas)
    assert _no_hooks(model)


def test_mixed_set_completeness_in_every_family(family):
    name, model, x = family
    target = torch.tensor([0, 1, 2])
    sites = NeuronSites.mixed(NeuronSites.heads_from_model(model), NeuronSites.from_model(model))
    units = [(0, 1), (1, 5), (2, 3), (3, 7)]
    phi, jas, delta = JointNeuronIntegratedGradients(model, sites=sites).attribute(
        x, units, target=target, n_steps=64, return_convergence_delta=True, return_jas=True)
    with remove_neurons(sites, units):
        removed = _prob(model, x, target)
    torch.testing.assert_close(jas, _prob(model, x, target) - removed, rtol=1e-6, atol=1e-9)
    assert (delta.abs() <= 1e-3 * jas.abs() + 1e-7).all(), (name, delta, jas)
    assert _no_hooks(model)


def test_heads_alone_are_complete_across_layers(vit):
    model, x = vit
    sites = NeuronSites.heads_from_model(model)
    phi, jas, delta = JointNeuronIntegratedGradients(model, sites=sites).attribute(
        x, [[(0, 0), (1, 1)], [(0, 2), (1, 3)], [(0, 3), (1, 0)]], target=1, n_steps=64,
        return_convergence_delta=True, return_jas=True)
    assert phi.shape == (3, 2)
    assert (delta.abs() <= 1e-4 * jas.abs() + 1e-7).all()


# --------------------------------------------------------------------------- 3. searches
def _brute_force_greedy(model, x, target, layout, widths, k) -> Tuple[torch.Tensor, torch.Tensor]:
    """The exact greedy, literally: at each layer try every unit on top of the path so far and
    keep the ``k`` with the largest ``F(x) - F(x; path + unit removed)``. ``(paths (B, L, k), jas (B,))``."""
    B, L = x.shape[0], len(layout)
    clean = _prob(model, x, target)
    paths = torch.zeros(B, L, k, dtype=torch.long)
    for i in range(B):
        prefix: List[Tuple[int, int]] = []
        for t in range(L):
            sets = [prefix + [(t, j)] for j in range(widths[t])]
            rows = x[i:i + 1].expand(len(sets), -1, -1, -1)
            scores = clean[i] - _removed_prob(model, rows, target[i].repeat(len(sets)), layout, sets)
            best = scores.topk(k).indices
            paths[i, t] = best
            prefix += [(t, int(j)) for j in best]
    sets = [[(t, int(j)) for t in range(L) for j in paths[i, t]] for i in range(B)]
    return paths, clean - _removed_prob(model, x, target, layout, sets)


@pytest.mark.parametrize("k", [1, 2])
def test_head_search_equals_a_brute_force_greedy(vit, k, monkeypatch):
    model, x = vit
    target = torch.tensor([0, 1, 2])
    sites = NeuronSites.heads_from_model(model)
    assert ResidualStream.from_sites(sites) is not None  # the fast engine runs the blocks whole
    result = LayerProgressiveNeuronPath(model, sites=sites).attribute(x, target=target, k=k, n_steps=8,
                                                                     refine="all")
    expected, jas = _brute_force_greedy(model, x, target, [("head", 0), ("head", 1)], [HEADS] * 2, k)
    assert torch.equal(result.paths, expected)
    torch.testing.assert_close(result.jas, jas, rtol=1e-5, atol=1e-8)
    assert result.settings["kinds"] == ["head", "head"] and "widths" not in result.settings
    assert (result.delta.abs() <= 1e-3 * result.jas.abs() + 1e-6).all()
    # the whole-model engine finds the same paths
    monkeypatch.setattr(neuron_path.ResidualStream, "from_sites", classmethod(lambda cls, s: None))
    whole = LayerProgressiveNeuronPath(model, sites=sites).attribute(x, target=target, k=k, n_steps=8, refine="all")
    assert torch.equal(whole.paths, result.paths)
    torch.testing.assert_close(whole.jas, result.jas, rtol=1e-5, atol=1e-8)
    assert _no_hooks(model)


@pytest.mark.parametrize("k", [1, 2])
def test_mixed_search_equals_a_brute_force_greedy(vit, k, monkeypatch):
    model, x = vit
    target = torch.tensor([3, 1, 4])
    sites = NeuronSites.mixed(NeuronSites.heads_from_model(model), NeuronSites.from_model(model))
    stream = ResidualStream.from_sites(sites)  # each block as its attention half and its FFN half
    assert stream is not None and len(stream.blocks) == 4
    result = LayerProgressiveNeuronPath(model, sites=sites).attribute(x, target=target, k=k, n_steps=8,
                                                                     refine="all")
    layout = [("head", 0), ("neuron", 0), ("head", 1), ("neuron", 1)]
    expected, jas = _brute_force_greedy(model, x, target, layout, [HEADS, 128, HEADS, 128], k)
    assert torch.equal(result.paths, expected)
    torch.testing.assert_close(result.jas, jas, rtol=1e-5, atol=1e-8)
    assert result.settings["kinds"] == ["head", "neuron", "head", "neuron"]
    assert result.settings["widths"] == [HEADS, 128, HEADS, 128]
    assert (result.delta.abs() <= 1e-3 * result.jas.abs() + 1e-6).all()
    # the whole-model engine finds the same paths, at the default search too
    default = LayerProgressiveNeuronPath(model, sites=sites).attribute(x, target=target, k=k, n_steps=8)
    beam = (LayerProgressiveNeuronPath(model, sites=sites).attribute(x, target=target, n_steps=8, beam=2)
            if k == 1 else None)  # beams hold one unit per layer
    monkeypatch.setattr(neuron_path.ResidualStream, "from_sites", classmethod(lambda cls, s: None))
    for options, fast in (({"refine": "all"}, result), ({}, default), ({"beam": 2}, beam)):
        if fast is None:
            continue
        whole = LayerProgressiveNeuronPath(model, sites=sites).attribute(x, target=target, k=k, n_steps=8, **options)
        assert torch.equal(whole.paths, fast.paths)
        torch.testing.assert_close(whole.jas, fast.jas, rtol=1e-5, atol=1e-8)
        torch.testing.assert_close(whole.contributions, fast.contributions, rtol=1e-4, atol=1e-7)
    assert _no_hooks(model)


def test_whole_site_head_search_and_knowledge_heads_run(family):
    name, model, x = family
    sites = NeuronSites.heads_from_model(model)
    for method in (LayerProgressiveNeuronPath(model, sites=sites), KnowledgeNeuronPath(model, sites=sites)):
        result = method.attribute(x, target=[0, 1, 2], n_steps=4, **({"refine": 0} if method.name == "neuron-path"
                                                                     else {}))
        assert result.paths.shape == (3, 2, 1) and (result.paths < HEADS).all()
        with remove_neurons(sites, result.paths):
            removed = _prob(model, x, torch.tensor([0, 1, 2]))
        torch.testing.assert_close(result.jas, _prob(model, x, torch.tensor([0, 1, 2])) - removed,
                                   rtol=1e-5, atol=1e-8)


def test_what_is_defined_for_neurons_only_says_so(vit):
    model, x = vit
    heads = NeuronSites.heads_from_model(model)
    with pytest.raises(ValueError, match=r"mode='paper'.*FFN neuron sites only.*heads at layers \[0, 1\]"):
        JointNeuronIntegratedGradients(model, sites=heads).attribute(x, [(0, 1)], mode="paper")
    with pytest.raises(ValueError, match="mode='paper'"):
        LayerProgressiveNeuronPath(model, sites=heads).attribute(x, mode="paper")
    for cls in (ActivationPath, ConductancePath, InfluencePatternPath):
        with pytest.raises(ValueError, match=f"'{cls.name}' baseline .*FFN neuron sites only"):
            cls(model, sites=heads).attribute(x, n_steps=4)
    from captum_paths.analysis import neuron_pixel_attribution

    with pytest.raises(ValueError, match="layer 0 holds attention heads"):
        neuron_pixel_attribution(model, x[0], 0, 1, sites=heads)


# --------------------------------------------------------------------------- 4. discovery
@pytest.mark.parametrize("name, family, layers, capture", [
    ("timm_vit", "timm", 2, "input"),
    ("timm_eva02_swiglu_rope", "timm-eva", 2, "input"),
    ("timm_beit", "timm-beit", 2, "input"),
    ("timm_cait", "timm-cait", 4, "input"),
    ("timm_xcit", "timm-late-cls", 4, "input"),
    ("torchvision_vit", "torchvision", 2, "mha"),
    ("hf_vit", "hf", 2, "input"),
    ("hf_beit", "hf", 2, "input"),
    ("hf_clip_zero_shot", "zero-shot", 2, "input"),
    ("hf_siglip_zero_shot", "zero-shot", 2, "input"),
    ("open_clip_zero_shot", "zero-shot", 2, "mha"),
])
def test_head_sites_are_found_in_every_covered_family(name, family, layers, capture):
    case = CASES[name]
    if case.needs:
        pytest.importorskip(case.needs)
    model = case.build()
    heads = NeuronSites.heads_from_model(model)
    neurons = NeuronSites.from_model(model)
    embed = {"timm_eva02_swiglu_rope": 192, "open_clip_zero_shot": 64}.get(name, 32)
    n_heads = 3 if name == "timm_eva02_swiglu_rope" else 2
    assert (heads.family, heads.num_layers, heads.kinds, heads.captures) == (
        family, layers, ["head"] * layers, [capture] * layers)
    assert heads.widths == [n_heads] * layers and heads.unit_sizes == [embed // n_heads] * layers
    assert heads.tokens == neurons.tokens
    torch.manual_seed(3)
    x = torch.randn(2, 3, case.size, case.size)
    with torch.no_grad(), heads.record() as acts:
        model(x)
    for layer, act in acts.items():  # (batch, selected tokens x head_dim, heads)
        assert act.shape[0] == 2 and act.shape[2] == n_heads and act.shape[1] % (embed // n_heads) == 0, layer
    assert _no_hooks(model)


@pytest.mark.parametrize("name", ["timm_swin", "torchvision_swin", "hf_swin", "timm_pit_fallback"])
def test_families_without_discoverable_heads_say_so(name):
    model = CASES[name].build()
    with pytest.raises(ValueError, match=r"declares no attention head sites .*NeuronSites.from_names\(.*kind='head'"):
        NeuronSites.heads_from_model(model)


def test_a_model_of_no_family_gets_a_clear_error():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
            self.head = nn.Linear(8, 3)

        def forward(self, x):
            return self.head(self.attn(x, x, x)[0].mean(1))

    model = Tiny().eval()
    with pytest.raises(ValueError, match="cannot find attention heads in a Tiny: looked for"):
        NeuronSites.heads_from_model(model)
    # explicit: an nn.MultiheadAttention knows its heads
    sites = NeuronSites.from_names(model, ["attn"], tokens="all", num_prefix_tokens=0, kind="head")
    assert (sites.captures, sites.widths, sites.unit_sizes) == (["mha"], [2], [4])
    x = torch.randn(2, 5, 8)
    phi, jas, delta = JointNeuronIntegratedGradients(model, sites=sites).attribute(
        x, [(0, 1)], target=0, n_steps=32, return_convergence_delta=True, return_jas=True)
    assert (delta.abs() <= 1e-4 * jas.abs() + 1e-7).all()


def test_explicit_head_sites_equal_the_discovered_ones(vit):
    model, x = vit
    found = NeuronSites.heads_from_model(model)
    explicit = NeuronSites.from_names(model, ["blocks.0.attn.proj", "blocks.1.attn.proj"], capture="input",
                                      kind="head", num_heads=HEADS)
    assert (explicit.modules, explicit.widths, explicit.unit_sizes, explicit.kinds) == (
        found.modules, found.widths, found.unit_sizes, found.kinds)
    with pytest.raises(ValueError, match="num_heads: give the number of heads"):
        NeuronSites.from_names(model, ["blocks.0.attn.proj"], capture="input", kind="head")
    with pytest.raises(ValueError, match="32 channels do not split into units of 5"):
        NeuronSites.from_names(model, ["blocks.0.attn.proj"], capture="input", kind="head", num_heads=5)
    with pytest.raises(ValueError, match="num_heads applies to kind='head' only"):
        NeuronSites.from_names(model, ["blocks.0.attn.proj"], num_heads=4)
    with pytest.raises(ValueError, match="kind must be one of"):
        NeuronSites(model, [model.blocks[0].attn.proj], kind="heads")


def test_mixed_sites_interleave_in_execution_order_and_check_their_parts(vit):
    model, x = vit
    heads, neurons = NeuronSites.heads_from_model(model), NeuronSites.from_model(model)
    mixed = NeuronSites.mixed(heads, neurons)
    assert mixed.names == ["blocks.0.attn.proj", "blocks.0.mlp.act", "blocks.1.attn.proj", "blocks.1.mlp.act"]
    assert (mixed.captures, mixed.unit_sizes, mixed.capture) == (["input", "output"] * 2, [HEAD_DIM, 1] * 2, "mixed")
    assert "kind='mixed'" in repr(mixed) and mixed.has_heads and not neurons.has_heads
    with torch.no_grad(), mixed.record() as acts:
        model(x)
    assert [tuple(a.shape) for a in acts.values()] == [(3, HEAD_DIM, HEADS), (3, 1, 128)] * 2
    with pytest.raises(ValueError, match="head sites then neuron sites"):
        NeuronSites.mixed(neurons, heads)
    with pytest.raises(ValueError, match="same tokens"):
        NeuronSites.mixed(NeuronSites.heads_from_model(model, tokens="all"), neurons)
    with pytest.raises(ValueError, match="same model"):
        NeuronSites.mixed(heads, NeuronSites.from_model(_timm_vit()))
    shifted = NeuronSites(model, [model.blocks[1].attn.proj, model.blocks[0].attn.proj], kind="head",
                          capture="input", width=HEADS)
    with pytest.raises(ValueError, match="do not interleave"):
        NeuronSites.mixed(shifted, neurons)
    with pytest.raises(TypeError, match="heads must be a NeuronSites"):
        NeuronSites.mixed(model, neurons)


# --------------------------------------------------------------------------- records
def test_records_keep_the_unit_kinds_and_old_records_hold_neurons(vit):
    model, x = vit
    sites = NeuronSites.mixed(NeuronSites.heads_from_model(model), NeuronSites.from_model(model))
    result = LayerProgressiveNeuronPath(model, sites=sites).attribute(x, target=[0, 1, 2], n_steps=4)
    records = result.to_records(labels=[0, 0, 1])
    assert all(r["settings"]["kinds"] == ["head", "neuron", "head", "neuron"] for r in records)
    back = PathResult.from_records(records)
    assert back.settings["kinds"] == result.settings["kinds"] and torch.equal(back.paths, result.paths)
    table = PathTable.from_records(records)
    assert table.kinds == ["head", "neuron", "head", "neuron"] and table.select([0]).kinds == table.kinds
    summary = table.layer_summary()
    assert summary["kind"].tolist() == ["head", "neuron", "head", "neuron"]
    assert (summary.loc[summary["kind"] == "head", "distinct_neurons"] <= HEADS).all()
    from captum_paths.analysis import PathGraph, class_similarity, consensus_path_lists, consensus_paths

    consensus = consensus_path_lists(consensus_paths(table))
    assert all(len(p) == 4 and p[0][0] < HEADS and p[2][0] < HEADS for p in consensus.values())
    assert PathGraph.from_records(records).num_paths == 3 and class_similarity(table).shape == (2, 2)
    old = dict(records[0], settings={"mode": "gate"})
    assert unit_kinds(PathRecord.from_dict(old).settings, 4) == ["neuron"] * 4
    assert PathTable.from_records([old]).kinds is None and "kind" not in PathTable.from_records([old]).layer_summary()
    with pytest.raises(ValueError, match=r"record 0: settings\['kinds'\] must list one of"):
        PathRecord.from_dict(dict(records[0], settings={"kinds": ["head", "neuron"]}))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_head_and_mixed_searches_match_cpu(family):
    """Head sites of every family (nn.MultiheadAttention heads are recomputed in a hook) and the
    mixed search on the residual stream give the CPU's paths on a GPU."""
    name, model, x = family
    target = torch.tensor([0, 1, 2])
    gpu_model = copy.deepcopy(model).cuda()
    for make in (NeuronSites.heads_from_model,
                 lambda m: NeuronSites.mixed(NeuronSites.heads_from_model(m), NeuronSites.from_model(m))):
        cpu = LayerProgressiveNeuronPath(model, sites=make(model)).attribute(x, target=target, n_steps=8)
        gpu = LayerProgressiveNeuronPath(gpu_model, sites=make(gpu_model)).attribute(
            x.cuda(), target=target.cuda(), n_steps=8)
        same = (gpu.paths.cpu() == cpu.paths).flatten(1).all(1)
        assert gpu.paths.device.type == "cuda" and same.float().mean() >= 2 / 3  # a close pair may swap
        torch.testing.assert_close(gpu.jas.cpu()[same], cpu.jas[same], rtol=1e-3, atol=1e-5)
    assert _no_hooks(gpu_model)
