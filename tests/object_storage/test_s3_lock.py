"""The writer lock on object storage, against the real S3 server and with real processes: the
lock object changes only by conditional PUTs (If-None-Match: * to create, If-Match on the ETag
to take over, renew and release), so of two writers exactly one holds it; a holder that was
taken over finds out at its next renewal and stops; a killed holder's lock is taken over.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import sys
from pathlib import Path
from typing import Any

import pytest

from atlasstore import cli
from atlasstore.errors import StoreLocked
from atlasstore.store import AtlasStore
from atlasstore.store.writer_lock import WriterLock
from helpers.proc_helpers import ProcTracker, kill9, wait_until
from helpers.s3_fixtures import S3Bucket

ROUNDS = 40


@pytest.fixture
def procs(tmp_path: Path) -> Any:
    t = ProcTracker(tmp_path)
    yield t
    t.cleanup()


def _record(b: S3Bucket) -> dict[str, Any]:
    raw = b.server.client().get_object(Bucket=b.bucket, Key="atlas.zarr/_lock/zarr.json")["Body"].read()
    return json.loads(raw)["attributes"].get("atlasstore_writer_lock", {})


def _contender(url: str, idx: int, rounds: int, barrier: Any, results: Any) -> None:
    """One of two processes: in every round both try at once; the winner holds the lock until
    both have tried, then releases it."""
    store = AtlasStore.open(url, mode="r+")
    for r in range(rounds):
        barrier.wait()
        lock = WriterLock(store, {"run_id": f"p{idx}-round{r}"}, stale_after=60, renew_every=0.05)
        try:
            lock.acquire()
            won = True
        except StoreLocked:
            won = False
        barrier.wait()  # both have tried; the winner still holds it
        if won:
            lock.ensure_held()
            lock.release()
        results.put((r, idx, won))
        barrier.wait()  # released before the next round


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_two_processes_racing_never_both_hold_the_lock(s3: S3Bucket) -> None:
    AtlasStore.create(s3.url)
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(2, timeout=120), ctx.Queue()
    ps = [ctx.Process(target=_contender, args=(s3.url, i, ROUNDS, barrier, results)) for i in (0, 1)]
    for p in ps:
        p.start()
    got = [results.get(timeout=300) for _ in range(2 * ROUNDS)]
    for p in ps:
        p.join(60)
        assert p.exitcode == 0
    wins: dict[int, list[int]] = {}
    for r, idx, won in got:
        if won:
            wins.setdefault(r, []).append(idx)
    assert sorted(wins) == list(range(ROUNDS)), "a round without a winner"
    assert all(len(w) == 1 for w in wins.values()), {r: w for r, w in wins.items() if len(w) > 1}
    print(f"S3 LOCK RACE: {ROUNDS} rounds, wins by process: "
          f"{[sum(1 for w in wins.values() if w == [i]) for i in (0, 1)]}")
    assert _record(s3) == {}  # released


HOLDER = """
import sys, time
from atlasstore.store import AtlasStore
from atlasstore.errors import StoreLocked
from atlasstore.store.writer_lock import WriterLock
lock = WriterLock(AtlasStore.open(sys.argv[1], mode="r+"), {"run_id": "run-holder"},
                  stale_after=1.0, renew_every=0.1).acquire()
print("held", flush=True)
try:
    while True:
        lock.ensure_held()  # what a writer checks before each write
        time.sleep(0.02)
except StoreLocked as exc:
    print(f"stopped: {exc}", flush=True)
    lock.release()
    sys.exit(3)
"""


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_paused_holder_that_was_taken_over_stops_writing(s3: S3Bucket, procs: ProcTracker) -> None:
    store = AtlasStore.create(s3.url)
    holder = procs.launch([sys.executable, "-c", HOLDER, s3.url])
    assert wait_until(lambda: "held" in holder.stdout() or holder.proc.poll() is not None, 120), \
        holder.describe()
    with pytest.raises(StoreLocked, match="run-holder"):  # alive and renewing: refused
        WriterLock(store, stale_after=1.0).acquire()
    os.kill(holder.pid, signal.SIGSTOP)  # paused: no more renewals
    try:
        new = WriterLock(store, {"run_id": "run-new"}, stale_after=1.0).acquire()
    finally:
        os.kill(holder.pid, signal.SIGCONT)
    assert holder.wait(60) == 3, holder.describe()
    assert "lost the writer lock" in holder.stdout()
    assert _record(s3)["run_id"] == "run-new"  # the old holder's release left it alone
    new.ensure_held()
    new.release()
    assert _record(s3) == {}


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_a_killed_holder_on_this_host_is_taken_over_at_once(s3: S3Bucket, procs: ProcTracker) -> None:
    store = AtlasStore.create(s3.url)
    holder = procs.launch([sys.executable, "-c", HOLDER.replace("stale_after=1.0", "stale_after=3600"),
                           s3.url])
    assert wait_until(lambda: "held" in holder.stdout() or holder.proc.poll() is not None, 120), \
        holder.describe()
    kill9(holder.pid)
    holder.wait(30)
    assert _record(s3)["run_id"] == "run-holder"  # left behind
    # the holder's pid is gone: no watching (its stale_after of an hour would hang this test)
    with WriterLock(store, {"run_id": "run-next"}, stale_after=3600):
        assert _record(s3)["run_id"] == "run-next"


def test_generate_refuses_while_another_run_holds_the_lock(s3: S3Bucket, capsys: Any) -> None:
    store = AtlasStore.create(s3.url)
    with WriterLock(store, {"run_id": "run-holder"}, renew_every=0.1):
        rc = cli.main(["generate", "--store", s3.url, "--domains", "plasma_physics",
                       "--sequences", "1", "--steps", "2", "--scheduler", "serial", "--no-catalog",
                       "--quiet"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "is being written by another generation run (run-holder, pid" in err
    assert AtlasStore.open(s3.url).domains() == []  # nothing written


def test_a_run_whose_lock_was_taken_over_stops_at_the_next_result(s3: S3Bucket) -> None:
    """The run driver (generate and import) checks its lock after every result: once a renewal
    is refused, the next result stops the run and later tasks never start."""
    from atlasstore.runs import engine as run_driver
    from atlasstore.runs.options import RunOptions
    from helpers.s3_tiny_stores import run_record

    ran: list[str] = []
    run = run_record("taken-over")
    with run_driver.locked_store(s3.url, run["run_id"]) as store:
        lock = run_driver._LOCKS[store]

        def task(name: str) -> dict[str, Any]:
            ran.append(name)
            if name == "first":  # another writer takes the lock object over (a new ETag) ...
                body = {"zarr_format": 3, "node_type": "group",
                        "attributes": {"atlasstore_writer_lock": {"run_id": "run-new", "token": "t"}}}
                s3.server.client().put_object(Bucket=s3.bucket, Key="atlas.zarr/_lock/zarr.json",
                                              Body=json.dumps(body).encode())
                assert lock._renew() is False  # ... and this holder's next renewal is refused
            return {"task": {"name": name}, "status": "failed", "error": "not written"}

        jobs = [run_driver.Job({"name": n}, "d", n, f"k-{n}", task, (n,)) for n in ("first", "second")]
        with pytest.raises(StoreLocked, match="lost the writer lock .*taken over by run run-new"):
            run_driver.execute(store, run, jobs, settings=RunOptions(scheduler="serial"))
    assert ran == ["first"]
