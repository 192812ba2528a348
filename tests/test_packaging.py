"""What atlasstore imports matches what pyproject.toml declares, and the lock file pins it.

`pip install atlasstore` must bring what the core imports and nothing it never imports; the
parts behind an extra (nvp, stream, the Neo4j backend) may import their extra's packages at
module level, everything else only inside functions. requirements/constraints.txt, which
scripts/setup and CI install from, must pin every declared requirement inside its range.
"""

from __future__ import annotations

import ast
import importlib.metadata as md
import re
import sys
import tomllib
from functools import cache
from pathlib import Path

from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
LOCK = ROOT / "requirements" / "constraints.txt"
#: Modules that may import an extra's packages at module level (dotted prefix -> extra).
MODULE_EXTRAS = {"atlasstore.nvp": "nvp", "atlasstore.training.stream": "stream",
                 "atlasstore.catalog.neo4j": "neo4j"}
#: Extras for what the package runs (the others are for developing it).
RUNTIME_EXTRAS = ("neo4j", "stream", "plots", "nvp", "hdf5", "s3", "solvers")


def norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirements(extra: str | None = None) -> list[Requirement]:
    """The requirements of the base package or one extra, self-references (atlasstore[x]) expanded."""
    project = PYPROJECT["project"]
    own = project["optional-dependencies"][extra] if extra else project["dependencies"]
    out: list[Requirement] = []
    for text in own:
        req = Requirement(text)
        if norm(req.name) == "atlasstore":
            for sub in sorted(req.extras):
                out += requirements(sub)
        else:
            out.append(req)
    return out


def names(reqs: list[Requirement]) -> set[str]:
    return {norm(r.name) for r in reqs}


def imports(path: Path) -> tuple[set[str], set[str]]:
    """Top-level names of the absolute imports of a file: (at module level, inside functions)."""
    module_level: set[str] = set()
    lazy: set[str] = set()

    def visit(node: ast.AST, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                continue  # typing only, never executed
            if isinstance(child, ast.Import):
                found = {a.name.split(".")[0] for a in child.names}
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                found = {child.module.split(".")[0]}
            else:
                found = set()
            (lazy if in_function else module_level).update(found)
            visit(child, in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                           ast.Lambda)))

    visit(ast.parse(path.read_text()), False)
    return module_level, lazy


@cache
def _distributions() -> dict[str, list[str]]:
    return md.packages_distributions()


def third_party(found: set[str]) -> set[str]:
    """The distributions providing the third-party import names in ``found``."""
    dists = _distributions()
    out = set()
    for name in found - set(sys.stdlib_module_names) - {"atlasstore", "__future__"}:
        assert name in dists, f"{name} is imported by atlasstore but not installed"
        out |= {norm(d) for d in dists[name]}
    return out


@cache
def package_imports() -> dict[str, tuple[set[str], set[str]]]:
    out = {}
    for path in sorted((ROOT / "atlasstore").rglob("*.py")):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        module_level, lazy = imports(path)
        out[module] = (third_party(module_level), third_party(lazy))
    return out


def test_modules_import_at_module_level_only_their_declared_dependencies() -> None:
    base = names(requirements())
    wrong = {}
    for module, (module_level, _) in package_imports().items():
        allowed = set(base)
        for prefix, extra in MODULE_EXTRAS.items():
            if module == prefix or module.startswith(prefix + "."):
                allowed |= names(requirements(extra))
        if module_level - allowed:
            wrong[module] = sorted(module_level - allowed)
    assert not wrong, (f"module-level imports outside the base dependencies {sorted(base)} (and the "
                       f"module's extra): {wrong}; import them inside the function that needs them "
                       "or declare them in pyproject.toml")


def test_every_import_is_declared_and_every_runtime_dependency_is_imported() -> None:
    declared = names(requirements())
    for extra in RUNTIME_EXTRAS:
        declared |= names(requirements(extra))
    used = set().union(*(a | b for a, b in package_imports().values()))
    assert not used - declared, f"imported but not declared in pyproject.toml: {sorted(used - declared)}"
    assert not declared - used, (f"declared in pyproject.toml but never imported by atlasstore: "
                                 f"{sorted(declared - used)} (a tool or benchmark dependency belongs "
                                 "in the extra that uses it)")


def test_the_lock_pins_every_declared_requirement_inside_its_range() -> None:
    pins = {}
    for line in LOCK.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
        if m:
            pins[norm(m.group(1))] = m.group(2)
    reqs = requirements() + [Requirement(r) for r in PYPROJECT["build-system"]["requires"]]
    for extra in PYPROJECT["project"]["optional-dependencies"]:
        reqs += requirements(extra)
    bad = [f"{r} (locked: {pins.get(norm(r.name), 'missing')})" for r in reqs
           if norm(r.name) not in pins or not r.specifier.contains(pins[norm(r.name)], prereleases=True)]
    assert not bad, f"{LOCK.relative_to(ROOT)} is out of date with pyproject.toml (run scripts/lock): {bad}"
