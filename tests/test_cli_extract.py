"""``captum-paths extract``: run folders, resume after kill -9, torchrun sharding, bad input."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest

from _cli import ENV, cli, extract_args, run_main
from captum_paths.demo import save_demo_image_folder
from captum_paths.records import read_records



@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return save_demo_image_folder(tmp_path_factory.mktemp("cli") / "data", limit_per_class=1)








def key(records):
    return [(r["method"], r["image_id"], r["path"], r["label"], r["prediction"]) for r in records]


def assert_same(a, b):
    assert key(a) == key(b)
    for x, y in zip(a, b):
        assert x["jas"] == pytest.approx(y["jas"], rel=1e-4, abs=1e-7)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    res = cli(*extract_args(data, out, "--method", "neuron-path", "activation", "--n-steps", "4", "--batch-size", "2"))
    assert res.returncode == 0, res.stderr
    return read_records(out / "records.jsonl")


def test_extract_writes_sorted_records_and_settings(reference, data):
    assert len(reference) == 20
    assert [(r["method"], r["image_id"]) for r in reference] == sorted((r["method"], r["image_id"]) for r in reference)
    assert {r["image_id"] for r in reference} == {p.relative_to(data).as_posix() for p in data.glob("*/*.png")}


def test_extract_killed_and_resumed_equals_uninterrupted(data, reference, tmp_path):
    out = tmp_path / "run"
    args = extract_args(data, out, "--method", "neuron-path", "activation", "--n-steps", "4", "--batch-size", "2")
    proc = subprocess.Popen([sys.executable, "-m", "captum_paths", *map(str, args)], env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    file = out / "records.jsonl"
    deadline = time.time() + 60
    while time.time() < deadline and not (file.exists() and file.stat().st_size > 0):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = read_records(file)
    assert 0 < len(partial) < 20  # killed mid-run, after the first batch was flushed
    res = cli(*args)
    assert res.returncode == 0, res.stderr
    assert_same(read_records(file), reference)


def test_torchrun_two_processes_equals_one(data, reference, tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "captum_paths", *map(str, extract_args(data, out, "--method", "neuron-path", "activation",
                                                         "--n-steps", "4", "--batch-size", "2", "--device", "cpu"))]
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert not list(out.glob("records.rank*.jsonl"))
    assert_same(read_records(out / "records.jsonl"), reference)


def test_rerun_is_a_no_op_and_other_settings_are_refused(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(capsys, *extract_args(data, out, "--method", "activation", "--limit", "3"))[0] == 0
    code, stdout, _ = run_main(capsys, *extract_args(data, out, "--method", "activation", "--limit", "3"))
    assert code == 0 and "0 new" in stdout
    assert len(read_records(out / "records.jsonl")) == 3
    for extra in (["--k", "2"], ["--mode", "paper"], ["--n-steps", "7"], ["--target", "pred"],
                  ["--approximation", "riemann_left"]):
        code, _, err = run_main(capsys, *extract_args(data, out, "--method", "activation", *extra))
        assert code != 0 and "another run" in err
        assert len(err.strip().splitlines()) == 1
    code, _, err = run_main(capsys, *extract_args(data, out, "--method", "activation", "--k", "2", "--limit", "2",
                                                  "--restart"))
    assert code == 0, err
    records = read_records(out / "records.jsonl")
    assert len(records) == 2 and all(len(r["path"][0]) == 2 for r in records)
    assert json.loads((out / "run.json").read_text())["k"] == 2


def test_unreadable_images_are_skipped_and_listed(data, tmp_path, capsys, caplog):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    (copy / "3" / "broken.png").write_bytes(b"not a png")
    out = tmp_path / "run"
    code, _, err = run_main(capsys, *extract_args(copy, out, "--method", "activation"))
    assert code == 0, err
    assert "broken.png" in caplog.text  # logged
    assert "broken.png" in (out / "unreadable.txt").read_text()
    assert len(read_records(out / "records.jsonl")) == 10


def _bad_inputs(data, tmp, capsys):
    import shutil

    import torch

    empty = tmp / "empty"
    empty.mkdir()
    (tmp / "noimages" / "a").mkdir(parents=True)
    wrong = tmp / "wrong.pt"
    torch.save({"weight": torch.zeros(3)}, wrong)
    many = tmp / "many"
    for i in range(12):
        (many / f"c{i:02d}").mkdir(parents=True)
        shutil.copy(next((data / "0").glob("*.png")), many / f"c{i:02d}" / "x.png")
    other = tmp / "other"
    assert run_main(capsys, *extract_args(data, other, "--method", "activation", "--limit", "1"))[0] == 0
    return {
        "missing data": extract_args(tmp / "nope", tmp / "o1"),
        "empty data": extract_args(empty, tmp / "o2"),
        "no images": extract_args(tmp / "noimages", tmp / "o3"),
        "unknown model": ["extract", "--model", "timm:no_such_vit", "--data", data, "--out", tmp / "o4", "--quiet"],
        "unknown model kind": ["extract", "--model", "onnx:x", "--data", data, "--out", tmp / "o4", "--quiet"],
        "unknown method": extract_args(data, tmp / "o5", "--method", "neuron-paths"),
        "bad checkpoint": extract_args(data, tmp / "o6", "--checkpoint", wrong),
        "missing checkpoint": extract_args(data, tmp / "o7", "--checkpoint", tmp / "nope.pt"),
        "class count": extract_args(many, tmp / "o8"),
        "other run": extract_args(data, other, "--method", "activation", "--k", "3"),
        "bad batch size": extract_args(data, tmp / "o9", "--batch-size", "0"),
        "evaluate without run": ["evaluate", "--run", tmp / "o10", "--quiet"],
        "analyze without run": ["analyze", "--run", tmp / "o10", "--quiet"],
        "report without run": ["report", "--run", tmp / "o10", "--quiet"],
    }


def test_bad_input_gets_one_line_error(data, tmp_path, capsys):
    for name, args in _bad_inputs(data, tmp_path, capsys).items():
        code, _, err = run_main(capsys, *args)  # an exception escaping main would fail the test
        assert code != 0, name
        lines = err.strip().splitlines()
        assert len(lines) == 1 and "error:" in lines[0], (name, err)


def test_bad_input_in_a_subprocess_has_no_traceback(tmp_path):
    res = cli(*extract_args(tmp_path / "nope", tmp_path / "out"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and "does not exist" in res.stderr


def test_merge_joins_rank_files_without_duplicates(tmp_path, capsys):
    from captum_paths.records import append_records

    rows = [{"image_id": f"{c}/{i}.png", "method": m, "path": [[i]]} for m in ("b", "a") for c in "01" for i in range(2)]
    append_records(tmp_path / "records.rank0.jsonl", rows[0::2])
    append_records(tmp_path / "records.rank1.jsonl", rows[1::2] + rows[:2])  # a duplicate from a rerun
    code, stdout, _ = run_main(capsys, "merge", tmp_path)
    assert code == 0 and "8 records" in stdout
    merged = read_records(tmp_path / "records.jsonl")
    assert [(r["method"], r["image_id"]) for r in merged] == sorted((r["method"], r["image_id"]) for r in rows)
    assert not list(tmp_path.glob("records.rank*.jsonl"))


def test_refine_and_beam_reach_the_neuron_path_records_only(data, tmp_path, capsys):
    out = tmp_path / "run"
    code, _, err = run_main(capsys, *extract_args(data, out, "--method", "neuron-path", "random", "--limit", "3",
                                                  "--refine", "2", "--beam", "2", "--n-steps", "2"))
    assert code == 0, err
    records = read_records(out / "records.jsonl")
    searched = [r for r in records if r["method"] == "neuron-path"]
    assert len(searched) == 3 and all(r["settings"]["refine"] == 2 and r["settings"]["beam"] == 2 for r in searched)
    assert all("beam" not in r["settings"] for r in records if r["method"] == "random")
    run = json.loads((out / "run.json").read_text())
    assert run["refine"] == 2 and run["beam"] == 2
    # another refine is another run
    code, _, err = run_main(capsys, *extract_args(data, out, "--method", "neuron-path", "--limit", "3",
                                                  "--refine", "all", "--beam", "2", "--steps", "2"))
    assert code == 2 and "refine" in err


@pytest.mark.parametrize("flag, value", [("--refine", "x"), ("--refine", "-1"), ("--beam", "0")])
def test_bad_refine_and_beam_are_one_line_errors(data, tmp_path, capsys, flag, value):
    code, _, err = run_main(capsys, *extract_args(data, tmp_path / "run", flag, value))
    assert code == 2 and flag in err and len(err.strip().splitlines()) == 1


def test_refine_help_names_the_default():
    from captum_paths.cli import build_parser
    from captum_paths.search.neuron_path import DEFAULT_REFINE

    extract = build_parser()._subparsers._group_actions[0].choices["extract"]
    assert f"default: {DEFAULT_REFINE} in gate mode" in extract.format_help().replace("\n", " ").replace("  ", " ")
