"""A run folder never deletes a user's files, and never shows stale, edited or foreign results as
the run's: demo and extract refuse folders they would overwrite, ``--restart`` and new records
make earlier stage outputs stale, edited records and ``run.json`` are refused, ``merge`` and
``compare`` refuse results of another model or of other pictures."""
import json
import shutil

import pytest

from captum_paths.pipeline import Run
from captum_paths.records import read_records

from _cli import extract_args, run_main


def one_line(err):
    lines = [line for line in err.splitlines() if line.strip()]
    return len(lines) == 1 and "Traceback" not in err


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def data(demo_images_2):
    """The demo's test images, 2 per class (20)."""
    return demo_images_2


@pytest.fixture(scope="module")
def evaluated(data, tmp_path_factory):
    """neuron-path and random on every image of ``data``, evaluated and analyzed."""
    run = Run(tmp_path_factory.mktemp("evaluated") / "run", device="cpu")
    run.extract("demo", data, methods=["neuron-path", "random"], n_steps=2, progress=False)
    run.evaluate(jas_modes=("gate",), n_steps=2, pruning=False, faithfulness=False)
    run.analyze(permutations=10, pixels=False)
    return run


def _copy(run, dst):
    shutil.copytree(run.folder, dst)
    return Run(dst, device="cpu")


def _tree(folder):
    return sorted((p.relative_to(folder).as_posix(), p.read_bytes() if p.is_file() else None)
                  for p in folder.rglob("*") if p.name != ".lock")


# ------------------------------------------------------------------ 1: the user's files stay
def test_demo_never_deletes_a_folder_it_did_not_write(tmp_path, capsys, monkeypatch):
    raw = tmp_path / "p" / "data" / "raw"
    raw.mkdir(parents=True)
    (raw / "r.csv").write_text("x\n")
    monkeypatch.chdir(tmp_path / "p")
    code, _, err = run_main(capsys, "demo", "--out", ".", "--per-class", "1", "--quiet")
    assert code == 2 and one_line(err) and "not the image folder the demo writes" in err, err
    assert (raw / "r.csv").read_text() == "x\n"
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["data"]


def test_demo_refuses_another_run_and_a_folder_of_other_files(evaluated, tmp_path, capsys):
    other = _copy(evaluated, tmp_path / "run")  # an extract run with its own data folder
    before = _tree(other.folder)
    code, _, err = run_main(capsys, "demo", "--out", other.folder, "--per-class", "1", "--quiet")
    assert code == 2 and one_line(err) and "not a demo" in err, err
    assert _tree(other.folder) == before

    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "report.html").write_text("my page")
    code, _, err = run_main(capsys, "demo", "--out", mine, "--per-class", "1", "--quiet")
    assert code == 2 and one_line(err) and "holds report.html, which a run would replace" in err, err
    assert sorted(p.name for p in mine.iterdir()) == ["report.html"]


def test_extract_refuses_a_folder_of_other_files(data, tmp_path, capsys):
    out = tmp_path / "out"
    (out / "evaluation").mkdir(parents=True)
    (out / "evaluation" / "mine.csv").write_text("a\n")
    code, _, err = run_main(capsys, *extract_args(data, out, "--method", "random", "--limit", "2"))
    assert code == 2 and one_line(err) and "holds evaluation, which a run would replace" in err, err
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*")) == ["evaluation", "evaluation/mine.csv"]


# --------------------------------------------------------------- 11: not in the data folder
@pytest.mark.parametrize("where", ["same", "inside"])
def test_out_in_the_data_folder_is_refused(data, tmp_path, capsys, where):
    copy = shutil.copytree(data, tmp_path / "data")
    before = _tree(copy)
    out = copy if where == "same" else copy / "0" / "run"
    code, _, err = run_main(capsys, *extract_args(copy, out, "--method", "random", "--limit", "2"))
    assert code == 2 and one_line(err) and "is inside the data folder" in err, err
    assert _tree(copy) == before


# ----------------------------------------------------------------------- 4: nothing stale
def test_restart_removes_the_old_stage_outputs(evaluated, data, tmp_path, capsys):
    run = _copy(evaluated, tmp_path / "run")
    run.report(heatmaps=False)
    code, _, err = run_main(capsys, *extract_args(data, run.folder, "--method", "neuron-path", "random",
                                                  "--n-steps", "2", "--restart", "--limit", "8"))
    assert code == 0, err
    assert not any((run.folder / name).exists() for name in ("evaluation", "analysis", "report.html", "summary.md"))
    code, _, err = run_main(capsys, "report", "--run", run.folder, "--heatmaps", "0")
    assert code == 0, err
    summary = (run.folder / "summary.md").read_text()
    assert "16 records" in summary and "No evaluation yet" in summary and "No analysis yet" in summary
    assert "Evaluation per method" not in summary


def test_outputs_of_other_records_are_left_out_of_the_report(evaluated, data, tmp_path, caplog):
    run = _copy(evaluated, tmp_path / "run")
    full = run.records()
    summary = json.loads((run.evaluation_dir / "summary.json").read_text())
    assert summary["records_sha256"] == run.records_digest(full)
    assert not run.stale(run.evaluation_dir, full) and not run.stale(run.analysis_dir, full)
    # the run's records change under its outputs: fewer images (as after a --restart --limit of an older version)
    kept = [line for line in run.records_file.read_text().splitlines(keepends=True)
            if not json.loads(line)["image_id"].startswith("9/")]
    run.records_file.write_text("".join(kept))
    fresh = Run(run.folder, device="cpu")
    assert fresh.stale(fresh.evaluation_dir, fresh.records()) and fresh.stale(fresh.analysis_dir, fresh.records())
    _, markdown = fresh.report(heatmaps=False)
    text = markdown.read_text()
    assert "The evaluation was made from other records than the run holds now" in text
    assert "The analysis was made from other records than the run holds now" in text
    assert "Evaluation per method" not in text and "Path sharing" not in text
    assert "was made from other records" in caplog.text
    from captum_paths.explorer import read_payload

    payload = read_payload(fresh.report_file.read_text())
    assert payload["meta"]["images"] == 18 and payload["meta"]["factor"] is None
    assert not payload["effects"] and not payload["faithfulness"]
    assert payload["tables"] == []


def test_demo_of_other_settings_needs_restart_and_leaves_nothing_stale(tmp_path, capsys):
    out = tmp_path / "demo"
    assert run_main(capsys, "demo", "--out", out, "--per-class", "2", "--n-steps", "2", "--quiet")[0] == 0
    first = (out / "summary.md").read_text()
    assert "120 records" in first and "Path sharing" in first and (out / "analysis").is_dir()
    code, _, err = run_main(capsys, "demo", "--out", out, "--per-class", "1", "--n-steps", "2", "--quiet")
    assert code == 2 and one_line(err) and "--restart replaces it" in err, err
    assert len(read_records(out / "records.jsonl")) == 6 * 20
    code, _, err = run_main(capsys, "demo", "--out", out, "--per-class", "1", "--n-steps", "2", "--quiet",
                            "--restart")
    assert code == 0, err
    text = (out / "summary.md").read_text()
    assert f"{6 * 10} records" in text and "made from other records" not in text
    assert not (out / "analysis").exists()  # one image per class: no analysis, and none left from before
    assert json.loads((out / "evaluation" / "summary.json").read_text())["images"] == 10


# ------------------------------------------------------------ 7, 8: edited records and run.json
def _edit_first(run, **changes):
    lines = run.records_file.read_text().splitlines(keepends=True)
    record = json.loads(lines[0])
    for key, value in changes.items():
        if key == "neuron":
            record["path"][2][0] = value
        else:
            record[key] = value
    run.records_file.write_text(json.dumps(record) + "\n" + "".join(lines[1:]))
    return record


@pytest.mark.parametrize("edit, message", [
    ({"neuron": 9999}, "holds unit 9999 in layer 2, which has 256"),
    ({"label": 999}, "labels image '0/"),
    ({"image_id": "../outside/secret.png"}, "which is not in the data folder"),
    ({"model_id": "timm:vit_tiny_patch16_224"}, "model 'timm:vit_tiny_patch16_224' (run.json: 'demo')"),
])
def test_edited_records_are_refused(evaluated, tmp_path, capsys, edit, message):
    run = _copy(evaluated, tmp_path / "run")
    _edit_first(run, **edit)
    for args in (["analyze", "--run", run.folder, "--no-pixels", "--permutations", "0"],
                 ["report", "--run", run.folder, "--heatmaps", "0"],
                 ["evaluate", "--run", run.folder, "--jas-modes", "gate", "--no-pruning"]):
        code, _, err = run_main(capsys, *args)
        assert code == 2 and one_line(err) and message in err, (args[0], err)


def test_a_label_of_another_class_does_not_make_a_class(evaluated, tmp_path, capsys):
    run = _copy(evaluated, tmp_path / "run")
    lines = run.records_file.read_text().splitlines(keepends=True)
    index = next(i for i, line in enumerate(lines) if json.loads(line)["image_id"].startswith("3/"))
    record = json.loads(lines[index])
    record["label"] = 4
    lines[index] = json.dumps(record) + "\n"
    run.records_file.write_text("".join(lines))
    code, _, err = run_main(capsys, "report", "--run", run.folder, "--heatmaps", "0")
    assert code == 2 and one_line(err) and "but its class folder has index 3" in err, err


def _edit_settings(run, **changes):
    settings = json.loads(run.run_file.read_text())
    settings.update(changes)
    run.run_file.write_text(json.dumps(settings))


def test_a_newer_or_edited_schema_is_refused_by_every_command(evaluated, data, tmp_path, capsys):
    run = _copy(evaluated, tmp_path / "run")
    for schema in (99, "3", 0):
        _edit_settings(run, schema=schema)
        before = _tree(run.folder)
        for args in (["analyze", "--run", run.folder, "--no-pixels"], ["report", "--run", run.folder],
                     ["evaluate", "--run", run.folder], ["merge", run.folder],
                     extract_args(data, run.folder, "--method", "random", "--n-steps", "2")):
            code, _, err = run_main(capsys, *args)
            assert code == 2 and one_line(err) and f"has schema {schema!r}" in err, (schema, args[0], err)
        assert _tree(run.folder) == before


def test_a_changed_model_in_run_json_is_refused(evaluated, tmp_path, capsys):
    run = _copy(evaluated, tmp_path / "run")
    _edit_settings(run, model="timm:vit_tiny_patch16_224")
    for args in (["analyze", "--run", run.folder, "--no-pixels"], ["report", "--run", run.folder],
                 ["evaluate", "--run", run.folder]):
        code, _, err = run_main(capsys, *args)
        assert code == 2 and one_line(err) and "model 'demo' (run.json: 'timm:vit_tiny_patch16_224')" in err, err
    # records of no model: the unseeded random network is refused where it would be loaded
    lines = [json.loads(line) for line in run.records_file.read_text().splitlines()]
    run.records_file.write_text("".join(json.dumps(dict(r, model_id=None)) + "\n" for r in lines))
    code, _, err = run_main(capsys, "evaluate", "--run", run.folder)
    assert code == 2 and one_line(err) and "a different random network on every load" in err, err


# --------------------------------------------------------------------- 9: foreign results
def test_merge_refuses_a_shard_of_another_model(evaluated, tmp_path, capsys):
    run = _copy(evaluated, tmp_path / "run")
    shard = [dict(r, model_id="timm:vit_tiny_patch16_224") for r in read_records(run.records_file)[:3]]
    (run.folder / "records.rank1.jsonl").write_text("".join(json.dumps(r) + "\n" for r in shard))
    before = _tree(run.folder)
    code, _, err = run_main(capsys, "merge", run.folder, "--quiet")
    assert code == 2 and one_line(err) and "records.rank1.jsonl of run" in err and "another run" in err, err
    assert _tree(run.folder) == before


def test_compare_refuses_other_pictures_under_the_same_ids(evaluated, data, tmp_path, capsys):
    swapped = shutil.copytree(data, tmp_path / "swapped")
    a, b = sorted((swapped / "0").iterdir())[:2]
    a_bytes, b_bytes = a.read_bytes(), b.read_bytes()
    a.write_bytes(b_bytes)
    b.write_bytes(a_bytes)
    other = Run(tmp_path / "other", device="cpu")
    other.extract("demo", swapped, methods=["random"], n_steps=2, progress=False, limit=4)
    code, out, err = run_main(capsys, "compare", "--run", evaluated.folder, "--against", other.folder)
    assert code == 2 and one_line(err) and "are other pictures" in err, err

    same = Run(tmp_path / "same", device="cpu")
    same.extract("demo", shutil.copytree(data, tmp_path / "copy"), methods=["random"], n_steps=2, progress=False,
                 limit=4)
    code, out, err = run_main(capsys, "compare", "--run", evaluated.folder, "--against", same.folder)
    assert code == 0 and "A: " in out, err
