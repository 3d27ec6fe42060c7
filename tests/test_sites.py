"""Tests for captum_paths.model.sites: NeuronSites discovery, recording, editing and hook hygiene.

Every model is a tiny random-weight config (seeded), built once per module and
shared by the tests; all checks run on CPU in a few seconds.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Callable, Dict, List, Sequence, Tuple

import pytest
import torch
from torch import nn

from captum_paths.model.loading import LogitsOnly, as_logits_model
from captum_paths.model.sites import NeuronSites, TokenSelection

timm = pytest.importorskip("timm")
torchvision = pytest.importorskip("torchvision")
transformers = pytest.importorskip("transformers")

BATCH = 2

TINY_TIMM = dict(img_size=32, patch_size=8, depth=2, num_classes=10)
TINY_HF = dict(
    image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=32, num_attention_heads=2, num_labels=10
)


# ---------------------------------------------------------------------------
# Model zoo
# ---------------------------------------------------------------------------


def _timm(name: str, seed: int, **kwargs) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(seed)
        model = timm.create_model(name, pretrained=False, **kwargs)
        # DINOv2 LayerScale starts at 1e-5, which makes single-neuron edits invisible in float32
        with torch.no_grad():
            for module in model.modules():
                if type(module).__name__ == "LayerScale":
                    module.gamma.uniform_(0.5, 1.5)
        return model

    return build


def _torchvision_vit() -> nn.Module:
    torch.manual_seed(20)
    model = torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64, num_classes=10
    )
    with torch.no_grad():  # torchvision zero-initialises the head: every logit would be 0
        model.heads.head.weight.normal_(0.0, 0.5)
    return model


def _hf(model_cls: str, config_cls: str, seed: int, **config) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(seed)
        cfg = getattr(transformers, config_cls)(**TINY_HF, **config)
        return getattr(transformers, model_cls)(cfg)

    return build


# (site module, capture of the activation on it, the FFN's second linear layer) per layer
Reference = List[Tuple[nn.Module, str, nn.Linear]]


def _ref_timm(model: nn.Module) -> Reference:
    return [(b.mlp.act, "output", b.mlp.fc2) for b in model.blocks]


def _ref_timm_gated(model: nn.Module) -> Reference:
    return [(b.mlp.fc2, "input", b.mlp.fc2) for b in model.blocks]


def _ref_torchvision(model: nn.Module) -> Reference:
    return [(layer.mlp[1], "output", layer.mlp[3]) for layer in model.encoder.layers]


def _ref_hf(model: nn.Module) -> Reference:
    """transformers 5: the input of ``mlp.fc2`` (``mlp.down_proj`` for SwiGLU);
    transformers 4: the output of ``intermediate`` (its fc2 is ``output.dense``)."""
    inner = model.model if isinstance(model, LogitsOnly) else model
    found: Reference = []
    for name, module in inner.named_modules():
        if name.endswith(("mlp.fc2", "mlp.down_proj", "mlp.weights_out")):
            found.append((module, "input", module))
        elif name.endswith(".intermediate"):
            parent = inner.get_submodule(name.rsplit(".", 1)[0])
            found.append((module, "output", parent.output.dense))
    return found


@dataclass(frozen=True)
class Case:
    build: Callable[[], nn.Module]
    img: int
    num_layers: int
    width: int
    kind: str
    indices: Tuple[int, ...]
    prefix: int
    capture: str
    family: str
    seq_len: int
    ref: Callable[[nn.Module], Reference]
    hf: bool = False  # build() returns a raw HF model; the zoo wraps it in LogitsOnly


CASES: Dict[str, Case] = {
    "timm_vit": Case(
        _timm("vit_tiny_patch16_224", 1, **TINY_TIMM), 32, 2, 768, "cls", (), 1, "output", "timm", 17, _ref_timm
    ),
    "timm_deit_distilled": Case(
        _timm("deit_tiny_distilled_patch16_224", 2, **TINY_TIMM),
        32, 2, 768, "indices", (0, 1), 2, "output", "timm", 18, _ref_timm,
    ),
    "timm_dinov2_layerscale": Case(
        _timm("vit_small_patch14_dinov2", 3, img_size=28, depth=2, num_classes=10),
        28, 2, 1536, "cls", (), 1, "output", "timm", 5, _ref_timm,
    ),
    "timm_dinov2_reg4": Case(
        _timm("vit_small_patch14_reg4_dinov2", 4, img_size=28, depth=2, num_classes=10),
        28, 2, 1536, "cls", (), 5, "output", "timm", 9, _ref_timm,
    ),
    "timm_mae_avg": Case(
        _timm(
            "vit_base_patch16_224.mae", 5, img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2,
            global_pool="avg", num_classes=10,
        ),
        32, 2, 128, "patches", (), 1, "output", "timm", 17, _ref_timm,
    ),
    "timm_no_cls_avg": Case(
        _timm("vit_tiny_patch16_224", 6, class_token=False, global_pool="avg", **TINY_TIMM),
        32, 2, 768, "all", (), 0, "output", "timm", 16, _ref_timm,
    ),
    "timm_gated": Case(
        _timm(
            "vit_giant_patch14_dinov2", 7, depth=1, embed_dim=64, num_heads=2, mlp_ratio=4, img_size=28,
            num_classes=10,
        ),
        28, 1, 128, "cls", (), 1, "input", "timm", 5, _ref_timm_gated,
    ),
    "torchvision_vit": Case(_torchvision_vit, 32, 2, 64, "cls", (), 1, "output", "torchvision", 17, _ref_torchvision),
    "hf_vit": Case(
        _hf("ViTForImageClassification", "ViTConfig", 30, intermediate_size=64),
        32, 2, 64, "cls", (), 1, "input", "hf", 17, _ref_hf, hf=True,
    ),
    "hf_deit": Case(
        _hf("DeiTForImageClassification", "DeiTConfig", 31, intermediate_size=64),
        32, 2, 64, "cls", (), 2, "input", "hf", 18, _ref_hf, hf=True,
    ),
    "hf_deit_teacher": Case(
        _hf("DeiTForImageClassificationWithTeacher", "DeiTConfig", 32, intermediate_size=64),
        32, 2, 64, "indices", (0, 1), 2, "input", "hf", 18, _ref_hf, hf=True,
    ),
    "hf_dinov2": Case(
        _hf("Dinov2ForImageClassification", "Dinov2Config", 33, mlp_ratio=2),
        32, 2, 64, "all", (), 1, "input", "hf", 17, _ref_hf, hf=True,
    ),
    "hf_dinov2_swiglu": Case(
        # SwiGLU hidden size: int(32 * 2 * 2 / 3) = 42, rounded up to a multiple of 8
        _hf("Dinov2ForImageClassification", "Dinov2Config", 34, mlp_ratio=2, use_swiglu_ffn=True),
        32, 2, 48, "all", (), 1, "input", "hf", 17, _ref_hf, hf=True,
    ),
}
ALL = sorted(CASES)
HYGIENE = ["timm_vit", "timm_gated", "timm_deit_distilled", "torchvision_vit", "hf_vit", "hf_dinov2_swiglu"]


class Zoo:
    """Builds each model once (eval mode); for HF keeps the raw and the LogitsOnly-wrapped model."""

    def __init__(self) -> None:
        self._models: Dict[str, nn.Module] = {}
        self._inputs: Dict[str, torch.Tensor] = {}

    def raw(self, name: str) -> nn.Module:
        if name not in self._models:
            self._models[name] = CASES[name].build().eval()
        return self._models[name]

    def model(self, name: str) -> nn.Module:
        """A forward that returns the logits tensor."""
        raw = self.raw(name)
        key = name + "/wrapped"
        if CASES[name].hf:
            if key not in self._models:
                self._models[key] = LogitsOnly(raw)
            return self._models[key]
        return raw

    def x(self, name: str) -> torch.Tensor:
        img = CASES[name].img
        if img not in self._inputs:
            g = torch.Generator().manual_seed(1234 + img)
            self._inputs[img] = torch.randn(BATCH, 3, img, img, generator=g)
        return self._inputs[img]


@pytest.fixture(scope="module", autouse=True)
def _single_thread():
    """Tiny models run fastest (and steadiest on a busy machine) on one intra-op thread."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def zoo() -> Zoo:
    return Zoo()


# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------


def _positions(kind: str, indices: Sequence[int], prefix: int, seq_len: int) -> List[int]:
    """Token positions of a selection, computed independently of TokenSelection.index."""
    if kind == "cls":
        return [0]
    if kind == "all":
        return list(range(seq_len))
    if kind == "patches":
        return list(range(prefix, seq_len))
    return sorted(i % seq_len for i in indices)


@contextlib.contextmanager
def _capture_full(ref: Reference, fc2_outputs: bool = False):
    """Manual hooks: the full site activation (batch, tokens, d_ff) per layer, and optionally fc2's output."""
    acts: Dict[int, torch.Tensor] = {}
    outs: Dict[int, torch.Tensor] = {}
    handles = []
    for i, (module, capture, fc2) in enumerate(ref):
        if capture == "output":
            handles.append(module.register_forward_hook(lambda m, a, o, i=i: acts.__setitem__(i, o.detach().clone())))
        else:
            handles.append(
                module.register_forward_pre_hook(lambda m, a, i=i: acts.__setitem__(i, a[0].detach().clone()))
            )
        if fc2_outputs:
            handles.append(fc2.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, o.detach().clone())))
    try:
        yield acts, outs
    finally:
        for h in handles:
            h.remove()


def _zero_neuron_hook(module: nn.Module, capture: str, j: int, positions: List[int]):
    """A manual hook that zeroes channel j of the site at the given token positions."""

    def zero(act: torch.Tensor) -> torch.Tensor:
        out = act.clone()
        out[:, positions, j] = 0
        return out

    if capture == "output":
        return module.register_forward_hook(lambda m, a, o: zero(o))
    return module.register_forward_pre_hook(lambda m, a: (zero(a[0]),) + tuple(a[1:]))


def _zero(j: int) -> Callable[[torch.Tensor], torch.Tensor]:
    def fn(a: torch.Tensor) -> torch.Tensor:
        a = a.clone()
        a[..., j] = 0
        return a

    return fn


def _hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _assert_no_hooks(model: nn.Module) -> None:
    for name, m in model.named_modules():
        assert len(m._forward_hooks) == 0, f"forward hook left on {name!r}"
        assert len(m._forward_pre_hooks) == 0, f"forward pre-hook left on {name!r}"


def _snapshot(model: nn.Module):
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    modes = {name: m.training for name, m in model.named_modules()}
    return state, modes


def _assert_unchanged(model: nn.Module, snapshot) -> None:
    state, modes = snapshot
    now = model.state_dict()
    assert now.keys() == state.keys()
    for k, v in state.items():
        assert torch.equal(now[k], v), f"parameter/buffer {k!r} changed"
    assert {name: m.training for name, m in model.named_modules()} == modes


# ---------------------------------------------------------------------------
# Discovery
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_discovery(zoo, name):
    case = CASES[name]
    model = zoo.model(name)
    sites = NeuronSites.from_model(model)
    assert sites.model is model
    assert sites.family == case.family
    assert sites.num_layers == len(sites) == case.num_layers
    assert sites.width == case.width
    assert sites.capture == case.capture
    assert sites.tokens.kind == case.kind
    assert sites.tokens.indices == case.indices
    assert sites.tokens.num_prefix_tokens == case.prefix
    ref = case.ref(model)
    assert len(ref) == case.num_layers
    for site_module, (ref_module, ref_capture, _) in zip(sites.modules, ref):
        assert site_module is ref_module
        assert ref_capture == case.capture
    named = {id(m): n for n, m in model.named_modules()}
    assert sites.names == [named[id(m)] for m in sites.modules]


def test_discovered_names_timm_and_torchvision(zoo):
    assert NeuronSites.from_model(zoo.model("timm_vit")).names == ["blocks.0.mlp.act", "blocks.1.mlp.act"]
    assert NeuronSites.from_model(zoo.model("timm_gated")).names == ["blocks.0.mlp.fc2"]
    assert NeuronSites.from_model(zoo.model("torchvision_vit")).names == [
        "encoder.layers.encoder_layer_0.mlp.1",
        "encoder.layers.encoder_layer_1.mlp.1",
    ]
    for site in NeuronSites.from_model(zoo.model("torchvision_vit")).modules:
        assert isinstance(site, nn.GELU)


def test_timm_dinov2_models_have_layerscale_and_registers(zoo):
    """The configs really are the DINOv2-style models the discovery cases claim to be."""
    ls = zoo.raw("timm_dinov2_layerscale")
    assert type(ls.blocks[0].ls2).__name__ == "LayerScale"
    assert ls.num_prefix_tokens == 1
    assert zoo.raw("timm_dinov2_reg4").num_prefix_tokens == 5
    assert type(zoo.raw("timm_gated").blocks[0].mlp).__name__ in ("GluMlp", "SwiGLU", "SwiGLUPacked")
    assert type(zoo.raw("timm_deit_distilled")).__name__ == "VisionTransformerDistilled"


@pytest.mark.parametrize("name", [n for n in ALL if CASES[n].hf])
def test_hf_raw_and_wrapped_discover_the_same_sites(zoo, name):
    raw = zoo.raw(name)
    wrapped = zoo.model(name)
    s_raw, s_wrapped = NeuronSites.from_model(raw), NeuronSites.from_model(wrapped)
    assert all(a is b for a, b in zip(s_raw.modules, s_wrapped.modules))
    assert s_raw.tokens == s_wrapped.tokens
    assert (s_raw.width, s_raw.capture, s_raw.family) == (s_wrapped.width, s_wrapped.capture, s_wrapped.family)
    assert s_wrapped.names == ["model." + n for n in s_raw.names]
    assert s_raw.model is raw and s_wrapped.model is wrapped


def test_as_logits_model_then_discovery(zoo):
    raw = zoo.raw("hf_vit")
    wrapped = as_logits_model(raw)
    assert isinstance(wrapped, LogitsOnly) and wrapped.model is raw
    assert as_logits_model(wrapped) is wrapped
    timm_model = zoo.model("timm_vit")
    assert as_logits_model(timm_model) is timm_model
    sites = NeuronSites.from_model(wrapped)
    assert sites.family == "hf" and sites.num_layers == 2
    logits = wrapped(zoo.x("hf_vit"))
    assert isinstance(logits, torch.Tensor) and logits.shape == (BATCH, 10)


def test_from_model_tokens_override_keeps_prefix_count(zoo):
    reg = zoo.model("timm_dinov2_reg4")
    sites = NeuronSites.from_model(reg, tokens="patches")
    assert sites.tokens.kind == "patches" and sites.tokens.num_prefix_tokens == 5
    with sites.record() as acts:
        reg(zoo.x("timm_dinov2_reg4"))
    assert acts[0].shape == (BATCH, 9 - 5, 1536)

    deit = zoo.model("hf_deit")
    sites = NeuronSites.from_model(deit, tokens="patches")
    assert sites.tokens.num_prefix_tokens == 2
    with sites.record() as acts:
        deit(zoo.x("hf_deit"))
    assert acts[1].shape == (BATCH, 16, 64)

    sel = TokenSelection("indices", (2,), 3)
    assert NeuronSites.from_model(zoo.model("timm_vit"), tokens=sel).tokens is sel
    assert NeuronSites.from_model(zoo.model("timm_vit"), tokens=[0, 1]).tokens.indices == (0, 1)


# ---------------------------------------------------------------------------
# Recorded activations are the right thing
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_record_matches_manual_hook_and_fc2(zoo, name):
    case = CASES[name]
    model, x = zoo.model(name), zoo.x(name)
    ref = case.ref(model)
    sites = NeuronSites.from_model(model)
    with sites.record() as acts, _capture_full(ref, fc2_outputs=True) as (full, fc2_out):
        logits = model(x)
    _assert_no_hooks(model)
    assert logits.shape == (BATCH, 10)
    pos = _positions(case.kind, case.indices, case.prefix, case.seq_len)
    assert sorted(acts) == list(range(case.num_layers))
    for layer in range(case.num_layers):
        assert full[layer].shape == (BATCH, case.seq_len, case.width)
        assert acts[layer].shape == (BATCH, len(pos), case.width)
        assert torch.equal(acts[layer], full[layer][:, pos])
        assert not acts[layer].requires_grad
        # the site really is the input of the FFN's second linear layer
        fc2 = ref[layer][2]
        torch.testing.assert_close(fc2(full[layer]), fc2_out[layer], rtol=0, atol=1e-6)


@pytest.mark.parametrize("name", ALL)
def test_record_shapes_for_every_selection(zoo, name):
    """cls / int / indices / patches / all selections, recorded in one forward."""
    case = CASES[name]
    model, x = zoo.model(name), zoo.x(name)
    base = NeuronSites.from_model(model)
    specs = {"cls": "cls", "int": 1, "indices": [0, 2], "neg": [-1], "patches": "patches", "all": "all"}
    with contextlib.ExitStack() as stack:
        recs = {}
        for key, tokens in specs.items():
            sites = NeuronSites(model, base.modules, tokens=TokenSelection.parse(tokens, case.prefix),
                                capture=base.capture)
            recs[key] = stack.enter_context(sites.record())
        full, _ = stack.enter_context(_capture_full(case.ref(model)))
        model(x)
    _assert_no_hooks(model)
    expected = {
        "cls": [0], "int": [1], "indices": [0, 2], "neg": [case.seq_len - 1],
        "patches": list(range(case.prefix, case.seq_len)), "all": list(range(case.seq_len)),
    }
    for key, pos in expected.items():
        for layer in range(case.num_layers):
            got = recs[key][layer]
            assert got.shape == (BATCH, len(pos), case.width), key
            assert torch.equal(got, full[layer][:, pos]), key


def test_record_layers_subset_detach_and_overwrite(zoo):
    model = zoo.model("timm_vit")
    sites = NeuronSites.from_model(model)
    x = zoo.x("timm_vit")
    with sites.record(layers=[1]) as acts:
        assert acts == {}
        model(x)
        first = acts[1]
        model(x + 1.0)
        second = acts[1]
    assert list(acts) == [1]
    assert not torch.equal(first, second)  # a second forward overwrites the dict
    with sites.record(layers=[]) as acts:
        model(x)
    assert acts == {}

    xg = x.clone().requires_grad_(True)
    with sites.record(detach=False) as acts:
        model(xg)
    assert acts[0].requires_grad and acts[0].grad_fn is not None
    (grad,) = torch.autograd.grad(acts[1].sum(), xg)
    assert grad.abs().sum() > 0
    with sites.record() as acts:
        model(xg)
    assert not acts[0].requires_grad
    _assert_no_hooks(model)


# ---------------------------------------------------------------------------
# Edits
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_identity_edit_is_bit_identical(zoo, name):
    model, x = zoo.model(name), zoo.x(name)
    clean = model(x)
    for tokens in (None, "all", [0, 2]):
        sites = NeuronSites.from_model(model, tokens=tokens)
        every = range(sites.num_layers)
        for fn in (lambda a: a, lambda a: a.clone(), lambda a: a * 1.0):
            with sites.edit({layer: fn for layer in every}):
                edited = model(x)
            assert torch.equal(edited, clean)
    with NeuronSites.from_model(model).edit({}):
        assert torch.equal(model(x), clean)
    _assert_no_hooks(model)


@pytest.mark.parametrize("name", ALL)
def test_zero_neuron_all_tokens_equals_zeroed_fc2_column(zoo, name):
    case = CASES[name]
    model, x = zoo.model(name), zoo.x(name)
    j, layer = 5, 0
    clean = model(x)
    sites = NeuronSites.from_model(model, tokens="all")
    with sites.edit({layer: _zero(j)}):
        edited = model(x)

    ablated = copy.deepcopy(model)
    fc2 = case.ref(ablated)[layer][2]
    with torch.no_grad():
        fc2.weight[:, j] = 0
    expected = ablated(x)
    torch.testing.assert_close(edited, expected, rtol=0, atol=1e-6)
    assert not torch.equal(edited, clean)


@pytest.mark.parametrize("name", ALL)
def test_zero_neuron_default_tokens_equals_manual_selected_token_hook(zoo, name):
    """With the default selection (e.g. CLS) only the selected tokens are zeroed."""
    case = CASES[name]
    model, x = zoo.model(name), zoo.x(name)
    j, layer = 3, 0
    clean = model(x)
    sites = NeuronSites.from_model(model)
    with sites.edit({layer: _zero(j)}):
        edited = model(x)
    module, capture, _ = case.ref(model)[layer]
    pos = _positions(case.kind, case.indices, case.prefix, case.seq_len)
    handle = _zero_neuron_hook(module, capture, j, pos)
    try:
        expected = model(x)
    finally:
        handle.remove()
    torch.testing.assert_close(edited, expected, rtol=0, atol=1e-6)
    assert not torch.equal(edited, clean)
    if case.kind != "all" and layer < case.num_layers - 1:
        # zeroing at all tokens is a different intervention (once a later block mixes the tokens)
        all_tokens = NeuronSites.from_model(model, tokens="all")
        with all_tokens.edit({layer: _zero(j)}):
            assert not torch.equal(model(x), edited)


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("tokens", [None, "cls", [0, 2], "patches"])
def test_edit_only_affects_selected_tokens(zoo, name, tokens):
    case = CASES[name]
    model, x = zoo.model(name), zoo.x(name)
    sites = NeuronSites.from_model(model, tokens=tokens)
    watch = NeuronSites.from_model(model, tokens="all")
    with watch.record() as clean:
        model(x)
    clean = dict(clean)
    with sites.edit({0: lambda a: a + 1.0}), watch.record() as seen:  # recorder runs after the edit
        model(x)
    sel = sites.tokens
    pos = _positions(sel.kind, sel.indices, sel.num_prefix_tokens, case.seq_len)
    others = [p for p in range(case.seq_len) if p not in pos]
    torch.testing.assert_close(seen[0][:, pos], clean[0][:, pos] + 1.0, rtol=0, atol=0)
    assert torch.equal(seen[0][:, others], clean[0][:, others])
    if case.num_layers > 1:  # everything downstream is recomputed
        assert not torch.equal(seen[1], clean[1])
    _assert_no_hooks(model)


def test_edit_several_layers_and_edit_receives_selected_tokens(zoo):
    model, x = zoo.model("timm_deit_distilled"), zoo.x("timm_deit_distilled")
    sites = NeuronSites.from_model(model)
    shapes = []

    def spy(a):
        shapes.append(tuple(a.shape))
        return a

    with sites.edit({0: spy, 1: spy}):
        model(x)
    assert shapes == [(BATCH, 2, 768), (BATCH, 2, 768)]
    clean = model(x)
    with sites.edit({0: _zero(1), 1: _zero(2)}):
        both = model(x)
    with sites.edit({0: _zero(1)}):
        first = model(x)
    assert not torch.equal(both, first) and not torch.equal(first, clean)


@pytest.mark.parametrize("name", ["timm_vit", "timm_gated", "torchvision_vit", "hf_vit", "hf_dinov2"])
@pytest.mark.parametrize(
    "bad_fn",
    [lambda a: a[..., :-1], lambda a: a.sum(1, keepdim=True).expand(-1, 3, -1).contiguous(), lambda a: a[0]],
    ids=["narrower", "more_tokens", "dropped_batch"],
)
def test_shape_changing_edit_raises(zoo, name, bad_fn):
    model, x = zoo.model(name), zoo.x(name)
    sites = NeuronSites.from_model(model)
    with pytest.raises(ValueError, match="keep the shape"):
        with sites.edit({0: bad_fn}):
            model(x)
    _assert_no_hooks(model)


# ---------------------------------------------------------------------------
# Hook hygiene
# ---------------------------------------------------------------------------


class Boom(RuntimeError):
    pass


def _raise(_a):
    raise Boom("edit failed")


SCENARIOS = ["record", "edit", "record_and_edit", "raise_in_with", "raise_in_edit_fn", "raise_bad_token"]


@pytest.mark.parametrize("mode", ["eval", "train"])
@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("name", HYGIENE)
def test_hook_hygiene(zoo, name, scenario, mode):
    model, x = zoo.model(name), zoo.x(name)
    _assert_no_hooks(model)
    model.train(mode == "train")
    try:
        snap = _snapshot(model)
        sites = NeuronSites.from_model(model)
        if scenario == "record":
            with sites.record() as acts:
                assert _hook_count(model) == sites.num_layers
                model(x)
            assert len(acts) == sites.num_layers
        elif scenario == "edit":
            with sites.edit({0: _zero(0)}):
                assert _hook_count(model) == 1
                model(x)
        elif scenario == "record_and_edit":
            with sites.edit({0: _zero(0)}), sites.record(layers=[0]):
                assert _hook_count(model) == 2
                model(x)
        elif scenario == "raise_in_with":
            with pytest.raises(Boom):
                with sites.record(), sites.edit({0: _zero(0)}):
                    model(x)
                    raise Boom("user code failed")
        elif scenario == "raise_in_edit_fn":
            with pytest.raises(Boom):
                with sites.record():
                    with sites.edit({sites.num_layers - 1: _raise}):
                        model(x)
        elif scenario == "raise_bad_token":
            bad = NeuronSites.from_model(model, tokens=[0, 500])
            with pytest.raises(ValueError, match="out of range"):
                with bad.record():
                    model(x)
        _assert_no_hooks(model)
        _assert_unchanged(model, snap)
        assert model.training == (mode == "train")
    finally:
        model.eval()


def test_edit_validation_error_registers_nothing(zoo):
    model = zoo.model("timm_vit")
    sites = NeuronSites.from_model(model)
    with pytest.raises(ValueError, match="out of range"):
        with sites.edit({0: _zero(0), 2: _zero(0)}):
            pass
    with pytest.raises(ValueError, match="out of range"):
        with sites.record(layers=[0, 7]):
            pass
    with pytest.raises(TypeError):
        with sites.edit({"0": _zero(0)}):
            pass
    _assert_no_hooks(model)


def test_hooks_do_not_leak_into_a_later_forward(zoo):
    model, x = zoo.model("timm_vit"), zoo.x("timm_vit")
    clean = model(x)
    sites = NeuronSites.from_model(model)
    with sites.edit({0: _zero(0)}):
        pass
    assert torch.equal(model(x), clean)


# ---------------------------------------------------------------------------
# Explicit construction
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("tokens", ["cls", "patches", "all", 0, 3, [0, 3], [1, 2, 3], (0, -1)])
def test_from_names_matches_discovery(zoo, tokens):
    model, x = zoo.model("timm_vit"), zoo.x("timm_vit")
    names = ["blocks.0.mlp.act", "blocks.1.mlp.act"]
    explicit = NeuronSites.from_names(model, names, tokens=tokens)
    discovered = NeuronSites.from_model(model, tokens=tokens)
    assert explicit.names == names
    assert explicit.family == "custom" and explicit.capture == "output"
    assert explicit.tokens == discovered.tokens
    assert all(a is b for a, b in zip(explicit.modules, discovered.modules))
    with explicit.record() as a, discovered.record() as b:
        model(x)
    for layer in (0, 1):
        assert torch.equal(a[layer], b[layer])


def test_from_names_capture_input_on_fc2_and_width(zoo):
    model, x = zoo.model("timm_vit"), zoo.x("timm_vit")
    by_fc2 = NeuronSites.from_names(model, ["blocks.0.mlp.fc2", "blocks.1.mlp.fc2"], tokens="all", capture="input")
    assert by_fc2.width == 768 and by_fc2.capture == "input"
    by_act = NeuronSites.from_names(model, ["blocks.0.mlp.act", "blocks.1.mlp.act"], tokens="all", width=768)
    assert by_act.width == 768
    with by_fc2.record() as a, by_act.record() as b:
        model(x)
    for layer in (0, 1):
        assert torch.equal(a[layer], b[layer])


def test_from_names_num_prefix_tokens(zoo):
    model, x = zoo.model("timm_dinov2_reg4"), zoo.x("timm_dinov2_reg4")
    names = ["blocks.0.mlp.act", "blocks.1.mlp.act"]
    sites = NeuronSites.from_names(model, names, tokens="patches", num_prefix_tokens=5)
    assert sites.tokens.num_prefix_tokens == 5
    with sites.record() as acts:
        model(x)
    assert acts[0].shape == (BATCH, 4, 1536)


def test_from_names_on_wrapped_hf(zoo):
    model, x = zoo.model("hf_vit"), zoo.x("hf_vit")
    discovered = NeuronSites.from_model(model)
    explicit = NeuronSites.from_names(model, discovered.names, tokens="cls", capture="input")
    assert explicit.width == 64
    with explicit.record() as a, discovered.record() as b:
        model(x)
    assert all(torch.equal(a[i], b[i]) for i in (0, 1))


@pytest.mark.parametrize("tokens", ["cls", "patches", "all", 2, [0, 5, 9]])
def test_constructor_with_module_objects(zoo, tokens):
    model, x = zoo.model("torchvision_vit"), zoo.x("torchvision_vit")
    modules = [layer.mlp[1] for layer in model.encoder.layers]
    sites = NeuronSites(model, modules, tokens=tokens)
    assert sites.modules == modules
    assert sites.names == ["encoder.layers.encoder_layer_0.mlp.1", "encoder.layers.encoder_layer_1.mlp.1"]
    assert sites.family == "custom" and sites.capture == "output"
    assert sites.tokens == TokenSelection.parse(tokens)
    with sites.record() as acts, _capture_full(_ref_torchvision(model)) as (full, _):
        model(x)
    sel = sites.tokens
    pos = _positions(sel.kind, sel.indices, sel.num_prefix_tokens, 17)
    for layer in (0, 1):
        assert torch.equal(acts[layer], full[layer][:, pos])
    # a constructor given the linear layers infers the width
    linear = NeuronSites(model, [layer.mlp[3] for layer in model.encoder.layers], capture="input")
    assert linear.width == 64
    fc1 = NeuronSites(model, [layer.mlp[0] for layer in model.encoder.layers])
    assert fc1.width == 64


def test_constructor_names_and_family_arguments(zoo):
    model = zoo.model("timm_vit")
    sites = NeuronSites(model, [b.mlp.act for b in model.blocks], names=["a", "b"], width=768, family="mine")
    assert sites.names == ["a", "b"] and sites.width == 768 and sites.family == "mine"
    # a module not inside the model gets its class name
    stray = NeuronSites(model, [nn.GELU()])
    assert stray.names == ["GELU"]


class _Block(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class TokenMLPNet(nn.Module):
    """Not a ViT: per-token MLP blocks over (batch, tokens, dim), head on token 0."""

    def __init__(self, in_dim: int = 8, dim: int = 16, hidden: int = 24, depth: int = 3, classes: int = 4) -> None:
        super().__init__()
        self.embed = nn.Linear(in_dim, dim)
        self.stages = nn.Sequential(*[_Block(dim, hidden) for _ in range(depth)])
        self.head = nn.Linear(dim, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.stages(self.embed(x))
        h = h + h.mean(dim=1, keepdim=True)  # mix tokens so that every token matters
        return self.head(h[:, 0])


@pytest.fixture(scope="module")
def custom():
    torch.manual_seed(40)
    model = TokenMLPNet().eval()
    x = torch.randn(3, 6, 8, generator=torch.Generator().manual_seed(41))
    return model, x


def test_custom_model_has_no_discoverable_sites(custom):
    model, _ = custom
    with pytest.raises(ValueError, match="TokenMLPNet"):
        NeuronSites.from_model(model)


def test_custom_model_explicit_sites(custom):
    model, x = custom
    names = [f"stages.{i}.ffn.1" for i in range(3)]
    sites = NeuronSites.from_names(model, names, tokens="cls", width=24)
    assert sites.num_layers == 3 and sites.width == 24 and sites.family == "custom"
    full: Dict[int, torch.Tensor] = {}
    handles = [
        model.stages[i].ffn[1].register_forward_hook(lambda m, a, o, i=i: full.__setitem__(i, o.detach()))
        for i in range(3)
    ]
    try:
        with sites.record() as acts:
            clean = model(x)
    finally:
        for h in handles:
            h.remove()
    for i in range(3):
        assert acts[i].shape == (3, 1, 24)
        assert torch.equal(acts[i], full[i][:, :1])

    # input capture on the second linear layers gives the same activations and infers the width
    by_input = NeuronSites.from_names(model, [f"stages.{i}.ffn.2" for i in range(3)], tokens=[0, 4], capture="input")
    assert by_input.width == 24
    with by_input.record() as acts2:
        model(x)
    assert torch.equal(acts2[2], full[2][:, [0, 4]])

    # zeroing a neuron at every token == zeroing the fc2 input column
    j = 7
    with NeuronSites.from_names(model, names, tokens="all").edit({1: _zero(j)}):
        edited = model(x)
    ablated = copy.deepcopy(model)
    with torch.no_grad():
        ablated.stages[1].ffn[2].weight[:, j] = 0
    torch.testing.assert_close(edited, ablated(x), rtol=0, atol=1e-6)
    assert not torch.equal(edited, clean)
    with sites.edit({0: lambda a: a.clone()}):
        assert torch.equal(model(x), clean)
    _assert_no_hooks(model)


def test_site_must_produce_3d_activations():
    torch.manual_seed(42)
    model = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 2))
    sites = NeuronSites(model, [model[1]])
    assert sites.names == ["1"]
    with pytest.raises(ValueError, match=r"\(batch, tokens, d_ff\)"):
        with sites.record():
            model(torch.randn(2, 4))
    _assert_no_hooks(model)


# ---------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------


def _resnets():
    torch.manual_seed(50)
    return [
        nn.Linear(4, 4),
        timm.create_model("resnet18", pretrained=False, num_classes=10),
        torchvision.models.resnet18(num_classes=10),
    ]


def test_from_model_without_sites_names_class_and_what_was_searched():
    for model in _resnets():
        with pytest.raises(ValueError) as info:
            NeuronSites.from_model(model)
        msg = str(info.value)
        assert type(model).__name__ in msg
        assert "blocks[i].mlp.act" in msg
        assert "encoder.layers[i].mlp[1]" in msg
        assert "Hugging Face" in msg
        assert "from_names" in msg  # tells how to give sites explicitly
        _assert_no_hooks(model)


def test_from_model_rejects_non_module():
    with pytest.raises(TypeError, match="nn.Module"):
        NeuronSites.from_model(object())
    with pytest.raises(TypeError, match="nn.Module"):
        NeuronSites.from_model(lambda x: x)


def test_from_names_bad_name_lists_close_matches(zoo):
    model = zoo.model("timm_vit")
    with pytest.raises(ValueError) as info:
        NeuronSites.from_names(model, ["blocks.0.mlp.act", "blocks.0.mlp.actt"])
    msg = str(info.value)
    assert "'blocks.0.mlp.actt'" in msg and "VisionTransformer" in msg
    assert "close matches" in msg and "'blocks.0.mlp.act'" in msg
    with pytest.raises(ValueError, match="no module named") as info:
        NeuronSites.from_names(model, ["zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz"])
    assert "close matches" not in str(info.value)
    with pytest.raises(TypeError, match="list of module names"):
        NeuronSites.from_names(model, "blocks.0.mlp.act")
    with pytest.raises(ValueError, match="at least one"):
        NeuronSites.from_names(model, [])
    with pytest.raises(ValueError, match="distinct"):
        NeuronSites.from_names(model, ["blocks.0.mlp.act", "blocks.0.mlp.act"])


@pytest.mark.parametrize(
    "tokens, exc, match",
    [
        ("foo", ValueError, "'cls', 'patches', 'all'"),
        ("CLS", ValueError, "'cls', 'patches', 'all'"),
        ("indices", ValueError, "'cls', 'patches', 'all'"),
        (1.5, TypeError, "float"),
        (True, TypeError, "bool"),
        (False, TypeError, "bool"),
        ([0, 0], ValueError, "distinct"),
        ([1, 2, 1], ValueError, "distinct"),
        ([0, 1.0], TypeError, "list of ints"),
        ([0, True], TypeError, "list of ints"),
        ([], ValueError, "at least one index"),
        (None, TypeError, "NoneType"),
        ({"a": 1}, TypeError, "dict"),
    ],
)
def test_bad_tokens(zoo, tokens, exc, match):
    model = zoo.model("timm_vit")
    with pytest.raises(exc, match=match):
        TokenSelection.parse(tokens)
    with pytest.raises(exc, match=match):
        NeuronSites(model, [model.blocks[0].mlp.act], tokens=tokens)
    with pytest.raises(exc, match=match):
        NeuronSites.from_names(model, ["blocks.0.mlp.act"], tokens=tokens)
    if tokens is not None:  # None means "the model's default" for from_model
        with pytest.raises(exc, match=match):
            NeuronSites.from_model(model, tokens=tokens)


@pytest.mark.parametrize("tokens", [17, -18, [0, 17], [100]])
def test_out_of_range_token_raises_at_forward(zoo, tokens):
    model, x = zoo.model("timm_vit"), zoo.x("timm_vit")
    sites = NeuronSites.from_model(model, tokens=tokens)  # valid until the sequence length is known
    for ctx in (sites.record(), sites.edit({1: lambda a: a})):
        with pytest.raises(ValueError, match="out of range for a sequence of 17 tokens"):
            with ctx:
                model(x)
        _assert_no_hooks(model)


def test_patches_with_no_patch_tokens_raises_at_forward(zoo):
    model, x = zoo.model("timm_vit"), zoo.x("timm_vit")
    sites = NeuronSites(model, [model.blocks[0].mlp.act], tokens=TokenSelection("patches", (), 17))
    with pytest.raises(ValueError, match="selects nothing"):
        with sites.record():
            model(x)
    _assert_no_hooks(model)


def test_constructor_errors(zoo):
    model = zoo.model("timm_vit")
    act0, act1 = model.blocks[0].mlp.act, model.blocks[1].mlp.act
    with pytest.raises(ValueError, match="at least one module"):
        NeuronSites(model, [])
    with pytest.raises(ValueError, match="distinct"):
        NeuronSites(model, [act0, act1, act0])
    with pytest.raises(ValueError, match="capture"):
        NeuronSites(model, [act0], capture="outputs")
    with pytest.raises(ValueError, match="capture"):
        NeuronSites.from_names(model, ["blocks.0.mlp.act"], capture="in")
    with pytest.raises(TypeError, match="nn.Module"):
        NeuronSites("not a model", [act0])
    with pytest.raises(TypeError, match=r"modules\[1\]"):
        NeuronSites(model, [act0, "blocks.1.mlp.act"])
    with pytest.raises(TypeError):
        NeuronSites(model, None)
    # a generator of modules is accepted
    assert NeuronSites(model, (b.mlp.act for b in model.blocks)).num_layers == 2


def test_token_selection_validation_and_index():
    with pytest.raises(ValueError, match="kind"):
        TokenSelection("first")
    with pytest.raises(ValueError, match="at least one index"):
        TokenSelection("indices")
    with pytest.raises(ValueError, match="num_prefix_tokens"):
        TokenSelection("patches", (), -1)
    assert TokenSelection().kind == "cls"
    assert TokenSelection("cls").index(10) == slice(0, 1)
    assert TokenSelection("all").index(10) == slice(0, 10)
    assert TokenSelection("patches", (), 2).index(10) == slice(2, 10)
    assert TokenSelection("indices", (1, 2, 3)).index(10) == slice(1, 4)
    assert TokenSelection("indices", (-1,)).index(10) == slice(9, 10)
    assert TokenSelection("indices", (0, 5)).index(10) == [0, 5]
    assert TokenSelection.parse(4) == TokenSelection("indices", (4,), 1)
    assert TokenSelection.parse((0, 1), 2) == TokenSelection("indices", (0, 1), 2)
    assert TokenSelection.parse("patches", 5).num_prefix_tokens == 5
    sel = TokenSelection("all")
    assert TokenSelection.parse(sel) is sel
    assert str(TokenSelection("indices", (0, 1))) == "indices[0, 1]"
    assert str(TokenSelection("patches", (), 5)).startswith("patches") and "5" in str(TokenSelection("patches", (), 5))
    assert str(TokenSelection("all")) == "all" and str(TokenSelection("cls")) == "cls"


def test_check_layer(zoo):
    sites = NeuronSites.from_model(zoo.model("timm_vit"))
    assert sites.check_layer(0) == 0 and sites.check_layer(1) == 1
    for bad in (-1, 2, 100):
        with pytest.raises(ValueError, match=r"out of range.*2 layers"):
            sites.check_layer(bad)
    for bad in (1.0, "0", True, None, torch.tensor(0)):
        with pytest.raises(TypeError, match="must be an int"):
            sites.check_layer(bad)
    with pytest.raises(ValueError, match="^start_layer 5"):
        sites.check_layer(5, "start_layer")


# ---------------------------------------------------------------------------
# repr
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, parts",
    [
        ("timm_vit", ["family='timm'", "num_layers=2", "width=768", "tokens=cls", "blocks.0.mlp.act"]),
        ("timm_deit_distilled", ["family='timm'", "num_layers=2", "width=768", "indices[0, 1]"]),
        ("timm_mae_avg", ["family='timm'", "width=128", "tokens=patches"]),
        ("timm_gated", ["num_layers=1", "width=128", "capture='input'", "blocks.0.mlp.fc2"]),
        ("torchvision_vit", ["family='torchvision'", "num_layers=2", "width=64", "tokens=cls"]),
        # newer transformers name the SwiGLU output projection down_proj, older ones weights_out
        ("hf_dinov2_swiglu", ["family='hf'", "num_layers=2", "width=48", "tokens=all", ("down_proj", "weights_out")]),
    ],
)
def test_repr(zoo, name, parts):
    text = repr(NeuronSites.from_model(zoo.model(name)))
    assert text.startswith("NeuronSites(")
    for part in parts:
        assert any(p in text for p in ((part,) if isinstance(part, str) else part)), (part, text)


def test_repr_custom(custom):
    model, _ = custom
    text = repr(NeuronSites.from_names(model, ["stages.0.ffn.1"], tokens=[0, 2], width=24))
    for part in ("family='custom'", "num_layers=1", "width=24", "indices[0, 2]", "stages.0.ffn.1"):
        assert part in text


# ---------------------------------------------------------------------------
# Regressions: in-place edits on non-contiguous selections, aliased negative indices
# ---------------------------------------------------------------------------


def test_in_place_edit_applies_for_non_contiguous_indices(zoo):
    model, x = zoo.model("timm_vit"), zoo.x("timm_vit")
    clean = model(x)

    def zero_in_place(a):
        a[..., 3] = 0
        return a

    results = {}
    for tokens in ([0, 1], [0, 2]):
        sites = NeuronSites.from_model(model, tokens=tokens)
        with sites.edit({0: zero_in_place}):
            results[str(tokens)] = model(x)
    assert not torch.equal(results["[0, 1]"], clean)  # contiguous: the in-place edit applies
    assert not torch.equal(results["[0, 2]"], clean)  # non-contiguous: written back too


def test_negative_index_alias_is_rejected(zoo):
    model, x = zoo.model("timm_vit"), zoo.x("timm_vit")
    sites = NeuronSites.from_model(model, tokens=[1, -16])
    with pytest.raises(ValueError):
        with sites.record():
            model(x)
