"""Saving figures: PNG and SVG, atomically."""
from __future__ import annotations

import os
from pathlib import Path
from typing import List, Union

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

__all__ = ["save_figure"]


def save_figure(fig: Figure, stem: Union[str, os.PathLike], dpi: int = 150, close: bool = True) -> List[Path]:
    """Write ``stem.png`` and ``stem.svg``; returns both paths.

    Each file is written to a temporary name and renamed, so a reader never sees
    half a figure.
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"fig must be a matplotlib Figure; got {type(fig).__name__}")
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for ext in ("png", "svg"):
        final = stem.with_name(f"{stem.name}.{ext}")
        tmp = final.with_name(f".{final.name}.tmp")
        fig.savefig(tmp, format=ext, dpi=dpi, bbox_inches="tight")
        os.replace(tmp, final)
        written.append(final)
    if close:
        plt.close(fig)
    return written
