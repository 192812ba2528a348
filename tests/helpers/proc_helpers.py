"""Helpers for tests that drive real ``atlas`` processes: launch, kill -9, watch, clean up.

Used by ``test_crash_resume.py`` and ``test_concurrency.py``. Everything here works on the
store's files directly where it must not disturb (or depend on) the code under test: the
state probe reads ``zarr.json`` files with plain ``json``, so a half-written store can be
inspected while a writer runs.

Every process a test starts is tracked in a :class:`ProcTracker` and ended by pid at
teardown (never by name).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from atlasstore.store import AtlasStore

#: ``atlas`` as a child process (same interpreter and environment as the test).
ATLAS = [sys.executable, "-m", "atlasstore.cli"]

#: the store's writer lock object (see ``atlasstore.store.writer_lock.WriterLock``)
LOCK_KEY = Path("_lock") / "zarr.json"


def generate_cmd(store: str | Path, domains: Sequence[str], sequences: int, steps: int,
                 *, seed: int = 0, scales: Sequence[int] | None = None,
                 scheduler: str | None = None, workers: int | None = None) -> list[str]:
    """The ``atlas generate`` command line (never touches a catalog)."""
    cmd = [*ATLAS, "generate", "--store", str(store), "--domains", ",".join(domains),
           "--sequences", str(sequences), "--steps", str(steps), "--seed", str(seed),
           "--no-catalog", "--quiet"]
    if scales:
        cmd += ["--scales", ",".join(map(str, scales))]
    if scheduler:
        cmd += ["--scheduler", scheduler]
    if workers:
        cmd += ["--workers", str(workers)]
    return cmd


@dataclass
class Run:
    """A launched process with its output captured to files (no pipes to fill up)."""

    proc: subprocess.Popen[bytes]
    out_path: Path
    err_path: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def describe(self) -> str:
        return (f"pid {self.pid} rc {self.proc.returncode}\n--- stdout\n{self.stdout()[-3000:]}"
                f"\n--- stderr\n{self.stderr()[-3000:]}")


class ProcTracker:
    """Remembers every process a test started (and their descendants) and ends them by pid."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.runs: list[Run] = []
        self.extra: dict[int, psutil.Process] = {}
        self._n = 0

    def launch(self, cmd: Sequence[str], cwd: str | Path | None = None,
               env: dict[str, str] | None = None) -> Run:
        self._n += 1
        out = self.workdir / f"proc{self._n}.out"
        err = self.workdir / f"proc{self._n}.err"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        with open(out, "wb") as fo, open(err, "wb") as fe:
            proc = subprocess.Popen(list(cmd), stdout=fo, stderr=fe, cwd=cwd, env=full_env,
                                    start_new_session=True)
        run = Run(proc, out, err)
        self.runs.append(run)
        return run

    def run(self, cmd: Sequence[str], timeout: float = 240.0, cwd: str | Path | None = None) -> Run:
        """Launch and wait; the caller checks the return code."""
        r = self.launch(cmd, cwd=cwd)
        try:
            r.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill_tree(r)
            raise AssertionError(f"{' '.join(cmd)} did not finish in {timeout} s\n{r.describe()}") from None
        return r

    def remember(self, procs: Iterable[psutil.Process]) -> None:
        for p in procs:
            self.extra[p.pid] = p

    def kill_tree(self, run: Run) -> None:
        procs = descendants(run.pid)
        self.remember(procs)
        kill9(run.pid)
        try:
            run.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass
        for p in procs:
            _kill_proc(p)

    def cleanup(self) -> None:
        for r in self.runs:
            if r.proc.poll() is None:
                self.kill_tree(r)
        for p in list(self.extra.values()):
            _kill_proc(p)


def _kill_proc(p: psutil.Process) -> None:
    try:
        if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
            p.kill()
    except psutil.Error:
        pass


def kill9(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def descendants(pid: int) -> list[psutil.Process]:
    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.Error:
        return []


def is_dask_worker(p: psutil.Process) -> bool:
    """A LocalCluster worker process (multiprocessing spawn child; not the resource tracker)."""
    try:
        return "spawn_main" in " ".join(p.cmdline())
    except psutil.Error:
        return False


def worker_pids(driver_pid: int) -> list[int]:
    return sorted(p.pid for p in descendants(driver_pid) if is_dask_worker(p))


def alive(procs: Iterable[psutil.Process]) -> list[psutil.Process]:
    """Those still running (zombies count as gone: they hold no resources and run nothing)."""
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except psutil.Error:
            pass
    return out


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.02) -> Any:
    """Poll ``pred`` until truthy (returned) or ``timeout`` (returns the last falsy value)."""
    end = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() >= end:
            return v
        time.sleep(interval)


# --------------------------------------------------------------------------- store probes


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None


@dataclass(frozen=True)
class StoreState:
    """Sequence groups on disk, by status as recorded in their ``zarr.json``."""

    complete: frozenset[str]
    writing: frozenset[str]
    other: frozenset[str]  # a directory without (yet) a readable zarr.json

    @property
    def groups(self) -> int:
        return len(self.complete) + len(self.writing) + len(self.other)

    def summary(self) -> str:
        return f"{len(self.complete)} complete, {len(self.writing)} writing, {len(self.other)} other"


def store_state(store: str | Path, domains: Sequence[str]) -> StoreState:
    """What is on disk now, read with plain ``json`` (safe while a writer runs)."""
    complete, writing, other = set(), set(), set()
    for d in domains:
        ddir = Path(store) / d
        try:
            names = os.listdir(ddir)
        except OSError:
            continue
        for s in names:
            sdir = ddir / s
            if not sdir.is_dir():
                continue
            doc = _read_json(sdir / "zarr.json")
            status = ((doc or {}).get("attributes", {}).get("atlasstore_sequence", {})
                      .get("status"))
            key = f"{d}/{s}"
            (complete if status == "complete" else writing if status == "writing" else other).add(key)
    return StoreState(frozenset(complete), frozenset(writing), frozenset(other))


def lock_record(store: str | Path) -> dict[str, Any] | None:
    doc = _read_json(Path(store) / LOCK_KEY)
    if doc is None:
        return None
    return doc.get("attributes", {}).get("atlasstore_writer_lock", {})


def write_lock(store: str | Path, pid: int, host: str, heartbeat: float,
               run_id: str = "run-test") -> None:
    """Plant a writer lock as a holder would have left it (same on-disk shape as WriterLock)."""
    p = Path(store) / LOCK_KEY
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {
        "atlasstore_writer_lock": {"token": "planted", "pid": pid, "host": host,
                                   "heartbeat": heartbeat, "run_id": run_id,
                                   "started": "2020-01-01T00:00:00+00:00"}}}))


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def checksums(store: str | Path) -> dict[str, str]:
    """{domain/seq/level/field: committed checksum} of every complete sequence."""
    s = AtlasStore.open(store)
    out = {}
    for d, seq in s.iter_sequences():
        for key, rec in s.sequence_info(d, seq)["arrays"].items():
            out[f"{d}/{seq}/{key}"] = rec["checksum"]
    return out


def sequence_ids(store: str | Path, include_incomplete: bool = True) -> list[str]:
    s = AtlasStore.open(store)
    return sorted(f"{d}/{q}" for d in s.domains()
                  for q in s.sequences(d, include_incomplete=include_incomplete))


def leftover_partials(store: str | Path) -> list[str]:
    """Temp files of interrupted atomic writes (``*.partial``) left in the store."""
    return sorted(str(p.relative_to(store)) for p in Path(store).rglob("*.partial"))
