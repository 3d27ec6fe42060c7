"""Console script, demo job, records I/O and resumable extraction."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from captum_paths import __version__
from captum_paths.cli import main
from captum_paths.demo import load_demo_data, load_demo_model
from captum_paths.pipeline.extract import extract_paths
from captum_paths.records import append_records, read_records, write_json_atomic


def test_console_script_version_and_help():
    out = subprocess.run([sys.executable, "-m", "captum_paths", "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.strip() == f"captum-paths {__version__}"
    out = subprocess.run([sys.executable, "-m", "captum_paths", "--help"], capture_output=True, text=True)
    assert out.returncode == 0 and "demo" in out.stdout


def test_records_skip_a_torn_last_line_and_appends_repair_it(tmp_path):
    file = tmp_path / "r.jsonl"
    append_records(file, [{"image_id": "a", "method": "m"}, {"image_id": "b", "method": "m"}])
    with file.open("a") as fh:
        fh.write('{"image_id": "c", "meth')  # a run killed mid-write
    assert [r["image_id"] for r in read_records(file)] == ["a", "b"]
    append_records(file, [{"image_id": "c", "method": "m"}])
    assert [r["image_id"] for r in read_records(file)] == ["a", "b", "c"]
    assert file.read_text().count("\n") == 3


def test_atomic_json_write_leaves_no_temporary_files(tmp_path):
    write_json_atomic(tmp_path / "s.json", {"x": 1})
    write_json_atomic(tmp_path / "s.json", {"x": 2})
    assert json.loads((tmp_path / "s.json").read_text()) == {"x": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["s.json"]


def test_extract_resumes_without_duplicates(tmp_path):
    model = load_demo_model()
    x, y = load_demo_data("test")
    x, y = x[:6], y[:6]
    ids = [f"img{i}" for i in range(6)]
    file = tmp_path / "records.jsonl"
    extract_paths(model, x[:4], y[:4], ids[:4], file, methods=["activation"], batch_size=3, progress=False)
    full = extract_paths(model, x, y, ids, file, methods=["activation"], batch_size=3, progress=False)
    assert [r["image_id"] for r in full] == ids
    fresh = extract_paths(model, x, y, ids, tmp_path / "fresh.jsonl", methods=["activation"], batch_size=6, progress=False)
    for a, b in zip(full, fresh):
        assert a["path"] == b["path"] and a["label"] == b["label"] and a["prediction"] == b["prediction"]
        assert a["jas"] == pytest.approx(b["jas"], rel=1e-5, abs=1e-8)
    with pytest.raises(ValueError, match="target"):
        extract_paths(model, x, y, ids, file, target="truth")


def test_demo_command_rejects_bad_limit(capsys):
    assert main(["demo", "--limit", "0", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "--limit" in err and "Traceback" not in err


def test_registry_names_and_errors():
    from captum_paths import PATH_METHODS, LayerProgressiveNeuronPath, get_path_method

    assert list(PATH_METHODS) == [
        "neuron-path", "activation", "knowledge-neurons", "conductance", "influence-pattern", "random",
    ]
    assert get_path_method("neuron-path") is LayerProgressiveNeuronPath
    with pytest.raises(ValueError, match="Did you mean 'activation'"):
        get_path_method("activations")


def test_atomic_writes_keep_the_permissions_of_a_plain_write(tmp_path):
    import os
    import stat

    from captum_paths.records import write_text_atomic

    old = os.umask(0o022)
    try:
        fresh = tmp_path / "report.html"
        write_text_atomic(fresh, "x")
        assert stat.S_IMODE(fresh.stat().st_mode) == 0o644
        existing = tmp_path / "records.jsonl"
        existing.write_text("a")
        existing.chmod(0o640)
        write_text_atomic(existing, "b")
        assert stat.S_IMODE(existing.stat().st_mode) == 0o640 and existing.read_text() == "b"
    finally:
        os.umask(old)


def test_version_less_records_load_in_the_current_layout(tmp_path):
    import json

    from captum_paths.records import SCHEMA_VERSION, read_records
    from captum_paths.search import PathResult

    old = {"image_id": "a", "label": 1, "target": 1, "prediction": 1, "method": "neuron-path",
           "path": [[3], [4]], "contributions": [[0.1], [0.2]], "jas": 0.3, "delta": 0.0, "scores": None,
           "refined_layers": None, "model_id": "demo",
           "settings": {"mode": "gate", "n_steps": 4, "method": "gausslegendre", "k": 1, "output": "prob"}}
    file = tmp_path / "records.jsonl"
    file.write_text(json.dumps(old) + "\n")
    (record,) = read_records(file)
    assert record["schema"] == SCHEMA_VERSION == 3
    assert record["settings"]["approximation"] == "gausslegendre" and "method" not in record["settings"]
    result = PathResult.from_records([old])
    assert result.settings["approximation"] == "gausslegendre"
    again = result.to_records(image_ids=["a"])[0]
    assert again["schema"] == SCHEMA_VERSION and again["settings"] == record["settings"]
    with pytest.raises(ValueError, match="newer than this captum_paths reads"):
        file.write_text(json.dumps({**old, "schema": 99}) + "\n")
        read_records(file)
