"""Figures (seaborn / matplotlib), saved as PNG and SVG."""
from captum_paths.plots.figures import save_figure

__all__ = ["save_figure"]
