"""torch.distributed helpers for running path extraction under ``torchrun``.

A process group is created only when ``WORLD_SIZE > 1`` (``gloo`` on CPU,
``nccl`` when the process uses a CUDA device); a plain ``python -m`` run is a
world of one and touches nothing.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List, Optional

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "init_distributed", "barrier", "shutdown_distributed", "default_device", "all_ok", "gather"]


@dataclass(frozen=True)
class DistInfo:
    """Rank and world size of this process; ``initialized`` when a process group was created here."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def default_device(device: Optional[str], local_rank: int = 0) -> str:
    """``device`` as given (``"cuda"``: ``cuda:LOCAL_RANK``), else ``cuda:LOCAL_RANK`` when CUDA is
    available, else ``cpu``. A ValueError says when the device given is unknown or not on this machine."""
    if device:
        try:
            kind = torch.device(device)
        except (RuntimeError, ValueError, TypeError):
            raise ValueError(f"unknown device {device!r}; use cpu, cuda, cuda:N or mps") from None
        if kind.type == "cuda":
            count = torch.cuda.device_count() if torch.cuda.is_available() else 0
            if not count:
                raise ValueError(f"device {device!r} asked for, but this machine has no usable CUDA device; "
                                 "use --device cpu")
            if kind.index is None:
                return f"cuda:{local_rank % count}"
            if kind.index >= count:
                raise ValueError(f"device {device!r} asked for, but this machine has {count} CUDA device(s) "
                                 f"(cuda:0 to cuda:{count - 1})")
        elif kind.type == "mps" and not (hasattr(torch.backends, "mps") and torch.backends.mps.is_available()):
            raise ValueError(f"device {device!r} asked for, but MPS is not available on this machine; "
                             "use --device cpu")
        return device
    if torch.cuda.is_available():
        return f"cuda:{local_rank % torch.cuda.device_count()}"
    return "cpu"


def init_distributed(device: str = "cpu") -> DistInfo:
    """Join the torchrun process group when ``WORLD_SIZE > 1``; otherwise a world of one."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if world_size <= 1:
        return DistInfo(0, 1, 0, False)
    if dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, False)
    missing = [name for name in ("RANK", "MASTER_ADDR", "MASTER_PORT") if not os.environ.get(name)]
    if missing:
        verb = "is" if len(missing) == 1 else "are"
        raise ValueError(f"WORLD_SIZE={world_size} is set but {', '.join(missing)} {verb} not: start the processes "
                         "with torchrun (python -m torch.distributed.run), or unset WORLD_SIZE for one process")
    use_cuda = str(device).startswith("cuda")
    if use_cuda:
        torch.cuda.set_device(torch.device(device))
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, world_size, local_rank, True)


def barrier(info: DistInfo) -> None:
    if info.world_size > 1 and dist.is_initialized():
        if dist.get_backend() == "nccl":  # this process's GPU, not one guessed from the global rank
            dist.barrier(device_ids=[torch.cuda.current_device()])
        else:
            dist.barrier()


def all_ok(info: DistInfo, ok: bool) -> bool:
    """True when every rank reports ``ok`` (a world of one: ``ok`` itself)."""
    if info.world_size <= 1 or not dist.is_initialized():
        return ok
    flag = torch.tensor([0 if ok else 1], dtype=torch.int64)
    if dist.get_backend() == "nccl":
        flag = flag.cuda()
    dist.all_reduce(flag)
    return int(flag.item()) == 0


def gather(info: DistInfo, items: List[Any]) -> List[Any]:
    """Every rank's ``items`` (picklable), concatenated in rank order, on every rank."""
    if info.world_size <= 1 or not dist.is_initialized():
        return list(items)
    parts: List[Optional[List[Any]]] = [None] * info.world_size
    dist.all_gather_object(parts, list(items))
    return [item for part in parts for item in (part or [])]


def shutdown_distributed(info: DistInfo) -> None:
    if info.initialized and dist.is_initialized():
        dist.destroy_process_group()
