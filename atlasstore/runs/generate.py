"""Bulk generation: a plan of domains x sequences becomes Dask tasks writing into the store.

Before any work the plan is checked against the store (the committed attributes of its own
sequence ids): ids holding other data refuse the whole plan, ids already holding the planned
data are skipped. Each task synthesises one sequence from a seed derived from (run seed,
domain, index), derives its pyramid and gradients, writes its own sequence group and commits
it (see :mod:`atlasstore.store.atlas_store`), and returns its committed attributes, or the error when
running it again could not help. The run itself - writer lock, run record, Dask cluster,
results, catalog registration, failures, Ctrl-C - is :mod:`atlasstore.runs.engine`, shared with
``atlas import``. Because every sequence is deterministic and commits atomically, a killed run
re-run with the same plan skips what is complete, rewrites what was half-written, and ends
with a store identical (checksums) to an uninterrupted run. The same graph runs on a
LocalCluster, in-process, or on any existing Dask cluster (``scheduler=ADDRESS``; the store
must then be reachable from every worker: a shared filesystem or an object-store URL).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import re
import zlib
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from zarr.core.sync import sync as zarr_sync

from atlasstore.errors import PlanClash, PlanError, SequenceExists
from atlasstore.io.provenance import code_version, host, utc_now
from atlasstore.physics import fields as physics
from atlasstore.physics import synth
from atlasstore.records import validate_name
from atlasstore.runs import engine as run_driver
from atlasstore.runs.engine import (
    DETERMINISTIC_ERRORS,
    LOCAL_CLUSTER_CONFIG,
    CatalogSink,
    Failure,
    Job,
    RunReport,
    committed_attrs,
)
from atlasstore.runs.engine import RunInterrupted as GenerationInterrupted
from atlasstore.runs.options import RunOptions
from atlasstore.store.atlas_store import AtlasStore
from atlasstore.store.layout import Layout
from atlasstore.store.run_log import RunLog
from atlasstore.store.writer import settle_zarr_writes

__all__ = ["DETERMINISTIC_ERRORS", "LOCAL_CLUSTER_CONFIG", "CatalogSink", "Failure",
           "GenerationInterrupted", "Plan", "PlanCheck", "PlanClash", "PlanError", "RunLog",
           "RunReport", "Task", "check_plan", "generate", "preflight", "sequence_id",
           "sequence_seed", "write_one"]

#: Largest in-memory footprint one task may need (a sequence with its levels and gradients).
MAX_TASK_BYTES = 4 * 2**30
MAX_SEQUENCES = 1_000_000


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


def write_one(location: str, task: Task, plan: Plan, layout: Mapping[str, Any] | None = None,
              storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Synthesise, derive and commit one sequence; skip it if already complete.

    Runs on a worker; returns ``{"task", "status", "info" | "error", "seconds"}`` with status
    written, skipped or failed (a deterministic error, see ``DETERMINISTIC_ERRORS``); raises
    anything else.
    """
    return run_driver.task_result(
        task, lambda: _write_one(location, task, plan, layout, storage_options))


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
    generation = {"kind": "generate", "run_id": plan.run_id(), "seed": task.seed,
                  "pattern": preset.pattern, "perturbations": preset.perturbations.to_dict(),
                  "code_version": code_version(), "index": task.index}
    try:
        info = store.write_sequence(task.domain, task.sequence_id, seq, steps, generation,
                                    levels=plan.scales, overwrite=True)
    except BaseException:
        # e.g. disk full: remove the uncommitted group (best effort; a crash leaves it to the
        # next run, which replaces it) so the store holds only complete sequences - once the
        # failed call's sibling writes have finished, or they would recreate parts of it
        with contextlib.suppress(Exception):
            settle_zarr_writes()
            store.delete_sequence(task.domain, task.sequence_id)
        raise
    return "written", info


# --------------------------------------------------------------------------- the driver


@dataclass
class PlanCheck:
    """The plan's sequences as the store holds them: ``complete`` (committed with the data the
    plan would write: skipped) and ``pending`` (absent or half-written: to be written)."""

    complete: dict[Task, dict[str, Any]]
    pending: list[Task]


_SEQ_ID = re.compile(r"^seq-(\d+)$")


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
    attrs = committed_attrs(store, [(t.domain, t.sequence_id) for t in tasks])
    for t, info in zip(tasks, attrs, strict=True):
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


def preflight(location: str | Path, plan: Plan, settings: RunOptions | None = None,
              **overrides: Any) -> PlanCheck | None:
    """Refuse, without writing anything, what :func:`generate` would refuse: a bad engine, a
    location that is not an atlas store, a plan that clashes with the store. None: the store
    does not exist yet. (The CLI runs this before it creates a catalog.)"""
    opts = RunOptions.of(settings, **overrides)
    check_engine(opts.scheduler, opts.workers)
    store = run_driver.preflight_store(location, opts)
    return None if store is None else check_plan(store, plan)


def check_engine(scheduler: str | None, workers: int | None) -> None:
    """Refuse a bad engine before anything is written (as a PlanError)."""
    try:
        run_driver.check_engine(scheduler, workers)
    except run_driver.EngineError as exc:
        raise PlanError(str(exc)) from None


def generate(location: str | Path, plan: Plan, settings: RunOptions | None = None,
             **overrides: Any) -> RunReport:
    """Run ``plan`` into the store at ``location`` (created if missing).

    ``scheduler``: None -> chosen by the number of sequences to write (in this process for a
    small plan, else a LocalCluster of ``workers`` processes, default one per core;
    :mod:`atlasstore.runs.scheduling`); ``"processes"`` -> that cluster; ``"serial"`` -> in this
    process; ``"threads"`` -> a LocalCluster of threads; anything else
    is a Dask scheduler address. ``progress`` is called with every finished task's result.
    A plan that clashes with the store raises ``PlanClash`` before anything is written; Ctrl-C
    raises ``GenerationInterrupted`` once the workers are stopped. ``dask_logs``: let a local
    cluster's own warnings and errors through (by default every failure is in the report).
    """
    opts = RunOptions.of(settings, **overrides)
    layout, storage_options = opts.layout, opts.storage_options
    loc = str(location)
    check_engine(opts.scheduler, opts.workers)
    lay = asdict(layout) if layout else None
    with run_driver.locked_store(loc, plan.run_id(), layout=layout,
                                 storage_options=storage_options) as store:
        checked = check_plan(store, plan)
        for d in plan.domains:
            store.create_domain(d, plan.preset(d).to_dict())
        run = {"run_id": plan.run_id(), "kind": "generate", "config": plan.to_dict(),
               "config_hash": plan.config_hash(), "seed": plan.seed,
               "code_version": code_version(), "host": host(), "started": utc_now(),
               "finished": None, "counts": {}}

        def job(task: Task) -> Job:
            return Job(task, task.domain, task.sequence_id,
                       f"write-{task.domain}-{task.sequence_id}-{plan.run_id()}", write_one,
                       (loc, task, plan, lay, storage_options), seed=task.seed)

        return run_driver.execute(
            store, run, [job(t) for t in checked.pending],
            [(job(t), info) for t, info in checked.complete.items()], settings=opts,
            values=sum(_values(plan, t.domain) for t in checked.pending))


def _values(plan: Plan, domain: str) -> int:
    """Map values one sequence of ``domain`` writes at full resolution."""
    p = plan.preset(domain)
    ny, nx = plan.shape or p.shape
    return (plan.steps or p.n_steps) * ny * nx
