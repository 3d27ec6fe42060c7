"""The package's rooms on disk: the top level holds the rooms; the old module paths still work
for one release, with a warning; the public namespace is the API. (That every import runs down
the floors is tests/test_pipeline.py's test_no_module_imports_upward.)"""
import ast
import importlib
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

import captum_paths
from captum_paths._moved import MOVED, new_name

PACKAGE = Path(captum_paths.__file__).parent


def _imported(file):
    for node in ast.walk(ast.parse(file.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            yield node.module, node.lineno
        elif isinstance(node, ast.Import):
            yield from ((alias.name, node.lineno) for alias in node.names)


def test_no_module_imports_a_moved_path():
    old = [f"{file.relative_to(PACKAGE.parent)}:{line} {module}" for file in sorted(PACKAGE.rglob("*.py"))
           for module, line in _imported(file) if new_name(module)]
    assert not old, "\n".join(old)


def test_top_level_holds_the_rooms():
    modules = sorted(p.stem for p in PACKAGE.glob("*.py") if not p.stem.startswith("_"))
    assert modules == ["cli", "records", "statistics"]
    packages = sorted(p.name for p in PACKAGE.iterdir() if (p / "__init__.py").exists())
    assert packages == ["analysis", "attribution", "demo", "evaluation", "explorer", "model", "pipeline", "plots",
                        "search"]


@pytest.mark.parametrize("old", sorted(MOVED))
def test_old_paths_still_import_with_a_warning(old):
    """Run in a fresh interpreter: the old path gives the same module object as the new one."""
    code = (
        "import warnings, importlib\n"
        "with warnings.catch_warnings(record=True) as caught:\n"
        "    warnings.simplefilter('always')\n"
        f"    old = importlib.import_module({old!r})\n"
        f"new = importlib.import_module({MOVED[old]!r})\n"
        "assert old is new, (old, new)\n"
        f"assert old.__spec__.name == {MOVED[old]!r}, old.__spec__.name\n"
        "messages = [str(w.message) for w in caught if w.category is DeprecationWarning]\n"
        f"assert any({old + ' moved to ' + MOVED[old]!r} in m for m in messages), messages\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_old_names_and_submodules_of_moved_packages():
    with pytest.warns(DeprecationWarning) as caught:
        old = importlib.import_module("captum_paths.families.timm_vit")
    assert any("captum_paths.families.timm_vit moved to captum_paths.model.families.timm_vit" in str(w.message)
               for w in caught)
    assert old is importlib.import_module("captum_paths.model.families.timm_vit")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from captum_paths.models import load_model
        from captum_paths.sites import NeuronSites
    from captum_paths.model.loading import load_model as new_load_model
    from captum_paths.model.sites import NeuronSites as new_sites

    assert load_model is new_load_model and NeuronSites is new_sites
    from captum_paths.evaluation import probability_deviation  # the old module is the room's package now
    from captum_paths.evaluation.harness import probability_deviation as new

    assert probability_deviation is new


def test_the_public_namespace_is_the_api():
    names = dir(captum_paths)
    for leak in ("Any", "Dict", "List", "TYPE_CHECKING", "import_module"):
        assert leak not in names
    assert set(captum_paths.__all__) <= set(names)
    extra = set(names) - set(captum_paths.__all__)
    assert extra == {"analysis", "attribution", "demo", "evaluation", "explorer", "model", "pipeline", "plots",
                     "records", "search", "statistics"}
    for name in captum_paths.__all__:
        assert getattr(captum_paths, name) is not None


def test_the_pipeline_has_no_circle_even_through_lazy_imports():
    """The stages import the run folder, never the other way round: run.py and settings.py import
    no stage (not even inside a function), and no chain of imports in pipeline/ comes back to
    where it started."""
    folder = PACKAGE / "pipeline"
    names = {file.stem for file in folder.glob("*.py")} - {"__init__"}
    graph = {}
    for file in folder.glob("*.py"):
        imported = set()
        for module, _ in _imported(file):
            parts = module.split(".")
            if parts[:2] == ["captum_paths", "pipeline"] and len(parts) > 2 and parts[2] in names:
                imported.add(parts[2])
        graph[file.stem] = imported - {file.stem}
    stages = {"extract", "evaluate", "analyze", "report", "demo"}
    assert not graph["run"] & stages and not graph["settings"] & stages, (graph["run"], graph["settings"])

    def visit(node, path):
        for nxt in sorted(graph.get(node, set())):
            assert nxt not in path, " -> ".join([*path, nxt])
            visit(nxt, [*path, nxt])

    for start in sorted(graph):
        visit(start, [start])
