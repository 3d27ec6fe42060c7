"""Model outputs as logits.

Every attribution in captum_paths needs a forward that returns logits
``(batch, classes)``. Hugging Face models return a ``ModelOutput`` and some
models return tuples; :class:`LogitsOnly` wraps them so that captum_paths and
Captum's own classes see a plain tensor.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["LogitsOnly", "to_logits", "as_logits_model"]


def to_logits(output: Any) -> torch.Tensor:
    """Return the logits tensor held by a model output.

    Accepts a tensor, an object with a ``logits`` attribute (Hugging Face
    ``ModelOutput``), a mapping with a ``"logits"`` key, or a tuple/list whose
    first element is the logits.
    """
    if isinstance(output, torch.Tensor):
        return output
    logits = getattr(output, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(output, dict) and isinstance(output.get("logits"), torch.Tensor):
        return output["logits"]
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(
        "model output must be a logits tensor, an object with a `logits` tensor "
        f"attribute, or a tuple whose first element is the logits; got {type(output).__name__}"
    )


class LogitsOnly(nn.Module):
    """Wrap a model so that its forward returns the logits tensor only.

    The wrapped model is registered as the submodule ``model``, so hooks on the
    original modules keep working and module names gain the prefix ``model.``.

    Args:
        model (nn.Module): A model whose output holds logits: a tensor, a tuple whose first
            element is one, or a Hugging Face ``ModelOutput`` with ``logits``.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return to_logits(self.model(*args, **kwargs))


def as_logits_model(model: nn.Module) -> nn.Module:
    """Return ``model`` itself for tensor-returning models, else a :class:`LogitsOnly`.

    Hugging Face ``PreTrainedModel`` instances are always wrapped; models already
    wrapped are returned unchanged.
    """
    if isinstance(model, LogitsOnly):
        return model
    if _is_hf_model(model):
        return LogitsOnly(model)
    return model


def _is_hf_model(model: nn.Module) -> bool:
    return any(
        cls.__name__ == "PreTrainedModel" and cls.__module__.startswith("transformers")
        for cls in type(model).__mro__
    )
