"""Reliability: crashes, corrupted bytes, a full disk, and credentials hygiene.

* **Crash points** (``test_kill9_at_seeded_points_then_resume``): a cheap variant of
  ``test_crash_resume.py`` -- the generator runs the Python API (``scheduler="serial"``, 128x128
  maps) in a child process and is killed with SIGKILL at a point chosen by ``random.Random(seed)``
  for ten recorded seeds, while a reader thread in this process keeps opening the store,
  verifying every visible sequence against an uninterrupted run's checksums and reading query
  windows. Each kill is followed by a re-run that must skip exactly what was complete and end
  bit-identical to the uninterrupted run. Driver kills with the LocalCluster/threads engines, and
  a **Dask worker dying mid-run**, are covered by ``test_crash_resume.py``
  (``test_kill_driver_then_resume``, ``test_kill_dask_worker_mid_run``) and not repeated here.
* **Corruption**: bytes flipped in >= 20 shards per seed, half in the data region of a seeded
  inner chunk and half in the shard index (the index sits at the end of each shard file: 16 bytes
  per inner chunk plus a 4-byte crc32c). ``audit()`` must name exactly the damaged arrays, and
  every read that touches damaged bytes must raise ``CorruptArray`` while every other read
  returns the true values: never garbage.
* **Disk full**: ``ENOSPC`` injected into the store's writes (always), and a real 5 MiB tmpfs
  (when this process may mount one): the run reports the failure, no partial sequence is ever
  visible, and a re-run with space completes bit-identically.
* **Security**: no credentials in tracked files; the test Neo4j listens on loopback only; no
  password in the outputs of failed catalog connections or in what a run writes.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from atlasstore import cli
from atlasstore.audit import audit
from atlasstore.errors import CorruptArray, NotAnAtlasStore
from atlasstore.query import Query
from atlasstore.runs.generate import Plan, generate
from atlasstore.store import AtlasStore, RunLog, checksum
from helpers.catalog_fixtures import REPO, neo4j_settings, open_neo4j_or_skip
from helpers.proc_helpers import (
    ProcTracker,
    checksums,
    kill9,
    leftover_partials,
    lock_record,
    sequence_ids,
    store_state,
    wait_until,
)
from helpers.store_fixtures import copy_store, listing

# --------------------------------------------------------------------------- crash points

CRASH_SEEDS = list(range(10))  # recorded: a failing trial is reproduced by its seed
CRASH_PLAN = Plan(domains=("plasma_physics", "fluid_dynamics"), sequences=5, steps=6,
                  shape=(128, 128), seed=31)
CRASH_DOMAINS = CRASH_PLAN.domains
N_CRASH = len(CRASH_PLAN.tasks())
PLANNED = sorted(f"{t.domain}/{t.sequence_id}" for t in CRASH_PLAN.tasks())
_CHILD = """
import sys
from atlasstore.runs.generate import Plan, generate
plan = Plan(domains=("plasma_physics", "fluid_dynamics"), sequences=5, steps=6, shape=(128, 128), seed=31)
r = generate(sys.argv[1], plan, scheduler="serial")
print(f"written={r.written} skipped={r.skipped} failed={len(r.failures)}", flush=True)
"""


@pytest.fixture(scope="module")
def crash_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    p = tmp_path_factory.mktemp("crashref") / "ref.zarr"
    rep = generate(p, CRASH_PLAN, scheduler="serial")
    assert rep.ok and rep.written == N_CRASH
    ref = checksums(p)
    assert len(ref) == N_CRASH * 6  # 128x128: levels 128, 64 x three fields
    return ref


@pytest.fixture()
def procs(tmp_path: Path):
    tracker = ProcTracker(tmp_path)
    yield tracker
    tracker.cleanup()


class Reader(threading.Thread):
    """Reads the store in a loop while it is written, killed and resumed; records violations."""

    def __init__(self, store: Path, reference: dict[str, str], seed: int) -> None:
        super().__init__(name="atlas-reader", daemon=True)
        self.store, self.reference = store, reference
        self.rng = random.Random(seed)
        self.stop = threading.Event()
        self.errors: list[str] = []
        self.lock_races = 0  # see test_readers_survive_the_writer_lock_being_taken (a known bug)
        self.verified: set[str] = set()
        self.seen: set[str] = set()
        self.passes = 0
        self.windows = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                self.once()
            except json.JSONDecodeError:
                # listing the root reads _lock/zarr.json, which the writer rewrites in place
                self.lock_races += 1
            except Exception as exc:  # noqa: BLE001 - any exception is a finding
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self.stop.wait(0.01)

    def once(self) -> None:
        try:
            s = AtlasStore.open(self.store)
        except NotAnAtlasStore:
            return
        visible = {f"{d}/{q}" for d in s.domains() for q in s.sequences(d)}
        on_disk = store_state(self.store, CRASH_DOMAINS)
        if not visible <= on_disk.complete:
            self.errors.append(f"visible but not complete on disk: {sorted(visible - on_disk.complete)}")
        if self.seen - visible:
            self.errors.append(f"committed sequences disappeared: {sorted(self.seen - visible)}")
        self.seen |= visible
        for key in sorted(visible - self.verified):
            d, q = key.split("/")
            info = s.sequence_info(d, q)
            if info["status"] != "complete" or len(info["arrays"]) != 6:
                self.errors.append(f"{key}: partial sequence visible ({info['status']}, "
                                   f"{len(info['arrays'])} arrays)")
            for akey, rec in info["arrays"].items():
                lvl, f = akey.split("/")
                values = s.read(d, q, int(lvl), f)
                if checksum(values) != rec["checksum"] or rec["checksum"] != self.reference[f"{key}/{akey}"]:
                    self.errors.append(f"{key}/{akey}: values differ from the uninterrupted run")
            self.verified.add(key)
        self.passes += 1
        if visible:
            q = Query(s, scale=self.rng.choice([128, 64]), fields=("energy", "grad_x"), window=2,
                      stride=2, sequences=sorted(visible))
            wins = q.windows()
            data = q.read_windows(wins)
            if not (np.isfinite(data["energy"]).all() and (data["energy"] >= 0).all()):
                self.errors.append("query returned non-finite or negative energy")
            self.windows += len(wins)


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("seed", CRASH_SEEDS)
def test_kill9_at_seeded_points_then_resume(seed: int, tmp_path: Path, procs: ProcTracker,
                                            crash_reference: dict[str, str]) -> None:
    rng = random.Random(seed)
    target = rng.randrange(0, N_CRASH)              # sequence groups on disk before the kill
    delay = rng.uniform(0.2, 1.5) if target == 0 else rng.uniform(0.0, 0.08)
    store = tmp_path / "atlas.zarr"
    reader = Reader(store, crash_reference, seed)
    reader.start()
    try:
        run = procs.launch([sys.executable, "-c", _CHILD, str(store)])
        if target:
            assert wait_until(lambda: store_state(store, CRASH_DOMAINS).groups >= target
                              or run.proc.poll() is not None, 120.0), run.describe()
        time.sleep(delay)
        finished_first = run.proc.poll() is not None
        kill9(run.pid)
        run.wait(30)
        state = store_state(store, CRASH_DOMAINS)
        if (store / "zarr.json").exists():
            s = AtlasStore.open(store)
            assert {f"{d}/{q}" for d in s.domains() for q in s.sequences(d)} == set(state.complete)
        rep = generate(store, CRASH_PLAN, scheduler="serial")  # the re-run (reader still going)
    finally:
        reader.stop.set()
        reader.join(30)
    reader.once()  # a last pass over the finished store
    print(f"RELIABILITY crash seed={seed}: kill at {target} groups + {delay:.2f} s: {state.summary()}"
          f"{' (child had finished)' if finished_first else ''}; re-run wrote {rep.written}, "
          f"skipped {rep.skipped}; reader {reader.passes} passes, {reader.windows} windows, "
          f"{len(reader.errors)} violations, {reader.lock_races} lock-file races; temp files "
          f"left outside sequences: {len(leftover_partials(store))}")
    assert reader.errors == [], reader.errors[:5]
    assert reader.passes >= 3
    assert rep.ok and rep.skipped == len(state.complete) and rep.written + rep.skipped == N_CRASH
    assert sequence_ids(store, include_incomplete=True) == PLANNED  # nothing duplicated or stray
    assert sequence_ids(store, include_incomplete=False) == PLANNED
    assert checksums(store) == crash_reference
    assert audit(AtlasStore.open(store)).ok
    assert not lock_record(store)
    # as in test_crash_resume: a kill can leave zarr's temp file of an atomic metadata write at
    # the root or domain level (harmless, never read); never inside a sequence group
    assert not [p for p in leftover_partials(store) if p.count("/") >= 2 and not p.startswith("_")]
    runs = RunLog(AtlasStore.open(store)).list()
    assert len(runs) == 1 and runs[0]["finished"]
    assert reader.verified == set(PLANNED)


# --------------------------------------------------------------------------- corruption


CORRUPT_PLAN = Plan(domains=("plasma_physics", "fluid_dynamics"), sequences=2, steps=9, seed=41)


@pytest.fixture(scope="module")
def pristine(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """36 arrays (2 domains x 2 sequences x 3 levels x 3 fields), 9 steps: 3 inner chunks per shard."""
    p = tmp_path_factory.mktemp("pristine") / "atlas.zarr"
    assert generate(p, CORRUPT_PLAN, scheduler="serial").written == 4
    return p


def shard_layout(array_dir: Path) -> tuple[Path, int, list[tuple[int, int]], int]:
    """(shard file, index length, [(offset, nbytes)] per inner chunk, steps per inner chunk)."""
    meta = json.loads((array_dir / "zarr.json").read_text())
    shard = meta["codecs"][0]
    assert shard["name"] == "sharding_indexed", shard
    inner = shard["configuration"]["chunk_shape"]
    outer = meta["chunk_grid"]["configuration"]["chunk_shape"]
    n_inner = int(np.prod([o // i for o, i in zip(outer, inner, strict=True)]))
    index_codecs = [c["name"] for c in shard["configuration"]["index_codecs"]]
    assert index_codecs == ["bytes", "crc32c"], index_codecs
    index_len = 16 * n_inner + 4
    files = sorted(p for p in array_dir.glob("c.*") if p.is_file())
    assert len(files) == 1, files
    raw = files[0].read_bytes()
    idx = np.frombuffer(raw[-index_len:-4], dtype="<u8").reshape(n_inner, 2)
    chunks = [(int(o), int(n)) for o, n in idx]
    data_end = len(raw) - index_len
    assert all(0 <= o and o + n <= data_end for o, n in chunks), (chunks, data_end)
    return files[0], index_len, chunks, inner[0]


def flip(path: Path, pos: int, nbytes: int = 1) -> None:
    b = bytearray(path.read_bytes())
    for i in range(pos, min(len(b), pos + nbytes)):
        b[i] ^= 0xFF
    path.write_bytes(bytes(b))


@pytest.mark.parametrize("seed", [0, 1])
def test_flipped_bytes_are_all_found_and_never_read_as_data(seed: int, pristine: Path,
                                                           tmp_path: Path) -> None:
    rng = random.Random(seed)
    loc = copy_store(pristine, tmp_path / "c.zarr")
    ref_store = AtlasStore.open(pristine)
    arrays = sorted(f"{d}/{q}/{k}" for d, q in ref_store.iter_sequences()
                    for k in ref_store.sequence_info(d, q)["arrays"])
    assert len(arrays) == 36
    chosen = rng.sample(arrays, 24)
    damage: dict[str, tuple[str, int | None, int]] = {}  # array -> (where, inner chunk, steps/chunk)
    for i, name in enumerate(chosen):
        f, index_len, chunks, tc = shard_layout(loc / name)
        if i % 2 == 0:  # data region of one inner chunk
            k = rng.randrange(len(chunks))
            off, n = chunks[k]
            flip(f, off + rng.randrange(n), rng.choice([1, 2, 4]))
            damage[name] = ("data", k, tc)
        else:  # the shard index (offsets, sizes or its crc32c)
            flip(f, f.stat().st_size - index_len + rng.randrange(index_len), 1)
            damage[name] = ("index", None, tc)
    store = AtlasStore.open(loc)
    rep = audit(store)
    assert rep.corrupt_arrays() == sorted(chosen), "audit must name exactly the damaged arrays"
    assert len(rep.problems) == len(chosen)
    assert all(p.kind in ("corrupt", "checksum") for p in rep.problems)

    reads = raised = 0
    for name in chosen:
        d, q, lvl, fld = name.split("/")
        lvl = int(lvl)
        n_steps = store.sequence_info(d, q)["n_steps"]
        truth = ref_store.read(d, q, lvl, fld)
        with pytest.raises(CorruptArray, match=re.escape(name)):
            store.read(d, q, lvl, fld)
        with pytest.raises(CorruptArray, match=re.escape(name)):
            Query(store, domains=[d], sequences=[q], scale=lvl, fields=(fld,),
                  window=n_steps).to_numpy()
        where, k, tc = damage[name]
        for t in range(n_steps):  # every single-step read: CorruptArray or the true values
            reads += 1
            bad = where == "index" or t // tc == k
            try:
                got = Query(store, domains=[d], sequences=[q], scale=lvl, fields=(fld,),
                            time_range=(t, t + 1)).to_numpy()[fld][0, 0]
            except CorruptArray:
                raised += 1
                assert bad, f"{name} t={t}: undamaged chunk reported corrupt"
                continue
            assert not bad, f"{name} t={t}: damaged bytes were read as data"
            np.testing.assert_array_equal(got, truth[t])
    # the untouched arrays still read their true values
    for name in sorted(set(arrays) - set(chosen)):
        d, q, lvl, fld = name.split("/")
        np.testing.assert_array_equal(store.read(d, q, int(lvl), fld), ref_store.read(d, q, int(lvl), fld))
    n_index = sum(1 for w, _, _ in damage.values() if w == "index")
    print(f"RELIABILITY corruption seed={seed}: {len(chosen)} shards damaged ({len(chosen) - n_index} "
          f"data, {n_index} index); audit named {len(rep.corrupt_arrays())}/{len(chosen)}; "
          f"{reads} single-step reads: {raised} CorruptArray, {reads - raised} exact, 0 garbage")


# --------------------------------------------------------------------------- disk full

FULL_PLAN = Plan(domains=("plasma_physics", "fluid_dynamics"), sequences=2, steps=3,
                 shape=(64, 64), seed=51)
N_FULL = len(FULL_PLAN.tasks())


@pytest.fixture(scope="module")
def full_reference(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    p = tmp_path_factory.mktemp("fullref") / "ref.zarr"
    assert generate(p, FULL_PLAN, scheduler="serial").written == N_FULL
    return checksums(p)


class Enospc:
    """Make the local store's writes fail with ENOSPC: from write ``after`` on (``stay``: the
    disk stays full) or only that one write (space is freed again). Counted are the writes that
    need space: every ``set``, and ``set_if_not_exists`` of a key that does not exist yet."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, after: int, stay: bool = True) -> None:
        import zarr

        self.after, self.stay, self.n, self.failed = after, stay, 0, []
        self.active = True
        LocalStore = zarr.storage.LocalStore
        orig_set, orig_sine = LocalStore.set, LocalStore.set_if_not_exists

        def charge(key: str) -> None:
            self.n += 1
            if self.n > self.after and (self.stay or self.n == self.after + 1):
                self.failed.append(key)
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), key)

        async def set_(store, key, value, *a, **k):
            if self.active:
                charge(key)
            return await orig_set(store, key, value, *a, **k)

        async def set_if_not_exists(store, key, value, *a, **k):
            if self.active and not await store.exists(key):
                charge(key)
            return await orig_sine(store, key, value, *a, **k)
        monkeypatch.setattr(LocalStore, "set", set_)
        monkeypatch.setattr(LocalStore, "set_if_not_exists", set_if_not_exists)


def _assert_consistent(loc: Path, reference: dict[str, str]) -> list[str]:
    """No partial sequence visible; everything visible reads back to the reference values.
    Returns the problems audit reports (only 'incomplete' ones are acceptable here)."""
    s = AtlasStore.open(loc)
    state = store_state(loc, FULL_PLAN.domains)
    visible = {f"{d}/{q}" for d in s.domains() for q in s.sequences(d)}
    assert visible == set(state.complete)
    for key in visible:
        d, q = key.split("/")
        for akey, rec in s.sequence_info(d, q)["arrays"].items():
            lvl, f = akey.split("/")
            assert checksum(s.read(d, q, int(lvl), f)) == rec["checksum"] == reference[f"{key}/{akey}"]
    rep = audit(s)
    assert {p.kind for p in rep.problems} <= {"incomplete"}, rep.problems
    assert {p.path for p in rep.problems} <= set(state.writing)
    return [p.path for p in rep.problems]


@pytest.mark.parametrize("after", [2, 5, 11, 19, 30])
def test_disk_fills_up_during_a_run_then_rerun_with_space(after: int, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          full_reference: dict[str, str]) -> None:
    loc = tmp_path / "atlas.zarr"
    AtlasStore.create(loc)
    full = Enospc(monkeypatch, after=after, stay=True)
    try:
        rep = generate(loc, FULL_PLAN, scheduler="serial")
        outcome = f"report: {rep.written} written, {len(rep.failures)} failed"
        assert rep.failures and all("No space left" in f.error for f in rep.failures)
    except OSError as exc:  # the run log's final write hit the full disk too
        assert exc.errno == errno.ENOSPC
        outcome = "generate() raised OSError(ENOSPC)"
    full.active = False
    assert full.failed, "the injected disk-full never triggered"
    incomplete = _assert_consistent(loc, full_reference)
    assert not lock_record(loc), "a failed run must release the writer lock"
    rep = generate(loc, FULL_PLAN, scheduler="serial")
    assert rep.ok and rep.written + rep.skipped == N_FULL
    assert checksums(loc) == full_reference
    assert audit(AtlasStore.open(loc)).ok
    assert sequence_ids(loc) == sorted({k.rsplit("/", 2)[0] for k in full_reference})
    print(f"RELIABILITY disk-full after {after} writes: {outcome}; first failed write "
          f"{full.failed[0]}; incomplete groups left: {len(incomplete)}; re-run with space: "
          f"{rep.written} written, {rep.skipped} skipped, checksums == reference")


def test_a_failed_write_leaves_nothing_behind_when_sibling_writes_are_slow(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, full_reference: dict[str, str]) -> None:
    """Regression (``test_disk_fills_up...[19]`` failed under load): zarr writes a node's
    metadata and, in the same ``asyncio.gather``, its parents' (``set_if_not_exists``). When the
    node's write failed, the parents' writes went on in the background; one that found its key
    present before ``write_one``'s cleanup deleted the sequence wrote it again afterwards - an
    empty ``seq-00001`` group that audit reports incomplete, appearing even after
    ``generate()`` had returned. Slow parent writes (a loaded machine) make the race certain."""
    import zarr

    LocalStore = zarr.storage.LocalStore
    orig_set, orig_sine = LocalStore.set, LocalStore.set_if_not_exists
    target = "plasma_physics/seq-00001/64/energy/zarr.json"
    failed: list[str] = []
    in_flight = [0]

    async def set_(store, key, value, *a, **k):
        if key == target and not failed:  # one failing write: the space is there again after
            failed.append(key)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), key)
        return await orig_set(store, key, value, *a, **k)

    async def slow_set_if_not_exists(store, key, value, *a, **k):
        in_flight[0] += 1
        try:
            await asyncio.sleep(0.2)
            return await orig_sine(store, key, value, *a, **k)
        finally:
            in_flight[0] -= 1
    monkeypatch.setattr(LocalStore, "set", set_)
    monkeypatch.setattr(LocalStore, "set_if_not_exists", slow_set_if_not_exists)
    loc = tmp_path / "atlas.zarr"
    rep = generate(loc, FULL_PLAN, scheduler="serial")
    busy_at_return = in_flight[0]
    assert wait_until(lambda: in_flight[0] == 0, 60.0)
    assert failed == [target]
    assert [f"{f.domain}/{f.sequence_id}" for f in rep.failures] == ["plasma_physics/seq-00001"]
    assert busy_at_return == 0, "writes for the failed sequence still ran after generate() returned"
    state = store_state(loc, FULL_PLAN.domains)
    assert (state.writing, state.other) == (frozenset(), frozenset()), state
    assert audit(AtlasStore.open(loc)).problems == []
    monkeypatch.undo()
    rep = generate(loc, FULL_PLAN, scheduler="serial")
    assert (rep.written, rep.skipped) == (1, N_FULL - 1)
    assert checksums(loc) == full_reference


def test_one_failed_write_is_reported_by_the_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str],
                                                 full_reference: dict[str, str]) -> None:
    """ENOSPC on one write only: that sequence fails and is named, the others are written, the
    CLI exits 1; the next run completes it."""
    monkeypatch.delenv("ATLAS_CATALOG", raising=False)
    loc = tmp_path / "atlas.zarr"
    AtlasStore.create(loc)
    argv = ["generate", "--store", str(loc), "--domains", "plasma_physics,fluid_dynamics",
            "--sequences", "2", "--steps", "3", "--seed", "51", "--scheduler", "serial",
            "--no-catalog", "--quiet"]
    # FULL_PLAN has shape (64, 64); the CLI has no --shape, so give its Plan that shape
    import atlasstore.runs.generate as gen_mod

    real_plan = gen_mod.Plan
    monkeypatch.setattr(gen_mod, "Plan", lambda **kw: real_plan(**{**kw, "shape": (64, 64)}))
    full = Enospc(monkeypatch, after=12, stay=False)
    code = cli.main(argv)
    out, err = capsys.readouterr()
    full.active = False
    assert code == 1
    assert "3 sequences written, 0 already complete, 1 failed" in out
    failed = [line for line in err.splitlines() if line.startswith("FAILED ")]
    assert len(failed) == 1 and "No space left on device" in failed[0], err
    assert "Traceback" not in err
    rec = RunLog(AtlasStore.open(loc)).list()[0]
    assert rec["counts"]["failed"] == 1 and len(rec["failures"]) == 1
    _assert_consistent(loc, full_reference)
    assert cli.main(argv) == 0
    assert "1 sequences written, 3 already complete, 0 failed" in capsys.readouterr().out
    assert checksums(loc) == full_reference and audit(AtlasStore.open(loc)).ok


def test_failed_write_leaves_the_store_audit_clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loc = tmp_path / "atlas.zarr"
    AtlasStore.create(loc)
    full = Enospc(monkeypatch, after=12, stay=False)
    rep = generate(loc, FULL_PLAN, scheduler="serial")
    full.active = False
    assert len(rep.failures) == 1
    problems = audit(AtlasStore.open(loc)).problems
    assert problems == [], [(p.kind, p.path) for p in problems]


def test_readers_survive_the_writer_lock_being_taken(tmp_path: Path) -> None:
    from atlasstore.store.writer_lock import WriterLock

    loc = tmp_path / "atlas.zarr"
    AtlasStore.create(loc).create_domain("alpha")
    stop = threading.Event()

    def writer_runs() -> None:  # one lock acquire + release per generation run
        w = AtlasStore.open(loc, mode="r+")
        while not stop.is_set():
            with WriterLock(w, {"run_id": "run-x"}):
                pass
    t = threading.Thread(target=writer_runs, daemon=True)
    t.start()
    errors: list[str] = []
    ok = 0
    try:
        end = time.monotonic() + 1.5
        while time.monotonic() < end:
            try:
                assert AtlasStore.open(loc).domains() == ["alpha"]
                ok += 1
            except Exception as exc:  # noqa: BLE001
                errors.append(f"{type(exc).__name__}: {exc}")
    finally:
        stop.set()
        t.join(10)
    print(f"RELIABILITY lock race: {ok} listings ok, {len(errors)} failed "
          f"({sorted(set(errors))[:2]})")
    assert errors == []


def test_cli_reports_a_disk_full_run_with_its_summary(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    import atlasstore.runs.generate as gen_mod

    monkeypatch.delenv("ATLAS_CATALOG", raising=False)
    real_plan = gen_mod.Plan
    monkeypatch.setattr(gen_mod, "Plan", lambda **kw: real_plan(**{**kw, "shape": (64, 64)}))
    loc = tmp_path / "atlas.zarr"
    AtlasStore.create(loc)
    Enospc(monkeypatch, after=19, stay=True)
    code = cli.main(["generate", "--store", str(loc), "--domains", "plasma_physics,fluid_dynamics",
                     "--sequences", "2", "--steps", "3", "--seed", "51", "--scheduler", "serial",
                     "--no-catalog", "--quiet"])
    out, err = capsys.readouterr()
    assert code == 1
    assert "sequences written" in out, (out, err)
    assert "FAILED " in err and "No space left on device" in err
    assert "internal error" not in err


def _try_mount_tmpfs(where: Path, size: str) -> bool:
    if not sys.platform.startswith("linux") or os.geteuid() != 0 or not shutil.which("mount"):
        return False
    where.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(where)],
                       capture_output=True, text=True, timeout=30)
    return r.returncode == 0


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_real_full_tmpfs_then_rerun_with_space(tmp_path: Path, procs: ProcTracker) -> None:
    mnt = tmp_path / "small"
    if not _try_mount_tmpfs(mnt, "5m"):
        pytest.skip("cannot mount a tmpfs here (needs root and CAP_SYS_ADMIN); the ENOSPC "
                    "injection tests cover the logic")
    try:
        loc = mnt / "atlas.zarr"
        cmd = [sys.executable, "-m", "atlasstore.cli", "generate", "--store", str(loc),
               "--domains", "plasma_physics", "--sequences", "6", "--steps", "2", "--seed", "61",
               "--scheduler", "serial", "--no-catalog", "--quiet"]
        first = procs.run(cmd, timeout=120)
        err = first.stderr()
        assert first.proc.returncode == 1, first.describe()
        assert "No space left on device" in err and "Traceback" not in err
        s = AtlasStore.open(loc)
        state = store_state(loc, ["plasma_physics"])
        visible = set(f"plasma_physics/{q}" for q in s.sequences("plasma_physics"))
        assert visible == set(state.complete)
        for q in s.sequences("plasma_physics"):
            for akey in s.sequence_info("plasma_physics", q)["arrays"]:
                lvl, f = akey.split("/")
                s.verify_array("plasma_physics", q, int(lvl), f)
        assert not lock_record(loc)
        r = subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], capture_output=True,
                           text=True, timeout=30)
        assert r.returncode == 0, r.stderr
        second = procs.run(cmd, timeout=120)
        assert second.proc.returncode == 0, second.describe()
        assert audit(AtlasStore.open(loc)).ok
        ref = tmp_path / "ref.zarr"
        generate(ref, Plan(domains=("plasma_physics",), sequences=6, steps=2, seed=61), scheduler="serial")
        assert checksums(loc) == checksums(ref)
        print(f"RELIABILITY tmpfs 5 MiB: first run exit 1 with {len(state.complete)} complete, "
              f"{len(state.writing)} half-written (invisible), last stderr line: "
              f"{err.strip().splitlines()[-1][:120]!r}; after remount to 64 MiB the re-run exit 0, "
              f"audit OK, checksums == reference")
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True, timeout=30)


# --------------------------------------------------------------------------- security


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, timeout=30,
                             check=True).stdout
    except (OSError, subprocess.SubprocessError):
        pytest.skip("not a git checkout")
    return [REPO / p for p in out.decode().split("\0") if p and (REPO / p).is_file()]


# Built from pieces so that this file does not match itself.
_PATTERNS = {
    "private key": re.compile("-----BEGIN [A-Z ]*" + "PRIVATE KEY-----"),
    "NEO4J_AUTH literal": re.compile(r"NEO4J_AUTH\s*[=:]\s*['\"]?neo4j/(?![<$%{])(\S+)"),
    "NEO4J_PASSWORD literal": re.compile(r"NEO4J_PASSWORD['\"]?\s*[=:,]\s*(['\"])(?![<$%{])[^'\"\s]{4,}\1"),
    "password assignment": re.compile(r"(?i)\bpass(?:word|wd)\b\s*[=:]\s*['\"](?![<$%{])[^'\"\s]{6,}['\"]"),
    "AWS key": re.compile("AKIA" + "[0-9A-Z]{16}"),
    # shell / env-file assignments (not Python, where NAME=expr is a keyword argument)
    "NEO4J_PASSWORD shell literal": re.compile(
        r"(?m)^\s*(?:export\s+)?(?:ATLAS_)?NEO4J_PASSWORD=(?![$'\"<%{])\S{4,}"),
    "token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{30,}|xox[baprs]-[A-Za-z0-9-]{10,})"),
}


#: Deliberately fake passwords that tests pass to unreachable servers to prove scrubbing.
FAKE_TEST_SECRETS = {"s3cret-pw-xyz", "s3cret-Pa55word-never-printed"}


def _known_secrets() -> set[str]:
    """The real passwords of this machine's Neo4j servers (env and generated auth files)."""
    found = {os.environ.get("NEO4J_PASSWORD", ""), os.environ.get("ATLAS_NEO4J_PASSWORD", ""),
             os.environ.get("NEO4J_AUTH", "").removeprefix("neo4j/")}
    homes = [os.environ.get("ATLAS_NEO4J_HOME", "")]
    cache = Path.home() / ".cache" / "atlasstore"
    if cache.is_dir():
        homes += [str(p) for p in cache.iterdir()]
    for h in homes:
        if h:
            try:
                found.add((Path(h) / "auth").read_text().strip())
            except OSError:
                pass
    return {s for s in found if len(s) >= 8 and s != "none"}


def test_no_credentials_in_tracked_files() -> None:
    files = _tracked_files()
    assert len(files) > 20
    secrets = _known_secrets()
    hits = []
    for f in files:
        rel = f.relative_to(REPO)
        if rel.name in ("auth", "id_rsa", "id_ed25519") or rel.suffix in (".pem", ".key", ".p12"):
            hits.append(f"{rel}: a credentials file is tracked")
        try:
            text = f.read_text(errors="replace")
        except OSError:
            continue
        for what, rx in _PATTERNS.items():
            if what.endswith("shell literal") and rel.suffix == ".py":
                continue
            for m in rx.finditer(text):
                if rel.parts[0] == "tests" and any(f in m.group(0) for f in FAKE_TEST_SECRETS):
                    continue
                hits.append(f"{rel}: {what}: {m.group(0)[:60]!r}")
        for s in secrets:
            if s in text:
                hits.append(f"{rel}: contains a real Neo4j password of this machine")
    assert hits == []


def _listening(port: int) -> list[tuple[str, int]]:
    """(local address, socket inode) of LISTEN sockets on ``port`` from /proc/net/tcp{,6}."""
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            cols = line.split()
            addr, p = cols[1].rsplit(":", 1)
            if int(p, 16) == port and cols[3] == "0A":
                out.append((_decode_addr(addr), int(cols[9])))
    return out


def _decode_addr(hexaddr: str) -> str:
    raw = bytes.fromhex(hexaddr)
    if len(raw) == 4:
        return socket.inet_ntop(socket.AF_INET, raw[::-1])
    words = b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
    return socket.inet_ntop(socket.AF_INET6, words)


def _is_loopback(addr: str) -> bool:
    return addr.startswith("127.") or addr in ("::1", "::ffff:127.0.0.1") or addr.startswith("::ffff:127.")


def _owner_cmdline(inode: int) -> str | None:
    for pid_dir in Path("/proc").iterdir():
        if not pid_dir.name.isdigit():
            continue
        try:
            for fd in (pid_dir / "fd").iterdir():
                if os.readlink(fd) == f"socket:[{inode}]":
                    return (pid_dir / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
    return None


def test_scripts_neo4j_writes_a_loopback_only_config() -> None:
    src = (REPO / "scripts" / "neo4j").read_text()
    assert re.search(r"^HOST=127\.0\.0\.1$", src, re.M)
    assert "server.default_listen_address=$HOST" in src
    for line in src.splitlines():
        if "listen_address=" in line:
            assert re.search(r"listen_address=(\$HOST|:\$\{?\w+\}?|127\.0\.0\.1)", line), line
    assert "0.0.0.0" not in src
    assert "server.bolt.tls_level=DISABLED" in src  # plain Bolt: acceptable only on loopback


@pytest.mark.neo4j
def test_running_test_server_listens_on_loopback_only() -> None:
    cat = open_neo4j_or_skip()  # skips (or fails under ATLAS_REQUIRE_NEO4J=1) without a server
    cat.close()
    uri = neo4j_settings()["uri"]
    m = re.match(r"^[a-z+]+://([^:/]+):(\d+)", uri)
    assert m, uri
    port = int(m.group(2))
    socks = _listening(port)
    if not socks:
        pytest.skip(f"{uri} is not served from this machine's network namespace")
    assert all(_is_loopback(a) for a, _ in socks), f"Bolt port {port} bound to {socks}"
    cmd = _owner_cmdline(socks[0][1])
    if cmd and "--config-dir=" in cmd:
        conf = Path(re.search(r"--config-dir=(\S+)", cmd).group(1)) / "neo4j.conf"
        text = conf.read_text()
        assert "server.default_listen_address=127.0.0.1" in text
        assert "0.0.0.0" not in text
        for line in text.splitlines():
            if "listen_address=" in line and not line.startswith("#"):
                value = line.split("=", 1)[1]
                assert value.startswith(":") or value.startswith("127.0.0.1"), line
        # nothing else of that server (HTTP, HTTPS) listens on a public address
        pid_socks = [a for p in _ports_of(cmd) for a, _ in _listening(p)]
        assert all(_is_loopback(a) for a in pid_socks), pid_socks
    print(f"RELIABILITY loopback: {uri} listens on {sorted({a for a, _ in socks})}")


def _ports_of(cmd: str) -> list[int]:
    ports = []
    conf = Path(re.search(r"--config-dir=(\S+)", cmd).group(1)) / "neo4j.conf"
    for line in conf.read_text().splitlines():
        m = re.match(r"^server\.(?:bolt|http|https)\.listen_address=.*:(\d+)$", line)
        if m:
            ports.append(int(m.group(1)))
    return ports


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.neo4j
def test_wrong_password_never_printed_and_nothing_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    cat = open_neo4j_or_skip()
    cat.close()
    s = neo4j_settings()
    if not s["password"]:
        pytest.skip("the test server runs without authentication")
    wrong = "Wr0ng-" + os.urandom(8).hex()
    monkeypatch.delenv("ATLAS_CATALOG", raising=False)
    monkeypatch.setenv("NEO4J_URI", s["uri"])
    monkeypatch.setenv("NEO4J_USER", s["user"])
    monkeypatch.setenv("NEO4J_PASSWORD", wrong)
    loc = tmp_path / "atlas.zarr"
    AtlasStore.create(loc)
    before = listing(tmp_path)
    gen = ["--domains", "plasma_physics", "--sequences", "1", "--steps", "2", "--scheduler", "serial",
           "--quiet", "--catalog", "neo4j"]
    # Neo4j locks a user out for 5 s after 3 failed logins in a row (and then refuses even the
    # right password): one wrong login for the real user, the other commands as unknown users.
    for i, argv in enumerate((["generate", "--store", str(loc), *gen],
                              ["catalog", "sync", "--store", str(loc), "--catalog", "neo4j"],
                              ["audit", "--store", str(loc), "--catalog", "neo4j"],
                              ["catalog", "lineage", "x", "--store", str(loc), "--catalog", "neo4j"])):
        if i:
            monkeypatch.setenv("NEO4J_USER", f"atlas-nobody-{i}-{os.urandom(4).hex()}")
        code, out, err = _cli(capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("atlas: error: "), err
        assert s["uri"] in lines[0] and "authentication failed" in lines[0], lines[0]
        assert wrong not in out + err and s["password"] not in out + err
    assert listing(tmp_path) == before
    # --debug shows a traceback: still no password in it
    env = {**os.environ, "NEO4J_URI": s["uri"], "NEO4J_USER": f"atlas-nobody-{os.urandom(4).hex()}",
           "NEO4J_PASSWORD": wrong}
    env.pop("ATLAS_CATALOG", None)
    r = subprocess.run([sys.executable, "-m", "atlasstore.cli", "--debug", "generate",
                        "--store", str(loc), *gen], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode != 0 and "authentication failed" in r.stderr
    assert wrong not in r.stdout + r.stderr and s["password"] not in r.stdout + r.stderr
    assert listing(tmp_path) == before
    # the server's own logs do not record either password
    logs = _server_logs(s["uri"])
    for f in logs:
        text = f.read_bytes().decode("latin-1")
        assert wrong not in text and s["password"] not in text, f
    print(f"RELIABILITY secrets: 5 failed logins (CLI one-line errors, --debug traceback, "
          f"{len(logs)} server log files): no password found")


def _server_logs(uri: str) -> list[Path]:
    """Log files of the server behind ``uri`` when it runs on this machine (else [])."""
    m = re.match(r"^[a-z+]+://[^:/]+:(\d+)", uri)
    socks = _listening(int(m.group(1))) if m else []
    cmd = _owner_cmdline(socks[0][1]) if socks else None
    if not cmd or "--config-dir=" not in cmd:
        return []
    conf = Path(re.search(r"--config-dir=(\S+)", cmd).group(1)) / "neo4j.conf"
    logdir = next((Path(line.split("=", 1)[1]) for line in conf.read_text().splitlines()
                   if line.startswith("server.directories.logs=")), None)
    return sorted(p for p in logdir.rglob("*") if p.is_file()) if logdir and logdir.is_dir() else []


@pytest.mark.neo4j
def test_password_is_not_written_by_a_catalogued_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    cat = open_neo4j_or_skip()
    cat.close()
    s = neo4j_settings()
    if not s["password"]:
        pytest.skip("the test server runs without authentication")
    monkeypatch.delenv("ATLAS_CATALOG", raising=False)
    monkeypatch.setenv("NEO4J_URI", s["uri"])
    monkeypatch.setenv("NEO4J_USER", s["user"])
    monkeypatch.setenv("NEO4J_PASSWORD", s["password"])
    loc = tmp_path / "atlas.zarr"
    code, out, err = _cli(capsys, "generate", "--store", str(loc), "--domains", "plasma_physics",
                          "--sequences", "1", "--steps", "2", "--scheduler", "serial", "--quiet",
                          "--catalog", "neo4j")
    assert code == 0, err
    code, out2, err2 = _cli(capsys, "catalog", "lineage", "plasma_physics/seq-00000", "--json",
                            "--store", str(loc), "--catalog", "neo4j")
    assert code == 0, err2
    blob = out + err + out2 + err2
    for f in tmp_path.rglob("*"):
        if f.is_file():
            blob += f.read_bytes().decode("latin-1")
    assert s["password"] not in blob
    assert "NEO4J_PASSWORD" not in blob
