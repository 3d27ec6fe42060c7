"""Feeding the search at scale (CPU checks): DataLoader workers, mixed precision, a batch
that runs out of memory, and resuming a multi-worker run after kill -9."""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from captum_paths.cli import main
from captum_paths.demo import save_demo_image_folder
from captum_paths.records import read_records

ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return save_demo_image_folder(tmp_path_factory.mktemp("feed") / "data", limit_per_class=2)


def _extract(data, out, *extra):
    return ["extract", "--model", "demo", "--data", str(data), "--out", str(out), "--method", "neuron-path", "random",
            "--n-steps", "4", "--batch-size", "3", "--quiet", *extra]


def _key(records):
    return [(r["method"], r["image_id"], r["path"], r["label"], r["prediction"]) for r in records]


def assert_same(a, b):
    """The same records, the scores to float32 precision: BLAS blocking depends on the batch size, so
    when an image is searched in another batch its JAS, a difference of two probabilities near 1,
    may move by a few float32 steps of 1.0 (6e-8 each)."""
    assert _key(a) == _key(b)
    assert [r["jas"] for r in a] == pytest.approx([r["jas"] for r in b], rel=1e-5, abs=5e-7)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert main(_extract(data, out, "--workers", "0", "--limit", "12")) == 0
    return read_records(out / "records.jsonl")


def test_records_do_not_depend_on_the_decoding_workers(data, reference, tmp_path):
    out = tmp_path / "run"
    assert main(_extract(data, out, "--workers", "2", "--limit", "12")) == 0
    assert_same(read_records(out / "records.jsonl"), reference)
    assert len(reference) == 24


def test_a_damaged_image_is_skipped_by_a_worker_too(data, tmp_path, capsys):
    import shutil

    copy = tmp_path / "data"
    shutil.copytree(data, copy)
    good = next((copy / "0").glob("*.png"))
    (copy / "0" / "0000_truncated.png").write_bytes(good.read_bytes()[: len(good.read_bytes()) // 2])
    out = tmp_path / "run"
    assert main(_extract(copy, out, "--workers", "2", "--method", "random")) == 0, capsys.readouterr().err
    assert "0000_truncated.png" in (out / "unreadable.txt").read_text()
    assert len(read_records(out / "records.jsonl")) == 20


def test_killed_multi_worker_extract_resumes_exactly(data, reference, tmp_path):
    out = tmp_path / "run"
    args = _extract(data, out, "--workers", "2", "--limit", "12", "--batch-size", "1")
    proc = subprocess.Popen([sys.executable, "-m", "captum_paths", *args], env=ENV, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    file = out / "records.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and len(read_records(file)) < 4:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)  # the main process only: its decoding workers outlive it a moment
    proc.wait()
    partial = read_records(file)
    assert 0 < len(partial) < 24
    assert main(args) == 0  # at once: a worker left behind must not hold the run folder's lock
    os.killpg(proc.pid, signal.SIGKILL) if _alive_group(proc.pid) else None
    assert_same(read_records(file), reference)


def _alive_group(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except OSError:
        return False


def test_bf16_autocast_on_cpu_runs_the_search_and_scores_in_fp32(data, reference, tmp_path):
    import json

    out = tmp_path / "run"
    assert main(_extract(data, out, "--dtype", "bf16", "--limit", "12")) == 0
    assert json.loads((out / "run.json").read_text())["dtype"] == "bf16"
    half = {(r["method"], r["image_id"]): r for r in read_records(out / "records.jsonl")}
    full = {(r["method"], r["image_id"]): r for r in reference}
    assert half.keys() == full.keys()
    searched = [key for key in full if key[0] == "neuron-path"]
    layers = [(a, b) for k in searched for a, b in zip(half[k]["path"], full[k]["path"])]
    agree = sum(a == b for a, b in layers) / len(layers)
    assert agree >= 0.5, agree  # bf16 reorders near-tied neurons of the tiny model; the mean JAS holds
    mean = lambda records: sum(records[k]["jas"] for k in searched) / len(searched)  # noqa: E731
    assert mean(half) == pytest.approx(mean(full), rel=0.1)
    for key, r in full.items():  # the random paths are the same; their bf16 JAS close to fp32
        if key[0] == "random":
            assert half[key]["path"] == r["path"]
            assert half[key]["jas"] == pytest.approx(r["jas"], abs=0.02)
    # another dtype is another run
    assert main(_extract(data, out, "--dtype", "fp32", "--limit", "12")) == 2


def test_bf16_api_scores_are_fp32():
    from captum_paths import LayerProgressiveNeuronPath
    from captum_paths.demo import load_demo_data, load_demo_model

    model = load_demo_model()
    x, y = load_demo_data("test")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        result = LayerProgressiveNeuronPath(model).attribute(x[:4], target=y[:4])
    full = LayerProgressiveNeuronPath(model).attribute(x[:4], target=y[:4])
    assert result.jas.dtype == torch.float32 and result.contributions.dtype == torch.float32
    torch.testing.assert_close(result.jas, full.jas, rtol=0.1, atol=2e-2)


def test_a_batch_out_of_memory_is_searched_in_halves(data, reference, tmp_path, monkeypatch, caplog):
    """Batches of more than one image raise a CUDA out-of-memory error here; the records are the
    same, found one image at a time."""
    from captum_paths.search.base import PathAttribution

    real = PathAttribution.attribute

    def small_only(self, inputs, *args, **kwargs):
        if len(inputs) > 1:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")
        return real(self, inputs, *args, **kwargs)

    monkeypatch.setattr(PathAttribution, "attribute", small_only)
    out = tmp_path / "run"
    with caplog.at_level(logging.WARNING, logger="captum_paths.pipeline.extract"):
        assert main(_extract(data, out, "--limit", "12")) == 0
    assert_same(read_records(out / "records.jsonl"), reference)
    halvings = [r.getMessage() for r in caplog.records if "in halves" in r.getMessage()]
    assert halvings and all("ran out of memory on cpu" in m for m in halvings)


def test_one_image_out_of_memory_is_a_one_line_error(data, tmp_path, monkeypatch, capsys):
    from captum_paths.search.base import PathAttribution

    def never(self, *args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory (simulated)")

    monkeypatch.setattr(PathAttribution, "attribute", never)
    assert main(_extract(data, tmp_path / "run", "--limit", "2")) == 1
    err = capsys.readouterr().err
    assert "one image does not fit on cpu" in err and len(err.strip().splitlines()) == 1


def test_out_of_memory_outside_the_search_is_a_one_line_error(data, tmp_path, monkeypatch, capsys):
    """Out of memory in the clean forward (not a search, so no halving) ends the CLI with one line."""
    from captum_paths.pipeline import extract as extract_module

    def never(*args, **kwargs):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")

    monkeypatch.setattr(extract_module, "_predict", never)
    assert main(_extract(data, tmp_path / "run", "--limit", "2")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "out of GPU memory (CUDA out of memory. Tried to allocate 2.00 GiB)" in err[0]
    assert "--batch-size" in err[0]


@pytest.mark.parametrize("flag, value", [("--workers", "-1"), ("--dtype", "fp8")])
def test_bad_workers_and_dtype_are_one_line_errors(data, tmp_path, capsys, flag, value):
    assert main(_extract(data, tmp_path / "run", flag, value)) == 2
    err = capsys.readouterr().err
    assert flag.strip("-") in err and len(err.strip().splitlines()) == 1
