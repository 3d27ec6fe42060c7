"""Figures (seaborn / matplotlib), saved as PNG and SVG."""
from captum_paths.plots.evaluation import (
    METHOD_COLOURS,
    method_palette,
    plot_circuits,
    plot_deviation,
    plot_faithfulness,
    plot_jas,
    plot_pruning,
)
from captum_paths.plots.figures import save_figure
from captum_paths.plots.paths import (
    draw_neuron_pixels,
    plot_class_similarity,
    plot_neuron_distributions,
    plot_neuron_frequency_heatmap,
    plot_neuron_pixels,
    plot_path_graph,
)

__all__ = [
    "METHOD_COLOURS",
    "draw_neuron_pixels",
    "method_palette",
    "plot_circuits",
    "plot_class_similarity",
    "plot_deviation",
    "plot_faithfulness",
    "plot_jas",
    "plot_neuron_distributions",
    "plot_neuron_frequency_heatmap",
    "plot_neuron_pixels",
    "plot_path_graph",
    "plot_pruning",
    "save_figure",
]
