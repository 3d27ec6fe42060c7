"""PathResult: the neuron paths found for a batch of images, as data."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch

from captum_paths.records import PathRecord, RecordLike, StackedPaths, as_path_records, stack_records

__all__ = ["PathResult"]


@dataclass
class PathResult(StackedPaths):
    """Neuron paths of a batch, one path (``k`` neurons per layer) per image.

    ``len(result)`` (images), :attr:`num_layers`, :attr:`k` and :attr:`shape` are those of
    :attr:`paths` (:class:`~captum_paths.records.StackedPaths`, shared with
    :class:`~captum_paths.analysis.PathTable`).

    Attributes:
        paths (Tensor): ``(batch, L, k)`` long, neuron indices per layer; within a
            layer, the best-scored neuron first.
        contributions (Tensor): ``(batch, L, k)`` per-neuron contributions of the
            whole path (see "Joint attribution score (gate semantics)" and "Paper semantics"
            in docs/method.md).
        jas (Tensor): ``(batch,)`` joint attribution score of each path.
        delta (Tensor, optional): ``(batch,)`` convergence delta of the final JAS.
        targets (Tensor): ``(batch,)`` class explained for each image.
        method (str): Registry name of the method that found the paths.
        settings (dict): Everything needed to reproduce the run: ``mode``,
            ``n_steps``, ``approximation`` (Captum's quadrature name), ``k``,
            ``output``, and ``tol``, ``refine``, ``beam``, ``seed`` where they apply.
        scores (Tensor, optional): ``(batch, L, k)`` the method's own selection
            score of each chosen neuron.
        refined_layers (Tensor, optional): ``(batch,)`` how many layers the exact
            refinement changed (``LayerProgressiveNeuronPath`` with ``refine``).
    """

    paths: torch.Tensor
    contributions: torch.Tensor
    jas: torch.Tensor
    targets: torch.Tensor
    method: str
    settings: Dict[str, Any] = field(default_factory=dict)
    delta: Optional[torch.Tensor] = None
    scores: Optional[torch.Tensor] = None
    refined_layers: Optional[torch.Tensor] = None

    def __post_init__(self) -> None:
        if self.paths.dim() != 3:
            raise ValueError(f"paths must have shape (batch, L, k); got {tuple(self.paths.shape)}")
        batch = self.paths.shape[0]
        for name in ("contributions", "scores"):
            value = getattr(self, name)
            if value is not None and value.shape != self.paths.shape:
                raise ValueError(f"{name} must have shape {tuple(self.paths.shape)}; got {tuple(value.shape)}")
        for name in ("jas", "targets", "delta", "refined_layers"):
            value = getattr(self, name)
            if value is not None and value.shape != (batch,):
                raise ValueError(f"{name} must have shape ({batch},); got {tuple(value.shape)}")

    def to_path_records(
        self,
        image_ids: Optional[Sequence[Any]] = None,
        labels: Optional[Sequence[int]] = None,
        predictions: Optional[Sequence[int]] = None,
        model_id: Optional[str] = None,
    ) -> List[PathRecord]:
        """One :class:`~captum_paths.records.PathRecord` per image.

        ``image_ids`` default to the batch positions; ``labels``, ``predictions``
        and ``model_id`` to ``None``.
        """
        n = len(self)
        for name, value in (("image_ids", image_ids), ("labels", labels), ("predictions", predictions)):
            if value is not None and len(value) != n:
                raise ValueError(f"{name} must have one entry per image ({n}); got {len(value)}")
        # whole-batch tolist() gives the same Python values as per-row tolist(), faster
        paths = self.paths.tolist()
        contributions = self.contributions.double().tolist()
        jas = self.jas.tolist()
        targets = self.targets.tolist()
        delta = None if self.delta is None else self.delta.tolist()
        scores = None if self.scores is None else self.scores.double().tolist()
        refined = None if self.refined_layers is None else self.refined_layers.tolist()
        return [
            PathRecord(
                image_id=image_ids[i] if image_ids is not None else i,
                method=self.method,
                path=paths[i],
                target=int(targets[i]),
                label=_as_int(labels[i]) if labels is not None else None,
                prediction=_as_int(predictions[i]) if predictions is not None else None,
                contributions=contributions[i],
                jas=float(jas[i]),
                delta=None if delta is None else float(delta[i]),
                scores=None if scores is None else scores[i],
                refined_layers=None if refined is None else int(refined[i]),
                settings=dict(self.settings),
                model_id=model_id,
            )
            for i in range(n)
        ]

    def to_records(
        self,
        image_ids: Optional[Sequence[Any]] = None,
        labels: Optional[Sequence[int]] = None,
        predictions: Optional[Sequence[int]] = None,
        model_id: Optional[str] = None,
    ) -> List[Dict[str, Any]]:
        """One JSON-ready dict per image (see "Records" in docs/method.md).

        ``path`` and ``contributions`` are layer-major lists of ``k`` values per
        layer. The dicts are :meth:`PathRecord.to_dict` of :meth:`to_path_records`.
        """
        return [r.to_dict() for r in self.to_path_records(image_ids, labels, predictions, model_id)]

    @classmethod
    def from_records(cls, records: Sequence[RecordLike]) -> "PathResult":
        """Rebuild a result from records (dicts or :class:`PathRecord`) of one method and one setting;
        :class:`PathRecord` objects are used as they are, not parsed again.

        ``delta``, ``scores`` and ``refined_layers`` are ``None`` unless every
        record has them; ``settings`` are the first record's.
        """
        if not records:
            raise ValueError("records is empty: nothing to rebuild a PathResult from")
        records = as_path_records(records)
        methods = {r.method for r in records}
        if len(methods) != 1:
            raise ValueError(f"records mix several methods {sorted(methods)}; select one method first")
        for key in ("contributions", "jas"):
            lacking = _first_lacking(records, key)
            if lacking is not None:
                raise ValueError(f"record {lacking.image_id!r} has no {key!r}; a PathResult needs it")
        for r in records:
            if type(r.target) is not int:
                raise ValueError(f"record {r.image_id!r}: a PathResult needs an int target; got {r.target!r}")
        arrays = stack_records(records)

        def complete(key: str) -> bool:
            return _first_lacking(records, key) is None

        return cls(
            paths=torch.from_numpy(arrays.paths),
            contributions=torch.from_numpy(arrays.contributions).float(),
            jas=torch.from_numpy(arrays.jas).float(),
            targets=torch.tensor(arrays.targets, dtype=torch.long),
            method=methods.pop(),
            settings=arrays.settings,
            delta=torch.from_numpy(arrays.delta).float() if complete("delta") else None,
            scores=torch.from_numpy(arrays.scores).float() if complete("scores") else None,
            refined_layers=torch.from_numpy(arrays.refined_layers).long() if complete("refined_layers") else None,
        )


def _first_lacking(records: List[PathRecord], key: str) -> Optional[PathRecord]:
    """The first record whose field ``key`` is ``None``, if any."""
    return next((r for r in records if getattr(r, key) is None), None)


def _as_int(value: Any) -> Optional[int]:
    return None if value is None else int(value)
