"""The package's rooms on disk: every import runs down the floors, never back up; the old
module paths still work for one release, with a warning; the public namespace is the API."""
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

#: The floors, lowest first: a module may import its own room and the rooms below it.
FLOORS = [
    {"records", "statistics", "_version", "_moved", "demo"},
    {"model"},
    {"attribution"},
    {"search"},
    {"analysis"},
    {"evaluation"},
    {"plots"},
    {"explorer"},
    {"pipeline"},
    {"cli", "__main__"},
]
FLOOR = {room: i for i, rooms in enumerate(FLOORS) for room in rooms}


def _modules():
    for file in sorted(PACKAGE.rglob("*.py")):
        parts = file.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        yield name, file


def _imports(name, file):
    """``(imported module, line, lazy)`` of every import of the package in ``file`` (TYPE_CHECKING
    blocks left out: they run no code)."""
    tree = ast.parse(file.read_text(encoding="utf-8"))
    package = name if file.name == "__init__.py" else name.rpartition(".")[0]
    out = []

    def visit(nodes, lazy):
        for node in nodes:
            if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
                continue
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                visit(node.body, True)
                continue
            if isinstance(node, ast.Import):
                out.extend((a.name, node.lineno, lazy) for a in node.names)
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                out.append((base, node.lineno, lazy))
            for field in ("body", "orelse", "finalbody", "handlers"):
                if isinstance(getattr(node, field, None), list):
                    visit(getattr(node, field), lazy)

    visit(tree.body, False)
    return [(m, line, lazy) for m, line, lazy in out if m == "captum_paths" or m.startswith("captum_paths.")]


def _room(module):
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else None


def test_every_module_sits_on_a_floor():
    rooms = {_room(name) for name, _ in _modules() if _room(name)}
    assert rooms <= set(FLOOR), sorted(rooms - set(FLOOR))


def test_no_import_runs_back_up():
    """A room imports only its own and lower rooms (lazy imports inside functions included), so
    the graph of rooms has no circle and a newcomer can read the package bottom up."""
    upward = []
    for name, file in _modules():
        room = _room(name)
        if room is None:  # the top-level package: the lazy, flat public API over every room
            continue
        for module, line, lazy in _imports(name, file):
            target = _room(new_name(module) or module)
            if target is not None and FLOOR[target] > FLOOR[room]:
                upward.append(f"{file.relative_to(PACKAGE.parent)}:{line} imports {module}"
                              + (" (in a function)" if lazy else ""))
    assert not upward, "\n".join(upward)


def test_no_module_imports_a_moved_path():
    old = [f"{file.relative_to(PACKAGE.parent)}:{line} {module}" for name, file in _modules()
           if file.name != "_moved.py" for module, line, _ in _imports(name, file) if new_name(module)]
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
    with pytest.warns(DeprecationWarning, match="captum_paths.families.timm_vit moved to "
                                                "captum_paths.model.families.timm_vit"):
        old = importlib.import_module("captum_paths.families.timm_vit")
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
