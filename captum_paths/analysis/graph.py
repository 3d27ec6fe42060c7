"""PathGraph: the neuron paths of many images as one layered networkx graph.

Nodes are neurons ``(layer, neuron)``; an edge joins two neurons of consecutive
layers that appear in the same path. The graph is built from aggregated counts
(one ``np.unique`` over all paths), never record by record, so 50,000 paths of a
24-layer model take seconds; its size is the number of *distinct* neurons and
transitions, not the number of paths.
"""
from __future__ import annotations

import gc
import json
import os
import re
from pathlib import Path
from typing import Any, Dict, Hashable, Iterable, List, Optional, Sequence, Tuple, Union

import networkx as nx
import numpy as np
import pandas as pd

from captum_paths.analysis.table import PathTable, as_table

__all__ = ["PathGraph", "node_key", "parse_node_key"]

Node = Tuple[int, int]
PathLike = Union[str, os.PathLike]

_NODE_KEY = re.compile(r"^L(-?\d+):N(-?\d+)$")
# graph attribute that lists which attributes were stored as JSON strings
_JSON_ATTRS = "json_attributes"


def node_key(node: Node) -> str:
    """The string id of a node in files: ``(3, 17)`` -> ``"L3:N17"``."""
    layer, neuron = node
    return f"L{int(layer)}:N{int(neuron)}"


def parse_node_key(key: str) -> Node:
    """Inverse of :func:`node_key`."""
    match = _NODE_KEY.match(str(key))
    if match is None:
        raise ValueError(f"not a path-graph node id: {key!r} (expected 'L<layer>:N<neuron>')")
    return int(match.group(1)), int(match.group(2))


class PathGraph:
    """A layered ``networkx.DiGraph`` of neuron paths.

    Nodes are ``(layer, neuron)`` tuples with attributes

    - ``layer``, ``neuron`` (int);
    - ``count`` (int): number of paths through the neuron;
    - ``frequency`` (float): ``count / num_paths``;
    - ``mean_contribution`` (float): mean per-neuron contribution over those paths
      (NaN when the records carry none);
    - ``classes`` (list): the classes whose paths use it, sorted;
      ``class_counts`` (list of int) and ``class_mean_contributions`` (list of
      float), aligned with ``classes``.

    Edges ``(layer, a) -> (layer + 1, b)`` join the path neurons of consecutive
    layers of one path (every neuron of layer ``l`` to every neuron of layer
    ``l + 1`` when ``k > 1``), with ``count``, ``frequency``, ``classes`` and
    ``class_counts``. The graph attributes hold ``num_paths``, ``num_layers``,
    ``k``, ``method``, ``label_key``, ``classes`` and ``class_sizes``
    (paths per class, aligned with ``classes``).

    :meth:`with_causal_edges` adds causal edge weights beside the co-occurrence counts
    (:mod:`captum_paths.analysis.causal_edges`): on every edge ``causal_count`` (images whose
    effect was measured), ``causal_effect`` (their mean normalised effect of the source on the
    target), ``causal_share_above_floor`` (the share of them above the noise floor), and per
    class, aligned with ``classes``, ``class_causal_counts``, ``class_causal_effects`` and
    ``class_causal_shares`` (0 and NaN for a class without a measurement); the graph attributes
    ``causal_images``, ``causal_ablation``, ``causal_scale`` and ``causal_noise_quantile`` say how.

    Build it with :meth:`from_records`; ``.graph`` is the ``networkx.DiGraph``, so
    every networkx algorithm applies (e.g. ``nx.dag_longest_path(pg.graph,
    weight="count")`` is the most travelled route).

    Args:
        graph (networkx.DiGraph): A graph with the attributes above.

    Examples::

        >>> pg = PathGraph.from_records(records, min_count=2)
        >>> pg.graph.nodes[(3, 17)]["count"]
        >>> pg.for_class(7).top_nodes(n=3)
        >>> pg.to_graphml("paths.graphml"); PathGraph.from_graphml("paths.graphml")
        >>> pg = pg.with_causal_edges(edges.to_frame(labels=labels, consecutive_only=True))
        >>> pg.graph.edges[(3, 17), (4, 2)]["causal_effect"]
    """

    def __init__(self, graph: nx.DiGraph) -> None:
        if not isinstance(graph, nx.DiGraph):
            raise TypeError(f"graph must be a networkx.DiGraph; got {type(graph).__name__}")
        self.graph = graph

    # ---------------------------------------------------------------- building
    @classmethod
    def from_records(
        cls,
        records: Union[Sequence[Dict[str, Any]], PathTable],
        method: Optional[str] = None,
        classes: Optional[Iterable[Hashable]] = None,
        min_count: int = 1,
        label_key: str = "label",
    ) -> "PathGraph":
        """Build the graph of some paths.

        Args:
            records (list of dict or PathTable): Path records.
            method (str, optional): Use this method's records; ``None`` requires
                the records to hold one method. Default: ``None``.
            classes (iterable, optional): Use only paths of these classes (one
                class: that class's path graph). Default: all.
            min_count (int, optional): Drop neurons and edges used by fewer paths.
                Counts, frequencies and ``num_paths`` still refer to all selected
                paths. Default: 1.
            label_key (str, optional): Record key of the class (``"label"``,
                ``"target"``, ``"prediction"``). Default: ``"label"``.
        """
        table = as_table(records, method=method, classes=classes, label_key=label_key)
        return cls.from_table(table, min_count=min_count)

    @classmethod
    def from_table(cls, table: PathTable, min_count: int = 1) -> "PathGraph":
        """Build the graph of a :class:`PathTable` (see :meth:`from_records`)."""
        _check_min_count(min_count)
        # The graph is hundreds of thousands of new dicts and lists and no cycles:
        # pausing the cyclic garbage collector avoids re-scanning them over and over.
        enabled = gc.isenabled()
        gc.disable()
        try:
            return cls._build(table, min_count)
        finally:
            if enabled:
                gc.enable()

    @classmethod
    def _build(cls, table: PathTable, min_count: int) -> "PathGraph":
        n_paths = len(table)
        g = nx.DiGraph(
            num_paths=int(n_paths),
            num_layers=int(table.num_layers),
            k=int(table.k),
            method=str(table.method),
            label_key=str(table.label_key),
            classes=list(table.classes),
            class_sizes=[int(c) for c in table.class_sizes],
        )
        classes = table.classes

        # nodes: aggregate per (class, neuron), then per neuron
        ccls, code, count, csum, cn = table.class_node_counts()
        order = np.lexsort((ccls, code))  # by neuron code, then class
        ccls, code, count, csum, cn = ccls[order], code[order], count[order], csum[order], cn[order]
        starts, ends = _runs(code)
        totals = _run_sums(count, starts)
        sums, ns = _run_sums(csum, starts), _run_sums(cn, starts)
        means = np.divide(sums, ns, out=np.full(len(sums), np.nan), where=ns > 0)
        class_means = np.divide(csum, cn, out=np.full(len(csum), np.nan), where=cn > 0)
        layers, neurons = table.decode(code[starts])
        labels = [classes[c] for c in ccls.tolist()]  # class label of every (class, neuron) row
        count_list, mean_list = count.tolist(), class_means.tolist()
        keep = np.flatnonzero(totals >= min_count)
        g.add_nodes_from(
            (
                (l, n),
                {
                    "layer": l,
                    "neuron": n,
                    "count": c,
                    "frequency": c / n_paths,
                    "mean_contribution": m,
                    "classes": labels[s:e],
                    "class_counts": count_list[s:e],
                    "class_mean_contributions": mean_list[s:e],
                },
            )
            for l, n, c, m, s, e in zip(
                layers[keep].tolist(), neurons[keep].tolist(), totals[keep].tolist(), means[keep].tolist(),
                starts[keep].tolist(), ends[keep].tolist(),
            )
        )

        # edges: aggregate per (class, edge), then per edge; an edge's count never
        # exceeds the counts of its ends, so min_count keeps both ends of a kept edge
        ecls, ekey, ecount = table.class_edge_counts()
        if len(ekey):
            order = np.lexsort((ecls, ekey))
            ecls, ekey, ecount = ecls[order], ekey[order], ecount[order]
            starts, ends = _runs(ekey)
            totals = _run_sums(ecount, starts)
            keep = np.flatnonzero(totals >= min_count)
            elayer, esrc, edst = table.decode_edges(ekey[starts[keep]])
            labels = [classes[c] for c in ecls.tolist()]
            count_list = ecount.tolist()
            g.add_edges_from(
                (
                    (l, a),
                    (l + 1, b),
                    {"count": c, "frequency": c / n_paths, "classes": labels[s:e], "class_counts": count_list[s:e]},
                )
                for l, a, b, c, s, e in zip(
                    elayer.tolist(), esrc.tolist(), edst.tolist(), totals[keep].tolist(),
                    starts[keep].tolist(), ends[keep].tolist(),
                )
            )
        return cls(g)

    def with_causal_edges(self, edges: pd.DataFrame, settings: Optional[Dict[str, Any]] = None,
                          label_key: str = "label") -> "PathGraph":
        """A copy of the graph whose edges also carry causal edge weights, beside the co-occurrence
        counts (which stay as they are).

        Args:
            edges (DataFrame): per-image causal edges with a class column
                (:meth:`CausalEdgeResult.to_frame(labels=...)
                <captum_paths.analysis.causal_edges.CausalEdgeResult.to_frame>`, or the analyze
                stage's ``causal_edges.csv``); its ``image`` (or ``image_id``) column counts the
                images measured (``causal_images``); the consecutive
                ones are aggregated per class (:func:`~captum_paths.analysis.causal_edges.class_causal_edges`),
                rows without a normalised effect left out. Rows of an edge or a class the graph
                does not hold are passed over.
            settings (dict, optional): how they were computed (``CausalEdgeResult.settings``):
                its ``ablation``, ``scale`` and ``noise_quantile`` become the graph attributes
                ``causal_ablation``, ``causal_scale`` and ``causal_noise_quantile``.
            label_key (str, optional): the column of ``edges`` holding the class. Default: ``"label"``.

        Returns:
            PathGraph: a new graph; every edge has ``causal_count``, ``causal_effect``,
            ``causal_share_above_floor`` and the per-class lists (see the class docstring).
        """
        from captum_paths.analysis.causal_edges import class_causal_edges

        per_class = class_causal_edges(edges, label_key=label_key)
        measured: Dict[Tuple[Node, Node], Dict[Hashable, Tuple[int, float, float]]] = {}
        for row in per_class.itertuples(index=False):
            key = ((int(row.source_layer), int(row.source_unit)), (int(row.target_layer), int(row.target_unit)))
            measured.setdefault(key, {})[_native(row.label)] = (int(row.count), float(row.mean_normalised_effect),
                                                                 float(row.share_above_floor))
        g = self.graph.copy()
        for u, v, data in g.edges(data=True):
            found = measured.get((u, v), {})
            values = [found.get(_native(c), (0, float("nan"), float("nan"))) for c in data["classes"]]
            data["class_causal_counts"] = [c for c, _, _ in values]
            data["class_causal_effects"] = [e for _, e, _ in values]
            data["class_causal_shares"] = [s for _, _, s in values]
            data.update(_causal_totals(data))
        image = next((c for c in ("image", "image_id") if c in edges), None)
        g.graph["causal_images"] = int(edges[image].nunique()) if image is not None else int(len(edges))
        for name in ("ablation", "scale", "noise_quantile"):
            if settings is not None and settings.get(name) is not None:
                g.graph[f"causal_{name}"] = settings[name]
        return PathGraph(g)

    # --------------------------------------------------------------- filtering
    def filter(
        self,
        min_count: Optional[int] = None,
        classes: Optional[Iterable[Hashable]] = None,
        layers: Optional[Iterable[int]] = None,
    ) -> "PathGraph":
        """A new graph restricted to some classes, layers and a minimum count.

        With ``classes``, every count, frequency and mean contribution is
        recomputed from the per-class attributes, exactly as if the graph had
        been built from those classes' records. Filtering does not change
        ``num_paths`` except through ``classes``.
        """
        g = self.graph
        wanted = None
        if classes is not None:
            wanted = set(classes)
            unknown = [c for c in wanted if c not in self.classes]
            if unknown:
                raise ValueError(f"unknown classes {unknown}; the graph holds {self.classes}")
        layer_set = None if layers is None else {int(l) for l in layers}
        if min_count is not None:
            _check_min_count(min_count)
        sizes = dict(zip(g.graph["classes"], g.graph["class_sizes"]))
        attrs = dict(g.graph)
        if wanted is not None:
            kept = [c for c in g.graph["classes"] if c in wanted]
            attrs["classes"] = kept
            attrs["class_sizes"] = [sizes[c] for c in kept]
            attrs["num_paths"] = int(sum(attrs["class_sizes"]))
        n_paths = attrs["num_paths"]
        out = nx.DiGraph(**attrs)
        threshold = 1 if min_count is None else min_count
        for node, data in g.nodes(data=True):
            if layer_set is not None and node[0] not in layer_set:
                continue
            data = _restrict(data, wanted, n_paths, node=True)
            if data is not None and data["count"] >= threshold:
                out.add_node(node, **data)
        for u, v, data in g.edges(data=True):
            if u not in out or v not in out:
                continue
            data = _restrict(data, wanted, n_paths, node=False)
            if data is not None and data["count"] >= threshold:
                out.add_edge(u, v, **data)
        return PathGraph(out)

    def for_class(self, cls: Hashable, min_count: Optional[int] = None) -> "PathGraph":
        """The path graph of one class (see :meth:`filter`)."""
        return self.filter(min_count=min_count, classes=[cls])

    # ------------------------------------------------------------------ access
    @property
    def classes(self) -> List[Hashable]:
        return list(self.graph.graph.get("classes", []))

    @property
    def num_paths(self) -> int:
        return int(self.graph.graph.get("num_paths", 0))

    @property
    def num_layers(self) -> int:
        return int(self.graph.graph.get("num_layers", 0))

    def __len__(self) -> int:
        return self.graph.number_of_nodes()

    def __repr__(self) -> str:
        g = self.graph
        return (
            f"PathGraph(method={g.graph.get('method')!r}, paths={self.num_paths}, "
            f"layers={self.num_layers}, classes={len(self.classes)}, "
            f"nodes={g.number_of_nodes()}, edges={g.number_of_edges()})"
        )

    def class_counts(self, node: Node) -> Dict[Hashable, int]:
        """``{class: number of that class's paths through node}``."""
        data = self.graph.nodes[node]
        return dict(zip(data["classes"], data["class_counts"]))

    def nodes_frame(self) -> pd.DataFrame:
        """One row per node: layer, neuron, count, frequency, mean_contribution, num_classes, classes."""
        rows = [
            (d["layer"], d["neuron"], d["count"], d["frequency"], d["mean_contribution"], len(d["classes"]),
             d["classes"])
            for _, d in self.graph.nodes(data=True)
        ]
        df = pd.DataFrame(
            rows, columns=["layer", "neuron", "count", "frequency", "mean_contribution", "num_classes", "classes"]
        )
        return df.sort_values(["layer", "count", "neuron"], ascending=[True, False, True], ignore_index=True)

    def edges_frame(self) -> pd.DataFrame:
        """One row per edge: layer, source, target (neuron of ``layer + 1``), count, frequency, num_classes,
        classes; and ``causal_count``, ``causal_effect``, ``causal_share_above_floor`` when the graph
        has causal edge weights (:meth:`with_causal_edges`)."""
        rows = [
            (u[0], u[1], v[1], d["count"], d["frequency"], len(d["classes"]), d["classes"])
            for u, v, d in self.graph.edges(data=True)
        ]
        df = pd.DataFrame(rows, columns=["layer", "source", "target", "count", "frequency", "num_classes", "classes"])
        if any("causal_count" in d for _, _, d in self.graph.edges(data=True)):
            for name in _CAUSAL_TOTALS:
                df[name] = [d.get(name, float("nan")) for _, _, d in self.graph.edges(data=True)]
        return df.sort_values(
            ["layer", "count", "source", "target"], ascending=[True, False, True, True], ignore_index=True
        )

    def top_nodes(self, n: int = 5, layer: Optional[int] = None) -> pd.DataFrame:
        """The ``n`` most used neurons of each layer (or of one layer)."""
        df = self.nodes_frame()
        if layer is not None:
            df = df[df["layer"] == layer]
        return df.groupby("layer", sort=True).head(n).reset_index(drop=True)

    # -------------------------------------------------------------------- I/O
    def to_graphml(self, path: PathLike) -> Path:
        """Write GraphML (Gephi, Cytoscape, yEd read it).

        Node ids are ``"L<layer>:N<neuron>"``; list attributes are JSON strings,
        and the graph attribute ``json_attributes`` names them, so that
        :meth:`from_graphml` restores the graph exactly.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        nx.write_graphml(_encode(self.graph, json_values=True), path)
        return path

    @classmethod
    def from_graphml(cls, path: PathLike) -> "PathGraph":
        """Read a graph written by :meth:`to_graphml`."""
        return cls(_decode(nx.read_graphml(path)))

    def to_node_link(self, path: PathLike) -> Path:
        """Write node-link JSON (d3.js; ``networkx.node_link_data`` with ``edges="edges"``).

        Node ids are ``"L<layer>:N<neuron>"``; attributes stay JSON lists.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        data = nx.node_link_data(_encode(self.graph, json_values=False), edges="edges")
        path.write_text(json.dumps(data, allow_nan=True), encoding="utf-8")
        return path

    @classmethod
    def from_node_link(cls, path: PathLike) -> "PathGraph":
        """Read a graph written by :meth:`to_node_link`."""
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        g = nx.node_link_graph(data, directed=True, multigraph=False, edges="edges")
        return cls(_decode(g))


# ------------------------------------------------------------------- helpers
def _runs(sorted_keys: np.ndarray):
    """Start and end of every run of equal values in a sorted array."""
    bounds = np.flatnonzero(np.diff(sorted_keys)) + 1
    return np.concatenate([[0], bounds]).astype(np.int64), np.concatenate([bounds, [len(sorted_keys)]]).astype(np.int64)


def _run_sums(values: np.ndarray, starts: np.ndarray) -> np.ndarray:
    return np.add.reduceat(values, starts) if len(values) else values


def _check_min_count(min_count: int) -> None:
    if isinstance(min_count, bool) or not isinstance(min_count, (int, np.integer)) or min_count < 1:
        raise ValueError(f"min_count must be a positive int; got {min_count!r}")


def _restrict(data: Dict[str, Any], wanted: Optional[set], n_paths: int, node: bool):
    """Attributes of a node or edge restricted to the classes ``wanted`` (None: all)."""
    if wanted is None:
        return dict(data)
    keep = [i for i, c in enumerate(data["classes"]) if c in wanted]
    if not keep:
        return None
    out = dict(data)
    out["classes"] = [data["classes"][i] for i in keep]
    out["class_counts"] = [data["class_counts"][i] for i in keep]
    out["count"] = int(sum(out["class_counts"]))
    out["frequency"] = out["count"] / n_paths if n_paths else float("nan")
    if "class_causal_counts" in data:
        for name in _CAUSAL_LISTS:
            out[name] = [data[name][i] for i in keep]
        out.update(_causal_totals(out))
    if node:
        means = [data["class_mean_contributions"][i] for i in keep]
        out["class_mean_contributions"] = means
        pairs = [(m, c) for m, c in zip(means, out["class_counts"]) if m == m]  # drop NaN
        total = sum(c for _, c in pairs)
        out["mean_contribution"] = sum(m * c for m, c in pairs) / total if total else float("nan")
    return out


#: the per-class causal lists of an edge, aligned with its ``classes``, and the totals made from them
_CAUSAL_LISTS = ("class_causal_counts", "class_causal_effects", "class_causal_shares")
_CAUSAL_TOTALS = ("causal_count", "causal_effect", "causal_share_above_floor")


def _causal_totals(data: Dict[str, Any]) -> Dict[str, Any]:
    """An edge's causal totals from its per-class lists: images measured, and their mean normalised
    effect and share above the floor (class values weighted by their counts; NaN without any)."""
    counts, effects, shares = (data[name] for name in _CAUSAL_LISTS)
    total = int(sum(counts))
    if not total:
        return {"causal_count": 0, "causal_effect": float("nan"), "causal_share_above_floor": float("nan")}
    return {"causal_count": total,
            "causal_effect": float(sum(c * e for c, e in zip(counts, effects) if c) / total),
            "causal_share_above_floor": float(sum(c * s for c, s in zip(counts, shares) if c) / total)}


def _native(value: Any) -> Any:
    """numpy scalars as Python ones, so that classes compare as the graph holds them."""
    return value.item() if isinstance(value, np.generic) else value


def _encode(g: nx.DiGraph, json_values: bool) -> nx.DiGraph:
    """A copy with string node ids; with ``json_values``, list/dict attributes as JSON strings."""
    encoded = {"graph": set(), "node": set(), "edge": set()}

    def conv(kind: str, data: Dict[str, Any]) -> Dict[str, Any]:
        out = {}
        for name, value in data.items():
            if value is None:
                continue  # GraphML has no null
            if json_values and isinstance(value, (list, tuple, dict)):
                out[name] = json.dumps(value)
                encoded[kind].add(name)
            elif isinstance(value, np.generic):
                out[name] = value.item()
            else:
                out[name] = value
        return out

    h = nx.DiGraph()
    for node, data in g.nodes(data=True):
        h.add_node(node_key(node), **conv("node", data))
    for u, v, data in g.edges(data=True):
        h.add_edge(node_key(u), node_key(v), **conv("edge", data))
    h.graph.update(conv("graph", dict(g.graph)))
    if json_values:
        h.graph[_JSON_ATTRS] = json.dumps({k: sorted(v) for k, v in encoded.items()})
    return h


def _decode(g: nx.Graph) -> nx.DiGraph:
    """Undo :func:`_encode`: tuple node ids, JSON attributes parsed."""
    spec = g.graph.get(_JSON_ATTRS)
    names = json.loads(spec) if isinstance(spec, str) else {"graph": [], "node": [], "edge": []}

    def conv(kind: str, data: Dict[str, Any]) -> Dict[str, Any]:
        out = dict(data)
        for name in names.get(kind, []):
            if isinstance(out.get(name), str):
                out[name] = json.loads(out[name])
        return out

    h = nx.DiGraph()
    # read_graphml adds empty `node_default` / `edge_default` entries
    skip = {_JSON_ATTRS, "node_default", "edge_default"}
    graph_attrs = conv("graph", {k: v for k, v in g.graph.items() if k not in skip})
    h.graph.update(graph_attrs)
    for node, data in g.nodes(data=True):
        h.add_node(parse_node_key(node), **conv("node", data))
    for u, v, data in g.edges(data=True):
        h.add_edge(parse_node_key(u), parse_node_key(v), **conv("edge", data))
    return h
