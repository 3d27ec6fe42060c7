"""What ``sites=`` and ``neurons=`` accept, and the misreads refused or flagged.

- Modules as sites, as Captum's layer arguments: ``JointNeuronIntegratedGradients(model,
  model.blocks[1].mlp.act)``, a list of modules, ``NeuronSites.from_names`` with modules; the same
  numbers as the sites named by ``from_names``, in the joint score and the path search.
- A constant target output (a zero-initialised head: every score exactly 0) is a warning naming it.
- A 4-D activation whose layout cannot be told from its shape (a convolution's ``(batch, C, H, W)``)
  is refused unless ``layout`` is given, and read right when it is.
- Neuron sets: a single ``(layer, neuron)`` pair is one neuron; numpy and tensor integers and arrays
  are accepted; every error names what it received and the accepted forms.
"""
from __future__ import annotations

import warnings

import numpy as np
import pytest
import timm
import torch
from torch import nn

from captum_paths import JointNeuronIntegratedGradients, LayerProgressiveNeuronPath, NeuronSites
from captum_paths.attribution.neuron_sets import parse_neurons
from captum_paths.evaluation.interventions import remove_neurons, scale_neurons
from _models import tiny_vit


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(1)
    return tiny_vit(), torch.randn(3, 3, 16, 16)


def _no_hooks(model: nn.Module) -> bool:
    return not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _prob(model, x, target):
    with torch.no_grad():
        return model(x).softmax(-1).gather(1, target[:, None])[:, 0]


# ------------------------------------------------------------------------------ 1. modules as sites
def test_a_module_as_sites_gives_the_numbers_of_from_names(vit):
    model, x = vit
    target = torch.tensor([0, 1, 2])
    named = NeuronSites.from_names(model, ["blocks.1.mlp.act"])
    expected = JointNeuronIntegratedGradients(model, sites=named).attribute(x, [(0, 5), (0, 9)], target=target,
                                                                           return_jas=True)
    for sites in (model.blocks[1].mlp.act, [model.blocks[1].mlp.act], (model.blocks[1].mlp.act,)):
        jig = JointNeuronIntegratedGradients(model, sites)
        assert jig.sites.names == ["blocks.1.mlp.act"] and jig.sites.tokens == named.tokens
        got = jig.attribute(x, [(0, 5), (0, 9)], target=target, return_jas=True)
        for a, b in zip(got, expected):
            assert torch.equal(a, b)
    assert _no_hooks(model)


def test_a_list_of_modules_as_sites_gives_the_paths_of_from_names(vit):
    model, x = vit
    target = torch.tensor([4, 0, 3])
    for layers in ([0, 1, 2], [0, 2]):
        modules = [model.blocks[i].mlp.act for i in layers]
        named = NeuronSites.from_names(model, [f"blocks.{i}.mlp.act" for i in layers])
        options = dict(target=target, k=2, refine=3, n_steps=8)
        by_modules = LayerProgressiveNeuronPath(model, sites=modules).attribute(x, **options)
        by_names = LayerProgressiveNeuronPath(model, sites=named).attribute(x, **options)
        assert torch.equal(by_modules.paths, by_names.paths)
        torch.testing.assert_close(by_modules.jas, by_names.jas, rtol=1e-6, atol=1e-9)
        sets = [[(l, int(j)) for l in range(len(layers)) for j in by_modules.paths[r, l]] for r in range(3)]
        _, jas = JointNeuronIntegratedGradients(model, modules).attribute(x, sets, target=target, return_jas=True)
        torch.testing.assert_close(jas, by_modules.jas, rtol=1e-5, atol=1e-7)
    # every FFN site, in order: the discovered sites themselves (their family, their fast engine)
    every = NeuronSites.coerce(model, [b.mlp.act for b in model.blocks])
    assert every.family == "timm" and every.modules == NeuronSites.from_model(model).modules
    assert NeuronSites.coerce(model, [model.blocks[0].mlp.act, model.blocks[2].mlp.act]).family == "custom"
    assert _no_hooks(model)


def test_from_names_takes_modules_and_names_mixed(vit):
    model, _ = vit
    sites = NeuronSites.from_names(model, [model.blocks[0].mlp.act, "blocks.1.mlp.act"])
    assert sites.names == ["blocks.0.mlp.act", "blocks.1.mlp.act"]
    assert sites.modules == [model.blocks[0].mlp.act, model.blocks[1].mlp.act]
    with pytest.raises(ValueError, match="not a submodule of the VisionTransformer"):
        NeuronSites.from_names(model, [nn.GELU()])
    with pytest.raises(TypeError, match="not a single GELU"):
        NeuronSites.from_names(model, model.blocks[0].mlp.act)


def test_modules_are_read_as_their_family_reads_them():
    """The fc2 of a gated FFN is read at its input (its hidden activation) as the family does; the
    attention output projection, not a discovered neuron site, at its output unless said otherwise;
    an nn.MultiheadAttention holds heads."""
    torch.manual_seed(0)
    gated = timm.create_model("vit_giant_patch14_dinov2", depth=2, embed_dim=64, num_heads=2, mlp_ratio=4,
                              img_size=28, num_classes=5).eval()
    sites = NeuronSites.coerce(gated, [gated.blocks[1].mlp.fc2])
    assert sites.captures == ["input"] and sites.width == gated.blocks[1].mlp.fc2.in_features
    proj = NeuronSites.coerce(gated, gated.blocks[0].attn.proj)
    assert proj.captures == ["output"] and proj.kinds == ["neuron"] and proj.width == 64
    heads = NeuronSites.coerce(gated, [b.attn.proj for b in gated.blocks], kind="head")
    assert heads.family == "timm" and heads.kinds == ["head", "head"] and heads.captures == ["input"] * 2
    assert heads.widths == [2, 2]
    one_head_site = NeuronSites.coerce(gated, gated.blocks[1].attn.proj, kind="head")
    assert (one_head_site.captures, one_head_site.widths, one_head_site.unit_sizes) == (["input"], [2], [32])

    from torchvision.models.vision_transformer import VisionTransformer

    tv = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64).eval()
    mha = NeuronSites.coerce(tv, tv.encoder.layers[1].self_attention)
    assert (mha.kinds, mha.captures, mha.widths) == (["head"], ["mha"], [2])


class _TokenNet(nn.Module):
    """A token MLP of no registered family: (batch, tokens, 4) -> logits of the first token."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.ffn = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ffn(x)[:, 0]


def test_modules_outside_every_backbone_need_tokens():
    model = _TokenNet().eval()
    x = torch.randn(2, 5, 4)
    with pytest.raises(ValueError, match=r"tokens: the sites \['ffn.1'\] are not inside a backbone.*tokens="):
        JointNeuronIntegratedGradients(model, model.ffn[1])
    with pytest.raises(ValueError, match="tokens="):
        NeuronSites.coerce(model, [model.ffn[1]])
    sites = NeuronSites.coerce(model, [model.ffn[1]], tokens="all")
    named = NeuronSites.from_names(model, ["ffn.1"], tokens="all")
    assert sites.names == named.names and sites.tokens == named.tokens and sites.family == "custom"
    target = torch.tensor([0, 2])
    a = JointNeuronIntegratedGradients(model, sites).attribute(x, [(0, 3)], target=target, return_jas=True)
    b = JointNeuronIntegratedGradients(model, named).attribute(x, [(0, 3)], target=target, return_jas=True)
    assert all(torch.equal(p, q) for p, q in zip(a, b))


def test_what_is_not_a_site_says_what_is(vit):
    model, _ = vit
    with pytest.raises(TypeError, match=r"sites must be a NeuronSites, a module.*got str.*from_names"):
        JointNeuronIntegratedGradients(model, "blocks.0.mlp.act")
    with pytest.raises(TypeError, match="sites"):
        JointNeuronIntegratedGradients(model, sites=["blocks.0.mlp.act"])
    with pytest.raises(TypeError, match="got int"):
        LayerProgressiveNeuronPath(model, sites=3)
    with pytest.raises(ValueError, match="sites\\[0\\]: the GELU given is not a submodule"):
        JointNeuronIntegratedGradients(model, [nn.GELU()])
    with pytest.raises(TypeError, match=r"NeuronSites.coerce\(model, modules\)"):
        remove_neurons([model.blocks[0].mlp.act], [(0, 1)]).__enter__()


def test_interventions_take_coerced_modules_and_a_single_pair(vit):
    model, x = vit
    target = torch.tensor([0, 1, 2])
    sites = NeuronSites.coerce(model, model.blocks[2].mlp.act)
    with remove_neurons(sites, (0, 12)):
        removed = _prob(model, x, target)
    handle = model.blocks[2].mlp.act.register_forward_hook(lambda m, a, o: o.index_put((torch.arange(3)[:, None],
                                                                                        torch.tensor([[0]]),
                                                                                        torch.tensor([[12]])),
                                                                                       torch.tensor(0.0)))
    try:
        literal = _prob(model, x, target)
    finally:
        handle.remove()
    torch.testing.assert_close(removed, literal, rtol=0, atol=0)
    with scale_neurons(model, np.array([2, 7]), 0.0):  # a numpy pair, on the discovered sites
        numpy_removed = _prob(model, x, target)
    with scale_neurons(model, [(2, 7)], 0.0):
        assert torch.equal(_prob(model, x, target), numpy_removed)
    assert _no_hooks(model)


# ----------------------------------------------------------------------------- 2. constant output
def _zero_head_torchvision():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    # torchvision zero-initialises the classifier, as vit_b_16(weights=None) does: every logit is 0
    return VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                             num_classes=5).eval()


def test_a_zero_initialised_head_is_a_warning_not_silent_zeros():
    model = _zero_head_torchvision()
    assert torch.count_nonzero(model.heads.head.weight) == 0
    x = torch.randn(2, 3, 32, 32)
    with pytest.warns(RuntimeWarning, match=r"exactly 0: the target's output does not change when the units are "
                                            r"removed and its gradient is zero.*zero-initialised head"):
        phi, jas = JointNeuronIntegratedGradients(model).attribute(x, [(0, 1), (1, 2)], target=0, return_jas=True)
    assert torch.count_nonzero(phi) == 0 and torch.count_nonzero(jas) == 0
    with pytest.warns(RuntimeWarning, match="zero-initialised"):
        JointNeuronIntegratedGradients(model).attribute(x, [(0, 1)], target=0, mode="paper",
                                                        return_convergence_delta=True)
    with torch.no_grad():  # a head that reads nothing but its bias: the same logits for every image
        model.heads.head.bias.copy_(torch.arange(5.0))
    with pytest.warns(RuntimeWarning, match="same for every image"):
        JointNeuronIntegratedGradients(model).attribute(x, [(0, 1)], target=0)


def test_the_path_search_warns_on_a_zero_head_with_its_fast_engine():
    """The torchvision ViT runs the fast residual-stream engine, which scores the paths itself."""
    model = _zero_head_torchvision()
    x = torch.randn(2, 3, 32, 32)
    with pytest.warns(RuntimeWarning, match=r"LayerProgressiveNeuronPath: every contribution and joint score is "
                                            r"exactly 0.*zero-initialised head"):
        result = LayerProgressiveNeuronPath(model).attribute(x, target=0, n_steps=2)
    assert torch.count_nonzero(result.jas) == 0


def test_a_working_head_gives_no_warning(vit):
    model, x = vit
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        JointNeuronIntegratedGradients(model).attribute(x, [(0, 1), (2, 3)], target=0)


# ---------------------------------------------------------------------------------- 3. layouts
class _ConvNet(nn.Module):
    """A convolution whose (batch, C, H, W) output is the site, then a linear layer on a channels-last grid."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 6, 3, padding=1)
        self.act = nn.GELU()
        self.mix = nn.Linear(6, 8)  # on (batch, H, W, 6): channels last
        self.act2 = nn.GELU()
        self.head = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.act(self.conv(x))
        g = self.act2(self.mix(h.permute(0, 2, 3, 1)))
        return self.head(g.mean(dim=(1, 2)))


def _conv_literal(model, x, target, module, channel, dim):
    def zero(m, a, o):
        o = o.clone()
        o.select(dim, channel).zero_()
        return o
    handle = module.register_forward_hook(zero)
    try:
        removed = _prob(model, x, target)
    finally:
        handle.remove()
    return _prob(model, x, target) - removed


def test_a_channels_first_site_is_refused_unless_its_layout_is_given():
    model = _ConvNet().eval()
    x = torch.randn(2, 3, 5, 5)
    target = torch.tensor([1, 2])
    for sites in (NeuronSites.coerce(model, model.conv, tokens="all"),
                  NeuronSites.from_names(model, ["act"], tokens="all")):
        with pytest.raises(ValueError, match=r"4-D activation of shape \(2, 6, 5, 5\).*layout='channels_first'"):
            JointNeuronIntegratedGradients(model, sites).attribute(x, [(0, 1)], target=target)
    assert _no_hooks(model)
    for sites in (NeuronSites.coerce(model, model.conv, tokens="all", layout="channels_first"),
                  NeuronSites.from_names(model, ["act"], tokens="all", layout="channels_first")):
        with sites.record() as acts:
            model(x)
        assert acts[0].shape == (2, 25, 6)  # (batch, H * W positions, C channels)
        _, jas = JointNeuronIntegratedGradients(model, sites).attribute(x, [(0, 4)], target=target, return_jas=True)
        literal = _conv_literal(model, x, target, sites.modules[0], 4, dim=1)
        torch.testing.assert_close(jas, literal, rtol=1e-5, atol=1e-8)
        assert literal.abs().max() > 1e-4


def test_a_channels_last_grid_is_read_at_a_linear_layer_and_refused_after_it():
    model = _ConvNet().eval()
    x = torch.randn(2, 3, 5, 5)
    target = torch.tensor([0, 3])
    by_linear = NeuronSites.coerce(model, model.mix, tokens="all")  # a linear layer: channels last, no layout
    assert by_linear.layouts == ["channels_last"]
    _, jas = JointNeuronIntegratedGradients(model, by_linear).attribute(x, [(0, 5)], target=target, return_jas=True)
    torch.testing.assert_close(jas, _conv_literal(model, x, target, model.mix, 5, dim=-1), rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match=r"site 'act2' \(layer 0\) produced a 4-D activation"):
        JointNeuronIntegratedGradients(model, NeuronSites.coerce(model, model.act2, tokens="all")).attribute(
            x, [(0, 5)], target=target)
    told = NeuronSites.coerce(model, model.act2, tokens="all", layout="channels_last")
    _, jas = JointNeuronIntegratedGradients(model, told).attribute(x, [(0, 5)], target=target, return_jas=True)
    torch.testing.assert_close(jas, _conv_literal(model, x, target, model.act2, 5, dim=-1), rtol=1e-5, atol=1e-8)
    with pytest.raises(ValueError, match="layout must be one of"):
        NeuronSites(model, [model.act2], layout="NHWC")


def test_discovered_grids_keep_their_familys_channels_last_layout():
    from torchvision.models import swin_t

    torch.manual_seed(0)
    model = swin_t(num_classes=3).eval()
    sites = NeuronSites.from_model(model)
    assert set(sites.layouts) == {"channels_last"}
    with sites.record(layers=[0]) as acts:
        model(torch.randn(1, 3, 32, 32))
    assert acts[0].shape[-1] == sites.widths[0]


# -------------------------------------------------------------------------------- 4. neuron sets
@pytest.mark.parametrize("given", [
    (0, 12), [0, 12], (np.int64(0), np.int64(12)), np.array([0, 12]), torch.tensor([0, 12]),
    (torch.tensor(0), torch.tensor(12)), [(0, 12)], np.array([[0, 12]]), torch.tensor([[0, 12]]),
])
def test_a_single_pair_is_one_neuron_in_every_form(given):
    nset = parse_neurons(given, 2, 3, 64)
    assert nset.layers.tolist() == [[0], [0]] and nset.units.tolist() == [[12], [12]]


def test_numpy_and_tensor_sets_equal_lists():
    pairs = [(0, 1), (2, 30)]
    expected = parse_neurons(pairs, 2, 3, 64)
    for given in (np.array(pairs), torch.tensor(pairs), [(np.int32(0), 1), (2, torch.tensor(30))],
                  [np.array(pairs), np.array(pairs)], [torch.tensor(pairs)] * 2):
        got = parse_neurons(given, 2, 3, 64)
        assert torch.equal(got.layers, expected.layers) and torch.equal(got.units, expected.units)
    path = np.array([[[1], [2], [3]], [[4], [5], [6]]])
    assert torch.equal(parse_neurons(path, 2, 3, 64).units, parse_neurons(torch.tensor(path), 2, 3, 64).units)


def test_jig_reads_a_single_pair_as_one_neuron(vit):
    model, x = vit
    jig = JointNeuronIntegratedGradients(model)
    expected = jig.attribute(x, [(1, 12)], target=0, return_jas=True)
    for given in ((1, 12), np.array([1, 12]), torch.tensor([1, 12]), (np.int64(1), torch.tensor(12))):
        got = jig.attribute(x, given, target=0, return_jas=True)
        assert got[0].shape == (3, 1) and all(torch.equal(a, b) for a, b in zip(got, expected))


@pytest.mark.parametrize("given, error, received", [
    ("0,12", TypeError, "str '0,12'"),
    ({0: 12}, TypeError, "dict {0: 12}"),
    ([(0, 1.5)], TypeError, "list [(0, 1.5)]"),
    ((0, 1.5), TypeError, "tuple (0, 1.5)"),
    ([(True, 1)], TypeError, "list [(True, 1)]"),
    (np.array([[0.0, 1.0]]), TypeError, "ndarray of shape (1, 2) and dtype float64"),
    (torch.zeros(4, 3, dtype=torch.long), ValueError, "Tensor of shape (4, 3)"),
    ([], ValueError, "neurons is empty"),
])
def test_neuron_set_errors_say_what_was_received_and_what_is_accepted(given, error, received):
    with pytest.raises(error) as info:
        parse_neurons(given, 2, 3, 64)
    message = str(info.value)
    assert received in message, message
    for form in ("one (layer, neuron) pair", "a list of such pairs", "(n, 2) integer array", "(batch, L, k)",
                 "numpy or tensor integers"):
        assert form in message, message


def test_a_set_per_example_of_the_wrong_count_says_so():
    with pytest.raises(ValueError) as info:
        parse_neurons([[(0, 1)], [(0, 2)], [(0, 3)]], 2, 3, 64)
    message = str(info.value)
    assert "3 sets but inputs hold 2 examples" in message and "list [[(0, 1)], [(0, 2)], [(0, 3)]]" in message


def test_the_evaluation_takes_modules_as_sites():
    """The paper's experiments and the faithfulness curves take modules as sites, with the numbers of
    the model's own sites."""
    from captum_paths.demo import load_demo_data, load_demo_model
    from captum_paths.evaluation.faithfulness import faithfulness_study
    from captum_paths.evaluation.harness import probability_deviation

    torch.manual_seed(0)
    model = load_demo_model()
    images, labels = load_demo_data("test")
    images, labels = images[:12], labels[:12]
    paths = {"random": torch.randint(0, 256, (12, 6, 1))}
    modules = [block.mlp.act for block in model.blocks]
    expected = probability_deviation(model, images, labels, paths)
    got = probability_deviation(model, images, labels, paths, sites=modules)
    assert got.equals(expected)
    expected = faithfulness_study(model, images, labels, paths, ns=[0, 2], random_control=False)
    got = faithfulness_study(model, images, labels, paths, sites=modules, ns=[0, 2], random_control=False)
    assert got.equals(expected)
