"""Sphinx configuration of the captum-paths documentation site.

Sphinx (autodoc + napoleon, as Captum's own site) with MyST for the Markdown guides
and MyST-NB for the tutorials, which are rendered with the outputs they were
committed with (the test suite executes them). The API pages are generated here on
every build from the package's public modules, so a new module shows up without an
edit. Everything builds offline: ``sphinx-build -W -b html docs docs/_build/html``.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
import re
import shutil
import sys
from pathlib import Path

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import captum_paths  # noqa: E402

project = "captum-paths"
author = "the captum-paths developers"
release = captum_paths.__version__
copyright = "the captum-paths developers"

extensions = ["myst_nb", "sphinx.ext.autodoc", "sphinx.ext.napoleon", "sphinx.ext.viewcode"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}
exclude_patterns = ["_build", "screenshots.py", "**/.ipynb_checkpoints"]
myst_enable_extensions = ["colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"  # the committed notebooks carry their outputs; tests/test_tutorials.py runs them
nb_merge_streams = True
suppress_warnings = ["mystnb.unknown_mime_type"]

autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_member_order = "bysource"
autodoc_typehints = "signature"  # the Args sections describe each argument; the types stay in the signature
autodoc_typehints_format = "short"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True
nitpicky = False

html_theme = "furo"
html_title = f"captum-paths {release}"
html_static_path: list = []
html_copy_source = False
html_show_sourcelink = False
html_show_search_summary = False  # the summaries are fetched, which a page opened from the file system may not do

#: The rooms of the API reference, in the order a reader meets them.
ROOMS = [
    ("model", "Models, units and data"),
    ("attribution", "Attribution"),
    ("search", "Path search"),
    ("analysis", "Analysis"),
    ("evaluation", "Evaluation"),
    ("plots", "Figures"),
    ("explorer", "The explorer"),
    ("pipeline", "Run folders and stages"),
    ("records", "Records"),
    ("statistics", "Statistics"),
    ("demo", "The demo model"),
]


def public_modules(room: str) -> list:
    """The public modules of a room: the module itself, or its package and every submodule
    whose name does not start with ``_``."""
    module = importlib.import_module(f"captum_paths.{room}")
    names = [module.__name__]
    if hasattr(module, "__path__"):
        for info in pkgutil.walk_packages(module.__path__, prefix=module.__name__ + "."):
            if not any(part.startswith("_") for part in info.name.split(".")[2:]) and not info.name.endswith(".train"):
                names.append(info.name)
    return names


def defining_module(name: str) -> str:
    """The module that defines the public name ``name`` (where its API entry is)."""
    obj = getattr(captum_paths, name)
    if getattr(obj, "__module__", None) and (inspect.isclass(obj) or inspect.isfunction(obj)):
        return obj.__module__
    package = importlib.import_module(captum_paths._LAZY[name])  # a constant: find its assignment
    for module in [package.__name__] + [m.name for m in pkgutil.walk_packages(getattr(package, "__path__", []),
                                                                              prefix=package.__name__ + ".")]:
        source = inspect.getsource(importlib.import_module(module))
        if re.search(rf"^{name}\b[^=\n]*=", source, flags=re.M):
            return module
    raise LookupError(f"no module of captum_paths defines {name}")


def write_api_pages() -> None:
    """``docs/api/*.md``: one page per room, one section per public module (its ``__all__``)."""
    out = HERE / "api"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    index = ["# API reference", "",
             "Every public name, by room. The flat API (`from captum_paths import ...`) re-exports the",
             "names of the table below from the module they are documented in.", "",
             "| name | documented in |", "|---|---|"]
    for name in sorted(captum_paths.__all__, key=str.lower):
        if name == "__version__":
            continue
        home = defining_module(name)
        index.append(f"| {{py:obj}}`{name} <{home}.{name}>` | `{home}` |")
    index += ["", "```{toctree}", ":maxdepth: 1", ""] + [room for room, _ in ROOMS] + ["```", ""]
    (out / "index.md").write_text("\n".join(index), encoding="utf-8")
    for room, title in ROOMS:
        lines = [f"# {title}", ""]
        for module in public_modules(room):
            # the members each module defines (names it re-exports are documented where they live)
            lines += [f"## `{module}`", "", "```{eval-rst}", f".. automodule:: {module}", "   :ignore-module-all:",
                      "```", ""]
        (out / f"{room}.md").write_text("\n".join(lines), encoding="utf-8")


def copy_tutorials() -> None:
    """The committed tutorials (with their outputs) as pages under ``docs/tutorials/``."""
    out = HERE / "tutorials"
    if out.exists():
        shutil.rmtree(out)
    out.mkdir()
    notebooks = sorted((ROOT / "tutorials").glob("[0-9]*.ipynb"))
    for notebook in notebooks:
        shutil.copy2(notebook, out / notebook.name)
    lines = ["# Tutorials", "",
             "Executable notebooks on the embedded digits ViT; each runs offline in seconds, and the test",
             "suite executes every one. The pages show the outputs they were committed with.", "",
             "```{toctree}", ":maxdepth: 1", ""] + [n.stem for n in notebooks] + ["```", ""]
    (out / "index.md").write_text("\n".join(lines), encoding="utf-8")


def _api_targets() -> dict:
    """Inline code naming a public name (``NeuronSites``, ``load_model``, ``Run.extract``) ->
    the object it documents, for :func:`link_api_names`."""
    targets = {}
    for name in captum_paths.__all__:
        if name == "__version__":
            continue
        home = f"{defining_module(name)}.{name}"
        targets[name] = home
        obj = getattr(captum_paths, name)
        if inspect.isclass(obj):
            for member in vars(obj):
                if not member.startswith("_"):
                    targets[f"{name}.{member}"] = f"{home}.{member}"
    return targets


def link_api_names(app, doctree) -> None:
    """Guides name the API in inline code (readable on GitHub as it is): on the site, inline
    code that is exactly a public name (or ``Name.member``, with or without ``()``) links to its
    entry in the API reference."""
    from docutils import nodes
    from sphinx import addnodes

    targets = app.env.captum_api_targets
    for literal in list(doctree.findall(nodes.literal)):
        text = literal.astext().removesuffix("()")
        if text in targets and not isinstance(literal.parent, (addnodes.pending_xref, nodes.reference)):
            xref = addnodes.pending_xref("", refdomain="py", reftype="obj", reftarget=targets[text],
                                         refexplicit=True, refwarn=False)
            literal.replace_self(xref)
            xref += literal


def _remember_targets(app) -> None:
    app.env.captum_api_targets = _api_targets()


def setup(app):
    app.connect("builder-inited", _remember_targets)
    app.connect("doctree-read", link_api_names)


write_api_pages()
copy_tutorials()
