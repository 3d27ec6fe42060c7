"""``captum-paths demo`` end to end, and evaluate / analyze / report on its run folder."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from captum_paths.cli import main
from captum_paths.explorer import read_payload
from captum_paths.records import read_records
from captum_paths.search.registry import PATH_METHODS


def test_demo_end_to_end_writes_a_report_that_parses(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), "--per-class", "2", "--n-steps", "8", "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert f"report: {out / 'summary.md'}" in printed and f"html report: {out / 'report.html'}" in printed
    records = read_records(out / "records.jsonl")
    assert len(records) == 20 * len(PATH_METHODS)
    assert {r["method"] for r in records} == set(PATH_METHODS)
    methods = pd.read_csv(out / "evaluation" / "methods_summary.csv")
    assert set(methods["method"]) == set(PATH_METHODS)
    assert {"mean_prob_deviation_remove", "mean_prob_deviation_enhance", "mean_jas_gate"} <= set(methods.columns)
    assert len(pd.read_csv(out / "evaluation" / "pruning_grid.csv")) > 0
    # uncertainty: every other method against the searched paths, image by image
    deviation = pd.read_csv(out / "evaluation" / "deviation.csv")
    removed = deviation[deviation["operation"] == "remove"].pivot(index="image", columns="method",
                                                                  values="prob_deviation")
    comparisons = pd.read_csv(out / "evaluation" / "comparisons.csv").set_index(["method", "quantity"])
    assert len(comparisons) == (len(PATH_METHODS) - 1) * 3  # the demo's JAS (gate), removal, enhancement
    for method in set(PATH_METHODS) - {"neuron-path"}:
        row = comparisons.loc[(method, "prob_deviation_remove")]
        assert row["mean_difference"] == pytest.approx((removed["neuron-path"] - removed[method]).mean())
        assert row["n"] == 20 and 0 <= row["holm_p"] <= 1
    intervals = pd.read_csv(out / "evaluation" / "intervals.csv").set_index(["method", "quantity"])
    assert intervals.loc[("random", "prob_deviation_remove"), "mean"] == pytest.approx(removed["random"].mean())
    assert ((intervals["ci_low"] <= intervals["mean"]) & (intervals["mean"] <= intervals["ci_high"])).all()
    for stem in ("deviation", "jas", "pruning"):
        assert (out / "evaluation" / f"{stem}.png").stat().st_size > 0
        assert (out / "evaluation" / f"{stem}.svg").read_text().lstrip().startswith("<?xml")
    sharing = pd.read_csv(out / "analysis" / "path_sharing.csv")
    assert 0 <= sharing["within"].iloc[0] <= 1
    assert json.loads((out / "analysis" / "consensus_paths.json").read_text())
    assert (out / "analysis" / "path_graph.graphml").read_text().startswith("<?xml")
    layers = pd.read_csv(out / "analysis" / "layer_summary.csv")
    searched = [r for r in records if r["method"] == "neuron-path"]
    assert layers["layer"].tolist() == list(range(len(searched[0]["path"])))
    assert layers["top_share"].iloc[-1] == max(
        sum(r["path"][-1][0] == n for r in searched) for n in {r["path"][-1][0] for r in searched}) / len(searched)
    page = (out / "report.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and page.count("data:image/png;base64,") >= 5
    assert "neuron-path" in page and "Path sharing" in page and "Paths per layer" in page
    summary = (out / "summary.md").read_text()
    assert "Evaluation per method" in summary and "Path sharing" in summary
    assert "## Confidence intervals" in summary and "## Compared with neuron-path" in summary
    assert json.loads((out / "run.json").read_text())["n_steps"] == 8
    timings = json.loads((out / "settings.json").read_text())["timings"]
    assert timings["total_s"] > 0

    # the steps on their own, on the same run folder
    assert main(["analyze", "--run", str(out), "--method", "activation", "--permutations", "10", "--quiet"]) == 0
    assert json.loads((out / "analysis" / "summary.json").read_text())["method"] == "activation"
    assert (out / "analysis" / "neuron_pixels.png").stat().st_size > 0
    assert len(list((out / "analysis").glob("path_graph_class_*.png"))) == 1  # no figure of the earlier analysis
    # without the images the pixel figure is skipped, the rest is written
    (out / "data").rename(out / "moved")
    assert main(["analyze", "--run", str(out), "--permutations", "10", "--quiet"]) == 0
    assert not (out / "analysis" / "neuron_pixels.png").exists()
    assert (out / "analysis" / "neuron_frequency_heatmap.png").exists()
    (out / "moved").rename(out / "data")
    assert json.loads((out / "evaluation" / "summary.json").read_text())["images"] == 20
    assert main(["report", "--run", str(out), "--quiet"]) == 0
    assert main(["report", "--run", str(out), "--graph-nodes", "0", "--heatmaps", "0", "--quiet"]) == 0
    page = (out / "report.html").read_text()
    embedded = read_payload(page)
    assert list(embedded["graphs"]) == ["neuron-path"] and embedded["heat"] == {}
    assert "activation, knowledge-neurons" in " ".join(embedded["meta"]["notes"])
    assert main(["analyze", "--run", str(out), "--method", "nope", "--quiet"]) == 2
    assert "no records of method 'nope'" in capsys.readouterr().err
