"""Run path methods over a set of images and append their records (SPEC §7).

:func:`extract_paths` is resumable: images whose (image_id, method) record is
already in the output file are skipped, and records are appended per batch, so
a stopped run continues where it stopped and never writes an image twice.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import torch
from torch import nn
from tqdm.auto import tqdm

from captum_paths.records import append_records, read_records
from captum_paths.search.registry import create_path_method

__all__ = ["extract_paths"]

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
            x = images[index].to(device)
            y = labels[index].to(device)
            with torch.no_grad():
                pred = search.forward_func(x).argmax(dim=1)
            result = search.attribute(x, target=y if target == "label" else pred, **attribute_kwargs)
            records = result.to_records(
                image_ids=[image_ids[i] for i in index], labels=y.tolist(), predictions=pred.tolist(),
                model_id=model_id,
            )
            append_records(out_file, records)
            bar.update(len(index))
        bar.close()
    return read_records(out_file)
