"""Which engine runs a plan (:func:`choose_scheduler`), and the one case where worker processes
cannot start: a script that calls atlasstore at its top level, without the
``if __name__ == "__main__":`` guard (:func:`unguarded_main`).

Without a given scheduler, a plan of one task, or of at most :data:`SERIAL_MAX_TASKS` tasks to
run writing at most :data:`SERIAL_MAX_VALUES` map values (32 default-sized sequences: 10 steps
of 256x256; an import counts its source files' bytes / 4) runs in this process: starting a
LocalCluster of worker processes costs 2-3 s (more on a loaded machine) and a default-sized
sequence takes 0.15-0.4 s to write, so below that size the cluster only adds its start-up
(measured: docs/engine.md, benchmarks/bench_scheduler.py). Larger plans run on the LocalCluster
of processes. A given scheduler always wins.

Dask's worker processes are started by ``multiprocessing``'s *spawn* method, which re-runs the
main script in every new process (as ``__mp_main__``). A script that calls ``generate`` or an
import at its top level would start the run again in every worker (which then finds the store
locked, and the cluster never starts). :func:`unguarded_main` finds that case - the run called
from the main script's top-level code, outside a ``__name__ == "__main__"`` block - so the
engine can run the plan on threads instead (when it chose processes itself) or refuse with the
fix (when processes were asked for).
"""

from __future__ import annotations

import ast
import logging
import os
import sys
from pathlib import Path
from types import FrameType

#: the most tasks to run that a plan without a given scheduler runs in this process
#: (measured crossover, see docs/engine.md)
SERIAL_MAX_TASKS = 32
#: ... and the most map values they may write (32 default sequences: 10 steps of 256x256)
SERIAL_MAX_VALUES = SERIAL_MAX_TASKS * 10 * 256 * 256


def choose_scheduler(given: str | None, n_tasks: int, values: int | None = None
                     ) -> tuple[str, str]:
    """The engine for ``n_tasks`` tasks to run writing about ``values`` map values (None:
    unknown), and why: ``given`` when there is one; else serial for one task or for a small
    plan (at most :data:`SERIAL_MAX_TASKS` tasks and :data:`SERIAL_MAX_VALUES` values), a
    LocalCluster of processes for a larger one."""
    if given is not None:
        return given, "as given"
    what = f"{n_tasks} task{'s' if n_tasks != 1 else ''} to run" + (
        f" ({values:,} map values)" if values is not None else "")
    if n_tasks <= 1:
        return "serial", f"chosen for {what}: one task gains nothing from a cluster"
    if n_tasks <= SERIAL_MAX_TASKS and (values is None or values <= SERIAL_MAX_VALUES):
        return "serial", (f"chosen for {what}: up to {SERIAL_MAX_TASKS} tasks and "
                          f"{SERIAL_MAX_VALUES:,} values run faster in this process "
                          f"than on a cluster")
    return "processes", (f"chosen for {what}: more than {SERIAL_MAX_TASKS} tasks or "
                         f"{SERIAL_MAX_VALUES:,} values")


def engine_for(given: str | None, n_tasks: int, values: int | None = None) -> tuple[str, str]:
    """:func:`choose_scheduler`, with threads instead of a process cluster it chose itself
    when worker processes would run the main script's unguarded top level again (a one-line
    warning says so and how to fix it)."""
    engine, reason = choose_scheduler(given, n_tasks, values)
    if engine == "processes" and given is None and (where := unguarded_main()) is not None:
        engine = "threads"
        reason += (f"; threads, not processes: {where} starts the run at the main script's top "
                   f"level, outside `if __name__ == \"__main__\":`, and worker processes would "
                   f"run it again")
        logging.getLogger("atlasstore").warning(
            "atlasstore: running %d tasks on threads, not worker processes: %s starts the run "
            "outside `if __name__ == \"__main__\":` (put it under one to use processes)",
            n_tasks, where)
    return engine, reason


def unguarded_main() -> str | None:
    """``"script.py line N"`` when this call comes from top-level code of the main script that
    worker processes started by spawn would run again (not under ``if __name__ ==
    "__main__":``); None otherwise (guarded, interactive, ``python -m pkg``, fork start)."""
    main_file = _main_file_rerun_by_spawn()
    if main_file is None:
        return None
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "<module>" and frame.f_globals.get("__name__") == "__main__":
            break
        frame = frame.f_back
    if frame is None or frame.f_lineno is None:
        return None  # not called while the main script runs its top level
    line = frame.f_lineno
    try:
        tree = ast.parse(Path(frame.f_code.co_filename).read_text(encoding="utf-8"))
    except (OSError, SyntaxError, ValueError):
        return None
    if any(_is_main_guard(node) and node.body[0].lineno <= line <= (node.body[-1].end_lineno or 0)
           for node in ast.walk(tree) if isinstance(node, ast.If)):
        return None
    return f"{os.path.basename(frame.f_code.co_filename)} line {line}"


def _main_file_rerun_by_spawn() -> str | None:
    """The main module's file when new worker processes would run it again (multiprocessing's
    own rule: not for ``python -m pkg`` of a package's ``__main__``, not for an interactive
    session; only for the spawn and forkserver start methods)."""
    import dask

    method = dask.config.get("distributed.worker.multiprocessing-method", "spawn")
    if method not in ("spawn", "forkserver"):
        return None
    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    spec = getattr(main, "__spec__", None)
    if path is None:
        return None
    if spec is not None and (spec.name == "__main__" or spec.name.endswith(".__main__")):
        return None
    if os.path.splitext(os.path.basename(path))[0] == "ipython":
        return None
    return str(path)


def _is_main_guard(node: ast.If) -> bool:
    """``if __name__ == "__main__":`` (either side)."""
    t = node.test
    if not (isinstance(t, ast.Compare) and len(t.ops) == 1 and isinstance(t.ops[0], ast.Eq)):
        return False
    sides = [t.left, t.comparators[0]]
    return (any(isinstance(s, ast.Name) and s.id == "__name__" for s in sides)
            and any(isinstance(s, ast.Constant) and s.value == "__main__" for s in sides))
