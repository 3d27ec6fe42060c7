"""A method's options travel as one mapping, checked by the method's class: a new method's
option needs only the method's own file (tests/_toy_method.py); ``--refine`` and ``--beam``
are aliases of neuron-path's; a run's settings are one object, written to ``run.json``, and
run folders of the earlier layout (neuron-path's options at the top level) resume."""
import dataclasses
import json

import pytest

from _cli import extract_args, run_main
from captum_paths.demo import save_demo_image_folder
from captum_paths.model.data import ImageFolderDataset
from captum_paths.pipeline import Run, RunMismatchError, RunSettings
from captum_paths.records import read_records
from captum_paths.search import PATH_METHODS, register_path_method


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return save_demo_image_folder(tmp_path_factory.mktemp("options") / "data", limit_per_class=1)


@pytest.fixture
def toy():
    """The toy method registered for one test (importing its file registers it)."""
    saved = dict(PATH_METHODS)
    import _toy_method

    register_path_method(_toy_method.ToyPath, overwrite=True)  # again after an earlier test's clean-up
    yield _toy_method.ToyPath
    PATH_METHODS.clear()
    PATH_METHODS.update(saved)


def one_line(err):
    return len(err.strip().splitlines()) == 1


# ------------------------------------------------------------ a new method's option
def test_a_new_methods_option_runs_through_the_command_line(toy, data, tmp_path, capsys):
    out = tmp_path / "run"
    code, stdout, err = run_main(capsys, *extract_args(data, out, "--method", "toy", "--method-option", "toy.scale=3",
                                                       "--limit", "2", "--n-steps", "2"))
    assert code == 0 and "2 records" in stdout, err
    settings = json.loads((out / "run.json").read_text())
    assert settings["method_options"] == {"toy": {"scale": 3}} and settings["methods"] == ["toy"]
    records = read_records(out / "records.jsonl")
    assert len(records) == 2 and all(r["settings"]["scale"] == 3 for r in records)
    assert all(units == [3] for r in records for units in r["path"])  # the search ran with it
    # not given: the method's default, in the records; run.json holds what was asked (nothing)
    code, _, err = run_main(capsys, *extract_args(data, tmp_path / "plain", "--method", "toy", "--limit", "1",
                                                  "--n-steps", "2"))
    assert code == 0, err
    assert json.loads((tmp_path / "plain" / "run.json").read_text())["method_options"] == {}
    assert read_records(tmp_path / "plain" / "records.jsonl")[0]["settings"]["scale"] == 1
    # another value of the option is another run
    code, _, err = run_main(capsys, *extract_args(data, out, "--method", "toy", "--method-option", "toy.scale=4",
                                                  "--limit", "2", "--n-steps", "2"))
    assert code == 2 and one_line(err) and "toy.scale: 3 there, 4 here" in err, err


@pytest.mark.parametrize("option, words", [
    ("toy.scale=0", ["--method-option toy.scale=0", "toy option scale must be a positive int; got 0"]),
    ("toy.scale=x", ["toy option scale", "a positive int", "got 'x'"]),
    ("toy.scale=2.5", ["toy option scale", "a positive int", "got 2.5"]),
    ("toy.size=3", ["'toy' has no option 'size'", "scale (a positive int)"]),
    ("random.scale=3", ["'random' has no option 'scale'", "takes no options"]),
    ("nope.scale=3", ["--method-option nope.scale=3", "unknown path method 'nope'"]),
    ("toy=3", ["METHOD.OPTION=VALUE"]),
])
def test_a_bad_or_unknown_option_is_one_line_before_anything_is_written(toy, data, tmp_path, capsys, option, words):
    out = tmp_path / "run"
    code, _, err = run_main(capsys, *extract_args(data, out, "--method", "toy", "random", "--method-option", option))
    assert code == 2 and one_line(err), err
    for word in words:
        assert word in err, (word, err)
    assert not out.exists()


def test_the_api_checks_options_with_the_method_class(toy, data, tmp_path):
    run = Run(tmp_path / "run", device="cpu")
    with pytest.raises(ValueError, match="toy option scale must be a positive int; got -1"):
        run.extract("demo", data, methods=["toy"], method_options={"toy": {"scale": -1}})
    with pytest.raises(TypeError, match="'toy' has no option 'size'"):
        run.extract("demo", data, methods=["toy"], method_options={"toy": {"size": 2}})
    with pytest.raises(ValueError, match="refine is given twice"):
        run.extract("demo", data, method_options={"neuron-path": {"refine": 6}}, refine=8)
    assert not run.folder.exists()
    summary = run.extract("demo", data, methods=["toy"], method_options={"toy": {"scale": 2}}, limit=1, n_steps=2,
                          progress=False)
    assert summary["new_records"] == 1 and run.run_settings.method_options == {"toy": {"scale": 2}}


def test_extract_takes_settings_built_once(data, tmp_path):
    settings = RunSettings.create(model="demo", data=data, methods=["random"], n_steps=2)
    run = Run(tmp_path / "run", device="cpu")
    with pytest.raises(TypeError, match="not both"):
        run.extract("demo", settings=settings)
    with pytest.raises(TypeError, match="model spec and the data folder"):
        run.extract()
    assert run.extract(settings=settings, limit=1, progress=False)["new_records"] == 1
    written = run.run_settings
    assert written.data_fingerprint == ImageFolderDataset(data).fingerprint()  # added by extract
    assert dataclasses.replace(written, data_fingerprint=None) == settings


# ------------------------------------------------------ --refine is neuron-path's option
def test_the_refine_alias_and_the_method_option_are_one_run(data, tmp_path, capsys):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ("--k", "7", "--limit", "2", "--n-steps", "2")
    assert run_main(capsys, *extract_args(data, a, "--refine", "8", *common))[0] == 0
    assert run_main(capsys, *extract_args(data, b, "--method-option", "neuron-path.refine=8", *common))[0] == 0
    settings_a = json.loads((a / "run.json").read_text())
    assert settings_a == json.loads((b / "run.json").read_text())
    assert settings_a["refine"] == 8 and settings_a["method_options"] == {"neuron-path": {"refine": 8}}
    assert read_records(a / "records.jsonl") == read_records(b / "records.jsonl")
    assert all(r["settings"]["refine"] == 8 for r in read_records(a / "records.jsonl"))
    # either spelling resumes the other's folder
    code, stdout, err = run_main(capsys, *extract_args(data, a, "--method-option", "neuron-path.refine=8", *common))
    assert code == 0 and "0 new" in stdout, err
    # and the API's refine= with them
    again = Run(b, device="cpu").extract("demo", data, refine=8, k=7, limit=2, n_steps=2, progress=False)
    assert again["new_records"] == 0
    # both at once is one line
    code, _, err = run_main(capsys, *extract_args(data, tmp_path / "c", "--refine", "8", "--method-option",
                                                  "neuron-path.refine=8"))
    assert code == 2 and one_line(err) and "--refine 8 and --method-option neuron-path.refine=8" in err, err


# ---------------------------------------------------------- the earlier run.json layout
def _old_layout(data, methods, refine=None, beam=None, n_steps=2):
    """run.json as the version before method_options wrote it (its run_settings() and
    extract's fingerprints): neuron-path's refine and beam at the top level."""
    return {
        "schema": 3, "model": "demo", "checkpoint": None, "pretrained": False, "num_classes": None, "mode": "gate",
        "n_steps": n_steps, "approximation": None, "k": 1, "target": "label", "methods": methods,
        "data": str(data.resolve()), "label_map": None, "refine": refine, "beam": beam, "random_weights": None,
        "model_args": {}, "dtype": "fp32", "units": "neurons",
        "data_fingerprint": ImageFolderDataset(data).fingerprint(), "label_map_sha256": None,
        "checkpoint_sha256": None, "weights_sha256": None,
    }


def test_a_run_folder_of_the_earlier_layout_resumes(data, tmp_path, capsys):
    out = tmp_path / "run"
    args = ("--method", "neuron-path", "random", "--refine", "2", "--beam", "2", "--n-steps", "2")
    assert run_main(capsys, *extract_args(data, out, *args, "--limit", "2"))[0] == 0
    (out / "run.json").write_text(json.dumps(_old_layout(data, ["neuron-path", "random"], refine=2, beam=2)))
    old = Run(out).run_settings
    assert old.method_options == {"neuron-path": {"refine": 2, "beam": 2}}
    # the same command resumes it: one new image, a record of each method
    code, stdout, err = run_main(capsys, *extract_args(data, out, *args, "--limit", "3"))
    assert code == 0 and "2 new" in stdout, err
    settings = json.loads((out / "run.json").read_text())
    assert settings["method_options"] == {"neuron-path": {"refine": 2, "beam": 2}}
    assert settings["refine"] == 2 and settings["beam"] == 2  # older versions read these
    # another refine is another run, named as the option
    (out / "run.json").write_text(json.dumps(_old_layout(data, ["neuron-path", "random"], refine=2, beam=2)))
    code, _, err = run_main(capsys, *extract_args(data, out, "--method", "random", "--refine", "3", "--beam", "2",
                                                  "--n-steps", "2", "--limit", "3"))
    assert code == 2 and one_line(err) and "neuron-path.refine: 2 there, 3 here" in err, err


def test_an_earlier_layout_without_options_resumes_and_keeps_its_keys(data, tmp_path, capsys):
    out = tmp_path / "run"
    assert run_main(capsys, *extract_args(data, out, "--method", "random", "--limit", "1", "--n-steps", "2"))[0] == 0
    old = _old_layout(data, ["random"])
    old["schema"], old["steps"] = 2, old.pop("n_steps")  # schema 2 also named n_steps "steps"
    for key in ("units", "dtype", "model_args"):  # and lacked these
        del old[key]
    (out / "run.json").write_text(json.dumps(old))
    code, stdout, err = run_main(capsys, *extract_args(data, out, "--method", "random", "--limit", "2",
                                                       "--n-steps", "2"))
    assert code == 0 and "1 new" in stdout, err


# ------------------------------------------------------------------ RunSettings
def test_run_settings_are_one_frozen_object_that_round_trips(data):
    settings = RunSettings.create(model="demo", data=data, methods=["neuron-path", "random", "neuron-path"], k=2,
                                  method_options={"neuron-path": {"refine": "all", "beam": None}},
                                  model_args={"size": (1, 2)})
    assert settings.methods == ("neuron-path", "random") and settings.data == str(data.resolve())
    assert settings.method_options == {"neuron-path": {"refine": "all"}}
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.k = 3
    with pytest.raises(TypeError):
        settings.method_options["neuron-path"]["refine"] = 4
    back = RunSettings.from_json(json.loads(json.dumps(settings.to_json())))
    assert back == settings and back.to_json() == settings.to_json()
    assert back.differences(settings) == []
    other = dataclasses.replace(settings, k=3, method_options={})
    assert back.differences(other) == ["k: 2 there, 3 here", "neuron-path.refine: 'all' there, None here"]


def test_settings_checks_name_what_is_wrong(data):
    for kwargs, match in ((dict(methods=[]), "at least one path method"), (dict(target="x"), "target"),
                          (dict(dtype="fp8"), "dtype"), (dict(units="blocks"), "units must be one of"),
                          (dict(k=0), "k must be a positive int"), (dict(model_args={"device": "cpu"}), "--device"),
                          (dict(method_options={"neuron-path": 3}), "must be a dict")):
        with pytest.raises((TypeError, ValueError), match=match):
            RunSettings.create(**{"model": "demo", "data": data, **kwargs})


def test_sites_for_units_are_chosen_in_the_sites_code():
    from captum_paths.demo import load_demo_model
    from captum_paths.model.sites import UNITS, NeuronSites

    model = load_demo_model()
    kinds = {units: set(NeuronSites.for_units(model, units).kinds) for units in UNITS}
    assert kinds == {"neurons": {"neuron"}, "heads": {"head"}, "mixed": {"head", "neuron"}}
    with pytest.raises(ValueError, match="units must be one of"):
        NeuronSites.for_units(model, "blocks")


def test_an_edited_run_json_with_options_of_the_wrong_type_is_refused(data, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "run.json").write_text(json.dumps({**_old_layout(data, ["random"]), "method_options": [1]}))
    with pytest.raises(RunMismatchError, match="method_options"):
        Run(out).settings
