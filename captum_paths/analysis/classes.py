"""Class-level path analysis (see "Class-level analysis" in docs/method.md), from records alone.

Every function takes path records (see "Records" in docs/method.md) or a
:class:`PathTable` built from them, and returns pandas objects:

- :func:`neuron_frequencies`: how often each neuron is on the paths of a class;
- :func:`consensus_paths`: the class consensus path (mode per layer) and its support;
- :func:`shared_neurons`, :func:`shared_edges`: neurons and transitions used by
  several classes;
- :func:`typical_paths`: the images whose paths are most typical of a class;
- :func:`class_similarity`, :func:`nearest_classes`: class-to-class similarity;
- :func:`path_sharing`: do images of one class share path neurons more than
  images of different classes?

The common keyword arguments are ``method`` (records must hold one method unless
it is given), ``classes`` (restrict to some classes) and ``label_key`` (group by
``"label"``, ``"target"`` or ``"prediction"``). A path is the *set* of its
``(layer, neuron)`` pairs: ``L * k`` neurons.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Hashable, Iterable, List, Optional, Sequence, Union

import numpy as np
import pandas as pd
from scipy import sparse

from captum_paths.analysis.table import PathTable, as_table
from captum_paths.analysis.consensus import consensus_path

__all__ = [
    "neuron_frequencies",
    "consensus_paths",
    "consensus_path_lists",
    "shared_neurons",
    "shared_edges",
    "typical_paths",
    "class_similarity",
    "nearest_classes",
    "PathSharing",
    "path_sharing",
]

RecordsLike = Union[Sequence[Dict[str, Any]], PathTable]


def _table(records: RecordsLike, method=None, classes=None, label_key="label") -> PathTable:
    return as_table(records, method=method, classes=classes, label_key=label_key)


# --------------------------------------------------------------- frequencies
def neuron_frequencies(
    records: RecordsLike,
    method: Optional[str] = None,
    classes: Optional[Iterable[Hashable]] = None,
    label_key: str = "label",
) -> pd.DataFrame:
    """How often each neuron is chosen, per layer and class.

    Args:
        records: Path records (dicts or :class:`~captum_paths.records.PathRecord`), or a
            :class:`~captum_paths.analysis.PathTable` built from them.
        method (str, optional): The method whose records to use; needed when the records
            hold several. Default: the records' only method.
        classes (iterable, optional): Only these classes. Default: every class of the records.
        label_key (str, optional): The record key that names a path's class: ``"label"``,
            ``"target"`` or ``"prediction"``. Default: ``"label"``.

    Returns:
        DataFrame with columns ``class, layer, neuron, count, frequency``:
        ``count`` paths of the class hold the neuron at that layer, ``frequency``
        is ``count`` over the number of paths of the class (a layer's frequencies
        sum to ``k``). Only neurons with ``count > 0`` appear. Sorted by class,
        layer, decreasing count, neuron.
    """
    table = _table(records, method, classes, label_key)
    return _frequency_frame(table)


def _frequency_frame(table: PathTable) -> pd.DataFrame:
    ccls, code, count, _, _ = table.class_node_counts()
    layer, neuron = table.decode(code)
    sizes = table.class_sizes
    order = np.lexsort((neuron, -count, layer, ccls))
    return pd.DataFrame(
        {
            "class": _labels(table, ccls[order]),
            "layer": layer[order],
            "neuron": neuron[order],
            "count": count[order],
            "frequency": count[order] / sizes[ccls[order]],
        }
    )


def _labels(table: PathTable, codes: np.ndarray) -> pd.Series:
    """Class labels of class codes, keeping integer labels integer."""
    values = np.asarray(table.classes, dtype=object)[codes]
    return pd.Series(values).infer_objects()


# ------------------------------------------------------------------ consensus
def consensus_paths(
    records: RecordsLike,
    k: Optional[int] = None,
    method: Optional[str] = None,
    classes: Optional[Iterable[Hashable]] = None,
    label_key: str = "label",
) -> pd.DataFrame:
    """The consensus path of every class (:func:`captum_paths.analysis.consensus.consensus_path`):
    per layer and rank the mode of the class's rank-``r`` neurons, distinct within a
    layer (``k = 1``: the mode per layer). The pruning study uses the same consensus.

    Args:
        k (int, optional): Neurons per layer in the consensus; ranks beyond the
            records' ``k`` take the layer's most frequent neurons not yet taken.
            Default: the records' ``k``.
        records: Path records (dicts or :class:`~captum_paths.records.PathRecord`), or a
            :class:`~captum_paths.analysis.PathTable` built from them.
        method (str, optional): The method whose records to use; needed when the records
            hold several. Default: the records' only method.
        classes (iterable, optional): Only these classes. Default: every class of the records.
        label_key (str, optional): The record key that names a path's class: ``"label"``,
            ``"target"`` or ``"prediction"``. Default: ``"label"``.

    Returns:
        DataFrame with columns ``class, layer, rank, neuron, count, support``:
        ``support`` is the fraction of the class's paths that hold the neuron at
        that layer. Ties go to the smallest neuron index.
    """
    table = _table(records, method, classes, label_key)
    return _consensus_frame(table, k)


def _consensus_frame(table: PathTable, k: Optional[int]) -> pd.DataFrame:
    k = table.k if k is None else k
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive int; got {k!r}")
    codes = table.class_codes
    sizes = table.class_sizes
    rows = []
    for c in range(len(table.classes)):
        members = table.paths[codes == c]
        if not len(members):
            continue
        for layer, neurons in enumerate(consensus_path(members, int(k))):
            for rank, neuron in enumerate(neurons):
                count = int((members[:, layer, :] == neuron).any(axis=1).sum())
                rows.append((c, layer, rank, neuron, count, count / sizes[c]))
    frame = pd.DataFrame(rows, columns=["code", "layer", "rank", "neuron", "count", "support"])
    frame.insert(0, "class", _labels(table, frame.pop("code").to_numpy(dtype=int)))
    return frame


def consensus_path_lists(consensus: pd.DataFrame) -> Dict[Hashable, List[List[int]]]:
    """``{class: path}`` from :func:`consensus_paths` (layer-major lists of neurons)."""
    out: Dict[Hashable, List[List[int]]] = {}
    for cls, group in consensus.sort_values(["class", "layer", "rank"]).groupby("class", sort=True):
        out[cls] = [g["neuron"].astype(int).tolist() for _, g in group.groupby("layer", sort=True)]
    return out


# --------------------------------------------------------------------- shared
def _class_sets(table: PathTable, among: str, min_frequency: float, k: Optional[int]):
    """``(class_code, code, count)`` of the neurons each class uses."""
    if among == "paths":
        ccls, code, count, _, _ = table.class_node_counts()
        keep = count / table.class_sizes[ccls] >= min_frequency
        return ccls[keep], code[keep], count[keep]
    if among == "consensus":
        cons = _consensus_frame(table, k)
        lookup = {c: i for i, c in enumerate(table.classes)}
        ccls = cons["class"].map(lookup).to_numpy(np.int64)
        code = cons["layer"].to_numpy(np.int64) * table.width + cons["neuron"].to_numpy(np.int64)
        return ccls, code, cons["count"].to_numpy(np.int64)
    raise ValueError(f"among must be 'paths' or 'consensus'; got {among!r}")


def shared_neurons(
    records: RecordsLike,
    min_classes: int = 2,
    among: str = "paths",
    min_frequency: float = 0.0,
    k: Optional[int] = None,
    method: Optional[str] = None,
    classes: Optional[Iterable[Hashable]] = None,
    label_key: str = "label",
) -> pd.DataFrame:
    """Neurons used by at least ``min_classes`` classes.

    Args:
        min_classes (int, optional): Default: 2.
        among (str, optional): ``"paths"``: a class uses a neuron when at least
            ``min_frequency`` of its paths hold it (and at least one does);
            ``"consensus"``: when it is on the class's consensus path (``k``
            neurons per layer). Default: ``"paths"``.
        records: Path records (dicts or :class:`~captum_paths.records.PathRecord`), or a
            :class:`~captum_paths.analysis.PathTable` built from them.
        min_frequency (float, optional): With ``among="paths"``, the share of a class's paths
            that must hold the neuron for the class to use it. Default: 0.
        k (int, optional): Neurons per layer of a class's consensus path. Default: the
            records' ``k``.
        method (str, optional): The method whose records to use; needed when the records
            hold several. Default: the records' only method.
        classes (iterable, optional): Only these classes. Default: every class of the records.
        label_key (str, optional): The record key that names a path's class: ``"label"``,
            ``"target"`` or ``"prediction"``. Default: ``"label"``.

    Returns:
        DataFrame with columns ``layer, neuron, num_classes, classes, count``
        (``count``: paths of those classes through the neuron), sorted by
        decreasing ``num_classes`` and ``count``.
    """
    table = _table(records, method, classes, label_key)
    ccls, code, count = _class_sets(table, among, min_frequency, k)
    return _shared_frame(table, ccls, code, count, min_classes, edge=False)


def shared_edges(
    records: RecordsLike,
    min_classes: int = 2,
    among: str = "paths",
    min_frequency: float = 0.0,
    k: Optional[int] = None,
    method: Optional[str] = None,
    classes: Optional[Iterable[Hashable]] = None,
    label_key: str = "label",
) -> pd.DataFrame:
    """Transitions ``(layer, source) -> (layer + 1, target)`` used by at least ``min_classes`` classes.

    ``among`` as in :func:`shared_neurons`; with ``"consensus"`` the edges of a
    class are those between its consecutive consensus neurons.

    Args:
        records: Path records (dicts or :class:`~captum_paths.records.PathRecord`), or a
            :class:`~captum_paths.analysis.PathTable` built from them.
        min_classes (int, optional): The fewest classes that must use it. Default: 2.
        among (str, optional): ``"paths"`` or ``"consensus"``, as in :func:`shared_neurons`.
            Default: ``"paths"``.
        min_frequency (float, optional): With ``among="paths"``, the share of a class's paths
            that must hold the neuron for the class to use it. Default: 0.
        k (int, optional): Neurons per layer of a class's consensus path. Default: the
            records' ``k``.
        method (str, optional): The method whose records to use; needed when the records
            hold several. Default: the records' only method.
        classes (iterable, optional): Only these classes. Default: every class of the records.
        label_key (str, optional): The record key that names a path's class: ``"label"``,
            ``"target"`` or ``"prediction"``. Default: ``"label"``.

    Returns:
        DataFrame with columns ``layer, source, target, num_classes, classes, count``.
    """
    table = _table(records, method, classes, label_key)
    if among == "paths":
        ccls, key, count = table.class_edge_counts()
        keep = count / table.class_sizes[ccls] >= min_frequency
        ccls, key, count = ccls[keep], key[keep], count[keep]
    elif among == "consensus":
        cons = _consensus_frame(table, k)
        rows = []
        lookup = {c: i for i, c in enumerate(table.classes)}
        for cls, group in cons.groupby("class", sort=True):
            layers = [g["neuron"].to_numpy(np.int64) for _, g in group.groupby("layer", sort=True)]
            for l in range(len(layers) - 1):
                src, dst = np.meshgrid(layers[l], layers[l + 1], indexing="ij")
                key = (l * table.width + src.ravel()) * table.width + dst.ravel()
                rows.append(np.stack([np.full(len(key), lookup[cls]), key]))
        stacked = np.concatenate(rows, axis=1) if rows else np.zeros((2, 0), dtype=np.int64)
        ccls, key = stacked[0], stacked[1]
        # count: paths of the class that use the edge
        all_cls, all_key, all_count = table.class_edge_counts()
        index = pd.Series(all_count, index=pd.MultiIndex.from_arrays([all_cls, all_key]))
        count = index.reindex(pd.MultiIndex.from_arrays([ccls, key]), fill_value=0).to_numpy(np.int64)
    else:
        raise ValueError(f"among must be 'paths' or 'consensus'; got {among!r}")
    return _shared_frame(table, ccls, key, count, min_classes, edge=True)


def _shared_frame(table, ccls, key, count, min_classes, edge):
    if isinstance(min_classes, bool) or not isinstance(min_classes, (int, np.integer)) or min_classes < 1:
        raise ValueError(f"min_classes must be a positive int; got {min_classes!r}")
    columns = ["layer", "source", "target"] if edge else ["layer", "neuron"]
    columns += ["num_classes", "classes", "count"]
    if len(key) == 0:
        return pd.DataFrame(columns=columns)
    order = np.lexsort((ccls, key))
    ccls, key, count = ccls[order], key[order], count[order]
    uniq, starts, ncls = np.unique(key, return_index=True, return_counts=True)
    totals = np.add.reduceat(count, starts)
    keep = np.flatnonzero(ncls >= min_classes)
    labels = np.asarray(table.classes, dtype=object)
    cls_lists = [labels[ccls[starts[i] : starts[i] + ncls[i]]].tolist() for i in keep]
    if edge:
        layer, src, dst = table.decode_edges(uniq[keep])
        data = {"layer": layer, "source": src, "target": dst}
    else:
        layer, neuron = table.decode(uniq[keep])
        data = {"layer": layer, "neuron": neuron}
    data.update({"num_classes": ncls[keep], "classes": cls_lists, "count": totals[keep]})
    df = pd.DataFrame(data, columns=columns)
    sort = ["num_classes", "count", "layer"] + (["source", "target"] if edge else ["neuron"])
    return df.sort_values(sort, ascending=[False, False] + [True] * (len(sort) - 2), ignore_index=True)


# -------------------------------------------------------------------- typical
def typical_paths(
    records: RecordsLike,
    cls: Hashable,
    n: Optional[int] = 10,
    by: str = "consensus",
    method: Optional[str] = None,
    label_key: str = "label",
) -> pd.DataFrame:
    """The paths of class ``cls`` ranked by how typical they are of the class.

    Args:
        cls: The class.
        n (int, optional): How many to return (``None``: all). Default: 10.
        by (str, optional): ``"consensus"``: number of path neurons on the class
            consensus path (ties broken by frequency score); ``"frequency"``:
            frequency score, the sum over the path's neurons of their frequency
            in the class (ties broken by consensus matches). Default: ``"consensus"``.
        records: Path records (dicts or :class:`~captum_paths.records.PathRecord`), or a
            :class:`~captum_paths.analysis.PathTable` built from them.
        method (str, optional): The method whose records to use; needed when the records
            hold several. Default: the records' only method.
        label_key (str, optional): The record key that names a path's class: ``"label"``,
            ``"target"`` or ``"prediction"``. Default: ``"label"``.

    Returns:
        DataFrame with columns ``record`` (position in ``records``), ``image_id``,
        ``class``, ``consensus_matches``, ``consensus_fraction`` (matches over
        ``L * k``), ``frequency_score``, ``jas``. Remaining ties: record order.
    """
    if by not in ("consensus", "frequency"):
        raise ValueError(f"by must be 'consensus' or 'frequency'; got {by!r}")
    full = _table(records, method, None, label_key)
    if cls not in full.classes:
        raise ValueError(f"class {cls!r} has no paths; classes: {full.classes}")
    table = full.select([cls])
    ccls, code, count, _, _ = table.class_node_counts()
    freq = np.zeros(table.num_codes)
    freq[code] = count / len(table)
    cons = _consensus_frame(table, None)
    on_consensus = np.zeros(table.num_codes, dtype=bool)
    on_consensus[cons["layer"].to_numpy(np.int64) * table.width + cons["neuron"].to_numpy(np.int64)] = True
    codes, valid = table.codes(), table.valid()
    matches = (on_consensus[codes] & valid).sum(axis=(1, 2))
    score = np.where(valid, freq[codes], 0.0).sum(axis=(1, 2))
    position = np.arange(len(table))
    key = np.round(score, 9)  # equal sums of frequencies in another order tie
    if by == "consensus":
        order = np.lexsort((position, -key, -matches))
    else:
        order = np.lexsort((position, -matches, -key))
    if n is not None:
        order = order[:n]
    return pd.DataFrame(
        {
            "record": table.record_index[order],
            "image_id": [table.image_ids[i] for i in order],
            "class": [cls] * len(order),
            "consensus_matches": matches[order],
            "consensus_fraction": matches[order] / valid[0].sum() if len(table) else [],
            "frequency_score": score[order],
            "jas": table.jas[order],
        }
    )


# ----------------------------------------------------------------- similarity
def class_similarity(
    records: RecordsLike,
    metric: str = "cosine",
    k: Optional[int] = None,
    method: Optional[str] = None,
    classes: Optional[Iterable[Hashable]] = None,
    label_key: str = "label",
) -> pd.DataFrame:
    """Class-to-class similarity as a square DataFrame (index and columns: classes).

    The diagonal is 1. Sparse matrices keep this cheap for thousands of classes
    and ``L * d_ff`` neurons.

    Args:
        metric (str, optional): ``"cosine"``: cosine of the classes' neuron-count
            vectors over all ``(layer, neuron)`` (count = paths of the class that
            hold the neuron; the cosine is the same for frequencies);
            ``"jaccard"``: Jaccard index of the consensus paths as sets of
            ``(layer, neuron)`` (``k`` neurons per layer). Default: ``"cosine"``.
        records: Path records (dicts or :class:`~captum_paths.records.PathRecord`), or a
            :class:`~captum_paths.analysis.PathTable` built from them.
        k (int, optional): Neurons per layer of a class's consensus path. Default: the
            records' ``k``.
        method (str, optional): The method whose records to use; needed when the records
            hold several. Default: the records' only method.
        classes (iterable, optional): Only these classes. Default: every class of the records.
        label_key (str, optional): The record key that names a path's class: ``"label"``,
            ``"target"`` or ``"prediction"``. Default: ``"label"``.

    Returns:
        DataFrame ``(classes, classes)`` of similarities, rows and columns in class order.
    """
    table = _table(records, method, classes, label_key)
    n_cls = len(table.classes)
    if metric == "cosine":
        ccls, code, count, _, _ = table.class_node_counts()
        x = sparse.csr_matrix((count.astype(np.float64), (ccls, code)), shape=(n_cls, table.num_codes))
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        x = sparse.diags(1.0 / np.where(norms > 0, norms, 1.0)) @ x
        sim = np.asarray((x @ x.T).todense())
    elif metric == "jaccard":
        cons = _consensus_frame(table, k)
        lookup = {c: i for i, c in enumerate(table.classes)}
        rows = cons["class"].map(lookup).to_numpy(np.int64)
        cols = cons["layer"].to_numpy(np.int64) * table.width + cons["neuron"].to_numpy(np.int64)
        b = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n_cls, table.num_codes))
        inter = np.asarray((b @ b.T).todense())
        size = np.asarray(b.sum(axis=1)).ravel()
        union = size[:, None] + size[None, :] - inter
        sim = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    else:
        raise ValueError(f"metric must be 'cosine' or 'jaccard'; got {metric!r}")
    np.fill_diagonal(sim, 1.0)
    index = pd.Index(table.classes, name="class")
    return pd.DataFrame(np.clip(sim, 0.0, 1.0), index=index, columns=index.copy())


def nearest_classes(
    records_or_similarity: Union[RecordsLike, pd.DataFrame],
    cls: Hashable,
    n: Optional[int] = 5,
    metric: str = "cosine",
    **kwargs: Any,
) -> pd.DataFrame:
    """The classes most similar to ``cls``.

    Args:
        records_or_similarity: Records / a table (the similarity is computed with
            :func:`class_similarity` and ``metric`` / ``kwargs``), or a square
            similarity DataFrame.
        n (int, optional): How many (``None``: all others). Default: 5.
        cls: The class.
        metric (str, optional): ``"cosine"`` or ``"jaccard"``, as in :func:`class_similarity`.
            Default: ``"cosine"``.

    Returns:
        DataFrame with columns ``class, similarity``, most similar first (ties:
        class order), ``cls`` itself excluded.
    """
    if isinstance(records_or_similarity, pd.DataFrame):
        sim = records_or_similarity
    else:
        sim = class_similarity(records_or_similarity, metric=metric, **kwargs)
    if cls not in sim.index:
        raise ValueError(f"class {cls!r} is not in the similarity table; classes: {list(sim.index)}")
    row = sim.loc[cls].drop(index=cls)
    order = np.lexsort((np.arange(len(row)), -row.to_numpy()))
    if n is not None:
        order = order[:n]
    return pd.DataFrame({"class": row.index[order].tolist(), "similarity": row.to_numpy()[order]})


# -------------------------------------------------------------------- sharing
@dataclass
class PathSharing:
    """Within- vs between-class path sharing (:func:`path_sharing`).

    Attributes:
        within (float): Mean Jaccard index of the paths of two images of the same
            class, pooled over all same-class pairs.
        between (float): The same over pairs of images of different classes.
        within_std, between_std (float): Standard deviation over those pairs.
        within_pairs, between_pairs (int): Pairs averaged (all of them when
            ``exact``, else the sample size).
        exact (bool): Whether every pair was used.
        per_class (DataFrame): ``class, paths, within, between, ratio,
            within_pairs, between_pairs``: for each class, its same-class pairs and
            its pairs with every other class.
        p_value (float, optional): Label-permutation p-value of ``within -
            between`` (``None`` when no permutations were run).
        permutations (int): Permutations run.
    """

    within: float
    between: float
    within_std: float
    between_std: float
    within_pairs: int
    between_pairs: int
    exact: bool
    per_class: pd.DataFrame = field(repr=False)
    p_value: Optional[float] = None
    permutations: int = 0

    @property
    def ratio(self) -> float:
        """``within / between`` (inf when nothing is shared between classes)."""
        if self.between == 0:
            return float("inf") if self.within > 0 else float("nan")
        return self.within / self.between

    def to_frame(self) -> pd.DataFrame:
        """A one-row summary."""
        return pd.DataFrame(
            [
                {
                    "within": self.within,
                    "between": self.between,
                    "ratio": self.ratio,
                    "within_std": self.within_std,
                    "between_std": self.between_std,
                    "within_pairs": self.within_pairs,
                    "between_pairs": self.between_pairs,
                    "exact": self.exact,
                    "p_value": self.p_value,
                    "permutations": self.permutations,
                }
            ]
        )


def path_sharing(
    records: RecordsLike,
    max_pairs: int = 1_000_000,
    seed: int = 0,
    permutations: int = 0,
    method: Optional[str] = None,
    classes: Optional[Iterable[Hashable]] = None,
    label_key: str = "label",
) -> PathSharing:
    """Do images of the same class share path neurons more than images of different classes?

    The Jaccard index of two paths is ``|A ∩ B| / |A ∪ B|`` of their sets of
    ``(layer, neuron)`` pairs. Its mean over same-class pairs (``within``) is
    compared with its mean over different-class pairs (``between``).

    Args:
        max_pairs (int, optional): When the records have at most this many pairs
            (``N (N - 1) / 2``), every pair is used (``exact``). Otherwise
            ``max_pairs`` same-class pairs are drawn uniformly (with replacement)
            from all same-class pairs, and ``max_pairs`` different-class pairs
            from all different-class pairs, with ``numpy.random.default_rng(seed)``;
            the per-class values are then estimates from the pairs that involve
            the class. Default: 1,000,000.
        seed (int, optional): Seed of the pair sample and of the permutations.
            Default: 0.
        permutations (int, optional): Shuffle the labels this many times and
            report the fraction of shuffles whose ``within - between`` reaches the
            observed one (with the +1 correction). Needs the exact mode.
            Default: 0.
        records: Path records (dicts or :class:`~captum_paths.records.PathRecord`), or a
            :class:`~captum_paths.analysis.PathTable` built from them.
        method (str, optional): The method whose records to use; needed when the records
            hold several. Default: the records' only method.
        classes (iterable, optional): Only these classes. Default: every class of the records.
        label_key (str, optional): The record key that names a path's class: ``"label"``,
            ``"target"`` or ``"prediction"``. Default: ``"label"``.

    Returns:
        :class:`PathSharing`: ``within``, ``between``, their ratio and spreads, the pair
        counts, whether every pair was used, the ``per_class`` DataFrame and the
        permutation ``p_value`` (``None`` without permutations).
    """
    table = _table(records, method, classes, label_key)
    n = len(table)
    if isinstance(max_pairs, bool) or not isinstance(max_pairs, (int, np.integer)) or max_pairs < 1:
        raise ValueError(f"max_pairs must be a positive int; got {max_pairs!r}")
    total = n * (n - 1) // 2
    exact = total <= max_pairs
    if permutations and not exact:
        raise ValueError(
            f"permutations need every pair ({total} pairs > max_pairs={max_pairs}); raise max_pairs or "
            "drop permutations"
        )
    rng = np.random.default_rng(seed)
    codes = table.class_codes
    if exact:
        i, j = np.triu_indices(n, k=1)
        jac = _pair_jaccard(table, i, j)
        same = codes[i] == codes[j]
        wi, wj, wjac = i[same], j[same], jac[same]
        bi, bj, bjac = i[~same], j[~same], jac[~same]
    else:
        wi, wj = _sample_within(codes, len(table.classes), max_pairs, rng)
        bi, bj = _sample_between(codes, max_pairs, rng)
        wjac, bjac = _pair_jaccard(table, wi, wj), _pair_jaccard(table, bi, bj)

    n_cls = len(table.classes)
    w_sum = np.bincount(codes[wi], weights=wjac, minlength=n_cls)
    w_n = np.bincount(codes[wi], minlength=n_cls)
    b_sum = np.bincount(codes[bi], weights=bjac, minlength=n_cls)
    b_sum += np.bincount(codes[bj], weights=bjac, minlength=n_cls)
    b_n = np.bincount(codes[bi], minlength=n_cls) + np.bincount(codes[bj], minlength=n_cls)
    with np.errstate(invalid="ignore", divide="ignore"):
        w_mean = np.where(w_n > 0, w_sum / np.maximum(w_n, 1), np.nan)
        b_mean = np.where(b_n > 0, b_sum / np.maximum(b_n, 1), np.nan)
        ratio = w_mean / b_mean
    per_class = pd.DataFrame(
        {
            "class": table.classes,
            "paths": table.class_sizes,
            "within": w_mean,
            "between": b_mean,
            "ratio": ratio,
            "within_pairs": w_n,
            "between_pairs": b_n,
        }
    )

    p_value = None
    if permutations:
        observed = _mean(wjac) - _mean(bjac)
        hits = 0
        for _ in range(int(permutations)):
            perm = rng.permutation(codes)
            same = perm[i] == perm[j]
            hits += _mean(jac[same]) - _mean(jac[~same]) >= observed - 1e-12
        p_value = (hits + 1) / (permutations + 1)
    return PathSharing(
        within=_mean(wjac),
        between=_mean(bjac),
        within_std=float(np.std(wjac)) if len(wjac) else float("nan"),
        between_std=float(np.std(bjac)) if len(bjac) else float("nan"),
        within_pairs=int(len(wjac)),
        between_pairs=int(len(bjac)),
        exact=bool(exact),
        per_class=per_class,
        p_value=p_value,
        permutations=int(permutations),
    )


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else float("nan")


def _pair_jaccard(table: PathTable, i: np.ndarray, j: np.ndarray, chunk: int = 1 << 16) -> np.ndarray:
    """Jaccard index of the path sets of rows ``i[m]`` and ``j[m]``."""
    paths, valid = table.paths, table.valid()
    size = valid.sum(axis=(1, 2))
    out = np.empty(len(i), dtype=np.float64)
    for s in range(0, len(i), chunk):
        a, b = i[s : s + chunk], j[s : s + chunk]
        if table.k == 1:
            inter = (paths[a, :, 0] == paths[b, :, 0]).sum(axis=1)
        else:
            eq = paths[a][:, :, :, None] == paths[b][:, :, None, :]
            eq &= valid[a][:, :, :, None] & valid[b][:, :, None, :]
            inter = eq.sum(axis=(1, 2, 3))
        union = size[a] + size[b] - inter
        out[s : s + chunk] = np.divide(inter, union, out=np.zeros(len(a)), where=union > 0)
    return out


def _sample_within(codes: np.ndarray, n_cls: int, m: int, rng: np.random.Generator):
    """``m`` same-class pairs, uniform over all same-class pairs (with replacement)."""
    sizes = np.bincount(codes, minlength=n_cls)
    weights = sizes * (sizes - 1) / 2.0
    if weights.sum() == 0:
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    order = np.argsort(codes, kind="stable")
    start = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    cls = rng.choice(n_cls, size=m, p=weights / weights.sum())
    a = rng.integers(0, sizes[cls])
    b = rng.integers(0, sizes[cls] - 1)
    b = b + (b >= a)
    return order[start[cls] + a], order[start[cls] + b]


def _sample_between(codes: np.ndarray, m: int, rng: np.random.Generator):
    """``m`` different-class pairs, uniform over all of them (rejection sampling)."""
    n = len(codes)
    if n < 2 or np.all(codes == codes[0]):
        empty = np.zeros(0, dtype=np.int64)
        return empty, empty
    got_i, got_j, have = [], [], 0
    while have < m:
        draw = max(2 * (m - have), 1024)
        i = rng.integers(0, n, draw)
        j = rng.integers(0, n, draw)
        keep = codes[i] != codes[j]
        got_i.append(i[keep])
        got_j.append(j[keep])
        have += int(keep.sum())
    return np.concatenate(got_i)[:m], np.concatenate(got_j)[:m]
