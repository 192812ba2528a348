"""The shape of ``atlasstore.nvp``: imports flow one way, modules stay small, lazy exports work.

The import graph is read from the source with ``ast`` and counts every import of a sibling
module, at module level or inside a function: a lazy import that closes a cycle is still a
cycle in the design.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

import atlasstore.nvp
from helpers.import_graph import find_cycle

NVP_DIR = Path(atlasstore.nvp.__file__).parent
MAX_LINES = 500


def sibling_imports(path: Path) -> set[str]:
    """Modules of ``atlasstore.nvp`` that ``path`` imports (``from .x import``, ``from . import
    x``, ``import atlasstore.nvp.x``, ``from atlasstore.nvp.x import``)."""
    names = {p.stem for p in NVP_DIR.glob("*.py")} - {"__init__"}
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level == 1 and not mod:
                found |= {a.name for a in node.names if a.name in names}
            elif node.level == 1:
                found.add(mod.split(".")[0])
            elif node.level == 0 and mod.startswith("atlasstore.nvp."):
                found.add(mod.split(".")[2])
        elif isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("atlasstore.nvp."):
                    found.add(a.name.split(".")[2])
    return (found & names) - {path.stem}


def import_graph() -> dict[str, set[str]]:
    return {p.stem: sibling_imports(p) for p in NVP_DIR.glob("*.py") if p.stem != "__init__"}


def test_the_import_graph_reader_sees_imports_and_cycles(tmp_path: Path) -> None:
    """The checker itself: it finds each import form and a cycle through a lazy import."""
    src = ("from .config import TrainConfig\nfrom . import plots\n"
           "import atlasstore.nvp.model\n\ndef f():\n    from atlasstore.nvp.scores import vrmse\n")
    p = tmp_path / "train.py"
    p.write_text(src)
    assert sibling_imports(p) == {"config", "plots", "model", "scores"}
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_in_nvp() -> None:
    graph = import_graph()
    assert find_cycle(graph) is None, f"import cycle in atlasstore.nvp: {find_cycle(graph)}"


def test_evaluation_does_not_depend_on_training() -> None:
    graph = import_graph()
    for mod in ("evaluate", "scores", "baselines", "plots"):
        assert "train" not in graph[mod], f"{mod} imports train"
    # the building blocks do not reach up into the loop or the report
    for mod in ("config", "input_pipeline", "checkpoint", "lineage", "metrics", "loss", "model"):
        assert not graph[mod] & {"train", "evaluate", "cli"}, (mod, graph[mod])


@pytest.mark.parametrize("path", sorted(NVP_DIR.glob("*.py")), ids=lambda p: p.name)
def test_modules_stay_small(path: Path) -> None:
    n = len(path.read_text().splitlines())
    assert n <= MAX_LINES, f"{path.name} has {n} lines (at most {MAX_LINES}): split it"


def test_lazy_exports_resolve_without_importing_jax_up_front() -> None:
    code = ("import sys, atlasstore.nvp as n, atlasstore.cli.train, atlasstore.cli\n"
            "atlasstore.cli.build_parser()\n"
            "assert 'jax' not in sys.modules, 'importing the package or the CLI imported JAX'\n"
            "missing = [k for k in n.__all__ if getattr(n, k, None) is None]\n"
            "assert not missing, missing\n"
            "from atlasstore.nvp.config import TrainConfig\n"
            "assert n.TrainConfig is TrainConfig\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       check=False)
    assert r.returncode == 0, r.stderr
    with pytest.raises(AttributeError, match="no attribute"):
        atlasstore.nvp.not_a_name  # noqa: B018
