"""captum_paths.plots.paths: figures of class-level paths and pixel explanations.

Each plot must give a Figure with the expected axes and labels that saves to a
non-empty, non-blank PNG and an SVG.
"""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.image as mpimg  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.collections import LineCollection, QuadMesh  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from captum_paths import LayerProgressiveNeuronPath  # noqa: E402
from captum_paths.analysis import PathGraph, class_similarity  # noqa: E402
from captum_paths.demo import DEMO_MEAN, DEMO_STD, load_demo_data, load_demo_model  # noqa: E402
from captum_paths.plots.figures import save_figure  # noqa: E402
from captum_paths.plots.paths import (  # noqa: E402
    plot_class_similarity,
    plot_neuron_distributions,
    plot_neuron_frequency_heatmap,
    plot_neuron_pixels,
    plot_path_graph,
)


def make_records(n_classes=4, per_class=6, layers=4, width=32, seed=0):
    rng = np.random.default_rng(seed)
    records = []
    for i in range(n_classes * per_class):
        label = i % n_classes
        path = [
            [int((label * 5 + l) % width) if rng.random() < 0.6 else int(rng.integers(0, width))] for l in range(layers)
        ]
        records.append({
            "image_id": i, "label": label, "target": label, "prediction": label, "method": "neuron-path",
            "path": path, "contributions": [[float(rng.random())] for _ in path], "jas": 1.0, "delta": 0.0,
            "scores": None, "refined_layers": None, "settings": {}, "model_id": "toy",
        })
    return records


@pytest.fixture(scope="module")
def records():
    return make_records()


def saved_png(fig, tmp_path, name):
    png, svg = save_figure(fig, tmp_path / name)
    assert png.stat().st_size > 1000 and svg.stat().st_size > 1000
    pixels = mpimg.imread(png)
    assert pixels.ndim == 3 and pixels.shape[0] > 50 and pixels.shape[1] > 50
    assert np.ptp(pixels[..., :3]) > 0.2  # not a blank canvas
    return pixels


def test_neuron_distributions_one_axes_per_layer(records, tmp_path):
    fig = plot_neuron_distributions(records)
    assert isinstance(fig, Figure)
    axes = fig.axes
    assert len(axes) == 4
    assert [ax.get_title(loc="left") for ax in axes] == [f"layer {l}" for l in range(4)]
    assert axes[-1].get_xlabel() == "neuron index" and all(ax.get_ylabel() == "class" for ax in axes)
    assert [t.get_text() for t in axes[0].get_yticklabels()] == ["0", "1", "2", "3"]
    # one mode marker per class in every layer
    assert all(len(ax.collections[1].get_offsets()) == 4 for ax in axes)
    saved_png(fig, tmp_path, "dist")
    sub = plot_neuron_distributions(records, classes=[1, 3], layers=[0, 2])
    assert len(sub.axes) == 2 and [t.get_text() for t in sub.axes[0].get_yticklabels()] == ["1", "3"]
    plt.close(sub)


def test_neuron_frequency_heatmap_layers_by_rank(records, tmp_path):
    fig = plot_neuron_frequency_heatmap(records, top=5)
    assert len(fig.axes) == 2  # heatmap and colour bar
    ax = fig.axes[0]
    assert ax.get_xlabel() == "rank" and ax.get_ylabel() == "layer"
    mesh = [c for c in ax.collections if isinstance(c, QuadMesh)][0]
    assert mesh.get_array().shape in ((4, 5), (20,))
    labels = [t.get_text() for t in ax.texts]
    assert labels[0] == "0"  # layer 0's most used neuron: class 0's (0 * 5 + 0)
    saved_png(fig, tmp_path, "heat")
    one = plot_neuron_frequency_heatmap(records, cls=2, top=3)
    assert "class 2" in one.axes[0].get_title()
    plt.close(one)


def test_class_similarity_clustermap(records, tmp_path):
    fig = plot_class_similarity(class_similarity(records))
    assert isinstance(fig, Figure) and len(fig.axes) == 4  # heatmap, two dendrograms, colour bar
    heat = [ax for ax in fig.axes if ax.get_xlabel() == "class"]
    assert len(heat) == 1 and sorted(t.get_text() for t in heat[0].get_xticklabels()) == ["0", "1", "2", "3"]
    saved_png(fig, tmp_path, "clustermap")
    fig2 = plot_class_similarity(records, metric="jaccard")
    assert len(fig2.axes) == 4
    plt.close(fig2)


def test_path_graph_drawing(records, tmp_path):
    pg = PathGraph.from_records(records)
    fig = plot_path_graph(pg, cls=0, max_nodes_per_layer=3)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_xlabel() == "layer" and [t.get_text() for t in ax.get_xticklabels()] == ["0", "1", "2", "3"]
    widths = np.concatenate([c.get_linewidths() for c in ax.collections if isinstance(c, LineCollection)])
    assert widths.max() > widths.min()  # edge width follows the count
    # at most 3 neurons per layer, most used on top
    assert len(ax.texts) <= 12
    saved_png(fig, tmp_path, "graph")
    whole = plot_path_graph(records)
    assert "all classes" in whole.axes[0].get_title()
    plt.close(whole)


def test_neuron_pixels_heatmap(tmp_path):
    model = load_demo_model()
    images, labels = load_demo_data("test")
    image = images[5]
    path = LayerProgressiveNeuronPath(model).attribute(image[None], target=labels[5:6]).paths[0]
    neuron = int(path[2, 0])
    fig, pixels, patches = plot_neuron_pixels(model, image, 2, neuron, mean=[DEMO_MEAN], std=[DEMO_STD])
    assert isinstance(fig, Figure) and len(fig.axes) == 5  # 3 panels and 2 colour bars
    assert [ax.get_title() for ax in fig.axes[:3]] == ["image", "per pixel", "per patch (2x2)"]
    assert pixels.shape == (8, 8) and patches.shape == (4, 4)
    assert np.isfinite(pixels).all() and np.abs(pixels).max() > 0
    assert patches.sum() == pytest.approx(pixels.sum())
    saved_png(fig, tmp_path, "pixels")
