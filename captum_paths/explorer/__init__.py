"""The path explorer: an interactive, offline HTML page over a run's paths.

Four linked views: an overview of the methods (table, distributions, headline
numbers), a class (its path graph, consensus path and nearest classes), a neuron
(the classes and images that use it, and what in those images drives it) and an
image (its path for every method against its class's consensus).
:func:`explorer_payload` gathers the data (capped by :class:`ExplorerLimits`),
:func:`render_page` writes the self-contained page and :func:`read_payload` reads its data back.
"""
from captum_paths.explorer.page import read_payload, render_page
from captum_paths.explorer.payload import COLUMNS, ExplorerLimits, explorer_payload, method_overview

__all__ = ["ExplorerLimits", "explorer_payload", "method_overview", "render_page", "read_payload", "COLUMNS"]
