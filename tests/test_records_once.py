"""Records are parsed once (issue 25): ``Run.records()`` returns :class:`PathRecord` objects, which
read like the dicts of the file, and every view (PathTable, PathResult, the explorer, the stages)
takes them as they are. PathTable, PathResult and RecordArrays share one implementation of their
shape; one helper names a run's primary method; the run folder's file names are written once."""
from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

import captum_paths
from captum_paths.analysis import PathTable
from captum_paths.demo import save_demo_image_folder
from captum_paths.explorer import explorer_payload, method_overview
from captum_paths.pipeline import Run
from captum_paths.records import (
    AnalysisFiles,
    EvaluationFiles,
    PathRecord,
    RecordArrays,
    RunFiles,
    StackedPaths,
    append_records,
    as_path_records,
    read_records,
    record_json,
    stack_records,
)
from captum_paths.search import PathResult
from captum_paths.search.registry import DEFAULT_METHOD, PATH_METHODS, primary_method

PACKAGE = Path(captum_paths.__file__).parent
METHODS = ["neuron-path", "random"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("once")
    data = save_demo_image_folder(tmp / "data", limit_per_class=2)
    run = Run(tmp / "run", device="cpu")
    run.extract("demo", data, methods=METHODS, n_steps=2, progress=False)
    return run


@pytest.fixture
def parses(monkeypatch):
    """Counts the records built (every parse builds one: ``PathRecord.from_dict`` calls the
    constructor, whose ``__post_init__`` checks every field)."""
    count = {"n": 0}
    check = PathRecord.__post_init__

    def counted(self):
        count["n"] += 1
        check(self)

    monkeypatch.setattr(PathRecord, "__post_init__", counted)
    return count


def _lines(run):
    return [line for line in run.records_file.read_text(encoding="utf-8").splitlines() if line.strip()]


# ------------------------------------------------------------ parsed once
def test_records_of_a_run_are_parsed_once_by_every_view(run, parses):
    lines = _lines(run)
    records = run.records()
    assert parses["n"] == len(lines) == 2 * 20
    assert all(type(r) is PathRecord for r in records)
    assert as_path_records(records) == records and all(a is b for a, b in zip(as_path_records(records), records))
    for method in METHODS:
        mine = [r for r in records if r.method == method]
        table = PathTable.from_records(records, method=method)
        result = PathResult.from_records(mine)
        assert len(table) == len(result) == 20
    stack_records(records[:3])
    method_overview(records)
    payload = explorer_payload(records)
    assert payload["meta"]["records"] == len(lines) and set(payload["graphs"]) == set(METHODS)
    assert parses["n"] == len(lines)  # the views built no record: one parse per line, all told


def test_the_explorer_groups_the_records_by_method_once(run, monkeypatch):
    records = run.records()
    given = []
    build = PathTable.from_records.__func__

    def spy(cls, records, *args, **kwargs):
        records = list(records)
        given.append((kwargs.get("method"), records))
        return build(cls, records, *args, **kwargs)

    monkeypatch.setattr(PathTable, "from_records", classmethod(spy))
    explorer_payload(records)
    assert sorted(m for m, _ in given) == sorted(METHODS)  # one table per method
    for method, part in given:  # each built from its method's records alone
        assert part and {r.method for r in part} == {method}
    assert sum(len(part) for _, part in given) == len(records)


def test_each_stage_parses_the_records_once(run, parses):
    lines = len(_lines(run))
    Run(run.folder, device="cpu").analyze(permutations=5, pixels=False)
    assert parses["n"] == lines
    parses["n"] = 0
    Run(run.folder, device="cpu").evaluate(jas_modes=("gate",), n_steps=2, pruning=False, faithfulness=False)
    assert parses["n"] == lines
    parses["n"] = 0
    Run(run.folder, device="cpu").report(heatmaps=False)
    assert parses["n"] == lines
    # the stages wrote and read the files the layout names
    for name in (AnalysisFiles.PATH_SHARING, AnalysisFiles.PATH_SHARING_BY_CLASS, AnalysisFiles.CONSENSUS_PATHS,
                 AnalysisFiles.CONSENSUS_PATH_LISTS, AnalysisFiles.LAYER_SUMMARY, AnalysisFiles.PATH_GRAPH,
                 AnalysisFiles.CLASS_SIMILARITY_COSINE, AnalysisFiles.CLASS_SIMILARITY_JACCARD,
                 AnalysisFiles.SHARED_CONSENSUS_NEURONS, AnalysisFiles.SUMMARY):
        assert (run.folder / RunFiles.ANALYSIS / name).is_file(), name
    for name in (EvaluationFiles.DEVIATION, EvaluationFiles.DEVIATION_BY_METHOD, EvaluationFiles.JAS,
                 EvaluationFiles.METHODS_SUMMARY, EvaluationFiles.INTERVALS, EvaluationFiles.COMPARISONS,
                 EvaluationFiles.SUMMARY):
        assert (run.folder / RunFiles.EVALUATION / name).is_file(), name
    assert (run.folder / RunFiles.REPORT).is_file() and (run.folder / RunFiles.SUMMARY).is_file()
    assert "## Compared with neuron-path" in (run.folder / RunFiles.SUMMARY).read_text()


# ------------------------------------------------- a record reads like its dict
def test_a_parsed_record_reads_like_the_dict_of_its_line(run):
    lines = _lines(run)
    records = read_records(run.records_file, unique=False, check=True)
    assert len(records) == len(lines)
    for line, record in zip(lines, records):
        raw = json.loads(line)
        assert dict(record) == raw and len(record) == len(raw) and set(record) == set(raw)
        assert list(record) == list(record.to_dict()) and record.to_dict() == raw
        assert record_json(record) == json.dumps(raw, sort_keys=True) == line
        for key, value in raw.items():
            assert record[key] == value and record.get(key) == value and key in record
        assert "nope" not in record and record.get("nope") is None and record.get("nope", 1) == 1
        with pytest.raises(KeyError):
            record["nope"]
    # the digest of the records is the one of their dicts (stage outputs made before stay current)
    assert run.records_digest(records) == run.records_digest([json.loads(line) for line in lines])


def test_read_records_parses_with_check_and_reads_dicts_without(run):
    checked, quick = read_records(run.records_file, check=True), read_records(run.records_file)
    assert all(type(r) is PathRecord for r in checked) and all(type(r) is dict for r in quick)
    assert [r.to_dict() for r in checked] == quick


def test_keys_outside_the_schema_are_kept_when_records_are_written_again(tmp_path):
    record = {"schema": 3, "image_id": "a.png", "method": "random", "path": [[1], [2]], "target": 0,
              "note": {"by": "hand"}}
    file = tmp_path / "records.jsonl"
    append_records(file, [record])
    (parsed,) = read_records(file, check=True)
    assert parsed.extra == {"note": {"by": "hand"}} and parsed["note"] == {"by": "hand"} and "note" in parsed
    assert parsed.label is None and parsed["label"] is None  # absent optional keys read as None
    again = tmp_path / "again.jsonl"
    append_records(again, read_records(file, check=True))
    assert json.loads(again.read_text())["note"] == {"by": "hand"}
    assert PathRecord.from_dict(parsed) is parsed  # a parsed record is not parsed again
    with pytest.raises(ValueError, match="'extra' holds keys of the schema"):
        PathRecord(image_id="a", method="m", path=[[1]], target=0, extra={"path": 3})


# --------------------------------------------------------- one shape, once
def test_path_table_and_path_result_share_one_shape_implementation(run):
    for name in ("__len__", "num_layers", "k", "shape"):
        assert name in vars(StackedPaths)
        for view in (PathTable, PathResult, RecordArrays):
            assert name not in vars(view), f"{view.__name__} defines {name} again"
            assert getattr(view, name) is getattr(StackedPaths, name)
    records = [r for r in run.records() if r.method == "neuron-path"]
    table, result, arrays = PathTable.from_records(records), PathResult.from_records(records), stack_records(records)
    for view in (table, result, arrays):
        assert len(view) == 20 and view.shape == (20, view.num_layers, view.k) == tuple(view.paths.shape)
        assert all(type(n) is int for n in view.shape)
    assert table.shape == result.shape == arrays.shape == (20, len(records[0].path), len(records[0].path[0]))


# ------------------------------------------------------- the primary method
def test_primary_method_is_the_default_when_present_else_the_first_registered():
    assert DEFAULT_METHOD == "neuron-path" == next(iter(PATH_METHODS))
    assert primary_method(["random", "neuron-path", "activation"]) == DEFAULT_METHOD
    assert primary_method(["random", "activation"]) == primary_method(["activation", "random"]) == "activation"
    assert primary_method(["zeta", "random"]) == "random"  # a registered method before others
    assert primary_method(["zeta", "alpha", "zeta"]) == "alpha"
    assert primary_method(iter(["random"])) == "random"
    with pytest.raises(ValueError, match="no methods"):
        primary_method([])


def test_the_stages_the_explorer_and_the_plots_use_the_one_name():
    from captum_paths.pipeline.evaluate import SEARCHED
    from captum_paths.plots.evaluation import HIGHLIGHT_METHOD, METHOD_COLOURS

    assert SEARCHED == HIGHLIGHT_METHOD == DEFAULT_METHOD and DEFAULT_METHOD in METHOD_COLOURS
    users = ["pipeline/evaluate.py", "pipeline/analyze.py", "pipeline/report.py", "explorer/payload.py",
             "plots/evaluation.py"]
    for file in users:
        tree = ast.parse((PACKAGE / file).read_text(encoding="utf-8"))
        literals = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.Constant) and n.value == DEFAULT_METHOD]
        assert not literals, f"{file}:{literals} spells the default method"
        imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
        assert "captum_paths.search.registry" in imported, file
    analyze = ast.parse((PACKAGE / "pipeline/analyze.py").read_text(encoding="utf-8"))
    assert "captum_paths.pipeline.evaluate" not in {n.module for n in ast.walk(analyze)
                                                     if isinstance(n, ast.ImportFrom)}


# ------------------------------------------------------------ file names
def _names():
    return {value for space in (RunFiles, EvaluationFiles, AnalysisFiles)
            for key, value in vars(space).items() if key.isupper()}


def test_the_run_folder_names_are_written_once():
    names = _names()
    assert {"records.jsonl", "run.json", "unreadable.txt", "report.html", "summary.md", "deviation.csv",
            "methods_summary.csv", "intervals.csv", "comparisons.csv", "faithfulness_fewest.csv", "pruning_grid.csv",
            "jas.csv", "summary.json", "path_sharing.csv", "layer_summary.csv", "consensus_paths.csv"} <= names
    users = ["pipeline/evaluate.py", "pipeline/analyze.py", "pipeline/report.py", "explorer/payload.py"]
    for file in users:
        tree = ast.parse((PACKAGE / file).read_text(encoding="utf-8"))
        spelled = [(n.lineno, n.value) for n in ast.walk(tree)
                   if isinstance(n, ast.Constant) and n.value in names and "." in n.value]  # not the words
        assert not spelled, f"{file} spells run folder names: {spelled}"
    folder = Path("some/run")
    run = Run(folder)
    assert (run.run_file, run.records_file, run.unreadable_file) == (
        folder / RunFiles.RUN, folder / RunFiles.RECORDS, folder / RunFiles.UNREADABLE)
    assert (run.evaluation_dir, run.analysis_dir, run.report_file, run.summary_file) == (
        folder / RunFiles.EVALUATION, folder / RunFiles.ANALYSIS, folder / RunFiles.REPORT, folder / RunFiles.SUMMARY)


def test_records_and_views_agree_on_values(run):
    """The views built from parsed records hold the records' values (spot check against the file)."""
    raw = [json.loads(line) for line in _lines(run)]
    mine = [r for r in raw if r["method"] == "random"]
    table = PathTable.from_records(run.records(), method="random")
    assert table.image_ids == [r["image_id"] for r in mine]
    assert np.array_equal(table.paths, np.asarray([r["path"] for r in mine]))
    np.testing.assert_array_equal(table.jas, [r["jas"] for r in mine])
