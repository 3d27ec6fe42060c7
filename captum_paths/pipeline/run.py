"""A run folder and the :class:`RunFolder` that owns it.

A run folder holds what one model searched on one image folder:

- ``run.json``: the settings (:class:`~captum_paths.pipeline.settings.RunSettings`),
  written before the first record;
- ``records.jsonl``: one path record per (image, method), sorted by
  ``(method, image_id)`` once a run finishes (``records.rank{r}.jsonl`` per rank
  while a ``torchrun`` is under way);
- ``unreadable.txt``: image files that were skipped;
- ``evaluation/``, ``analysis/``: tables, figures and ``summary.json`` of those stages;
- ``report.html`` and ``summary.md``.

:class:`RunFolder` holds the folder's settings, file names, records and stage outputs, and
loads the run's model and images once; it imports no stage. The stages (``extract.py``,
``evaluate.py``, ``analyze.py``, ``report.py``) take a :class:`RunFolder`, and
:class:`captum_paths.pipeline.Run`, a :class:`RunFolder` with the stages as methods, sits
above them. See "Records" in docs/method.md.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

from captum_paths.pipeline.settings import COMPATIBLE_KEYS, RunSettings
from captum_paths.records import (SCHEMA_VERSION, EvaluationFiles, PathRecord, RunFiles, read_records,
                                  record_json, record_key, unique_records, write_text_atomic)

if TYPE_CHECKING:  # pragma: no cover
    import torch
    from torch import nn

    from captum_paths.attribution.layer_baselines import MeanBaseline
    from captum_paths.model.data import ImageFolderDataset
    from captum_paths.model.sites import NeuronSites

__all__ = ["RunFolder", "Run", "check_same_images", "RunMismatchError", "RunLockedError", "run_settings",
           "COMPATIBLE_KEYS", "RUN_FILE", "RECORDS_FILE", "UNREADABLE_FILE", "LOCK_FILE", "RUN_OUTPUTS"]

PathLike = Union[str, os.PathLike]

logger = logging.getLogger(__name__)

# The names of the run folder's files are written once, on the ground floor (records.py), where the explorer
# reads them too.
RUN_FILE = RunFiles.RUN
RECORDS_FILE = RunFiles.RECORDS
UNREADABLE_FILE = RunFiles.UNREADABLE
#: The writer lock (an OS file lock, released when its process ends, even by ``kill -9``).
LOCK_FILE = RunFiles.LOCK


#: What a run writes in its folder besides its records: a folder without ``run.json`` that holds
#: one of these is not made a run folder (its files would be replaced). Records without ``run.json``
#: are refused by :meth:`RunFolder.check` (``--restart`` deletes them).
RUN_OUTPUTS = (UNREADABLE_FILE, RunFiles.EVALUATION, RunFiles.ANALYSIS, RunFiles.CIRCUITS, RunFiles.REPORT,
               RunFiles.SUMMARY)


class RunMismatchError(ValueError):
    """The output folder holds a run with other settings, or its data or model changed."""


class RunLockedError(OSError):
    """Another process is writing to the run folder."""


def run_settings(
    model: str,
    checkpoint: Optional[PathLike] = None,
    pretrained: bool = False,
    num_classes: Optional[int] = None,
    mode: str = "gate",
    n_steps: Optional[int] = None,
    approximation: Optional[str] = None,
    k: int = 1,
    target: str = "label",
    methods: Sequence[str] = ("neuron-path",),
    data: Optional[PathLike] = None,
    label_map: Optional[Union[PathLike, Mapping[str, int]]] = None,
    refine: Optional[Union[int, str]] = None,
    beam: Optional[int] = None,
    random_weights: Optional[int] = None,
    model_args: Optional[Mapping[str, Any]] = None,
    dtype: str = "fp32",
    units: str = "neurons",
) -> Dict[str, Any]:
    """The ``run.json`` object of these settings, unchecked (kept for callers of earlier
    versions): :meth:`RunSettings.create(...).to_json() <captum_paths.pipeline.settings.RunSettings.create>`
    checks them; ``refine`` and ``beam`` are neuron-path's options."""
    options = {key: value for key, value in (("refine", refine), ("beam", beam)) if value is not None}
    return RunSettings(
        model=model, data=_absolute(data), methods=tuple(methods), checkpoint=_absolute(checkpoint),
        pretrained=bool(pretrained), num_classes=num_classes,
        label_map=dict(label_map) if isinstance(label_map, Mapping) else _absolute(label_map),
        random_weights=random_weights, model_args=json.loads(json.dumps(dict(model_args or {}))), k=k,
        n_steps=n_steps, approximation=approximation, mode=mode, target=target,
        method_options={"neuron-path": options} if options else {}, dtype=dtype, units=units,
    ).to_json()


def file_sha256(path: PathLike) -> str:
    """SHA-256 of a file's content, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _absolute(path: Optional[PathLike]) -> Optional[str]:
    return None if path is None else str(Path(path).expanduser().resolve())


class RunFolder:
    """A run folder: its settings, records and stage outputs, and the run's model and images.

    The model, its transform and the image folder are loaded on first use and kept,
    so the stages of one run (``extract``, ``evaluate``, ``analyze``, ``report``) load
    them once between them. :class:`captum_paths.pipeline.Run` adds the stages as methods.

    Args:
        folder: the run folder (created by ``extract``).
        device: where the model runs: ``"cpu"``, ``"cuda"``, ``"cuda:1"`` ...
            Default: ``None``, CUDA when available (``cuda:LOCAL_RANK`` under
            ``torchrun``), else CPU.
    """

    def __init__(self, folder: PathLike, device: Optional[str] = None) -> None:
        if not isinstance(folder, (str, os.PathLike)):
            raise TypeError(f"folder must be a path; got {type(folder).__name__}")
        self.folder = Path(folder)
        self._device = device
        self._resolved = False
        self._settings: Optional[RunSettings] = None
        self._settings_json: Optional[Dict[str, Any]] = None
        self._model: Optional["nn.Module"] = None
        self._transform = None
        self._dataset: Optional["ImageFolderDataset"] = None
        self._scanned: Optional["ImageFolderDataset"] = None
        self._loaded_from: Optional[Dict[str, Any]] = None  # the settings the model and images came from
        self._baseline: Optional[Tuple[Any, ...]] = None  # (settings it was drawn for, MeanBaseline)
        self._lock_depth = 0
        #: The file descriptor of the held lock (``None`` when not held): processes forked while it is
        #: held (data loader workers) close it, so that the lock dies with this process alone.
        self.lock_fd: Optional[int] = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.folder)!r})"

    # ------------------------------------------------------------------ files
    @property
    def run_file(self) -> Path:
        return self.folder / RUN_FILE

    @property
    def records_file(self) -> Path:
        return self.folder / RECORDS_FILE

    @property
    def unreadable_file(self) -> Path:
        return self.folder / UNREADABLE_FILE

    @property
    def evaluation_dir(self) -> Path:
        return self.folder / RunFiles.EVALUATION

    @property
    def analysis_dir(self) -> Path:
        return self.folder / RunFiles.ANALYSIS

    @property
    def circuits_dir(self) -> Path:
        return self.folder / RunFiles.CIRCUITS

    @property
    def report_file(self) -> Path:
        return self.folder / RunFiles.REPORT

    @property
    def summary_file(self) -> Path:
        return self.folder / RunFiles.SUMMARY

    def rank_file(self, rank: int, world_size: int) -> Path:
        """The file rank ``rank`` appends its records to (``records.jsonl`` in a world of one)."""
        return self.records_file if world_size == 1 else self.folder / f"records.rank{rank}.jsonl"

    def record_files(self) -> List[Path]:
        """``records.jsonl`` and every per-rank ``records.rank{r}.jsonl`` that exist."""
        files = [self.records_file] if self.records_file.exists() else []
        return files + sorted(self.folder.glob("records.rank*.jsonl"))

    # --------------------------------------------------------------- settings
    def read_run_settings(self) -> Optional[RunSettings]:
        """The settings in ``run.json``, upgraded to the current layout (``None`` when there is none)."""
        if not self.run_file.exists():
            return None
        try:
            settings = json.loads(self.run_file.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise RunMismatchError(f"{self.run_file} is not valid JSON ({exc}); use --restart to start over") from exc
        if not isinstance(settings, dict):
            raise RunMismatchError(f"{self.run_file} holds a JSON {type(settings).__name__}, not the object of "
                                   "settings extract writes; use --restart to start over")
        schema = settings.get("schema", 1)
        if isinstance(schema, bool) or not isinstance(schema, int) or not 1 <= schema <= SCHEMA_VERSION:
            raise RunMismatchError(f"{self.run_file} has schema {schema!r}; this captum_paths reads schemas 1 to "
                                   f"{SCHEMA_VERSION} (a newer version wrote it, or it was edited)")
        try:
            return RunSettings.from_json(settings)
        except (TypeError, ValueError) as exc:
            raise RunMismatchError(f"{self.run_file}: {exc}; was it edited? Use --restart to start over") from None

    def read_settings(self) -> Optional[Dict[str, Any]]:
        """The settings in ``run.json`` in the current layout, as JSON (``None`` when there is none)."""
        settings = self.read_run_settings()
        return None if settings is None else settings.to_json()

    @property
    def run_settings(self) -> RunSettings:
        """The run's settings (``run.json``), read once; an error names the command that writes them."""
        if self._settings is None:
            if not self.folder.is_dir():
                raise FileNotFoundError(f"run folder {str(self.folder)!r} does not exist; "
                                        "create it with `captum-paths extract`")
            settings = self.read_run_settings()
            if settings is None:
                raise FileNotFoundError(f"run folder {str(self.folder)!r} has no {RUN_FILE}; "
                                        "create it with `captum-paths extract`")
            self._settings, self._settings_json = settings, None
        return self._settings

    @property
    def settings(self) -> Dict[str, Any]:
        """:attr:`run_settings` as the ``run.json`` object (``run.settings["model"]``)."""
        settings = self.run_settings
        if self._settings_json is None:
            self._settings_json = settings.to_json()
        return self._settings_json

    def check(self, settings: RunSettings) -> Optional[RunSettings]:
        """The folder's settings, or ``None`` for a new folder; :class:`RunMismatchError`
        when the folder holds records of a run with other settings (another identity:
        :meth:`RunSettings.differences <captum_paths.pipeline.settings.RunSettings.differences>`)."""
        old = self.read_run_settings()
        if old is None:
            if self.record_files():
                raise RunMismatchError(f"output folder {str(self.folder)!r} holds records but no {RUN_FILE}; "
                                       "use another --out or --restart")
            return None
        diff = old.differences(settings)
        if diff:
            raise RunMismatchError(
                f"output folder {str(self.folder)!r} belongs to another run ({'; '.join(diff)}); "
                "use another --out, or --restart to delete its records"
            )
        return old

    def adopt(self, settings: RunSettings) -> None:
        """Use ``settings`` for a run being created (before ``run.json`` is written); the
        model and images loaded for other settings are dropped."""
        if self._loaded_from is not None and self._loaded_from != settings.load_settings():
            self._model = self._transform = self._dataset = self._scanned = None
            self._loaded_from = None
        self._settings, self._settings_json = settings, None

    def clear(self) -> None:
        """Delete the folder's records and settings, and the stage outputs made from them
        (``evaluation/``, ``analysis/``, ``circuits/``, ``report.html``, ``summary.md``); other files stay."""
        for file in self.record_files() + [self.run_file, self.unreadable_file, self.report_file, self.summary_file]:
            if file.exists():
                file.unlink()
        for folder in self._stage_dirs():
            if folder.is_dir():
                shutil.rmtree(folder)
        self._settings = self._settings_json = None

    def check_output(self, data: Optional[PathLike] = None, own: Sequence[str] = ()) -> None:
        """``ValueError`` when the folder cannot become (or stay) this run's folder without
        touching files that are not the run's: the folder is a file, is or lies inside the
        data folder ``data``, or, having no ``run.json``, holds files a run writes
        (:data:`RUN_OUTPUTS` and the names in ``own``) that a stage would replace."""
        out = self.folder
        if out.exists() and not out.is_dir():
            raise ValueError(f"output folder {str(out)!r} is a file")
        if data is not None:
            from captum_paths.model.data import within

            if within(os.path.realpath(out), os.path.realpath(data)):
                raise ValueError(f"--out {str(out)!r} is inside the data folder {str(data)!r}: the run's files would "
                                 "change the data; use an output folder outside it")
        if out.is_dir() and not self.run_file.exists():
            found = sorted(name for name in (*RUN_OUTPUTS, *own) if (out / name).exists())
            if found:
                raise ValueError(f"output folder {str(out)!r} has no {RUN_FILE} but holds {', '.join(found)}, which "
                                 "a run would replace; move them, or use another --out")

    # ---------------------------------------------------------------- records
    def records(self) -> List[PathRecord]:
        """The records of ``records.jsonl``, parsed once (:class:`~captum_paths.records.PathRecord`, which
        also reads like the record's dict) and checked against the run; an error says how to make them.

        :class:`RunMismatchError` when a record does not belong to this run: another
        model, ``k`` or mode than ``run.json`` names, an image that is not in the data
        folder, or a label that is not its image's (checked when the data folder is here).
        """
        settings = self.settings  # a missing folder or run.json is named first
        del settings
        records = read_records(self.records_file, check=True)
        if not records:
            raise ValueError(f"run folder {str(self.folder)!r} has no records in {RECORDS_FILE}; run "
                             "`captum-paths extract` (or `captum-paths merge` after a torchrun that stopped early)")
        self._check_records(records, RECORDS_FILE)
        self._check_images(records)
        return records

    def records_digest(self, records: Sequence[Mapping[str, Any]]) -> str:
        """SHA-256 of ``records`` in their merged form: what a stage's outputs were made from
        (``records_sha256`` in their ``summary.json``), so that the report can tell stale ones."""
        digest = hashlib.sha256()
        for record in sorted(records, key=record_key):
            digest.update((record_json(record) + "\n").encode())
        return digest.hexdigest()

    def stale(self, folder: Path, records: Sequence[Mapping[str, Any]], digest: Optional[str] = None) -> bool:
        """Whether the stage outputs in ``folder`` were made from other records than ``records``
        (their ``summary.json`` names a ``records_sha256``; outputs of older versions name none
        and are taken as current). ``digest``: :meth:`records_digest` of ``records`` when the
        caller has it already."""
        try:  # evaluation/ and analysis/ name their summary alike
            summary = json.loads((folder / EvaluationFiles.SUMMARY).read_text(encoding="utf-8"))
            made_from = summary.get("records_sha256")
        except (OSError, ValueError, AttributeError):
            return False
        return made_from is not None and made_from != (digest or self.records_digest(records))

    def _check_records(self, records: Sequence[Mapping[str, Any]], source: str) -> None:
        """:class:`RunMismatchError` when a record of ``source`` was made with another model, ``k``,
        mode or kind of unit than ``run.json`` names."""
        s = self.settings
        units = s.get("units", "neurons")
        for record in records:
            rs = record.get("settings") or {}
            found = {"model": record.get("model_id"), "k": rs.get("k"), "mode": rs.get("mode")}
            bad = [f"{key} {value!r} (run.json: {s.get(key)!r})" for key, value in found.items()
                   if value is not None and s.get(key) is not None and value != s.get(key)]
            if rs.get("ablation", "zero") != s.get("ablation", "zero"):
                bad.append(f"ablation {rs.get('ablation', 'zero')!r} (run.json: {s.get('ablation', 'zero')!r})")
            kinds = set(rs.get("kinds") or ["neuron"])
            if (units == "neurons" and kinds != {"neuron"}) or (units == "heads" and kinds != {"head"}):
                bad.append(f"units {sorted(kinds)} (run.json: {units!r})")
            if bad:
                raise RunMismatchError(
                    f"{source} of run {str(self.folder)!r} holds a record of another run (image "
                    f"{record.get('image_id')!r}, method {record.get('method')!r}: {'; '.join(bad)}); were the "
                    f"records or {RUN_FILE} edited? Extract a new run"
                )

    def _check_images(self, records: Sequence[Mapping[str, Any]]) -> None:
        """:class:`RunMismatchError` when a record names an image that is not in the data folder, or
        a label other than its image's (skipped, with a note in the log, when the folder is not here)."""
        data = self.settings.get("data")
        if data is None or not os.path.isdir(data):
            return
        try:
            folder = self._folder()
        except (ValueError, OSError) as exc:
            logger.warning("records of %s not checked against the data folder: %s", self.folder, exc)
            return
        from captum_paths.model.data import within

        labels = {image_id: label for image_id, label in zip(folder.image_ids, folder.targets)}
        unreadable = {Path(p).relative_to(folder.root).as_posix() for p, _ in folder.unreadable
                      if within(str(p), str(folder.root))}
        for record in records:
            image_id, label = str(record["image_id"]), record.get("label")
            if image_id not in labels:
                if image_id in unreadable:
                    continue
                raise RunMismatchError(f"{RECORDS_FILE} of run {str(self.folder)!r} has a record of image {image_id!r}, "
                                       f"which is not in the data folder {data!r}; were the records edited?")
            if label is not None and label != labels[image_id]:
                raise RunMismatchError(f"{RECORDS_FILE} of run {str(self.folder)!r} labels image {image_id!r} "
                                       f"{label!r}, but its class folder has index {labels[image_id]!r}; were the "
                                       "records edited?")

    def check_units(self, records: Sequence[Mapping[str, Any]]) -> None:
        """``ValueError`` when a record's path does not fit the run's sites: another number of
        layers, or a unit index at or past its layer's width. Skipped with a warning when the
        run's model cannot be loaded here (a checkpoint that is not on this machine)."""
        from captum_paths.model.loading import ModelLoadError

        try:
            sites = self.sites()
        except (ModelLoadError, OSError) as exc:
            logger.warning("the paths of %s are not checked against the model's units: %s", self.folder, exc)
            return
        widths = sites.widths
        for record in records:
            path = record["path"]
            if len(path) != len(sites):
                raise RunMismatchError(f"{RECORDS_FILE} of run {str(self.folder)!r}: the path of image "
                                       f"{record['image_id']!r} ({record['method']}) has {len(path)} layers, the "
                                       f"model's sites {len(sites)}; were the records edited?")
            if widths is None:
                continue
            for layer, (units, width) in enumerate(zip(path, widths)):
                over = [u for u in units if u >= width]
                if over:
                    raise RunMismatchError(
                        f"{RECORDS_FILE} of run {str(self.folder)!r}: the path of image {record['image_id']!r} "
                        f"({record['method']}) holds unit {over[0]} in layer {layer}, which has {width}; were "
                        "the records edited?")

    def merge(self) -> List[Dict[str, Any]]:
        """Merge every record file into ``records.jsonl``, one record per (method, image, model);
        returns the merged records (the dicts as read: a shard may hold partial records).

        Duplicates are dropped with a warning (:func:`~captum_paths.records.unique_records`).
        Records are sorted by ``(method, image_id)``; the merged file is written
        atomically before the per-rank files are deleted, so an interrupted merge
        loses nothing.
        """
        with self.lock():  # no extract appends while the files are merged
            files = self.record_files()
            if not files:  # nothing to merge: an empty records.jsonl would block extract in a folder without run.json
                return []
            read = {file: read_records(file, unique=False) for file in files}
            if self.read_settings() is not None:  # a shard of another run is refused before anything is written
                for file, part in read.items():
                    self._check_records(part, file.name)
            records = unique_records((r for part in read.values() for r in part), f"run folder {str(self.folder)!r}")
            records.sort(key=record_key)
            write_text_atomic(self.records_file, "".join(record_json(r) + "\n" for r in records))
            for file in files:
                if file.name != RECORDS_FILE:
                    file.unlink()
        return records

    # ------------------------------------------------- the run's model and images
    @property
    def device(self) -> str:
        """The device the run's model is on (resolved on first use)."""
        from captum_paths.pipeline.distributed import default_device

        if not self._resolved:  # "cuda" becomes cuda:LOCAL_RANK; a device this machine lacks is refused
            self._device = default_device(self._device, int(os.environ.get("LOCAL_RANK", "0")))
            self._resolved = True
        return self._device

    def model(self) -> "nn.Module":
        """The run's model in eval mode on :attr:`device`, loaded once."""
        if self._model is None:
            from captum_paths.model.loading import has_random_weights, load_model

            s = self.settings
            if s.get("random_weights") is None and has_random_weights(s["model"], bool(s.get("pretrained")),
                                                                      s.get("checkpoint")):
                raise RunMismatchError(
                    f"{RUN_FILE} of run {str(self.folder)!r} names model {s['model']!r} without pretrained weights, "
                    "a checkpoint or a random-weights seed: a different random network on every load, not the one "
                    "the records were made with; was run.json edited?")
            self._check_file(s.get("checkpoint"), s.get("checkpoint_sha256"), "checkpoint")
            classnames = self._folder().class_names() if s.get("data") is not None else None
            self._model, self._transform = load_model(
                s["model"], pretrained=bool(s.get("pretrained")), checkpoint=s.get("checkpoint"),
                num_classes=s.get("num_classes"), device=self.device, random_weights=s.get("random_weights"),
                classnames=classnames, **(s.get("model_args") or {}),
            )
            self._loaded_from = self.run_settings.load_settings()
            self._check_weights(self._model)
        return self._model

    def layer_baselines(self) -> Optional["MeanBaseline"]:
        """The value the run's removed units take (``ablation`` in ``run.json``): ``None`` for zero;
        for ``"mean"`` a :class:`~captum_paths.attribution.layer_baselines.MeanBaseline` over
        ``ablation_images`` reference images of the run's data folder, drawn by a permutation of
        its sorted image ids seeded with ``ablation_seed`` (unreadable images are passed over),
        built once. The means are computed on first use, on :attr:`device`."""
        import torch

        from captum_paths.attribution.layer_baselines import MeanBaseline
        from captum_paths.model.data import UnreadableImageError

        s = self.run_settings
        if s.ablation == "zero":
            return None
        key = (s.ablation, s.ablation_images, s.ablation_seed, s.data)
        if self._baseline is None or self._baseline[0] != key:
            dataset = self.dataset()
            order = sorted(range(len(dataset)), key=lambda i: dataset.image_ids[i])
            drawn = torch.randperm(len(order), generator=torch.Generator().manual_seed(s.ablation_seed))
            images, ids = [], []
            for i in drawn.tolist():
                try:
                    image = dataset[order[i]][0]
                except UnreadableImageError:
                    continue
                images.append(image)
                ids.append(dataset.image_ids[order[i]])
                if len(images) == s.ablation_images:
                    break
            if not images:
                raise ValueError(f"ablation='mean': no readable image in {s.data!r} to average over")
            baseline = MeanBaseline(torch.stack(images).to(self.device), image_ids=ids)
            self._baseline = (key, baseline)
        return self._baseline[1]

    def sites(self) -> "NeuronSites":
        """The sites of the run's units (``units`` in ``run.json``): the model's FFN neurons, its
        attention heads, or both interleaved block by block."""
        from captum_paths.model.sites import NeuronSites

        return NeuronSites.for_units(self.model(), self.run_settings.units)

    def transform(self):
        """The model's preprocessing (PIL image -> ``(C, H, W)`` tensor)."""
        self.model()
        return self._transform

    def _folder(self) -> "ImageFolderDataset":
        """The run's image folder, scanned and checked once, without a transform yet."""
        if self._scanned is None:
            from captum_paths.model.data import ImageFolderDataset

            s = self.settings
            if s.get("data") is None:
                raise ValueError(f"{RUN_FILE} of {str(self.folder)!r} names no data folder; this stage needs "
                                 "the run's images")
            if isinstance(s.get("label_map"), str):
                self._check_file(s["label_map"], s.get("label_map_sha256"), "label map")
            dataset = ImageFolderDataset(s["data"], transform=None, label_map=s.get("label_map"))
            recorded = s.get("data_fingerprint")
            if recorded is not None and dataset.fingerprint() != recorded:
                raise RunMismatchError(
                    f"the data folder {s['data']!r} changed since run {str(self.folder)!r} was extracted (other "
                    "class folders, images or file sizes); restore it, or extract a new run"
                )
            self._scanned = dataset
        return self._scanned

    def dataset(self) -> "ImageFolderDataset":
        """The run's image folder with the model's transform, scanned once."""
        if self._dataset is None:
            dataset = self._folder()  # the folder is checked before the model loads
            dataset.transform = self.transform()
            self._dataset = dataset
            self._loaded_from = self.run_settings.load_settings()
        return self._dataset

    def images(self, image_ids: Sequence[str]) -> Tuple["torch.Tensor", "torch.Tensor"]:
        """``(images (N, C, H, W), labels (N,))`` of recorded images, on the CPU."""
        import torch

        dataset = self.dataset()
        where = {image_id: i for i, image_id in enumerate(dataset.image_ids)}
        missing = [i for i in image_ids if i not in where]
        if missing:
            raise ValueError(f"{len(missing)} recorded images are not in the data folder "
                             f"{self.settings['data']!r} (e.g. {missing[0]!r})")
        items = [dataset[where[i]] for i in image_ids]
        return torch.stack([x for x, _, _ in items]), torch.tensor([y for _, y, _ in items])

    def _check_file(self, path: Optional[str], recorded: Optional[str], what: str) -> None:
        """:class:`RunMismatchError` when the file ``path`` no longer has the content hash ``recorded``
        (the checkpoint or label map the run was extracted with)."""
        if path is None or recorded is None or not os.path.isfile(path):
            return  # nothing recorded (an older run folder), or the loader names the missing file
        if file_sha256(path) != recorded:
            raise RunMismatchError(
                f"the {what} {path!r} changed since run {str(self.folder)!r} was extracted (its content hash "
                "differs); restore it, or extract a new run"
            )

    def _check_weights(self, model: "nn.Module") -> None:
        recorded = self.settings.get("weights_sha256")
        if recorded is None:
            return
        from captum_paths.model.loading import weights_fingerprint

        if weights_fingerprint(model) != recorded:
            raise RunMismatchError(
                f"the random weights drawn now from seed {self.settings.get('random_weights')} differ from those "
                f"run {str(self.folder)!r} searched (another torch version or device?); save the model with "
                "torch.save(model.state_dict(), path) and pass it as --checkpoint"
            )

    # ------------------------------------------------------------ one writer
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run folder's writer lock for the block (re-entrant within this :class:`Run`).

        The lock is an OS file lock on ``RUN/.lock``: a second writer (another
        ``extract``, ``merge``, ``evaluate``, ``analyze`` or ``report`` on the same
        folder) gets :class:`RunLockedError` naming the holder; the lock dies with
        its process. Taking it also tidies what a killed writer left: temporary
        files of atomic writes and half-swapped stage folders.
        """
        if self._lock_depth:
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.folder / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            _flock(fd, self.folder)
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "since": time.strftime("%Y-%m-%d %H:%M:%S"),
                      "command": " ".join(sys.argv)}
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(holder).encode(), 0)
            self._tidy()
            self._lock_depth, self.lock_fd = 1, fd
            try:
                yield
            finally:
                self._lock_depth, self.lock_fd = 0, None
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing releases the lock

    def _tidy(self) -> None:
        """Remove what a killed writer left (the lock is held): temporary files, half-swapped folders."""
        for folder in (self.folder, *self._stage_dirs()):
            if folder.is_dir():
                for tmp in folder.glob(".*.tmp"):
                    tmp.unlink()
        for final in self._stage_dirs():
            new, old = _swap_names(final)
            if new.exists():
                shutil.rmtree(new)
            if old.exists():
                if final.exists():
                    shutil.rmtree(old)
                else:  # killed between the two renames of a swap: the old outputs come back
                    os.replace(old, final)

    def _stage_dirs(self) -> Tuple[Path, ...]:
        """The folders the stages replace as a whole."""
        return self.evaluation_dir, self.analysis_dir, self.circuits_dir

    @contextlib.contextmanager
    def replacing(self, final: Path) -> Iterator[Path]:
        """A fresh folder for a stage's outputs that replaces ``final`` when the block succeeds.

        Readers see the old folder or the new one, never a mix: the outputs are
        written into ``.NAME.new`` and swapped in by two renames (a writer killed
        between them is repaired by the next :meth:`lock`). On an error the old
        folder stays and the new one is removed.
        """
        new, old = _swap_names(final)
        if new.exists():
            shutil.rmtree(new)
        new.mkdir(parents=True)
        try:
            yield new
        except BaseException:
            shutil.rmtree(new, ignore_errors=True)
            raise
        if old.exists():
            shutil.rmtree(old)
        if final.exists():
            os.replace(final, old)
        os.replace(new, final)
        shutil.rmtree(old, ignore_errors=True)


#: The folder features under their earlier name (type annotations of the stages);
#: :class:`captum_paths.pipeline.Run` is the one with the stages as methods.
Run = RunFolder


def check_same_images(a: RunFolder, b: RunFolder, image_ids: Sequence[str]) -> None:
    """:class:`RunMismatchError` when the image files of ``image_ids`` in ``a``'s and ``b``'s data
    folders differ (in size, else in content): records of the same ids are then records of
    other pictures. Runs on one data folder pass at once; a data folder that is not here is
    named in a warning, and its pictures are not compared."""
    folders = [run.settings.get("data") for run in (a, b)]
    if None in folders or os.path.realpath(folders[0]) == os.path.realpath(folders[1]):
        return
    missing = [folder for folder in folders if not os.path.isdir(folder)]
    if missing:
        logger.warning("the data folder %s is not here: the pictures behind the image ids of %s and %s are not "
                       "compared", missing[0], a.folder, b.folder)
        return
    from captum_paths.model.data import within

    differ = []
    for image_id in image_ids:
        files = [Path(folder) / str(image_id) for folder in folders]
        if not all(within(os.path.realpath(f), os.path.realpath(d)) and f.is_file() for f, d in zip(files, folders)):
            differ.append(image_id)
        elif files[0].stat().st_size != files[1].stat().st_size or file_sha256(files[0]) != file_sha256(files[1]):
            differ.append(image_id)
    if differ:
        raise RunMismatchError(
            f"{len(differ)} of the {len(image_ids)} images the runs share by id are other pictures (or missing) in "
            f"{folders[0]!r} and {folders[1]!r} (e.g. {differ[0]!r}); compare runs of the same images"
        )


def _swap_names(final: Path) -> Tuple[Path, Path]:
    return final.with_name(f".{final.name}.new"), final.with_name(f".{final.name}.old")


def _flock(fd: int, folder: Path) -> None:
    """Take the exclusive lock on ``fd`` without waiting; :class:`RunLockedError` names the holder."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no OS lock to take
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        try:
            holder = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
        except ValueError:
            holder = {}
        who = (f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('since')} "
               f"({holder.get('command')})") if holder else "another process"
        raise RunLockedError(f"run folder {str(folder)!r} is being written by {who}; wait for it to finish or "
                             "stop it, or use another folder") from None
