"""Tests for captum_paths.model.loading.load_model and checkpoint loading (offline, CPU)."""
from __future__ import annotations

import urllib.error

import pytest
import torch
from PIL import Image

from captum_paths.model.loading import LogitsOnly, ModelLoadError, load_checkpoint, load_model

TINY_TIMM = dict(img_size=32, patch_size=8, depth=2, num_classes=10)


@pytest.fixture
def offline(monkeypatch):
    """Make every hub call fail fast, as on a machine without network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    hub_constants = pytest.importorskip("huggingface_hub.constants")
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)

    def no_network(*args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    import timm.models._builder as timm_builder
    import torchvision.models._api as tv_api

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(timm_builder, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(timm_builder, "download_cached_file", no_network, raising=False)


def _image(size=(50, 40)):
    return Image.new("RGB", size, (120, 30, 200))


def _tiny_timm():
    torch.manual_seed(0)
    return load_model("timm:vit_tiny_patch16_224", **TINY_TIMM)


# -- timm ----------------------------------------------------------------------


def test_timm_tiny_eval_and_transform_shape():
    model, transform = _tiny_timm()
    assert not model.training
    x = transform(_image())
    assert x.shape == (3, 32, 32)
    assert transform(Image.new("L", (40, 40))).shape == (3, 32, 32)
    with torch.no_grad():
        assert model(x.unsqueeze(0)).shape == (1, 10)


def test_bare_timm_name_is_timm():
    model, transform = load_model("vit_tiny_patch16_224", **TINY_TIMM)
    assert type(model).__name__ == "VisionTransformer"
    assert transform(_image()).shape == (3, 32, 32)


def test_checkpoint_round_trip_safetensors_and_nested_pt(tmp_path):
    from safetensors.torch import save_file

    source, _ = _tiny_timm()
    state = {k: v.contiguous() for k, v in source.state_dict().items()}
    st_path = tmp_path / "tiny.safetensors"
    save_file(state, str(st_path))
    pt_path = tmp_path / "tiny.pt"
    torch.save({"epoch": 3, "state_dict": {"module." + k: v for k, v in state.items()}}, pt_path)

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = source(x)
    for path in (st_path, pt_path, str(pt_path)):
        torch.manual_seed(1)  # a different random init, overwritten by the checkpoint
        model, _ = load_model("timm:vit_tiny_patch16_224", checkpoint=path, **TINY_TIMM)
        with torch.no_grad():
            torch.testing.assert_close(model(x), expected)


def test_checkpoint_mismatch_message(tmp_path):
    from safetensors.torch import save_file

    big, _ = load_model("timm:vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, num_classes=1000)
    state = {k: v.contiguous() for k, v in big.state_dict().items()}
    state["extra.weight"] = torch.zeros(1)
    del state["norm.bias"]
    path = tmp_path / "in1k.safetensors"
    save_file(state, str(path))
    with pytest.raises(ValueError) as info:
        load_model("timm:vit_tiny_patch16_224", checkpoint=path, **TINY_TIMM)
    msg = str(info.value)
    assert "does not fit the model" in msg
    assert str(path) in msg
    assert "head.weight: checkpoint (1000, 192) vs model (10, 192)" in msg
    assert "missing" in msg and "norm.bias" in msg
    assert "unexpected" in msg and "extra.weight" in msg
    assert "num_classes=1000" in msg


def test_checkpoint_missing_file(tmp_path):
    missing = tmp_path / "nope.safetensors"
    with pytest.raises(FileNotFoundError, match="nope.safetensors"):
        load_model("timm:vit_tiny_patch16_224", checkpoint=missing, **TINY_TIMM)


def test_checkpoint_not_a_state_dict(tmp_path):
    path = tmp_path / "junk.pt"
    torch.save({"epoch": 1, "lr": 0.1}, path)
    model, _ = _tiny_timm()
    with pytest.raises(ValueError, match="does not hold a state dict"):
        load_checkpoint(model, path)


def test_timm_pretrained_offline_error(offline):
    with pytest.raises(ModelLoadError) as info:
        load_model("timm:vit_tiny_patch16_224", pretrained=True, **TINY_TIMM)
    assert isinstance(info.value, RuntimeError)
    msg = str(info.value)
    assert "timm:vit_tiny_patch16_224" in msg
    assert "network" in msg
    assert "checkpoint='path/to/weights.safetensors'" in msg
    assert "--checkpoint" in msg


def test_pretrained_with_checkpoint_does_not_download(offline, tmp_path):
    from safetensors.torch import save_file

    source, _ = _tiny_timm()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in source.state_dict().items()}, str(path))
    model, _ = load_model("timm:vit_tiny_patch16_224", pretrained=True, checkpoint=path, **TINY_TIMM)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x))


# -- spec errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    "spec, pattern",
    [
        ("foo:bar", r"unknown model spec prefix 'foo:'.*timm:NAME.*torchvision:NAME.*hf:NAME_OR_PATH.*demo"),
        ("not_a_model_xyz", r"no prefix.*timm:NAME"),
        ("timm:vit_tiny_patch16", r"unknown timm model name 'vit_tiny_patch16'.*vit_tiny_patch16_224"),
        ("torchvision:vit_b16", r"unknown torchvision model name 'vit_b16'.*vit_b_16"),
        ("timm:", r"no model name"),
    ],
)
def test_bad_specs(spec, pattern):
    with pytest.raises(ValueError, match=pattern):
        load_model(spec)


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(spec=3), TypeError, "spec must be a str"),
        (dict(spec="demo", num_classes=0), ValueError, "num_classes must be a positive int"),
        (dict(spec="demo", checkpoint=5), TypeError, "checkpoint must be a path"),
        (dict(spec="demo", device="gpu9"), ValueError, "device 'gpu9'"),
        (dict(spec="demo", pretrained="yes"), TypeError, "pretrained must be a bool"),
        (dict(spec="demo", num_classes=3), ValueError, "demo model takes no num_classes"),
    ],
)
def test_bad_arguments(kwargs, exc, pattern):
    with pytest.raises(exc, match=pattern):
        load_model(**kwargs)


# -- torchvision ----------------------------------------------------------------------


def _tiny_torchvision_vit(seed, num_classes=10):
    import torchvision

    torch.manual_seed(seed)
    return torchvision.models.VisionTransformer(
        image_size=32, patch_size=8, num_layers=2, num_heads=2, hidden_dim=32, mlp_dim=64,
        num_classes=num_classes,
    ).eval()


def test_torchvision_checkpoint_round_trip(tmp_path):
    source, target = _tiny_torchvision_vit(0), _tiny_torchvision_vit(1)
    path = tmp_path / "tv.pth"
    torch.save({"model": {"module." + k: v for k, v in source.state_dict().items()}}, path)
    assert load_checkpoint(target, path, spec="torchvision:tiny") is target
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(target(x), source(x))


def test_torchvision_checkpoint_mismatch(tmp_path):
    path = tmp_path / "tv1000.bin"
    torch.save(_tiny_torchvision_vit(0, num_classes=1000).state_dict(), path)
    with pytest.raises(ValueError, match=r"heads.head.weight: checkpoint \(1000, 32\) vs model \(10, 32\).*num_classes=1000"):
        load_checkpoint(_tiny_torchvision_vit(1), path, spec="torchvision:tiny")


def test_torchvision_vit_b_16_default():
    model, transform = load_model("torchvision:vit_b_16")
    assert not model.training
    assert transform(_image()).shape == (3, 224, 224)
    assert model.heads.head.out_features == 1000


def test_torchvision_pretrained_checkpoint_uses_weights_transform(monkeypatch, tmp_path):
    import torchvision

    calls = []

    def small_get_model(name, weights=None, **kwargs):  # avoid building a full ViT-B twice
        calls.append(weights)
        return _tiny_torchvision_vit(0, num_classes=kwargs.get("num_classes", 1000))

    monkeypatch.setattr(torchvision.models, "get_model", small_get_model)
    path = tmp_path / "w.pt"
    torch.save(_tiny_torchvision_vit(0, num_classes=1000).state_dict(), path)
    _, transform = load_model("torchvision:vit_b_16", pretrained=True, checkpoint=path)
    assert calls == [None]  # nothing downloaded
    assert transform(Image.new("L", (300, 260))).shape == (3, 224, 224)


def test_torchvision_pretrained_offline_error(offline):
    with pytest.raises(ModelLoadError, match=r"torchvision:vit_b_16.*--checkpoint"):
        load_model("torchvision:vit_b_16", pretrained=True)


# -- Hugging Face ------------------------------------------------------------------------


@pytest.fixture
def hf_dir(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.ViTConfig(
        image_size=32, patch_size=8, num_hidden_layers=2, hidden_size=32,
        num_attention_heads=2, intermediate_size=64, num_labels=10,
    )
    model = transformers.ViTForImageClassification(config).eval()
    path = tmp_path / "hf_vit"
    model.save_pretrained(path)
    return path, model


def test_hf_local_dir_returns_logits(hf_dir, offline):
    path, source = hf_dir
    model, transform = load_model("hf:" + str(path))
    assert isinstance(model, LogitsOnly) and not model.training
    x = transform(_image())
    assert x.shape == (3, 32, 32)  # fallback transform from config.image_size
    with torch.no_grad():
        out = model(x[None])
        assert isinstance(out, torch.Tensor) and out.shape == (1, 10)
        torch.testing.assert_close(out, source(x[None]).logits)


def test_hf_local_dir_with_image_processor(hf_dir, offline):
    transformers = pytest.importorskip("transformers")
    path, _ = hf_dir
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    model, transform = load_model("hf:" + str(path))
    x = transform(_image((60, 45)))
    assert x.shape == (3, 32, 32)
    assert model(x[None]).shape == (1, 10)


def test_hf_checkpoint_from_wrapper_state_dict(hf_dir, tmp_path, offline):
    path, source = hf_dir
    wrapped = LogitsOnly(source)
    ckpt = tmp_path / "wrapped.pt"
    torch.save(wrapped.state_dict(), ckpt)  # keys carry the "model." prefix
    model, _ = load_model("hf:" + str(path), checkpoint=ckpt)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), source(x).logits)


def test_hf_hub_name_offline_error(offline):
    pytest.importorskip("transformers")
    with pytest.raises(ModelLoadError, match=r"hf:google/vit-base-patch16-224.*network.*checkpoint"):
        load_model("hf:google/vit-base-patch16-224")


def test_hf_missing_local_dir(tmp_path):
    pytest.importorskip("transformers")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model("hf:" + str(tmp_path / "missing_dir"))


def test_hf_not_installed(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def fake_import(name, *args, **kwargs):
        if name == "transformers" or name.startswith("transformers."):
            raise ImportError("No module named 'transformers'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", fake_import)
    with pytest.raises(ImportError, match=r"pip install captum-paths\[hf\]"):
        load_model("hf:some/model")


# -- demo ------------------------------------------------------------------------------


def test_demo_spec():
    demo = pytest.importorskip("captum_paths.demo")
    weights = getattr(demo, "DEMO_WEIGHTS", None)
    if not hasattr(demo, "load_demo_model") or weights is None or not weights.is_file():
        pytest.skip("demo model weights not available yet")
    model, transform = load_model("demo")
    assert not model.training
    x = transform(Image.new("L", (8, 8)))
    with torch.no_grad():
        out = model(x.unsqueeze(0))
    assert out.ndim == 2 and out.shape[0] == 1
