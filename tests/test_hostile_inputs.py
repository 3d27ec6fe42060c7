"""Issue 24, a hostile user on the demo model: folder links into the data folder, a huge label-map
index, a FIFO among the images, ``--model-arg`` values that break the model, file names with a
line break. Each ends in one line on stderr (or a listed, skipped file), never a hang or a traceback."""
from __future__ import annotations

import ast
import json
import logging
import os
import random
import shutil
import stat
import subprocess
import sys
import threading

import numpy as np
import pytest
import torch

from _cli import ENV, extract_args, run_main
from captum_paths.model.data import MAX_CLASS_INDEX, ImageFolderDataset, UnreadableImageError, open_image
from captum_paths.demo import save_demo_image_folder
from captum_paths.model.loading import load_model
from captum_paths.records import read_records

# a hang the fix removes shows as a timeout of this many seconds, not as a test run stuck forever
BOUND_S = 120
TINY_VIT = "timm:vit_tiny_patch16_224"
TINY_ARGS = ("img_size=32", "depth=1")  # a small, fast ViT the hostile args are added to


@pytest.fixture(autouse=True)
def seeded():
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def demo_data(tmp_path_factory):
    """The demo's image folder, one image per class (0..9)."""
    return save_demo_image_folder(tmp_path_factory.mktemp("hostile") / "data", limit_per_class=1)


@pytest.fixture
def data(demo_data, tmp_path):
    """A copy of the demo folder this test may damage."""
    root = tmp_path / "data"
    shutil.copytree(demo_data, root)
    return root


def _bounded_cli(*args):
    """``python -m captum_paths ARGS`` with at most BOUND_S seconds and 4 GiB of address space (the
    old code grew by gigabytes a second on a huge label-map index); fails the test on a timeout."""
    def limit_memory():
        import resource

        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    try:
        return subprocess.run([sys.executable, "-m", "captum_paths", *map(str, args)], capture_output=True,
                              text=True, env=ENV, timeout=BOUND_S,
                              preexec_fn=limit_memory if sys.platform.startswith("linux") else None)
    except subprocess.TimeoutExpired:
        pytest.fail(f"captum-paths {' '.join(map(str, args))} did not finish within {BOUND_S} s")


def _one_error_line(err):
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


# ------------------------------------------------ 10: a class folder linked to another class
def test_class_folder_linked_to_another_class_is_not_followed(data, caplog):
    shutil.rmtree(data / "9")
    os.symlink("1", data / "9")  # D/9 -> D/1: class 1's images would come back labelled 9
    os.symlink(os.path.join("..", "3"), data / "4" / "sub")  # a nested folder linked to class 3
    with caplog.at_level(logging.WARNING, logger="captum_paths.model.data"):
        ds = ImageFolderDataset(data)
    assert ds.classes == [str(c) for c in range(10)]  # the indices of the other classes stay
    assert not any(i.startswith("9/") or i.startswith("4/sub/") for i in ds.image_ids)
    assert sorted(set(ds.targets)) == list(range(9))
    assert len(ds) == 9 and len(set(os.path.realpath(p) for p, _ in ds.samples)) == 9
    skipped = dict(ds.unreadable)
    assert set(skipped) == {str(data / "9"), str(data / "4" / "sub")}
    assert all("inside the data folder" in reason and "not followed" in reason for reason in skipped.values())
    assert "did not follow 2 folder symlink(s)" in caplog.text and str(data / "9") in caplog.text


def test_class_folder_links_outside_the_data_folder_are_followed_once(data, tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(next((data / "7").iterdir()), elsewhere / "x.png")
    shutil.rmtree(data / "8")
    shutil.rmtree(data / "9")
    os.symlink(elsewhere, data / "8")  # a class kept elsewhere: followed
    os.symlink(elsewhere, data / "9")  # a second class on the same folder: its images would be relabeled
    ds = ImageFolderDataset(data)
    assert [i for i in ds.image_ids if i.startswith(("8/", "9/"))] == ["8/x.png"]
    assert list(dict(ds.unreadable)) == [str(data / "9")]
    assert "already listed" in dict(ds.unreadable)[str(data / "9")]


def test_extract_lists_the_link_in_unreadable_txt(data, tmp_path, capsys):
    shutil.rmtree(data / "9")
    os.symlink("1", data / "9")
    out = tmp_path / "run"
    code, stdout, err = run_main(capsys, *extract_args(data, out, "--method", "activation", "--threads", "1"))
    assert code == 0, err
    records = read_records(out / "records.jsonl")
    assert {r["image_id"].split("/")[0] for r in records} == {str(c) for c in range(9)}
    assert not any(r["label"] == 9 for r in records)
    listed = (out / "unreadable.txt").read_text(encoding="utf-8").splitlines()
    assert len(listed) == 1 and listed[0].startswith(str(data / "9") + "\t")
    assert "not followed" in listed[0]


# ------------------------------------------------ 12: a label-map index of 1000000000
def test_huge_label_map_index_is_refused_by_the_dataset(data):
    mapping = {str(c): c for c in range(10)}
    mapping["3"] = 1_000_000_000
    with pytest.raises(ValueError, match=r"--label-map.*class '3' has index 1000000000.*at most 99999"):
        ImageFolderDataset(data, label_map=mapping)
    mapping["3"] = MAX_CLASS_INDEX - 1  # the largest index allowed before the model's own check
    assert ImageFolderDataset(data, label_map=mapping).class_to_idx["3"] == MAX_CLASS_INDEX - 1


def test_extract_refuses_a_huge_label_map_index_in_one_line(data, tmp_path):
    label_map = tmp_path / "map.json"
    label_map.write_text(json.dumps({str(c): 1_000_000_000 if c == 3 else c for c in range(10)}))
    res = _bounded_cli(*extract_args(data, tmp_path / "run", "--label-map", label_map, "--threads", "1"))
    assert res.returncode == 2, res.stderr
    line = _one_error_line(res.stderr)
    assert line.startswith("captum-paths extract: error:")
    assert "--label-map" in line and "class '3'" in line and "1000000000" in line
    assert f"at most {MAX_CLASS_INDEX - 1}" in line and "model's number of classes" in line
    assert not (tmp_path / "run" / "records.jsonl").exists()


# ------------------------------------------------ 13: a FIFO among the images
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_fifo_is_listed_not_opened(data):
    fifo = data / "0" / "x.png"
    os.mkfifo(fifo)
    found = {}

    def scan():
        found["verify"] = ImageFolderDataset(data)
        found["none"] = ImageFolderDataset(data, scan="none")  # nothing decoded upfront: still not listed
        try:
            open_image(fifo)
        except UnreadableImageError as exc:
            found["error"] = exc

    worker = threading.Thread(target=scan, daemon=True)
    worker.start()
    worker.join(timeout=BOUND_S)
    try:
        assert not worker.is_alive(), "opening the FIFO blocked"
    finally:
        try:  # free a reader the old code left blocked on the FIFO
            os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
        except OSError:
            pass
    for ds in (found["verify"], found["none"]):
        assert "0/x.png" not in ds.image_ids and len(ds) == 10
        assert ds.unreadable == [(str(fifo), "not a regular file: a FIFO (named pipe); not opened")]
    assert "FIFO" in found["error"].reason


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_extract_with_a_fifo_finishes_and_lists_it(data, tmp_path):
    fifo = data / "0" / "x.png"
    os.mkfifo(fifo)
    os.symlink(fifo, data / "1" / "link.png")  # a symlink to the FIFO is no regular file either
    out = tmp_path / "run"
    res = _bounded_cli(*extract_args(data, out, "--method", "activation", "--threads", "1"))
    assert res.returncode == 0, res.stderr
    assert "10 images, 2 unreadable" in res.stdout
    listed = (out / "unreadable.txt").read_text(encoding="utf-8").splitlines()
    assert sorted(line.split("\t")[0] for line in listed) == sorted([str(fifo), str(data / "1" / "link.png")])
    assert all("FIFO" in line for line in listed)
    assert stat.S_ISFIFO(os.stat(fifo).st_mode)


# ------------------------------------------------ 14: --model-arg values that break the model
BREAKING = [
    ("in_chans=1", "RuntimeError"),        # builds, but fails on its own 3-channel preprocessing
    ("patch_size=0", "ZeroDivisionError"),
    ("embed_dim=0", "ZeroDivisionError"),
    ("num_heads=5", "AssertionError"),     # 192 is not divisible by 5
    ("class_token=False", "AssertionError"),
    ("mlp_ratio=-1", "negative dimension"),
]


@pytest.mark.parametrize("arg, cause", BREAKING, ids=[a for a, _ in BREAKING])
def test_breaking_model_arg_is_one_line(arg, cause, data, tmp_path, capsys):
    args = extract_args(data, tmp_path / "run", "--random-weights", "0", "--num-classes", "10", "--threads", "1")
    args[args.index("demo")] = TINY_VIT
    for model_arg in (*TINY_ARGS, arg):
        args += ["--model-arg", model_arg]
    code, _, err = run_main(capsys, *args)
    assert code == 2, err
    line = _one_error_line(err)
    assert line.startswith("captum-paths extract: error:")
    key, _, value = arg.partition("=")
    assert "--model-arg" in line and f"{key}={value}" in line and cause in line
    assert not (tmp_path / "run" / "records.jsonl").exists()


@pytest.mark.parametrize("arg", [a for a, _ in BREAKING])
def test_demo_model_arg_is_one_line(arg, data, tmp_path, capsys):
    code, _, err = run_main(capsys, *extract_args(data, tmp_path / "run", "--model-arg", arg))
    assert code == 2, err
    line = _one_error_line(err)
    assert "--model-arg" in line and arg in line and "demo model takes no" in line


def test_breaking_model_arg_in_a_subprocess_prints_no_traceback(data, tmp_path):
    args = extract_args(data, tmp_path / "run", "--random-weights", "0", "--num-classes", "10", "--threads", "1")
    args[args.index("demo")] = TINY_VIT
    res = _bounded_cli(*args, "--model-arg", TINY_ARGS[0], "--model-arg", "patch_size=0")
    assert res.returncode == 2, res.stderr
    line = _one_error_line(res.stderr)
    assert "--model-arg" in line and "patch_size=0" in line and "ZeroDivisionError" in line


def test_load_model_names_the_args_and_still_builds_good_ones():
    with pytest.raises(ValueError, match=r"with model args img_size=32, depth=1, num_heads=5 \(--model-arg\): "
                                         r"AssertionError"):
        load_model(TINY_VIT, random_weights=0, num_classes=10, img_size=32, depth=1, num_heads=5)
    with pytest.raises(ValueError, match="fails on a probe image"):
        load_model(TINY_VIT, random_weights=0, num_classes=10, img_size=32, depth=1, global_pool="")
    model, transform = load_model(TINY_VIT, random_weights=0, num_classes=10, img_size=32, depth=1)
    assert model(torch.zeros(2, 3, 32, 32)).shape == (2, 10)


# ------------------------------------------------ 17: a file name with a line break
def test_file_name_with_a_newline_is_one_line(data, tmp_path, capsys, caplog):
    bad = data / "2" / "bad\nname.png"
    bad.write_bytes(b"not an image\n")
    tabbed = data / "5" / "tab\tname.png"
    tabbed.write_bytes(b"not an image either")
    with caplog.at_level(logging.WARNING, logger="captum_paths.model.data"):
        ds = ImageFolderDataset(data)
    assert [ast.literal_eval(p) for p, _ in ds.unreadable] == [str(bad), str(tabbed)]
    assert all("\n" not in p + e and "\t" not in p + e for p, e in ds.unreadable)
    warning = [r.getMessage() for r in caplog.records if "unreadable" in r.getMessage()]
    assert len(warning) == 1 and "\n" not in warning[0] and repr(str(bad)) in warning[0]

    out = tmp_path / "run"
    code, _, err = run_main(capsys, *extract_args(data, out, "--method", "activation", "--threads", "1"))
    assert code == 0, err
    listed = (out / "unreadable.txt").read_text(encoding="utf-8").splitlines()
    assert len(listed) == 2 and all(line.count("\t") == 1 for line in listed)
    assert [ast.literal_eval(line.split("\t")[0]) for line in listed] == [str(bad), str(tabbed)]
