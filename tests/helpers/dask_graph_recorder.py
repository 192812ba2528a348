"""A Dask scheduler preload for the cluster tests (``dask scheduler --preload <this file>``):
keeps every task that enters the scheduler as pickled bytes, so that a test can grep what the
driver sent for a secret (read through ``dask_scheduler.plugins[NAME].blobs``)."""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import SchedulerPlugin
from distributed.protocol.pickle import dumps

NAME = "atlas-graph-recorder"


class GraphRecorder(SchedulerPlugin):
    name = NAME

    def __init__(self) -> None:
        self.blobs: list[bytes] = []

    def update_graph(self, scheduler: Any, *, tasks: list[Any], **kwargs: Any) -> None:
        for key in tasks:
            ts = scheduler.tasks.get(key)
            if ts is not None and ts.run_spec is not None:
                self.blobs.append(dumps(ts.run_spec))


def dask_setup(scheduler: Any) -> None:
    scheduler.add_plugin(GraphRecorder())

