"""Backbones found anywhere: a model of a registered family inside a wrapper (a linear probe, an
``nn.Sequential(normalize, backbone, head)``, a Lightning-style module holding ``.model``, an
open_clip tower under a hand-written zero-shot head) has its sites discovered with their full
names, the joint score equals the removal effect written out with plain forward hooks, and
where the fast residual-stream engine runs (checked on the batch) the path search gives the
whole-model engine's paths. Several backbones are an error naming them; ``backbone=`` picks one.

Tiny random-weight models (seeded), a few seconds each on CPU.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import pytest
import timm
import torch
from torch import nn

from captum_paths import JointNeuronIntegratedGradients, LayerProgressiveNeuronPath, NeuronSites
from captum_paths.model.stream import ResidualStream
from captum_paths.model.tokens import TokenSelection
from captum_paths.search import neuron_path
from test_families import _sharpen

transformers = pytest.importorskip("transformers")
torchvision = pytest.importorskip("torchvision")

D, CLASSES = 32, 5
HF_COMMON = dict(image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=D, num_attention_heads=2)


# ----------------------------------------------------------------------------------- backbones
def _timm(num_classes: int = 0, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, embed_dim=D, num_heads=2,
                             mlp_ratio=2.0, num_classes=num_classes)


def _torchvision() -> nn.Module:
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=D, mlp_dim=64)
    model.heads = nn.Identity()  # the usual feature extractor: the class token's features
    return model


def _hf_vit() -> nn.Module:
    torch.manual_seed(0)
    return transformers.ViTModel(transformers.ViTConfig(intermediate_size=64, **HF_COMMON))


def _hf_classifier() -> nn.Module:
    torch.manual_seed(0)
    return transformers.ViTForImageClassification(
        transformers.ViTConfig(intermediate_size=64, num_labels=CLASSES, **HF_COMMON))


def _dinov2() -> nn.Module:
    torch.manual_seed(0)
    return transformers.Dinov2Model(transformers.Dinov2Config(mlp_ratio=2, **HF_COMMON))


def _open_clip_tower() -> nn.Module:
    pytest.importorskip("open_clip")
    from open_clip.transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(image_size=32, patch_size=8, width=D, layers=2, heads=2, mlp_ratio=2.0, output_dim=16)


# ------------------------------------------------------------------------------------ wrappers
class Probe(nn.Module):
    """A linear probe on a backbone's features (``read`` takes them from its output)."""

    def __init__(self, backbone: nn.Module, read: Callable = lambda out: out, features: int = D) -> None:
        super().__init__()
        self.backbone = backbone
        self.read = read
        self.head = nn.Linear(features, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.read(self.backbone(x)))


class Normalize(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.25) / 0.5


class Pooled(nn.Module):
    """A Hugging Face backbone's ``pooler_output``, as a module of an ``nn.Sequential``."""

    def forward(self, out) -> torch.Tensor:
        return out.pooler_output


class Lightning(nn.Module):
    """A Lightning-style module: the network under ``.model`` (``read`` takes the logits)."""

    def __init__(self, model: nn.Module, read: Callable = lambda out: out) -> None:
        super().__init__()
        self.model = model
        self.read = read

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.read(self.model(x))


class ZeroShotHead(nn.Module):
    """A hand-written zero-shot head: cosine similarity of the tower's embedding with class embeddings."""

    def __init__(self, tower: nn.Module) -> None:
        super().__init__()
        self.encoder = tower
        self.register_buffer("text", torch.randn(CLASSES, 16, generator=torch.Generator().manual_seed(3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = self.encoder(x)
        return 30.0 * (features / features.norm(dim=-1, keepdim=True)) @ (self.text / self.text.norm(dim=-1,
                                                                                                     keepdim=True)).T


def _timm_names(prefix: str) -> List[Tuple[str, str]]:
    return [(f"{prefix}blocks.{i}.mlp.act", "output") for i in range(2)]


def _torchvision_names(prefix: str) -> List[Tuple[str, str]]:
    return [(f"{prefix}encoder.layers.encoder_layer_{i}.mlp.1", "output") for i in range(2)]


def _open_clip_names(prefix: str) -> List[Tuple[str, str]]:
    return [(f"{prefix}transformer.resblocks.{i}.mlp.gelu", "output") for i in range(2)]


def _hf_names(backbone: nn.Module, prefix: str) -> List[Tuple[str, str]]:
    """The sites of the bare backbone (their layout changes with the transformers version), prefixed."""
    bare = NeuronSites.from_model(backbone)
    return [(prefix + name, capture) for name, capture in zip(bare.names, bare.captures)]


@dataclass
class Case:
    build: Callable[[], nn.Module]
    path: str                                    # where the backbone is in the wrapper
    family: str
    names: Callable[[nn.Module], List[Tuple[str, str]]]   # (module name, capture) per layer, from the wrapper
    stream: bool                                 # the fast engine runs (its family declares a stream)


def _sharpened(model: nn.Module) -> nn.Module:
    head = getattr(model, "head", None)
    return _sharpen(model, head if isinstance(head, nn.Linear) else None)


CASES = {
    "timm-probe": Case(lambda: Probe(_timm()), "backbone", "timm", lambda m: _timm_names("backbone."), True),
    "timm-sequential": Case(lambda: nn.Sequential(Normalize(), _timm(), nn.Linear(D, CLASSES)), "1", "timm",
                            lambda m: _timm_names("1."), True),
    "timm-lightning": Case(lambda: Lightning(_timm(CLASSES)), "model", "timm", lambda m: _timm_names("model."), True),
    "torchvision-probe": Case(lambda: Probe(_torchvision()), "backbone", "torchvision",
                              lambda m: _torchvision_names("backbone."), True),
    "torchvision-sequential": Case(lambda: nn.Sequential(Normalize(), _torchvision(), nn.Linear(D, CLASSES)), "1",
                                   "torchvision", lambda m: _torchvision_names("1."), True),
    "hf-vit-probe": Case(lambda: Probe(_hf_vit(), lambda out: out.pooler_output), "backbone", "hf",
                         lambda m: _hf_names(m.backbone, "backbone."), True),
    "hf-vit-sequential": Case(lambda: nn.Sequential(Normalize(), _hf_vit(), Pooled(), nn.Linear(D, CLASSES)), "1",
                              "hf", lambda m: _hf_names(m[1], "1."), True),
    "hf-classifier-lightning": Case(lambda: Lightning(_hf_classifier(), lambda out: out.logits), "model", "hf",
                                    lambda m: _hf_names(m.model, "model."), True),
    "hf-dinov2-probe": Case(lambda: Probe(_dinov2(), lambda out: out.last_hidden_state[:, 0]), "backbone", "hf",
                            lambda m: _hf_names(m.backbone, "backbone."), True),
    "open_clip-zero-shot": Case(lambda: ZeroShotHead(_open_clip_tower()), "encoder", "open_clip",
                                lambda m: _open_clip_names("encoder."), False),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    spec = CASES[request.param]
    model = _sharpened(spec.build()).eval()
    torch.manual_seed(1)
    return request.param, spec, model, torch.rand(3, 3, 32, 32)


# ------------------------------------------------------------------------------ literal hooks
def _prob(model: nn.Module, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).softmax(-1).gather(1, target[:, None])[:, 0]


def _literal_removal(model: nn.Module, x: torch.Tensor, target: torch.Tensor, layout: Sequence[Tuple[str, str]],
                     sets: Sequence[Sequence[Tuple[int, int]]], positions: Callable[[int], List[int]]) -> torch.Tensor:
    """``F(x) - F(x with the sets zeroed)``, F the softmax probability of the target: plain hooks on
    the named modules zero channel ``j`` of layer ``l`` (``(l, j)`` in ``sets[r]``) of row ``r`` at the
    token ``positions(tokens)`` of the module's output (or first input)."""
    def zero(t: torch.Tensor, layer: int) -> torch.Tensor:
        t = t.clone()
        at = positions(t.shape[1])
        for r, units in enumerate(sets):
            for l, j in units:
                if l == layer:
                    t[r, at, j] = 0.0
        return t

    handles = []
    for layer, (name, capture) in enumerate(layout):
        module = model.get_submodule(name)
        if capture == "output":
            handles.append(module.register_forward_hook(lambda m, a, o, l=layer: zero(o, l)))
        else:
            handles.append(module.register_forward_pre_hook(lambda m, a, l=layer: (zero(a[0], l),) + a[1:]))
    try:
        removed = _prob(model, x, target)
    finally:
        for h in handles:
            h.remove()
    return _prob(model, x, target) - removed


def _cls(n: int) -> List[int]:
    return [0]


def _no_hooks(model: nn.Module) -> bool:
    return not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())


def _searches(model, sites, x, target, monkeypatch, **options):
    """The path search with the engine the search picks, and with the whole model; the streams it picked."""
    picked = []
    original = neuron_path._stream_for

    def spy(s, ctx):
        picked.append(original(s, ctx))
        return picked[-1]

    options = dict(dict(k=1, refine=2, n_steps=8), **options)
    with monkeypatch.context() as m:
        m.setattr(neuron_path, "_stream_for", spy)
        fast = LayerProgressiveNeuronPath(model, sites=sites).attribute(x, target=target, **options)
    with monkeypatch.context() as m:
        m.setattr(neuron_path, "_stream_for", lambda s, ctx: None)
        slow = LayerProgressiveNeuronPath(model, sites=sites).attribute(x, target=target, **options)
    return fast, slow, picked


# ---------------------------------------------------------------------------------- 1. discovery
def test_the_backbone_is_found_with_its_names_family_and_pooling(case):
    name, spec, model, _ = case
    sites = NeuronSites.from_model(model)
    assert [(n, c) for n, c in zip(sites.names, sites.captures)] == spec.names(model), name
    assert sites.backbone == spec.path and sites.family == spec.family, name
    assert sites.tokens.kind == "cls", name  # every backbone here pools its class token
    assert all(m is model.get_submodule(n) for m, (n, _) in zip(sites.modules, spec.names(model)))
    heads = NeuronSites.heads_from_model(model)
    assert heads.backbone == spec.path and heads.num_layers == 2
    assert all(n.startswith(spec.path + ".") for n in heads.names)
    assert f"backbone={spec.path!r}" in repr(sites)


def test_the_joint_score_is_the_literal_removal_effect(case):
    name, spec, model, x = case
    sites = NeuronSites.from_model(model)
    target = torch.tensor([0, 2, 4])
    sets = [[(0, 3), (1, 10)], [(0, 7), (1, 1)], [(1, 60), (0, 0)]]
    phi, jas, delta = JointNeuronIntegratedGradients(model, sites).attribute(
        x, sets, target=target, n_steps=32, return_convergence_delta=True, return_jas=True)
    literal = _literal_removal(model, x, target, spec.names(model), sets, _cls)
    torch.testing.assert_close(jas, literal, rtol=1e-5, atol=1e-7)
    assert literal.abs().max() > 1e-4, name  # the sets matter: the check is not 0 == 0
    assert (delta.abs() <= 1e-2 * jas.abs() + 1e-6).all(), name
    assert _no_hooks(model)


def test_the_stream_runs_where_declared_and_gives_the_whole_models_paths(case, monkeypatch):
    name, spec, model, x = case
    sites = NeuronSites.from_model(model)
    stream = ResidualStream.from_sites(sites)
    with torch.no_grad():
        logits = model(x)
    assert (stream is not None and stream.matches(x, logits)) == spec.stream, name
    target = torch.tensor([1, 3, 0])
    fast, slow, picked = _searches(model, sites, x, target, monkeypatch)
    assert any(p is not None for p in picked) == spec.stream, name
    assert torch.equal(fast.paths, slow.paths), name
    torch.testing.assert_close(fast.jas, slow.jas, rtol=1e-5, atol=1e-7)
    sets = [[(l, int(fast.paths[r, l, 0])) for l in range(2)] for r in range(3)]
    torch.testing.assert_close(fast.jas.double(), _literal_removal(model, x, target, spec.names(model), sets,
                                                                    _cls).double(), rtol=1e-4, atol=1e-6)
    assert _no_hooks(model)


def test_the_issue_example_names_the_blocks_under_the_wrapper():
    class Wrapper(nn.Module):
        def __init__(self, backbone):
            super().__init__()
            self.backbone = backbone
            self.head = nn.Linear(backbone.num_features, 3)

        def forward(self, x):
            return self.head(self.backbone(x))

    model = Wrapper(timm.create_model("vit_tiny_patch16_224", num_classes=0))
    sites = NeuronSites.from_model(model)
    assert sites.names[3] == "backbone.blocks.3.mlp.act" and sites.num_layers == 12
    assert sites.family == "timm" and sites.backbone == "backbone" and sites.tokens.kind == "cls"


# ------------------------------------------------------------------------------ 2. the tokens
class _MeanProbe(nn.Module):
    """A probe on the mean of the patch tokens of a DINOv2 backbone: not its own (class token) pooling."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = _dinov2()
        self.head = nn.Linear(D, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(pixel_values=x).last_hidden_state[:, 1:].mean(dim=1))


@pytest.mark.parametrize("tokens", [None, "patches", "all", [0, 3]])
def test_any_tokens_give_the_removal_effect_at_those_tokens(tokens, monkeypatch):
    """The default is the backbone's pooling (its class token); a probe on the mean of the patch tokens is
    read there with tokens='patches'. The joint score is the removal effect at the tokens chosen,
    whatever they are, and the stream search equals the whole-model search."""
    model = _sharpen(_MeanProbe(), None).eval()
    torch.manual_seed(2)
    x = torch.rand(2, 3, 32, 32)
    sites = NeuronSites.from_model(model, tokens=tokens)
    expected = {None: [0], "patches": list(range(1, 17)), "all": list(range(17)), 3: [0, 3]}
    key = 3 if isinstance(tokens, list) else tokens
    assert sites.tokens == (TokenSelection("cls", (), 1) if tokens is None else
                            TokenSelection.parse(tokens, 1))
    layout = _hf_names(model.backbone, "backbone.")
    target = torch.tensor([1, 4])
    sets = [[(0, 5), (1, 9)], [(1, 2), (0, 40)]]
    _, jas = JointNeuronIntegratedGradients(model, sites).attribute(x, sets, target=target, return_jas=True)
    literal = _literal_removal(model, x, target, layout, sets, lambda n: expected[key])
    torch.testing.assert_close(jas, literal, rtol=1e-5, atol=1e-7)
    fast, slow, picked = _searches(model, sites, x, target, monkeypatch)
    assert picked and picked[0] is not None  # the wrapper reads the backbone's output only: fast engine
    assert torch.equal(fast.paths, slow.paths)
    torch.testing.assert_close(fast.jas, slow.jas, rtol=1e-5, atol=1e-7)


# ------------------------------------------------------------------- 3. when the stream must not run
class _SkipProbe(nn.Module):
    """A wrapper that reads the images besides the backbone: its output is no function of the backbone's."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = _timm()
        self.head = nn.Linear(D, CLASSES)
        self.skip = nn.Linear(3, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x)) + self.skip(x.mean(dim=(2, 3)))


class _FeaturesProbe(nn.Module):
    """A wrapper that calls the backbone's forward_features (not its forward) and pools the patches itself."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = _timm()
        self.head = nn.Linear(D, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone.forward_features(x)[:, 1:].mean(dim=1))


class _TwiceProbe(Probe):
    """A wrapper that calls its backbone twice (a flip test-time augmentation)."""

    def __init__(self) -> None:
        super().__init__(_timm())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(x) + self.backbone(x.flip(-1)))


@pytest.mark.parametrize("wrapper", [_SkipProbe, _FeaturesProbe])
def test_a_wrapper_that_is_not_a_function_of_the_backbone_output_runs_whole(wrapper, monkeypatch):
    model = _sharpen(wrapper(), None).eval()
    torch.manual_seed(3)
    x = torch.rand(2, 3, 32, 32)
    tokens = "patches" if wrapper is _FeaturesProbe else None
    sites = NeuronSites.from_model(model, tokens=tokens)
    assert sites.backbone == "backbone" and ResidualStream.from_sites(sites) is not None
    with torch.no_grad():
        assert not ResidualStream.from_sites(sites).matches(x, model(x))
    target = torch.tensor([0, 1])
    fast, slow, picked = _searches(model, sites, x, target, monkeypatch)
    assert picked == [None]
    assert torch.equal(fast.paths, slow.paths)
    sets = [[(l, int(fast.paths[r, l, 0])) for l in range(2)] for r in range(2)]
    positions = (lambda n: list(range(1, n))) if tokens == "patches" else _cls
    torch.testing.assert_close(fast.jas.double(), _literal_removal(model, x, target, _timm_names("backbone."), sets,
                                                                    positions).double(), rtol=1e-4, atol=1e-6)
    assert _no_hooks(model)


def test_a_wrapper_calling_its_backbone_twice_is_refused_by_the_stream_check():
    """Its sites run twice per forward: the stream check refuses it (the search's order check then
    says the sites do not run once each)."""
    model = _sharpen(_TwiceProbe(), None).eval()
    x = torch.rand(2, 3, 32, 32)
    sites = NeuronSites.from_model(model)
    with torch.no_grad():
        assert not ResidualStream.from_sites(sites).matches(x, model(x))
    assert _no_hooks(model) and "forward" not in model.backbone.__dict__


# --------------------------------------------------------------------------- 4. several backbones
class _Ensemble(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.student = _timm(CLASSES, seed=0)
        self.teacher = _timm(CLASSES, seed=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (self.student(x) + self.teacher(x)) / 2


def test_several_backbones_are_named_and_one_is_picked_with_backbone():
    model = _Ensemble().eval()
    for call in (NeuronSites.from_model, NeuronSites.heads_from_model, JointNeuronIntegratedGradients,
                 LayerProgressiveNeuronPath):
        with pytest.raises(ValueError) as info:
            call(model)
        message = str(info.value)
        assert "'student'" in message and "'teacher'" in message and "backbone=" in message, message
        assert "2 backbones" in message, message
    teacher = NeuronSites.from_model(model, backbone="teacher")
    assert teacher.names == [f"teacher.blocks.{i}.mlp.act" for i in range(2)] and teacher.backbone == "teacher"
    by_module = NeuronSites.from_model(model, backbone=model.teacher)
    assert by_module.modules == teacher.modules
    heads = NeuronSites.heads_from_model(model, backbone="student")
    assert heads.names == [f"student.blocks.{i}.attn.proj" for i in range(2)]
    # modules as sites need no backbone=: the backbone holding them is found
    explicit = NeuronSites.coerce(model, [model.teacher.blocks[1].mlp.act])
    assert explicit.names == ["teacher.blocks.1.mlp.act"] and explicit.tokens.kind == "cls"
    torch.manual_seed(4)
    x = torch.rand(2, 3, 32, 32)
    target = torch.tensor([2, 3])
    sets = [[(0, 11), (1, 30)], [(1, 5), (0, 6)]]
    _, jas = JointNeuronIntegratedGradients(model, teacher).attribute(x, sets, target=target, return_jas=True)
    torch.testing.assert_close(jas, _literal_removal(model, x, target, _timm_names("teacher."), sets, _cls),
                               rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="no module named 'teachr'.*close matches"):
        NeuronSites.from_model(model, backbone="teachr")
    with pytest.raises(ValueError, match="not a submodule"):
        NeuronSites.from_model(model, backbone=_timm())
    with pytest.raises(ValueError, match="not a model of a registered family"):
        NeuronSites.from_model(model, backbone="teacher.head")


def test_a_wrapper_of_no_backbone_says_where_it_looked():
    model = nn.Sequential(Normalize(), torchvision.models.resnet18(num_classes=3))
    with pytest.raises(ValueError, match=r"cannot find neuron sites in a Sequential: .*each of its submodules"):
        NeuronSites.from_model(model)


def test_mixed_sites_in_a_wrapper_run_on_the_stream(monkeypatch):
    model = _sharpen(Probe(_timm()), None).eval()
    both = NeuronSites.mixed(NeuronSites.heads_from_model(model), NeuronSites.from_model(model))
    assert both.backbone == "backbone" and both.family == "timm"
    torch.manual_seed(5)
    x = torch.rand(2, 3, 32, 32)
    fast, slow, picked = _searches(model, both, x, torch.tensor([0, 3]), monkeypatch)
    assert picked and picked[0] is not None
    assert torch.equal(fast.paths, slow.paths)
    torch.testing.assert_close(fast.jas, slow.jas, rtol=1e-5, atol=1e-7)


def test_the_patch_size_of_a_wrapped_backbone_is_its_own():
    from captum_paths.analysis.pixels import model_patch_size

    class Probe(nn.Module):
        def __init__(self):
            super().__init__()
            self.backbone = timm.create_model("vit_tiny_patch16_224", num_classes=0, img_size=32, depth=2)
            self.head = nn.Linear(self.backbone.num_features, 3)

        def forward(self, x):
            return self.head(self.backbone(x))

    assert model_patch_size(Probe()) == (16, 16)
