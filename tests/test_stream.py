"""ResidualStream: block splits, the class-token shortcut and BlockRun against whole blocks."""
from __future__ import annotations

import pytest
import torch
import torchvision

from captum_paths import NeuronSites
from captum_paths.model.stream import ResidualStream
from _models import tiny_vit


def _torchvision_vit():
    torch.manual_seed(0)
    return torchvision.models.VisionTransformer(
        image_size=16, patch_size=4, num_layers=3, num_heads=2, hidden_dim=32, mlp_dim=48, num_classes=4
    ).eval()


MODELS = {
    "timm": lambda: tiny_vit(),
    "timm-layerscale": lambda: tiny_vit(init_values=0.5),
    "timm-qknorm": lambda: tiny_vit(qk_norm=True, qkv_bias=False),
    "torchvision": _torchvision_vit,
}


def _stream(name, tokens=None):
    model = MODELS[name]()
    sites = NeuronSites.from_model(model, tokens=tokens)
    return model, sites, ResidualStream.from_sites(sites)


@pytest.mark.parametrize("name", list(MODELS))
def test_split_blocks_reproduce_whole_blocks_and_logits(name):
    model, sites, stream = _stream(name)
    assert stream.splits is not None and all(s is not None for s in stream.splits)
    assert stream.cls_readout
    torch.manual_seed(1)
    x = torch.randn(3, 3, 16, 16)
    with torch.no_grad():
        h = stream.embed(x)
        for layer, block in enumerate(stream.blocks):
            whole = block(h)
            run = stream.begin(layer, h)
            last = layer == len(stream.blocks) - 1
            torch.testing.assert_close(run.finish(), whole[:, :1] if last else whole, rtol=1e-5, atol=1e-6)
            h = whole
        assert stream.matches(x, model(x))


@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("tokens", ["cls", "all", [0, 3]])
def test_block_run_finish_equals_an_edited_whole_block(name, tokens):
    """``finish(edit)`` (token-wise reuse of the unedited tokens) equals the block run
    whole under ``NeuronSites.edit``, for any token selection, and may be called again."""
    model, sites, stream = _stream(name, tokens)
    assert stream.cls_readout == (tokens == "cls")
    torch.manual_seed(2)
    x = torch.randn(2, 3, 16, 16)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        h = stream.run(stream.embed(x), 0, 1)  # stream entering block 1
        run = stream.begin(1, h)
        for _ in range(2):
            gate = torch.rand(2, sites.width, generator=gen)
            edit = lambda a, g=gate: a * g[:, None, :]
            with sites.edit({1: edit}):
                expected = stream.blocks[1](h)
            torch.testing.assert_close(run.finish(edit), expected, rtol=1e-5, atol=1e-6)
        rows = torch.tensor([1, 1, 0])
        taken = run.take(rows).finish(lambda a: a * gate[rows][:, None, :])
        torch.testing.assert_close(taken, expected[rows], rtol=1e-5, atol=1e-6)


def test_shortcuts_only_where_they_are_exact():
    # average pooling reads the patches: no class-token shortcut
    sites = NeuronSites.from_model(tiny_vit(global_pool="avg", class_token=True))
    assert not ResidualStream.from_sites(sites).cls_readout
    # neurons read at the patches: the last block must keep every token
    assert not _stream("timm", "patches")[2].cls_readout
    stream = _stream("timm")[2].plain()
    assert stream.splits is None and not stream.cls_readout


def test_a_wrong_split_is_caught_by_matches():
    model, sites, stream = _stream("timm")
    x = torch.randn(2, 3, 16, 16)
    post = stream.splits[1].post
    stream.splits[1].post = lambda mid, act: post(mid, act) + 1e-2
    with torch.no_grad():
        assert not stream.matches(x, model(x))
        assert stream.plain().matches(x, model(x))


def _hf_models():
    transformers = pytest.importorskip("transformers")
    common = dict(image_size=16, patch_size=4, num_hidden_layers=2, hidden_size=32, num_attention_heads=2,
                  intermediate_size=48, num_labels=4)
    yield transformers.ViTForImageClassification(transformers.ViTConfig(**common))
    yield transformers.DeiTForImageClassification(transformers.DeiTConfig(**common))
    yield transformers.DeiTForImageClassificationWithTeacher(transformers.DeiTConfig(**common))
    dino = dict(common, mlp_ratio=2)
    dino.pop("intermediate_size")
    yield transformers.Dinov2ForImageClassification(transformers.Dinov2Config(**dino))


def test_hugging_face_streams_reproduce_the_logits_and_the_search():
    import captum_paths.search.neuron_path as neuron_path
    from captum_paths import LayerProgressiveNeuronPath

    torch.manual_seed(0)
    x = torch.randn(3, 3, 16, 16)
    for model in _hf_models():
        model = model.eval()
        sites = NeuronSites.from_model(model)
        stream = ResidualStream.from_sites(sites)
        assert stream is not None, type(model).__name__
        with torch.no_grad():
            assert stream.matches(x, model(x).logits), type(model).__name__
        search = LayerProgressiveNeuronPath(model)
        fast = search.attribute(x, target=1, k=2, refine=3)
        original = neuron_path._stream_for
        neuron_path._stream_for = lambda sites, ctx: None
        try:
            slow = search.attribute(x, target=1, k=2, refine=3)
        finally:
            neuron_path._stream_for = original
        assert torch.equal(fast.paths, slow.paths), type(model).__name__
        torch.testing.assert_close(fast.jas, slow.jas)
