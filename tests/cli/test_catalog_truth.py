"""One catalog truth: whoever writes a sequence, a query answers the same with the catalog as by
scanning the store; the catalog learns of every change through the store's change log.

The users' reports this fixes are pinned through ``atlasstore.cli.main`` (each failed on the old
code), then every write path x catalog state is compared with the store scan on both backends,
then random sequences of writes and deletes (hypothesis), then the costs of the staleness check.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zarr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlasstore.catalog import SQLiteCatalog
from atlasstore.catalog.selector import CatalogSelector, catalog_view
from atlasstore.catalog.sync import catch_up, sync_catalog
from atlasstore.compat import EnergyAtlasLoader
from atlasstore.errors import CatalogMismatch, NotFound, QueryError
from atlasstore.query import Query, StoreSelector
from atlasstore.runs.generate import Plan, generate
from atlasstore.store import AtlasStore, RunLog
from atlasstore.store.change_log import entry_key
from helpers.catalog_fixtures import (
    open_neo4j_or_skip,
)
from helpers.cli_runner import run_captured as run  # atlas in-process (conftest: no ATLAS_*)
from helpers.store_fixtures import energy_sequence


@pytest.fixture(params=["sqlite", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def cat_cli(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[list[str], Any]]:
    """(the ``--catalog`` arguments of a CLI call, the catalog to inspect it by): the default
    SQLite file beside ``tmp_path/atlas.zarr``, or the Neo4j test server (wiped)."""
    if request.param == "sqlite":
        yield [], None
    else:
        cat = open_neo4j_or_skip()
        try:
            yield ["--catalog", "neo4j"], cat
        finally:
            cat.close()


def _inspect(cat: Any, tmp_path: Path) -> Any:
    return cat if cat is not None else SQLiteCatalog(tmp_path / "atlas.catalog.sqlite")


def windows(store: AtlasStore, selector: Any, **kw: Any) -> list[tuple[str, str, int, int]]:
    q = Query(store, selector=selector, **kw)
    return [(w.domain, w.sequence_id, w.t0, w.length) for w in q.windows()]


SMALL = ["--sequences", "2", "--steps", "3", "--scheduler", "serial", "--quiet", "--seed", "3"]


def answer(store: AtlasStore, selector: Any, **kw: Any) -> Any:
    """The windows, or the kind of error (both selectors must fail alike)."""
    try:
        return windows(store, selector, **kw)
    except (NotFound, QueryError) as exc:
        return type(exc).__name__


# --------------------------------------------------------------------------- the users' reports


def test_api_sequences_are_queried_synced_audited_and_have_lineage(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], cat_cli: tuple[list[str], Any]) -> None:
    """The report: after ``write_sequence`` the catalog-backed ``atlas query --count`` printed 0
    where ``Query(...).count()`` gave 13, ``catalog sync`` registered none of it, ``audit`` saw
    no drift and ``catalog lineage`` knew no such node."""
    C, cat = cat_cli
    S = ["--store", str(tmp_path / "atlas.zarr")]
    code, _, err = run(capsys, "generate", *S, *C, "--domains", "plasma_physics", *SMALL)
    assert code == 0, err
    store = AtlasStore.open(tmp_path / "atlas.zarr", mode="r+")
    store.create_domain("mylab")
    store.write_sequence("mylab", "run0", energy_sequence(16, 128, 128))
    assert Query(store, domains=["mylab"], scale=128, window=4).count() == 13
    q = ["query", *S, *C, "--domains", "mylab", "--scale", "128", "--window", "4"]
    code, out, err = run(capsys, *q, "--count")
    assert (code, out.strip()) == (0, "13"), err
    code, out, _ = run(capsys, *q, "--count", "--no-catalog")
    assert (code, out.strip()) == (0, "13")
    code, out, err = run(capsys, "catalog", "lineage", *S, *C, "mylab/run0/64/grad_x")
    assert code == 0, err
    assert "Sequence:mylab/run0 kind=api" in out and "Run:" not in out
    store.write_sequence("mylab", "run1", energy_sequence(4, 128, 128))
    code, out, err = run(capsys, "audit", *S, *C, "--quick")
    assert code == 0, err
    assert "catalog: applied 1 store change(s) since its last sync" in out
    code, out, err = run(capsys, "catalog", "sync", *S, *C)
    assert code == 0 and "4 sequences registered" in out, (out, err)
    assert sorted(_inspect(cat, tmp_path).sequence_keys()) == [
        "mylab/run0", "mylab/run1", "plasma_physics/seq-00000", "plasma_physics/seq-00001"]


def test_delete_sequence_counts_and_out_are_right(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], cat_cli: tuple[list[str], Any]) -> None:
    """The report: after ``delete_sequence`` ``atlas query --count`` said 16 windows where 8
    existed, and ``--out`` failed with "unknown sequence"."""
    C, _ = cat_cli
    S = ["--store", str(tmp_path / "atlas.zarr")]
    code, _, err = run(capsys, "generate", *S, *C, "--domains", "plasma_physics",
                       "--sequences", "2", "--steps", "9", "--scheduler", "serial", "--quiet",
                       "--scales", "256,64")
    assert code == 0, err
    q = ["query", *S, *C, "--scale", "64", "--window", "2"]
    assert run(capsys, *q, "--count")[1].strip() == "16"
    AtlasStore.open(tmp_path / "atlas.zarr", mode="r+").delete_sequence("plasma_physics", "seq-00000")
    assert run(capsys, *q, "--count")[1].strip() == "8"
    out_file = tmp_path / "w.npz"
    code, out, err = run(capsys, *q, "--out", str(out_file))
    assert code == 0, err
    with np.load(out_file) as z:
        assert z["energy"].shape == (8, 2, 64, 64)
        assert all(i.startswith("plasma_physics/seq-00001@") for i in z["ids"])


def test_a_catalog_the_store_cannot_explain_says_to_sync(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A catalog entry the store never had (written into the catalog by hand) makes ``--out``
    fail; the message now says what to do."""
    from helpers.catalog_fixtures import batch, make_run, make_sequence

    S = ["--store", str(tmp_path / "atlas.zarr")]
    assert run(capsys, "generate", *S, "--domains", "plasma_physics", *SMALL)[0] == 0
    with SQLiteCatalog(tmp_path / "atlas.catalog.sqlite") as cat:
        cat.register_run(make_run("run-ghost"))
        cat.register_sequences(*batch(make_sequence("plasma_physics", "ghost", "run-ghost",
                                                    n_steps=3)))
    code, _, err = run(capsys, "query", *S, "--out", str(tmp_path / "w.npz"))
    assert code == 2 and "plasma_physics/ghost" in err and "atlas catalog sync" in err, err
    code, out, err = run(capsys, "query", *S, "--out", str(tmp_path / "w.npz"), "--no-catalog")
    assert code == 0 and out.startswith("6 windows"), err


def test_query_refuses_the_catalog_of_another_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], cat_cli: tuple[list[str], Any]) -> None:
    C, cat = cat_cli
    a, b = tmp_path / "atlas.zarr", tmp_path / "b.zarr"
    assert run(capsys, "generate", "--store", str(a), *C, "--domains", "plasma_physics", *SMALL)[0] == 0
    assert run(capsys, "generate", "--store", str(b), "--no-catalog", "--domains",
               "fluid_dynamics", *SMALL[:-2], "--seed", "9")[0] == 0
    spec = C or ["--catalog", str(tmp_path / "atlas.catalog.sqlite")]
    code, _, err = run(capsys, "query", "--store", str(b), *spec, "--count")
    assert code == 2 and "belongs to another store" in err and "--rebind" in err, err
    code, out, _ = run(capsys, "query", "--store", str(b), *spec, "--count", "--no-catalog")
    assert (code, out.strip()) == (0, "6")
    code, out, err = run(capsys, "catalog", "sync", "--store", str(b), *spec)
    assert code == 2 and "belongs to another store" in err
    code, out, err = run(capsys, "catalog", "sync", "--store", str(b), *spec, "--rebind")
    assert code == 0 and "2 sequences registered, 2 removed" in out, (out, err)
    code, out, _ = run(capsys, "query", "--store", str(b), *spec, "--count")
    assert (code, out.strip()) == (0, "6")
    with pytest.raises(CatalogMismatch):
        Query(AtlasStore.open(a), selector=CatalogSelector(_inspect(cat, tmp_path))).count()


def test_an_unsynced_catalog_is_not_trusted(tmp_path: Path,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    """A store from before the change log (no store_id) with a catalog built by the old code
    (no sync state): queries scan the store and say so; ``catalog sync`` binds the catalog,
    after which changes are followed from the log."""
    from helpers.catalog_fixtures import batch, make_run, make_sequence

    loc = tmp_path / "atlas.zarr"
    assert run(capsys, "generate", "--store", str(loc), "--no-catalog", "--domains",
               "plasma_physics", *SMALL)[0] == 0
    doc = json.loads((loc / "zarr.json").read_text())
    del doc["attributes"]["atlasstore"]["store_id"]
    (loc / "zarr.json").write_text(json.dumps(doc))
    with SQLiteCatalog(tmp_path / "atlas.catalog.sqlite") as cat:  # stale: one sequence only
        cat.register_run(make_run("run-x"))
        cat.register_sequences(*batch(make_sequence("plasma_physics", "seq-00000", "run-x",
                                                    n_steps=3)))
    S = ["--store", str(loc)]
    code, out, err = run(capsys, "query", *S, "--count")
    assert (code, out.strip()) == (0, "6") and "has not been synced with this store" in err
    assert run(capsys, "catalog", "sync", *S)[0] == 0
    AtlasStore.open(loc, mode="r+").delete_sequence("plasma_physics", "seq-00001")
    code, out, err = run(capsys, "query", *S, "--count")
    assert (code, out.strip(), err) == (0, "3", "")


# --------------------------------------------------------------------------- every write path


def _write_paths(store: AtlasStore, tmp_path: Path) -> None:
    """One change by every writer: generator (no catalog), import (a contract record and its run
    record), Python API, save_map, an overwrite, a delete."""
    generate(store.location, Plan(domains=("fluid_dynamics",), sequences=2, steps=3,
                                  shape=(64, 64), seed=8), scheduler="serial")
    rid = "import-00112233445566aa"
    RunLog(store).start({"run_id": rid, "kind": "import",
                         "config": {"source_format": "well", "sources": {"count": 1},
                                    "options": {}},
                         "config_hash": "1" * 64, "seed": 0, "code_version": "x",
                         "host": "h", "started": "2026-01-01T00:00:00+00:00",
                         "finished": None, "counts": {}})
    store.create_domain("lab")
    store.write_sequence("lab", "imp", energy_sequence(5, 64, 64, seed=2), generation=import_generation(rid))
    store.write_sequence("lab", "api", energy_sequence(4, 64, 64, seed=3))
    EnergyAtlasLoader(store).save_map(energy_sequence(1, 64, 64, seed=4)[0], "lab", "map",
                                      metadata={"source": "scope"})
    store.write_sequence("plasma_physics", "seq-00000", energy_sequence(2, 64, 64, seed=5),
                         overwrite=True)
    store.delete_sequence("plasma_physics", "seq-00001")


def import_generation(run_id: str, files: tuple[str, ...] = ("a.h5", "b.h5")) -> dict[str, Any]:
    """``generation`` of an imported sequence, as the provenance contract has it."""
    import hashlib

    return {"kind": "import", "run_id": run_id, "code_version": "0.1.0",
            "sources": [{"uri": f"file:///data/{f}", "size": 1000 + i,
                         "sha256": hashlib.sha256(f.encode()).hexdigest(), "format": "well",
                         "member": f"trajectory {i}, field density"} for i, f in enumerate(files)],
            "options": {"field": "density"}}


QUERIES: list[dict[str, Any]] = [
    {}, {"window": 2}, {"domains": ["lab"]}, {"perturbation": "rotation"},
    {"entropy": (0.0, 8.0), "window": 2}, {"run_id": "import-00112233445566aa"},
    {"sequences": ["lab/api"], "window": 3}, {"mean": (1.5, 3.0)},
]


def _same_answers(store: AtlasStore, selector: Any) -> None:
    for kw in QUERIES:
        assert windows(store, selector, scale=64, **kw) == \
            windows(store, StoreSelector(), scale=64, **kw), kw


@pytest.mark.parametrize("state", ["synced", "stale", "read-only", "unsynced"])
def test_every_write_path_answers_like_the_store(catalog: Any, tmp_path: Path,
                                                 state: str) -> None:
    loc = tmp_path / "s.zarr"
    generate(loc, Plan(domains=("plasma_physics",), sequences=2, steps=4, shape=(64, 64), seed=1),
             scheduler="serial", catalog=catalog if state != "unsynced" else None)
    store = AtlasStore.open(loc, mode="r+")
    _write_paths(store, tmp_path)
    if state == "synced":
        sync_catalog(store, catalog)
    sel = CatalogSelector(catalog, refresh=state != "read-only")
    if state == "read-only" and catalog.backend == "sqlite":  # a real read-only connection
        sel = CatalogSelector(SQLiteCatalog(catalog.path, read_only=True))
    _same_answers(store, sel)
    assert sel.view.mode == {"synced": "catalog", "stale": "catalog", "read-only": "overlay",
                             "unsynced": "scan"}[state], sel.view
    if state == "read-only":  # nothing was written to the catalog; the changes came from the store
        assert sel.view.scan_keys >= {"lab/imp", "lab/api", "lab/map",
                                      "plasma_physics/seq-00001", "fluid_dynamics/seq-00000"}
        assert "atlas catalog sync" in sel.view.note
    if state in ("synced", "stale"):
        assert sorted(catalog.sequence_keys()) == sorted(f"{d}/{s}" for d, s in store.iter_sequences())


def test_import_lineage_through_the_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                        cat_cli: tuple[list[str], Any]) -> None:
    """``atlas catalog lineage`` of an imported array: the source files (uri, format, the part
    used) and the import run with its code version and host."""
    C, cat = cat_cli
    S = ["--store", str(tmp_path / "atlas.zarr")]
    assert run(capsys, "init", *S)[0] == 0
    assert run(capsys, "catalog", "sync", *S, *C)[0] == 0
    store = AtlasStore.open(tmp_path / "atlas.zarr", mode="r+")
    rid = "import-0123456789abcdef"
    RunLog(store).start({"run_id": rid, "kind": "import",
                         "config": {"source_format": "well", "sources": {"count": 2},
                                    "options": {}},
                         "config_hash": "2" * 64, "seed": 0, "code_version": "0.1.0+gabc",
                         "host": "node-9", "started": "2026-01-01T00:00:00+00:00",
                         "finished": None, "counts": {}})
    store.create_domain("well")
    store.write_sequence("well", "traj-0", energy_sequence(3, 128, 128), generation=import_generation(rid))
    store.write_sequence("well", "traj-1", energy_sequence(3, 128, 128, seed=1),
                         generation=import_generation(rid, ("b.h5",)))
    code, out, err = run(capsys, "catalog", "lineage", *S, *C, "well/traj-0/64/grad_x")
    assert code == 0, err
    for needle in ("-partOf-> Sequence:well/traj-0 kind=import",
                   f"-wasGeneratedBy-> ImportRun:{rid} seed=0 config_hash=222222222222 "
                   "code_version=0.1.0+gabc host=node-9",
                   "-wasDerivedFrom-> SourceFile:file:///data/a.h5@sha256:",
                   "format=well size=1000", "[trajectory 0, field density]",
                   "-wasAssociatedWith-> Host:node-9"):
        assert needle in out, (needle, out)
    code, out, _ = run(capsys, "catalog", "lineage", *S, *C, "--json", "well/traj-1")
    lin = json.loads(out)
    files = [n for n in lin["nodes"] if n["kind"] == "SourceFile"]
    assert [f["properties"]["uri"] for f in files] == ["file:///data/b.h5"]
    assert {n["kind"] for n in lin["nodes"]} == {"Sequence", "SourceFile", "ImportRun",
                                                 "CodeVersion", "Host"}
    # the two sequences share b.h5: one node; deleting one sequence keeps it for the other
    c = _inspect(cat, tmp_path)
    assert c.lineage("Sequence:well/traj-0").of_kind("SourceFile")[1].key == files[0]["key"]
    store.delete_sequence("well", "traj-1")
    assert run(capsys, "query", *S, *C, "--count", "--scale", "64")[1].strip() == "3"
    assert [n.properties["uri"] for n in c.lineage(files[0]["id"]).of_kind("SourceFile")] == \
        ["file:///data/b.h5"]
    store.delete_sequence("well", "traj-0")
    assert run(capsys, "query", *S, *C, "--count", "--scale", "64")[1].strip() == "0"
    code, _, err = run(capsys, "catalog", "lineage", *S, *C, files[0]["id"])
    assert code == 2 and "no catalog node" in err


# --------------------------------------------------------------------------- random histories


@st.composite
def histories(draw: Any) -> list[tuple]:
    steps = []
    for _ in range(draw(st.integers(3, 12))):
        kind = draw(st.sampled_from(["write", "write", "delete", "query", "sync", "save_map"]))
        seq = f"s{draw(st.integers(0, 3))}"
        dom = draw(st.sampled_from(["a", "b"]))
        if kind == "write":
            steps.append(("write", dom, seq, draw(st.integers(1, 4)), draw(st.integers(0, 99))))
        elif kind in ("delete", "save_map"):
            steps.append((kind, dom, seq))
        elif kind == "query":
            steps.append(("query", draw(st.booleans())))
        else:
            steps.append(("sync",))
    return steps + [("query", True), ("query", False)]


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories())
def test_random_writes_and_deletes_never_change_an_answer(history: list[tuple]) -> None:
    """Whatever happens in whatever order (writes of any length, overwrites, deletes, syncs,
    queries that may or may not catch up), every catalog answer is the store scan's."""
    with tempfile.TemporaryDirectory() as d:
        store = AtlasStore.create(Path(d) / "s.zarr")
        for dom in ("a", "b"):
            store.create_domain(dom)
        cat = SQLiteCatalog(Path(d) / "c.db")
        sync_catalog(store, cat)
        try:
            for step in history:
                if step[0] == "write":
                    _, dom, seq, n, seed = step
                    store.write_sequence(dom, seq, energy_sequence(n, 64, 64, seed=seed),
                                         overwrite=True)
                elif step[0] == "save_map":
                    EnergyAtlasLoader(store).save_map(energy_sequence(1, 64, 64)[0], step[1], step[2])
                elif step[0] == "delete":
                    store.delete_sequence(step[1], step[2])
                elif step[0] == "sync":
                    sync_catalog(store, cat)
                else:
                    sel = CatalogSelector(cat, refresh=step[1])
                    for kw in ({}, {"window": 2}, {"entropy": (7.0, 8.2)}, {"domains": ["b"]}):
                        assert answer(store, sel, scale=64, **kw) == \
                            answer(store, StoreSelector(), scale=64, **kw), (history, kw)
            assert sorted(cat.sequence_keys()) == sorted(f"{d}/{s}" for d, s in store.iter_sequences())
        finally:
            cat.close()


# --------------------------------------------------------------------------- costs


def _count_requests(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Every key read (get, exists) and every listing of any zarr store, from now on."""
    seen: dict[str, list[str]] = {"get": [], "exists": [], "list": []}
    cls = zarr.storage.LocalStore
    for name in ("get", "exists"):
        orig = getattr(cls, name)

        async def spy(self: Any, key: str, *a: Any, _orig: Any = orig, _name: str = name, **k: Any) -> Any:
            seen[_name].append(key)
            return await _orig(self, key, *a, **k)
        monkeypatch.setattr(cls, name, spy)
    for name in ("list", "list_dir", "list_prefix"):
        orig = getattr(cls, name)

        def lspy(self: Any, *a: Any, _orig: Any = orig, **k: Any) -> Any:
            seen["list"].append(str(a))
            return _orig(self, *a, **k)
        monkeypatch.setattr(cls, name, lspy)
    return seen


def test_the_staleness_check_costs_one_read_plus_one_per_change(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Up to date: one GET (the next log entry: absent). After k changes: the k entries and the
    miss, then one GET per changed sequence (and per new run) to apply them. Never a listing,
    whatever the size of the store."""
    loc = tmp_path / "s.zarr"
    generate(loc, Plan(domains=("plasma_physics", "fluid_dynamics"), sequences=5, steps=2,
                       shape=(64, 64), seed=1), scheduler="serial")
    store = AtlasStore.open(loc, mode="r+")
    cat = SQLiteCatalog(tmp_path / "c.db")
    sync_catalog(store, cat)
    pos = cat.store_sync().position
    reader = AtlasStore.open(loc)
    seen = _count_requests(monkeypatch)
    view = catalog_view(reader, cat)
    assert view.mode == "catalog"
    assert seen == {"get": [entry_key(pos)], "exists": [], "list": []}
    for i in range(3):
        store.write_sequence("plasma_physics", f"new{i}", energy_sequence(2))
    reader = AtlasStore.open(loc)
    seen["get"].clear()
    seen["exists"].clear()
    seen["list"].clear()
    res = catch_up(reader, cat)
    assert res.applied == 3 and res.position == pos + 3
    log_reads = [k for k in seen["get"] if k.startswith("_log/")]
    # the 3 entries and the miss after them, read in rounds of 1, 2, 4 keys: 7 GETs at most
    assert {entry_key(pos + i) for i in range(4)} <= set(log_reads) and len(log_reads) <= 2 * 3 + 1
    assert sorted(k for k in seen["get"] if not k.startswith("_log/")) == \
        [f"plasma_physics/new{i}/zarr.json" for i in range(3)]
    assert seen["list"] == []
