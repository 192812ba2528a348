"""The store's run records (``_runs/``): one document per generation or import run, with one
entry per attempt (a re-run of the same command resumes the run: a new attempt), so a run's
history survives its process and its resumes.

A record's ``attempts`` lists, oldest first, each attempt's ``started``, ``finished``,
``outcome`` (``running``; ``complete``; ``failed``: some tasks failed; ``interrupted``: Ctrl-C;
``abandoned``: the process ended without finishing it, e.g. killed - noticed by the next
attempt, which holds the writer lock), its own ``counts`` and the ``scheduler`` it ran on (and
why). The record's ``counts`` are the run's totals: ``written`` and ``maps`` summed over the
attempts, ``tasks``, ``skipped`` and ``failed`` those of the latest finished attempt (what was
already complete when it began; what still fails, as ``failures`` lists). Records written
before attempts had entries (``attempts`` a list of start times) still load: :func:`attempts_of`
reads them as entries.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import zarr

from atlasstore.errors import StoreError
from atlasstore.io.schemas import validate
from atlasstore.store.change_log import ChangeLog
from atlasstore.store.handle import StoreHandle

#: counts summed over a run's attempts; the others are the latest finished attempt's
SUMMED_COUNTS = ("written", "maps")


def attempts_of(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """A run record's attempts as entries; an old record's start times become entries, its
    last one with the record's own ``finished`` and ``counts`` (that attempt's)."""
    raw = rec.get("attempts") or []
    out = [dict(a) if isinstance(a, dict) else {"started": a} for a in raw]
    legacy = [i for i, a in enumerate(raw) if not isinstance(a, dict)]
    if legacy and legacy[-1] == len(raw) - 1 and rec.get("finished"):
        counts = dict(rec.get("counts") or {})
        out[-1].update(finished=rec["finished"], counts=counts,
                       outcome="failed" if counts.get("failed") else "complete")
    return out


def totals(attempts: list[dict[str, Any]]) -> dict[str, int]:
    """The run's counts from its attempts (see the module docstring)."""
    done = [a["counts"] for a in attempts if a.get("finished") and a.get("counts")]
    if not done:
        return {}
    out = {k: int(v) for k, v in done[-1].items()}
    for k in SUMMED_COUNTS:
        out[k] = sum(int(c.get(k, 0)) for c in done)
    return out


class RunLog:
    """Generation and import run records kept in the store (group ``_runs``)."""

    def __init__(self, store: StoreHandle) -> None:
        self.store = store

    def _group(self) -> zarr.Group:
        root = self.store.zarr_group
        if "_runs" not in set(root.group_keys()):
            return root.create_group("_runs", attributes={"description": "generation run records"})
        return _subgroup(root, "_runs")

    def start(self, run: dict[str, Any], **attempt: Any) -> None:
        """A new attempt of ``run`` (the record is created by the first): ``attempt`` adds to
        its entry (e.g. ``scheduler``); earlier attempts still ``running`` are ``abandoned``."""
        validate(run, "run", what="run record")
        g = self._group()
        name = run["run_id"]
        entry = {"started": run["started"], "finished": None, "outcome": "running", **attempt}
        if name in set(g.group_keys()):
            rg = _subgroup(g, name)
            rec: Any = rg.attrs["atlasstore_run"]
            rec = dict(rec)
            attempts = [{**a, "outcome": "abandoned"} if a.get("outcome") == "running" else a
                        for a in attempts_of(rec)]
            rec["attempts"] = [*attempts, entry]
            validate(rec, "run", what="run record")
            rg.attrs.update({"atlasstore_run": rec})
        else:
            rec = {k: v for k, v in run.items() if k != "attempts"}
            g.create_group(name, attributes={"atlasstore_run": {**rec, "attempts": [entry]}})
        ChangeLog(self.store).record("run", run_id=name)

    def end_attempt(self, run_id: str, started: str, **entry: Any) -> None:
        """Update the attempt begun at ``started`` (e.g. ``outcome="interrupted"``) and nothing
        else of the record."""
        self._update(run_id, started, entry, lambda rec: rec)

    def finish(self, run: dict[str, Any], failures: list[dict[str, Any]],
               **entry: Any) -> None:
        """The attempt ``run`` (begun at ``run["started"]``) finished with ``run["counts"]``:
        its entry gets them with ``entry`` (``outcome``, ...); the record gets the totals,
        ``finished`` and the attempt's ``failures``; ``started`` stays the first attempt's."""
        validate(run, "run", what="run record")

        def whole(rec: dict[str, Any]) -> dict[str, Any]:
            new = {**rec, **run, "started": rec.get("started", run["started"]),
                   "attempts": rec["attempts"], "failures": failures}
            new["counts"] = totals(rec["attempts"])
            return new

        self._update(run["run_id"], run["started"],
                     {"finished": run["finished"], "counts": dict(run["counts"]), **entry}, whole)

    def _update(self, run_id: str, started: str, entry: dict[str, Any],
                whole: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        g = _subgroup(self._group(), run_id)
        rec: Any = g.attrs["atlasstore_run"]
        rec = dict(rec)
        attempts = attempts_of(rec)
        mine = [i for i, a in enumerate(attempts) if a.get("started") == started]
        if mine:
            attempts[mine[-1]] = {**attempts[mine[-1]], **entry}
        else:  # the record was replaced meanwhile: keep this attempt anyway
            attempts.append({"started": started, **entry})
        rec["attempts"] = attempts
        rec = whole(rec)
        validate(rec, "run", what="run record")
        g.attrs.update({"atlasstore_run": rec})
        ChangeLog(self.store).record("run", run_id=run_id)

    def list(self) -> list[dict[str, Any]]:
        root = self.store.zarr_group
        if "_runs" not in set(root.group_keys()):
            return []
        g = _subgroup(root, "_runs")
        recs: list[Any] = [_subgroup(g, k).attrs["atlasstore_run"] for k in sorted(g.group_keys())]
        return [{**r, "attempts": attempts_of(dict(r))} for r in recs]


def _subgroup(group: zarr.Group, name: str) -> zarr.Group:
    node = group[name]
    if not isinstance(node, zarr.Group):
        raise StoreError(f"{group.path}/{name} is not a group")
    return node
