"""Bulk generation: a plan of domains x sequences becomes Dask tasks writing into the store.

Before any work the plan is checked against the store (the committed attributes of its own
sequence ids): ids holding other data refuse the whole plan, ids already holding the planned
data are skipped. Each task synthesises one sequence from a seed derived from (run seed,
domain, index), derives its pyramid and gradients, writes its own sequence group and commits
it (see :mod:`atlasstore.store`), and returns its committed attributes, or the error when
running it again could not help. The driver gathers results as they finish and registers
them in the catalog in batches. Because every sequence is deterministic and commits
atomically, a killed run re-run with the same plan skips what is complete, rewrites what was
half-written, and ends with a store identical (checksums) to an uninterrupted run. The same
graph runs on a LocalCluster, in-process, or on any existing Dask cluster
(``scheduler=ADDRESS``; the store must then be reachable from every worker: a shared
filesystem or an object-store URL).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync as zarr_sync

from . import physics, synth
from .locations import local_path
from .provenance import code_version, host, utc_now
from .store import (
    AtlasStore,
    Layout,
    NotAnAtlasStore,
    RunLog,
    SequenceExists,
    StoreError,
    validate_name,
)
from .writer_lock import WriterLock

#: Largest in-memory footprint one task may need (a sequence with its levels and gradients).
MAX_TASK_BYTES = 4 * 2**30
MAX_SEQUENCES = 1_000_000


class PlanError(ValueError):
    """A generation plan that cannot run."""


def sequence_seed(run_seed: int, domain: str, index: int) -> int:
    """Seed of one sequence: a pure function of (run seed, domain, index), < 2**63."""
    ss = np.random.SeedSequence([int(run_seed), zlib.crc32(domain.encode()), int(index)])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def sequence_id(index: int) -> str:
    return f"seq-{index:05d}"


@dataclass(frozen=True)
class Task:
    domain: str
    index: int
    sequence_id: str
    seed: int


@dataclass(frozen=True)
class Plan:
    """What to generate. ``steps``/``scales``/``shape`` default to each preset's."""

    domains: tuple[str, ...] = synth.DEFAULT_DOMAINS
    sequences: int = 5
    steps: int | None = None
    scales: tuple[int, ...] | None = None
    seed: int = 0
    shape: tuple[int, int] | None = None
    start_index: int = 0

    def __post_init__(self) -> None:
        if self.domains is None or not isinstance(self.domains, (str, tuple, list)):
            raise PlanError(f"domains must be a list of preset names, got {self.domains!r}")
        for name, v in (("shape", self.shape), ("scales", self.scales)):
            if v is not None and (isinstance(v, str) or not all(
                    isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in v)):
                raise PlanError(f"{name} must be integers, got {v!r}")
        if isinstance(self.domains, str):
            object.__setattr__(self, "domains", (self.domains,))
        object.__setattr__(self, "domains", tuple(self.domains))
        if not self.domains:
            raise PlanError("no domains given")
        if len(set(self.domains)) != len(self.domains):
            raise PlanError(f"duplicate domains in {list(self.domains)}")
        known = synth.list_presets()
        for d in self.domains:
            validate_name(d, "domain name")
            if d not in known:
                raise PlanError(f"unknown domain {d!r}; known presets: {', '.join(known)}")
        for name, num, hi in (("sequences", self.sequences, MAX_SEQUENCES),
                              ("steps", self.steps, 100_000), ("seed", self.seed, 2**63 - 1),
                              ("start_index", self.start_index, MAX_SEQUENCES)):
            if num is None:
                continue
            if isinstance(num, bool) or not isinstance(num, (int, np.integer)):
                raise PlanError(f"{name} must be an integer, got {num!r}")
            lo = 0 if name in ("seed", "start_index") else 1
            if not lo <= num <= hi:
                raise PlanError(f"{name} must be in [{lo}, {hi}], got {num}")
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(int(s) for s in self.shape))
            physics.validate_shape(self.shape, "plan shape")
        if self.scales is not None:
            if not self.scales:
                raise PlanError("scales is empty; give at least the full resolution (e.g. 256)")
            object.__setattr__(self, "scales", tuple(sorted({int(s) for s in self.scales}, reverse=True)))
        for d in self.domains:
            p = self.preset(d)
            shape = self.shape or p.shape
            allowed = physics.levels_for(shape)
            if self.scales is not None:
                bad = [s for s in self.scales if s not in allowed]
                if bad or max(self.scales) != allowed[0]:
                    raise PlanError(f"scales {list(self.scales)} invalid for {d} maps of shape "
                                    f"{shape}: levels must be among {list(allowed)} and include "
                                    f"the full resolution {allowed[0]}")
            need = (self.steps or p.n_steps) * shape[0] * shape[1] * 4 * 3 * 2 * 2
            if need > MAX_TASK_BYTES:
                raise PlanError(f"a {d} sequence of {self.steps or p.n_steps} steps at {shape} "
                                f"needs ~{need / 2**30:.1f} GiB in one task (limit "
                                f"{MAX_TASK_BYTES / 2**30:.0f} GiB); use fewer steps")

    def preset(self, domain: str) -> synth.DomainPreset:
        return synth.load_preset(domain)

    def tasks(self) -> list[Task]:
        return [Task(d, i, sequence_id(i), sequence_seed(self.seed, d, i))
                for d in self.domains
                for i in range(self.start_index, self.start_index + self.sequences)]

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["domains"] = list(self.domains)
        d["scales"] = list(self.scales) if self.scales else None
        d["shape"] = list(self.shape) if self.shape else None
        d["presets"] = {dom: self.preset(dom).to_dict() for dom in self.domains}
        return d

    def config_hash(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()

    def run_id(self) -> str:
        """Deterministic: re-running the same plan resumes the same run."""
        return "run-" + self.config_hash()[:16]


# --------------------------------------------------------------------------- the task

#: Errors a task's own inputs determine (a conservation breach, a clash with stored data, bad
#: input): running it again cannot help, so they come back as failed results - not retried,
#: not logged by Dask. Anything else (I/O, a lost worker) raises and Dask retries it once.
DETERMINISTIC_ERRORS: tuple[type[BaseException], ...] = (ValueError, StoreError)


def _difference(task: Task, plan: Plan, info: Mapping[str, Any]) -> str | None:
    """How a committed sequence differs from what ``plan`` would write there (None: same)."""
    preset = plan.preset(task.domain)
    gen = info.get("generation") or {}
    want_shape = list(plan.shape or preset.shape)
    have = {"steps": info.get("n_steps"), "shape": info.get("shape"),
            "levels": info.get("levels"), "perturbations": gen.get("perturbations"),
            "seed": gen.get("seed")}
    want = {"steps": plan.steps or preset.n_steps, "shape": want_shape,
            "levels": list(plan.scales or physics.levels_for(tuple(want_shape))),
            "perturbations": preset.perturbations.to_dict(), "seed": task.seed}
    vague = {"perturbations": "other perturbations", "seed": "another seed"}
    diff = [vague.get(k, f"{k} {have[k]} stored vs {want[k]} planned")
            for k in have if have[k] != want[k]]
    return ", ".join(diff) or None


def _settle_zarr_writes(timeout: float = 60.0) -> None:
    """Wait for the writes zarr still runs after one of them failed.

    zarr writes a node's metadata and (``set_if_not_exists``) its parents' in one
    ``asyncio.gather``; when one write fails the others go on in the background. A parent
    write that checked "exists" before our cleanup deleted the group would otherwise recreate
    an empty group there afterwards, even after the run has returned.
    """
    async def _wait() -> None:
        me = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not me]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    zarr_sync(_wait())


def write_one(location: str, task: Task, plan: Plan, layout: Mapping[str, Any] | None = None,
              storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Synthesise, derive and commit one sequence; skip it if already complete.

    Runs on a worker; returns ``{"task", "status", "info" | "error", "seconds"}`` with status
    written, skipped or failed (a deterministic error, see ``DETERMINISTIC_ERRORS``); raises
    anything else.
    """
    t0 = time.perf_counter()
    try:
        status, info = _write_one(location, task, plan, layout, storage_options)
    except DETERMINISTIC_ERRORS as exc:
        return {"task": asdict(task), "status": "failed", "error": f"{type(exc).__name__}: {exc}",
                "seconds": time.perf_counter() - t0}
    return {"task": asdict(task), "status": status, "info": info,
            "seconds": time.perf_counter() - t0}


def _write_one(location: str, task: Task, plan: Plan, layout: Mapping[str, Any] | None,
               storage_options: Mapping[str, Any] | None) -> tuple[str, dict[str, Any]]:
    store = AtlasStore.open(location, mode="r+", storage_options=storage_options,
                            layout=Layout(**layout) if layout else Layout())
    preset = plan.preset(task.domain)
    if store.sequence_status(task.domain, task.sequence_id) == "complete":
        info = store.sequence_info(task.domain, task.sequence_id)
        diff = _difference(task, plan, info)
        if diff:
            raise SequenceExists(f"{task.domain}/{task.sequence_id} already holds other data "
                                 f"({diff}; written by {info.get('generation', {}).get('run_id')})"
                                 f": use another store or --start-index")
        return "skipped", info
    seq, steps = synth.synthesize(preset, task.seed, n_steps=plan.steps, shape=plan.shape)
    generation = {"run_id": plan.run_id(), "seed": task.seed, "pattern": preset.pattern,
                  "perturbations": preset.perturbations.to_dict(), "code_version": code_version(),
                  "index": task.index}
    try:
        info = store.write_sequence(task.domain, task.sequence_id, seq, steps, generation,
                                    levels=plan.scales, overwrite=True)
    except BaseException:
        # e.g. disk full: remove the uncommitted group (best effort; a crash leaves it to the
        # next run, which replaces it) so the store holds only complete sequences - once the
        # failed call's sibling writes have finished, or they would recreate parts of it
        with contextlib.suppress(Exception):
            _settle_zarr_writes()
            store.delete_sequence(task.domain, task.sequence_id)
        raise
    return "written", info


# --------------------------------------------------------------------------- the driver

@dataclass
class Failure:
    domain: str
    sequence_id: str
    seed: int
    error: str


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
    engine: str = ""

    @property
    def ok(self) -> bool:
        return not self.failures and not self.store_errors

    @property
    def maps_per_second(self) -> float:
        return self.maps / self.seconds if self.seconds else 0.0


class CatalogSink:
    """Registers committed sequences in a catalog in batches; survives catalog outages.

    On a catalog error the store stays the truth: the error is recorded, registration stops
    for this run, and ``atlas catalog sync`` brings the catalog up to date later.
    """

    def __init__(self, catalog: Any, run: dict[str, Any], batch_size: int = 64) -> None:
        self.catalog = catalog
        self.run = run
        self.batch_size = batch_size
        self.pending: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self._run_registered = False

    def _safe(self, fn: Callable[[], object]) -> None:
        if self.errors:
            return
        try:
            fn()
        except Exception as exc:  # noqa: BLE001 - any catalog failure must not stop the run
            self.errors.append(f"{type(exc).__name__}: {exc}")

    def add(self, info: dict[str, Any]) -> None:
        if self.catalog is None:
            return
        self.pending.append(info)
        if len(self.pending) >= self.batch_size:
            self.flush()

    def flush(self, final_run: dict[str, Any] | None = None) -> None:
        if self.catalog is None:
            return
        from .index import register_run, register_sequence_infos

        if final_run is not None:
            self.run = final_run
        if not self._run_registered or final_run is not None:
            self._safe(lambda: register_run(self.catalog, self.run))
            self._run_registered = not self.errors
        if self.pending:
            batch, self.pending = self.pending, []
            self._safe(lambda: register_sequence_infos(self.catalog, batch))


class PlanClash(PlanError):
    """Planned sequence ids already hold other data in the store; refused before any work."""


class GenerationInterrupted(KeyboardInterrupt):
    """Ctrl-C during a run: the workers are stopped, ``complete`` of the plan's ``total``
    sequences are committed, and running the same plan again resumes from there."""

    def __init__(self, run_id: str, complete: int, total: int) -> None:
        super().__init__(f"{complete} of {total} sequences complete")
        self.run_id, self.complete, self.total = run_id, complete, total


@dataclass
class PlanCheck:
    """The plan's sequences as the store holds them: ``complete`` (committed with the data the
    plan would write: skipped) and ``pending`` (absent or half-written: to be written)."""

    complete: dict[Task, dict[str, Any]]
    pending: list[Task]


_SEQ_ID = re.compile(r"^seq-(\d+)$")


def _committed_attrs(store: AtlasStore, tasks: list[Task]) -> list[dict[str, Any] | None]:
    """Each task's ``atlasstore_sequence`` attributes (None where absent or unreadable), read
    concurrently from the sequences' own metadata documents and nothing else."""
    zstore = store.zarr_group.store
    proto = default_buffer_prototype()

    async def one(sem: asyncio.Semaphore, t: Task) -> dict[str, Any] | None:
        async with sem:
            try:
                buf = await zstore.get(f"{t.domain}/{t.sequence_id}/zarr.json", prototype=proto)
            except OSError:
                return None
        try:
            attrs = json.loads(buf.to_bytes())["attributes"]["atlasstore_sequence"] if buf else None
        except (ValueError, KeyError, TypeError):
            return None
        return attrs if isinstance(attrs, dict) else None

    async def all_() -> list[dict[str, Any] | None]:
        sem = asyncio.Semaphore(64)
        return list(await asyncio.gather(*(one(sem, t) for t in tasks)))

    return zarr_sync(all_())


def _next_free_index(store: AtlasStore, domains: tuple[str, ...]) -> int:
    """The first index after every sequence id in ``domains`` (lists names, reads nothing)."""
    zstore = store.zarr_group.store

    async def names() -> list[str]:
        out: list[str] = []
        for d in domains:
            with contextlib.suppress(OSError):
                out += [k async for k in zstore.list_dir(d)]
        return out

    return max((int(m.group(1)) for k in zarr_sync(names()) if (m := _SEQ_ID.match(k))),
               default=-1) + 1


def _id_ranges(indices: list[int]) -> str:
    """[0, 1, 2, 5] -> 'seq-00000..seq-00002,seq-00005'."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return ",".join(sequence_id(r[0]) + (f"..{sequence_id(r[-1])}" if len(r) > 1 else "")
                    for r in runs)


def check_plan(store: AtlasStore, plan: Plan) -> PlanCheck:
    """Compare the plan with what the store holds under the plan's sequence ids (their committed
    attributes only; the store is never listed); refuse with ``PlanClash`` if any holds other
    data, naming the clash and a ``start_index`` that appends instead."""
    tasks = plan.tasks()
    complete: dict[Task, dict[str, Any]] = {}
    pending: list[Task] = []
    clashes: list[tuple[Task, str]] = []
    for t, info in zip(tasks, _committed_attrs(store, tasks), strict=True):
        if not info or info.get("status") != "complete":
            pending.append(t)
        elif diff := _difference(t, plan, info):
            clashes.append((t, diff))
        else:
            complete[t] = info
    if clashes:
        by_domain: dict[str, list[int]] = {}
        for t, _ in clashes:
            by_domain.setdefault(t.domain, []).append(t.index)
        where = ", ".join(f"{d}/{_id_ranges(ix)}" for d, ix in by_domain.items())
        first, diff = clashes[0]
        detail = diff if len(clashes) == 1 else f"{first.domain}/{first.sequence_id}: {diff}"
        raise PlanClash(
            f"{where} already {'holds' if len(clashes) == 1 else 'hold'} other data than "
            f"planned ({detail}); nothing was written. To add the planned sequences after the "
            f"existing ones use --start-index {_next_free_index(store, plan.domains)}, or "
            f"another store")
    return PlanCheck(complete, pending)


def preflight(location: str | Path, plan: Plan, *, workers: int | None = None,
              scheduler: str | None = None,
              storage_options: Mapping[str, Any] | None = None) -> PlanCheck | None:
    """Refuse, without writing anything, what :func:`generate` would refuse: a bad engine, a
    location that is not an atlas store, a plan that clashes with the store. None: the store
    does not exist yet. (The CLI runs this before it creates a catalog.)"""
    check_engine(scheduler, workers)
    loc = str(location)
    path = local_path(loc)
    if path is not None:
        if path.exists() and not path.is_dir():
            raise StoreError(f"{loc} is a file, not a directory; choose another store path")
        if not path.exists() or not any(path.iterdir()):
            return None
    try:
        store = AtlasStore.open(loc, mode="r+", storage_options=storage_options)
    except NotAnAtlasStore:
        if path is not None:
            raise
        return None  # a remote location: generate() creates it or refuses what is there
    return check_plan(store, plan)


def generate(location: str | Path, plan: Plan, *, workers: int | None = None,
             scheduler: str | None = None, catalog: Any = None, layout: Layout | None = None,
             storage_options: Mapping[str, Any] | None = None,
             progress: Callable[[dict[str, Any]], None] | None = None,
             catalog_batch: int = 64, dask_logs: bool = False) -> RunReport:
    """Run ``plan`` into the store at ``location`` (created if missing).

    ``scheduler``: None -> a LocalCluster of ``workers`` processes (default: one per core);
    ``"serial"`` -> in this process; ``"threads"`` -> a LocalCluster of threads; anything else
    is a Dask scheduler address. ``progress`` is called with every finished task's result.
    A plan that clashes with the store raises ``PlanClash`` before anything is written; Ctrl-C
    raises ``GenerationInterrupted`` once the workers are stopped. ``dask_logs``: let a local
    cluster's own warnings and errors through (by default every failure is in the report).
    """
    loc = str(location)
    check_engine(scheduler, workers)
    store = AtlasStore.create(loc, exist_ok=True, storage_options=storage_options,
                              layout=layout or Layout())
    lay = asdict(layout) if layout else None
    with WriterLock(store, {"run_id": plan.run_id(), "started": utc_now()}) as lock:
        checked = check_plan(store, plan)
        for d in plan.domains:
            store.create_domain(d, plan.preset(d).to_dict())
        return _generate_locked(store, loc, plan, checked, workers, scheduler, catalog, lay,
                                storage_options, _holding(lock, progress), catalog_batch,
                                dask_logs)


def _holding(lock: WriterLock, progress: Callable[[dict[str, Any]], None] | None
             ) -> Callable[[dict[str, Any]], None]:
    """``progress`` behind a check that the run still holds the writer lock: a run whose lock
    was taken over (on object storage: its renewal was refused) stops at the next result."""
    def call(result: dict[str, Any]) -> None:
        lock.ensure_held()
        if progress is not None:
            progress(result)

    return call


def check_engine(scheduler: str | None, workers: int | None) -> None:
    """Refuse a bad engine before anything is written."""
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or not 1 <= workers <= 1024):
        raise PlanError(f"workers must be an integer in [1, 1024], got {workers!r}")
    if scheduler is None or scheduler in ("processes", "threads", "serial"):
        return
    if not isinstance(scheduler, str) or not re.match(r"^(tcp|tls|inproc|ucx|ws|wss)://\S+$|^[\w.-]+:\d+$",
                                                      scheduler):
        raise PlanError(f"scheduler must be 'processes', 'threads', 'serial' or a Dask scheduler "
                        f"address like tcp://host:8786, got {scheduler!r}")


def _generate_locked(store: AtlasStore, loc: str, plan: Plan, checked: PlanCheck,
                     workers: int | None, scheduler: str | None, catalog: Any,
                     lay: dict[str, Any] | None, storage_options: Mapping[str, Any] | None,
                     progress: Callable[[dict[str, Any]], None] | None,
                     catalog_batch: int, dask_logs: bool) -> RunReport:
    run_id = plan.run_id()
    run = {"run_id": run_id, "config": plan.to_dict(), "config_hash": plan.config_hash(),
           "seed": plan.seed, "code_version": code_version(), "host": host(),
           "started": utc_now(), "finished": None, "counts": {}}
    runs = RunLog(store)
    runs.start(run)
    sink = CatalogSink(catalog, run, catalog_batch)
    report = RunReport(run_id)
    tasks = plan.tasks()
    t_start = time.perf_counter()

    def handle(task: Task, result: dict[str, Any] | None, exc: BaseException | None) -> None:
        if exc is not None:
            result = {"task": asdict(task), "status": "failed",
                      "error": f"{type(exc).__name__}: {exc}"}
        assert result is not None
        if result["status"] == "failed":
            report.failures.append(Failure(task.domain, task.sequence_id, task.seed,
                                           result["error"]))
        else:
            info = result["info"]
            if result["status"] == "written":
                report.written += 1
                report.maps += info["n_steps"]
                report.bytes_written += int(sum(np.prod(a["shape"]) for a in info["arrays"].values()) * 4)
            else:
                report.skipped += 1
            sink.add(info)
        if progress is not None:
            progress(result)

    # complete sequences holding the planned data were found by check_plan: no task needed
    for task, info in checked.complete.items():
        handle(task, {"task": asdict(task), "status": "skipped", "info": info, "seconds": 0.0},
               None)
    engine = scheduler or "processes"
    report.engine = engine
    try:
        if engine == "serial":
            for task in checked.pending:
                try:
                    handle(task, write_one(loc, task, plan, lay, storage_options), None)
                except OSError as exc:
                    handle(task, None, exc)
        elif checked.pending:
            _run_dask(engine, workers, checked.pending, loc, plan, lay, storage_options, handle,
                      dask_logs)
    except KeyboardInterrupt:
        done = sum(1 for a in _committed_attrs(store, tasks) if a and a.get("status") == "complete")
        raise GenerationInterrupted(run_id, done, len(tasks)) from None

    report.seconds = time.perf_counter() - t_start
    run = {**run, "finished": utc_now(),
           "counts": {"tasks": len(tasks), "written": report.written, "skipped": report.skipped,
                      "failed": len(report.failures), "maps": report.maps}}
    try:
        runs.finish(run, [asdict(f) for f in report.failures])
    except OSError as exc:  # e.g. the disk is still full: the sequences themselves are safe
        report.store_errors.append(f"run record not updated: {type(exc).__name__}: {exc}")
    sink.flush(final_run=run)
    report.catalog_errors = sink.errors
    return report


#: Dask settings for the LocalCluster generate() starts (benchmarks/bench_generate.py):
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


def _run_dask(engine: str, workers: int | None, tasks: list[Task], loc: str, plan: Plan,
              lay: dict[str, Any] | None, storage_options: Mapping[str, Any] | None,
              handle: Callable[[Task, dict[str, Any] | None, BaseException | None], None],
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
        futures = {}
        for task in tasks:
            fut = client.submit(write_one, loc, task, plan, lay, storage_options,
                                key=f"write-{task.domain}-{task.sequence_id}-{plan.run_id()}",
                                retries=1, pure=False)
            futures[fut] = task
        for fut in as_completed(futures):
            task = futures.pop(fut)
            try:
                result = fut.result()
            except Exception as exc:  # noqa: BLE001 - reported per task, the run goes on
                handle(task, None, exc)
            else:
                handle(task, result, None)
            fut.release()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
