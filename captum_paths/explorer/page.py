"""The explorer page: one self-contained HTML file (the data, Plotly and the app embedded;
no server, no network)."""
from __future__ import annotations

import html
import json
from importlib import resources
from typing import Any, Dict

__all__ = ["render_page", "read_payload"]

_BODY = """
<header><h1>captum-paths explorer</h1><span class="run" id="run-name"></span>
<nav><a href="#overview" data-view="overview">Overview</a><a href="#class" data-view="class">Class</a>
<a href="#neuron" data-view="neuron">Neuron</a><a href="#image" data-view="image">Image</a>
<a href="#tables" data-view="tables">Tables</a></nav></header>
<main>
<section id="view-overview"></section>
<section id="view-class" hidden><div class="search"><label for="class-search">Class</label>
<input id="class-search" list="class-list" placeholder="type a class name or index" autocomplete="off">
<datalist id="class-list"></datalist><span id="class-missing" class="hint" hidden>no such class</span></div>
<div id="class-body"></div></section>
<section id="view-neuron" hidden><p class="hint">Open a neuron from a class graph, a path or a table.</p>
<div id="neuron-body"></div></section>
<section id="view-image" hidden><div class="search"><label for="image-search">Image</label>
<input id="image-search" list="image-list" placeholder="image id" autocomplete="off">
<datalist id="image-list"></datalist></div><div id="image-body"></div></section>
<section id="view-tables" hidden></section>
</main>
"""


def _script_text(text: str) -> str:
    """JavaScript ``text`` safe inside a ``<script>`` element (no early ``</script>``, no HTML comment
    opener). Only for code whose every ``</`` and ``<!--`` lies in a string literal, where ``\\/`` and
    ``\\!`` read as ``/`` and ``!`` (Plotly's bundle and the app); data goes through :func:`_json_text`."""
    return text.replace("</", "<\\/").replace("<!--", "<\\!--")


def _json_text(data: str) -> str:
    """The JSON text ``data`` safe inside a ``<script>`` element and still the same JSON: every
    ``<``, ``>`` and ``&`` (which only occur inside its strings) as its ``\\u`` escape, so that no
    name in the data (``</script>``, ``<!--``, ``<script``) can end or change the element
    (``json.dumps`` already writes every non-ASCII character, U+2028 and U+2029 included, as one)."""
    return data.replace("&", "\\u0026").replace("<", "\\u003c").replace(">", "\\u003e")


def read_payload(page: str) -> Dict[str, Any]:
    """The data object a page of :func:`render_page` embeds (to script on a written ``report.html``)."""
    start = page.index("<script id='explorer-data'")
    start = page.index(">", start) + 1
    text = page[start:page.index("</script>", start)]
    # JSON reads the \\u escapes back itself; pages written before them escaped "<!--" as "<\\!--"
    return json.loads(text.replace("<\\!--", "<!--"))


def render_page(payload: Dict[str, Any], title: str = "captum-paths explorer") -> str:
    """The HTML page of :func:`~captum_paths.explorer.payload.explorer_payload`'s object."""
    from plotly.offline import get_plotlyjs

    here = resources.files("captum_paths.explorer")
    app = (here / "app.js").read_text(encoding="utf-8")
    css = (here / "app.css").read_text(encoding="utf-8")
    data = json.dumps(payload, separators=(",", ":"), allow_nan=False)
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        "<meta name='viewport' content='width=device-width, initial-scale=1'>"
        f"<title>{html.escape(title)}</title><style>{css}</style></head><body>{_BODY}"
        f"<script id='explorer-data' type='application/json'>{_json_text(data)}</script>"
        f"<script>{_script_text(get_plotlyjs())}</script>"
        f"<script>{_script_text(app)}</script></body></html>\n"
    )
