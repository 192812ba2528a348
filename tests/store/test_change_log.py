"""The store's change log (``atlasstore.store.change_log``): one entry per change, dense, claimed before
the change is visible; concurrent writers (real processes) never lose or share an entry; a
writer killed between its intent and its commit leaves a change a catalog detects and repairs.
"""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest

from atlasstore.catalog import SQLiteCatalog
from atlasstore.catalog.selector import CatalogSelector, catalog_view
from atlasstore.catalog.sync import catch_up, sync_catalog
from atlasstore.errors import ChangeLogError
from atlasstore.query import Query, StoreSelector
from atlasstore.store import AtlasStore, RunLog, change_log
from atlasstore.store.change_log import ChangeLog, entry_key, logs_whole_history, store_id
from helpers.proc_helpers import ProcTracker, wait_until
from helpers.store_fixtures import energy_sequence


def ops(store: AtlasStore, start: int = 0) -> list[tuple[int, str, str | None]]:
    return [(c.n, c.op, c.key or c.run_id) for c in ChangeLog(store).read(start)]


def windows(store: AtlasStore, selector: Any, **kw: Any) -> list[tuple[str, str, int]]:
    q = Query(store, selector=selector, **{"scale": 64, **kw})
    return [(w.domain, w.sequence_id, w.t0) for w in q.windows()]


@pytest.fixture
def store(tmp_path: Path) -> AtlasStore:
    s = AtlasStore.create(tmp_path / "a.zarr")
    s.create_domain("d")
    return s


@pytest.fixture
def tracker(tmp_path: Path):
    t = ProcTracker(tmp_path)
    yield t
    t.cleanup()


# --------------------------------------------------------------------------- entries


def test_every_change_is_one_entry_in_order(store: AtlasStore) -> None:
    store.write_sequence("d", "a", energy_sequence(2))
    store.write_sequence("d", "a", energy_sequence(2, seed=1), overwrite=True)
    store.delete_sequence("d", "a")
    store.delete_sequence("d", "a")  # nothing left to delete: no change, no entry
    store.write_sequence("d", "b", energy_sequence(2))
    run = {"run_id": "run-0123456789abcdef", "config": {"domains": [], "sequences": 0, "seed": 0,
                                                        "presets": {}},
           "config_hash": "0" * 64, "seed": 0, "code_version": "x", "host": "h",
           "started": "2026-01-01T00:00:00+00:00", "finished": None, "counts": {}}
    RunLog(store).start(run)
    RunLog(store).finish({**run, "finished": "2026-01-01T00:01:00+00:00"}, [])
    # an overwrite deletes the old version under its own entry before the write's entry
    assert ops(store) == [(0, "write", "d/a"), (1, "delete", "d/a"), (2, "write", "d/a"),
                          (3, "delete", "d/a"), (4, "write", "d/b"),
                          (5, "run", "run-0123456789abcdef"), (6, "run", "run-0123456789abcdef")]
    assert ChangeLog(store).head() == 7
    assert ops(store, 5) == ops(store)[5:]
    assert [c.n for c in ChangeLog(store).read(2, limit=2)] == [2, 3]
    assert ChangeLog(store).read(7) == []


def test_the_log_is_a_group_plain_tools_skip(store: AtlasStore) -> None:
    """``_log`` is a Zarr group (no stray folder at the root), is no domain, and its entries
    never appear through xarray's tree of the store."""
    import xarray as xr

    store.write_sequence("d", "a", energy_sequence(2))
    root = Path(store.location)
    assert json.loads((root / "_log" / "zarr.json").read_text())["node_type"] == "group"
    assert (root / entry_key(0)).is_file()
    assert store.domains() == ["d"]
    tree = xr.open_datatree(str(root), engine="zarr", consolidated=False)
    try:
        assert list(tree["_log"].children) == [] and list(tree["_log"].data_vars) == []
    finally:
        tree.close()


def test_head_is_found_from_any_hint(store: AtlasStore) -> None:
    """The head search gallops from the last head this process saw; with no hint (another
    process) or a stale one it still lands on the first free number."""
    for i in range(11):
        store.write_sequence("d", f"s{i}", energy_sequence(1))
    key = ChangeLog(store)._cache_key
    for hint in (0, 1, 5, 10, 11):
        change_log._heads[key] = hint
        assert ChangeLog(store).head() == 11, hint
    change_log._heads.pop(key)
    store.write_sequence("d", "s11", energy_sequence(1))  # claims 11 with no hint at all
    assert [c.n for c in ChangeLog(store).read(0)] == list(range(12))


def test_a_damaged_entry_is_a_clear_error(store: AtlasStore) -> None:
    store.write_sequence("d", "a", energy_sequence(1))
    (Path(store.location) / entry_key(0)).write_text("{not json")
    with pytest.raises(ChangeLogError, match=r"_log/entries/0000000000000000\.json is damaged"):
        ChangeLog(store).read(0)


def test_bad_changes_are_refused(store: AtlasStore) -> None:
    log = ChangeLog(store)
    for args in (("rename", "d", "a"), ("write", "d", None), ("run", "d", "a")):
        with pytest.raises(ValueError):
            log.record(*args)
    assert log.head() == 0


def test_store_identity(tmp_path: Path, store: AtlasStore) -> None:
    """New stores carry a random store_id; a store from before it gets a stable derived one."""
    sid = store_id(store)
    assert len(sid) == 36 and logs_whole_history(store)
    assert store_id(AtlasStore.open(store.location)) == sid
    assert store_id(AtlasStore.create(tmp_path / "other.zarr")) != sid
    old = tmp_path / "old.zarr"
    AtlasStore.create(old)
    doc = json.loads((old / "zarr.json").read_text())
    del doc["attributes"]["atlasstore"]["store_id"]
    (old / "zarr.json").write_text(json.dumps(doc))
    legacy = AtlasStore.open(old)
    assert not logs_whole_history(legacy)
    assert store_id(legacy) == store_id(AtlasStore.open(old)) != sid


# --------------------------------------------------------------------------- real processes

WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from atlasstore.store import AtlasStore
    loc, name, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4])
    store = AtlasStore.open(loc, mode="r+")
    while not go.exists():
        time.sleep(0.005)
    for j in range(n):
        e = np.full((1, 64, 64), 1.0 + j, np.float32)
        store.write_sequence("d", f"{name}-{j}", e)
""")


@pytest.mark.slow
def test_concurrent_writers_never_lose_or_share_an_entry(store: AtlasStore, tmp_path: Path,
                                                         tracker: ProcTracker) -> None:
    """Four processes commit 6 sequences each at the same moment: 24 write entries, numbered
    0..23 without a gap or a duplicate, one per sequence; a catalog catching up then answers
    exactly like the store scan."""
    cat = SQLiteCatalog(tmp_path / "c.db")
    sync_catalog(store, cat)
    script = tmp_path / "writer.py"
    script.write_text(WRITER)
    go = tmp_path / "go"
    runs = [tracker.launch([sys.executable, str(script), store.location, f"w{i}", "6", str(go)])
            for i in range(4)]
    go.touch()
    for r in runs:
        assert r.wait(240) == 0, r.describe()
    entries = ChangeLog(store).read(0)
    assert [c.n for c in entries] == list(range(24))
    assert {c.op for c in entries} == {"write"}
    assert sorted(c.key for c in entries) == sorted(f"d/w{i}-{j}" for i in range(4) for j in range(6))
    assert not list((Path(store.location) / "_log" / "entries").glob("*.partial"))
    res = catch_up(store, cat)
    assert (res.applied, res.pending, res.position) == (24, 0, 24)
    assert windows(store, CatalogSelector(cat)) == windows(store, StoreSelector())
    assert cat.count() == 24


BLOCKED_WRITER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    import numpy as np
    from atlasstore.store.change_log import ChangeLog
    from atlasstore.store import AtlasStore
    loc, seq, gate = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    store = AtlasStore.open(loc, mode="r+")
    record = ChangeLog.record
    def blocked(self, op, *a, **k):  # after the intent and the "writing" document, before the commit
        out = record(self, op, *a, **k)
        if op == "write":
            gate.with_suffix(".waiting").touch()
            while not gate.exists():
                time.sleep(0.01)
        return out
    ChangeLog.record = blocked
    store.write_sequence("d", seq, np.full((3, 64, 64), 2.0, np.float32), overwrite=True)
""")


def _blocked_writer(tracker: ProcTracker, tmp_path: Path, store: AtlasStore, seq: str) -> tuple[Any, Path]:
    script = tmp_path / "blocked.py"
    script.write_text(BLOCKED_WRITER)
    gate = tmp_path / f"gate-{seq}"
    run = tracker.launch([sys.executable, str(script), store.location, seq, str(gate)])
    assert wait_until(lambda: gate.with_suffix(".waiting").exists() or run.proc.poll() is not None,
                      120), run.describe()
    assert run.proc.poll() is None, run.describe()
    return run, gate


@pytest.mark.slow
def test_a_change_in_flight_is_pending_until_its_commit(store: AtlasStore, tmp_path: Path,
                                                        tracker: ProcTracker) -> None:
    """A catalog that catches up between a writer's intent and its commit keeps the change
    pending; the commit (which writes no further entry) is then found by the next check."""
    store.write_sequence("d", "old", energy_sequence(3))
    cat = SQLiteCatalog(tmp_path / "c.db")
    sync_catalog(store, cat)
    run, gate = _blocked_writer(tracker, tmp_path, store, "new")
    assert store.sequence_status("d", "new") == "writing"
    res = catch_up(store, cat)
    assert res.applied == 1 and res.pending == 1 and cat.store_sync().pending == {"d/new": "write"}
    assert cat.get_sequence("d/new") is None
    scan = windows(store, StoreSelector(), window=2)
    assert windows(store, CatalogSelector(cat), window=2) == scan
    gate.touch()
    assert run.wait(120) == 0, run.describe()
    fresh = AtlasStore.open(store.location)
    assert ChangeLog(fresh).head() == res.position  # the commit itself logged nothing more
    sel = CatalogSelector(cat)
    got = windows(fresh, sel, window=2)
    assert got == windows(fresh, StoreSelector(), window=2) != scan
    assert ("d", "new", 0) in got and sel.view.mode == "refreshed"
    assert cat.store_sync().pending == {} and cat.get_sequence("d/new") is not None


@pytest.mark.slow
def test_kill_9_between_intent_and_commit_is_detected_and_repaired(store: AtlasStore,
                                                                   tmp_path: Path,
                                                                   tracker: ProcTracker) -> None:
    """A writer killed after its intent (its overwrite of a committed sequence half done):
    the catalog never answers with the old data nor with nothing-changed; the change stays
    pending (read from the store) until a new write completes the sequence."""
    store.write_sequence("d", "s", energy_sequence(3))
    cat = SQLiteCatalog(tmp_path / "c.db")
    sync_catalog(store, cat)
    assert cat.get_sequence("d/s") is not None
    run, _gate = _blocked_writer(tracker, tmp_path, store, "s")
    tracker.kill_tree(run)
    assert run.proc.returncode == -9
    fresh = AtlasStore.open(store.location, mode="r+")
    assert fresh.sequence_status("d", "s") == "writing"
    assert [c.op for c in ChangeLog(fresh).read(0)][-2:] == ["delete", "write"]
    # a read-only look first: the changed sequence comes from the store, not the catalog
    view = catalog_view(fresh, cat, refresh=False)
    assert view.mode == "overlay" and view.scan_keys == {"d/s"}
    assert windows(fresh, CatalogSelector(cat, refresh=False)) == windows(fresh, StoreSelector()) == []
    res = catch_up(fresh, cat)
    assert res.pending == 1 and cat.get_sequence("d/s") is None
    for _ in range(2):  # stays pending (one read per check) while the sequence is half-written
        assert catch_up(fresh, cat).pending == 1
        assert windows(fresh, CatalogSelector(cat)) == []
    fresh.write_sequence("d", "s", energy_sequence(2, seed=5))  # the repair: a complete rewrite
    sel = CatalogSelector(cat)
    assert windows(fresh, sel) == windows(fresh, StoreSelector()) == [("d", "s", 0), ("d", "s", 1)]
    assert cat.store_sync().pending == {}
    assert cat.get_sequence("d/s").n_steps == 2


@pytest.mark.slow
def test_kill_9_between_delete_intent_and_delete(store: AtlasStore, tmp_path: Path,
                                                 tracker: ProcTracker) -> None:
    """A delete logged but never done: the sequence still exists, so the catalog keeps it
    (pending), and drops it once a delete completes."""
    store.write_sequence("d", "s", energy_sequence(2))
    cat = SQLiteCatalog(tmp_path / "c.db")
    sync_catalog(store, cat)
    script = tmp_path / "del.py"
    script.write_text(textwrap.dedent("""
        import os, signal, sys
        from atlasstore.store.change_log import ChangeLog
        from atlasstore.store import AtlasStore
        store = AtlasStore.open(sys.argv[1], mode="r+")
        record = ChangeLog.record
        def then_die(self, *a, **k):
            n = record(self, *a, **k)
            os.kill(os.getpid(), signal.SIGKILL)  # the intent is written; the delete never runs
            return n
        ChangeLog.record = then_die
        store.delete_sequence("d", "s")
    """))
    r = tracker.run([sys.executable, str(script), store.location])
    assert r.proc.returncode == -9, r.describe()
    fresh = AtlasStore.open(store.location, mode="r+")
    assert fresh.sequence_status("d", "s") == "complete"
    res = catch_up(fresh, cat)
    assert res.pending == 1 and cat.get_sequence("d/s") is not None
    assert windows(fresh, CatalogSelector(cat)) == windows(fresh, StoreSelector()) != []
    fresh.delete_sequence("d", "s")
    assert windows(fresh, CatalogSelector(cat)) == [] and cat.store_sync().pending == {}
