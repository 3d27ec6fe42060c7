"""Figures (seaborn / matplotlib), saved as PNG and SVG."""
from captum_paths.plots.evaluation import (
    METHOD_COLOURS,
    method_palette,
    plot_deviation,
    plot_jas,
    plot_pruning,
)
from captum_paths.plots.figures import save_figure

__all__ = ["METHOD_COLOURS", "method_palette", "plot_deviation", "plot_jas", "plot_pruning", "save_figure"]
