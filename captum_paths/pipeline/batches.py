"""Feeding the search: image batches decoded by ``DataLoader`` workers, and the numeric precision.

Decoding and preprocessing run in worker processes with pinned memory and
prefetching, so they overlap the search on the GPU. Batches hold the same images
in the same order for any number of workers (images that fail to decode are
dropped from their batch and reported), so the records do not depend on it.
"""
from __future__ import annotations

import contextlib
import functools
import os
from dataclasses import dataclass
from typing import Iterator, List, Sequence, Tuple

import torch
from torch.utils.data import DataLoader, Dataset

from captum_paths.model.data import UnreadableImageError

__all__ = ["ImageBatch", "image_batches", "default_workers", "DTYPES", "precision"]

#: ``--dtype`` names and their torch types (``fp32``: no autocast).
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class ImageBatch:
    """A batch of decoded images: ``images`` ``(n, C, H, W)``, ``labels`` ``(n,)``, their ids,
    and ``(file, error)`` of the images of the batch that failed to decode."""

    images: torch.Tensor
    labels: torch.Tensor
    image_ids: List[str]
    skipped: List[Tuple[str, str]]
    size: int  # images asked for, decoded or not

    def __len__(self) -> int:
        return len(self.image_ids)


class _Tolerant(Dataset):
    """``dataset[i]``, or the file and error of an image that fails to decode."""

    def __init__(self, dataset: Dataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        try:
            return self.dataset[self.indices[i]]
        except UnreadableImageError as exc:
            return exc.path, exc.reason


def _collate(items) -> ImageBatch:
    good = [item for item in items if len(item) == 3]
    skipped = [item for item in items if len(item) == 2]
    images = torch.stack([x for x, _, _ in good]) if good else torch.empty(0)
    labels = torch.tensor([y for _, y, _ in good], dtype=torch.long)
    return ImageBatch(images, labels, [i for _, _, i in good], skipped, len(items))


def default_workers(device: str) -> int:
    """Decoding workers: on CUDA one per CPU core but one (up to 8), on the CPU none (the
    search already uses every core there)."""
    if not str(device).startswith("cuda"):
        return 0
    return max(1, min(8, (os.cpu_count() or 2) - 1))


def image_batches(dataset: Dataset, indices: Sequence[int], batch_size: int, workers: int = 0,
                  pin_memory: bool = False, close_fds: Sequence[int] = ()) -> Iterator[ImageBatch]:
    """Batches of ``dataset[indices]``, in order, ``batch_size`` images asked for per batch.

    Workers close the inherited file descriptors ``close_fds`` first (the run folder's
    lock: a worker outliving a killed parent must not keep the folder locked)."""
    loader = DataLoader(
        _Tolerant(dataset, indices), batch_size=batch_size, shuffle=False, num_workers=workers,
        collate_fn=_collate, pin_memory=pin_memory, prefetch_factor=4 if workers else None,
        persistent_workers=False, worker_init_fn=functools.partial(_close, tuple(close_fds)) if workers else None,
    )
    return iter(loader)


def _close(fds: Sequence[int], worker_id: int) -> None:
    for fd in fds:
        try:
            os.close(fd)
        except OSError:  # already closed, or not inherited (spawned workers)
            pass


@contextlib.contextmanager
def precision(device: str, dtype: str = "fp32") -> Iterator[None]:
    """Run the block in ``dtype`` (``bf16``/``fp16``: autocast; scores and sums stay fp32 or
    fp64) with TF32 matmuls allowed on CUDA; the previous settings come back afterwards."""
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {sorted(DTYPES)}; got {dtype!r}")
    kind = torch.device(device).type
    with contextlib.ExitStack() as stack:
        if kind == "cuda":
            before = torch.get_float32_matmul_precision()
            torch.set_float32_matmul_precision("high")  # TF32
            stack.callback(torch.set_float32_matmul_precision, before)
        if dtype != "fp32":
            stack.enter_context(torch.autocast(device_type=kind, dtype=DTYPES[dtype]))
        yield
