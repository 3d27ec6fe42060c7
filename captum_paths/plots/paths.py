"""Figures of class-level paths and of path neurons in pixel space.

Every function returns a matplotlib ``Figure`` (never shows it); save it with
:func:`captum_paths.plots.save_figure` (PNG + SVG).

- :func:`plot_neuron_distributions`: per layer, the neurons chosen by the paths
  of each class, the class mode marked (the paper's Figure 4 style);
- :func:`plot_neuron_frequency_heatmap`: layers x most used neurons;
- :func:`plot_class_similarity`: clustered class-similarity heatmap;
- :func:`plot_path_graph`: layered drawing of a (class's) path graph;
- :func:`plot_neuron_pixels`: which pixels drive a path neuron, from Captum
  ``NeuronIntegratedGradients``, on the model's patch grid.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, Hashable, Iterable, Optional, Sequence, Tuple, Union

import matplotlib.pyplot as plt
import networkx as nx
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure
from scipy.cluster import hierarchy
from scipy.spatial.distance import squareform

from captum_paths.analysis.classes import (
    RecordsLike,
    _consensus_frame,
    _frequency_frame,
    class_similarity,
)
from captum_paths.analysis.graph import PathGraph
from captum_paths.analysis.pixels import NeuronPixelAttribution, neuron_pixel_attribution
from captum_paths.analysis.table import as_table

__all__ = [
    "plot_neuron_distributions",
    "plot_neuron_frequency_heatmap",
    "plot_class_similarity",
    "plot_path_graph",
    "plot_neuron_pixels",
    "draw_neuron_pixels",
]

logger = logging.getLogger(__name__)


def plot_neuron_distributions(
    records: RecordsLike,
    classes: Optional[Iterable[Hashable]] = None,
    layers: Optional[Iterable[int]] = None,
    max_classes: int = 12,
    method: Optional[str] = None,
    label_key: str = "label",
    width: Optional[int] = None,
    figsize: Optional[Tuple[float, float]] = None,
) -> Figure:
    """Per layer, which neurons the paths of each class choose; the class mode marked.

    One row of axes per layer; in each, one strip per class (y) over the neuron
    index (x). A dot's area is the fraction of the class's paths that choose the
    neuron; the mode (the consensus neuron, ties to the smallest index) is
    marked by a black ``|`` and labelled with its support.

    Args:
        classes (iterable, optional): Classes to draw. Default: all, up to
            ``max_classes`` (the first ones in sorted order).
        layers (iterable of int, optional): Layers to draw. Default: all.
        width (int, optional): Right end of the x axis (the layer width
            ``d_ff``). Default: largest neuron index + 1.

    Returns:
        Figure with one axes per layer (x label ``neuron index`` on the last,
        y label ``class``).
    """
    table = as_table(records, method=method, label_key=label_key)
    chosen = list(classes) if classes is not None else table.classes[:max_classes]
    if classes is None and len(table.classes) > max_classes:
        logger.info("plotting the first %d of %d classes", max_classes, len(table.classes))
    table = table.select(chosen)
    layer_list = list(range(table.num_layers)) if layers is None else [int(l) for l in layers]
    freq = _frequency_frame(table)
    cons = _consensus_frame(table, 1)
    n_cls = len(table.classes)
    xmax = width if width is not None else table.width
    figsize = figsize or (10, max(2.0, 0.28 * n_cls + 0.6) * len(layer_list) * 0.8)
    fig, axes = plt.subplots(len(layer_list), 1, figsize=figsize, sharex=True, squeeze=False)
    palette = sns.color_palette("tab10" if n_cls <= 10 else "husl", n_cls)
    ypos = {c: i for i, c in enumerate(table.classes)}
    for ax, layer in zip(axes[:, 0], layer_list):
        f = freq[freq["layer"] == layer]
        ax.scatter(
            f["neuron"], f["class"].map(ypos), s=12 + 220 * f["frequency"].to_numpy(),
            c=[palette[ypos[c]] for c in f["class"]], alpha=0.7, linewidths=0,
        )
        m = cons[cons["layer"] == layer]
        ax.scatter(m["neuron"], m["class"].map(ypos), marker="|", s=260, c="black", linewidths=1.6)
        for _, row in m.iterrows():
            ax.annotate(
                f"{int(row['neuron'])} ({row['support']:.0%})", (row["neuron"], ypos[row["class"]]),
                xytext=(6, 3), textcoords="offset points", fontsize=6,
            )
        ax.set_yticks(range(n_cls), [str(c) for c in table.classes], fontsize=7)
        ax.set_ylim(-0.7, n_cls - 0.3)
        ax.set_xlim(-0.5, xmax - 0.5)
        ax.set_ylabel("class")
        ax.set_title(f"layer {layer}", fontsize=9, loc="left")
        ax.grid(axis="x", alpha=0.3)
    axes[-1, 0].set_xlabel("neuron index")
    fig.suptitle(f"Neurons on the paths of each class ({table.method}; | = class mode, its support)")
    fig.tight_layout()
    return fig


def plot_neuron_frequency_heatmap(
    records: RecordsLike,
    cls: Optional[Hashable] = None,
    top: int = 15,
    method: Optional[str] = None,
    label_key: str = "label",
    annotate: Optional[bool] = None,
    figsize: Optional[Tuple[float, float]] = None,
) -> Figure:
    """Layers x most used neurons: the frequency of the ``top`` neurons of every layer.

    Row ``l`` holds the ``top`` most frequent neurons of layer ``l`` (ties: smaller
    index first) in decreasing order; the colour is the fraction of paths (of
    class ``cls``, or of all paths) that choose the neuron, the annotation its
    index (empty cells: the layer has fewer distinct neurons).

    Returns:
        Figure with two axes: the heatmap (x label ``rank``, y label ``layer``)
        and its colour bar.
    """
    table = as_table(records, method=method, label_key=label_key)
    if cls is not None:
        table = table.select([cls])
    else:
        table = table.pooled("all")
    freq = _frequency_frame(table)
    top_rows = freq.groupby("layer", sort=True).head(top)
    rank = top_rows.groupby("layer", sort=True).cumcount().to_numpy()
    values = np.full((table.num_layers, top), np.nan)
    labels = np.full((table.num_layers, top), "", dtype=object)
    values[top_rows["layer"].to_numpy(), rank] = top_rows["frequency"].to_numpy()
    labels[top_rows["layer"].to_numpy(), rank] = top_rows["neuron"].astype(str).to_numpy()
    annotate = (top <= 30 and table.num_layers <= 40) if annotate is None else annotate
    figsize = figsize or (max(5.0, 0.55 * top + 2), max(3.0, 0.4 * table.num_layers + 1.5))
    fig, ax = plt.subplots(figsize=figsize)
    sns.heatmap(
        pd.DataFrame(values, index=pd.Index(range(table.num_layers), name="layer"), columns=range(1, top + 1)),
        ax=ax, cmap="rocket_r", vmin=0, mask=np.isnan(values), annot=labels if annotate else False,
        fmt="", annot_kws={"fontsize": 7}, cbar_kws={"label": "fraction of paths"}, linewidths=0.3,
    )
    ax.set_xlabel("rank")
    ax.set_ylabel("layer")
    who = "all classes" if cls is None else f"class {cls}"
    ax.set_title(f"Most used neurons per layer ({who}, {len(table)} paths; labels: neuron index)", fontsize=10)
    fig.tight_layout()
    return fig


def plot_class_similarity(
    similarity: Union[pd.DataFrame, RecordsLike],
    metric: str = "cosine",
    annotate: Optional[bool] = None,
    linkage: str = "average",
    title: Optional[str] = None,
    **kwargs: Any,
) -> Figure:
    """Clustered heatmap of a class-similarity table (seaborn ``clustermap``).

    Rows and columns are ordered by average-linkage clustering of the distance
    ``1 - similarity`` (not of the rows as feature vectors).

    Args:
        similarity: A square DataFrame from :func:`class_similarity`, or records
            (the similarity is computed with ``metric`` and ``kwargs``).
        annotate (bool, optional): Write the values in the cells. Default: up to
            15 classes.
        title (str, optional): Figure title. Default: names the metric when it
            is computed here.

    Returns:
        The ``ClusterGrid``'s figure: four axes (heatmap, row and column
        dendrograms, colour bar).
    """
    if isinstance(similarity, pd.DataFrame):
        sim = similarity
        title = "Class similarity of paths" if title is None else title
    else:
        sim = class_similarity(similarity, metric=metric, **kwargs)
        kwargs = {}
        title = f"Class similarity of paths ({metric})" if title is None else title
    if sim.shape[0] != sim.shape[1] or sim.shape[0] < 2:
        raise ValueError(f"similarity must be a square table of at least 2 classes; got shape {sim.shape}")
    values = sim.to_numpy(dtype=np.float64)
    dist = np.clip(1.0 - (values + values.T) / 2.0, 0.0, None)
    np.fill_diagonal(dist, 0.0)
    link = hierarchy.linkage(squareform(dist, checks=False), method=linkage)
    n = sim.shape[0]
    annotate = n <= 15 if annotate is None else annotate
    size = min(4 + 0.45 * n, 20)
    grid = sns.clustermap(
        sim, row_linkage=link, col_linkage=link, cmap="viridis", vmin=0, vmax=1,
        annot=annotate, fmt=".2f", annot_kws={"fontsize": 7}, figsize=(size, size),
        cbar_kws={"label": "similarity"}, **kwargs,
    )
    grid.ax_heatmap.set_xlabel("class")
    grid.ax_heatmap.set_ylabel("class")
    grid.figure.suptitle(title, y=1.02)
    return grid.figure


def plot_path_graph(
    graph: Union[PathGraph, RecordsLike],
    cls: Optional[Hashable] = None,
    max_nodes_per_layer: int = 6,
    min_count: int = 1,
    ax: Optional[plt.Axes] = None,
    figsize: Optional[Tuple[float, float]] = None,
) -> Figure:
    """Layered drawing of a path graph: layers left to right, edge width by count.

    Args:
        graph (PathGraph or records): The graph, or records to build it from.
        cls (optional): Draw this class's path graph. Default: the whole graph.
        max_nodes_per_layer (int, optional): Keep the most used neurons of each
            layer (then only edges between kept neurons). Default: 6.
        min_count (int, optional): Drop neurons and edges used by fewer paths.

    Node area and edge width grow with the number of paths; node labels are
    neuron indices; within a layer the most used neuron is on top. Positions
    come from ``networkx.multipartite_layout`` with the layer as subset key.

    Returns:
        Figure with one axes (x label ``layer``).
    """
    pg = graph if isinstance(graph, PathGraph) else PathGraph.from_records(graph)
    if cls is not None:
        pg = pg.for_class(cls)
    g = pg.graph
    kept = []
    for layer in sorted({d["layer"] for _, d in g.nodes(data=True)}):
        nodes = [(n, d) for n, d in g.nodes(data=True) if d["layer"] == layer and d["count"] >= min_count]
        nodes.sort(key=lambda nd: (-nd[1]["count"], nd[0][1]))
        kept += nodes[:max_nodes_per_layer]
    h = nx.DiGraph()
    h.add_nodes_from(kept)
    h.add_edges_from((u, v, d) for u, v, d in g.edges(data=True) if u in h and v in h and d["count"] >= min_count)
    if figsize is None:
        figsize = (max(6.0, 1.4 * max(pg.num_layers, 1)), max(4.0, 0.7 * max_nodes_per_layer + 1.5))
    if ax is None:
        fig, ax = plt.subplots(figsize=figsize)
    else:
        fig = ax.figure
    who = f"class {cls}" if cls is not None else "all classes"
    title = f"Path graph ({g.graph.get('method')}, {who}, {pg.num_paths} paths)"
    if h.number_of_nodes() == 0:
        ax.set_title(title + ": empty")
        ax.set_xlabel("layer")
        return fig
    # a {layer: [nodes]} subset map fixes the order within a layer (bottom to top):
    # the most used neuron ends up on top
    subsets: Dict[int, list] = {}
    for n, d in sorted(kept, key=lambda nd: (nd[0][0], nd[1]["count"], -nd[0][1])):
        subsets.setdefault(d["layer"], []).append(n)
    pos = nx.multipartite_layout(h, subset_key=subsets, align="vertical")
    max_node = max(d["count"] for _, d in h.nodes(data=True))
    edge_counts = [d["count"] for _, _, d in h.edges(data=True)]
    max_edge = max(edge_counts) if edge_counts else 1
    nx.draw_networkx_edges(
        h, pos, ax=ax, width=[0.4 + 6.0 * c / max_edge for c in edge_counts], alpha=0.55,
        edge_color="tab:gray", arrows=False, node_size=0,
    )
    nx.draw_networkx_nodes(
        h, pos, ax=ax, node_size=[160 + 640 * d["count"] / max_node for _, d in h.nodes(data=True)],
        node_color=[d["frequency"] for _, d in h.nodes(data=True)], cmap="viridis", vmin=0, vmax=1,
        edgecolors="black", linewidths=0.5,
    )
    nx.draw_networkx_labels(h, pos, ax=ax, labels={n: str(n[1]) for n in h}, font_size=7, font_color="white")
    xs = sorted({(d["layer"], round(float(pos[n][0]), 6)) for n, d in h.nodes(data=True)})
    ax.set_xticks([x for _, x in xs], [str(l) for l, _ in xs])
    ax.tick_params(left=False, labelleft=False, bottom=True, labelbottom=True)
    ax.set_xlabel("layer")
    for spine in ("top", "right", "left"):
        ax.spines[spine].set_visible(False)
    ax.set_title(title + "; node: neuron index, colour: fraction of paths", fontsize=9)
    return fig


def plot_neuron_pixels(
    model: torch.nn.Module,
    image: torch.Tensor,
    layer: int,
    neuron: int,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    **kwargs: Any,
) -> Tuple[Figure, np.ndarray, np.ndarray]:
    """Which pixels drive path neuron ``(layer, neuron)`` on ``image``.

    Runs :func:`~captum_paths.analysis.neuron_pixel_attribution` (Captum
    ``NeuronIntegratedGradients`` by default; ``kwargs`` go to it: ``sites``,
    ``method``, ``baseline``, ``n_steps``, ``patch_size``) and draws it with
    :func:`draw_neuron_pixels`.

    Args:
        mean, std (sequence of float, optional): The normalisation of ``image``,
            to show it in its original colours. Default: min-max scaling.

    Returns:
        ``(figure, pixels, patches)``: ``pixels`` ``(H, W)`` is the attribution
        summed over channels, ``patches`` ``(H / ph, W / pw)`` summed over each
        patch of the model's grid.
    """
    attribution = neuron_pixel_attribution(model, image, layer, neuron, **kwargs)
    fig = draw_neuron_pixels(image, attribution, mean=mean, std=std)
    return fig, attribution.pixels, attribution.patches


def draw_neuron_pixels(
    image: torch.Tensor,
    attribution: NeuronPixelAttribution,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    figsize: Tuple[float, float] = (11.5, 3.6),
) -> Figure:
    """Draw a :class:`NeuronPixelAttribution`: image, per-pixel map, patch map over the image.

    Returns:
        Figure with five axes: the image, the per-pixel attribution, the image
        with the per-patch attribution (upsampled to pixels, patch grid drawn),
        and the colour bars of the two maps. Colours are centred at zero.
    """
    img = _display_image(image, mean, std)
    pixels, patch_up = attribution.pixels, attribution.upsampled_patches()
    fig, axes = plt.subplots(1, 3, figsize=figsize)
    axes[0].imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
    axes[0].set_title("image")
    lim = float(np.abs(pixels).max()) or 1.0
    im1 = axes[1].imshow(pixels, cmap="bwr", vmin=-lim, vmax=lim, interpolation="nearest")
    axes[1].set_title("per pixel")
    fig.colorbar(im1, ax=axes[1], fraction=0.046, pad=0.04)
    axes[2].imshow(img, cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
    lim = float(np.abs(patch_up).max()) or 1.0
    im2 = axes[2].imshow(patch_up, cmap="bwr", vmin=-lim, vmax=lim, alpha=0.55, interpolation="nearest")
    ph, pw = attribution.patch_size
    h, w = pixels.shape
    for y in range(0, h + 1, ph):
        axes[2].axhline(y - 0.5, color="black", linewidth=0.4, alpha=0.5)
    for x in range(0, w + 1, pw):
        axes[2].axvline(x - 0.5, color="black", linewidth=0.4, alpha=0.5)
    axes[2].set_title(f"per patch ({ph}x{pw})")
    fig.colorbar(im2, ax=axes[2], fraction=0.046, pad=0.04)
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])
    method = "IG" if attribution.method == "integrated_gradients" else "conductance"
    fig.suptitle(
        f"Neuron (layer {attribution.layer}, {attribution.neuron}): {method} sum {pixels.sum():.3g}, "
        f"activation {attribution.activation:.3g} (baseline {attribution.baseline_activation:.3g})",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def _display_image(image: torch.Tensor, mean, std) -> np.ndarray:
    x = image.detach().cpu().double()
    x = x[0] if x.dim() == 4 else x
    if x.dim() != 3:
        raise ValueError(f"image must be (C, H, W) or (1, C, H, W); got {tuple(image.shape)}")
    if mean is not None and std is not None:
        c = x.shape[0]
        x = x * torch.as_tensor(std, dtype=x.dtype).reshape(-1, 1, 1).expand(c, 1, 1)
        x = x + torch.as_tensor(mean, dtype=x.dtype).reshape(-1, 1, 1).expand(c, 1, 1)
        x = x.clamp(0, 1)
    else:
        lo, hi = x.min(), x.max()
        x = (x - lo) / (hi - lo) if hi > lo else torch.zeros_like(x)
    arr = x.numpy()
    return arr[0] if arr.shape[0] == 1 else np.transpose(arr[:3], (1, 2, 0))
