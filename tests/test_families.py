"""Model family adapters: for every family, tiny random-weight models (no downloads) get the
right sites, a path search runs, the reported JAS is the removal effect, and where the
fast stream is used its paths equal the whole-model search's."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List, Optional, Union

import pytest
import timm
import torch
from torch import nn

from captum_paths import LayerProgressiveNeuronPath, NeuronSites
from captum_paths.model.families import FamilyAdapter, SiteSpec, families, find_family, register_family
from captum_paths.model.families import base as family_base
from captum_paths.evaluation.interventions import remove_neurons
from captum_paths.model.loading import as_logits_model
from captum_paths.search import neuron_path
from captum_paths.model.stream import ResidualStream
from captum_paths.model.tokens import TokenSelection
from captum_paths.model.zero_shot import ZeroShotClassifier


def _sharpen(model: nn.Module, head: Optional[nn.Module] = None, gain: float = 3.0) -> nn.Module:
    """Redraw every linear layer with unit gain (and the classifier with ``gain``) so that a random
    network's softmax is far from uniform and single neurons move it."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                scale = (gain if module is head else 1.0) / module.in_features ** 0.5
                module.weight.copy_(torch.randn(module.weight.shape, generator=gen) * scale)
            elif isinstance(module, nn.LayerNorm) and module.weight is not None:
                module.weight.fill_(1.0)  # zero-initialised residual post-norms (Swin V2) would mute the blocks
    return model.eval()


def _timm(name, **kw):
    def build():
        torch.manual_seed(0)
        model = timm.create_model(name, num_classes=5, **kw)
        return _sharpen(model, model.head)
    return build


def _torchvision_vit():
    from torchvision.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    model = VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
                              num_classes=5)
    return _sharpen(model, model.heads.head)


def _torchvision_swin():
    from torchvision.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    model = SwinTransformer(patch_size=[4, 4], embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=[4, 4],
                            num_classes=5)
    return _sharpen(model, model.head)


def _hf_swin():
    import transformers

    torch.manual_seed(0)
    model = transformers.SwinForImageClassification(transformers.SwinConfig(
        image_size=32, patch_size=4, embed_dim=16, depths=[1, 1], num_heads=[1, 2], window_size=4, num_labels=5))
    return as_logits_model(_sharpen(model, model.classifier))


def _hf(config_name, model_name, **kw):
    def build():
        import transformers

        torch.manual_seed(0)
        config = getattr(transformers, config_name)(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64,
                                                    num_hidden_layers=2, num_attention_heads=2, num_labels=5, **kw)
        model = getattr(transformers, model_name)(config)
        return as_logits_model(_sharpen(model, model.classifier))
    return build


class _Tokens:
    def __call__(self, texts, **kw):
        gen = torch.Generator().manual_seed(sum(ord(c) for c in "".join(texts)))  # each class its own text
        return {"input_ids": torch.randint(0, 100, (len(texts), 16), generator=gen),
                "attention_mask": torch.ones(len(texts), 16, dtype=torch.long)}


def _hf_zero_shot(kind):
    def build():
        import transformers

        torch.manual_seed(0)
        vision = dict(image_size=32, patch_size=8, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                      num_attention_heads=2)
        text = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=100,
                    max_position_embeddings=16)
        if kind == "clip":
            model = transformers.CLIPModel(transformers.CLIPConfig(vision_config=vision, text_config=text,
                                                                   projection_dim=16))
        else:
            model = transformers.SiglipModel(transformers.SiglipConfig(vision_config=vision, text_config=text))
        return ZeroShotClassifier.from_hf(_sharpen(model), _Tokens(), ["a", "b", "c", "d", "e"]).eval()
    return build


def _open_clip_zero_shot():
    from open_clip.model import CLIP

    torch.manual_seed(0)
    model = CLIP(embed_dim=32, vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
                 text_cfg=dict(context_length=16, vocab_size=100, width=32, heads=2, layers=1))
    return ZeroShotClassifier.from_open_clip(_sharpen(model), lambda texts: _Tokens()(texts)["input_ids"],
                                             ["a", "b", "c", "d", "e"]).eval()


@dataclass
class Case:
    build: Callable[[], nn.Module]
    size: int
    family: str
    layers: int
    width: Union[int, List[int]]  # one width, or one per layer (hierarchical models)
    tokens: str
    stream: bool  # the fast stream is built and verified
    needs: Optional[str] = None  # an optional package


SMALL = dict(img_size=32, patch_size=8, depth=2, embed_dim=32, num_heads=2)
CASES = {
    "timm_vit": Case(_timm("vit_tiny_patch16_224", **SMALL, mlp_ratio=2.0), 32, "timm", 2, 64, "cls", True),
    "timm_deit_distilled": Case(_timm("deit_tiny_distilled_patch16_224", **SMALL), 32, "timm", 2, 128, "indices",
                                True),
    "timm_dinov2_registers": Case(_timm("vit_small_patch14_reg4_dinov2", img_size=28, patch_size=14, depth=2,
                                        embed_dim=32, num_heads=2), 28, "timm", 2, 128, "cls", True),
    "timm_eva02_swiglu_rope": Case(_timm("eva02_tiny_patch14_224", img_size=28, depth=2), 28, "timm-eva", 2, 512,
                                   "patches", True),
    "timm_beit": Case(_timm("beit_base_patch16_224", **SMALL), 32, "timm-beit", 2, 128, "patches", True),
    "timm_cait": Case(_timm("cait_xxs24_224", **SMALL), 32, "timm-cait", 4, 128, "all", False),
    "timm_xcit": Case(_timm("xcit_nano_12_p16_224", img_size=32, depth=2, embed_dim=32, num_heads=2,
                            cls_attn_layers=2), 32, "timm-late-cls", 4, 128, "all", False),
    "timm_convit": Case(_timm("convit_tiny", img_size=32, patch_size=8, depth=3, embed_dim=32, num_heads=2,
                              local_up_to_layer=2), 32, "timm-late-cls", 3, 256, "all", False),
    "timm_swin": Case(_timm("swin_tiny_patch4_window7_224", img_size=32, window_size=4, depths=(1, 2), num_heads=(1, 2),
                            embed_dim=16), 32, "timm-swin", 3, [64, 128, 128], "all", False),
    "timm_swinv2": Case(_timm("swinv2_tiny_window8_256", img_size=32, window_size=4, depths=(1, 1), num_heads=(1, 2),
                              embed_dim=16), 32, "timm-swin", 2, [64, 128], "all", False),
    "timm_swinv2_cr": Case(_timm("swinv2_cr_tiny_224", img_size=32, window_size=4, depths=(1, 1), num_heads=(1, 2),
                                 embed_dim=16), 32, "timm-swin", 2, [64, 128], "all", False),
    "timm_pit_fallback": Case(_timm("pit_ti_224", img_size=64), 64, "timm-staged", 12,
                              [256] * 2 + [512] * 6 + [1024] * 4, "cls", False),
    "torchvision_vit": Case(_torchvision_vit, 32, "torchvision", 2, 64, "cls", True),
    "torchvision_swin": Case(_torchvision_swin, 32, "torchvision-swin", 2, [64, 128], "all", False),
    "hf_swin": Case(_hf_swin, 32, "hf-swin", 2, [64, 128], "all", False),
    "hf_vit": Case(_hf("ViTConfig", "ViTForImageClassification"), 32, "hf", 2, 64, "cls", True),
    "hf_beit": Case(_hf("BeitConfig", "BeitForImageClassification", use_mean_pooling=True), 32, "hf", 2, 64,
                    "patches", False),
    "hf_clip_zero_shot": Case(_hf_zero_shot("clip"), 32, "zero-shot", 2, 64, "cls", False),
    "hf_siglip_zero_shot": Case(_hf_zero_shot("siglip"), 32, "zero-shot", 2, 64, "all", False),
    "open_clip_zero_shot": Case(_open_clip_zero_shot, 32, "zero-shot", 2, 256, "cls", False, needs="open_clip"),
}


@pytest.fixture(scope="module", params=sorted(CASES))
def case(request):
    case = CASES[request.param]
    if case.needs:
        pytest.importorskip(case.needs)
    torch.manual_seed(1)
    x = torch.randn(3, 3, case.size, case.size)
    return request.param, case, case.build(), x


def test_sites_have_the_declared_layers_width_and_tokens(case):
    name, c, model, x = case
    sites = NeuronSites.from_model(model)
    widths = c.width if isinstance(c.width, list) else [c.width] * c.layers
    assert (sites.family, sites.num_layers, sites.widths, sites.tokens.kind) == (c.family, c.layers, widths,
                                                                                c.tokens), name
    assert sites.width == (None if len(set(widths)) > 1 else widths[0])
    with torch.no_grad(), sites.record() as acts:
        model(x)
    assert sorted(acts) == list(range(c.layers))
    assert [a.shape[-1] for a in acts.values()] == widths and all(a.shape[0] == 3 for a in acts.values())


def test_search_reports_the_removal_effect_and_the_stream_agrees(case, monkeypatch):
    name, c, model, x = case
    target = torch.tensor([0, 2, 4])
    sites = NeuronSites.from_model(model)
    stream = ResidualStream.from_sites(sites)
    with torch.no_grad():
        logits = model(x)
    assert (stream is not None and (stream.matches(x, logits) or stream.plain().matches(x, logits))) == c.stream
    result = LayerProgressiveNeuronPath(model).attribute(x, target=target, k=2, n_steps=4)
    assert result.paths.shape == (3, c.layers, 2)
    with torch.no_grad():
        clean = logits.softmax(-1).gather(1, target[:, None])[:, 0]
        with remove_neurons(sites, result.paths):
            removed = model(x).softmax(-1).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(result.jas, clean - removed, rtol=1e-4, atol=1e-7)
    assert (result.jas.abs() > 1e-6).all(), f"{name}: the tiny model should respond to its path"
    if isinstance(c.width, list):  # every neuron within its own layer's width; the widths are recorded
        assert all((result.paths[:, layer] < w).all() for layer, w in enumerate(c.width))
        assert result.settings["widths"] == c.width
    else:
        assert "widths" not in result.settings
    if c.stream:  # the fast engine's paths equal the whole-model search's
        monkeypatch.setattr(neuron_path.ResidualStream, "from_sites", classmethod(lambda cls, s: None))
        whole = LayerProgressiveNeuronPath(model).attribute(x, target=target, k=2, n_steps=4)
        assert torch.equal(whole.paths, result.paths), name
        torch.testing.assert_close(whole.jas, result.jas, rtol=1e-4, atol=1e-7)


def test_a_users_adapter_takes_over_and_can_be_removed():
    class Tiny(nn.Module):
        def __init__(self):
            super().__init__()
            self.ffn = nn.ModuleList(nn.Sequential(nn.Linear(4, 6), nn.ReLU(), nn.Linear(6, 4)) for _ in range(2))
            self.head = nn.Linear(4, 3)

        def forward(self, x):  # x: (batch, tokens, 4)
            for f in self.ffn:
                x = x + f(x)
            return self.head(x.mean(1))

    model = Tiny().eval()
    with pytest.raises(ValueError, match="cannot find neuron sites in a Tiny: looked for .*register_family"):
        NeuronSites.from_model(model)

    @register_family
    class TinyFamily(FamilyAdapter):
        name = "tiny-test"

        def sites(self, m):
            if not isinstance(m, Tiny):
                return None
            return SiteSpec([f[1] for f in m.ffn], "output", TokenSelection("all", (), 0), 6)

    try:
        assert families()[0] == "tiny-test"
        sites = NeuronSites.from_model(model)
        assert (sites.family, sites.num_layers, sites.width, sites.names) == ("tiny-test", 2, 6, ["ffn.0.1", "ffn.1.1"])
        x = torch.randn(2, 5, 4)
        result = LayerProgressiveNeuronPath(model).attribute(x, target=0, n_steps=4)
        assert result.paths.shape == (2, 2, 1)
    finally:
        family_base._REGISTRY.pop("tiny-test")
    assert find_family(model) is None


def test_registering_rejects_what_is_not_an_adapter():
    with pytest.raises(TypeError, match="FamilyAdapter subclass"):
        register_family(object)

    class Nameless(FamilyAdapter):
        pass

    with pytest.raises(ValueError, match="non-empty `name`"):
        register_family(Nameless)


def test_a_stream_that_fails_to_build_falls_back_to_the_whole_model(monkeypatch):
    model = CASES["timm_vit"].build()
    sites = NeuronSites.from_model(model)
    adapter = family_base.get_family("timm")

    def broken(self, m, spec):
        raise AttributeError("'VisionTransformer' object has no attribute '_pos_embed'")

    monkeypatch.setattr(type(adapter), "stream", broken)
    assert ResidualStream.from_sites(sites) is None
    result = LayerProgressiveNeuronPath(model).attribute(torch.randn(2, 3, 32, 32), target=1, n_steps=4)
    assert result.paths.shape == (2, 2, 1)


def test_patch_sizes_come_from_the_family():
    from captum_paths.analysis.pixels import model_patch_size

    assert model_patch_size(CASES["timm_eva02_swiglu_rope"].build()) == (14, 14)
    assert model_patch_size(CASES["torchvision_vit"].build()) == (8, 8)
    assert model_patch_size(CASES["hf_vit"].build()) == (8, 8)
    assert model_patch_size(CASES["hf_clip_zero_shot"].build()) == (8, 8)


def test_every_family_declares_a_transform_the_model_accepts(case):
    """Any PIL image (any mode, any size) becomes a tensor of the model's input size, and the
    model runs on it."""
    from PIL import Image

    from captum_paths.model.families import default_transform

    name, c, model, _ = case
    transform = default_transform(model)
    assert transform is not None, name
    size = 224 if name == "torchvision_swin" else c.size  # it records no input size and takes any: ImageNet's
    for image in (Image.new("RGB", (53, 41), (200, 30, 90)), Image.new("L", (20, 70), 128)):
        x = transform(image)
        assert tuple(x.shape) == (3, size, size), (name, image.mode)
        with torch.no_grad():
            assert model(x[None]).shape == (1, 5)


def test_timm_models_give_their_spec_and_the_loader_rebuilds_them():
    from captum_paths.model.families import loader_spec
    from captum_paths.model.loading import load_model

    model = CASES["timm_vit"].build()
    spec = loader_spec(model)
    assert spec == "timm:vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    kwargs = dict(SMALL, mlp_ratio=2.0)
    rebuilt, transform = load_model(spec, num_classes=5, random_weights=0, **kwargs)
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert loader_spec(rebuilt) == spec
    assert get_family_of(rebuilt).loader == "timm"
    assert tuple(transform(__import__("PIL.Image").Image.new("RGB", (40, 40))).shape) == (3, 32, 32)


def get_family_of(model):
    return find_family(model)[0]


def test_torchvision_models_are_named_by_their_builder():
    import torchvision

    from captum_paths.model.families import loader_spec

    for name in ("vit_b_32", "swin_v2_t", "swin_t"):
        with torch.device("meta"):
            model = torchvision.models.get_model(name, num_classes=7)  # another head is the same architecture
        assert loader_spec(model) == f"torchvision:{name}"
        assert get_family_of(model).loader == "torchvision"
    assert loader_spec(CASES["torchvision_vit"].build()) is None  # a custom build has no builder name
    with torch.device("meta"):
        assert loader_spec(torchvision.models.vit_b_16(image_size=64)) is None


def test_hf_models_give_their_folder_and_its_saved_processor(tmp_path):
    import transformers
    from PIL import Image

    from captum_paths.model.families import default_transform, loader_spec
    from captum_paths.model.loading import load_model
    from captum_paths.model.transforms import HFImageTransform

    model = CASES["hf_vit"].build()
    assert loader_spec(model) is None  # built from a config, not from a folder or the hub
    folder = tmp_path / "vit"
    model.model.save_pretrained(folder)
    loaded, transform = load_model(f"hf:{folder}")  # no processor saved: the family's standard one
    assert loader_spec(loaded) == f"hf:{folder}"
    assert tuple(transform(Image.new("RGB", (50, 60))).shape) == (3, 32, 32)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.5] * 3,
                                   image_std=[0.5] * 3).save_pretrained(folder)
    loaded, _ = load_model(f"hf:{folder}")
    declared = default_transform(loaded)
    assert isinstance(declared, HFImageTransform)
    white = declared(Image.new("RGB", (50, 60), (255, 255, 255)))
    torch.testing.assert_close(white, torch.ones(3, 32, 32))  # the saved mean and std: (1 - 0.5) / 0.5


def test_loaders_ask_the_registry_for_the_preprocessing():
    from captum_paths.model.loading import load_model

    marker = lambda image: torch.zeros(3, 32, 32)  # noqa: E731

    @register_family
    class MarkedTimm(family_base.FamilyAdapter):
        name = "marked-timm-test"
        loader = "timm"

        def sites(self, m):
            return family_base.get_family("timm").sites(m)

        def transform(self, m):
            return marker

    try:
        _, transform = load_model("timm:vit_tiny_patch16_224", random_weights=0, **SMALL)
        assert transform is marker
    finally:
        family_base._REGISTRY.pop("marked-timm-test")
    _, transform = load_model("timm:vit_tiny_patch16_224", random_weights=0, **SMALL)
    assert transform is not marker


HIERARCHICAL = ["timm_swin", "torchvision_swin", "hf_swin"]


@pytest.mark.parametrize("name", HIERARCHICAL)
@pytest.mark.parametrize("method", ["activation", "knowledge-neurons", "conductance", "influence-pattern", "random"])
def test_baselines_on_layers_of_several_widths(name, method):
    """Every baseline keeps each layer's neurons inside that layer's width and reports the
    removal effect; padding of narrower layers never wins."""
    from captum_paths.search import PATH_METHODS

    model = CASES[name].build()
    x, target = torch.randn(2, 3, 32, 32), torch.tensor([1, 3])
    result = PATH_METHODS[method](model).attribute(x, target=target, k=3, n_steps=4)
    sites = NeuronSites.from_model(model)
    assert all((result.paths[:, layer] < w).all() for layer, w in enumerate(sites.widths))
    with torch.no_grad():
        clean = model(x).softmax(-1).gather(1, target[:, None])[:, 0]
        with remove_neurons(sites, result.paths):
            removed = model(x).softmax(-1).gather(1, target[:, None])[:, 0]
    torch.testing.assert_close(result.jas, clean - removed, rtol=1e-4, atol=1e-7)


def test_hierarchical_search_equals_a_brute_force_greedy():
    """On a Swin with layers of 64 and 128 neurons, the exact greedy (refine='all') picks, layer by
    layer, the neuron whose removal together with the prefix moves F the most, found here by
    removing every candidate in turn."""
    model = CASES["timm_swinv2"].build()
    sites = NeuronSites.from_model(model)
    x, target = torch.randn(1, 3, 32, 32), torch.tensor([2])
    found = LayerProgressiveNeuronPath(model).attribute(x, target=target, refine="all", n_steps=4)
    with torch.no_grad():
        clean = model(x).softmax(-1)[0, 2]
        prefix = []
        for layer, width in enumerate(sites.widths):
            effects = []
            for j in range(width):
                with remove_neurons(sites, [prefix + [(layer, j)]]):
                    effects.append(float(clean - model(x).softmax(-1)[0, 2]))
            prefix.append((layer, max(range(width), key=effects.__getitem__)))
    assert found.paths[0, :, 0].tolist() == [j for _, j in prefix]


def test_hierarchical_interventions_and_pruning_use_each_layers_width():
    from captum_paths.evaluation.interventions import enhance_neurons, prune_neurons

    model = CASES["torchvision_swin"].build()
    sites = NeuronSites.from_model(model)
    x = torch.randn(2, 3, 32, 32)
    with pytest.raises(ValueError, match="layer 0.*the site has 64 neurons"):
        with remove_neurons(sites, [(0, 100)]):
            pass
    with torch.no_grad():
        base = model(x)
        with enhance_neurons(sites, [(1, 100)], factor=1.0):
            same = model(x)
        with prune_neurons(sites, keep={0: [1], 1: [120]}, p=1.0, depth=2) as zeroed:
            model(x)
    torch.testing.assert_close(same, base)
    assert [int(zeroed[l].numel()) for l in (0, 1)] == [64, 128]
    assert not zeroed[0][1] and not zeroed[1][120] and int(zeroed[0].sum()) == 63 and int(zeroed[1].sum()) == 127


def test_the_readme_adapter_example_runs_as_written():
    """The custom adapter of the models guide, executed verbatim on a model of that shape."""
    import re
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "docs" / "guides" / "models.md").read_text()
    section = readme[readme.index("Your own architecture takes a few lines"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ffn = nn.Module()
            self.ffn.fc1, self.ffn.act, self.ffn.fc2 = nn.Linear(8, 16), nn.GELU(), nn.Linear(16, 8)

        def forward(self, x):
            return x + self.ffn.fc2(self.ffn.act(self.ffn.fc1(x)))

    class MyViT(nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = nn.ModuleList(Block() for _ in range(3))
            self.head = nn.Linear(8, 4)

        def forward(self, x):
            for layer in self.layers:
                x = layer(x)
            return self.head(x[:, 0])

    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    try:
        torch.manual_seed(0)
        model = MyViT().eval()
        sites = NeuronSites.from_model(model)
        assert (sites.family, sites.num_layers, sites.tokens.kind) == ("my-vit", 3, "cls")
        from captum_paths.model.families import default_transform
        from PIL import Image
        assert tuple(default_transform(model)(Image.new("L", (30, 300))).shape) == (3, 224, 224)
        result = LayerProgressiveNeuronPath(model).attribute(torch.randn(2, 5, 8), target=1, n_steps=4)
        assert result.paths.shape == (2, 3, 1) and (result.paths < 16).all()
    finally:
        family_base._REGISTRY.pop("my-vit")


# ------------------------------------------------------------------ loading: --model-arg, open_clip:
def test_model_args_parse_python_literals_or_strings():
    from captum_paths.cli import _model_args, _UsageError

    assert _model_args(["img_size=112", "depths=(1, 2)", "act_layer=gelu", "qkv_bias=False"]) == {
        "img_size": 112, "depths": (1, 2), "act_layer": "gelu", "qkv_bias": False}
    for bad in ("img_size", "=3", "2x=1"):
        with pytest.raises(_UsageError, match="KEY=VALUE"):
            _model_args([bad])


TINY_TIMM_ARGS = ["--model-arg", "img_size=32", "--model-arg", "patch_size=8", "--model-arg", "depth=2",
                  "--model-arg", "embed_dim=32", "--model-arg", "num_heads=2"]


def test_extract_builds_the_model_with_model_args_and_keeps_them_in_the_identity(tmp_path, capsys):
    import json

    from captum_paths.cli import main
    from captum_paths.demo import save_demo_image_folder
    from captum_paths.pipeline import Run

    data = save_demo_image_folder(tmp_path / "data", limit_per_class=1)
    out = tmp_path / "run"
    base = ["extract", "--model", "timm:vit_tiny_patch16_224", "--random-weights", "0", "--data", str(data),
            "--out", str(out), "--method", "random", "--limit", "3", "--num-classes", "10", "--quiet"]
    assert main(base + TINY_TIMM_ARGS) == 0, capsys.readouterr().err
    settings = json.loads((out / "run.json").read_text())
    assert settings["model_args"] == {"img_size": 32, "patch_size": 8, "depth": 2, "embed_dim": 32, "num_heads": 2}
    model = Run(out).model()
    assert len(model.blocks) == 2 and model.patch_embed.patch_size == (8, 8)
    assert main(base + TINY_TIMM_ARGS) == 0 and "0 new" in capsys.readouterr().out  # the same run resumes
    assert main(base + TINY_TIMM_ARGS[:-2] + ["--model-arg", "num_heads=4"]) == 2
    assert "model_args" in capsys.readouterr().err
    assert main(base + ["--model-arg", "num_classes=12"]) == 2
    assert "--num-classes" in capsys.readouterr().err


def test_open_clip_spec_is_a_zero_shot_classifier_over_the_class_names(tmp_path, capsys):
    pytest.importorskip("open_clip")
    import json

    from captum_paths.cli import main
    from captum_paths.demo import save_demo_image_folder
    from captum_paths.model.loading import load_model
    from captum_paths.pipeline import Run

    tiny = dict(vision_cfg=dict(image_size=32, patch_size=8, width=64, layers=2, head_width=32),
                text_cfg=dict(context_length=77, vocab_size=49408, width=32, heads=2, layers=1), embed_dim=32)
    with pytest.raises(ValueError, match="pass classnames"):
        load_model("open_clip:ViT-B-32", random_weights=0, **tiny)
    data = save_demo_image_folder(tmp_path / "data", limit_per_class=1)
    out = tmp_path / "run"
    args = ["extract", "--model", "open_clip:ViT-B-32", "--random-weights", "3", "--data", str(data), "--out",
            str(out), "--method", "neuron-path", "--limit", "2", "--n-steps", "2", "--quiet"]
    args += [part for key, value in tiny.items() for part in ("--model-arg", f"{key}={value!r}")]
    assert main(args) == 0, capsys.readouterr().err
    run = Run(out)
    model = run.model()
    assert model.num_classes == 10 and NeuronSites.from_model(model).family == "zero-shot"
    records = run.records()
    assert len(records) == 2 and all(len(r["path"]) == 2 for r in records)
    assert json.loads((out / "run.json").read_text())["random_weights"] == 3


def test_a_model_that_folds_windows_into_the_batch_gets_a_clear_error():
    """MobileViT unfolds patches into the batch inside its transformer: the fallback adapter finds
    its FFNs, and the search says why their neurons cannot be gated per image."""
    torch.manual_seed(0)
    model = timm.create_model("mobilevit_xxs", num_classes=5).eval()
    with pytest.raises(ValueError, match=r"holds 8 rows for a batch of 2 images: .*folds windows or patches"):
        LayerProgressiveNeuronPath(model).attribute(torch.randn(2, 3, 64, 64), target=0, n_steps=2)
