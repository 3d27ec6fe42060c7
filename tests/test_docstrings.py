"""Every public class and function of ``captum_paths.__all__`` documents its arguments and what it
returns, so the API reference (built from the docstrings) says how to call each name."""
import inspect
import re

import pytest

import captum_paths

#: Sections whose entries name arguments: ``Args:`` (functions, ``__init__``), ``Attributes:``
#: (dataclasses, whose fields are their arguments).
_SECTION = re.compile(r"^(?:Args|Arguments|Parameters|Attributes):\n((?:[ \t]+.*\n?|\n)*)", flags=re.M)
#: An entry: ``name (type): text`` or ``a, b, c: text`` (several arguments described together).
_ENTRY = re.compile(r"^\s{2,8}\**([A-Za-z_][\w, *]*?)(?:\s*\([^)]*\))?\s*:(?:\s|$)", flags=re.M)


def documented_arguments(obj):
    """The docstring of ``obj`` and the argument names its sections document."""
    doc = inspect.getdoc(obj) or ""
    names = set()
    for section in _SECTION.finditer(doc):
        for entry in _ENTRY.findall(section.group(1)):
            names.update(part.strip().lstrip("*") for part in entry.split(","))
    return doc, names


def _public_callables():
    for name in captum_paths.__all__:
        obj = getattr(captum_paths, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            yield name, obj


def _arguments(function):
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        return []
    return [p for p, v in parameters.items() if p not in ("self", "cls") and not p.startswith("_")
            and v.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)]


@pytest.mark.parametrize("name, obj", list(_public_callables()))
def test_every_public_callable_documents_its_arguments_and_return(name, obj):
    """A docstring; every argument in its ``Args:`` (a class's in its own or its ``__init__``'s
    docstring, a dataclass's fields in ``Attributes:``); a function's return value (a ``Returns:``
    section, or a summary that says what it is); a class's ``attribute`` the same."""
    doc, names = documented_arguments(obj)
    assert doc.strip(), f"{name} has no docstring"
    if inspect.isclass(obj):
        if obj.__init__ is not object.__init__:
            names |= documented_arguments(obj.__init__)[1]
            undocumented = [a for a in _arguments(obj.__init__) if a not in names]
            assert not undocumented, f"{name}: arguments without an entry in Args: {undocumented}"
        if "attribute" in vars(obj):
            method_doc, method_names = documented_arguments(obj.attribute)
            undocumented = [a for a in _arguments(obj.attribute) if a not in method_names]
            assert not undocumented, f"{name}.attribute: arguments without an entry in Args: {undocumented}"
            assert re.search(r"^(Returns|Yields):", method_doc, flags=re.M), f"{name}.attribute: no Returns"
        return
    undocumented = [a for a in _arguments(obj) if a not in names]
    assert not undocumented, f"{name}: arguments without an entry in Args: {undocumented}"
    returns = inspect.signature(obj).return_annotation
    if returns not in (None, "None", inspect.Signature.empty):
        assert re.search(r"^(Returns|Yields):", doc, flags=re.M) or re.match(r"(The|A|An|Whether) ", doc), \
            f"{name}: the docstring does not say what it returns"
