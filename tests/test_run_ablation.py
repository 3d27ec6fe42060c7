"""``--ablation mean`` in a run: seeded reference images of the run's data, records scored
against their means (checked with literal hooks), part of the run's identity."""
from __future__ import annotations

import json

import pytest
import torch

from _cli import extract_args, run_main
from _literal import module_outputs
from captum_paths.demo import load_demo_model, save_demo_image_folder
from captum_paths.model.sites import NeuronSites
from captum_paths.pipeline import Run
from captum_paths.pipeline.settings import RunSettings
from captum_paths.records import read_records


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return save_demo_image_folder(tmp_path_factory.mktemp("ablation") / "data", limit_per_class=2)


@pytest.fixture(scope="module")
def mean_run(data, tmp_path_factory):
    out = tmp_path_factory.mktemp("ablation_run") / "run"
    from captum_paths.cli import main
    code = main([str(a) for a in extract_args(data, out, "--method", "neuron-path", "activation", "--n-steps", "4",
                                              "--limit", "4", "--ablation", "mean", "--ablation-images", "6",
                                              "--ablation-seed", "3")])
    assert code == 0
    return out


def _literal_means(model, sites, images):
    seen = module_outputs(model, sites.modules, images)
    index = sites.tokens.index(seen[0].shape[1])
    return {l: v[:, index].double().mean(0).float() for l, v in seen.items()}


def test_records_are_scored_against_the_mean_of_seeded_reference_images(mean_run, data):
    settings = json.loads((mean_run / "run.json").read_text())
    assert (settings["ablation"], settings["ablation_images"], settings["ablation_seed"]) == ("mean", 6, 3)
    run = Run(mean_run, device="cpu")
    baseline = run.layer_baselines()
    # the reference: a permutation of the sorted image ids seeded with 3, its first 6 images
    ids = sorted(p.relative_to(data).as_posix() for p in data.glob("*/*.png"))
    drawn = torch.randperm(len(ids), generator=torch.Generator().manual_seed(3))[:6]
    assert baseline.image_ids == [ids[i] for i in drawn.tolist()]
    model = load_demo_model()
    sites = NeuronSites.from_model(model)
    reference, _ = run.images(baseline.image_ids)
    means = _literal_means(model, sites, reference)
    records = read_records(mean_run / "records.jsonl")
    assert len(records) == 8 and {r["settings"]["ablation"] for r in records} == {"mean"}
    x, y = run.images([r["image_id"] for r in records])
    paths = torch.tensor([r["path"] for r in records])  # (n, L, k)

    def patch(layer):
        def fn(act):
            out = act.clone()
            for i in range(len(paths)):
                for u in paths[i, layer]:
                    out[i, :, u] = means[layer][:, u]
            return out
        return fn

    with torch.no_grad():
        p = model(x).softmax(-1).gather(1, y[:, None])[:, 0]
        with sites.edit({l: patch(l) for l in range(sites.num_layers)}):
            removed = model(x).softmax(-1).gather(1, y[:, None])[:, 0]
    jas = torch.tensor([r["jas"] for r in records])
    torch.testing.assert_close(jas, (p - removed).float(), rtol=0, atol=2e-6)


def test_another_ablation_is_another_run(mean_run, data, capsys, tmp_path):
    code, _, err = run_main(capsys, *extract_args(data, mean_run, "--method", "neuron-path", "--n-steps", "4",
                                                  "--limit", "4"))
    assert code == 2 and "ablation: 'mean' there, 'zero' here" in err
    code, _, err = run_main(capsys, *extract_args(data, mean_run, "--method", "neuron-path", "activation",
                                                  "--n-steps", "4", "--limit", "4", "--ablation", "mean",
                                                  "--ablation-images", "6", "--ablation-seed", "4"))
    assert code == 2 and "ablation_seed: 3 there, 4 here" in err


@pytest.mark.parametrize("extra, message", [
    (["--ablation-images", "8"], "--ablation-images apply to --ablation mean"),
    (["--ablation", "mean", "--ablation-images", "0"], "--ablation-images must be a positive number"),
    (["--ablation", "mean", "--ablation-seed", "-1"], "--ablation-seed must be a non-negative seed"),
    (["--ablation", "mean", "--mode", "paper"], "--ablation mean needs --mode gate"),
    (["--ablation", "median"], "invalid choice: 'median'"),
])
def test_bad_ablation_flags_are_one_line_errors(data, tmp_path, capsys, extra, message):
    try:
        code, _, err = run_main(capsys, *extract_args(data, tmp_path / "run", *extra))
    except SystemExit as exit_:  # argparse refuses a choice itself
        code, err = exit_.code, capsys.readouterr().err
    assert code == 2 and message in err.strip().splitlines()[-1]
    assert not (tmp_path / "run" / "run.json").exists()


def test_runs_from_before_baselines_read_as_zero_ablation():
    old = {"schema": 3, "model": "demo", "k": 1, "mode": "gate", "methods": ["neuron-path"], "units": "neurons"}
    settings = RunSettings.from_json(old)
    assert (settings.ablation, settings.ablation_images, settings.ablation_seed) == ("zero", None, None)
    new = RunSettings.create(model="demo", data=None, k=1)
    assert "ablation" not in " ".join(settings.differences(new))
    with pytest.raises(ValueError, match="'ablation' must be one of"):
        RunSettings.from_json({**old, "ablation": "median"})
    with pytest.raises(ValueError, match="ablation_images and ablation_seed apply to ablation='mean'"):
        RunSettings.create(model="demo", data=None, ablation_images=3, ablation_seed=1)
    mean = RunSettings.create(model="demo", data=None, ablation="mean")
    assert (mean.ablation_images, mean.ablation_seed) == (64, 0)


def test_evaluate_removes_units_the_way_the_run_scored_them(mean_run):
    import pandas as pd

    out = Run(mean_run, device="cpu").evaluate(pruning=False, faithfulness=False, batch_size=3)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ablation"] == "mean" and summary["jas_modes"] == ["gate"]
    deviation = pd.read_csv(out / "deviation.csv")
    assert set(deviation["ablation"]) == {"mean"}
    remove = deviation[deviation["operation"] == "remove"]
    records = {(r["method"], r["image_id"]): r["jas"] for r in read_records(mean_run / "records.jsonl")}
    effect = remove["p_before"] - remove["p_after"]
    expected = [records[(m, i)] for m, i in zip(remove["method"], remove["image_id"])]
    assert effect.to_numpy() == pytest.approx(expected, abs=2e-6)
    jas = pd.read_csv(out / "jas.csv")
    assert set(jas["mode"]) == {"gate"}


def test_analyze_takes_the_number_of_causal_images(mean_run, capsys):
    code, _, err = run_main(capsys, "analyze", "--run", mean_run, "--causal-images", "1", "--quiet")
    assert code == 2 and "--causal-images must be 0 (none) or at least 2" in err
    code, _, err = run_main(capsys, "analyze", "--run", mean_run, "--causal-images", "0", "--no-pixels", "--quiet")
    assert code == 0, err
    summary = json.loads((mean_run / "analysis" / "summary.json").read_text())
    assert "causal_edges" in summary and not (mean_run / "analysis" / "causal_edges.csv").exists()


def test_the_report_states_the_ablation(mean_run, capsys):
    code, _, err = run_main(capsys, "report", "--run", mean_run, "--heatmaps", "0", "--quiet")
    assert code == 0, err
    text = (mean_run / "summary.md").read_text()
    assert "ablation = mean, ablation_images = 6, ablation_seed = 3" in text
