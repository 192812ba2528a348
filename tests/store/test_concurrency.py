"""Concurrent generation runs on one store: the writer lock, stale locks, and determinism
across worker counts.

- A second run refuses while the first is alive (``StoreLocked``; the CLI exits 2 with one
  line naming the holder's run id, pid and host), and the first finishes unharmed.
- Local stores: the lock is a kernel flock, so a killed holder never blocks the next run and
  a lock file left behind means nothing; remote stores: a compare-and-swap lock object whose
  holder renews it, taken over when its pid is gone or it stops renewing.
- Eight processes creating the same new store at once all succeed without wiping each other.
- 1 worker, 2 workers (processes), threads and serial produce identical checksums.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from pathlib import Path

import pytest

from atlasstore.errors import StoreLocked
from atlasstore.runs.generate import Plan, generate
from atlasstore.store import AtlasStore
from atlasstore.store.writer_lock import WriterLock
from helpers.proc_helpers import (
    LOCK_KEY,
    ProcTracker,
    checksums,
    dead_pid,
    generate_cmd,
    kill9,
    lock_record,
    sequence_ids,
    store_state,
    wait_until,
    write_lock,
)

HOST = socket.gethostname()
LONG = dict(domains=("plasma_physics", "fluid_dynamics"), sequences=10, steps=10)  # ~6 s serial
SMALL = dict(domains=("plasma_physics", "fluid_dynamics"), sequences=2, steps=4)


@pytest.fixture()
def procs(tmp_path: Path):
    tracker = ProcTracker(tmp_path)
    yield tracker
    tracker.cleanup()


def _lock_held_by(store: Path, pid: int) -> bool:
    rec = lock_record(store)
    return bool(rec) and rec.get("pid") == pid


# --------------------------------------------------------------------------- two runs at once


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_second_run_refused_while_first_alive(tmp_path: Path, procs: ProcTracker) -> None:
    store = tmp_path / "atlas.zarr"
    cmd = generate_cmd(store, scheduler="serial", **LONG)
    first = procs.launch(cmd)
    assert wait_until(lambda: _lock_held_by(store, first.pid) or first.proc.poll() is not None,
                      120), first.describe()
    assert first.proc.poll() is None, f"first run ended before the test could race it\n{first.describe()}"
    holder = lock_record(store)

    # The CLI: exit 2, one line, naming the holder.
    second = procs.run(cmd, timeout=120)
    assert second.proc.returncode == 2, second.describe()
    err = second.stderr().strip().splitlines()
    assert len(err) == 1, err
    line = err[0]
    assert line.startswith("atlas: error: ")
    assert f"pid {first.pid}" in line and HOST in line and holder["run_id"] in line, line
    assert "being written by another generation run" in line
    assert second.stdout() == ""

    # The Python API: StoreLocked.
    with pytest.raises(StoreLocked, match=f"pid {first.pid}"):
        generate(store, Plan(seed=0, **LONG), scheduler="serial")

    assert first.proc.poll() is None, "first run was not alive during the refusals"
    assert lock_record(store)["token"] == holder["token"], "a refused run touched the lock"

    first.wait(180)
    assert first.proc.returncode == 0, first.describe()
    assert not lock_record(store), "the lock still names a holder"
    n = len(LONG["domains"]) * LONG["sequences"]
    assert len(store_state(store, LONG["domains"]).complete) == n

    # Now the second run may go: everything is already complete.
    again = procs.run(cmd, timeout=120)
    assert again.proc.returncode == 0, again.describe()
    assert f"0 sequences written, {n} already complete, 0 failed" in again.stdout()


def test_refused_run_leaves_store_untouched(tmp_path: Path) -> None:
    store = AtlasStore.create(tmp_path / "atlas.zarr")
    store.create_domain("plasma_physics")
    with WriterLock(store, {"run_id": "run-holder"}):
        with pytest.raises(StoreLocked):
            generate(store.location, Plan(domains=("astrophysics",), sequences=1, steps=2,
                                          shape=(64, 64)), scheduler="serial")
        assert AtlasStore.open(store.location).domains() == ["plasma_physics"]


# --------------------------------------------------------------------------- stale locks


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_lock_of_killed_run_is_broken_by_next_run(tmp_path: Path, procs: ProcTracker) -> None:
    store = tmp_path / "atlas.zarr"
    cmd = generate_cmd(store, scheduler="serial", **LONG)
    first = procs.launch(cmd)
    assert wait_until(lambda: (_lock_held_by(store, first.pid)
                               and store_state(store, LONG["domains"]).groups >= 2)
                      or first.proc.poll() is not None, 120), first.describe()
    kill9(first.pid)
    first.wait(30)
    assert _lock_held_by(store, first.pid), "kill -9 should leave the lock behind"

    second = procs.run(cmd, timeout=180)
    assert second.proc.returncode == 0, second.describe()
    assert "0 failed" in second.stdout()
    assert not lock_record(store), "the lock still names a holder"
    n = len(LONG["domains"]) * LONG["sequences"]
    assert len(sequence_ids(store, include_incomplete=True)) == n
    assert len(sequence_ids(store, include_incomplete=False)) == n


@pytest.mark.slow
def test_planted_lock_of_dead_pid_is_broken_by_cli(tmp_path: Path, procs: ProcTracker) -> None:
    store = tmp_path / "atlas.zarr"
    AtlasStore.create(store)
    write_lock(store, dead_pid(), HOST, time.time())  # fresh heartbeat, but the pid is gone
    r = procs.run(generate_cmd(store, scheduler="serial", domains=("plasma_physics",),
                               sequences=1, steps=2), timeout=120)
    assert r.proc.returncode == 0, r.describe()
    assert not lock_record(store), "the lock still names a holder"


def _store(tmp_path: Path) -> AtlasStore:
    return AtlasStore.create(tmp_path / "atlas.zarr")


def test_live_holder_is_respected_and_named(tmp_path: Path) -> None:
    """A second lock on another file descriptor (even in the same process) is refused."""
    s = _store(tmp_path)
    with WriterLock(s, {"run_id": "run-live"}):
        with pytest.raises(StoreLocked, match=rf"run-live, pid {os.getpid()} on {HOST}"):
            WriterLock(s, {"run_id": "run-other"}).acquire()
        assert lock_record(s.location)["run_id"] == "run-live"
    assert not lock_record(s.location)
    with WriterLock(s, {"run_id": "run-other"}):  # free again after release
        assert lock_record(s.location)["run_id"] == "run-other"


@pytest.mark.parametrize("pid, host, age", [(None, HOST, 0.0), (1, "some-other-host", 1000.0),
                                            (1, "some-other-host", 0.0)])
def test_a_lock_file_without_a_live_flock_never_blocks(tmp_path: Path, pid: int | None,
                                                       host: str, age: float) -> None:
    """Local stores: only the kernel's flock counts; whatever a dead holder left is ignored."""
    s = _store(tmp_path)
    write_lock(s.location, pid or dead_pid(), host, time.time() - age)
    with WriterLock(s, {"run_id": "run-new"}):
        rec = lock_record(s.location)
        assert rec["run_id"] == "run-new" and rec["pid"] == os.getpid()


def test_unreadable_lock_is_broken(tmp_path: Path) -> None:
    s = _store(tmp_path)
    p = Path(s.location) / LOCK_KEY
    p.parent.mkdir(parents=True)
    p.write_text("{not json")
    with WriterLock(s):
        assert lock_record(s.location)["pid"] == os.getpid()


def test_lock_released_when_holder_process_is_killed(tmp_path: Path, procs: ProcTracker) -> None:
    s = _store(tmp_path)
    holder = procs.launch([sys.executable, "-c", (
        "import sys, time\n"
        "from atlasstore.store import AtlasStore\n"
        "from atlasstore.store.writer_lock import WriterLock\n"
        f"WriterLock(AtlasStore.open({s.location!r}, mode='r+'), {{'run_id': 'run-held'}}).acquire()\n"
        "print('locked', flush=True)\n"
        "time.sleep(600)\n")])
    assert wait_until(lambda: "locked" in holder.stdout(), 60), holder.describe()
    with pytest.raises(StoreLocked, match="run-held"):
        WriterLock(s).acquire()
    kill9(holder.pid)
    holder.proc.wait(10)
    with WriterLock(s, {"run_id": "run-next"}):  # the kernel released the flock: no stale state
        assert lock_record(s.location)["run_id"] == "run-next"


# ------------------------------------- remote stores: compare-and-swap, renewals tell a dead holder
# (memory:// here, atomic within the process; against a real S3 server: tests/object_storage/test_s3_lock.py)

def _remote(tmp_path: Path) -> AtlasStore:
    return AtlasStore.create(f"memory://locks-{tmp_path.name}-{time.time_ns()}")


def _plant_remote(s: AtlasStore, pid: int, host: str) -> None:
    from zarr.core.buffer import cpu
    from zarr.core.sync import sync

    doc = {"zarr_format": 3, "node_type": "group", "attributes": {"atlasstore_writer_lock": {
        "token": "planted", "pid": pid, "host": host, "beat": 0, "run_id": "run-planted"}}}
    sync(s.zarr_group.store.set(WriterLock.KEY, cpu.Buffer.from_bytes(json.dumps(doc).encode())))


def _remote_record(s: AtlasStore) -> dict:
    return WriterLock(s)._read() or {}


def test_remote_live_holder_is_respected_whatever_its_host(tmp_path: Path) -> None:
    """A holder that renews is alive: the contender sees the ETag change and refuses."""
    s = _remote(tmp_path)
    with WriterLock(s, {"run_id": "run-live"}, stale_after=30, renew_every=0.1):
        with pytest.raises(StoreLocked, match="run-live"):
            WriterLock(s, {"run_id": "run-other"}, stale_after=30).acquire()
        assert _remote_record(s)["run_id"] == "run-live"


def test_remote_silent_holder_of_another_host_is_taken_over(tmp_path: Path) -> None:
    """No renewal for stale_after seconds of the contender's own clock: the holder is dead,
    whatever the timestamps in its record say (there are none to trust)."""
    s = _remote(tmp_path)
    _plant_remote(s, 1, "some-other-host")
    t0 = time.monotonic()
    with WriterLock(s, {"run_id": "run-new"}, stale_after=0.6):
        assert time.monotonic() - t0 >= 0.6  # it watched before taking over
        assert _remote_record(s)["run_id"] == "run-new"
    assert _remote_record(s) == {}  # released: the empty group document


def test_remote_dead_pid_on_this_host_is_taken_over_at_once(tmp_path: Path) -> None:
    s = _remote(tmp_path)
    _plant_remote(s, dead_pid(), HOST)
    with WriterLock(s, {"run_id": "run-new"}, stale_after=3600):  # no watching: it would hang
        assert _remote_record(s)["run_id"] == "run-new"


def test_remote_renewals_change_the_record(tmp_path: Path) -> None:
    s = _remote(tmp_path)
    with WriterLock(s, stale_after=2.0, renew_every=0.1):
        first = _remote_record(s)["beat"]
        assert wait_until(lambda: _remote_record(s)["beat"] > first, 10.0)


def test_remote_holder_that_was_taken_over_knows_it_lost(tmp_path: Path) -> None:
    """A holder that stopped renewing (a paused process) and was taken over: its next renewal is
    refused (If-Match on a stale ETag) and ensure_held() raises, so it stops writing; its
    release leaves the new holder's record alone."""
    s = _remote(tmp_path)
    old = WriterLock(s, {"run_id": "run-old"}, stale_after=0.5, renew_every=0.1).acquire()
    old._stop.set()  # paused: no more renewals
    old._thread.join()
    old._stop.clear()
    with WriterLock(s, {"run_id": "run-new"}, stale_after=0.5, renew_every=0.1):
        assert _remote_record(s)["run_id"] == "run-new"
        assert old._renew() is False
        with pytest.raises(StoreLocked, match="lost the writer lock .*taken over by run run-new"):
            old.ensure_held()
        old.release()
        assert _remote_record(s)["run_id"] == "run-new"


def test_remote_holder_that_cannot_renew_stops_by_itself(tmp_path: Path) -> None:
    s = _remote(tmp_path)
    lock = WriterLock(s, stale_after=0.3, renew_every=0.1).acquire()
    lock._stop.set()
    lock._thread.join()
    lock.ensure_held()  # within stale_after of the last renewal: still held
    time.sleep(0.35)
    with pytest.raises(StoreLocked, match="not renewed"):
        lock.ensure_held()


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_concurrent_create_of_a_new_store(tmp_path: Path, procs: ProcTracker) -> None:
    """Eight processes create the same new store at once and each adds a domain: all succeed
    and no creator wipes another's work (the root metadata is created exclusively)."""
    path = tmp_path / "atlas.zarr"
    go = tmp_path / "go"
    code = ("import sys, time, pathlib\n"
            "from atlasstore.store import AtlasStore\n"
            f"go = pathlib.Path({str(go)!r})\n"
            "while not go.exists(): time.sleep(0.001)\n"
            f"AtlasStore.create({str(path)!r}, exist_ok=True).create_domain('d' + sys.argv[1])\n")
    runs = [procs.launch([sys.executable, "-c", code, str(i)]) for i in range(8)]
    time.sleep(3)
    go.write_text("")
    for r in runs:
        r.proc.wait(120)
        assert r.proc.returncode == 0, r.describe()
    assert AtlasStore.open(path).domains() == sorted(f"d{i}" for i in range(8))


# --------------------------------------------------------------------------- determinism


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_checksums_identical_across_worker_counts(tmp_path: Path, procs: ProcTracker) -> None:
    ref_path = tmp_path / "serial.zarr"
    rep = generate(ref_path, Plan(seed=5, **SMALL), scheduler="serial")
    assert rep.ok
    ref = checksums(ref_path)
    assert len(ref) == 2 * 2 * 9
    for label, extra in (("1 worker", dict(workers=1, scheduler="processes")),
                         ("2 workers", dict(workers=2, scheduler="processes")),
                         ("2 threads", dict(workers=2, scheduler="threads"))):
        store = tmp_path / f"{label.replace(' ', '-')}.zarr"
        r = procs.run(generate_cmd(store, seed=5, **SMALL, **extra), timeout=180)
        assert r.proc.returncode == 0, r.describe()
        got = checksums(store)
        assert got == ref, f"{label}: {sorted(k for k in ref if got.get(k) != ref[k])[:5]}"
        # and the committed generation records agree (seeds, indices), apart from timestamps
        a, b = AtlasStore.open(ref_path), AtlasStore.open(store)
        for d, q in a.iter_sequences():
            ga, gb = a.sequence_info(d, q)["generation"], b.sequence_info(d, q)["generation"]
            assert (ga["seed"], ga["index"], ga["run_id"]) == (gb["seed"], gb["index"], gb["run_id"])
