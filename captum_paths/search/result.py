"""PathResult: the neuron paths found for a batch of images, as data."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

import torch

from captum_paths.records import SCHEMA_VERSION, upgrade_record

__all__ = ["PathResult"]


@dataclass
class PathResult:
    """Neuron paths of a batch, one path (``k`` neurons per layer) per image.

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

    def __len__(self) -> int:
        return self.paths.shape[0]

    @property
    def num_layers(self) -> int:
        return self.paths.shape[1]

    @property
    def k(self) -> int:
        return self.paths.shape[2]

    def to_records(
        self,
        image_ids: Optional[Sequence[Any]] = None,
        labels: Optional[Sequence[int]] = None,
        predictions: Optional[Sequence[int]] = None,
        model_id: Optional[str] = None,
    ) -> List[Dict[str, Any]]:
        """One JSON-ready dict per image (see "Records" in docs/method.md).

        ``path`` and ``contributions`` are layer-major lists of ``k`` values per layer.
        """
        n = len(self)
        for name, value in (("image_ids", image_ids), ("labels", labels), ("predictions", predictions)):
            if value is not None and len(value) != n:
                raise ValueError(f"{name} must have one entry per image ({n}); got {len(value)}")
        records = []
        for i in range(n):
            records.append(
                {
                    "schema": SCHEMA_VERSION,
                    "image_id": image_ids[i] if image_ids is not None else i,
                    "label": _as_int(labels[i]) if labels is not None else None,
                    "target": int(self.targets[i]),
                    "prediction": _as_int(predictions[i]) if predictions is not None else None,
                    "method": self.method,
                    "path": self.paths[i].tolist(),
                    "contributions": self.contributions[i].double().tolist(),
                    "jas": float(self.jas[i]),
                    "delta": None if self.delta is None else float(self.delta[i]),
                    "scores": None if self.scores is None else self.scores[i].double().tolist(),
                    "refined_layers": None if self.refined_layers is None else int(self.refined_layers[i]),
                    "settings": dict(self.settings),
                    "model_id": model_id,
                }
            )
        return records

    @classmethod
    def from_records(cls, records: Sequence[Dict[str, Any]]) -> "PathResult":
        """Rebuild a result from records of one method and one setting."""
        if not records:
            raise ValueError("records is empty: nothing to rebuild a PathResult from")
        records = [upgrade_record(r) for r in records]
        methods = {r["method"] for r in records}
        if len(methods) != 1:
            raise ValueError(f"records mix several methods {sorted(methods)}; select one method first")

        def optional(key, dtype):
            if any(r.get(key) is None for r in records):
                return None
            return torch.tensor([r[key] for r in records], dtype=dtype)

        return cls(
            paths=torch.tensor([r["path"] for r in records], dtype=torch.long),
            contributions=torch.tensor([r["contributions"] for r in records], dtype=torch.float32),
            jas=torch.tensor([r["jas"] for r in records], dtype=torch.float32),
            targets=torch.tensor([r["target"] for r in records], dtype=torch.long),
            method=methods.pop(),
            settings=dict(records[0].get("settings") or {}),
            delta=optional("delta", torch.float32),
            scores=optional("scores", torch.float32),
            refined_layers=optional("refined_layers", torch.long),
        )


def _as_int(value: Any) -> Optional[int]:
    return None if value is None else int(value)
