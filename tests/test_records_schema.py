"""One record schema: PathRecord parses, stack_records stacks, PathResult and PathTable are views.

The JSON of ``to_records`` is pinned to literal lines written before the schema
had a type, and both views are compared with frozen copies of the parsers they
had then (``_old_path_result``, ``_old_table``).
"""
from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch

from captum_paths.analysis import PathTable, as_table, consensus_paths
from captum_paths.records import (
    SCHEMA_VERSION,
    PathRecord,
    RecordArrays,
    as_path_records,
    read_records,
    stack_records,
    upgrade_record,
)
from captum_paths.search import PathResult


def example() -> PathResult:
    return PathResult(
        paths=torch.tensor([[[3, 1], [0, 7]], [[2, 5], [4, 6]]]),
        contributions=torch.tensor([[[0.1, -0.25], [1.5, 0.0]], [[2.0, 1e-8], [-3.0, 0.3]]]),
        jas=torch.tensor([0.7, -1.2]),
        targets=torch.tensor([1, 0]),
        method="neuron-path",
        settings={"mode": "gate", "n_steps": 8, "approximation": "gausslegendre", "k": 2, "output": "prob",
                  "refine": 2},
        delta=torch.tensor([1e-3, 0.0]),
        scores=torch.tensor([[[0.9, 0.5], [0.4, 0.2]], [[1.0, 0.1], [0.3, 0.3]]]),
        refined_layers=torch.tensor([1, 0]),
    )


def bare_example() -> PathResult:
    r = example()
    return PathResult(paths=r.paths, contributions=r.contributions, jas=r.jas, targets=r.targets, method="random")


def full_records():
    return example().to_records(image_ids=["img/a.png", 17], labels=[1, 2], predictions=[1, None],
                                model_id="tiny-vit")


# json.dumps (insertion order) of the records above and of bare_example().to_records(), as
# PathResult.to_records wrote them before PathRecord existed (schema 2; schema 3 changed run.json
# only, so the records differ in that number alone)
OLD_JSON_V2 = [
    '{"schema": 2, "image_id": "img/a.png", "label": 1, "target": 1, "prediction": 1, "method": "neuron-path", '
    '"path": [[3, 1], [0, 7]], "contributions": [[0.10000000149011612, -0.25], [1.5, 0.0]], '
    '"jas": 0.699999988079071, "delta": 0.0010000000474974513, '
    '"scores": [[0.8999999761581421, 0.5], [0.4000000059604645, 0.20000000298023224]], "refined_layers": 1, '
    '"settings": {"mode": "gate", "n_steps": 8, "approximation": "gausslegendre", "k": 2, "output": "prob", '
    '"refine": 2}, "model_id": "tiny-vit"}',
    '{"schema": 2, "image_id": 17, "label": 2, "target": 0, "prediction": null, "method": "neuron-path", '
    '"path": [[2, 5], [4, 6]], "contributions": [[2.0, 9.99999993922529e-09], [-3.0, 0.30000001192092896]], '
    '"jas": -1.2000000476837158, "delta": 0.0, '
    '"scores": [[1.0, 0.10000000149011612], [0.30000001192092896, 0.30000001192092896]], "refined_layers": 0, '
    '"settings": {"mode": "gate", "n_steps": 8, "approximation": "gausslegendre", "k": 2, "output": "prob", '
    '"refine": 2}, "model_id": "tiny-vit"}',
    '{"schema": 2, "image_id": 0, "label": null, "target": 1, "prediction": null, "method": "random", '
    '"path": [[3, 1], [0, 7]], "contributions": [[0.10000000149011612, -0.25], [1.5, 0.0]], '
    '"jas": 0.699999988079071, "delta": null, "scores": null, "refined_layers": null, "settings": {}, '
    '"model_id": null}',
    '{"schema": 2, "image_id": 1, "label": null, "target": 0, "prediction": null, "method": "random", '
    '"path": [[2, 5], [4, 6]], "contributions": [[2.0, 9.99999993922529e-09], [-3.0, 0.30000001192092896]], '
    '"jas": -1.2000000476837158, "delta": null, "scores": null, "refined_layers": null, "settings": {}, '
    '"model_id": null}',
]
OLD_JSON = [line.replace('"schema": 2', f'"schema": {SCHEMA_VERSION}') for line in OLD_JSON_V2]

V1_RECORD = {
    "image_id": "old.png", "label": 1, "target": 1, "prediction": 0, "method": "neuron-path",
    "path": [[3], [4]], "contributions": [[0.1], [0.2]], "jas": 0.3, "delta": 0.0, "scores": None,
    "refined_layers": None, "model_id": "demo",
    "settings": {"mode": "gate", "n_steps": 4, "method": "gausslegendre", "k": 1, "output": "prob"},
}


# ------------------------------------------------- the parsers before PathRecord
def _old_path_result(records):
    records = [upgrade_record(r) for r in records]
    methods = {r["method"] for r in records}

    def optional(key, dtype):
        if any(r.get(key) is None for r in records):
            return None
        return torch.tensor([r[key] for r in records], dtype=dtype)

    return PathResult(
        paths=torch.tensor([r["path"] for r in records], dtype=torch.long),
        contributions=torch.tensor([r["contributions"] for r in records], dtype=torch.float32),
        jas=torch.tensor([r["jas"] for r in records], dtype=torch.float32),
        targets=torch.tensor([r["target"] for r in records], dtype=torch.long),
        method=methods.pop(),
        settings=dict(records[0].get("settings") or {}),
        delta=optional("delta", torch.float32),
        scores=optional("scores", torch.float32),
        refined_layers=optional("refined_layers", torch.long),
    )


def _old_table(records, method, classes=None, label_key="label"):
    keep = [i for i, r in enumerate(records) if r.get("method") == method]
    if classes is not None:
        keep = [i for i in keep if records[i].get(label_key) in set(classes)]
    selected = [records[i] for i in keep]
    paths = np.asarray([r["path"] for r in selected], dtype=np.int64)
    contributions = np.full(paths.shape, np.nan)
    with_contrib = [i for i, r in enumerate(selected) if r.get("contributions") is not None]
    if with_contrib:
        contributions[with_contrib] = np.asarray([selected[i]["contributions"] for i in with_contrib])
    labels = [r.get(label_key) for r in selected]
    return {
        "paths": paths,
        "contributions": contributions,
        "classes": sorted(set(labels)),
        "labels": labels,
        "image_ids": [r.get("image_id", i) for i, r in zip(keep, selected)],
        "jas": np.asarray([np.nan if r.get("jas") is None else r["jas"] for r in selected], dtype=np.float64),
        "record_index": np.asarray(keep, dtype=np.int64),
        "width": int(paths.max()) + 1,
    }


def assert_same_result(a: PathResult, b: PathResult) -> None:
    assert a.method == b.method and a.settings == b.settings
    for name in ("paths", "contributions", "jas", "targets", "delta", "scores", "refined_layers"):
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is not None:
            assert x.dtype == y.dtype and torch.equal(x, y), name


def assert_same_table(table: PathTable, old: dict) -> None:
    assert table.paths.dtype == np.int64 and np.array_equal(table.paths, old["paths"])
    assert table.contributions.dtype == np.float64
    np.testing.assert_array_equal(table.contributions, old["contributions"])  # NaN where absent, on both
    np.testing.assert_array_equal(table.jas, old["jas"])
    assert table.classes == old["classes"] and table.labels == old["labels"]
    assert table.image_ids == old["image_ids"]
    assert np.array_equal(table.record_index, old["record_index"]) and table.width == old["width"]


def mixed_records():
    """Records of two methods: int classes, one record lacking contributions and jas; string classes."""
    records = full_records() + bare_example().to_records()
    records[1] = dict(records[1], contributions=None, jas=None)
    records[2] = dict(records[2], label="cat", target="cat")
    records[3] = dict(records[3], label="dog", target="dog")
    return records


# ------------------------------------------------------------------- JSON form
def test_to_records_json_is_unchanged_key_for_key():
    records = full_records() + bare_example().to_records()
    assert [json.dumps(r) for r in records] == OLD_JSON
    assert [json.dumps(r, sort_keys=True) for r in records] == [
        json.dumps(json.loads(line), sort_keys=True) for line in OLD_JSON]


def test_to_dict_of_parsed_json_is_byte_identical():
    for line in OLD_JSON:
        record = PathRecord.from_dict(json.loads(line))
        assert json.dumps(record.to_dict()) == line
    records = full_records()
    assert [r.to_dict() for r in example().to_path_records(
        image_ids=["img/a.png", 17], labels=[1, 2], predictions=[1, None], model_id="tiny-vit")] == records


def test_to_dict_copies_lists_and_settings():
    record = PathRecord.from_dict(json.loads(OLD_JSON[0]))
    d = record.to_dict()
    d["path"][0][0] = 99
    d["contributions"][0][0] = 99.0
    d["scores"][0][0] = 99.0
    d["settings"]["k"] = 99
    assert record.path[0][0] == 3 and record.contributions[0][0] != 99.0
    assert record.scores[0][0] != 99.0 and record.settings["k"] == 2


# ------------------------------------------------------------------ round trip
def test_round_trip_result_dicts_records_result():
    result = example()
    dicts = [json.loads(json.dumps(r)) for r in full_records()]
    path_records = as_path_records(dicts)
    assert all(isinstance(r, PathRecord) for r in path_records)
    back = PathResult.from_records(path_records)
    assert_same_result(back, _old_path_result(dicts))
    assert_same_result(PathResult.from_records(dicts), back)
    assert torch.equal(back.paths, result.paths)
    for name in ("contributions", "jas", "delta", "scores"):
        assert torch.equal(getattr(back, name), getattr(result, name)), name
    assert torch.equal(back.refined_layers, result.refined_layers) and torch.equal(back.targets, result.targets)
    assert back.settings == result.settings and back.method == result.method
    # optional fields missing on any record are None, as before
    partial = copy.deepcopy(dicts)
    partial[1]["delta"] = None
    del partial[0]["scores"]
    old, new = _old_path_result(partial), PathResult.from_records(partial)
    assert new.delta is None and new.scores is None and new.refined_layers is not None
    assert_same_result(new, old)
    bare = PathResult.from_records(bare_example().to_records())
    assert_same_result(bare, _old_path_result(bare_example().to_records()))


def test_path_result_errors_are_kept():
    with pytest.raises(ValueError, match="records is empty"):
        PathResult.from_records([])
    with pytest.raises(ValueError, match="mix several methods"):
        PathResult.from_records(full_records() + bare_example().to_records())
    with pytest.raises(ValueError, match=r"record 17 has no 'contributions'"):
        PathResult.from_records([full_records()[0], dict(full_records()[1], contributions=None)])
    with pytest.raises(ValueError, match="different shapes"):
        PathResult.from_records([V1_RECORD, full_records()[0]])


def test_table_equals_the_old_parser():
    records = mixed_records()
    for kwargs in (dict(method="neuron-path"), dict(method="random"), dict(method="neuron-path", classes=[2]),
                   dict(method="random", label_key="target"), dict(method="neuron-path", label_key="target")):
        label_key = kwargs.get("label_key", "label")
        table = PathTable.from_records(records, **kwargs)
        assert table.method == kwargs["method"] and table.label_key == label_key
        assert_same_table(table, _old_table(records, **kwargs))
        assert_same_table(PathTable.from_records(as_path_records(records), **kwargs), _old_table(records, **kwargs))
    table = PathTable.from_records(records, method="neuron-path")
    assert np.isnan(table.contributions[1]).all() and np.isnan(table.jas[1])
    assert table.record_index.tolist() == [0, 1]
    assert as_table(as_path_records(records), method="random").image_ids == [0, 1]


def test_table_accepts_mixed_dicts_and_records():
    records = mixed_records()
    half = [PathRecord.from_dict(r) if i % 2 else r for i, r in enumerate(records)]
    assert_same_table(PathTable.from_records(half, method="neuron-path"), _old_table(records, "neuron-path"))
    assert consensus_paths(half, method="neuron-path").equals(consensus_paths(records, method="neuron-path"))


def test_table_errors_are_kept():
    records = mixed_records()
    with pytest.raises(ValueError, match="records is empty: no paths to analyse"):
        PathTable.from_records([])
    with pytest.raises(ValueError, match=r"records mix the methods \['neuron-path', 'random'\]"):
        PathTable.from_records(records)
    with pytest.raises(ValueError, match="no record has method 'beam'"):
        PathTable.from_records(records, method="beam")
    with pytest.raises(ValueError, match=r"no 'random' record has a label in \[7\]"):
        PathTable.from_records(records, method="random", classes=[7])
    with pytest.raises(ValueError, match=r"1 of 2 records have no 'prediction'"):
        PathTable.from_records(records, method="neuron-path", label_key="prediction")
    with pytest.raises(ValueError, match="label_key must be"):
        PathTable.from_records(records, label_key="class")
    with pytest.raises(TypeError, match="already a PathTable"):
        PathTable.from_records(PathTable.from_records(records, method="random"))
    two_layers = dict(records[0], image_id="short", path=[[1, 2]], contributions=None, scores=None)
    with pytest.raises(ValueError, match="different shapes"):
        PathTable.from_records([records[0], two_layers])


# ----------------------------------------------------------------- version 1
def test_version_1_record_loads_into_both_views(tmp_path):
    assert "schema" not in V1_RECORD
    record = PathRecord.from_dict(V1_RECORD)
    assert record.settings["approximation"] == "gausslegendre" and "method" not in record.settings
    assert V1_RECORD["settings"]["method"] == "gausslegendre"  # the input is left as it was
    assert record.to_dict()["schema"] == SCHEMA_VERSION
    result = PathResult.from_records([V1_RECORD])
    assert result.settings["approximation"] == "gausslegendre" and "method" not in result.settings
    assert_same_result(result, _old_path_result([V1_RECORD]))
    table = PathTable.from_records([V1_RECORD])
    assert table.paths.tolist() == [[[3], [4]]] and table.classes == [1] and table.image_ids == ["old.png"]
    assert stack_records([V1_RECORD]).settings["approximation"] == "gausslegendre"
    file = tmp_path / "records.jsonl"
    file.write_text(json.dumps(V1_RECORD) + "\n")
    assert PathRecord.from_dict(read_records(file)[0]) == record
    with pytest.raises(ValueError, match="newer than this captum_paths reads"):
        PathRecord.from_dict({**V1_RECORD, "schema": SCHEMA_VERSION + 1})


# ------------------------------------------------------------ checks and errors
@pytest.mark.parametrize("key", ["method", "path", "target"])
def test_missing_required_key_names_key_and_image_id(key):
    record = json.loads(OLD_JSON[0])
    with pytest.raises(ValueError, match=rf"record 'img/a.png' has no '{key}'"):
        PathRecord.from_dict({k: v for k, v in record.items() if k != key})
    with pytest.raises(ValueError, match=rf"record 'img/a.png' has no '{key}'"):
        PathRecord.from_dict({**record, key: None})
    with pytest.raises(ValueError, match=rf"has no '{key}'"):
        PathTable.from_records([{k: v for k, v in record.items() if k != key}])


def test_missing_image_id():
    record = json.loads(OLD_JSON[0])
    del record["image_id"]
    with pytest.raises(ValueError, match="a record has no 'image_id'"):
        PathRecord.from_dict(record)
    with pytest.raises(ValueError, match="a record has no 'image_id'"):
        PathResult.from_records([record])


@pytest.mark.parametrize(
    "change,words",
    [
        (dict(path=[1, 2]), "path must be L lists of k neuron indices"),
        (dict(path="abc"), "path must be L lists of k neuron indices"),
        (dict(path=[]), "path must be L lists of k neuron indices"),
        (dict(path=[[], []]), "path must be L lists of k neuron indices"),
        (dict(path=[[1, 2], [3]]), "path must be L lists of k neuron indices"),
        (dict(path=[[1.5, 2], [3, 4]]), "path must be L lists of k neuron indices"),
        (dict(path=[[True, 2], [3, 4]]), "path must be L lists of k neuron indices"),
        (dict(path=[["1", 2], [3, 4]]), "path must be L lists of k neuron indices"),
        (dict(path=[[1, -2], [3, 4]]), "negative neuron indices"),
        (dict(contributions=[[0.1, 0.2]]), "'contributions' must be 2 lists of 2 numbers"),
        (dict(contributions=[[0.1, "x"], [0.1, 0.2]]), "'contributions' must be 2 lists of 2 numbers"),
        (dict(scores=[[0.1], [0.2]]), "'scores' must be 2 lists of 2 numbers"),
        (dict(method=3), "'method' must be a str"),
        (dict(image_id=[1]), "'image_id' must be an int or a str"),
        (dict(target=1.0), "'target' must be an int or a str"),
        (dict(label=True), "'label' must be an int or a str"),
        (dict(prediction=[1]), "'prediction' must be an int or a str"),
        (dict(jas="0.7"), "'jas' must be a number"),
        (dict(delta=[0.0]), "'delta' must be a number"),
        (dict(refined_layers=1.5), "'refined_layers' must be an int"),
        (dict(settings=["gate"]), "'settings' must be a dict"),
        (dict(model_id=7), "'model_id' must be a str"),
    ],
)
def test_bad_fields_are_rejected(change, words):
    record = {**json.loads(OLD_JSON[0]), **change}
    with pytest.raises(ValueError, match=words):
        PathRecord.from_dict(record)
    with pytest.raises(ValueError, match=words):
        PathTable.from_records([record])
    with pytest.raises(ValueError, match=words):
        PathResult.from_records([record])


def test_non_dict_record_is_rejected():
    with pytest.raises(ValueError, match="a record must be a dict; got list"):
        PathRecord.from_dict([("image_id", 1)])


def test_numpy_and_torch_values_become_plain_python():
    record = PathRecord(
        image_id=np.int64(4), method="neuron-path", path=np.array([[1, 2], [3, 4]]), target=np.int32(2),
        label=np.int64(2), contributions=torch.tensor([[0.5, 0.25], [1.0, 2.0]]), jas=np.float32(0.5),
        delta=np.float64(0.0), scores=((0.1, 0.2), (0.3, 0.4)), refined_layers=np.int64(1),
    )
    assert type(record.image_id) is int and type(record.target) is int and type(record.label) is int
    assert record.path == [[1, 2], [3, 4]] and all(type(n) is int for layer in record.path for n in layer)
    assert record.contributions == [[0.5, 0.25], [1.0, 2.0]] and type(record.contributions[0][0]) is float
    assert record.scores == [[0.1, 0.2], [0.3, 0.4]] and type(record.jas) is float
    assert type(record.refined_layers) is int and record.settings == {}
    json.dumps(record.to_dict())  # JSON-ready


# ------------------------------------------------------------------- stacking
def test_stack_records_arrays():
    records = mixed_records()[:2]
    arrays = stack_records(records)
    assert isinstance(arrays, RecordArrays) and len(arrays) == 2
    assert arrays.paths.dtype == np.int64 and arrays.paths.shape == (2, 2, 2)
    assert arrays.paths.tolist() == [r["path"] for r in records]
    assert arrays.contributions.dtype == np.float64
    assert arrays.contributions[0].tolist() == records[0]["contributions"] and np.isnan(arrays.contributions[1]).all()
    assert arrays.jas[0] == records[0]["jas"] and np.isnan(arrays.jas[1])
    assert arrays.delta.tolist() == [r["delta"] for r in records]
    assert arrays.scores.tolist() == [r["scores"] for r in records]
    assert arrays.refined_layers.tolist() == [1.0, 0.0]
    assert arrays.targets == [1, 0] and arrays.labels == [1, 2] and arrays.predictions == [1, None]
    assert arrays.image_ids == ["img/a.png", 17] and arrays.methods == ["neuron-path"] * 2
    assert arrays.settings == records[0]["settings"] and arrays.settings is not records[0]["settings"]
    bare = stack_records(bare_example().to_path_records())
    assert np.isnan(bare.delta).all() and np.isnan(bare.scores).all() and np.isnan(bare.refined_layers).all()


def test_stack_records_errors():
    with pytest.raises(ValueError, match="records is empty"):
        stack_records([])
    other_k = dict(V1_RECORD, path=[[3, 4], [4, 5]], contributions=None)
    with pytest.raises(ValueError, match="different shapes"):
        stack_records([V1_RECORD, other_k])
    edited = PathRecord.from_dict(copy.deepcopy(V1_RECORD))  # from_dict shares the dict's lists
    edited.path[1].append(-1)  # bypasses the checks made when the record was built
    with pytest.raises(ValueError, match="L lists of k"):
        stack_records([edited])
    edited = PathRecord.from_dict(copy.deepcopy(V1_RECORD))
    edited.path[1][0] = -1
    with pytest.raises(ValueError, match="negative neuron indices"):
        stack_records([edited])
