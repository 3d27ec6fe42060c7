"""The extract stage: run path methods over images and append their records.

:func:`extract_paths` works on tensors in memory; :func:`extract` on a run
folder (:class:`~captum_paths.pipeline.run.Run`). Both resume: images whose
(image_id, method) record already exists are skipped, and records are appended
per batch, so a stopped run continues where it stopped and never writes an
image twice. See "Records" in docs/method.md.
"""
from __future__ import annotations

import contextlib
import logging
import os
import time
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from captum_paths.attribution.output import check_finite_output
from captum_paths.model.loading import to_logits
from captum_paths.model.data import UnreadableImageError
from captum_paths.pipeline.batches import DTYPES, default_workers, image_batches, precision
from captum_paths.pipeline.run import UNITS, RunLockedError, file_sha256, run_settings
from captum_paths.records import append_records, read_records, write_json_atomic, write_text_atomic
from captum_paths.search.registry import create_path_method, get_path_method

if TYPE_CHECKING:  # pragma: no cover
    from captum_paths.pipeline.run import Run

__all__ = ["extract_paths", "extract"]

logger = logging.getLogger(__name__)

PathLike = Union[str, os.PathLike]


def extract_paths(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    image_ids: Sequence[str],
    out_file: PathLike,
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
    _check_target(target)
    if len(images) != len(labels) or len(images) != len(image_ids):
        raise ValueError(
            f"images, labels and image_ids must have the same length; got {len(images)}, {len(labels)}, {len(image_ids)}"
        )
    _check_positive("batch_size", batch_size)
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
            x, y = images[index].to(device), labels[index].to(device)
            records = _search_batch(search, x, y, [image_ids[i] for i in index], target, model_id,
                                    attribute_kwargs, _predict(model, x))
            append_records(out_file, records)
            bar.update(len(index))
        bar.close()
    return read_records(out_file)


def extract(
    run: "Run",
    model: str,
    data: PathLike,
    methods: Sequence[str] = ("neuron-path",),
    checkpoint: Optional[PathLike] = None,
    pretrained: bool = False,
    num_classes: Optional[int] = None,
    label_map: Optional[Union[PathLike, Mapping[str, int]]] = None,
    k: int = 1,
    n_steps: Optional[int] = None,
    approximation: Optional[str] = None,
    mode: str = "gate",
    target: str = "label",
    batch_size: int = 32,
    limit: Optional[int] = None,
    restart: bool = False,
    progress: bool = True,
    refine: Optional[Union[int, str]] = None,
    beam: Optional[int] = None,
    random_weights: Optional[int] = None,
    model_args: Optional[Mapping[str, Any]] = None,
    workers: Optional[int] = None,
    dtype: str = "fp32",
    units: str = "neurons",
) -> Dict[str, Any]:
    """Find paths for every image of the image folder ``data``; records go to ``run``'s folder.

    ``model`` is a spec for :func:`captum_paths.model.loading.load_model` (``demo``,
    ``timm:NAME``, ``torchvision:NAME``, ``hf:NAME_OR_PATH``, ``open_clip:ARCH[@TAG]``),
    ``model_args`` keyword arguments of its constructor (``{"img_size": 112}``; part
    of the run's identity). A zero-shot model's classes are the data's class names. ``refine`` and
    ``beam`` go to the methods that take them (``neuron-path``); ``None`` keeps
    each method's default. A model that would get random weights (``timm:``,
    ``torchvision:``, ``open_clip:`` without ``pretrained`` or ``checkpoint``) is
    refused unless ``random_weights`` gives the seed of its weights. Every setting is checked before anything is
    written, and the run folder is locked while it is written (a second writer
    gets :class:`~captum_paths.pipeline.run.RunLockedError`). Rerunning resumes;
    other settings, another data folder or changed data, label map, checkpoint
    or weights are refused unless ``restart``. Images that fail to decode are
    skipped and listed in ``unreadable.txt``.

    ``workers`` decode the images in parallel (default: one per CPU core but one,
    up to 8, on CUDA; none on the CPU); the records do not depend on it. ``dtype``
    (``fp32``, ``bf16``, ``fp16``; part of the run's identity) runs the search and
    the final scoring under autocast, scores and sums in fp32 or fp64; TF32
    matmuls are allowed on CUDA. A batch that does not fit in GPU memory is
    searched in halves, down to one image (then an error says so).
    ``units`` (part of the run's identity) is what the paths hold: ``"neurons"`` (FFN
    neurons), ``"heads"`` (attention heads) or ``"mixed"`` (per block its heads, then
    its FFN neurons, each a layer of the path).
    Under ``torchrun`` (``WORLD_SIZE > 1``) image ``i`` of the sorted image ids
    goes to rank ``i % world_size``, each rank appends to
    ``records.rank{r}.jsonl`` and rank 0 merges them after a barrier.

    Returns:
        A summary dict: ``images``, ``new_records``, ``records``, ``unreadable``,
        ``seconds``, ``out``, ``world_size``, ``rank``.
    """
    from captum_paths.pipeline.distributed import all_ok, barrier, gather, init_distributed, shutdown_distributed
    from captum_paths.model.loading import has_random_weights, weights_fingerprint

    start = time.perf_counter()
    methods = list(dict.fromkeys(methods))
    if not methods:
        raise ValueError("give at least one path method")
    _check_target(target)
    for name, value in (("batch_size", batch_size), ("limit", limit)):
        if value is not None:
            _check_positive(name, value)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(f"workers must be a non-negative int (0: decode in this process); got {workers!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}; got {dtype!r}")
    if units not in UNITS:
        raise ValueError(f"units must be one of {UNITS}; got {units!r}")
    if units != "neurons" and mode == "paper":
        raise ValueError(f"mode 'paper' (the released scripts' score) is defined on FFN neurons only; units "
                         f"{units!r} need mode 'gate'")
    options = {key: value for key, value in (("refine", refine), ("beam", beam)) if value is not None}
    for name in methods:  # every method's settings, before run.json is written
        cls = get_path_method(name)
        cls.check_arguments(k=k, n_steps=n_steps, method=approximation, mode=mode,
                            **{key: v for key, v in options.items() if key in cls.options})
    out = run.folder
    run.check_output(data)  # not inside the data, and no file that is not the run's replaced
    if random_weights is None and has_random_weights(model, pretrained, checkpoint):
        raise ValueError(
            f"model {model!r} without --pretrained or --checkpoint has random weights, a different network on every "
            "load; pass --pretrained, --checkpoint FILE, or --random-weights SEED to study a seeded random network"
        )
    if model_args is not None and (not isinstance(model_args, Mapping)
                                   or not all(isinstance(key, str) for key in model_args)):
        raise TypeError(f"model_args must be a dict of keyword arguments; got {model_args!r}")
    taken = sorted(set(model_args or {}) & {"pretrained", "checkpoint", "num_classes", "device", "random_weights",
                                            "classnames"})
    if taken:
        raise ValueError(f"model_args {taken} have options of their own: use --{taken[0].replace('_', '-')}")
    settings = run_settings(model, checkpoint, pretrained, num_classes, mode, n_steps, approximation, k, target,
                            methods, data, label_map, refine, beam, random_weights, model_args, dtype, units)
    run.adopt(settings)  # the model and the images load from these settings
    dataset = run.dataset()
    settings["data_fingerprint"] = dataset.fingerprint()
    settings["label_map_sha256"] = (file_sha256(settings["label_map"]) if isinstance(settings["label_map"], str)
                                    else None)
    settings["checkpoint_sha256"] = None if checkpoint is None else file_sha256(settings["checkpoint"])
    net = run.model()
    settings["weights_sha256"] = None if random_weights is None else weights_fingerprint(net)
    old = None if restart else run.check(settings)
    if old is not None:
        settings["methods"] = list(dict.fromkeys(old.get("methods", []) + methods))
    device = run.device
    probe, _, probe_id = _first_image(dataset)
    # one forward before anything is written: the class count, and finite outputs (NaN weights)
    classes = _logits(net, probe.to(device)[None], [probe_id], model, checkpoint).shape[-1]
    top = max(dataset.targets)
    if top >= classes:
        raise ValueError(
            f"the data has class index {top} ({len(dataset.classes)} class folders) but the model {model!r} "
            f"outputs {classes} classes; pass --num-classes, a --label-map or a model with a matching head"
        )
    sites = run.sites()
    searches = {name: create_path_method(name, net, sites=sites) for name in methods}
    for search in searches.values():
        search.check_sites()  # a method defined on FFN neurons only refuses heads now, not mid-run
    width = min(sites.widths) if sites.widths is not None else None
    if width is not None and k > width:
        what = "FFN width" if units == "neurons" else "number of units"
        raise ValueError(f"k must be at most the {what} {width} of {model!r} (every layer); got {k}")

    info = init_distributed(device)
    try:
        with _rank0_lock(run, info):
            if info.is_main:
                if restart:
                    run.clear()
                else:  # again under the lock: an extract that finished since the check above keeps its methods
                    old = run.check(settings)
                    if old is not None:
                        settings["methods"] = list(dict.fromkeys(old.get("methods", []) + settings["methods"]))
                run.adopt(settings)
                write_json_atomic(run.run_file, settings)
                if dataset.unreadable:
                    write_text_atomic(run.unreadable_file, "".join(f"{p}\t{e}\n" for p, e in dataset.unreadable))
                elif run.unreadable_file.exists():
                    run.unreadable_file.unlink()
            barrier(info)

            order = sorted(range(len(dataset)), key=lambda i: dataset.image_ids[i])
            if limit is not None:
                order = order[:limit]
            mine = order[info.rank :: info.world_size]
            done = {(r["image_id"], r["method"]) for f in run.record_files() for r in read_records(f)}
            todo = [i for i in mine if any((dataset.image_ids[i], m) not in done for m in methods)]
            if len(todo) < len(mine):
                logger.info("rank %d: %d of %d images already done, resuming", info.rank, len(mine) - len(todo),
                            len(mine))
            file = run.rank_file(info.rank, info.world_size)
            attribute_kwargs = {"k": k, "n_steps": n_steps, "method": approximation, "mode": mode}
            bar = tqdm(total=len(todo), desc=f"extract rank {info.rank}" if info.world_size > 1 else "extract",
                       unit="img", disable=not progress or not info.is_main, dynamic_ncols=True)
            new = 0
            skipped: List[Tuple[str, str]] = []  # (file, error) of images that fail to decode
            ok = False
            if workers is None:
                workers = default_workers(device)
            batches = image_batches(dataset, todo, batch_size, workers, pin_memory=str(device).startswith("cuda"),
                                    close_fds=[run.lock_fd] if run.lock_fd is not None else [])
            try:
                with precision(device, dtype):
                    for batch in batches:
                        for path, reason in batch.skipped:
                            logger.warning("skipped image %r: %s", path, reason)
                        skipped += batch.skipped
                        bar.update(batch.size - len(batch))
                        if not len(batch):
                            continue
                        # a copy in this process: tensors from worker processes sit in shared memory, whose
                        # alignment can change the last bits of CPU matmuls
                        x = batch.images.to(device, non_blocking=True) if str(device).startswith("cuda") \
                            else batch.images.clone()
                        y = batch.labels.to(device, non_blocking=True)
                        ids = batch.image_ids
                        records = []
                        pred = _predict(net, x, ids, model, checkpoint)  # one clean forward for every method
                        for name, search in searches.items():
                            rows = [j for j, image_id in enumerate(ids) if (image_id, name) not in done]
                            if rows:
                                mine_options = {key: v for key, v in options.items() if key in search.options}
                                records += _search_batch(search, x[rows], y[rows], [ids[j] for j in rows], target,
                                                         model, {**attribute_kwargs, **mine_options}, pred[rows])
                        new += append_records(file, records)
                        bar.update(len(batch))
                ok = True
            finally:
                bar.close()
                ok = all_ok(info, ok)
            skipped = gather(info, skipped)
            records = []
            if info.is_main and ok:
                records = run.merge()
                if skipped:
                    _list_unreadable(run, skipped)
            if info.world_size > 1 and info.is_main:
                new = len(records) - len(done)
            barrier(info)
    finally:
        shutdown_distributed(info)
    seconds = time.perf_counter() - start
    summary = {"out": str(out), "images": len(order) - len(skipped), "new_records": new, "records": len(records),
               "unreadable": len(dataset.unreadable) + len(skipped), "seconds": seconds, "world_size": info.world_size,
               "rank": info.rank}
    logger.info("rank %d: %d new records for %d images in %.1f s", info.rank, new, len(mine), seconds)
    return summary


def _check_target(target: str) -> None:
    if target not in ("label", "pred"):
        raise ValueError(f"target must be 'label' or 'pred'; got {target!r}")


def _check_positive(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int; got {value!r}")


def _logits(model: nn.Module, x: torch.Tensor, ids: Optional[Sequence[str]] = None, spec: Optional[str] = None,
            checkpoint: Optional[PathLike] = None) -> torch.Tensor:
    """The clean logits ``(N, classes)`` of ``x``; a ValueError names the model (and its checkpoint) and
    the images when an output holds NaN or inf."""
    with torch.no_grad():
        logits = to_logits(model(x))
    try:
        check_finite_output(logits, ids)
    except ValueError as exc:
        source = f"model {spec!r}" if spec is not None else "the model"
        if checkpoint is not None:
            source += f" with checkpoint {str(checkpoint)!r}"
        raise ValueError(f"{source} gives non-finite outputs: {exc}") from None
    return logits


def _predict(model: nn.Module, x: torch.Tensor, ids: Optional[Sequence[str]] = None, spec: Optional[str] = None,
             checkpoint: Optional[PathLike] = None) -> torch.Tensor:
    """Top-1 classes ``(N,)`` of ``x`` (see :func:`_logits`)."""
    return _logits(model, x, ids, spec, checkpoint).argmax(dim=1)


def _first_image(dataset) -> Tuple[torch.Tensor, int, str]:
    """``(image, label, image_id)`` of the first image of ``dataset`` that decodes (for a probe)."""
    for i in range(len(dataset)):
        try:
            return dataset[i]
        except UnreadableImageError:
            continue
    raise ValueError(f"no image of the data folder {str(dataset.root)!r} can be decoded")


def _list_unreadable(run: "Run", skipped: Sequence[Tuple[str, str]]) -> None:
    """Add images that failed to decode during the run to ``unreadable.txt`` (each file once, one line each)."""
    from captum_paths.model.data import escape_line, one_line

    lines = run.unreadable_file.read_text(encoding="utf-8").splitlines() if run.unreadable_file.exists() else []
    listed = {line.split("\t", 1)[0] for line in lines}
    lines += [f"{one_line(p)}\t{escape_line(e)}" for p, e in sorted(set(skipped)) if one_line(p) not in listed]
    write_text_atomic(run.unreadable_file, "".join(line + "\n" for line in lines))


@contextlib.contextmanager
def _rank0_lock(run: "Run", info) -> Iterator[None]:
    """Rank 0 holds the run folder's lock for the whole torchrun; every rank stops when it cannot."""
    from captum_paths.pipeline.distributed import all_ok

    with contextlib.ExitStack() as stack:
        error: Optional[RunLockedError] = None
        if info.is_main:
            try:
                stack.enter_context(run.lock())
            except RunLockedError as exc:
                error = exc
        if not all_ok(info, error is None):
            raise error or RunLockedError(f"run folder {str(run.folder)!r} is being written by another process")
        yield


def _search_batch(search, x: torch.Tensor, y: torch.Tensor, ids: Sequence[str], target: str,
                  model_id: Optional[str], attribute_kwargs: Dict[str, Any], pred: torch.Tensor
                  ) -> List[Dict[str, Any]]:
    """The records of one batch; a batch that runs out of GPU memory is searched in halves
    (paths do not depend on the batch), down to one image."""
    try:
        result = search.attribute(x, target=y if target == "label" else pred, **attribute_kwargs)
    except torch.cuda.OutOfMemoryError:
        if len(x) == 1:
            room = ""
            if x.device.type == "cuda":
                free, total = torch.cuda.mem_get_info(x.device)
                room = f" ({free / 2**30:.1f} of {total / 2**30:.1f} GiB free)"
            raise MemoryError(
                f"one image does not fit on {x.device}{room} for {search.name}; use a smaller model or input size, "
                "fewer n_steps, or --dtype bf16"
            ) from None
        logger.warning("a batch of %d images ran out of memory on %s; searching it in halves", len(x), x.device)
        if x.device.type == "cuda":
            torch.cuda.empty_cache()
        half = len(x) // 2
        return [record for part in (slice(0, half), slice(half, None))
                for record in _search_batch(search, x[part], y[part], list(ids)[part], target, model_id,
                                            attribute_kwargs, pred[part])]
    return result.to_records(image_ids=list(ids), labels=y.tolist(), predictions=pred.tolist(), model_id=model_id)
