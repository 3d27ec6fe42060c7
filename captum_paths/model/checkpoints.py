"""Local checkpoints: reading a state dict (safetensors or torch) and loading it strictly,
with a message that says what does not fit."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Union

import torch
from torch import nn

from captum_paths.model.outputs import LogitsOnly

__all__ = ["load_checkpoint", "checkpoint_path"]

_STATE_DICT_KEYS = ("state_dict", "model", "state_dict_ema")


def load_checkpoint(
    model: nn.Module, checkpoint: Union[str, os.PathLike], spec: Optional[str] = None
) -> nn.Module:
    """Load a local checkpoint strictly into ``model`` (in place) and return it.

    ``.safetensors`` files are read with safetensors, anything else with
    ``torch.load(..., weights_only=True)``. A state dict nested under
    ``"state_dict"``, ``"model"`` or ``"state_dict_ema"`` is unwrapped and a
    ``module.`` (DataParallel / DDP) prefix is stripped. ``spec`` only
    improves error messages.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module; got {type(model).__name__}")
    path = checkpoint_path(checkpoint)
    state_dict = _read_state_dict(path)
    target = model.model if isinstance(model, LogitsOnly) else model
    state_dict = _match_prefixes(state_dict, target.state_dict())
    _check_fits(target, state_dict, path, spec)
    target.load_state_dict(state_dict, strict=True)
    return model


def checkpoint_path(checkpoint: Optional[Union[str, os.PathLike]]) -> Optional[Path]:
    """``checkpoint`` as an existing file's path (``None`` stays ``None``)."""
    if checkpoint is None:
        return None
    if not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(f"checkpoint must be a path (str or os.PathLike) or None; got {type(checkpoint).__name__}")
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        what = "is a directory, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"checkpoint file {str(path)!r} {what}")
    return path


def _read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            return load_file(str(path), device="cpu")
        except Exception as exc:
            raise ValueError(f"checkpoint {str(path)!r} is not a readable safetensors file: {exc}") from exc
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ValueError(
            f"checkpoint {str(path)!r} could not be read with torch.load(weights_only=True): {exc}. "
            "Re-save it as a plain state dict (torch.save(model.state_dict(), path)) or as .safetensors"
        ) from exc
    for _ in range(3):  # {"state_dict": {...}} or {"model": {"state_dict": ...}}
        if isinstance(obj, dict) and not _is_tensor_dict(obj):
            nested = next((obj[k] for k in _STATE_DICT_KEYS if isinstance(obj.get(k), dict)), None)
            if nested is None:
                break
            obj = nested
    if not _is_tensor_dict(obj):
        keys = list(obj)[:8] if isinstance(obj, dict) else type(obj).__name__
        raise ValueError(
            f"checkpoint {str(path)!r} does not hold a state dict (a mapping of names to tensors, "
            f"optionally under {', '.join(map(repr, _STATE_DICT_KEYS))}); found {keys}"
        )
    return obj


def _is_tensor_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


def _match_prefixes(state_dict: Dict[str, torch.Tensor], model_state: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """Strip ``module.`` (DataParallel) and a ``model.`` wrapper prefix when the model lacks it."""
    for prefix in ("module.", "model."):
        if all(k.startswith(prefix) for k in state_dict) and not any(k.startswith(prefix) for k in model_state):
            state_dict = {k[len(prefix):]: v for k, v in state_dict.items()}
    return state_dict


def _check_fits(model: nn.Module, state_dict: Dict[str, torch.Tensor], path: Path, spec: Optional[str]) -> None:
    model_state = model.state_dict()
    missing = [k for k in model_state if k not in state_dict]
    unexpected = [k for k in state_dict if k not in model_state]
    mismatched = [
        (k, tuple(state_dict[k].shape), tuple(model_state[k].shape))
        for k in model_state
        if k in state_dict and tuple(state_dict[k].shape) != tuple(model_state[k].shape)
    ]
    if not (missing or unexpected or mismatched):
        return

    def listing(items: List[str], n: int = 5) -> str:
        more = f", ... ({len(items) - n} more)" if len(items) > n else ""
        return ", ".join(items[:n]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing key(s): {listing(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected key(s): {listing(unexpected)}")
    if mismatched:
        parts.append(
            f"{len(mismatched)} shape mismatch(es): "
            + listing([f"{k}: checkpoint {c} vs model {m}" for k, c, m in mismatched])
        )
    head = [c for k, c, m in mismatched if c and m and c[1:] == m[1:] and _is_head_key(k)]
    hint = (
        f" The classifier head differs: the checkpoint has {head[0][0]} classes, so pass "
        f"num_classes={head[0][0]} (CLI --num-classes {head[0][0]})."
        if head
        else " Check that the checkpoint was saved from the same architecture and model kwargs, "
        "and that num_classes matches the checkpoint's classifier."
    )
    target = f" {spec!r}" if spec else ""
    raise ValueError(
        f"checkpoint {str(path)!r} does not fit the model{target}: " + "; ".join(parts) + "." + hint
    )


def _is_head_key(key: str) -> bool:
    parts = key.split(".")
    return any(p in ("head", "heads", "fc", "classifier", "last_linear") for p in parts[:-1])


