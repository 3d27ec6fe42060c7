"""The scalar output ``F(x)`` that attributions explain (see "The output F" in docs/method.md)."""
from __future__ import annotations

import warnings
from typing import Any, Optional, Sequence, Tuple

import torch
from torch import nn

OUTPUTS = ("prob", "logit")


def check_output(output: str) -> str:
    if output not in OUTPUTS:
        raise ValueError(f"output must be one of {OUTPUTS}; got {output!r}")
    return output


def check_internal_batch_size(internal_batch_size: Any) -> None:
    if internal_batch_size is not None and (
        isinstance(internal_batch_size, bool)
        or not isinstance(internal_batch_size, int)
        or internal_batch_size < 1
    ):
        raise ValueError(f"internal_batch_size must be a positive int or None; got {internal_batch_size!r}")


def check_grad_mode(what: str) -> None:
    """``RuntimeError`` when called under ``torch.inference_mode()``: ``what`` integrates
    gradients, which inference mode disables (``torch.enable_grad()`` cannot turn them back on
    there). ``torch.no_grad()`` is fine: the attributions enable gradients where they need them."""
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            f"{what} needs gradients, which torch.inference_mode() disables; call it outside "
            "torch.inference_mode() (inside torch.no_grad() is fine: gradients are enabled where needed)"
        )


def resolve_target(target: Any, logits: torch.Tensor) -> torch.Tensor:
    """Class index per example, ``(batch,)`` long on the logits' device.

    ``target`` follows Captum: an int, a list of ints or a tensor (one element or
    one per example). ``None`` means the predicted class.
    """
    check_logits_shape(logits)
    batch, num_classes = logits.shape
    if target is None:
        return logits.argmax(dim=1)
    if isinstance(target, bool):
        raise TypeError(f"target must be an int, a list of ints or a tensor; got {target!r}")
    if isinstance(target, int):
        t = torch.full((batch,), target, dtype=torch.long)
    elif isinstance(target, torch.Tensor):
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise TypeError(f"target tensor must hold integer class indices; got dtype {target.dtype}")
        if target.numel() == 1:
            t = target.reshape(1).long().expand(batch)
        elif target.dim() == 1 and target.numel() == batch:
            t = target.long()
        else:
            raise ValueError(
                f"target must hold one class index or one per example ({batch}); got shape {tuple(target.shape)}"
            )
    elif isinstance(target, (list, tuple)):
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in target):
            raise TypeError("target: a list target must hold ints (one class index per example)")
        if len(target) != batch:
            raise ValueError(f"target holds {len(target)} class indices but inputs hold {batch} examples")
        t = torch.tensor(list(target), dtype=torch.long)
    else:
        raise TypeError(
            f"target must be None, an int, a list of ints or a tensor; got {type(target).__name__}"
        )
    t = t.to(logits.device)
    bad = (t < 0) | (t >= num_classes)
    if bad.any():
        raise ValueError(
            f"target {t[bad][0].item()} is out of range: the model has {num_classes} classes (0..{num_classes - 1})"
        )
    return t


def output_value(logits: torch.Tensor, target: torch.Tensor, output: str) -> torch.Tensor:
    """``F`` per row: softmax probability (``"prob"``) or logit of ``target``, float32 ``(rows,)``."""
    if logits.dim() != 2:
        raise ValueError(
            f"the model must return logits of shape (batch, classes); got shape {tuple(logits.shape)}"
        )
    if logits.dtype != torch.float64:
        logits = logits.float()
    scores = logits.softmax(dim=1) if output == "prob" else logits
    return scores.gather(1, target[:, None])[:, 0]


def format_inputs(inputs: Any, model: Optional[nn.Module] = None) -> Tuple[torch.Tensor, ...]:
    """Inputs as a tuple of tensors sharing the batch dimension, checked finite, and
    moved to the device of ``model``'s parameters (the device follows the model)."""
    tensors = inputs if isinstance(inputs, tuple) else (inputs,)
    if not tensors or not all(isinstance(t, torch.Tensor) for t in tensors):
        raise TypeError(
            f"inputs must be a tensor or a tuple of tensors; got {type(inputs).__name__}"
        )
    batch = tensors[0].shape[0] if tensors[0].dim() else None
    if batch is None or batch == 0 or any(t.dim() == 0 or t.shape[0] != batch for t in tensors):
        raise ValueError(
            "inputs must have a non-empty batch dimension shared by every tensor; got shapes "
            f"{[tuple(t.shape) for t in tensors]}"
        )
    for i, t in enumerate(tensors):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise ValueError(f"inputs[{i}] holds non-finite values (nan or inf)")
    # tensors made under torch.inference_mode() cannot be saved for backward: use copies
    tensors = tuple(t.clone() if t.is_inference() else t for t in tensors)
    if model is not None:
        warn_if_training(model)
    param = next(model.parameters(), None) if model is not None else None
    if param is not None:
        tensors = tuple(t.to(param.device) for t in tensors)
    return tensors


def warn_if_training(model: nn.Module) -> None:
    """Warn when a module of ``model`` that behaves differently in training is in training
    mode (dropout or drop-path with a non-zero rate, batch norm): every forward then
    differs, so two identical searches disagree and the convergence delta is
    meaningless. The model is left as it is."""
    if any(_varies_in_training(m) for m in model.modules()):
        warnings.warn(
            f"{type(model).__name__} is in training mode (dropout and drop-path are active), so paths and scores "
            "change from one forward to the next; call model.eval() first",
            UserWarning,
            stacklevel=4,
        )


def _varies_in_training(module: nn.Module) -> bool:
    if not module.training:
        return False
    if isinstance(module, nn.modules.dropout._DropoutNd):
        return module.p > 0
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return True
    rate = getattr(module, "drop_prob", None)  # timm DropPath
    return isinstance(rate, float) and rate > 0


def check_logits_shape(logits: torch.Tensor, batch: Optional[int] = None) -> None:
    """ValueError naming the shape when the model's output is not ``(batch, classes)`` logits
    (``batch``, when given, the number of inputs)."""
    if logits.dim() == 2 and (batch is None or logits.shape[0] == batch):
        return
    given = "" if batch is None else f" for {batch} input{'s' if batch != 1 else ''}"
    expected = "(batch, classes)" if batch is None else f"(batch, classes) = ({batch}, classes)"
    raise ValueError(
        f"the model returned an output of shape {tuple(logits.shape)}{given}; expected logits of shape "
        f"{expected}, one row of class scores per input (a model that squeezes the batch dimension returns "
        "(classes,) for one image: keep it)"
    )


def check_finite_output(logits: torch.Tensor, names: Optional[Sequence[Any]] = None,
                        batch: Optional[int] = None) -> None:
    """ValueError naming the batch rows whose model output holds NaN or inf ``(batch, classes)``
    (by ``names[row]`` when given, e.g. image ids), or naming its shape when it is not
    ``(batch, classes)`` (``batch``: the number of inputs, when given); TypeError when the model
    returned something else than a tensor (a tuple, a ``ModelOutput``)."""
    if not isinstance(logits, torch.Tensor):
        raise TypeError(
            f"the model returned a {type(logits).__name__}, not a logits tensor of shape (batch, classes); with "
            "explicit sites, pass a model that returns the logits, e.g. captum_paths.LogitsOnly(model) (sites on "
            "the wrapped model's modules keep working)"
        )
    check_logits_shape(logits, batch)
    bad = (~torch.isfinite(logits.reshape(logits.shape[0], -1)).all(dim=1)).nonzero().flatten().tolist()
    if bad:
        which = f"rows {bad[:5]}" if names is None else f"e.g. {', '.join(str(names[i]) for i in bad[:3])}"
        raise ValueError(f"the model's output is not finite (NaN or inf) for {len(bad)} of {logits.shape[0]} "
                         f"inputs ({which}); check the model's weights")


def format_additional_args(additional_forward_args: Any) -> Tuple[Any, ...]:
    if additional_forward_args is None:
        return ()
    args = additional_forward_args if isinstance(additional_forward_args, tuple) else (additional_forward_args,)
    # tensors made under torch.inference_mode() cannot be saved for backward: use copies
    return tuple(a.clone() if isinstance(a, torch.Tensor) and a.is_inference() else a for a in args)


def select_rows(args: Tuple[Any, ...], index: torch.Tensor, batch: int) -> Tuple[Any, ...]:
    """Index every tensor argument whose first dimension is the batch; pass the rest."""
    return tuple(
        a[index.to(a.device)] if isinstance(a, torch.Tensor) and a.dim() and a.shape[0] == batch else a
        for a in args
    )
