"""Bulk generation: a plan of domains x sequences becomes Dask tasks writing into the store.

Each task synthesises one sequence from a seed derived from (run seed, domain, index), derives
its pyramid and gradients, writes its own sequence group and commits it (see
:mod:`atlasstore.store`), and returns its committed attributes. The driver gathers results as
they finish and brings the catalog up to date in batches (from the store's change log, which
every commit writes to; see :mod:`atlasstore.index`). Because every sequence is
deterministic and commits atomically, a killed run re-run with the same plan skips what is
complete, rewrites what was half-written, and ends with a store identical (checksums) to an
uninterrupted run. The same graph runs on a LocalCluster, in-process, or on any existing Dask
cluster (``scheduler=ADDRESS``; the store must then be reachable from every worker: a shared
filesystem or an object-store URL).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import physics, synth
from .provenance import code_version, host, utc_now
from .store import AtlasStore, Layout, RunLog, SequenceExists, StoreError, validate_name
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
        for name, v, hi in (("sequences", self.sequences, MAX_SEQUENCES),
                            ("steps", self.steps, 100_000), ("seed", self.seed, 2**63 - 1),
                            ("start_index", self.start_index, MAX_SEQUENCES)):
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise PlanError(f"{name} must be an integer, got {v!r}")
            lo = 0 if name in ("seed", "start_index") else 1
            if not lo <= v <= hi:
                raise PlanError(f"{name} must be in [{lo}, {hi}], got {v}")
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

def write_one(location: str, task: Task, plan: Plan, layout: Mapping[str, Any] | None = None,
              storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Synthesise, derive and commit one sequence; skip it if already complete.

    Runs on a worker; returns ``{"task", "status", "info", "seconds"}`` or raises.
    """
    t0 = time.perf_counter()
    store = AtlasStore.open(location, mode="r+", storage_options=storage_options,
                            layout=Layout(**layout) if layout else Layout())
    preset = plan.preset(task.domain)
    if store.sequence_status(task.domain, task.sequence_id) == "complete":
        info = store.sequence_info(task.domain, task.sequence_id)
        gen = info.get("generation", {})
        want_steps = plan.steps or preset.n_steps
        want_shape = list(plan.shape or preset.shape)
        want_levels = list(plan.scales or physics.levels_for(tuple(want_shape)))
        if (gen.get("seed"), info["n_steps"], info["shape"], info["levels"],
                gen.get("perturbations")) != (task.seed, want_steps, want_shape, want_levels,
                                              preset.perturbations.to_dict()):
            raise SequenceExists(
                f"{task.domain}/{task.sequence_id} already holds different data (seed "
                f"{gen.get('seed')}, {info['n_steps']} steps, run {gen.get('run_id')}); this plan "
                f"wants seed {task.seed}, {want_steps} steps: use another store or --start-index")
        return {"task": asdict(task), "status": "skipped", "info": info,
                "seconds": time.perf_counter() - t0}
    seq, steps = synth.synthesize(preset, task.seed, n_steps=plan.steps, shape=plan.shape)
    generation = {"run_id": plan.run_id(), "seed": task.seed, "pattern": preset.pattern,
                  "perturbations": preset.perturbations.to_dict(), "code_version": code_version(),
                  "index": task.index}
    try:
        info = store.write_sequence(task.domain, task.sequence_id, seq, steps, generation,
                                    levels=plan.scales, overwrite=True)
    except BaseException:
        # e.g. disk full: remove the uncommitted group (best effort; a crash leaves it to the
        # next run, which replaces it) so the store holds only complete sequences
        with contextlib.suppress(Exception):
            store.delete_sequence(task.domain, task.sequence_id)
        raise
    return {"task": asdict(task), "status": "written", "info": info,
            "seconds": time.perf_counter() - t0}


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
    """Brings the catalog up to date every ``batch_size`` committed sequences and at the end,
    from the store's change log (``index.refresh``): what the catalog registers is what the
    store committed, runs included, and the catalog's log position moves with it. Survives
    catalog outages: on a catalog error the store stays the truth, the error is recorded,
    registration stops for this run, and ``atlas catalog sync`` brings the catalog up to date
    later.
    """

    def __init__(self, catalog: Any, store: AtlasStore, batch_size: int = 64) -> None:
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
        from .index import refresh

        self.unflushed = 0
        try:
            refresh(self.store, self.catalog)
        except Exception as exc:  # noqa: BLE001 - any catalog failure must not stop the run
            self.errors.append(f"{type(exc).__name__}: {exc}")


def generate(location: str | Path, plan: Plan, *, workers: int | None = None,
             scheduler: str | None = None, catalog: Any = None, layout: Layout | None = None,
             storage_options: Mapping[str, Any] | None = None,
             progress: Callable[[dict[str, Any]], None] | None = None,
             catalog_batch: int = 64) -> RunReport:
    """Run ``plan`` into the store at ``location`` (created if missing).

    ``scheduler``: None -> a LocalCluster of ``workers`` processes (default: one per core);
    ``"serial"`` -> in this process; ``"threads"`` -> a LocalCluster of threads; anything else
    is a Dask scheduler address. ``progress`` is called with every finished task's result.
    """
    loc = str(location)
    _check_engine(scheduler, workers)
    store = AtlasStore.create(loc, exist_ok=True, storage_options=storage_options,
                              layout=layout or Layout())
    lay = asdict(layout) if layout else None
    with WriterLock(store, {"run_id": plan.run_id(), "started": utc_now()}):
        for d in plan.domains:
            store.create_domain(d, plan.preset(d).to_dict())
        return _generate_locked(store, loc, plan, workers, scheduler, catalog, lay,
                                storage_options, progress, catalog_batch)


def _check_engine(scheduler: str | None, workers: int | None) -> None:
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


def _generate_locked(store: AtlasStore, loc: str, plan: Plan, workers: int | None,
                     scheduler: str | None, catalog: Any, lay: dict[str, Any] | None,
                     storage_options: Mapping[str, Any] | None,
                     progress: Callable[[dict[str, Any]], None] | None,
                     catalog_batch: int) -> RunReport:
    run_id = plan.run_id()
    run = {"run_id": run_id, "config": plan.to_dict(), "config_hash": plan.config_hash(),
           "seed": plan.seed, "code_version": code_version(), "host": host(),
           "started": utc_now(), "finished": None, "counts": {}}
    runs = RunLog(store)
    runs.start(run)
    sink = CatalogSink(catalog, store, catalog_batch)
    report = RunReport(run_id)
    tasks = plan.tasks()
    t_start = time.perf_counter()

    def handle(task: Task, result: dict[str, Any] | None, exc: BaseException | None) -> None:
        if exc is not None:
            report.failures.append(Failure(task.domain, task.sequence_id, task.seed,
                                           f"{type(exc).__name__}: {exc}"))
            out = {"task": asdict(task), "status": "failed", "error": str(exc)}
        else:
            assert result is not None
            info = result["info"]
            if result["status"] == "written":
                report.written += 1
                report.maps += info["n_steps"]
                report.bytes_written += int(sum(np.prod(a["shape"]) for a in info["arrays"].values()) * 4)
            else:
                report.skipped += 1
            sink.add(info)
            out = result
        if progress is not None:
            progress(out)

    engine = scheduler or "processes"
    report.engine = engine
    if engine == "serial":
        for task in tasks:
            try:
                handle(task, write_one(loc, task, plan, lay, storage_options), None)
            except (physics.ThermodynamicViolation, physics.EnergyMapError, StoreError,
                    ValueError, OSError) as exc:
                handle(task, None, exc)
    else:
        _run_dask(engine, workers, tasks, loc, plan, lay, storage_options, handle, report)

    report.seconds = time.perf_counter() - t_start
    run = {**run, "finished": utc_now(),
           "counts": {"tasks": len(tasks), "written": report.written, "skipped": report.skipped,
                      "failed": len(report.failures), "maps": report.maps}}
    try:
        runs.finish(run, [asdict(f) for f in report.failures])
    except OSError as exc:  # e.g. the disk is still full: the sequences themselves are safe
        report.store_errors.append(f"run record not updated: {type(exc).__name__}: {exc}")
    sink.flush()
    report.catalog_errors = sink.errors
    return report


def _run_dask(engine: str, workers: int | None, tasks: list[Task], loc: str, plan: Plan,
              lay: dict[str, Any] | None, storage_options: Mapping[str, Any] | None,
              handle: Callable[[Task, dict[str, Any] | None, BaseException | None], None],
              report: RunReport) -> None:
    from dask.distributed import Client, LocalCluster, as_completed

    import dask

    cluster = None
    if engine in ("processes", "threads"):
        n = workers or os.cpu_count() or 1
        # Dask's nanny sets MALLOC_TRIM_THRESHOLD_=65536 in workers, which turns off glibc's
        # dynamic mmap threshold: every temporary > 128 KiB is mmap'ed and faulted afresh
        # (measured +50-90 % CPU per map, benchmarks/results/generate.md). Our tasks free all
        # memory at the end, so the trimming buys nothing here.
        with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            cluster = LocalCluster(n_workers=n, threads_per_worker=1,
                                   processes=(engine == "processes"), dashboard_address=None,
                                   silence_logs=40)
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
