"""Tests of the embedded demo model, its data and its training script."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from captum_paths.demo import (
    DEMO_CLASSES,
    DEMO_CONFIG,
    DEMO_STD,
    DEMO_WEIGHTS,
    build_demo_model,
    demo_metadata,
    demo_transform,
    load_demo_data,
    load_demo_model,
    save_demo_image_folder,
)

SIZES = {"train": 1437, "test": 360, "all": 1797}


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return load_demo_model()


def test_weights_file_small_with_metadata() -> None:
    assert DEMO_WEIGHTS.is_file()
    assert DEMO_WEIGHTS.stat().st_size < 2 * 1024 * 1024
    meta = demo_metadata()
    assert meta["config"] == DEMO_CONFIG
    assert float(meta["test_accuracy"]) >= 0.95
    assert "random_state=0" in meta["split"]


def test_demo_test_accuracy(model: torch.nn.Module) -> None:
    images, labels = load_demo_data("test")
    with torch.no_grad():
        logits = model(images)
    assert logits.shape == (360, 10)
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.95
    assert accuracy == pytest.approx(float(demo_metadata()["test_accuracy"]), abs=1e-4)


def test_model_eval_mode_and_device(model: torch.nn.Module) -> None:
    assert not model.training
    assert all(p.device.type == "cpu" for p in model.parameters())


def test_model_architecture(model: torch.nn.Module) -> None:
    from timm.models.vision_transformer import VisionTransformer

    assert isinstance(model, VisionTransformer)
    assert len(model.blocks) == 6
    for block in model.blocks:
        assert isinstance(block.mlp.act, torch.nn.Module)
        assert block.mlp.fc1.out_features == 256
        assert block.mlp.fc2.in_features == 256
    assert model.global_pool == "token"
    assert model.cls_token is not None
    assert model.head.out_features == 10
    untrained = build_demo_model()
    assert untrained.state_dict().keys() == model.state_dict().keys()


@pytest.mark.parametrize("split", ["train", "test", "all"])
def test_load_demo_data_shapes(split: str) -> None:
    images, labels = load_demo_data(split)
    n = SIZES[split]
    assert images.shape == (n, 1, 8, 8) and images.dtype == torch.float32
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert images.min() >= -1.0 and images.max() <= 1.0
    assert set(labels.tolist()) == set(range(10))
    again_images, again_labels = load_demo_data(split)
    assert torch.equal(images, again_images) and torch.equal(labels, again_labels)


def test_splits_disjoint_and_cover_all() -> None:
    train_x, train_y = load_demo_data("train")
    test_x, test_y = load_demo_data("test")
    all_x, all_y = load_demo_data("all")
    assert len(train_y) + len(test_y) == 1797 == len(all_y)
    # Each image of the union is an image of "all", as a multiset of (pixels, label) rows.
    def rows(x: torch.Tensor, y: torch.Tensor) -> list:
        return sorted(map(tuple, torch.cat([x.flatten(1), y[:, None].float()], 1).tolist()))

    assert rows(torch.cat([train_x, test_x]), torch.cat([train_y, test_y])) == rows(all_x, all_y)
    # Stratified: class proportions of test follow those of the whole data set.
    counts = torch.bincount(test_y, minlength=10).float() / len(test_y)
    assert torch.allclose(counts, torch.bincount(all_y, minlength=10).float() / 1797, atol=0.01)


def test_bad_split_raises() -> None:
    with pytest.raises(ValueError, match="split") as info:
        load_demo_data("validation")
    assert "validation" in str(info.value) and "test" in str(info.value)
    with pytest.raises(ValueError, match="split"):
        save_demo_image_folder("unused", split="val")


def test_image_folder_round_trip(tmp_path: Path) -> None:
    from torchvision.datasets import ImageFolder

    root = save_demo_image_folder(tmp_path / "digits", split="test", limit_per_class=3)
    assert root == tmp_path / "digits"
    assert sorted(p.name for p in root.iterdir()) == list(DEMO_CLASSES)
    dataset = ImageFolder(str(root), transform=demo_transform())
    assert dataset.classes == list(DEMO_CLASSES) and len(dataset) == 30
    images, labels = load_demo_data("test")
    for (path, target), (tensor, label) in zip(dataset.samples, dataset):
        index = int(Path(path).stem)
        assert tensor.shape == (1, 8, 8) and tensor.dtype == torch.float32
        assert label == target == int(labels[index])
        assert (tensor - images[index]).abs().max().item() <= 0.5 / 255 / DEMO_STD + 1e-6  # half an 8-bit step, i.e. 1/255


def test_demo_transform_any_mode_and_size() -> None:
    from PIL import Image

    images, _ = load_demo_data("test")
    pixels = ((images[0, 0] * DEMO_STD + 0.5) * 255).round().to(torch.uint8).numpy()
    small = Image.fromarray(pixels)
    for image in (small.convert("RGB"), small.convert("RGBA"), small.resize((32, 32), Image.NEAREST)):
        out = demo_transform()(image)
        assert out.shape == (1, 8, 8) and out.dtype == torch.float32
        assert out.min() >= -1.0 and out.max() <= 1.0
    assert (demo_transform()(small.convert("RGB")) - images[0]).abs().max() <= 1 / 255 + 1e-6


def test_training_is_deterministic() -> None:
    from captum_paths.demo.train import train

    threads = torch.get_num_threads()
    first, accuracy_1 = train(epochs=1, batch_size=32, max_steps=3, num_threads=1)
    second, accuracy_2 = train(epochs=1, batch_size=32, max_steps=3, num_threads=1)
    assert torch.get_num_threads() == threads  # global settings restored
    assert first.keys() == second.keys() == build_demo_model().state_dict().keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert accuracy_1 == accuracy_2
    third, _ = train(epochs=1, batch_size=32, max_steps=3, num_threads=1, seed=1)
    assert not all(torch.equal(first[k], third[k]) for k in first)
