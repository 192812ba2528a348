"""Crash and resume with real processes: kill -9 the ``atlas generate`` driver (or one Dask
worker) mid-run, re-run the same command, and compare with an uninterrupted run.

What each trial asserts (``_check_resumed``): the re-run exits 0, skips exactly the sequences
that were complete at the kill and writes the rest; every committed checksum equals the
reference run's; the sequence ids are exactly the planned set (no duplicates, no strays, no
incomplete groups); the audit is clean; the writer lock names no holder; the run log records the attempts.
After every kill, no process the driver had started may still be running ~10 s later.

Kill points come from recorded seeds: ``random.Random(seed)`` picks how many sequence groups
must have appeared on disk before the kill (0: a plain delay, usually during start-up) and a
jitter after that, so a failing trial is reproduced by its seed. Trials alternate the engine
(LocalCluster processes, serial, LocalCluster threads). More trials:
``ATLAS_CRASH_TRIALS=10`` (seeds 0..9) or ``ATLAS_CRASH_SEEDS=3,17,42``.

A reader test runs queries and reads in this process while a generation is running, killed and
resumed, and asserts that a partial sequence is never visible.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from atlasstore.audit import audit
from atlasstore.errors import NotAnAtlasStore, NotFound
from atlasstore.query import Query
from atlasstore.runs.generate import Plan, generate
from atlasstore.store import AtlasStore, RunLog, checksum
from helpers.proc_helpers import (
    ProcTracker,
    alive,
    checksums,
    descendants,
    generate_cmd,
    kill9,
    leftover_partials,
    lock_record,
    sequence_ids,
    store_state,
    wait_until,
    worker_pids,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]

DOMAINS = ("plasma_physics", "fluid_dynamics")
SEQUENCES = 4
STEPS = 8
RUN_SEED = 11
N_TASKS = len(DOMAINS) * SEQUENCES
PLANNED = sorted(f"{d}/seq-{i:05d}" for d in DOMAINS for i in range(SEQUENCES))
ENGINES = ("processes", "serial", "threads")
ORPHAN_GRACE_S = 10.0


def _seeds() -> list[int]:
    explicit = os.environ.get("ATLAS_CRASH_SEEDS", "").strip()
    if explicit:
        return [int(s) for s in explicit.split(",") if s.strip()]
    return list(range(int(os.environ.get("ATLAS_CRASH_TRIALS", "4"))))


KILL_SEEDS = _seeds()


def _cmd(store: Path, engine: str) -> list[str]:
    if engine == "serial":
        return generate_cmd(store, DOMAINS, SEQUENCES, STEPS, seed=RUN_SEED, scheduler="serial")
    if engine == "threads":
        return generate_cmd(store, DOMAINS, SEQUENCES, STEPS, seed=RUN_SEED, scheduler="threads",
                            workers=2)
    return generate_cmd(store, DOMAINS, SEQUENCES, STEPS, seed=RUN_SEED, scheduler="processes",
                        workers=2)


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Checksums of an uninterrupted run of the same plan (in-process, serial)."""
    path = tmp_path_factory.mktemp("ref") / "ref.zarr"
    report = generate(path, Plan(domains=DOMAINS, sequences=SEQUENCES, steps=STEPS, seed=RUN_SEED),
                      scheduler="serial")
    assert report.ok and report.written == N_TASKS
    ref = checksums(path)
    assert len(ref) == N_TASKS * 9  # 3 levels x 3 fields
    return ref


@pytest.fixture()
def procs(tmp_path: Path):
    tracker = ProcTracker(tmp_path)
    yield tracker
    tracker.cleanup()


_SUMMARY = re.compile(r"(\d+) sequences written, (\d+) already complete, (\d+) failed")


def _summary(stdout: str) -> tuple[int, int, int]:
    m = _SUMMARY.search(stdout)
    assert m, f"no run summary in output:\n{stdout}"
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


def _assert_no_orphans(victims: list[psutil.Process], what: str) -> None:
    left = wait_until(lambda: not alive(victims), ORPHAN_GRACE_S, 0.1)
    still = alive(victims)
    assert left or not still, (
        f"bug: {what}: {len(still)} process(es) the driver started are still running "
        f"{ORPHAN_GRACE_S:.0f} s after the kill: "
        + "; ".join(f"{p.pid} {' '.join(p.cmdline())[:100]}" for p in still))


def _check_resumed(store: Path, rerun_stdout: str, complete_at_kill: int,
                   reference: dict[str, str]) -> None:
    written, skipped, failed = _summary(rerun_stdout)
    assert failed == 0
    assert skipped == complete_at_kill, "the re-run must skip exactly what was complete"
    assert written + skipped == N_TASKS
    assert sequence_ids(store, include_incomplete=True) == PLANNED
    assert sequence_ids(store, include_incomplete=False) == PLANNED
    got = checksums(store)
    assert got.keys() == reference.keys()
    diff = sorted(k for k in got if got[k] != reference[k])
    assert not diff, f"checksums differ from the uninterrupted run: {diff[:5]}"
    rep = audit(AtlasStore.open(store))
    assert rep.ok, rep.problems[:5]
    assert not lock_record(store), "writer lock still names a holder after a clean finish"
    stray = [p for p in leftover_partials(store) if p.count("/") >= 2 and not p.startswith("_")]
    assert not stray, f"temporary files left inside sequence groups: {stray}"
    runs = RunLog(AtlasStore.open(store)).list()
    assert len(runs) == 1 and runs[0]["finished"], runs
    # every attempt is kept: the last one covers every task; the record's written total is
    # what the attempts wrote (a rewritten damaged sequence counts again)
    last = runs[0]["attempts"][-1]["counts"]
    assert last["written"] + last["skipped"] == N_TASKS, runs[0]["attempts"]
    assert runs[0]["counts"]["written"] == sum(a.get("counts", {}).get("written", 0)
                                               for a in runs[0]["attempts"]), runs[0]


# --------------------------------------------------------------------------- driver kill -9


@pytest.mark.parametrize("seed", KILL_SEEDS)
def test_kill_driver_then_resume(seed: int, tmp_path: Path, procs: ProcTracker,
                                 reference: dict[str, str]) -> None:
    rng = random.Random(seed)
    engine = ENGINES[seed % len(ENGINES)]
    target = rng.randrange(0, N_TASKS)  # sequence groups on disk before the kill
    delay = rng.uniform(0.3, 2.5) if target == 0 else rng.uniform(0.0, 0.15)
    store = tmp_path / "atlas.zarr"
    cmd = _cmd(store, engine)

    run = procs.launch(cmd)
    if target:
        reached = wait_until(lambda: store_state(store, DOMAINS).groups >= target
                             or run.proc.poll() is not None, 120.0)
        assert reached, f"seed {seed}: generation never reached {target} groups\n{run.describe()}"
    time.sleep(delay)
    victims = descendants(run.pid)
    procs.remember(victims)
    finished_first = run.proc.poll() is not None
    kill9(run.pid)
    run.wait(30)
    _assert_no_orphans(victims, f"seed {seed} ({engine}) driver kill")
    state = store_state(store, DOMAINS)
    lock_left = bool(lock_record(store))
    print(f"seed {seed} engine {engine}: kill at {target} groups + {delay:.2f} s "
          f"(t={run.elapsed():.1f} s): {state.summary()}, lock left: {lock_left}, "
          f"driver had {'finished' if finished_first else 'not finished'}; "
          f"temp files: {leftover_partials(store)}")

    # Invisible while incomplete: a reader sees exactly the complete ones.
    if (store / "zarr.json").exists():
        s = AtlasStore.open(store)
        visible = {f"{d}/{q}" for d in s.domains() for q in s.sequences(d)}
        assert visible == set(state.complete)

    rerun = procs.run(cmd)
    assert rerun.proc.returncode == 0, rerun.describe()
    _check_resumed(store, rerun.stdout(), len(state.complete), reference)


# --------------------------------------------------------------------------- worker kill -9


@pytest.mark.parametrize("seed", [101])
def test_kill_dask_worker_mid_run(seed: int, tmp_path: Path, procs: ProcTracker,
                                  reference: dict[str, str]) -> None:
    """A worker dies mid-task: the nanny restarts it, the task re-runs, the run completes."""
    rng = random.Random(seed)
    store = tmp_path / "atlas.zarr"
    cmd = _cmd(store, "processes")
    run = procs.launch(cmd)
    workers = wait_until(lambda: len(worker_pids(run.pid)) >= 2 and worker_pids(run.pid), 120.0)
    assert workers, f"no Dask workers appeared\n{run.describe()}"
    # Wait for a task to be writing, then kill one worker at a seeded moment.
    assert wait_until(lambda: store_state(store, DOMAINS).groups >= 1 or run.proc.poll() is not None,
                      120.0)
    time.sleep(rng.uniform(0.0, 0.2))
    victim_pid = rng.choice(worker_pids(run.pid) or workers)
    victim = psutil.Process(victim_pid)
    procs.remember([victim])
    before = store_state(store, DOMAINS)
    kill9(victim_pid)
    assert wait_until(lambda: not alive([victim]), 5.0), "killed worker still running"
    print(f"killed worker {victim_pid} with store at {before.summary()}")

    # Track everything the driver starts (the nanny respawns the worker) until it exits.
    seen = {victim.pid: victim}
    end = time.monotonic() + 180
    while run.proc.poll() is None and time.monotonic() < end:
        seen.update({p.pid: p for p in descendants(run.pid)})
        time.sleep(0.2)
    procs.remember(seen.values())
    run.wait(30)
    assert run.proc.returncode == 0, run.describe()
    written, skipped, failed = _summary(run.stdout())
    # A worker killed after committing a sequence but before reporting it makes the retried
    # task find the sequence complete: "skipped", not written twice.
    assert written + skipped == N_TASKS and failed == 0, run.stdout()
    # The driver exited cleanly: nothing it started may outlive it.
    _assert_no_orphans(list(seen.values()), "after a clean finish")

    rerun = procs.run(cmd)
    assert rerun.proc.returncode == 0, rerun.describe()
    _check_resumed(store, rerun.stdout(), N_TASKS, reference)


# --------------------------------------------------------------------------- readers during a crash


def _verify_sequence(s: AtlasStore, d: str, q: str) -> None:
    """Every array of a visible sequence reads back to its committed checksum."""
    assert s.sequence_status(d, q) == "complete"
    info = s.sequence_info(d, q)
    assert info["status"] == "complete"
    assert len(info["arrays"]) == len(info["levels"]) * len(info["fields"])
    for key, rec in info["arrays"].items():
        lvl, f = key.split("/")
        values = s.read(d, q, int(lvl), f)
        assert list(values.shape) == rec["shape"], key
        assert checksum(values) == rec["checksum"], f"{d}/{q}/{key}: checksum mismatch"


# zarr warns when a listing meets the temp file of an atomic write in progress
# ("zarr.<uuid>.partial is not recognized as a component"): expected while a writer runs.
@pytest.mark.filterwarnings("ignore:Object at .*\\.partial is not recognized:UserWarning")
def test_readers_never_see_partial_sequences(tmp_path: Path, procs: ProcTracker,
                                             reference: dict[str, str]) -> None:
    store = tmp_path / "atlas.zarr"
    cmd = _cmd(store, "processes")
    run = procs.launch(cmd)
    verified: set[str] = set()
    seen_max: set[str] = set()
    windows_read = 0
    iterations = 0
    reading_passes = 0
    killed_at: str | None = None
    rerun = None
    deadline = time.monotonic() + 200
    rng = random.Random(7)

    def read_once() -> None:
        nonlocal windows_read
        try:
            s = AtlasStore.open(store)
        except NotAnAtlasStore:
            return  # not created yet
        visible = set()
        for d in s.domains():
            for q in s.sequences(d):
                visible.add(f"{d}/{q}")
                if f"{d}/{q}" not in verified:
                    _verify_sequence(s, d, q)
                    for k, v in s.sequence_info(d, q)["arrays"].items():
                        assert reference[f"{d}/{q}/{k}"] == v["checksum"]
                    verified.add(f"{d}/{q}")
        lost = seen_max - visible
        assert not lost, f"committed sequences disappeared: {sorted(lost)}"
        seen_max.update(visible)
        if not visible:
            return
        nonlocal reading_passes
        reading_passes += 1
        q = Query(s, scale=rng.choice([256, 128, 64]), fields=("energy", "grad_x"), window=2,
                  stride=3)
        wins = q.windows()
        # The query lists the store again: sequences committed since are fine, if complete.
        for key in sorted({f"{w.domain}/{w.sequence_id}" for w in wins} - verified):
            d, sid = key.split("/")
            _verify_sequence(s, d, sid)
            verified.add(key)
        data = q.read_windows(wins)
        assert data["energy"].shape[0] == len(wins)
        assert np.isfinite(data["energy"]).all() and (data["energy"] >= 0).all()
        # spot-check one window against a direct read of the committed arrays
        w = rng.choice(wins)
        i = wins.index(w)
        direct = s.read(w.domain, w.sequence_id, q.scale, "energy", t=slice(w.t0, w.t0 + 2))
        np.testing.assert_array_equal(data["energy"][i], direct)
        windows_read += len(wins)

    while time.monotonic() < deadline:
        read_once()
        iterations += 1
        time.sleep(0.02)  # leave the 2 cores to the writer most of the time
        if killed_at is None:
            st = store_state(store, DOMAINS)
            if st.groups >= 3 and (st.writing or run.proc.poll() is not None):
                victims = descendants(run.pid)
                procs.remember(victims)
                kill9(run.pid)
                run.wait(30)
                killed_at = store_state(store, DOMAINS).summary()
                rerun = procs.launch(cmd)
        elif rerun is not None and rerun.proc.poll() is not None:
            read_once()
            break
    assert rerun is not None and rerun.proc.poll() is not None, "did not finish in time"
    assert rerun.proc.returncode == 0, rerun.describe()
    print(f"reader: {iterations} passes ({reading_passes} with visible sequences), "
          f"{windows_read} windows read, killed at {killed_at}")
    assert verified == set(PLANNED)
    assert checksums(store) == reference
    assert reading_passes >= 5
    with pytest.raises(NotFound):
        AtlasStore.open(store).sequence_info("plasma_physics", "seq-99999")


# --------------------------------------------------------------------------- a crash during cleanup


def test_resume_after_a_crash_during_cleanup(tmp_path: Path, procs: ProcTracker,
                                             reference: dict[str, str]) -> None:
    store = tmp_path / "atlas.zarr"
    generate(store, Plan(domains=DOMAINS, sequences=SEQUENCES, steps=STEPS, seed=RUN_SEED),
             scheduler="serial")
    # What an interrupted delete of plasma_physics/seq-00002 leaves when the group's zarr.json
    # goes before its children: shutil.rmtree follows the directory's listing order (ext4 hash
    # order, seeded per filesystem; other filesystems differ) and fsspec/object stores delete
    # keys in batches in no particular order. Here: 128/ and zarr.json gone, 256/ and 64/ left.
    seq = store / "plasma_physics" / "seq-00002"
    shutil.rmtree(seq / "128")
    (seq / "zarr.json").unlink()
    assert (seq / "256" / "energy" / "zarr.json").exists()

    rerun = procs.run(_cmd(store, "serial"))
    assert rerun.proc.returncode == 0, rerun.describe()
    _check_resumed(store, rerun.stdout(), N_TASKS - 1, reference)


# --------------------------------------------------------------------------- Ctrl-C

CTRL_C_SEQUENCES = 10  # per domain: a run long enough to be interrupted after its first commit
_INTERRUPTED = re.compile(r"^atlas: interrupted: (\d+) of (\d+) sequences of (run-\w+) are "
                          r"complete; run the same command again to resume$")


@pytest.fixture(scope="module")
def ctrl_c_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    path = tmp_path_factory.mktemp("ctrlc-ref") / "ref.zarr"
    plan = Plan(domains=DOMAINS, sequences=CTRL_C_SEQUENCES, steps=STEPS, seed=RUN_SEED)
    assert generate(path, plan, scheduler="serial").written == len(plan.tasks())
    return checksums(path)


@pytest.mark.parametrize("engine", ["processes", "serial"])
def test_ctrl_c_says_what_is_complete_and_the_same_command_resumes(
        engine: str, tmp_path: Path, procs: ProcTracker,
        ctrl_c_reference: dict[str, str]) -> None:
    """Ctrl-C in the terminal (SIGINT to the whole process group, workers included) once the
    first sequence is committed: one line on stderr saying how many are complete and how to
    resume, exit 130, no process left; the same command then completes to the checksums of an
    uninterrupted run."""
    store = tmp_path / "atlas.zarr"
    cmd = generate_cmd(store, DOMAINS, CTRL_C_SEQUENCES, STEPS, seed=RUN_SEED,
                       scheduler=engine,
                       workers=2 if engine == "processes" else None)
    run = procs.launch(cmd)
    assert wait_until(lambda: store_state(store, DOMAINS).complete or run.proc.poll() is not None,
                      180.0), run.describe()
    assert run.proc.poll() is None, f"finished before the first commit was seen\n{run.describe()}"
    victims = descendants(run.pid)
    procs.remember(victims)
    os.killpg(run.pid, signal.SIGINT)  # the launcher made the driver a process-group leader
    assert run.wait(120) == 130, run.describe()
    _assert_no_orphans(victims, f"{engine}: after Ctrl-C")
    lines = run.stderr().strip().splitlines()
    assert len(lines) == 1, run.stderr()[-4000:]
    m = _INTERRUPTED.match(lines[0])
    assert m, lines[0]
    n_complete = int(m.group(1))
    state = store_state(store, DOMAINS)
    assert n_complete == len(state.complete) >= 1 and int(m.group(2)) == len(DOMAINS) * CTRL_C_SEQUENCES
    assert not lock_record(store), "the writer lock must be released"
    print(f"Ctrl-C ({engine}): {lines[0]!r}; on disk {state.summary()}")

    rerun = procs.run(cmd)
    assert rerun.proc.returncode == 0, rerun.describe()
    written, skipped, failed = _summary(rerun.stdout())
    assert (skipped, written + skipped, failed) == (n_complete, len(DOMAINS) * CTRL_C_SEQUENCES, 0)
    assert m.group(3) in rerun.stdout(), "the re-run resumes the same run"
    assert checksums(store) == ctrl_c_reference
    assert audit(AtlasStore.open(store)).ok
