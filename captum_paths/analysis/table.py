"""Path records as arrays: the vectorised form every analysis works on.

A list of records (:meth:`PathResult.to_records`, or
:class:`~captum_paths.records.PathRecord`) is turned once into a
:class:`PathTable`: a ``(records, L, k)`` array of neuron indices, the matching
contributions, and an integer class code per record. Every count in
:mod:`captum_paths.analysis` is then a ``np.unique`` / ``np.bincount`` over
*neuron codes* ``layer * width + neuron``, never a Python loop over records.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Iterable, List, Optional, Sequence, Union

import numpy as np

from captum_paths.records import RecordLike, StackedPaths, as_path_records, stack_records, unit_kinds

__all__ = ["PathTable", "as_table"]

Records = Sequence[RecordLike]


@dataclass
class PathTable(StackedPaths):
    """The paths of one method, with the class of each path, as numpy arrays.

    ``len(table)``, :attr:`num_layers`, :attr:`k` and :attr:`shape` are those of
    :attr:`paths` (:class:`~captum_paths.records.StackedPaths`, shared with
    :class:`~captum_paths.search.PathResult`).

    Attributes:
        paths (ndarray): ``(N, L, k)`` int64 neuron indices, layer-major.
        contributions (ndarray): ``(N, L, k)`` float64 per-neuron contributions
            (NaN where a record has none).
        class_codes (ndarray): ``(N,)`` int64 index into :attr:`classes`.
        classes (list): The distinct class labels, sorted.
        image_ids (list): ``N`` image ids.
        jas (ndarray): ``(N,)`` float64 joint attribution score (NaN if absent).
        method (str): The path method all records share.
        label_key (str): The record key that gave the class (``"label"``,
            ``"target"`` or ``"prediction"``).
        record_index (ndarray): ``(N,)`` position of each row in the records list
            the table was built from (after filtering).
        width (int): One more than the largest neuron index (neuron codes are
            ``layer * width + neuron``).
        kinds (list of str, optional): ``"neuron"`` or ``"head"`` per layer, for paths
            over attention heads or mixed sites (the records' ``settings["kinds"]``);
            ``None`` when every layer holds neurons. Indices in head layers are heads.
    """

    paths: np.ndarray
    contributions: np.ndarray
    class_codes: np.ndarray
    classes: List[Hashable]
    image_ids: List[Any]
    jas: np.ndarray
    method: str
    label_key: str
    record_index: np.ndarray
    width: int
    kinds: Optional[List[str]] = None

    # --------------------------------------------------------------- building
    @classmethod
    def from_records(
        cls,
        records: Records,
        method: Optional[str] = None,
        classes: Optional[Iterable[Hashable]] = None,
        label_key: str = "label",
    ) -> "PathTable":
        """Select records and stack them.

        Dicts are parsed by :meth:`~captum_paths.records.PathRecord.from_dict`;
        :class:`~captum_paths.records.PathRecord` objects (what :meth:`Run.records()
        <captum_paths.pipeline.Run.records>` returns) are used as they are, not parsed
        again. The records are stacked by :func:`~captum_paths.records.stack_records`.

        Args:
            records (list of dict or PathRecord): Path records.
            method (str, optional): Keep only this method's records. ``None``
                requires all records to share one method (mixing methods would
                count each image once per method). Default: ``None``.
            classes (iterable, optional): Keep only records of these classes.
                Default: all.
            label_key (str, optional): Record key holding the class: ``"label"``
                (ground truth), ``"target"`` (explained class) or ``"prediction"``.
                Default: ``"label"``.
        """
        if isinstance(records, PathTable):
            raise TypeError("records is already a PathTable; use table.select(...) to filter it")
        records = list(records)
        if not records:
            raise ValueError("records is empty: no paths to analyse")
        if label_key not in ("label", "target", "prediction"):
            raise ValueError(f"label_key must be 'label', 'target' or 'prediction'; got {label_key!r}")
        parsed = as_path_records(records)
        methods = sorted({r.method for r in parsed})
        if method is None:
            if len(methods) > 1:
                raise ValueError(
                    f"records mix the methods {methods}; pass method=... to analyse one of them"
                )
            method = methods[0]
        keep = [i for i, r in enumerate(parsed) if r.method == method]
        if not keep:
            raise ValueError(f"no record has method {method!r}; the records hold {methods}")
        if classes is not None:
            wanted = set(classes)
            keep = [i for i in keep if getattr(parsed[i], label_key) in wanted]
            if not keep:
                raise ValueError(f"no {method!r} record has a {label_key} in {sorted(wanted, key=str)}")
        selected = [parsed[i] for i in keep]
        labels = [getattr(r, label_key) for r in selected]
        missing = sum(label is None for label in labels)
        if missing:
            hint = " (pass label_key='target' to group by the explained class)" if label_key != "target" else ""
            raise ValueError(f"{missing} of {len(selected)} records have no {label_key!r}{hint}")
        arrays = stack_records(selected)
        uniq, codes = _factorize(labels)
        return cls(
            paths=arrays.paths,
            contributions=arrays.contributions,
            class_codes=codes,
            classes=uniq,
            image_ids=arrays.image_ids,
            jas=arrays.jas,
            method=method,
            label_key=label_key,
            record_index=np.asarray(keep, dtype=np.int64),
            width=int(arrays.paths.max()) + 1 if arrays.paths.size else 0,
            kinds=unit_kinds(arrays.settings, arrays.paths.shape[1]) if "kinds" in arrays.settings else None,
        )

    def select(self, classes: Iterable[Hashable]) -> "PathTable":
        """The rows of some classes (class list and codes renumbered)."""
        wanted = list(classes)
        unknown = [c for c in wanted if c not in self.classes]
        if unknown:
            raise ValueError(f"unknown classes {unknown}; the table holds {self.classes}")
        old = np.asarray([self.classes.index(c) for c in wanted], dtype=np.int64)
        rows = np.flatnonzero(np.isin(self.class_codes, old))
        kept = sorted(set(wanted), key=self.classes.index)
        remap = np.full(len(self.classes), -1, dtype=np.int64)
        remap[[self.classes.index(c) for c in kept]] = np.arange(len(kept))
        return PathTable(
            paths=self.paths[rows],
            contributions=self.contributions[rows],
            class_codes=remap[self.class_codes[rows]],
            classes=kept,
            image_ids=[self.image_ids[i] for i in rows],
            jas=self.jas[rows],
            method=self.method,
            label_key=self.label_key,
            record_index=self.record_index[rows],
            width=self.width,
            kinds=self.kinds,
        )

    def pooled(self, name: Hashable = "all") -> "PathTable":
        """The same rows as one class ``name``."""
        return PathTable(
            paths=self.paths,
            contributions=self.contributions,
            class_codes=np.zeros(len(self), dtype=np.int64),
            classes=[name],
            image_ids=self.image_ids,
            jas=self.jas,
            method=self.method,
            label_key=self.label_key,
            record_index=self.record_index,
            width=self.width,
            kinds=self.kinds,
        )

    def layer_summary(self) -> "pd.DataFrame":
        """One row per layer: how concentrated the paths are there and how much they carry.

        Columns: ``layer``; ``kind`` (``"neuron"`` or ``"head"``, only when the paths
        hold heads, :attr:`kinds`); ``distinct_neurons`` (units, over every path and rank);
        ``top_neuron`` and ``top_share`` (the most frequent neuron, lowest index
        on ties, and the fraction of paths that hold it); ``mean_contribution``
        (the layer's summed contribution per path, mean over paths with
        contributions) and ``share_of_jas`` (mean of that sum divided by the
        path's JAS, over paths with a non-zero JAS).
        """
        import pandas as pd

        rows = []
        per_layer = np.nansum(self.contributions, axis=2)  # (N, L)
        has = ~np.isnan(self.contributions).all(axis=2)
        ok_jas = np.isfinite(self.jas) & (self.jas != 0)
        for layer in range(self.num_layers):
            held = self.paths[:, layer, :]  # (N, k)
            present = np.zeros((len(self), self.width), dtype=bool)
            present[np.arange(len(self))[:, None], held] = True
            holders = present.sum(axis=0)
            top = int(np.argmax(holders))
            with_c = has[:, layer]
            share = with_c & ok_jas
            rows.append({
                "layer": layer,
                **({"kind": self.kinds[layer]} if self.kinds is not None else {}),
                "distinct_neurons": int(np.count_nonzero(holders)),
                "top_neuron": top,
                "top_share": float(holders[top] / len(self)),
                "mean_contribution": float(per_layer[with_c, layer].mean()) if with_c.any() else float("nan"),
                "share_of_jas": float((per_layer[share, layer] / self.jas[share]).mean()) if share.any() else float("nan"),
            })
        return pd.DataFrame(rows)

    # ------------------------------------------------------------- properties
    @property
    def num_codes(self) -> int:
        return self.num_layers * self.width

    @property
    def class_sizes(self) -> np.ndarray:
        """``(C,)`` number of paths of each class."""
        return np.bincount(self.class_codes, minlength=len(self.classes))

    @property
    def labels(self) -> List[Hashable]:
        """The class label of each row."""
        return [self.classes[c] for c in self.class_codes]

    def codes(self) -> np.ndarray:
        """``(N, L, k)`` neuron codes ``layer * width + neuron``."""
        layer = np.arange(self.num_layers, dtype=np.int64)[None, :, None]
        return layer * self.width + self.paths

    def decode(self, codes: np.ndarray):
        """``(layer, neuron)`` arrays of neuron codes."""
        codes = np.asarray(codes, dtype=np.int64)
        return codes // self.width, codes % self.width

    def valid(self) -> np.ndarray:
        """``(N, L, k)`` True for the first occurrence of a neuron within its layer.

        Paths hold distinct neurons per layer, so this is all True unless a record
        repeats a neuron; repeats are then counted once, so that every count
        means "number of paths that use the neuron".
        """
        if self.k == 1:
            return np.ones(self.paths.shape, dtype=bool)
        p = self.paths
        dup = (p[:, :, :, None] == p[:, :, None, :]) & np.tril(np.ones((self.k, self.k), dtype=bool), -1)
        return ~dup.any(axis=3)

    # ------------------------------------------------------------ aggregation
    def class_node_counts(self):
        """Per (class, neuron code): number of paths, and the sum and number of contributions.

        Returns:
            ``(class_code, code, count, contribution_sum, contribution_n)``, 1-d
            arrays of equal length, sorted by class then code.
        """
        codes = self.codes()
        valid = self.valid()
        cls = np.broadcast_to(self.class_codes[:, None, None], codes.shape)[valid]
        key = cls * self.num_codes + codes[valid]
        uniq, inverse, count = np.unique(key, return_inverse=True, return_counts=True)
        contrib = self.contributions[valid]
        finite = np.isfinite(contrib)
        csum = np.bincount(inverse, weights=np.where(finite, contrib, 0.0), minlength=len(uniq))
        cn = np.bincount(inverse, weights=finite, minlength=len(uniq)).astype(np.int64)
        return uniq // self.num_codes, uniq % self.num_codes, count, csum, cn

    def edge_keys(self):
        """Key of every (path, consecutive-layer neuron pair), and which ones count.

        An edge joins each path neuron of layer ``l`` to each path neuron of layer
        ``l + 1`` of the same path (``k * k`` edges per layer pair). Its key is
        ``(layer * width + source neuron) * width + target neuron``.

        Returns:
            ``(keys, valid)``, both ``(N, L - 1, k, k)``; ``valid`` drops pairs
            involving a neuron repeated within its layer.
        """
        p, valid = self.paths, self.valid()
        src, dst = p[:, :-1, :, None], p[:, 1:, None, :]
        both = valid[:, :-1, :, None] & valid[:, 1:, None, :]
        layer = np.arange(self.num_layers - 1, dtype=np.int64)[None, :, None, None]
        key = (layer * self.width + src) * self.width + dst
        return key, both

    def class_edge_counts(self):
        """Per (class, edge): number of paths. Returns ``(class_code, edge_key, count)``."""
        if self.num_layers < 2:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, empty
        key, both = self.edge_keys()
        cls = np.broadcast_to(self.class_codes[:, None, None, None], key.shape)[both]
        span = self.num_codes * self.width
        uniq, count = np.unique(cls * span + key[both], return_counts=True)
        return uniq // span, uniq % span, count

    def decode_edges(self, keys: np.ndarray):
        """``(layer, source neuron, target neuron)`` of edge keys (target is in ``layer + 1``)."""
        keys = np.asarray(keys, dtype=np.int64)
        return keys // (self.width * self.width), (keys // self.width) % self.width, keys % self.width


def as_table(
    records: Union[Records, PathTable],
    method: Optional[str] = None,
    classes: Optional[Iterable[Hashable]] = None,
    label_key: str = "label",
) -> PathTable:
    """A :class:`PathTable` from records, or the given table (filtered by ``classes``).

    A table keeps the method and the grouping (``label_key``) it was built with;
    ``label_key`` is ignored for tables.
    """
    if isinstance(records, PathTable):
        if method is not None and method != records.method:
            raise ValueError(f"the table holds method {records.method!r}, not {method!r}")
        return records if classes is None else records.select(classes)
    return PathTable.from_records(records, method=method, classes=classes, label_key=label_key)


def _factorize(labels: Sequence[Hashable]):
    """Sorted distinct labels and the code of each label (ints as Python ints)."""
    labels = [_native(x) for x in labels]
    try:
        uniq = sorted(set(labels))
    except TypeError:
        uniq = sorted(set(labels), key=str)
    lookup = {c: i for i, c in enumerate(uniq)}
    return uniq, np.fromiter((lookup[x] for x in labels), dtype=np.int64, count=len(labels))


def _native(x: Any) -> Any:
    if isinstance(x, np.generic):
        return x.item()
    return x
