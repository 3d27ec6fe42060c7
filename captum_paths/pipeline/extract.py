"""The extract stage: run path methods over images and append their records.

:func:`extract_paths` works on tensors in memory; :func:`extract` on a run
folder (:class:`~captum_paths.pipeline.run.RunFolder`). Both resume: images whose
(image_id, method) record already exists are skipped, and records are appended
per batch, so a stopped run continues where it stopped and never writes an
image twice. See "Records" in docs/method.md.
"""
from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from captum_paths.attribution.output import check_finite_output
from captum_paths.model.loading import to_logits
from captum_paths.model.data import UnreadableImageError
from captum_paths.pipeline.batches import default_workers, image_batches, precision
from captum_paths.pipeline.run import RunLockedError, file_sha256
from captum_paths.pipeline.settings import RunSettings, check_target
from captum_paths.records import append_records, read_records, write_json_atomic, write_text_atomic
from captum_paths.search.registry import create_path_method

if TYPE_CHECKING:  # pragma: no cover
    from captum_paths.model.data import ImageFolderDataset
    from captum_paths.pipeline.run import RunFolder

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
    check_target(target)
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
    run: "RunFolder",
    settings: RunSettings,
    batch_size: int = 32,
    limit: Optional[int] = None,
    restart: bool = False,
    progress: bool = True,
    workers: Optional[int] = None,
) -> Dict[str, Any]:
    """Find paths for every image of the run's image folder; records go to ``run``'s folder.

    ``settings`` (:class:`~captum_paths.pipeline.settings.RunSettings`, built and checked by
    :meth:`RunSettings.create <captum_paths.pipeline.settings.RunSettings.create>`) name the
    model, the image folder, the methods, their options and the search settings;
    ``extract`` adds the fingerprints of the run's identity (``data_fingerprint``,
    ``label_map_sha256``, ``checkpoint_sha256`` and, for random weights, ``weights_sha256``).
    Every setting is checked before anything is written, and the run folder is locked while
    it is written (a second writer gets :class:`~captum_paths.pipeline.run.RunLockedError`).
    Rerunning resumes; other settings, another data folder or changed data, label map,
    checkpoint or weights are refused unless ``restart``. Images that fail to decode are
    skipped and listed in ``unreadable.txt``.

    ``workers`` decode the images in parallel (default: one per CPU core but one, up to 8,
    on CUDA; none on the CPU); the records do not depend on it. ``limit`` takes the first
    images by sorted id. The search and the final scoring run under autocast in the run's
    ``dtype`` (TF32 matmuls allowed on CUDA). A batch that does not fit in GPU memory is
    searched in halves, down to one image (then an error says so). Under ``torchrun``
    (``WORLD_SIZE > 1``) image ``i`` of the sorted image ids goes to rank
    ``i % world_size``, each rank appends to ``records.rank{r}.jsonl`` and rank 0 merges
    them after a barrier.

    Returns:
        A summary dict: ``images``, ``new_records``, ``records``, ``unreadable``,
        ``seconds``, ``out``, ``world_size``, ``rank``.
    """
    from captum_paths.pipeline.distributed import barrier, init_distributed, shutdown_distributed

    start = time.perf_counter()
    if not isinstance(settings, RunSettings):
        raise TypeError(f"settings must be a RunSettings (RunSettings.create(...)); got {type(settings).__name__}")
    _check_run_arguments(batch_size, limit, workers)
    run.check_output(settings.data)  # not inside the data, and no file that is not the run's replaced
    job = _prepare(run, settings, restart)
    info = init_distributed(run.device)
    try:
        with _rank0_lock(run, info):
            if info.is_main:
                _write_settings(run, job, restart)
            barrier(info)
            order, done, todo = _todo(run, job, info, limit)
            new, skipped, ok = _search_images(run, job, info, todo, done, batch_size, progress, workers)
            records, skipped = _merge(run, info, ok, skipped)
            if info.world_size > 1 and info.is_main:
                new = len(records) - len(done)
            barrier(info)
    finally:
        shutdown_distributed(info)
    seconds = time.perf_counter() - start
    logger.info("rank %d: %d new records for %d images in %.1f s", info.rank, new,
                len(order[info.rank :: info.world_size]), seconds)
    return {"out": str(run.folder), "images": len(order) - len(skipped), "new_records": new, "records": len(records),
            "unreadable": len(job.dataset.unreadable) + len(skipped), "seconds": seconds,
            "world_size": info.world_size, "rank": info.rank}


@dataclass
class _Job:
    """What the search loop of :func:`extract` works with."""

    settings: RunSettings  # what run.json holds: the folder's methods and this call's
    methods: List[str]  # the methods searched now
    dataset: "ImageFolderDataset"
    net: nn.Module
    searches: Dict[str, Any]  # method -> PathAttribution on the run's sites
    baseline: Any = None  # the run's layer_baselines (None: zero)


def _check_run_arguments(batch_size: int, limit: Optional[int], workers: Optional[int]) -> None:
    for name, value in (("batch_size", batch_size), ("limit", limit)):
        if value is not None:
            _check_positive(name, value)
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int) or workers < 0):
        raise ValueError(f"workers must be a non-negative int (0: decode in this process); got {workers!r}")


def _prepare(run: "RunFolder", settings: RunSettings, restart: bool) -> _Job:
    """Load the model and the images of ``settings``, add their fingerprints, check the folder's
    run and every setting that needs the model (classes, sites, ``k``): nothing is written."""
    from captum_paths.model.loading import weights_fingerprint

    methods = list(settings.methods)
    run.adopt(settings)  # the model and the images load from these settings
    dataset = run.dataset()
    net = run.model()
    settings = dataclasses.replace(
        settings, data_fingerprint=dataset.fingerprint(),
        label_map_sha256=file_sha256(settings.label_map) if isinstance(settings.label_map, str) else None,
        checkpoint_sha256=None if settings.checkpoint is None else file_sha256(settings.checkpoint),
        weights_sha256=None if settings.random_weights is None else weights_fingerprint(net))
    run.adopt(settings)
    settings = _with_methods(settings, None if restart else run.check(settings))
    # one forward before anything is written: the class count, and finite outputs (NaN weights)
    probe, _, probe_id = _first_image(dataset)
    classes = _logits(net, probe.to(run.device)[None], [probe_id], settings.model, settings.checkpoint).shape[-1]
    top = max(dataset.targets)
    if top >= classes:
        raise ValueError(
            f"the data has class index {top} ({len(dataset.classes)} class folders) but the model "
            f"{settings.model!r} outputs {classes} classes; pass --num-classes, a --label-map or a model with a "
            "matching head"
        )
    sites = run.sites()
    searches = {name: create_path_method(name, net, sites=sites) for name in methods}
    for search in searches.values():
        search.check_sites()  # a method defined on FFN neurons only refuses heads now, not mid-run
    width = min(sites.widths) if sites.widths is not None else None
    if width is not None and settings.k > width:
        what = "FFN width" if settings.units == "neurons" else "number of units"
        raise ValueError(f"k must be at most the {what} {width} of {settings.model!r} (every layer); got {settings.k}")
    baseline = run.layer_baselines()
    if baseline is not None:
        baseline.means(sites, net)  # once, in full precision, before the searches' autocast
    return _Job(settings, methods, dataset, net, searches, baseline)


def _with_methods(settings: RunSettings, old: Optional[RunSettings]) -> RunSettings:
    """``settings`` with the methods of the folder's run ``old`` first (a folder collects methods)."""
    if old is None:
        return settings
    return dataclasses.replace(settings, methods=tuple(dict.fromkeys(old.methods + settings.methods)))


def _write_settings(run: "RunFolder", job: _Job, restart: bool) -> None:
    """Rank 0, under the lock: clear the folder (``restart``) or check its run again, then write
    ``run.json`` and ``unreadable.txt``."""
    if restart:
        run.clear()
    else:  # again under the lock: an extract that finished since the check above keeps its methods
        job.settings = _with_methods(job.settings, run.check(job.settings))
    run.adopt(job.settings)
    write_json_atomic(run.run_file, job.settings.to_json())
    unreadable = job.dataset.unreadable
    if unreadable:
        write_text_atomic(run.unreadable_file, "".join(f"{p}\t{e}\n" for p, e in unreadable))
    elif run.unreadable_file.exists():
        run.unreadable_file.unlink()


def _todo(run: "RunFolder", job: _Job, info, limit: Optional[int]) -> Tuple[List[int], set, List[int]]:
    """``(order, done, todo)``: the images of the run by sorted id (the first ``limit``), the
    (image id, method) pairs with a record, and this rank's images that miss one."""
    dataset = job.dataset
    order = sorted(range(len(dataset)), key=lambda i: dataset.image_ids[i])
    if limit is not None:
        order = order[:limit]
    mine = order[info.rank :: info.world_size]
    done = {(r["image_id"], r["method"]) for f in run.record_files() for r in read_records(f)}
    todo = [i for i in mine if any((dataset.image_ids[i], m) not in done for m in job.methods)]
    if len(todo) < len(mine):
        logger.info("rank %d: %d of %d images already done, resuming", info.rank, len(mine) - len(todo), len(mine))
    return order, done, todo


def _search_images(run: "RunFolder", job: _Job, info, todo: Sequence[int], done: set, batch_size: int,
                   progress: bool, workers: Optional[int]) -> Tuple[int, List[Tuple[str, str]], bool]:
    """Search ``todo`` batch by batch, appending each batch's records to this rank's file:
    ``(new records, skipped (file, error), every rank finished)``."""
    from captum_paths.pipeline.distributed import all_ok

    device, settings = run.device, job.settings
    file = run.rank_file(info.rank, info.world_size)
    bar = tqdm(total=len(todo), desc=f"extract rank {info.rank}" if info.world_size > 1 else "extract",
               unit="img", disable=not progress or not info.is_main, dynamic_ncols=True)
    new, skipped, ok = 0, [], False
    batches = image_batches(job.dataset, todo, batch_size, default_workers(device) if workers is None else workers,
                            pin_memory=str(device).startswith("cuda"),
                            close_fds=[run.lock_fd] if run.lock_fd is not None else [])
    try:
        with precision(device, settings.dtype):
            for batch in batches:
                for path, reason in batch.skipped:
                    logger.warning("skipped image %r: %s", path, reason)
                skipped += batch.skipped
                bar.update(batch.size - len(batch))
                if len(batch):
                    new += append_records(file, _batch_records(job, batch, done, device))
                    bar.update(len(batch))
        ok = True
    finally:
        bar.close()
        ok = all_ok(info, ok)
    return new, skipped, ok


def _batch_records(job: _Job, batch, done: set, device) -> List[Dict[str, Any]]:
    """The records of one batch: every method of the run on the images it has no record of."""
    settings = job.settings
    # a copy in this process: tensors from worker processes sit in shared memory, whose
    # alignment can change the last bits of CPU matmuls
    x = batch.images.to(device, non_blocking=True) if str(device).startswith("cuda") else batch.images.clone()
    y = batch.labels.to(device, non_blocking=True)
    ids = batch.image_ids
    pred = _predict(job.net, x, ids, settings.model, settings.checkpoint)  # one clean forward for every method
    search_args = {"k": settings.k, "n_steps": settings.n_steps, "method": settings.approximation,
                   "mode": settings.mode, "layer_baselines": job.baseline}
    records = []
    for name, search in job.searches.items():
        rows = [j for j, image_id in enumerate(ids) if (image_id, name) not in done]
        if rows:
            records += _search_batch(search, x[rows], y[rows], [ids[j] for j in rows], settings.target,
                                     settings.model, {**search_args, **settings.options_of(name)}, pred[rows])
    return records


def _merge(run: "RunFolder", info, ok: bool, skipped: List[Tuple[str, str]]
           ) -> Tuple[List[Dict[str, Any]], List[Tuple[str, str]]]:
    """Rank 0, when every rank finished: merge the record files and list the images that failed
    to decode. Returns the merged records (none on other ranks) and every rank's skipped images."""
    from captum_paths.pipeline.distributed import gather

    skipped = gather(info, skipped)
    records = []
    if info.is_main and ok:
        records = run.merge()
        if skipped:
            _list_unreadable(run, skipped)
    return records, skipped


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


def _list_unreadable(run: "RunFolder", skipped: Sequence[Tuple[str, str]]) -> None:
    """Add images that failed to decode during the run to ``unreadable.txt`` (each file once, one line each)."""
    from captum_paths.model.data import escape_line, one_line

    lines = run.unreadable_file.read_text(encoding="utf-8").splitlines() if run.unreadable_file.exists() else []
    listed = {line.split("\t", 1)[0] for line in lines}
    lines += [f"{one_line(p)}\t{escape_line(e)}" for p, e in sorted(set(skipped)) if one_line(p) not in listed]
    write_text_atomic(run.unreadable_file, "".join(line + "\n" for line in lines))


@contextlib.contextmanager
def _rank0_lock(run: "RunFolder", info) -> Iterator[None]:
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
