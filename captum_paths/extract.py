"""Run path methods over a set of images and append their records.

See "Records" in docs/method.md.

:func:`extract_paths` is resumable: images whose (image_id, method) record is
already in the output file are skipped, and records are appended per batch, so
a stopped run continues where it stopped and never writes an image twice.
"""
from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from captum_paths.models import to_logits
from captum_paths.records import SCHEMA_VERSION, append_records, read_records, write_json_atomic, write_text_atomic
from captum_paths.search.registry import create_path_method

__all__ = ["extract_paths", "extract_run", "merge_records", "read_run", "check_run", "RunMismatchError"]

logger = logging.getLogger(__name__)


def extract_paths(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    image_ids: Sequence[str],
    out_file: Union[str, Path],
    methods: Sequence[str] = ("neuron-path",),
    target: str = "label",
    batch_size: int = 32,
    model_id: Optional[str] = None,
    progress: bool = True,
    **attribute_kwargs: Any,
) -> List[Dict[str, Any]]:
    """Find paths for ``images`` with every method and append records to ``out_file``.

    Args:
        images (Tensor): ``(N, C, H, W)`` preprocessed images.
        labels (Tensor): ``(N,)`` ground-truth classes.
        image_ids (sequence of str): ``N`` stable ids, the resume key.
        target (str): ``"label"`` explains the ground truth, ``"pred"`` the prediction.
        attribute_kwargs: passed to every method's ``attribute`` (k, n_steps, mode, ...).

    Returns:
        The records of every image and method, old and new, in file order.
    """
    if target not in ("label", "pred"):
        raise ValueError(f"target must be 'label' or 'pred'; got {target!r}")
    if len(images) != len(labels) or len(images) != len(image_ids):
        raise ValueError(
            f"images, labels and image_ids must have the same length; got {len(images)}, {len(labels)}, {len(image_ids)}"
        )
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int; got {batch_size!r}")
    device = next(model.parameters()).device
    done = {(r["image_id"], r["method"]) for r in read_records(out_file)}
    for name in methods:
        search = create_path_method(name, model)
        todo = [i for i, image_id in enumerate(image_ids) if (image_id, name) not in done]
        if len(todo) < len(image_ids):
            logger.info("%s: %d of %d images already done, resuming", name, len(image_ids) - len(todo), len(image_ids))
        bar = tqdm(total=len(todo), desc=name, unit="img", disable=not progress)
        for start in range(0, len(todo), batch_size):
            index = todo[start : start + batch_size]
            records = _search_batch(search, images[index].to(device), labels[index].to(device),
                                    [image_ids[i] for i in index], target, model_id, attribute_kwargs)
            append_records(out_file, records)
            bar.update(len(index))
        bar.close()
    return read_records(out_file)


# ---------------------------------------------------------------------------------- run folders

#: Settings that must match for records to share a run folder.
COMPATIBLE_KEYS = ("model", "checkpoint", "pretrained", "num_classes", "mode", "steps", "approximation", "k", "target",
                   "refine", "beam")
RUN_FILE = "run.json"
RECORDS_FILE = "records.jsonl"
UNREADABLE_FILE = "unreadable.txt"


class RunMismatchError(ValueError):
    """The output folder holds a run with other settings."""


def run_settings(
    model: str,
    checkpoint: Optional[Union[str, Path]] = None,
    pretrained: bool = False,
    num_classes: Optional[int] = None,
    mode: str = "gate",
    steps: Optional[int] = None,
    approximation: Optional[str] = None,
    k: int = 1,
    target: str = "label",
    methods: Sequence[str] = ("neuron-path",),
    data: Optional[Union[str, Path]] = None,
    label_map: Optional[Union[str, Path]] = None,
    refine: Optional[Union[int, str]] = None,
    beam: Optional[int] = None,
) -> Dict[str, Any]:
    """The settings a run folder records in ``run.json`` (paths made absolute)."""
    return {
        "schema": SCHEMA_VERSION,
        "refine": refine,
        "beam": beam,
        "model": model,
        "checkpoint": None if checkpoint is None else str(Path(checkpoint).expanduser().resolve()),
        "pretrained": bool(pretrained),
        "num_classes": num_classes,
        "mode": mode,
        "steps": steps,
        "approximation": approximation,
        "k": k,
        "target": target,
        "methods": list(methods),
        "data": None if data is None else str(Path(data).expanduser().resolve()),
        "label_map": None if label_map is None else str(label_map),
    }


def read_run(out: Union[str, Path]) -> Optional[Dict[str, Any]]:
    """The settings of the run folder ``out`` (``None`` when it has none)."""
    file = Path(out) / RUN_FILE
    if not file.exists():
        return None
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise RunMismatchError(f"{file} is not valid JSON ({exc}); use --restart to start over") from exc


def check_run(out: Union[str, Path], settings: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """Raise :class:`RunMismatchError` when ``out`` holds records of a run with other settings."""
    out = Path(out)
    old = read_run(out)
    if old is None:
        if record_files(out):
            raise RunMismatchError(
                f"output folder {str(out)!r} holds records but no {RUN_FILE}; use another --out or --restart"
            )
        return None
    diff = [f"{key}: {old.get(key)!r} there, {settings.get(key)!r} here"
            for key in COMPATIBLE_KEYS if old.get(key) != settings.get(key)]
    if diff:
        raise RunMismatchError(
            f"output folder {str(out)!r} belongs to another run ({'; '.join(diff)}); "
            "use another --out, or --restart to delete its records"
        )
    return old


def clear_run(out: Union[str, Path]) -> None:
    """Delete the records and settings of the run folder ``out`` (other files stay)."""
    out = Path(out)
    for file in record_files(out) + [out / RUN_FILE, out / UNREADABLE_FILE]:
        if file.exists():
            file.unlink()


def record_files(out: Union[str, Path]) -> List[Path]:
    """``records.jsonl`` and every per-rank ``records.rank{r}.jsonl`` in ``out``."""
    out = Path(out)
    files = [out / RECORDS_FILE] if (out / RECORDS_FILE).exists() else []
    return files + sorted(out.glob("records.rank*.jsonl"))


def merge_records(out: Union[str, Path]) -> List[Dict[str, Any]]:
    """Merge every record file of ``out`` into ``records.jsonl``, one record per (method, image_id).

    Records are sorted by ``(method, image_id)``; the merged file is written atomically
    before the per-rank files are deleted, so an interrupted merge loses nothing.
    """
    out = Path(out)
    files = record_files(out)
    merged: Dict[Tuple[str, str], Dict[str, Any]] = {}
    for file in files:
        for r in read_records(file):
            merged.setdefault((r["method"], str(r["image_id"])), r)
    records = [merged[key] for key in sorted(merged)]
    write_text_atomic(out / RECORDS_FILE, "".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
    for file in files:
        if file.name != RECORDS_FILE:
            file.unlink()
    return records


def _model_classes(model: nn.Module, example: torch.Tensor) -> int:
    with torch.no_grad():
        return int(to_logits(model(example.unsqueeze(0))).shape[-1])


def extract_run(
    model: str,
    data: Union[str, Path],
    out: Union[str, Path],
    methods: Sequence[str] = ("neuron-path",),
    checkpoint: Optional[Union[str, Path]] = None,
    pretrained: bool = False,
    num_classes: Optional[int] = None,
    label_map: Optional[Union[str, Path]] = None,
    k: int = 1,
    steps: Optional[int] = None,
    approximation: Optional[str] = None,
    mode: str = "gate",
    target: str = "label",
    batch_size: int = 32,
    device: Optional[str] = None,
    limit: Optional[int] = None,
    restart: bool = False,
    progress: bool = True,
    refine: Optional[Union[int, str]] = None,
    beam: Optional[int] = None,
) -> Dict[str, Any]:
    """Find paths for every image of an image folder; records go to the run folder ``out``.

    ``refine`` and ``beam`` go to the methods that take them (``neuron-path``);
    ``None`` keeps each method's default.

    The run folder holds ``run.json`` (the settings), ``records.jsonl`` (one record
    per image and method, sorted by ``(method, image_id)`` once the run
    finishes) and ``unreadable.txt`` (skipped files). Rerunning resumes; other
    settings are refused unless ``restart``. Under ``torchrun`` (``WORLD_SIZE > 1``) image ``i`` of the sorted
    image ids goes to rank ``i % world_size``, each rank appends to
    ``records.rank{r}.jsonl`` and rank 0 merges them after a barrier.

    Returns:
        A summary dict: ``images``, ``new_records``, ``records``, ``unreadable``,
        ``seconds``, ``out``, ``world_size``.
    """
    from captum_paths.data import ImageFolderDataset
    from captum_paths.distributed import all_ok, barrier, default_device, init_distributed, shutdown_distributed
    from captum_paths.models import load_model
    from captum_paths.search.registry import get_path_method

    start = time.perf_counter()
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ValueError("give at least one path method")
    for name in methods:
        get_path_method(name)
    if target not in ("label", "pred"):
        raise ValueError(f"target must be 'label' or 'pred'; got {target!r}")
    if mode not in ("gate", "paper"):
        raise ValueError(f"mode must be 'gate' or 'paper'; got {mode!r}")
    for name, value in (("k", k), ("batch_size", batch_size), ("steps", steps), ("limit", limit)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise ValueError(f"{name} must be a positive int; got {value!r}")
    out = Path(out)
    if refine is not None and refine != "all" and (isinstance(refine, bool) or not isinstance(refine, int) or refine < 0):
        raise ValueError(f"refine must be a non-negative int or 'all'; got {refine!r}")
    if beam is not None and (isinstance(beam, bool) or not isinstance(beam, int) or beam < 1):
        raise ValueError(f"beam must be a positive int; got {beam!r}")
    settings = run_settings(model, checkpoint, pretrained, num_classes, mode, steps, approximation, k, target,
                            methods, data, label_map, refine, beam)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output folder {str(out)!r} is a file")
    old = None if restart else check_run(out, settings)
    if old is not None:
        settings["methods"] = list(dict.fromkeys(old.get("methods", []) + methods))

    dataset = ImageFolderDataset(data, transform=None, label_map=label_map)
    device = default_device(device, int(os.environ.get("LOCAL_RANK", "0")))
    net, transform = load_model(model, pretrained=pretrained, checkpoint=checkpoint, num_classes=num_classes,
                                device=device)
    dataset.transform = transform
    classes = _model_classes(net, dataset[0][0].to(device))
    top = max(dataset.targets)
    if top >= classes:
        raise ValueError(
            f"the data has class index {top} ({len(dataset.classes)} class folders) but the model {model!r} "
            f"outputs {classes} classes; pass --num-classes, a --label-map or a model with a matching head"
        )

    info = init_distributed(device)
    try:
        if info.is_main:
            if restart:
                clear_run(out)
            out.mkdir(parents=True, exist_ok=True)
            write_json_atomic(out / RUN_FILE, settings)
            if dataset.unreadable:
                write_text_atomic(out / UNREADABLE_FILE, "".join(f"{p}\t{e}\n" for p, e in dataset.unreadable))
        barrier(info)

        order = sorted(range(len(dataset)), key=lambda i: dataset.image_ids[i])
        if limit is not None:
            order = order[:limit]
        mine = order[info.rank :: info.world_size]
        done = {(r["image_id"], r["method"]) for f in record_files(out) for r in read_records(f)}
        todo = [i for i in mine if any((dataset.image_ids[i], m) not in done for m in methods)]
        if len(todo) < len(mine):
            logger.info("rank %d: %d of %d images already done, resuming", info.rank, len(mine) - len(todo), len(mine))
        file = out / (RECORDS_FILE if info.world_size == 1 else f"records.rank{info.rank}.jsonl")
        searches = {name: create_path_method(name, net) for name in methods}
        attribute_kwargs = {"k": k, "n_steps": steps, "method": approximation, "mode": mode}
        method_options = {key: value for key, value in (("refine", refine), ("beam", beam)) if value is not None}
        bar = tqdm(total=len(todo), desc=f"extract rank {info.rank}" if info.world_size > 1 else "extract",
                   unit="img", disable=not progress or not info.is_main, dynamic_ncols=True)
        new = 0
        ok = False
        try:
            for begin in range(0, len(todo), batch_size):
                index = todo[begin : begin + batch_size]
                items = [dataset[i] for i in index]
                x = torch.stack([item[0] for item in items]).to(device)
                y = torch.tensor([item[1] for item in items], device=device)
                ids = [item[2] for item in items]
                records = []
                pred = _predict(net, x)  # one clean forward per batch, shared by every method
                for name, search in searches.items():
                    rows = [j for j, image_id in enumerate(ids) if (image_id, name) not in done]
                    if rows:
                        options = {key: v for key, v in method_options.items() if key in search.options}
                        records += _search_batch(search, x[rows], y[rows], [ids[j] for j in rows], target,
                                                 model, {**attribute_kwargs, **options}, pred=pred[rows])
                new += append_records(file, records)
                bar.update(len(index))
            ok = True
        finally:
            bar.close()
            ok = all_ok(info, ok)
        records = merge_records(out) if info.is_main and ok else []
        if info.world_size > 1 and info.is_main:
            new = len(records) - len(done)
        barrier(info)
    finally:
        shutdown_distributed(info)
    seconds = time.perf_counter() - start
    summary = {"out": str(out), "images": len(order), "new_records": new, "records": len(records),
               "unreadable": len(dataset.unreadable), "seconds": seconds, "world_size": info.world_size,
               "rank": info.rank}
    logger.info("rank %d: %d new records for %d images in %.1f s", info.rank, new, len(mine), seconds)
    return summary


def _predict(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Top-1 classes ``(N,)`` of ``x``."""
    with torch.no_grad():
        return to_logits(model(x)).argmax(dim=1)


def _search_batch(search, x, y, ids, target, model_id, attribute_kwargs, pred=None) -> List[Dict[str, Any]]:
    if pred is None:
        with torch.no_grad():
            pred = search.forward_func(x).argmax(dim=1)
    result = search.attribute(x, target=y if target == "label" else pred, **attribute_kwargs)
    return result.to_records(image_ids=list(ids), labels=y.tolist(), predictions=pred.tolist(), model_id=model_id)
