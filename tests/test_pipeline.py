"""The run pipeline: one Run loads the model and images once, settings are checked before
anything is written, old run folders still load, and the package imports only downward."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import pandas as pd
import pytest

import captum_paths
from captum_paths.cli import main
from captum_paths.demo import save_demo_image_folder
from captum_paths.pipeline import Run, RunMismatchError
from captum_paths.records import read_records


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return save_demo_image_folder(tmp_path_factory.mktemp("pipeline") / "data", limit_per_class=2)


def _count_loads(monkeypatch):
    import captum_paths.model.data as data_module
    import captum_paths.model.loading as models

    calls = {"model": 0, "folder": 0}
    load_model, folder = models.load_model, data_module.ImageFolderDataset

    def counting_load(*args, **kwargs):
        calls["model"] += 1
        return load_model(*args, **kwargs)

    class CountingFolder(folder):
        def __init__(self, *args, **kwargs):
            calls["folder"] += 1
            super().__init__(*args, **kwargs)

    monkeypatch.setattr(models, "load_model", counting_load)
    monkeypatch.setattr(data_module, "ImageFolderDataset", CountingFolder)
    return calls


def test_one_run_loads_model_and_images_once_for_every_stage(data, tmp_path, monkeypatch):
    calls = _count_loads(monkeypatch)
    run = Run(tmp_path / "run", device="cpu")
    summary = run.extract("demo", data, methods=["neuron-path", "random"], n_steps=2, progress=False)
    assert summary["records"] == 40 and summary["new_records"] == 40
    run.evaluate(jas_modes=("gate",), n_steps=2, pruning_ks=(1,), pruning_ps=(1.0,))
    run.analyze(permutations=5)
    html, markdown = run.report()
    assert calls == {"model": 1, "folder": 1}
    assert (run.analysis_dir / "neuron_pixels.png").exists()  # the pixel figure used the loaded model
    assert html == run.report_file and markdown == run.summary_file
    assert json.loads((run.evaluation_dir / "summary.json").read_text())["images"] == 20
    # a new Run on the same folder reads the settings back and loads again, once
    again = Run(run.folder, device="cpu")
    assert again.settings["n_steps"] == 2 and again.settings["methods"] == ["neuron-path", "random"]
    images, labels = again.images([r["image_id"] for r in read_records(run.records_file)[:3]])
    assert images.shape == (3, 1, 8, 8) and labels.tolist() == [r["label"] for r in read_records(run.records_file)[:3]]
    assert calls == {"model": 2, "folder": 2}


def test_evaluate_draws_max_images_evenly_over_the_classes_and_names_them(data, tmp_path, capsys):
    from captum_paths.explorer import explorer_payload

    run = Run(tmp_path / "run", device="cpu")
    run.extract("demo", data, methods=["neuron-path", "random"], n_steps=2, progress=False)
    records = run.records()
    label = {r["image_id"]: r["label"] for r in records}
    assert main(["evaluate", "--run", str(run.folder), "--max-images", "10", "--jas-modes", "gate",
                 "--n-steps", "2", "--no-pruning", "--faithfulness-classes", "0", "--quiet"]) == 0
    summary = json.loads((run.evaluation_dir / "summary.json").read_text())
    assert summary["images"] == 10 and summary["images_recorded"] == 20 and summary["max_images"] == 10
    deviation = pd.read_csv(run.evaluation_dir / "deviation.csv", dtype={"image_id": str})
    chosen = sorted(set(deviation["image_id"]))
    assert len(chosen) == 10 and sorted(label[i] for i in chosen) == list(range(10))  # one image per class
    for row in deviation.itertuples():
        assert label[row.image_id] == row.label
    jas = pd.read_csv(run.evaluation_dir / "jas.csv", dtype={"image_id": str})
    assert sorted(set(jas["image_id"])) == chosen
    # the same draw again (seeded), and the explorer shows the effects of exactly these images
    assert main(["evaluate", "--run", str(run.folder), "--max-images", "10", "--jas-modes", "gate",
                 "--n-steps", "2", "--no-pruning", "--faithfulness-classes", "0", "--quiet"]) == 0
    again = pd.read_csv(run.evaluation_dir / "deviation.csv", dtype={"image_id": str})
    assert sorted(set(again["image_id"])) == chosen
    payload = explorer_payload(records, evaluation_dir=run.evaluation_dir)
    assert "used 10 of the 20 images" in " ".join(payload["meta"]["notes"])
    removed = deviation[(deviation["operation"] == "remove") & (deviation["method"] == "random")]
    expected = dict(zip(removed["image_id"], removed["prob_deviation"]))
    for image_id, value in zip(payload["images"]["ids"], payload["images"]["remove"]["random"]):
        assert (value is None) == (image_id not in expected)
        if value is not None:
            assert value == pytest.approx(expected[image_id], rel=1e-3, abs=1e-9)
    run.report(heatmaps=False)
    assert ("Evaluated on 10 of the 20 images with a record of every method (an even draw over the classes, seed 0)"
            in run.summary_file.read_text())
    assert main(["evaluate", "--run", str(run.folder), "--max-images", "-1", "--quiet"]) == 2
    assert "--max-images must be 0 (every image) or a positive number; got -1" in capsys.readouterr().err


def test_compare_pairs_two_runs_by_method_and_image(data, tmp_path, capsys):
    base = ["extract", "--model", "demo", "--data", str(data), "--method", "neuron-path", "random", "--n-steps",
            "2", "--limit", "6", "--quiet"]
    assert main(base + ["--out", str(tmp_path / "a")]) == 0
    assert main(base + ["--out", str(tmp_path / "b"), "--dtype", "bf16"]) == 0
    capsys.readouterr()
    assert main(["compare", "--run", str(tmp_path / "a"), "--against", str(tmp_path / "b"),
                 "--out", str(tmp_path / "agreement")]) == 0
    printed = capsys.readouterr().out
    assert "same_units" in printed and "Per layer" in printed
    summary = pd.read_csv(tmp_path / "agreement.csv").set_index("method")
    assert summary.loc["random", "same_paths"] == 1.0 and summary.loc["random", "images"] == 6  # seeded by the image
    a = {r["image_id"]: r for r in read_records(tmp_path / "a" / "records.jsonl") if r["method"] == "neuron-path"}
    b = {r["image_id"]: r for r in read_records(tmp_path / "b" / "records.jsonl") if r["method"] == "neuron-path"}
    assert summary.loc["neuron-path", "same_paths"] == pytest.approx(
        sum(a[i]["path"] == b[i]["path"] for i in a) / len(a))
    assert summary.loc["neuron-path", "jas_difference"] == pytest.approx(
        sum(a[i]["jas"] - b[i]["jas"] for i in a) / len(a))
    layers = pd.read_csv(tmp_path / "agreement_layers.csv")
    assert len(layers) == 2 * len(next(iter(a.values()))["path"])
    assert main(["extract", "--model", "demo", "--data", str(data), "--method", "random", "--k", "2", "--limit",
                 "2", "--quiet", "--out", str(tmp_path / "k2")]) == 0
    assert main(["compare", "--run", str(tmp_path / "a"), "--against", str(tmp_path / "k2"), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "different models or k" in err and len(err.strip().splitlines()) == 1


def test_settings_are_checked_before_anything_is_written(data, tmp_path, capsys):
    out = tmp_path / "run"
    for bad, word in ((["--n-steps", "1"], "n_steps"), (["--approximation", "simpson"], "method must be one of"),
                      (["--k", "300"], "k must be at most the FFN width 256"), (["--refine", "-1"], "--refine"),
                      (["--mode", "paper", "--approximation", "gausslegendre"], "riemann_left"),
                      (["--method", "neuron-path", "random", "--beam", "0"], "--beam")):
        code = main(["extract", "--model", "demo", "--data", str(data), "--out", str(out), "--quiet", *bad])
        err = capsys.readouterr().err
        assert code == 2 and word in err and len(err.strip().splitlines()) == 1, (bad, err)
        assert not (out / "run.json").exists() and not list(out.glob("records*")), bad
    # the corrected command is a new run, not "another run"
    assert main(["extract", "--model", "demo", "--data", str(data), "--out", str(out), "--quiet",
                 "--method", "random", "--limit", "2"]) == 0
    assert len(read_records(out / "records.jsonl")) == 2


def test_a_schema_2_run_folder_with_steps_resumes_and_reports(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["extract", "--model", "demo", "--data", str(data), "--out", str(out), "--quiet",
                 "--method", "random", "--limit", "2", "--n-steps", "3"]) == 0
    settings = json.loads((out / "run.json").read_text())
    settings["steps"] = settings.pop("n_steps")
    settings["schema"] = 2
    (out / "run.json").write_text(json.dumps(settings))
    assert Run(out).settings["n_steps"] == 3
    # the same command resumes the old folder (same settings), the --steps spelling still works
    assert main(["extract", "--model", "demo", "--data", str(data), "--out", str(out), "--quiet",
                 "--method", "random", "--limit", "3", "--steps", "3"]) == 0
    assert "1 new" in capsys.readouterr().out
    assert json.loads((out / "run.json").read_text())["n_steps"] == 3
    with pytest.raises(RunMismatchError, match="n_steps: 3 there, 4 here"):
        Run(out, device="cpu").extract("demo", data, methods=["random"], n_steps=4, progress=False)


def test_run_without_a_folder_names_the_command(tmp_path):
    with pytest.raises(FileNotFoundError, match="captum-paths extract"):
        Run(tmp_path / "nope").records()
    with pytest.raises(TypeError, match="folder must be a path"):
        Run(3)


def test_relative_label_map_is_stored_absolute(data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("map.json").write_text(json.dumps({str(c): c for c in range(10)}))
    run = Run("run", device="cpu")
    run.extract("demo", data, methods=["random"], label_map="map.json", limit=1, progress=False)
    stored = json.loads((tmp_path / "run" / "run.json").read_text())["label_map"]
    assert stored == str(tmp_path / "map.json")


PACKAGE = Path(captum_paths.__file__).parent
#: The package's floors, lowest first: a module imports only from its own room and lower floors.
FLOORS = [
    {"_version", "_moved", "records", "statistics", "demo"},
    {"model"},
    {"attribution"},
    {"search"},
    {"analysis"},
    {"evaluation"},
    {"plots"},
    {"explorer"},
    {"pipeline"},
    {"cli"},
    {"__main__"},
]


def _imports(file: Path):
    tree = ast.parse(file.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("captum_paths."):
            yield node.module.split(".")[1]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("captum_paths."):
                    yield alias.name.split(".")[1]


def test_every_room_is_on_a_floor():
    rooms = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()
             if (p.suffix == ".py" or (p.is_dir() and (p / "__init__.py").exists())) and p.name != "__init__.py"}
    assert rooms == set().union(*FLOORS)


@pytest.mark.parametrize("floor", range(len(FLOORS)))
def test_no_module_imports_upward(floor):
    below = set().union(*FLOORS[:floor])
    for room in sorted(FLOORS[floor]):
        files = [PACKAGE / f"{room}.py"] if (PACKAGE / f"{room}.py").exists() else sorted((PACKAGE / room).rglob("*.py"))
        for file in files:
            bad = set(_imports(file)) - below - {room}
            assert not bad, f"{file.relative_to(PACKAGE)} imports {sorted(bad)}, which are not below it"
