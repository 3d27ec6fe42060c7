"""Path records: their one schema, JSON Lines files of them, and the names of a run folder's files.

See "Records" in docs/method.md.

A record is one JSON object per (image, method). :class:`PathRecord` is its typed
form and :meth:`PathRecord.from_dict` the one parser of it: ``read_records(...,
check=True)`` (what :meth:`Run.records() <captum_paths.pipeline.Run.records>` reads)
returns parsed records, and every view takes them as they are, without parsing
again. A :class:`PathRecord` also reads like the dict it was parsed from
(``record["method"]``, ``record.get("label")``). :func:`stack_records` turns records
into the numpy arrays that :class:`~captum_paths.search.PathResult` and
:class:`~captum_paths.analysis.PathTable` are views of; the three share their
shape properties (:class:`StackedPaths`).

The names of a run folder's files (:class:`RunFiles`, :class:`EvaluationFiles`,
:class:`AnalysisFiles`) live here, on the ground floor, so that the pipeline
that writes them and the explorer that reads them name them in one place.

Appends write whole lines and fsync, so a killed run leaves at most one partial
last line, which :func:`read_records` ignores (and :func:`append_records`
truncates before writing again). Whole files are written atomically through a
temporary file and ``os.replace``.
"""
from __future__ import annotations

import copy
import json
import logging
import numbers
import os
import stat
import tempfile
from collections.abc import Mapping as _MappingABC
from dataclasses import dataclass, field
from itertools import chain
from operator import attrgetter
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

__all__ = ["complete_images", "SCHEMA_VERSION", "REQUIRED_KEYS", "PathRecord", "RecordArrays", "RecordLike", "as_path_records",
           "stack_records", "append_records", "read_records", "record_key", "record_json", "unique_records",
           "upgrade_record", "write_text_atomic", "write_json_atomic", "CircuitFiles", "UNIT_KINDS", "unit_kinds", "StackedPaths",
           "RunFiles", "EvaluationFiles", "AnalysisFiles"]

PathLike = Union[str, os.PathLike]

logger = logging.getLogger(__name__)

#: Version of the record layout, written in every record (``"schema"``) and in a run
#: folder's ``run.json``. Version 1 (records without ``"schema"``) named the
#: quadrature ``settings["method"]``; version 2 names it ``settings["approximation"]``;
#: version 3 names the step count of ``run.json`` ``n_steps`` (records are unchanged).
SCHEMA_VERSION = 3


def upgrade_record(record: Mapping[str, Any]) -> Dict[str, Any]:
    """``record`` in the current layout (a new dict; records already current are copied)."""
    record = dict(record)
    version = record.get("schema", 1)
    if version > SCHEMA_VERSION:
        raise ValueError(f"record schema {version} is newer than this captum_paths reads ({SCHEMA_VERSION}); "
                         "upgrade captum_paths")
    if version < 2:
        settings = dict(record.get("settings") or {})
        if "method" in settings and "approximation" not in settings:
            settings["approximation"] = settings.pop("method")
        record["settings"] = settings
    record["schema"] = SCHEMA_VERSION
    return record


# ------------------------------------------------------------------ the schema
#: The kinds of unit a path layer can hold (``settings["kinds"]``, one per layer).
UNIT_KINDS = ("neuron", "head")


def unit_kinds(settings: Optional[Mapping[str, Any]], num_layers: int) -> List[str]:
    """The kind of unit of each layer of a path recorded with ``settings``: ``settings["kinds"]``
    (paths over attention heads, or mixed sites), else ``"neuron"`` for every layer (neuron
    paths, and every record written before heads were searched).

    Raises ``ValueError`` when ``settings["kinds"]`` is not a list of ``num_layers`` values
    of :data:`UNIT_KINDS`.
    """
    kinds = (settings or {}).get("kinds")
    if kinds is None:
        return ["neuron"] * num_layers
    if not isinstance(kinds, (list, tuple)) or len(kinds) != num_layers or not all(k in UNIT_KINDS for k in kinds):
        raise ValueError(f"settings['kinds'] must list one of {UNIT_KINDS} per layer ({num_layers}); "
                         f"got {_short(kinds)}")
    return list(kinds)


#: Keys every record must hold (not ``None``).
REQUIRED_KEYS = ("image_id", "method", "path", "target")

#: ``to_dict`` writes the keys in this order (``"schema"`` first).
_KEY_ORDER = ("image_id", "label", "target", "prediction", "method", "path", "contributions", "jas", "delta",
              "scores", "refined_layers", "settings", "model_id")
_FIELD_KEYS = frozenset(_KEY_ORDER)
#: Every key of a record's JSON form.
_JSON_KEYS = frozenset(("schema",) + _KEY_ORDER)

Class = Union[int, str]


@dataclass
class PathRecord(_MappingABC):
    """One path record (one image, one method), checked and typed.

    Construction checks every field (``ValueError`` on a bad one) and turns numpy
    or torch values into plain Python ones, so :meth:`to_dict` is JSON-ready.

    A record also reads like its JSON object, a read-only mapping: ``record["method"]``,
    ``record.get("label")``, ``"jas" in record``, ``dict(record)``; its keys are those
    of :meth:`to_dict` (``"schema"``, every field, then the keys of :attr:`extra`), so
    code written for the dicts of a records file works on parsed records.

    Attributes:
        image_id (str or int): The image.
        method (str): Registry name of the path method.
        path (list): ``(L, k)`` as ``L`` lists of ``k`` neuron indices (int,
            non-negative; head indices in head layers), layer-major, best first within a layer.
        target (int or str): The class explained.
        label (int or str, optional): The image's label.
        prediction (int or str, optional): The model's predicted class.
        contributions (list, optional): ``(L, k)`` per-neuron contributions (float).
        jas (float, optional): Joint attribution score of the path.
        delta (float, optional): Convergence delta of the JAS.
        scores (list, optional): ``(L, k)`` the method's own selection scores.
        refined_layers (int, optional): Layers whose choice the refinement changed.
        settings (dict): The search settings (``mode``, ``n_steps``, ``approximation``, ``k``, ...;
            ``widths`` when layers differ in width, ``kinds`` when layers hold attention heads:
            ``"neuron"`` or ``"head"`` per layer, see :func:`unit_kinds`).
        model_id (str, optional): The model.
        extra (dict, optional): Keys outside the schema that the parsed dict held, unchecked;
            kept so that a records file written again (``captum-paths merge``) loses nothing.
    """

    image_id: Class
    method: str
    path: List[List[int]]
    target: Class
    label: Optional[Class] = None
    prediction: Optional[Class] = None
    contributions: Optional[List[List[float]]] = None
    jas: Optional[float] = None
    delta: Optional[float] = None
    scores: Optional[List[List[float]]] = None
    refined_layers: Optional[int] = None
    settings: Dict[str, Any] = field(default_factory=dict)
    model_id: Optional[str] = None
    extra: Dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        # plain-type fast paths first: records are parsed by the tens of thousands
        rid = self.image_id
        if type(rid) is not str and type(rid) is not int:
            if rid is None:
                raise ValueError("a record has no 'image_id'")
            rid = self.image_id = _class_value(rid, "image_id", None)
        if type(self.method) is not str:
            if self.method is None:
                raise ValueError(f"record {rid!r} has no 'method'")
            raise ValueError(f"record {rid!r}: 'method' must be a str; got {_short(self.method)}")
        if self.path is None:
            raise ValueError(f"record {rid!r} has no 'path'")
        path = self.path = _checked_path(self.path, rid)
        if type(self.target) is not int and type(self.target) is not str:
            if self.target is None:
                raise ValueError(f"record {rid!r} has no 'target'")
            self.target = _class_value(self.target, "target", rid)
        if self.label is not None and type(self.label) is not int and type(self.label) is not str:
            self.label = _class_value(self.label, "label", rid)
        if self.prediction is not None and type(self.prediction) is not int and type(self.prediction) is not str:
            self.prediction = _class_value(self.prediction, "prediction", rid)
        if self.contributions is not None:
            self.contributions = _checked_reals(self.contributions, "contributions", rid, len(path), len(path[0]))
        if self.scores is not None:
            self.scores = _checked_reals(self.scores, "scores", rid, len(path), len(path[0]))
        if self.jas is not None and type(self.jas) is not float:
            self.jas = _real_value(self.jas, "jas", rid)
        if self.delta is not None and type(self.delta) is not float:
            self.delta = _real_value(self.delta, "delta", rid)
        refined = self.refined_layers
        if refined is not None and type(refined) is not int:
            if isinstance(refined, bool) or not isinstance(refined, numbers.Integral):
                raise ValueError(f"record {rid!r}: 'refined_layers' must be an int; got {_short(refined)}")
            self.refined_layers = int(refined)
        if type(self.settings) is not dict:
            if self.settings is None:
                self.settings = {}
            elif isinstance(self.settings, Mapping):
                self.settings = dict(self.settings)
            else:
                raise ValueError(f"record {rid!r}: 'settings' must be a dict; got {_short(self.settings)}")
        if self.model_id is not None and type(self.model_id) is not str:
            raise ValueError(f"record {rid!r}: 'model_id' must be a str; got {_short(self.model_id)}")
        if "kinds" in self.settings:
            try:
                unit_kinds(self.settings, len(path))
            except ValueError as exc:
                raise ValueError(f"record {rid!r}: {exc}") from None
        if self.extra:
            if type(self.extra) is not dict:
                if not isinstance(self.extra, Mapping):
                    raise ValueError(f"record {rid!r}: 'extra' must be a dict; got {_short(self.extra)}")
                self.extra = dict(self.extra)
            clash = sorted(str(key) for key in self.extra if key in _JSON_KEYS or not isinstance(key, str))
            if clash:
                raise ValueError(f"record {rid!r}: 'extra' holds keys of the schema or keys that are not str: {clash}")
        elif self.extra is None:
            self.extra = {}

    @property
    def shape(self) -> Tuple[int, int]:
        """``(L, k)`` of the path."""
        return len(self.path), len(self.path[0])

    @classmethod
    def from_dict(cls, record: Mapping[str, Any]) -> "PathRecord":
        """Parse one record dict (any schema version this package reads); a :class:`PathRecord`
        is returned as it is (it was parsed when it was made).

        Older layouts are upgraded first (:func:`upgrade_record`). Raises
        ``ValueError`` naming the record's ``image_id`` when a key of
        :data:`REQUIRED_KEYS` is missing or ``None``, or a field has a bad type or
        shape. Keys outside the schema are not checked; they are kept in
        :attr:`extra`. The record's lists are shared, not copied.
        """
        if type(record) is not dict:
            if isinstance(record, PathRecord):
                return record
            if not isinstance(record, Mapping):
                raise ValueError(f"a record must be a dict; got {type(record).__name__}")
        if record.get("schema") != SCHEMA_VERSION:
            record = upgrade_record(record)
        get = record.get
        if get("image_id") is None:
            raise ValueError(f"a record has no 'image_id' (its keys: {sorted(map(str, record))})")
        extra = None if _JSON_KEYS.issuperset(record) else {k: v for k, v in record.items() if k not in _JSON_KEYS}
        return cls(get("image_id"), get("method"), get("path"), get("target"), get("label"), get("prediction"),
                   get("contributions"), get("jas"), get("delta"), get("scores"), get("refined_layers"),
                   get("settings"), get("model_id"), extra)

    def to_dict(self) -> Dict[str, Any]:
        """The JSON form: ``"schema"``, every field, then the keys of :attr:`extra`, with fresh
        lists and settings."""
        out: Dict[str, Any] = {"schema": SCHEMA_VERSION}
        for key in _KEY_ORDER:
            out[key] = getattr(self, key)
        out["path"] = [list(layer) for layer in self.path]
        for key in ("contributions", "scores"):
            if out[key] is not None:
                out[key] = [list(layer) for layer in out[key]]
        out["settings"] = dict(self.settings)
        if self.extra:
            out.update(copy.deepcopy(self.extra))
        return out

    def _json_form(self) -> Dict[str, Any]:
        """The JSON form without copies, for writing (see :func:`record_json`)."""
        out: Dict[str, Any] = {"schema": SCHEMA_VERSION}
        for key in _KEY_ORDER:
            out[key] = getattr(self, key)
        if self.extra:
            out.update(self.extra)
        return out

    # ------------------------------------------- read-only access as a dict
    def __getitem__(self, key: str) -> Any:
        if key in _FIELD_KEYS:
            return getattr(self, key)
        if key == "schema":
            return SCHEMA_VERSION
        return self.extra[key]

    def get(self, key: str, default: Any = None) -> Any:
        """The value of the JSON key ``key`` (``default`` when the record has no such key)."""
        if key in _FIELD_KEYS:
            return getattr(self, key)
        if key == "schema":
            return SCHEMA_VERSION
        return self.extra.get(key, default)

    def __contains__(self, key: object) -> bool:
        return key in _JSON_KEYS or key in self.extra

    def __iter__(self) -> Iterator[str]:
        yield "schema"
        yield from _KEY_ORDER
        yield from self.extra

    def __len__(self) -> int:
        return len(_JSON_KEYS) + len(self.extra)


RecordLike = Union[Mapping[str, Any], PathRecord]


def as_path_records(records: Iterable[RecordLike]) -> List[PathRecord]:
    """Records as :class:`PathRecord` (dicts are parsed, records kept as they are: the same objects)."""
    from_dict = PathRecord.from_dict
    return [r if isinstance(r, PathRecord) else from_dict(r) for r in records]


class StackedPaths:
    """The shape of paths stacked one row per record: ``len()`` (rows), :attr:`num_layers`,
    :attr:`k` and :attr:`shape`, read from the ``paths`` attribute ``(N, L, k)`` (a numpy
    array or a tensor). The one implementation that :class:`RecordArrays`,
    :class:`~captum_paths.analysis.PathTable` and :class:`~captum_paths.search.PathResult` share.
    """

    __slots__ = ()

    def __len__(self) -> int:
        return int(self.paths.shape[0])

    @property
    def num_layers(self) -> int:
        """``L``, the layers of each path."""
        return int(self.paths.shape[1])

    @property
    def k(self) -> int:
        """Units per layer of each path."""
        return int(self.paths.shape[2])

    @property
    def shape(self) -> Tuple[int, int, int]:
        """``(N, L, k)``: rows, layers, units per layer."""
        n, layers, k = self.paths.shape
        return int(n), int(layers), int(k)


@dataclass
class RecordArrays(StackedPaths):
    """Records stacked into arrays, one row per record, in the given order.

    Attributes:
        paths (ndarray): ``(N, L, k)`` int64 neuron indices.
        contributions (ndarray): ``(N, L, k)`` float64, NaN where a record has none.
        jas (ndarray): ``(N,)`` float64, NaN where absent.
        delta (ndarray): ``(N,)`` float64, NaN where absent.
        scores (ndarray): ``(N, L, k)`` float64, NaN where absent.
        refined_layers (ndarray): ``(N,)`` float64 counts, NaN where absent.
        targets, labels, predictions (list): ``N`` classes each (int or str;
            ``None`` where a record has no label or prediction).
        image_ids (list): ``N`` image ids.
        methods (list): ``N`` method names.
        settings (dict): The settings of the first record.
    """

    paths: np.ndarray
    contributions: np.ndarray
    jas: np.ndarray
    delta: np.ndarray
    scores: np.ndarray
    refined_layers: np.ndarray
    targets: List[Class]
    labels: List[Optional[Class]]
    predictions: List[Optional[Class]]
    image_ids: List[Class]
    methods: List[str]
    settings: Dict[str, Any]


def stack_records(records: Iterable[RecordLike]) -> RecordArrays:
    """Stack records of one path shape ``(L, k)`` into :class:`RecordArrays`.

    Raises ``ValueError`` if ``records`` is empty or the paths differ in shape
    (records of several models or several ``k``).
    """
    recs = as_path_records(records)
    if not recs:
        raise ValueError("records is empty: nothing to stack")
    n = len(recs)
    paths_of = list(map(attrgetter("path"), recs))
    shapes = set(zip(map(len, paths_of), map(len, map(_first, paths_of))))
    if len(shapes) != 1:
        raise ValueError("records hold paths of different shapes (layers or k); analyse records of one "
                         "model and one k at a time")
    (shape,) = shapes
    size = shape[0] * shape[1]
    paths = np.fromiter(chain.from_iterable(chain.from_iterable(paths_of)), dtype=np.int64)
    if paths.size != n * size:  # a path edited after its record was checked
        raise ValueError("a record's path must be L lists of k neuron indices; got a layer of another k")
    paths = paths.reshape(n, *shape)
    if paths.size and paths.min() < 0:
        raise ValueError("records hold negative neuron indices")
    return RecordArrays(
        paths=paths,
        contributions=_stack_optional(recs, "contributions", paths.shape),
        jas=_reals(recs, "jas"),
        delta=_reals(recs, "delta"),
        scores=_stack_optional(recs, "scores", paths.shape),
        refined_layers=_reals(recs, "refined_layers"),
        targets=[r.target for r in recs],
        labels=[r.label for r in recs],
        predictions=[r.prediction for r in recs],
        image_ids=[r.image_id for r in recs],
        methods=[r.method for r in recs],
        settings=dict(recs[0].settings),
    )


def _first(seq: Sequence[Any]) -> Any:
    return seq[0]


def _stack_optional(recs: List[PathRecord], key: str, shape: Tuple[int, ...]) -> np.ndarray:
    """``shape`` float64 of an ``(L, k)`` field, NaN rows where it is absent."""
    out = np.full(shape, np.nan)
    values = list(map(attrgetter(key), recs))
    rows = [i for i, v in enumerate(values) if v is not None]
    if rows:
        flat = np.fromiter(chain.from_iterable(chain.from_iterable(values[i] for i in rows)), dtype=np.float64)
        if flat.size != len(rows) * shape[1] * shape[2]:
            raise ValueError(f"a record's {key!r} must have the shape of its path")
        out[rows] = flat.reshape(len(rows), *shape[1:])
    return out


def _reals(recs: List[PathRecord], key: str) -> np.ndarray:
    """``(N,)`` float64 of a scalar field, NaN where it is absent."""
    nan = float("nan")
    return np.fromiter((nan if v is None else v for v in map(attrgetter(key), recs)), dtype=np.float64,
                       count=len(recs))


# ------------------------------------------------------------------- files
def complete_images(records: Iterable[RecordLike]) -> Tuple[List[str], Dict[str, Dict[str, Any]]]:
    """The sorted ids of the images every method has a record of, and ``{method: {image_id: record}}``."""
    by_method: Dict[str, Dict[str, Any]] = {}
    for r in records:
        by_method.setdefault(r["method"], {})[str(r["image_id"])] = r
    if not by_method:
        return [], by_method
    common = set.intersection(*(set(rows) for rows in by_method.values()))
    return sorted(common), by_method


def record_key(record: RecordLike) -> Tuple[str, str, str]:
    """What a record is the record of: ``(method, image_id, model_id)`` as strings."""
    return str(record.get("method")), str(record.get("image_id")), str(record.get("model_id"))


def unique_records(records: Iterable[RecordLike], source: str = "records") -> List[RecordLike]:
    """``records`` with one record per :func:`record_key` (the first one), in order.

    Duplicates (a run written by two processes at once, before run folders had
    a lock) are dropped with a warning that says how many there were and how
    many disagree with the kept record on the path.
    """
    kept: Dict[Tuple[str, str, str], RecordLike] = {}
    dropped = disagree = 0
    for r in records:
        key = record_key(r)
        first = kept.setdefault(key, r)
        if first is not r:
            dropped += 1
            disagree += first.get("path") != r.get("path")
    if dropped:
        logger.warning("%s: %d duplicate record(s) of the same (method, image, model) ignored, the first kept; "
                       "%d of them disagree with it on the path", source, dropped, disagree)
    return list(kept.values())


def read_records(path: PathLike, unique: bool = True, check: bool = False) -> List[RecordLike]:
    """All complete records of a JSON Lines file (a torn last line is skipped), in the
    current layout (:func:`upgrade_record`), one per (method, image, model) unless
    ``unique=False`` (:func:`unique_records`).

    With ``check`` (as the run pipeline reads: :meth:`Run.records()
    <captum_paths.pipeline.Run.records>`), every record is parsed once
    (:meth:`PathRecord.from_dict`, which checks it) and the :class:`PathRecord` objects
    are returned, for every view to take as they are. Without it, the dicts are returned
    as read, unparsed: the quick read of a file that may hold partial records (resuming
    an extract, merging per-rank files).

    A line that is not a JSON object holding ``image_id`` and ``method`` is a
    ValueError naming the file and the line; with ``check``, so is a record that does
    not fit the schema.
    """
    path = Path(path)
    if not path.exists():
        return []
    records = []
    from_dict = PathRecord.from_dict
    with path.open("r", encoding="utf-8") as fh:
        for number, line in enumerate(fh, 1):
            if not line.endswith("\n"):
                break  # torn write of a killed run
            line = line.strip()
            if not line:
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError(f"a record must be a JSON object; got a JSON {type(record).__name__}")
                if record.get("image_id") is None or record.get("method") is None:
                    raise ValueError(f"a record needs 'image_id' and 'method' (its keys: {sorted(record)})")
                records.append(from_dict(record) if check else upgrade_record(record))
            except ValueError as exc:  # json.JSONDecodeError too
                raise ValueError(f"{path} line {number} is not a valid record: {exc}") from None
    return unique_records(records, str(path)) if unique else records


def record_json(record: RecordLike) -> str:
    """The JSON text of a record (keys sorted, no newline): what the records files hold
    (:func:`append_records`, ``captum-paths merge``) and what a run's records digest hashes."""
    return json.dumps(record._json_form() if isinstance(record, PathRecord) else record, sort_keys=True)


def append_records(path: PathLike, records: Iterable[RecordLike]) -> int:
    """Append records (:class:`PathRecord` or dicts, written as :func:`record_json`) as whole lines,
    flushed and fsynced; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _drop_torn_tail(path)
    lines = [record_json(r) + "\n" for r in records]
    with path.open("a", encoding="utf-8") as fh:
        fh.write("".join(lines))
        fh.flush()
        os.fsync(fh.fileno())
    return len(lines)


def write_text_atomic(path: PathLike, text: str) -> None:
    """Write a whole text file so that readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the mode a plain write would have
        os.fchmod(fd, _plain_write_mode(path))
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _plain_write_mode(path: Path) -> int:
    """The permission bits ``open(path, "w")`` would leave: the existing file's, or
    ``0o666`` less the process umask for a new file."""
    if path.exists():
        return stat.S_IMODE(path.stat().st_mode)
    umask = os.umask(0o022)  # reading the umask means setting it; restored at once
    os.umask(umask)
    return 0o666 & ~umask


def write_json_atomic(path: PathLike, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def _drop_torn_tail(path: Path) -> None:
    if not path.exists() or path.stat().st_size == 0:
        return
    with path.open("rb+") as fh:
        data = fh.read()
        if data.endswith(b"\n"):
            return
        cut = data.rfind(b"\n") + 1
        fh.truncate(cut)


# ---------------------------------------------------------------- run folders
class RunFiles:
    """The names of a run folder's files (:class:`~captum_paths.pipeline.Run`): written here once,
    for the pipeline that writes them and the explorer that reads them."""

    #: The run's settings.
    RUN = "run.json"
    #: One path record per (image, method), JSON Lines.
    RECORDS = "records.jsonl"
    #: Image files extract skipped.
    UNREADABLE = "unreadable.txt"
    #: The writer lock.
    LOCK = ".lock"
    #: The evaluate stage's folder (:class:`EvaluationFiles`).
    EVALUATION = "evaluation"
    #: The analyze stage's folder (:class:`AnalysisFiles`).
    ANALYSIS = "analysis"
    #: The circuits stage's folder (:class:`CircuitFiles`).
    CIRCUITS = "circuits"
    #: The path explorer.
    REPORT = "report.html"
    #: The Markdown summary.
    SUMMARY = "summary.md"


class EvaluationFiles:
    """The names of the files in a run's ``evaluation/`` folder. Tables are written as CSV (these
    names) and as JSON beside them, and figures as ``NAME.png`` and ``NAME.svg``."""

    DEVIATION = "deviation.csv"
    DEVIATION_BY_METHOD = "deviation_by_method.csv"
    JAS = "jas.csv"
    METHODS_SUMMARY = "methods_summary.csv"
    INTERVALS = "intervals.csv"
    COMPARISONS = "comparisons.csv"
    PRUNING = "pruning.csv"
    PRUNING_GRID = "pruning_grid.csv"
    FAITHFULNESS = "faithfulness.csv"
    FAITHFULNESS_SUMMARY = "faithfulness_summary.csv"
    FAITHFULNESS_FEWEST = "faithfulness_fewest.csv"
    #: Settings, images evaluated, timings and the records' digest.
    SUMMARY = "summary.json"


class AnalysisFiles:
    """The names of the files in a run's ``analysis/`` folder (figures as ``NAME.png`` and ``NAME.svg``)."""

    PATH_SHARING = "path_sharing.csv"
    PATH_SHARING_BY_CLASS = "path_sharing_by_class.csv"
    CLASS_SIMILARITY_COSINE = "class_similarity_cosine.csv"
    CLASS_SIMILARITY_JACCARD = "class_similarity_jaccard.csv"
    CONSENSUS_PATHS = "consensus_paths.csv"
    #: The consensus paths as lists per class.
    CONSENSUS_PATH_LISTS = "consensus_paths.json"
    LAYER_SUMMARY = "layer_summary.csv"
    SHARED_CONSENSUS_NEURONS = "shared_consensus_neurons.csv"
    PATH_GRAPH = "path_graph.graphml"
    #: Causal edges: the consecutive path edges of each image drawn, their effects and noise floors.
    CAUSAL_EDGES = "causal_edges.csv"
    #: Causal edges: the share of consecutive path edges above the noise floor, against random pairs.
    CAUSAL_EDGE_SUMMARY = "causal_edge_summary.csv"
    #: The same per (source layer, target layer) pair, with its noise floor.
    CAUSAL_EDGES_BY_LAYER = "causal_edges_by_layer.csv"
    #: The method analysed, the sharing statistics and the records' digest.
    SUMMARY = "summary.json"


class CircuitFiles:
    """The names of the files in a run's ``circuits/`` folder (figure ``circuits.png`` and ``.svg``)."""

    #: Per class, method and circuit (learned strengths, rankings' budgets): units kept and the held-out
    #: target probability and accuracy, with the unablated model's.
    STUDY = "circuit_study.csv"
    #: The same averaged over the classes, per method and strength or budget.
    SUMMARY_TABLE = "circuit_summary.csv"
    #: Per method, the fewest units (share of all) whose circuits keep 80% of the target probability.
    FEWEST = "circuit_fewest.csv"
    #: Units kept per class, strength and layer (and which circuit is shown per class).
    UNITS = "circuit_units.csv"
    #: Per class and method, the share of the class's path units inside its circuit shown.
    OVERLAP = "circuit_overlap.csv"
    #: Per class, causal edges between the strongest units of its circuit shown.
    EDGES = "circuit_edges.csv"
    #: The learned circuits: per class every strength's units and gate logits, and the one shown.
    CIRCUITS = "circuits.json"
    #: Settings, classes, split, timings and the records' digest.
    SUMMARY = "summary.json"


# ------------------------------------------------------------ field checking
def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _class_value(value: Any, key: str, rid: Any) -> Optional[Class]:
    """An int or str (numpy ints become int); ``None`` stays ``None``."""
    if value is None or type(value) is str or type(value) is int:
        return value
    if isinstance(value, numbers.Integral) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str):
        return str(value)
    where = "a record" if rid is None else f"record {rid!r}"
    raise ValueError(f"{where}: {key!r} must be an int or a str; got {_short(value)}")


def _real_value(value: Any, key: str, rid: Any) -> Optional[float]:
    if value is None or type(value) is float or type(value) is int:
        return value
    if isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    raise ValueError(f"record {rid!r}: {key!r} must be a number; got {_short(value)}")


def _as_lists(value: Any) -> Any:
    """numpy arrays and tensors as nested lists; anything else unchanged."""
    tolist = getattr(value, "tolist", None)
    return tolist() if tolist is not None and not isinstance(value, (list, tuple)) else value


def _checked_path(value: Any, rid: Any) -> List[List[int]]:
    """``value`` as ``L >= 1`` lists of ``k >= 1`` non-negative ints (converted only if it is not already)."""
    if _is_plain_path(value):
        return value
    value = _as_lists(value)
    if (not isinstance(value, (list, tuple)) or not value
            or not all(isinstance(layer, (list, tuple)) for layer in value)):
        raise _bad_path(value, rid)
    k = len(value[0])
    if k < 1 or any(len(layer) != k for layer in value):
        raise _bad_path(value, rid)
    for n in chain.from_iterable(value):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral):
            raise _bad_path(value, rid)
        if n < 0:
            raise ValueError(f"record {rid!r} holds negative neuron indices in its path")
    return [[int(n) for n in layer] for layer in value]


def _is_plain_path(value: Any) -> bool:
    """Whether ``value`` already is a non-empty list of equal, non-empty lists of non-negative ints."""
    if type(value) is not list or not value or type(value[0]) is not list:
        return False
    k = len(value[0])
    for layer in value:
        if type(layer) is not list or len(layer) != k:
            return False
        for n in layer:
            if type(n) is not int or n < 0:
                return False
    return k > 0


def _bad_path(value: Any, rid: Any) -> ValueError:
    return ValueError(f"record {rid!r}: a record's path must be L lists of k neuron indices; got {_short(value)}")


def _checked_reals(value: Any, key: str, rid: Any, L: int, k: int) -> List[List[float]]:
    """``value`` as ``L`` lists of ``k`` numbers (converted only if it is not already)."""
    if _is_plain_reals(value, L, k):
        return value
    value = _as_lists(value)
    if (not isinstance(value, (list, tuple)) or len(value) != L
            or not all(isinstance(layer, (list, tuple)) and len(layer) == k for layer in value)):
        raise _bad_reals(value, key, rid, L, k)
    for x in chain.from_iterable(value):
        if isinstance(x, bool) or not isinstance(x, numbers.Real):
            raise _bad_reals(value, key, rid, L, k)
    return [[x if type(x) is float or type(x) is int else float(x) for x in layer] for layer in value]


def _is_plain_reals(value: Any, L: int, k: int) -> bool:
    """Whether ``value`` already is a list of ``L`` lists of ``k`` Python ints or floats."""
    if type(value) is not list or len(value) != L:
        return False
    for layer in value:
        if type(layer) is not list or len(layer) != k:
            return False
        for x in layer:
            if type(x) is not float and type(x) is not int:
                return False
    return True


def _bad_reals(value: Any, key: str, rid: Any, L: int, k: int) -> ValueError:
    return ValueError(f"record {rid!r}: {key!r} must be {L} lists of {k} numbers, "
                      f"the shape of its path; got {_short(value)}")
