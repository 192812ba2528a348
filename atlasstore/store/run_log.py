"""The store's run records (``_runs/``): one document per generation or import run, started and
finished, so a run's history survives its process."""

from __future__ import annotations

from typing import Any

import zarr

from atlasstore.errors import (
    StoreError,
)
from atlasstore.io.schemas import validate
from atlasstore.store.change_log import ChangeLog
from atlasstore.store.handle import StoreHandle


class RunLog:
    """Generation run records kept in the store (group ``_runs``): a store documents its history."""

    def __init__(self, store: StoreHandle) -> None:
        self.store = store

    def _group(self) -> zarr.Group:
        root = self.store.zarr_group
        if "_runs" not in set(root.group_keys()):
            return root.create_group("_runs", attributes={"description": "generation run records"})
        return _subgroup(root, "_runs")

    def start(self, run: dict[str, Any]) -> None:
        validate(run, "run", what="run record")
        g = self._group()
        name = run["run_id"]
        if name in set(g.group_keys()):
            rg = _subgroup(g, name)
            rec: Any = rg.attrs["atlasstore_run"]
            rec.setdefault("attempts", []).append(run["started"])
            rg.attrs.update({"atlasstore_run": rec})
        else:
            g.create_group(name, attributes={"atlasstore_run": {**run, "attempts": [run["started"]]}})
        ChangeLog(self.store).record("run", run_id=name)

    def finish(self, run: dict[str, Any], failures: list[dict[str, Any]]) -> None:
        validate(run, "run", what="run record")
        g = _subgroup(self._group(), run["run_id"])
        rec: Any = g.attrs["atlasstore_run"]
        g.attrs.update({"atlasstore_run": {**rec, **run, "attempts": rec.get("attempts", []),
                                           "failures": failures}})
        ChangeLog(self.store).record("run", run_id=run["run_id"])

    def list(self) -> list[dict[str, Any]]:
        root = self.store.zarr_group
        if "_runs" not in set(root.group_keys()):
            return []
        g = _subgroup(root, "_runs")
        recs: list[Any] = [_subgroup(g, k).attrs["atlasstore_run"] for k in sorted(g.group_keys())]
        return [dict(r) for r in recs]


def _subgroup(group: zarr.Group, name: str) -> zarr.Group:
    node = group[name]
    if not isinstance(node, zarr.Group):
        raise StoreError(f"{group.path}/{name} is not a group")
    return node
