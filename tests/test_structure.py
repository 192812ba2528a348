"""The shape of the whole package: layers written down as data, imports one way, no cycle,
small modules and functions, one error root.

The import graph is read from the source with ``ast`` and counts every import of one of our
modules: at module level, inside a function, and under ``if TYPE_CHECKING:`` (a lazy or a
type-only import that closes a cycle is still a cycle in the design).
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from pathlib import Path

import pytest

import atlasstore
from atlasstore import errors
from helpers.import_graph import find_cycle

PACKAGE = Path(atlasstore.__file__).parent

#: The layers, lowest first. A module may import modules of its own unit (its package, or
#: itself) and of units in lower layers, never of a unit in its own or a higher layer.
#: Units are top-level modules or packages of ``atlasstore``.
LAYERS: list[set[str]] = [
    {"errors", "_version"},            # the one error root and the version; import nothing
    {"records"},                       # typed records: the JSON shape of a sequence
    {"io"},                            # where bytes live: locations, object storage, schemas
    {"physics"},                       # pure NumPy physics and the synthetic domains
    {"store"},                         # AtlasStore, writer, documents, change log, lock
    {"read"},                          # TensorStore reader and disk cache
    {"query_names"},                   # the sequences a query names, without a listing
    {"query"},                         # selection and window reads
    {"catalog"},                       # the index and its sync with the store
    {"audit", "compat", "runs", "training"},  # checks, the predecessor's API, writes, feeding
    {"nvp"},                           # the model
    {"cli"},                           # the command line: the only unit that prints or exits
]
#: Units that are not layered themselves (the package's lazy public face imports nothing at
#: import time; its ``__getattr__`` names modules as strings).
UNLAYERED = {"__init__"}
MAX_MODULE_LINES = 500
MAX_FUNCTION_LINES = 80


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = modules()


def unit(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def rank(u: str) -> int:
    for i, layer in enumerate(LAYERS):
        if u in layer:
            return i
    raise AssertionError(f"atlasstore.{u} is in no layer of tests/test_structure.py: add it")


def imports_of(module: str, path: Path) -> set[str]:
    """Our modules that ``module`` imports, every form and place (relative ones resolved)."""
    is_pkg = path.name == "__init__.py"
    here = module.split(".") if is_pkg else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[: len(here) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "atlasstore":
                continue
            for alias in node.names:  # `from pkg import module` imports the module
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in MODULES else target)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "atlasstore"}
    return {m for m in found if m in MODULES} - {module}


GRAPH = {m: imports_of(m, p) for m, p in MODULES.items()}


def test_the_checker_sees_every_import_form_and_cycles(tmp_path: Path) -> None:
    src = ("from typing import TYPE_CHECKING\nfrom atlasstore.records import FieldSpec\n"
           "from atlasstore import errors\nimport atlasstore.query\n"
           "if TYPE_CHECKING:\n    from atlasstore.store.atlas_store import AtlasStore\n"
           "def f():\n    from ..catalog import sync\n")
    p = tmp_path / "engine.py"
    p.write_text(src)
    assert imports_of("atlasstore.runs.engine", p) == {
        "atlasstore.records", "atlasstore.errors", "atlasstore.query",
        "atlasstore.store.atlas_store", "atlasstore.catalog.sync"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_every_unit_is_in_a_layer_once() -> None:
    units = {unit(m) for m in MODULES} - UNLAYERED
    named = [u for layer in LAYERS for u in layer]
    assert len(named) == len(set(named)), "a unit is in two layers"
    assert units == set(named), f"not layered: {units - set(named)}; gone: {set(named) - units}"


def test_imports_flow_down_the_layers() -> None:
    wrong = []
    for m, targets in GRAPH.items():
        if unit(m) in UNLAYERED:
            continue
        for t in targets:
            if unit(t) == unit(m):
                continue
            if unit(t) in UNLAYERED or rank(unit(t)) >= rank(unit(m)):
                wrong.append(f"{m} -> {t}")
    assert not wrong, "imports against the layers:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle_between_modules() -> None:
    cycle = find_cycle(GRAPH)
    assert cycle is None, f"import cycle: {' -> '.join(cycle or [])}"


def test_public_face_names_only_real_things() -> None:
    for name in atlasstore.__all__:
        assert getattr(atlasstore, name) is not None
    with pytest.raises(AttributeError, match="no attribute"):
        atlasstore.not_a_name  # noqa: B018


@pytest.mark.parametrize("module", sorted(MODULES), ids=str)
def test_modules_and_functions_stay_small(module: str) -> None:
    text = MODULES[module].read_text()
    n = len(text.splitlines())
    assert n <= MAX_MODULE_LINES, f"{module} has {n} lines (at most {MAX_MODULE_LINES}): split it"
    long = [f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
            for node in ast.walk(ast.parse(text))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
            and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES]
    assert not long, f"{module}: functions over {MAX_FUNCTION_LINES} lines: {long}"


def _all_exception_classes() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.walk_packages(atlasstore.__path__, "atlasstore."):
        if info.name.endswith(".__main__"):  # running it is the command itself
            continue
        mod = importlib.import_module(info.name)
        for _, obj in inspect.getmembers(mod, inspect.isclass):
            if issubclass(obj, BaseException) and obj.__module__ == mod.__name__:
                found.append(obj)
    return found


def test_one_error_root() -> None:
    """Every public error is defined in atlasstore.errors and derives from AtlasError; only
    private helpers and Ctrl-C's KeyboardInterrupt subclass live elsewhere."""
    stray = [f"{c.__module__}.{c.__qualname__}" for c in _all_exception_classes()
             if c.__module__ != "atlasstore.errors" and not c.__name__.startswith("_")
             and not issubclass(c, KeyboardInterrupt)]
    assert not stray, f"errors defined outside atlasstore.errors: {stray}"
    public = [c for c in vars(errors).values()
              if isinstance(c, type) and issubclass(c, BaseException)]
    assert len(public) > 20
    assert all(issubclass(c, errors.AtlasError) for c in public), [
        c.__name__ for c in public if not issubclass(c, errors.AtlasError)]
    assert all(isinstance(c.exit_code, int) for c in public)


def test_the_errors_module_imports_nothing_of_ours() -> None:
    assert GRAPH["atlasstore.errors"] == set()
