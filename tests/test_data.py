"""Tests for captum_paths.model.data.ImageFolderDataset."""
from __future__ import annotations

import json
import logging

import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from captum_paths.model.data import ImageFolderDataset, read_label_map


def _to_tensor_8(img):
    from torchvision.transforms.functional import resize, to_tensor

    return to_tensor(resize(img, [8, 8]))


@pytest.fixture
def folder(tmp_path):
    """root/{cat,dog,bird}/*.png with one corrupt and one non-image file."""
    root = tmp_path / "images"
    colours = {"cat": (255, 0, 0), "dog": (0, 255, 0), "bird": (0, 0, 255)}
    for cls, colour in colours.items():
        (root / cls).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (10 + i, 12), colour).save(root / cls / f"img{i}.png")
    Image.new("L", (9, 9), 128).save(root / "dog" / "gray.PNG")  # upper-case extension, grayscale
    (root / "dog" / "sub").mkdir()
    Image.new("RGB", (7, 7)).save(root / "dog" / "sub" / "nested.jpg")
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    return root


def test_layout_labels_and_ids(folder, caplog):
    with caplog.at_level(logging.WARNING, logger="captum_paths.model.data"):
        ds = ImageFolderDataset(folder, transform=_to_tensor_8)
    assert ds.classes == ["bird", "cat", "dog"]
    assert ds.class_to_idx == {"bird": 0, "cat": 1, "dog": 2}
    assert len(ds) == 8
    assert ds.image_ids[:2] == ["bird/img0.png", "bird/img1.png"]
    assert "dog/sub/nested.jpg" in ds.image_ids and "dog/gray.PNG" in ds.image_ids
    assert all("\\" not in i for i in ds.image_ids)
    assert ds.targets == [label for _, label in ds.samples]

    assert [p.endswith("broken.png") for p, _ in ds.unreadable] == [True]
    assert "cat/broken.png" not in ds.image_ids
    assert "broken.png" in caplog.text

    image, label, image_id = ds[ds.image_ids.index("dog/gray.PNG")]
    assert image.shape == (3, 8, 8) and label == 2 and image_id == "dog/gray.PNG"


def test_dataloader_iterates_past_bad_file(folder):
    ds = ImageFolderDataset(folder, transform=_to_tensor_8)
    seen = []
    for images, labels, ids in DataLoader(ds, batch_size=3, num_workers=0):
        assert images.shape[1:] == (3, 8, 8)
        assert isinstance(labels, torch.Tensor)
        seen.extend(ids)
    assert seen == ds.image_ids


def test_default_transform_and_mode(folder):
    ds = ImageFolderDataset(folder, mode="L")
    image, _, _ = ds[0]
    assert image.dtype == torch.float32 and image.shape[0] == 1
    assert 0.0 <= image.min() and image.max() <= 1.0


def test_decode_scan_and_max_per_class(folder):
    ds = ImageFolderDataset(folder, scan="decode", max_per_class=1)
    assert len(ds) == 3
    assert sorted(ds.targets) == [0, 1, 2]


def test_label_map_dict_json_and_keras(folder, tmp_path):
    mapping = {"cat": 281, "dog": 207, "bird": 13, "unused": 5}
    ds = ImageFolderDataset(folder, label_map=mapping)
    assert ds.class_to_idx == {"bird": 13, "cat": 281, "dog": 207}
    assert set(ds.targets) == {13, 281, 207}
    assert ds[ds.image_ids.index("cat/img0.png")][1] == 281

    path = tmp_path / "map.json"
    path.write_text(json.dumps(mapping))
    assert ImageFolderDataset(folder, label_map=path).class_to_idx == ds.class_to_idx
    assert ImageFolderDataset(folder, label_map=str(path)).class_to_idx == ds.class_to_idx

    keras = {"13": ["bird", "jay"], "207": ["dog", "golden"], "281": ["cat", "tabby"]}
    assert read_label_map(keras) == {"bird": 13, "dog": 207, "cat": 281}
    assert read_label_map(["x", "y"]) == {"x": 0, "y": 1}


def test_label_map_errors(folder, tmp_path):
    with pytest.raises(ValueError, match=r"no index for 2 of the 3 class folders.*bird, dog"):
        ImageFolderDataset(folder, label_map={"cat": 1})
    with pytest.raises(ValueError, match="non-negative ints"):
        ImageFolderDataset(folder, label_map={"cat": 1, "dog": "2", "bird": 0})
    with pytest.raises(FileNotFoundError, match="nomap.json"):
        ImageFolderDataset(folder, label_map=tmp_path / "nomap.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        ImageFolderDataset(folder, label_map=bad)
    with pytest.raises(TypeError, match="label_map must be"):
        ImageFolderDataset(folder, label_map=3)


def test_root_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing_root"):
        ImageFolderDataset(tmp_path / "missing_root")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="no class folders"):
        ImageFolderDataset(empty)
    (empty / "cls").mkdir()
    (empty / "cls" / "a.txt").write_text("x")
    with pytest.raises(ValueError, match="no readable images"):
        ImageFolderDataset(empty)


@pytest.mark.parametrize(
    "kwargs, exc, pattern",
    [
        (dict(root=5), TypeError, "root must be a path"),
        (dict(transform="resize"), TypeError, "transform must be callable"),
        (dict(scan="fast"), ValueError, "scan must be one of"),
        (dict(max_per_class=0), ValueError, "max_per_class must be a positive int"),
        (dict(extensions=".png"), TypeError, "extensions must be"),
    ],
)
def test_argument_errors(folder, kwargs, exc, pattern):
    kwargs.setdefault("root", folder)
    with pytest.raises(exc, match=pattern):
        ImageFolderDataset(**kwargs)


def test_class_names_come_from_a_keras_label_map_else_the_folders(tmp_path):
    import json

    from captum_paths.model.data import ImageFolderDataset
    from captum_paths.demo import save_demo_image_folder

    data = save_demo_image_folder(tmp_path / "data", limit_per_class=1)
    keras = tmp_path / "keras.json"
    keras.write_text(json.dumps({str(9 - i): [str(i), f"digit_{i}"] for i in range(10)}))
    assert ImageFolderDataset(data, label_map=keras).class_names() == [f"digit {9 - i}" for i in range(10)]
    assert ImageFolderDataset(data).class_names() == [str(i) for i in range(10)]
    plain = tmp_path / "plain.json"
    plain.write_text(json.dumps({str(i): 9 - i for i in range(10)}))
    assert ImageFolderDataset(data, label_map=plain).class_names() == [str(9 - i) for i in range(10)]
