"""How a run executes (:class:`RunOptions`): one object for the settings that generation and
import share, built once (by the CLI from its flags, by a library user from keywords) and
passed down whole instead of as eight loose arguments through every entry point."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from atlasstore.catalog.protocol import Catalog
from atlasstore.store.layout import Layout


@dataclass(frozen=True)
class RunOptions:
    """``workers``: local Dask workers (default: one per core). ``scheduler``: "processes" (a
    LocalCluster of processes), "threads", "serial" (in this process), a Dask scheduler address,
    or None: chosen by the number of tasks to run (serial for a small plan, else processes;
    :mod:`atlasstore.runs.scheduling`, docs/engine.md). ``catalog``: an open catalog to
    register in (None: none). ``layout``: chunking of a store the run creates.
    ``storage_options``: for fsspec locations. ``progress``: called with every finished task's
    result. ``catalog_batch``: sequences per catalog catch-up. ``dask_logs``: let a local
    cluster's own warnings through."""

    workers: int | None = None
    scheduler: str | None = None
    catalog: Catalog | None = None
    layout: Layout | None = None
    storage_options: Mapping[str, Any] | None = None
    progress: Callable[[dict[str, Any]], None] | None = None
    catalog_batch: int = 64
    dask_logs: bool = False

    @classmethod
    def of(cls, settings: RunOptions | None = None, **overrides: Any) -> RunOptions:
        """``settings`` (default: the defaults) with the given keywords on top; an unknown
        keyword is a TypeError naming it, as for a function's own keywords."""
        unknown = set(overrides) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown run option(s): {', '.join(sorted(unknown))}")
        return replace(settings or cls(), **overrides)
