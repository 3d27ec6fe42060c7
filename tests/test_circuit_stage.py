"""The circuits stage (``captum-paths circuits``): what it writes equals the library's circuit study on
the same images and split, its overlap and unit tables equal literal counts, its edges join the
strongest units of the circuit shown, the report and the explorer show it, and bad flags are one-line
errors."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from _cli import extract_args, run_main
from captum_paths.evaluation.circuits import LEARNED, LearnedCircuit, circuit_study
from captum_paths.pipeline import Run
from captum_paths.pipeline.circuits import chosen_circuit
from captum_paths.records import read_records
from captum_paths.search import PathResult

STRENGTHS = (0.5, 4.0)


@pytest.fixture(scope="module")
def run_folder(demo_images_2, tmp_path_factory, one_torch_thread):
    from captum_paths.cli import main

    out = tmp_path_factory.mktemp("circuit_stage") / "run"
    assert main([str(a) for a in extract_args(demo_images_2, out, "--method", "neuron-path", "activation",
                                              "--n-steps", "4")]) == 0
    assert main(["circuits", "--run", str(out), "--classes", "3", "--strengths", *map(str, STRENGTHS),
                 "--steps", "30", "--quiet"]) == 0
    return out


def _summary(out):
    return json.loads((out / "circuits" / "summary.json").read_text())


def _learned(out):
    data = json.loads((out / "circuits" / "circuits.json").read_text())
    return {int(k): ([LearnedCircuit.from_json(c) for c in v["circuits"]], v["shown"]) for k, v in data.items()}


def _paths(out, ids):
    by_method = {}
    for r in read_records(out / "records.jsonl"):
        by_method.setdefault(r["method"], {})[str(r["image_id"])] = r
    return {m: PathResult.from_records([rows[i] for i in ids]) for m, rows in by_method.items()}


def test_the_stage_writes_the_circuit_study_of_its_images_and_split(run_folder):
    summary = _summary(run_folder)
    assert summary["ablation"] == "mean" and summary["units"] == "mixed" and len(summary["classes"]) == 3
    run = Run(run_folder)
    images, labels = run.images(summary["image_ids"])
    assert sorted(set(labels.tolist())) == summary["classes"]
    split = {int(k): v for k, v in summary["split"].items()}
    table, circuits = circuit_study(run.model(), images, labels, _paths(run_folder, summary["image_ids"]),
                                    path_sites=run.sites(), classes=summary["classes"], strengths=STRENGTHS,
                                    steps=30, seed=0, split=split)
    written = pd.read_csv(run_folder / "circuits" / "circuit_study.csv")
    assert list(written.columns) == list(table.columns) and len(written) == len(table)
    pd.testing.assert_frame_equal(written, table.reset_index(drop=True), check_dtype=False, atol=1e-9, rtol=1e-9)
    learned = _learned(run_folder)
    for label, mine in circuits.items():
        back, shown = learned[label]
        assert [c.units() for c in back] == [c.units() for c in mine]
        assert shown == chosen_circuit(table, mine)
        assert back[0].names == list(summary["layer_names"]) and back[0].kinds == summary["kinds"]


def test_overlap_and_units_tables_are_literal_counts(run_folder):
    summary = _summary(run_folder)
    learned = _learned(run_folder)
    records = [r for r in read_records(run_folder / "records.jsonl") if str(r["image_id"]) in
               set(summary["image_ids"])]
    overlap = pd.read_csv(run_folder / "circuits" / "circuit_overlap.csv")
    assert len(overlap) == 3 * 2
    for row in overlap.itertuples(index=False):
        cs, shown = learned[row.label]
        keep = cs[shown].keep
        entries = [(layer, u) for r in records if r["method"] == row.method and int(r["label"]) == row.label
                   for layer, units in enumerate(r["path"]) for u in units]
        mapped = [(summary["path_layers"][layer], u) for layer, u in entries]
        distinct = set(mapped)
        assert row.path_units == len(distinct)
        assert row.inside == sum(bool(keep[l][u]) for l, u in distinct)
        assert row.occurrence_share == pytest.approx(np.mean([bool(keep[l][u]) for l, u in mapped]))
        ffn = sorted(set(summary["path_layers"]))
        assert row.chance == pytest.approx(sum(int(keep[l].sum()) for l in ffn) / sum(keep[l].numel() for l in ffn))
    units = pd.read_csv(run_folder / "circuits" / "circuit_units.csv", keep_default_na=False)
    for (label, strength), group in units.groupby(["label", "strength"]):
        cs, shown = learned[label]
        circuit = next(c for c in cs if c.strength == strength)
        assert group["units_kept"].tolist() == [int(k.sum()) for k in circuit.keep]
        assert [[int(u) for u in s.split()] for s in group["units"]] == [k.nonzero().flatten().tolist()
                                                                         for k in circuit.keep]
        assert group["shown"].all() == (cs[shown] is circuit) and group["shown"].nunique() == 1
    assert units.groupby("label")["shown"].sum().div(len(summary["layer_names"])).eq(1).all()


def test_edges_join_the_strongest_units_of_the_circuit_shown(run_folder):
    summary = _summary(run_folder)
    learned = _learned(run_folder)
    edges = pd.read_csv(run_folder / "circuits" / "circuit_edges.csv")
    assert len(edges)
    _, labels = Run(run_folder).images(summary["image_ids"])
    for label, group in edges.groupby("label"):
        cs, shown = learned[label]
        circuit = cs[shown]
        strongest = set()
        for layer, (keep, alpha) in enumerate(zip(circuit.keep, circuit.log_alpha)):
            kept = keep.nonzero().flatten().tolist()
            strongest |= {(layer, u) for u in sorted(kept, key=lambda u: (-float(alpha[u]), u))[:2]}
        for r in group.itertuples(index=False):
            assert (r.source_layer, r.source_unit) in strongest and (r.target_layer, r.target_unit) in strongest
            assert r.source_layer < r.target_layer
            assert r.count == int((labels == label).sum())


def test_the_figure_draws_every_ranking_and_each_learned_strength(run_folder):
    from captum_paths.evaluation.circuits import circuit_summary
    from captum_paths.plots import plot_circuits

    table = pd.read_csv(run_folder / "circuits" / "circuit_study.csv")
    fig = plot_circuits(table)
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    summary = circuit_summary(table)
    for method in ("attribution patching", "neuron-path", "activation", "random ranking", "learned circuit"):
        rows = summary[summary["method"] == method].sort_values("fraction_kept")
        np.testing.assert_allclose(lines[method].get_xdata(), rows["fraction_kept"])
        np.testing.assert_allclose(lines[method].get_ydata(), rows["fraction_of_full"])
    assert len(lines["learned circuit"].get_xdata()) == len(STRENGTHS)
    assert "every other unit set to its mean" in ax.get_title()

def test_the_circuit_shown_is_the_sparsest_that_keeps_80_percent():
    circuits = [LearnedCircuit(1, s, [torch.arange(10) < n], [torch.zeros(10)]) for s, n in
                ((0.5, 9), (2.0, 5), (8.0, 2))]

    def table(shares):
        return pd.DataFrame({"method": LEARNED, "label": 1, "strength": [0.5, 2.0, 8.0],
                             "mean_prob": shares, "mean_prob_full": 1.0})

    assert chosen_circuit(table([0.95, 0.85, 0.4]), circuits) == 1
    assert chosen_circuit(table([0.95, 0.85, 0.81]), circuits) == 2
    assert chosen_circuit(table([0.5, 0.7, 0.3]), circuits) == 1  # none reaches 80%: the most faithful


def test_the_report_and_the_explorer_show_the_circuits(run_folder, capsys):
    from captum_paths.explorer import read_payload

    code, _, _ = run_main(capsys, "report", "--run", run_folder, "--heatmaps", "0", "--quiet")
    assert code == 0
    summary_md = (run_folder / "summary.md").read_text()
    assert "## Class circuits: fewest units for 80% of the target probability" in summary_md
    assert "## Path units inside the class circuits" in summary_md and "circuits/circuits.png" in summary_md
    payload = read_payload((run_folder / "report.html").read_text())
    summary, learned = _summary(run_folder), _learned(run_folder)
    names = summary["class_names"]
    studied = 0
    for c, page_class in enumerate(payload["classes"]["labels"]):
        entry = payload["circuits"][c]
        label = next((int(k) for k, v in names.items() if v == str(page_class)), None)
        if label is None:
            assert entry is None
            continue
        studied += 1
        cs, shown = learned[label]
        assert entry["units_kept"] == cs[shown].units_kept and entry["strength"] == cs[shown].strength
        for method, nodes in entry["nodes_inside"].items():
            graph = payload["graphs"][method][c]["nodes"]
            inside = [i for i, n in enumerate(graph) if cs[shown].keep[summary["path_layers"][n[0]]][n[1]]]
            assert nodes == inside
    assert studied == 3 and payload["meta"]["circuits"]["ablation"] == "mean"
    # circuits of other records are left out, with a line saying so
    data = json.loads((run_folder / "circuits" / "summary.json").read_text())
    stale = dict(data, records_sha256="0" * 64)
    (run_folder / "circuits" / "summary.json").write_text(json.dumps(stale))
    try:
        run_main(capsys, "report", "--run", run_folder, "--heatmaps", "0", "--quiet")
        text = (run_folder / "summary.md").read_text()
        assert "Class circuits: fewest" not in text and "class circuits were made from other records" in text
        assert read_payload((run_folder / "report.html").read_text())["circuits"] == [None] * len(
            payload["classes"]["labels"])
    finally:
        (run_folder / "circuits" / "summary.json").write_text(json.dumps(data))


def test_the_class_view_shows_the_circuit(run_folder, capsys, page):
    from captum_paths.explorer import read_payload

    run_main(capsys, "report", "--run", run_folder, "--heatmaps", "0", "--quiet")
    report = run_folder / "report.html"
    payload = read_payload(report.read_text())
    c = next(i for i, e in enumerate(payload["circuits"]) if e is not None)
    entry = payload["circuits"][c]
    page.goto(report.as_uri() + f"#class/{c}")
    page.wait_for_selector(f"#class-body[data-class='{c}'][data-circuit-units]")
    assert int(page.get_attribute("#class-body", "data-circuit-units")) == entry["units_kept"]
    assert int(page.get_attribute("#class-body", "data-circuit-edges")) == len(entry["edges"])
    text = page.inner_text("#class-circuit-summary")
    assert f"{entry['units_kept']:,} of {entry['total_units']:,} units" in text
    assert page.locator("#class-circuit-layers .bars .point").count() == len(entry["kept_per_layer"])
    if entry["units"]:  # a line per edge, the edges' hover points, the units
        page.wait_for_selector("#class-circuit-graph .scatterlayer .trace", state="attached")
        drawn = sum(e[2] is not None for e in entry["edges"]) + 2
        assert page.locator("#class-circuit-graph .scatterlayer .trace").count() == drawn
        assert page.locator("#class-circuit-graph .scatterlayer .trace:last-child .point").count() == len(
            entry["units"])
    # a class without a circuit has no circuit section
    other = next((i for i, e in enumerate(payload["circuits"]) if e is None), None)
    if other is not None:
        page.goto(report.as_uri() + f"#class/{other}")
        page.wait_for_selector(f"#class-body[data-class='{other}'][data-drawn]")
        assert page.locator("#class-circuit-summary").count() == 0
    assert page.errors == []


def test_zero_ablation_and_a_second_run_replace_the_folder(run_folder, capsys):
    code, out, err = run_main(capsys, "circuits", "--run", run_folder, "--classes", "2", "--ablation", "zero",
                              "--strengths", "1", "--steps", "5", "--edge-units", "0", "--quiet")
    assert code == 0 and err == ""
    summary = _summary(run_folder)
    assert summary["ablation"] == "zero" and len(summary["classes"]) == 2 and summary["edge_units"] == 0
    assert set(pd.read_csv(run_folder / "circuits" / "circuit_study.csv")["ablation"]) == {"zero"}
    assert not (run_folder / "circuits" / "circuit_edges.csv").exists()  # nothing left of the first run
    assert not any(p.name.startswith(".circuits") for p in run_folder.iterdir())


@pytest.mark.parametrize("extra, message", [
    (["--classes", "-1"], "--classes must be 0 or a positive number"),
    (["--steps", "0"], "--steps must be a positive number"),
    (["--train-fraction", "1.5"], "--train-fraction must be between 0 and 1"),
    (["--strengths", "-2"], "--strengths must be non-negative"),
    (["--lr", "0"], "--lr must be positive"),
])
def test_bad_flags_are_one_line_errors(run_folder, capsys, extra, message):
    code, _, err = run_main(capsys, "circuits", "--run", run_folder, *extra)
    assert code == 2 and message in err and err.count("\n") == 1


def test_a_missing_run_and_bad_arguments_are_named(tmp_path, capsys, run_folder):
    code, _, err = run_main(capsys, "circuits", "--run", tmp_path / "nope")
    assert code == 2 and "does not exist" in err
    with pytest.raises(ValueError, match="ablation must be one of"):
        Run(run_folder).circuits(ablation="median")
    with pytest.raises(ValueError, match="edge_units must be 0"):
        Run(run_folder).circuits(edge_units=-1)
    with pytest.raises(ValueError, match="classes must be a positive int"):
        Run(run_folder).circuits(classes=0)



def test_the_overview_states_the_fewest_units_of_the_circuits(run_folder):
    from captum_paths.explorer import explorer_payload

    run = Run(run_folder)
    payload = explorer_payload(run.records(), circuits_dir=run.circuits_dir)
    fewest = pd.read_csv(run.circuits_dir / "circuit_fewest.csv").set_index("method")
    claim = next(c for c in payload["claims"] if c.startswith("Fewest of all units"))
    for method, share in fewest["fraction_kept"].items():
        if method in ("learned circuit", "attribution patching", "neuron-path", "random ranking"):
            expected = ("never" if share != share else "all of them" if share >= 1 else f"{100 * share:.1f}%")
            assert f"{method} {expected}" in claim
    assert f"({len(_summary(run_folder)['classes'])} classes)" in claim
    assert not any(c.startswith("Fewest of all units") for c in explorer_payload(run.records())["claims"])


def test_head_circuits_of_a_neuron_run_skip_the_path_rankings(run_folder, capsys, caplog):
    import logging

    caplog.set_level(logging.WARNING)
    code, _, err = run_main(capsys, "circuits", "--run", run_folder, "--classes", "2", "--units", "heads",
                            "--strengths", "1", "--steps", "5", "--edge-units", "1")
    assert code == 0
    assert "no path-use rankings" in caplog.text
    summary = _summary(run_folder)
    assert set(summary["kinds"]) == {"head"} and summary["path_layers"] == []
    table = pd.read_csv(run_folder / "circuits" / "circuit_study.csv")
    assert set(table["method"]) == {"learned circuit", "attribution patching", "random ranking"}
    assert pd.read_csv(run_folder / "circuits" / "circuit_overlap.csv").empty
    code, _, _ = run_main(capsys, "report", "--run", run_folder, "--heatmaps", "0", "--quiet")
    assert code == 0
