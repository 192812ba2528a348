"""The engine every bulk write shares (``atlas generate``, ``atlas import``): one run of tasks,
each writing and committing its own sequence, into one store.

What a run is made of, whoever plans it: the store opened or created and its writer lock held
for the run (:func:`locked_store`); a run record under ``_runs/`` (started, attempts, counts,
failures); tasks that are already complete reported as skipped without being run; the others
submitted as one Dask task each (a LocalCluster of single-threaded worker processes with the
quiet :data:`LOCAL_CLUSTER_CONFIG`, threads, in-process, or an existing cluster), their results
gathered as they finish, committed sequences registered in the catalog in batches
(:class:`CatalogSink`), failures collected with what failed and why, a progress callback per
result; Ctrl-C stops the workers and raises :class:`RunInterrupted` saying how far it got.

A task is a module-level function returning ``{"task", "status", "info" | "error",
"seconds"}`` (status written, skipped or failed); :func:`task_result` makes that shape and turns
the errors its own inputs determine (:data:`DETERMINISTIC_ERRORS`) into failed results, which
are neither retried nor logged by Dask. A task's argument may be a :class:`Shared` value
(e.g. a source file's checksum that several tasks need): it is computed once per run, as a
task of its own, before the tasks that use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import re
import signal
import time
import weakref
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync as zarr_sync

from atlasstore.catalog.protocol import Catalog
from atlasstore.errors import EngineError, NotAnAtlasStore, StoreError
from atlasstore.io.locations import local_path
from atlasstore.io.provenance import utc_now
from atlasstore.runs.options import RunOptions
from atlasstore.runs.scheduling import engine_for, unguarded_main
from atlasstore.store.atlas_store import AtlasStore
from atlasstore.store.layout import Layout
from atlasstore.store.run_log import RunLog
from atlasstore.store.writer_lock import WriterLock

#: Errors a task's own inputs determine (a conservation breach, a clash with stored data, bad
#: input): running it again cannot help, so they come back as failed results - not retried,
#: not logged by Dask. Anything else (I/O, a lost worker) raises and Dask retries it once.
DETERMINISTIC_ERRORS: tuple[type[BaseException], ...] = (ValueError, StoreError)


@dataclass
class Failure:
    """A task that failed: the sequence it was writing, why, and (generate) its seed or
    (import) the source it read."""

    domain: str
    sequence_id: str
    seed: int | None
    error: str
    source: str | None = None


@dataclass
class RunReport:
    run_id: str
    written: int = 0
    skipped: int = 0
    failures: list[Failure] = field(default_factory=list)
    maps: int = 0
    bytes_written: int = 0
    seconds: float = 0.0
    catalog_errors: list[str] = field(default_factory=list)
    store_errors: list[str] = field(default_factory=list)
    #: the scheduler that ran the tasks (serial, threads, processes or an address) and why
    engine: str = ""
    engine_reason: str = ""
    #: bytes of source data read (import runs)
    source_bytes: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures and not self.store_errors

    @property
    def maps_per_second(self) -> float:
        return self.maps / self.seconds if self.seconds else 0.0


class RunInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: the workers are stopped, ``complete`` of the run's ``total``
    sequences are committed, and running the same command again resumes from there."""

    def __init__(self, run_id: str, complete: int, total: int) -> None:
        super().__init__(f"{complete} of {total} sequences complete")
        self.run_id, self.complete, self.total = run_id, complete, total


@dataclass(frozen=True)
class Shared:
    """A value several tasks need, computed once per run (``fn(*args)``) before them."""

    key: str
    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


@dataclass(frozen=True)
class Job:
    """One task of a run: ``fn(*args)`` writes the sequence ``domain/sequence_id``.

    ``task`` is what results and failures carry (a dataclass or a mapping); ``failure`` makes the
    Failure of an error.
    """

    task: Hashable
    domain: str
    sequence_id: str
    key: str
    fn: Callable[..., dict[str, Any]]
    args: tuple[Any, ...]
    seed: int | None = None
    source: str | None = None

    def failure(self, error: str) -> Failure:
        return Failure(self.domain, self.sequence_id, self.seed, error, self.source)

    def task_dict(self) -> dict[str, Any]:
        t: Any = self.task
        return asdict(t) if hasattr(t, "__dataclass_fields__") else dict(t)


def task_result(task: Any, fn: Callable[[], tuple[str, dict[str, Any]]],
                extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Run a task body returning ``(status, info)`` and wrap it as a result; a deterministic
    error becomes a failed result, anything else propagates (and Dask retries it once)."""
    t0 = time.perf_counter()
    td = asdict(task) if hasattr(task, "__dataclass_fields__") else dict(task)
    try:
        status, info = fn()
    except DETERMINISTIC_ERRORS as exc:
        return {"task": td, "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "seconds": time.perf_counter() - t0}
    return {"task": td, "status": status, "info": info, "seconds": time.perf_counter() - t0,
            **dict(extra or {})}


def check_engine(scheduler: str | None, workers: int | None) -> None:
    """Refuse a bad engine before anything is written."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or not 1 <= workers <= 1024):
        raise EngineError(f"workers must be an integer in [1, 1024], got {workers!r}")
    if scheduler == "processes" and (where := unguarded_main()) is not None:
        raise EngineError(
            f"scheduler 'processes' starts worker processes that run the main script again, "
            f"and {where} starts this run at the script's top level: put that code under "
            f"`if __name__ == \"__main__\":` (or use scheduler='threads' or 'serial')")
    if scheduler is None or scheduler in ("processes", "threads", "serial"):
        return
    if not isinstance(scheduler, str) or not re.match(r"^(tcp|tls|inproc|ucx|ws|wss)://\S+$|^[\w.-]+:\d+$",
                                                      scheduler):
        raise EngineError(f"scheduler must be 'processes', 'threads', 'serial' or a Dask scheduler "
                          f"address like tcp://host:8786, got {scheduler!r}")


@contextlib.contextmanager
def locked_store(location: str, run_id: str, *, layout: Layout | None = None,
                 storage_options: Mapping[str, Any] | None = None) -> Iterator[AtlasStore]:
    """The store at ``location`` (created if missing), its writer lock held by ``run_id``;
    :func:`execute` on it checks after every result that the lock is still held."""
    store = AtlasStore.create(location, exist_ok=True, storage_options=storage_options,
                              layout=layout or Layout())
    with WriterLock(store, {"run_id": run_id, "started": utc_now()}) as lock:
        _LOCKS[store] = lock
        try:
            yield store
        finally:
            _LOCKS.pop(store, None)


def holds_lock(store: AtlasStore) -> bool:
    """Whether this run still holds the writer lock :func:`locked_store` took for ``store``."""
    lock = _LOCKS.get(store)
    if lock is None:
        return False
    try:
        lock.ensure_held()
    except StoreError:
        return False
    return True


#: The writer lock :func:`locked_store` holds for each store it yielded.
_LOCKS: weakref.WeakKeyDictionary[AtlasStore, WriterLock] = weakref.WeakKeyDictionary()


def preflight_store(location: str | Path, settings: RunOptions | None = None,
                    **overrides: Any) -> AtlasStore | None:
    """The store a run would write (None: not there yet), or the refusal of a bad engine or
    of a location that is not an atlas store - without writing anything."""
    opts = RunOptions.of(settings, **overrides)
    storage_options = opts.storage_options
    check_engine(opts.scheduler, opts.workers)
    loc = str(location)
    path = local_path(loc)
    if path is not None:
        if path.exists() and not path.is_dir():
            raise StoreError(f"{loc} is a file, not a directory; choose another store path")
        if not path.exists() or not any(path.iterdir()):
            return None
    try:
        return AtlasStore.open(loc, mode="r+", storage_options=storage_options)
    except NotAnAtlasStore:
        if path is not None:
            raise
        return None  # a remote location: the run creates it or refuses what is there


def committed_attrs(store: AtlasStore, keys: Sequence[tuple[str, str]]
                    ) -> list[dict[str, Any] | None]:
    """Each (domain, sequence) id's ``atlasstore_sequence`` attributes (None where absent or
    unreadable), read concurrently from the sequences' own metadata documents and nothing else."""
    zstore = store.zarr_group.store
    proto = default_buffer_prototype()

    async def one(sem: asyncio.Semaphore, domain: str, seq: str) -> dict[str, Any] | None:
        async with sem:
            try:
                buf = await zstore.get(f"{domain}/{seq}/zarr.json", prototype=proto)
            except OSError:
                return None
        try:
            attrs = json.loads(buf.to_bytes())["attributes"]["atlasstore_sequence"] if buf else None
        except (ValueError, KeyError, TypeError):
            return None
        return attrs if isinstance(attrs, dict) else None

    async def all_() -> list[dict[str, Any] | None]:
        sem = asyncio.Semaphore(64)
        return list(await asyncio.gather(*(one(sem, d, s) for d, s in keys)))

    return zarr_sync(all_())


class CatalogSink:
    """Brings the catalog up to date every ``batch_size`` committed sequences and at the end,
    from the store's change log (``index.refresh``): what the catalog registers is what the
    store committed, runs included, and the catalog's log position moves with it. Survives
    catalog outages: on a catalog error the store stays the truth, the error is recorded,
    registration stops for this run, and ``atlas catalog sync`` brings the catalog up to date
    later.
    """

    def __init__(self, catalog: Catalog | None, store: AtlasStore, batch_size: int = 64) -> None:
        self.catalog = catalog
        self.store = store
        self.batch_size = batch_size
        self.unflushed = 0
        self.errors: list[str] = []

    def add(self, info: dict[str, Any]) -> None:
        if self.catalog is None:
            return
        self.unflushed += 1
        if self.unflushed >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if self.catalog is None or self.errors:
            return
        from atlasstore.catalog.sync import refresh

        self.unflushed = 0
        try:
            refresh(self.store, self.catalog)
        except Exception as exc:  # noqa: BLE001 - any catalog failure must not stop the run
            self.errors.append(f"{type(exc).__name__}: {exc}")


def execute(store: AtlasStore, run: dict[str, Any], jobs: Sequence[Job],
            complete: Sequence[tuple[Job, dict[str, Any]]] = (),
            failed: Sequence[tuple[Job, str]] = (), *,
            settings: RunOptions | None = None, values: int | None = None) -> RunReport:
    """Run ``jobs`` under the run record ``run`` (started now, finished at the end) into the
    store, whose writer lock the caller holds; ``complete`` are jobs found complete before any
    work (reported as skipped, not run), ``failed`` jobs refused before any work with the
    reason (reported as failures, not run). ``values``: about how many map values the jobs
    write (None: unknown), for the choice of engine (:mod:`.scheduling`). A run whose writer lock (from
    :func:`locked_store`) was taken over - on object storage: its renewal was refused - stops at
    the next result with :class:`~atlasstore.store.writer_lock.StoreLocked`. See the module docstring."""
    settings = settings or RunOptions()
    check_engine(settings.scheduler, settings.workers)
    progress = settings.progress
    lock = _LOCKS.get(store)
    run_id = run["run_id"]
    runs = RunLog(store)
    engine, reason = engine_for(settings.scheduler, len(jobs), values)
    runs.start(run, scheduler=engine, scheduler_reason=reason)
    sink = CatalogSink(settings.catalog, store, settings.catalog_batch)
    report = RunReport(run_id)
    t_start = time.perf_counter()

    def handle(job: Job, result: dict[str, Any] | None, exc: BaseException | None) -> None:
        if exc is not None:
            result = {"task": job.task_dict(), "status": "failed",
                      "error": f"{type(exc).__name__}: {exc}"}
        assert result is not None
        if result["status"] == "failed":
            report.failures.append(job.failure(result["error"]))
        else:
            info = result["info"]
            if result["status"] == "written":
                report.written += 1
                report.maps += info["n_steps"]
                report.bytes_written += 4 * sum(_size(a["shape"]) for a in info["arrays"].values())
                report.source_bytes += int(result.get("source_bytes", 0))
            else:
                report.skipped += 1
            sink.add(info)
        if lock is not None:
            lock.ensure_held()
        if progress is not None:
            progress(result)

    for job, info in complete:
        handle(job, {"task": job.task_dict(), "status": "skipped", "info": info, "seconds": 0.0},
               None)
    for job, error in failed:
        handle(job, {"task": job.task_dict(), "status": "failed", "error": error, "seconds": 0.0},
               None)
    report.engine, report.engine_reason = engine, reason
    all_keys = [(j.domain, j.sequence_id) for j in
                [*(j for j, _ in complete), *(j for j, _ in failed), *jobs]]
    try:
        if engine == "serial":
            _run_serial(jobs, handle)
        elif jobs:
            _run_dask(engine, settings.workers, jobs, handle, settings.dask_logs)
    except KeyboardInterrupt:
        with contextlib.suppress(OSError, StoreError):  # the interruption is what to report
            runs.end_attempt(run_id, run["started"], finished=utc_now(), outcome="interrupted",
                             counts=_counts(report, len(all_keys)))
        done = sum(1 for a in committed_attrs(store, all_keys) if a and a.get("status") == "complete")
        raise RunInterrupted(run_id, done, len(all_keys)) from None

    report.seconds = time.perf_counter() - t_start
    run = {**run, "finished": utc_now(), "counts": _counts(report, len(all_keys))}
    try:
        runs.finish(run, [asdict(f) for f in report.failures],
                    outcome="failed" if report.failures else "complete")
    except OSError as exc:  # e.g. the disk is still full: the sequences themselves are safe
        report.store_errors.append(f"run record not updated: {type(exc).__name__}: {exc}")
    sink.flush()
    report.catalog_errors = sink.errors
    return report


def _counts(report: RunReport, tasks: int) -> dict[str, int]:
    return {"tasks": tasks, "written": report.written, "skipped": report.skipped,
            "failed": len(report.failures), "maps": report.maps}


def _size(shape: Sequence[int]) -> int:
    n = 1
    for s in shape:
        n *= int(s)
    return n


def _run_serial(jobs: Sequence[Job],
                handle: Callable[[Job, dict[str, Any] | None, BaseException | None], None]) -> None:
    """Run the tasks one after the other in this process; a task that raises is reported as
    failed (not retried: a failed write, e.g. a full disk, is what the run reports) and the
    run goes on."""
    shared: dict[str, Any] = {}
    for job in jobs:
        try:
            result = job.fn(*_resolve(job.args, shared))
        except Exception as exc:  # noqa: BLE001 - reported per task, the run goes on
            handle(job, None, exc)
        else:
            handle(job, result, None)


def _resolve(args: tuple[Any, ...], cache: dict[str, Any]) -> tuple[Any, ...]:
    """Arguments with every :class:`Shared` replaced by its value (computed once)."""
    out = []
    for a in args:
        if isinstance(a, Shared):
            if a.key not in cache:
                cache[a.key] = a.fn(*a.args)
            a = cache[a.key]
        out.append(a)
    return tuple(out)


#: Dask settings for the LocalCluster a run starts (benchmarks/bench_generate.py):
#: - MALLOC_TRIM_THRESHOLD_ unset: Dask's nanny sets 65536 in workers, which turns off glibc's
#:   dynamic mmap threshold: every temporary > 128 KiB is mmap'ed and faulted afresh (+50-90 %
#:   CPU per map). Our tasks free all memory at the end, so the trimming buys nothing here.
#: - less housekeeping: an idle 2-worker cluster with Dask's defaults burnt ~170 ms CPU per
#:   second (8 % of a 2-core machine), ~20 ms/s with these, mostly event-loop wake-ups: the
#:   statistical profiler samples every task's stack 100 times a second for the dashboard
#:   (also -2.7 ms CPU per map in a busy worker), the loop tick runs every 20 ms, the
#:   memory monitors every 100 ms and the system monitors every 500 ms. Memory limits are
#:   still enforced, once a second.
LOCAL_CLUSTER_CONFIG: dict[str, Any] = {
    "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None,
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.worker.memory.monitor-interval": "1s",
    "distributed.admin.system-monitor.interval": "10s",
}


@contextlib.contextmanager
def _sigint_blocked() -> Iterator[None]:
    """Block SIGINT in this thread while a local cluster starts.

    Threads started meanwhile (the cluster's event loop, which spawns and re-spawns the
    workers) and, across exec, the worker processes inherit the mask. A Ctrl-C, which the
    terminal sends to the whole process group, then reaches only the driver, which stops the
    cluster; otherwise every worker would print a KeyboardInterrupt traceback. A Ctrl-C during
    start-up stays pending and is delivered here when the mask is restored.
    """
    if not hasattr(signal, "pthread_sigmask"):
        yield
        return
    # multiprocessing's resource tracker unblocks SIGINT in the thread that first starts it
    # (the cluster's event loop, when it creates the workers' queues): start it here, first
    from multiprocessing import resource_tracker

    resource_tracker.ensure_running()
    old = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _run_dask(engine: str, workers: int | None, jobs: Sequence[Job],
              handle: Callable[[Job, dict[str, Any] | None, BaseException | None], None],
              dask_logs: bool) -> None:
    import dask
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if engine in ("processes", "threads"):
        n = workers or os.cpu_count() or 1
        with dask.config.set(LOCAL_CLUSTER_CONFIG), _sigint_blocked():
            # Every failure reaches the report, so the cluster's own log lines (a "Compute
            # Failed" block per failed attempt, heartbeat errors at shutdown) are silenced;
            # its HTTP server takes a free loopback port instead of warning that 8787 is taken.
            cluster = LocalCluster(n_workers=n, threads_per_worker=1,
                                   processes=(engine == "processes"), dashboard_address=None,
                                   scheduler_kwargs={"dashboard_address": "127.0.0.1:0"},
                                   silence_logs=logging.WARNING if dask_logs else logging.CRITICAL)
            client = Client(cluster)
    else:
        client = Client(engine, timeout="20s")
    try:
        shared: dict[str, Any] = {}
        futures = {}
        for job in jobs:
            args = []
            for a in job.args:
                if isinstance(a, Shared):
                    if a.key not in shared:
                        shared[a.key] = client.submit(a.fn, *a.args, key=a.key, retries=1,
                                                      pure=False)
                    a = shared[a.key]
                args.append(a)
            fut = client.submit(job.fn, *args, key=job.key, retries=1, pure=False)
            futures[fut] = job
        for fut in as_completed(futures):
            job = futures.pop(fut)
            try:
                result = fut.result()
            except Exception as exc:  # noqa: BLE001 - reported per task, the run goes on
                handle(job, None, exc)
            else:
                handle(job, result, None)
            fut.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
