"""Runs that cannot lie (issue 14): one writer per run folder, no duplicates, a run identity that
includes the data and the weights, bad images skipped, atomic and tidy writes, demo folders
rebuilt, train-mode and non-finite models warned about or refused, one-line errors.

Sections follow the issue's numbered findings; finding 8 (settings checked before run.json is
written) is tests/test_pipeline.py::test_settings_are_checked_before_anything_is_written, and
here the weights' finite outputs (finding 12).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from _cli import ENV, extract_args, run_main
from captum_paths.model.data import ImageFolderDataset, open_image
from captum_paths.model.loading import load_model, weights_fingerprint
from captum_paths.pipeline import Run
from captum_paths.records import read_records
from captum_paths.search.registry import PATH_METHODS


#: The CLI in a subprocess.
_CLI = "import sys; from captum_paths.cli import main; sys.exit(main(sys.argv[1:]))"
#: ... on a disk where every ``os.fsync`` of a file whose path holds ``{only}`` waits until the file
#: ``{gate}`` exists: a writer is reliably caught holding the lock, or in the middle of an atomic write.
_GATED_DISK = """import os, time
_fsync = os.fsync
def _gated(fd):
    name = os.readlink(f"/proc/self/fd/{{fd}}") if os.path.isdir("/proc/self/fd") else ""
    while {only!r} in name and not os.path.exists({gate!r}):
        time.sleep(0.005)
    return _fsync(fd)
os.fsync = _gated
""" + _CLI


# ------------------------------------------------------------------------------------------ helpers
def popen(*args, gate=None, only=""):
    """The CLI in a subprocess; with ``gate``, fsyncs of files whose path holds ``only`` wait for
    the file ``gate`` to exist."""
    code = _CLI if gate is None else _GATED_DISK.format(gate=str(gate), only=only)
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)






def one_line(err):
    lines = err.strip().splitlines()
    return len(lines) == 1 and "error:" in lines[0] and "Traceback" not in err


def wait_for(condition, timeout=60.0, proc=None):
    """Poll ``condition`` until it holds (True) or ``proc`` ends / ``timeout`` passes (False)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if condition():
            return True
        if proc is not None and proc.poll() is not None:
            return condition()
        time.sleep(0.002)
    return False


def has_records(file):
    return lambda: file.exists() and file.stat().st_size > 0


def keys(records):
    return [(r["method"], r["image_id"]) for r in records]


def ids_of(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.glob("*/*") if not p.name.startswith("."))


def copy_classes(src, dst, classes):
    for cls in classes:
        shutil.copytree(src / cls, dst / cls)
    return dst


def truncated_jpeg(path):
    """A valid JPEG of noise (so most of it is scan data), cut to half its bytes."""
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, quality=95)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    Image.open(path).verify()  # the cheap upfront check passes: only decoding finds the damage
    return path


def demo_checkpoint(path, change=None):
    """The demo model's weights as a torch state dict; ``change(state_dict)`` edits them first."""
    state = load_model("demo")[0].state_dict()
    if change is not None:
        change(state)
    torch.save(state, path)
    return path


# ----------------------------------------------------------------------------------------- fixtures
pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(demo_images_2):
    """The demo's test images, 2 per class (20)."""
    return demo_images_2


@pytest.fixture(scope="module")
def small(data, tmp_path_factory):
    """Classes 0, 1 and 2 of ``data`` (6 images)."""
    return copy_classes(data, tmp_path_factory.mktemp("small") / "data", ["0", "1", "2"])


@pytest.fixture(scope="module")
def base_run(data, tmp_path_factory):
    """A run of neuron-path and random on ``data``: a report written before the analysis
    (it says "No analysis yet"), then the analysis with 10 permutations."""
    run = Run(tmp_path_factory.mktemp("base") / "run", device="cpu")
    run.extract("demo", data, methods=["neuron-path", "random"], n_steps=2, progress=False)
    run.report()
    run.analyze(permutations=10, pixels=False)
    return run


# ------------------------------------------------------------- finding 1: one writer per run folder
@pytest.mark.skipif(not os.path.isdir("/proc/self/fd"), reason="the gated disk names files through /proc")
def test_second_writer_and_merge_are_refused_while_extract_writes(data, tmp_path):
    out = tmp_path / "run"
    args = extract_args(data, out, "--method", "all", "--n-steps", "2", "--batch-size", "1", "--limit", "10")
    gate = tmp_path / "go"
    first = popen(*args, gate=gate, only="records")  # its first append waits on the disk until the gate opens
    try:
        assert wait_for(has_records(out / "records.jsonl"), proc=first), first.communicate()[1]
        merge, second = popen("merge", out), popen(*args)
        merge_out, merge_err = merge.communicate(timeout=120)
        _, second_err = second.communicate(timeout=120)
        assert first.poll() is None  # still appending
    finally:
        gate.touch()
        first_out, first_err = first.communicate(timeout=180)
    for name, proc, err in (("merge", merge, merge_err), ("extract", second, second_err)):
        assert proc.returncode == 1, (name, err)
        assert one_line(err) and f"being written by process {first.pid} on " in err, (name, err)
    assert "records:" not in merge_out
    assert first.returncode == 0, first_err
    assert "60 records, 60 new" in first_out
    raw = read_records(out / "records.jsonl", unique=False)
    assert len(raw) == 60 and len(set(keys(raw))) == 60  # nothing lost, nothing twice
    assert set(keys(raw)) == {(m, i) for m in PATH_METHODS for i in ids_of(data)[:10]}
    assert keys(raw) == sorted(keys(raw))


def test_the_lock_dies_with_a_killed_holder_and_the_rerun_resumes(data, tmp_path, capsys):
    out = tmp_path / "run"
    args = extract_args(data, out, "--method", "random", "activation", "--batch-size", "1")
    proc = popen(*args)
    assert wait_for(has_records(out / "records.jsonl"), proc=proc)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert json.loads((out / ".lock").read_text())["pid"] == proc.pid  # the file still names the dead holder
    partial = read_records(out / "records.jsonl")
    assert 0 < len(partial) < 40
    code, stdout, err = run_main(capsys, *args)
    assert code == 0, err
    assert f"40 records, {40 - len(partial)} new" in stdout
    raw = read_records(out / "records.jsonl", unique=False)
    assert len(raw) == len(set(keys(raw))) == 40
    # the rerun released the lock in turn: merge takes it
    assert run_main(capsys, "merge", out)[0] == 0


# ------------------------------------------------------------------------- finding 2: no duplicates
def _with_lines(src, dst, extra):
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("analysis", "report.html", "summary.md"))
    with (dst / "records.jsonl").open("a", encoding="utf-8") as fh:
        fh.write("".join(extra))
    return dst


def test_report_and_analyze_count_each_image_once(base_run, tmp_path, caplog):
    lines = base_run.records_file.read_text().splitlines(keepends=True)
    assert len(lines) == 40
    clean = _with_lines(base_run.folder, tmp_path / "clean", [])
    dup = _with_lines(base_run.folder, tmp_path / "dup", lines[:5] + lines[-3:])
    results = {}
    for folder in (clean, dup):
        run = Run(folder)
        run.analyze(permutations=10, pixels=False)
        run.report()
        summary = json.loads((run.analysis_dir / "summary.json").read_text())
        results[folder] = summary, run.summary_file.read_text().replace(str(folder), "RUN")
    assert results[clean] == results[dup]
    summary, text = results[dup]
    assert summary["images"] == 20
    assert "40 records" in text
    assert "8 duplicate record(s)" in caplog.text and "0 of them disagree" in caplog.text


def test_merge_removes_duplicates_and_says_how_many_disagree(base_run, tmp_path, capsys, caplog):
    lines = base_run.records_file.read_text().splitlines(keepends=True)
    other = json.loads(lines[0])
    other["path"] = [[(n + 1) % 256 for n in layer] for layer in other["path"]]
    dup = _with_lines(base_run.folder, tmp_path / "dup", lines[:3] + [json.dumps(other) + "\n"])
    assert len(read_records(dup / "records.jsonl", unique=False)) == 44
    # every reader keeps the first copy (merge did, evaluate kept the last)
    assert Run(dup).records()[0]["path"] == json.loads(lines[0])["path"]
    caplog.clear()
    code, stdout, err = run_main(capsys, "merge", dup)
    assert code == 0, err
    assert "(40 records)" in stdout
    assert "4 duplicate record(s)" in caplog.text and "1 of them disagree" in caplog.text
    assert (dup / "records.jsonl").read_text() == base_run.records_file.read_text()


# ----------------------------------------------- findings 3 and 7: the run identity, absolute paths
def _refused(capsys, args, *words):
    code, _, err = run_main(capsys, *args)
    assert code == 2 and one_line(err) and "another run" in err, err
    for word in words:
        assert word in err, (word, err)
    return err


def test_another_data_folder_with_the_same_images_is_another_run(small, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(capsys, *extract_args(small, out, "--method", "random"))[0] == 0
    copy = shutil.copytree(small, tmp_path / "copy")
    err = _refused(capsys, extract_args(copy, out, "--method", "random"), "data: ")
    assert "data_fingerprint" not in err  # the same images: only the folder differs
    assert len(read_records(out / "records.jsonl")) == 6


def test_a_new_class_folder_is_another_run_and_evaluate_refuses(small, tmp_path, capsys):
    data = shutil.copytree(small, tmp_path / "data")
    out = tmp_path / "run"
    assert run_main(capsys, *extract_args(data, out, "--method", "random"))[0] == 0
    (data / "15").mkdir()  # sorts between "1" and "2": class 2 would become index 3
    shutil.copy(next((data / "0").glob("*.png")), data / "15" / "x.png")
    _refused(capsys, extract_args(data, out, "--method", "random"), "data_fingerprint")
    code, _, err = run_main(capsys, "evaluate", "--run", out, "--quiet", "--no-pruning", "--jas-modes", "gate")
    assert code == 2 and one_line(err) and "changed" in err, err
    assert not (out / "evaluation").exists()


def test_a_label_map_whose_content_changed_is_another_run(small, tmp_path, capsys):
    out, labels = tmp_path / "run", tmp_path / "labels.json"
    labels.write_text(json.dumps({"0": 0, "1": 1, "2": 2}))
    assert run_main(capsys, *extract_args(small, out, "--method", "random", "--label-map", labels))[0] == 0
    labels.write_text(json.dumps({"0": 1, "1": 0, "2": 2}))  # same path, two classes swapped
    _refused(capsys, extract_args(small, out, "--method", "random", "--label-map", labels), "label_map_sha256")


def test_a_checkpoint_whose_content_changed_is_another_run(small, tmp_path, capsys):
    out, checkpoint = tmp_path / "run", demo_checkpoint(tmp_path / "model.pt")
    args = extract_args(small, out, "--method", "random", "--checkpoint", checkpoint, "--limit", "2")
    assert run_main(capsys, *args)[0] == 0

    def nudge(state):
        state["head.weight"][0, 0] += 0.5

    demo_checkpoint(checkpoint, nudge)
    _refused(capsys, args, "checkpoint_sha256")
    # evaluate would score another network than extract searched
    code, _, err = run_main(capsys, "evaluate", "--run", out, "--quiet", "--no-pruning", "--jas-modes", "gate",
                            "--n-steps", "2")
    assert code == 2 and one_line(err) and "checkpoint" in err and "changed" in err, err


def test_run_json_holds_absolute_paths_and_evaluate_works_from_elsewhere(small, tmp_path, monkeypatch, capsys):
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    shutil.copytree(small, work / "images")
    (work / "labels.json").write_text(json.dumps({"0": 0, "1": 1, "2": 2}))
    demo_checkpoint(work / "model.pt")
    # decoys of the same relative names, which a relative path would read from the other folder
    copy_classes(small, elsewhere / "images", ["0", "1"])
    (elsewhere / "labels.json").write_text(json.dumps({"0": 5, "1": 6, "2": 7}))
    demo_checkpoint(elsewhere / "model.pt", lambda s: s["head.weight"].zero_())
    monkeypatch.chdir(work)
    code, _, err = run_main(capsys, "extract", "--model", "demo", "--data", "images", "--out", "run", "--quiet",
                            "--label-map", "labels.json", "--checkpoint", "model.pt", "--method", "random")
    assert code == 0, err
    settings = json.loads((work / "run" / "run.json").read_text())
    for key, name in (("data", "images"), ("label_map", "labels.json"), ("checkpoint", "model.pt")):
        assert settings[key] == str((work / name).resolve()), key
    monkeypatch.chdir(elsewhere)
    code, _, err = run_main(capsys, "evaluate", "--run", os.path.relpath(work / "run"), "--quiet", "--no-pruning",
                            "--jas-modes", "gate", "--n-steps", "2")
    assert code == 0, err
    summary = json.loads((work / "run" / "evaluation" / "summary.json").read_text())
    assert summary["images"] == 6 and summary["accuracy"] > 0.5  # the real weights, not the zeroed decoy


# ------------------------------------------------------------------------ finding 4: random weights
@pytest.mark.parametrize("model", ["timm:vit_tiny_patch16_224", "torchvision:vit_b_16"])
def test_random_weights_are_refused_before_anything_is_written(small, tmp_path, capsys, model):
    out = tmp_path / "run"
    code, _, err = run_main(capsys, "extract", "--model", model, "--data", small, "--out", out, "--quiet")
    assert code == 2 and one_line(err) and "--random-weights SEED" in err and model in err, err
    assert not out.exists()


def test_seeded_random_weights_are_one_network_unseeded_ones_are_not(caplog):
    def fingerprint(seed):
        model, _ = load_model("timm:vit_tiny_patch16_224", img_size=32, patch_size=8, depth=2, random_weights=seed)
        return weights_fingerprint(model)

    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    assert fingerprint(3) == fingerprint(3) != fingerprint(4)
    assert torch.equal(torch.rand(3), expected)  # a seeded load leaves the global generator alone
    caplog.clear()
    assert fingerprint(None) != fingerprint(None)
    assert "unseeded" in caplog.text


def test_random_weights_are_recorded_and_the_same_on_every_load(small, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["extract", "--model", "timm:test_vit", "--random-weights", "5", "--data", small, "--out", out, "--quiet",
            "--method", "random", "--limit", "2"]
    code, _, err = run_main(capsys, *args)
    assert code == 0, err
    settings = json.loads((out / "run.json").read_text())
    assert settings["random_weights"] == 5
    assert settings["weights_sha256"] == weights_fingerprint(load_model("timm:test_vit", random_weights=5)[0])
    assert weights_fingerprint(Run(out, device="cpu").model()) == settings["weights_sha256"]  # evaluate's model
    code, stdout, err = run_main(capsys, *args)
    assert code == 0 and "0 new" in stdout, err
    args[args.index("5")] = "6"
    _refused(capsys, args, "random_weights: 5 there, 6 here")


# ---------------------------------------------------------------------- finding 5: a truncated JPEG
def test_a_truncated_jpeg_is_skipped_listed_and_the_rerun_goes_on(small, tmp_path, capsys):
    data = shutil.copytree(small, tmp_path / "data")
    bad = truncated_jpeg(data / "1" / "bad.jpg")
    out = tmp_path / "run"
    args = extract_args(data, out, "--method", "random", "activation", "--batch-size", "2")
    for run in ("first", "rerun"):
        code, stdout, err = run_main(capsys, *args)
        assert code == 0, (run, err)
        assert "6 images, 1 unreadable" in stdout, (run, stdout)
        listed = (out / "unreadable.txt").read_text().splitlines()
        assert len(listed) == 1 and listed[0].startswith(f"{bad}\t") and "truncated" in listed[0], (run, listed)
        records = read_records(out / "records.jsonl")
        assert sorted(set(r["image_id"] for r in records)) == ids_of(small) and len(records) == 12, run
    assert "0 new" in stdout


def test_a_truncated_jpeg_in_one_rank_shard_under_torchrun(small, tmp_path):
    data = shutil.copytree(small, tmp_path / "data")
    first = sorted((data / "0").glob("*.png"))[0]
    bad = truncated_jpeg(data / "0" / f"{first.stem}_cut.jpg")  # sorts right after the first image
    ids = ImageFolderDataset(data).image_ids
    assert sorted(ids).index(bad.relative_to(data).as_posix()) % 2 == 1  # rank 1's shard, not the merger's
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m",
           "captum_paths", *map(str, extract_args(data, out, "--method", "random", "--device", "cpu"))]
    res = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=180)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    listed = (out / "unreadable.txt").read_text().splitlines()
    assert len(listed) == 1 and listed[0].startswith(f"{bad}\t"), listed
    records = read_records(out / "records.jsonl")
    assert sorted(r["image_id"] for r in records) == ids_of(small)
    assert not list(out.glob("records.rank*.jsonl"))


# ------------------------------------------------------------------------- finding 6: 16-bit images
def test_a_16_bit_png_is_scaled_not_clipped(tmp_path):
    values = np.linspace(0, 65535, 256).round().astype(np.uint16).reshape(16, 16)
    path = tmp_path / "deep.png"
    Image.fromarray(values).save(path)
    assert Image.open(path).mode.startswith("I")  # PIL reads it as 16/32-bit integers
    expected = values / 65535.0 * 255.0
    rgb = np.asarray(open_image(path), dtype=np.float64)
    assert rgb.shape == (16, 16, 3)
    assert np.abs(rgb - expected[..., None]).max() <= 1.0
    assert (rgb == 255).mean() < 0.01  # was 99.7% white
    gray = np.asarray(open_image(path, mode=None), dtype=np.float64)
    assert np.abs(gray - expected).max() <= 1.0


# ------------------------------------------------------------------------ finding 14: symlink loops
def test_symlink_loops_in_a_class_folder_end_and_list_each_image_once(tmp_path):
    root = tmp_path / "data"
    (root / "a" / "sub").mkdir(parents=True)
    (root / "b").mkdir()
    for name in ("a/x.png", "a/sub/y.png", "b/z.png"):
        Image.new("L", (8, 8)).save(root / name)
    os.symlink(".", root / "a" / "self")
    os.symlink("..", root / "a" / "sub" / "parent")
    os.symlink("../..", root / "a" / "sub" / "root")  # back to the data folder: b's images seen from class a
    (tmp_path / "elsewhere").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "elsewhere" / "w.png")
    os.symlink(tmp_path / "elsewhere", root / "b" / "more")  # a folder outside the data folder is followed
    found = {}
    scan = threading.Thread(target=lambda: found.update(ds=ImageFolderDataset(root)), daemon=True)
    scan.start()
    scan.join(timeout=30)
    assert "ds" in found, "the scan did not end"
    ds = found["ds"]
    assert ds.image_ids == ["a/sub/y.png", "a/x.png", "b/more/w.png", "b/z.png"]
    assert ds.targets == [0, 0, 1, 1]


# ----------------------------------------- finding 9: kill -9 during analyze and report, file modes
def _tmp_leftovers(folder):
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")
                  if p.name.endswith(".tmp") or p.name in (".analysis.new", ".analysis.old",
                                                           ".evaluation.new", ".evaluation.old"))


def _complete_analysis(folder, expected):
    """The permutation count of ``folder/analysis``, checked whole: every expected file, and the
    summary, the sharing table and the graph from one and the same analysis."""
    import networkx as nx
    import pandas as pd

    analysis = folder / "analysis"
    assert sorted(p.name for p in analysis.iterdir()) == expected
    assert all(p.stat().st_size > 0 for p in analysis.iterdir())
    summary = json.loads((analysis / "summary.json").read_text())
    sharing = pd.read_csv(analysis / "path_sharing.csv")
    assert sharing["permutations"].item() == summary["permutations"]
    assert sharing["p_value"].item() == pytest.approx(summary["p_value"])
    assert nx.read_graphml(analysis / "path_graph.graphml").number_of_nodes() == summary["graph_nodes"]
    return summary["permutations"]


def _kill_when(proc, ready, delay):
    """``kill -9`` ``proc`` ``delay`` seconds after ``ready()`` first holds (unless it ended)."""
    wait_for(ready, timeout=120, proc=proc)
    time.sleep(delay)
    proc.kill()
    proc.communicate()


def _holds_lock(folder, pid):
    try:
        return json.loads((folder / ".lock").read_text() or "{}").get("pid") == pid
    except (OSError, ValueError):
        return False


def _kill_trials(folders, command, delays):
    """Run ``command(folder)`` on every folder at once and ``kill -9`` each: with a delay, that long
    after it took the run's lock (a stage writes from then on); with ``None``, on a slow disk, as
    soon as the temporary file of an atomic write appears. Returns the processes."""
    never = folders[0].parent / "never"  # the slow disk never answers
    procs = [popen(*command(f), gate=never if d is None else None) for f, d in zip(folders, delays)]

    def ready(folder, proc, delay):
        if delay is None:
            return lambda: any(folder.rglob("*.tmp"))
        return lambda: _holds_lock(folder, proc.pid)

    threads = [threading.Thread(target=_kill_when, args=(p, ready(f, p, d), d or 0.0))
               for f, p, d in zip(folders, procs, delays)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return procs


def test_kill_9_during_analyze_leaves_the_old_or_the_new_analysis_whole(base_run, tmp_path, capsys):
    expected = sorted(p.name for p in base_run.analysis_dir.iterdir())
    rng = random.Random(14)
    delays = [rng.uniform(0.0, 0.3), rng.uniform(0.3, 1.0), None]
    folders = [shutil.copytree(base_run.folder, tmp_path / f"t{i}") for i in range(len(delays))]
    procs = _kill_trials(folders, lambda f: ["analyze", "--run", f, "--permutations", "50", "--no-pixels",
                                             "--quiet"], delays)
    assert procs[-1].returncode == -signal.SIGKILL
    assert _tmp_leftovers(folders[-1]), "the slow-disk trial must be killed inside a write"
    outcomes = []
    for folder in folders:
        outcomes.append(_complete_analysis(folder, expected))  # readers see the old or the new one
        code, _, err = run_main(capsys, "report", "--run", folder)  # the next command tidies
        assert code == 0, err
        assert _tmp_leftovers(folder) == []
        assert _complete_analysis(folder, expected) == outcomes[-1]
    assert set(outcomes) <= {10, 50} and outcomes[-1] == 10


def test_a_swap_killed_between_its_renames_is_undone(base_run, tmp_path, capsys):
    folder = shutil.copytree(base_run.folder, tmp_path / "run")
    expected = sorted(p.name for p in base_run.analysis_dir.iterdir())
    os.replace(folder / "analysis", folder / ".analysis.old")  # first rename done, the second not
    shutil.copytree(folder / ".analysis.old", folder / ".analysis.new")
    (folder / ".analysis.new" / "summary.json").unlink()
    assert run_main(capsys, "report", "--run", folder)[0] == 0
    assert _tmp_leftovers(folder) == [] and _complete_analysis(folder, expected) == 10


def test_kill_9_during_report_leaves_whole_files_and_no_temporary_ones(base_run, tmp_path, capsys):
    old_md, old_html = base_run.summary_file.read_text(), base_run.report_file.read_text()
    assert "No analysis yet" in old_md
    rng = random.Random(9)
    delays = [rng.uniform(0.0, 0.005), rng.uniform(0.0, 0.02), None]
    folders = [shutil.copytree(base_run.folder, tmp_path / f"t{i}") for i in range(len(delays))]
    procs = _kill_trials(folders, lambda f: ["report", "--run", f, "--quiet"], delays)
    assert procs[-1].returncode == -signal.SIGKILL and list(folders[-1].glob(".*.tmp"))
    for folder in folders:
        md, page = (folder / "summary.md").read_text(), (folder / "report.html").read_text()
        assert page.endswith("</html>\n") and md.startswith("# captum-paths report")
        code, _, err = run_main(capsys, "report", "--run", folder)
        assert code == 0, err
        assert _tmp_leftovers(folder) == []
        new_md, new_page = (folder / "summary.md").read_text(), (folder / "report.html").read_text()
        assert "No analysis yet" not in new_md
        assert md in (old_md, new_md) and page in (old_html, new_page)


def test_outputs_have_the_mode_of_a_plain_write(base_run):
    with open(base_run.folder / "plain.txt", "w") as fh:
        fh.write("x")
    plain = os.stat(base_run.folder / "plain.txt").st_mode & 0o7777
    (base_run.folder / "plain.txt").unlink()
    files = [base_run.run_file, base_run.records_file, base_run.report_file, base_run.summary_file,
             base_run.folder / ".lock", *base_run.analysis_dir.iterdir()]
    modes = {p.name: oct(p.stat().st_mode & 0o7777) for p in files}
    assert modes == {p.name: oct(plain) for p in files}
    os.mkdir(base_run.folder / "plain")
    assert base_run.analysis_dir.stat().st_mode & 0o7777 == (base_run.folder / "plain").stat().st_mode & 0o7777
    os.rmdir(base_run.folder / "plain")


# --------------------------------------------------------------------------------- finding 10: demo
def test_demo_replaces_only_its_own_image_folder(tmp_path, caplog):
    from captum_paths.pipeline.demo import run_demo

    out = tmp_path / "demo"
    run_demo(out, per_class=1, n_steps=2, progress=False)
    assert "analysis skipped: analysis needs at least 2 images of one class" in caplog.text  # not "All-NaN slice"
    data = out / "data"
    full = ids_of(data)
    assert len(full) == 10 and len(read_records(out / "records.jsonl")) == 60
    run_demo(out, per_class=1, n_steps=2, progress=False)  # the same demo again: resumes, nothing rewritten
    assert ids_of(data) == full and len(read_records(out / "records.jsonl")) == 60

    (data / ".demo.json").unlink()  # a folder the demo did not write (it writes the marker with the folder)
    with pytest.raises(ValueError, match="not the image folder the demo writes"):
        run_demo(out, per_class=1, n_steps=2, progress=False)
    assert ids_of(data) == full and len(read_records(out / "records.jsonl")) == 60
    (data / ".demo.json").write_text(json.dumps({"split": "test", "per_class": 1}))

    with pytest.raises(ValueError, match="holds the demo of --per-class 1; --restart replaces it"):
        run_demo(out, per_class=2, n_steps=2, progress=False)
    assert ids_of(data) == full and len(read_records(out / "records.jsonl")) == 60
    run_demo(out, per_class=2, n_steps=2, progress=False, restart=True)
    assert len(ids_of(data)) == 20 and set(full) < set(ids_of(data))
    assert json.loads((data / ".demo.json").read_text())["per_class"] == 2
    records = read_records(out / "records.jsonl")
    assert len(records) == 6 * 20 and {r["image_id"] for r in records} == set(ids_of(data))
    assert json.loads((out / "run.json").read_text())["data_fingerprint"] == ImageFolderDataset(data).fingerprint()
    assert json.loads((out / "settings.json").read_text())["images"] == 20


# --------------------------------------------------------------------------- finding 11: train mode
@pytest.fixture(scope="module")
def batch(small):
    _, transform = load_model("demo")
    ds = ImageFolderDataset(small, transform=transform)
    items = [ds[i] for i in range(4)]
    return torch.stack([x for x, _, _ in items]), torch.tensor([y for _, y, _ in items])


def test_a_model_in_train_mode_gets_a_warning(batch):
    from captum_paths.search import LayerProgressiveNeuronPath

    x, y = batch
    model = load_model("demo")[0]
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.1  # the demo's dropout rates are 0: in training mode it would compute the same
    model.train()
    with pytest.warns(UserWarning, match="is in training mode"):
        LayerProgressiveNeuronPath(model).attribute(x, target=y, n_steps=2)
    model.eval()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        LayerProgressiveNeuronPath(model).attribute(x, target=y, n_steps=2)
    assert not [w for w in caught if "training mode" in str(w.message)]


# ----------------------------------- findings 12 and 8: non-finite numbers, refused before run.json
def _poison(state):
    state["patch_embed.proj.weight"].view(-1)[0] = float("nan")


def test_a_checkpoint_with_nan_weights_is_a_one_line_error(small, tmp_path, capsys):
    checkpoint = demo_checkpoint(tmp_path / "nan.pt", _poison)
    out = tmp_path / "run"
    args = extract_args(small, out, "--method", "random", "--checkpoint", checkpoint)
    code, _, err = run_main(capsys, *args)
    assert code == 2 and one_line(err), err
    assert "non-finite" in err and "'demo'" in err and str(checkpoint) in err
    assert not (out / "run.json").exists() and not list(out.glob("records*"))
    # the repaired checkpoint (same path) is a new run, not "another run"
    demo_checkpoint(checkpoint)
    code, stdout, err = run_main(capsys, *args)
    assert code == 0 and "6 new" in stdout, err


def test_the_api_refuses_non_finite_outputs(batch):
    from captum_paths.attribution import JointNeuronIntegratedGradients
    from captum_paths.search import LayerProgressiveNeuronPath

    x, y = batch
    model = load_model("demo")[0]
    with torch.no_grad():
        model.patch_embed.proj.weight.view(-1)[0] = float("nan")
    with pytest.raises(ValueError, match="not finite"):
        JointNeuronIntegratedGradients(model).attribute(x, [(0, 0), (1, 3)], target=y, n_steps=2)
    with pytest.raises(ValueError, match="not finite"):
        LayerProgressiveNeuronPath(model).attribute(x, target=y, n_steps=2)


# ------------------------------------------------------ finding 13: one-line errors, not tracebacks
def test_a_device_this_machine_lacks_is_a_one_line_error(small, tmp_path, capsys):
    devices = ["gpu", f"cuda:{torch.cuda.device_count()}"]
    if not torch.cuda.is_available():
        devices.append("cuda")
    if not torch.backends.mps.is_available():
        devices.append("mps")
    for device in devices:
        code, _, err = run_main(capsys, *extract_args(small, tmp_path / "run", "--method", "random",
                                                      "--device", device))
        assert code == 2 and one_line(err) and repr(device) in err, (device, err)
    assert not (tmp_path / "run").exists()


def test_a_run_json_that_is_not_an_object_is_a_one_line_error(base_run, data, tmp_path, capsys):
    folder = shutil.copytree(base_run.folder, tmp_path / "run")
    (folder / "run.json").write_text("[1, 2]")
    for args in (["report", "--run", folder], ["analyze", "--run", folder, "--no-pixels"],
                 extract_args(data, folder, "--method", "random")):
        code, _, err = run_main(capsys, *args)
        assert code == 2 and one_line(err) and "run.json holds a JSON list" in err, (args[0], err)


def test_a_bad_record_names_its_file_and_line(base_run, tmp_path, capsys):
    good = json.loads(base_run.records_file.read_text().splitlines()[0])
    bad_lines = {
        "no path": {k: v for k, v in good.items() if k != "path"},
        "bad jas": dict(good, image_id="9/x.png", jas="high"),
        "not json": "{'image_id': 1",
    }
    for name, bad in bad_lines.items():
        folder = shutil.copytree(base_run.folder, tmp_path / name.replace(" ", "_"))
        with (folder / "records.jsonl").open("a") as fh:
            fh.write((bad if isinstance(bad, str) else json.dumps(bad)) + "\n")
        code, _, err = run_main(capsys, "report", "--run", folder)
        where = f"{folder / 'records.jsonl'} line 41 is not a valid record: "
        assert code == 2 and one_line(err) and where in err, (name, err)
    # optional keys may be missing: the report counts the record
    minimal = {k: good[k] for k in ("image_id", "method", "path", "target")}
    folder = _with_lines(base_run.folder, tmp_path / "minimal", [json.dumps(dict(minimal, method="by-hand")) + "\n"])
    code, _, err = run_main(capsys, "report", "--run", folder)
    assert code == 0 and "41 records" in (folder / "summary.md").read_text(), err


def test_a_model_returning_a_tuple_with_explicit_sites_is_a_clear_error(batch):
    from captum_paths.attribution import JointNeuronIntegratedGradients
    from captum_paths.model.loading import LogitsOnly
    from captum_paths.search import LayerProgressiveNeuronPath
    from captum_paths.model.sites import NeuronSites

    x, y = batch
    model = load_model("demo")[0]

    class Pair(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, images):
            return self.inner(images), "aux"

    pair = Pair(model).eval()
    ffn = [block.mlp.act for block in model.blocks]
    for attribute in (lambda: LayerProgressiveNeuronPath(pair, sites=NeuronSites(pair, ffn)).attribute(x, target=y),
                      lambda: JointNeuronIntegratedGradients(pair, sites=NeuronSites(pair, ffn)).attribute(
                          x, [(0, 0)], target=y)):
        with pytest.raises(TypeError, match="returned a tuple, not a logits tensor.*LogitsOnly"):
            attribute()
    # the advice works: the same path as the plain model's
    wrapped = LogitsOnly(pair)
    got = LayerProgressiveNeuronPath(wrapped, sites=NeuronSites(wrapped, ffn)).attribute(x, target=y, n_steps=2)
    assert torch.equal(got.paths, LayerProgressiveNeuronPath(model).attribute(x, target=y, n_steps=2).paths)


@pytest.mark.parametrize("permutations", ["-1", "-5"])
def test_negative_permutations_are_refused_before_anything_is_written(base_run, tmp_path, capsys, permutations):
    folder = _with_lines(base_run.folder, tmp_path / "run", [])
    code, _, err = run_main(capsys, "analyze", "--run", folder, "--permutations", permutations, "--no-pixels")
    assert code == 2 and one_line(err) and f"permutations must be a non-negative int (0: no permutation test); " \
        f"got {permutations}" in err, err
    assert not (folder / "analysis").exists()


# ------------------------------------------------------------------------------ finding 14: smaller
def test_merge_on_a_folder_that_is_not_a_run_does_not_block_extract(small, tmp_path, capsys):
    out = tmp_path / "run"
    out.mkdir()
    code, stdout, _ = run_main(capsys, "merge", out)
    assert code == 0 and "(0 records)" in stdout and not (out / "records.jsonl").exists()
    code, stdout, err = run_main(capsys, *extract_args(small, out, "--method", "random", "--limit", "2"))
    assert code == 0 and "2 new" in stdout, err


def test_an_extract_that_finished_meanwhile_keeps_its_methods(small, tmp_path, monkeypatch):
    import captum_paths.pipeline.extract as stage

    out = tmp_path / "run"
    Run(out, device="cpu").extract("demo", small, methods=["random"], limit=1, progress=False)
    real = stage._rank0_lock

    def racing(run, info):  # another extract runs to its end between this one's check and its lock
        monkeypatch.setattr(stage, "_rank0_lock", real)
        Run(out, device="cpu").extract("demo", small, methods=["activation"], limit=1, progress=False)
        return real(run, info)

    monkeypatch.setattr(stage, "_rank0_lock", racing)
    Run(out, device="cpu").extract("demo", small, methods=["random"], limit=2, progress=False)
    assert json.loads((out / "run.json").read_text())["methods"] == ["random", "activation"]
    assert sorted(keys(read_records(out / "records.jsonl"))) == sorted(
        [("activation", i) for i in ids_of(small)[:1]] + [("random", i) for i in ids_of(small)[:2]])


def test_report_refuses_records_of_another_model(base_run, tmp_path, capsys):
    lines = [json.loads(line) for line in base_run.records_file.read_text().splitlines()]
    for r in lines[::2]:
        r["model_id"] = "demo-v2"
    folder = _with_lines(base_run.folder, tmp_path / "run", [])
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    code, _, err = run_main(capsys, "report", "--run", folder)
    assert code == 2 and one_line(err) and "model 'demo-v2' (run.json: 'demo')" in err, err
    assert not (folder / "summary.md").exists()


def test_world_size_without_a_launcher_is_a_one_line_error(small, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    for name in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "run"
    code, _, err = run_main(capsys, *extract_args(small, out, "--method", "random"))
    assert code == 2 and one_line(err) and "WORLD_SIZE=2 is set but RANK, MASTER_ADDR, MASTER_PORT are not" in err
    assert not (out / "run.json").exists()
