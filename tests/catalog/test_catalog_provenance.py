"""Catalog contract, layout 2 (both backends): who wrote a sequence, import lineage (ImportRun,
SourceFile), runs catalogued after their sequences, fields without entropy, pinned dataset
versions, and the store-sync state's compare-and-swap. SQLite: the layout 1 -> 2 migration."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest

from atlasstore.catalog import ImportRun, SQLiteCatalog, StoreSync, node_id, sequence_checksum
from atlasstore.errors import CatalogError, SchemaError
from helpers.catalog_fixtures import batch, make_run, make_sequence, make_source, raw_counts

IMP = "import-0123456789abcdef"


def imported(domain: str, seq: str, *files: str, **kw: Any) -> tuple[dict, list, list]:
    return make_sequence(domain, seq, IMP, kind="import", sources=[make_source(f) for f in files],
                         pattern=None, seed=None, **kw)


def test_kinds_round_trip_and_runless_sequences_have_no_run_edge(catalog: Any) -> None:
    catalog.register_run(make_run("run-1"))
    catalog.register_sequences(*batch(
        make_sequence("d", "gen"),
        make_sequence("d", "api", None, seed=None, pattern=None),
        make_sequence("d", "map", None, seed=None, pattern=None, kind="save_map",
                      source="save_map: lab-7", n_steps=1)))
    got = {k: catalog.get_sequence(f"d/{k}") for k in ("gen", "api", "map")}
    assert [(s.kind, s.run_id, s.seed, s.source) for s in got.values()] == [
        ("generate", "run-1", 7, None), ("api", None, None, None),
        ("save_map", None, None, "save_map: lab-7")]
    for key in ("d/api", "d/map"):
        lin = catalog.lineage(f"{key}/64/grad_x")
        assert {n.kind for n in lin.nodes.values()} == {"Array", "Sequence"}
        assert catalog.generation_runs_for(key) == []
    assert [r.run_id for r in catalog.generation_runs_for("d/gen")] == ["run-1"]
    assert [s.key for s in catalog.find_sequences(run_id="run-1")] == ["d/gen"]


def test_a_run_catalogued_after_its_sequences_is_linked(catalog: Any) -> None:
    """The store may hold sequences whose run record is missing (or not registered yet): they
    are catalogued, and the edge appears when the run is."""
    catalog.register_sequences(*batch(make_sequence("d", "s1", "run-late"),
                                      make_sequence("d", "s2", "run-late")))
    assert catalog.get_sequence("d/s1").run_id == "run-late"
    assert catalog.generation_runs_for("d/s1") == []
    catalog.register_run(make_run("run-late", seed=5))
    for k in ("d/s1", "d/s2"):
        assert [(r.run_id, r.seed) for r in catalog.generation_runs_for(k)] == [("run-late", 5)]
    before = raw_counts(catalog)
    catalog.register_run(make_run("run-late", seed=5))  # idempotent
    assert raw_counts(catalog) == before
    # the same id registered as an import run replaces the generation run node
    catalog.register_run(make_run("run-late", seed=0, kind="import"))
    runs = catalog.generation_runs_for("d/s1")
    assert [type(r) for r in runs] == [ImportRun] and runs[0].kind == "import"
    assert (raw_counts(catalog)["GenerationRun"], raw_counts(catalog)["ImportRun"]) == (0, 1)
    assert catalog.lineage("d/s2").has_edge("Sequence:d/s2", "wasGeneratedBy", "ImportRun:run-late")


def test_import_lineage_source_files_and_run(catalog: Any) -> None:
    catalog.register_run(make_run(IMP, seed=0, kind="import", host="node-9",
                                  config={"source": "well", "files": 2}))
    catalog.register_sequences(*batch(imported("well", "t0", "a.h5", "b.h5"),
                                      imported("well", "t1", "b.h5")))
    a, b = make_source("a.h5"), make_source("b.h5")
    fa = node_id("SourceFile", f"{a['uri']}@sha256:{a['sha256']}")
    fb = node_id("SourceFile", f"{b['uri']}@sha256:{b['sha256']}")
    lin = catalog.lineage("well/t0/64/grad_y")
    assert lin.has_edge("Sequence:well/t0", "wasGeneratedBy", f"ImportRun:{IMP}")
    assert lin.edge("Sequence:well/t0", "wasDerivedFrom", fa).properties == {"member": a["member"]}
    assert lin.nodes[fb].properties == {"key": fb.split(":", 1)[1], "uri": b["uri"],
                                        "size": b["size"], "sha256": b["sha256"], "format": "well"}
    assert lin.nodes[fb].prov == "entity" and lin.nodes[f"ImportRun:{IMP}"].prov == "activity"
    assert lin.has_edge(f"ImportRun:{IMP}", "wasAssociatedWith", "Host:node-9")
    assert [r.run_id for r in catalog.generation_runs_for("well/t1")] == [IMP]
    assert catalog.get_sequence("well/t0").sources == [a, b]
    assert catalog.lineage(fb).root == fb  # a source file is a node of its own
    # b.h5 feeds two sequences: one node; it goes only with the last sequence derived from it
    assert raw_counts(catalog)["SourceFile"] == 2
    catalog.register_sequences(*batch(imported("well", "t0", "c.h5")))  # re-imported elsewhere
    assert raw_counts(catalog)["SourceFile"] == 2  # a.h5 went, c.h5 came, b.h5 stays (t1)
    catalog.remove_sequences(["well/t1"])
    assert raw_counts(catalog)["SourceFile"] == 1
    catalog.remove_sequences(["well/t0"])
    assert raw_counts(catalog)["SourceFile"] == 0


def test_bad_source_records_are_refused(catalog: Any) -> None:
    s, t, a = imported("well", "t0", "a.h5")
    for bad in ({**s["sources"][0], "sha256": "xyz"}, {k: v for k, v in s["sources"][0].items()
                                                       if k != "uri"}):
        with pytest.raises(SchemaError):
            catalog.register_sequences([{**s, "sources": [bad]}], t, a)
    assert catalog.count() == 0


def test_fields_without_entropy(catalog: Any) -> None:
    """An intensive field (a temperature, a velocity component) has no entropy and no sum: such
    a sequence never matches an entropy filter, and matches the others."""
    catalog.register_run(make_run("run-1"))
    catalog.register_sequences(*batch(make_sequence("d", "temp", with_entropy=False, mean=(2.0, 3.0)),
                                      make_sequence("d", "energy", mean=(2.0, 3.0))))
    s = catalog.get_sequence("d/temp")
    assert (s.entropy_min, s.entropy_max) == (None, None)
    assert {(t.entropy, t.sum) for t in catalog.get_timesteps("d/temp")} == {(None, None)}
    assert [x.key for x in catalog.find_sequences(entropy=(0.0, 100.0))] == ["d/energy"]
    assert {t.sequence_key for t in catalog.find_timesteps(entropy=(None, None))} == {"d/energy",
                                                                                     "d/temp"}
    assert {t.sequence_key for t in catalog.find_timesteps(entropy=(0.0, 100.0))} == {"d/energy"}
    assert [x.key for x in catalog.find_sequences(mean=(2.5, 2.5))] == ["d/energy", "d/temp"]


def test_dataset_versions_pin_their_data(catalog: Any) -> None:
    catalog.register_run(make_run("run-1"))
    catalog.register_sequences(*batch(make_sequence("d", "s1"), make_sequence("d", "s2")))
    dv = catalog.register_dataset_version("dv-1", {"q": 1}, {"train": ["d/s1"], "val": ["d/s2"]},
                                          ["d/s1", "d/s2"])
    want = {k: sequence_checksum({f"{a.level}/{a.field}": a.checksum for a in catalog.get_arrays(k)})
            for k in ("d/s1", "d/s2")}
    assert dv.checksums == want and catalog.get_dataset_version("dv-1").checksums == want
    assert len(set(want.values())) == 2 and all(v.startswith("sha256:") for v in want.values())
    given = {"d/s1": "sha256:" + "a" * 64}
    dv2 = catalog.register_dataset_version("dv-2", {}, {}, ["d/s1"], checksums=given)
    assert catalog.get_dataset_version("dv-2").checksums == given == dv2.checksums
    with pytest.raises(SchemaError, match="cover exactly"):
        catalog.register_dataset_version("dv-3", {}, {}, ["d/s1", "d/s2"], checksums=given)
    with pytest.raises(SchemaError):
        catalog.register_dataset_version("dv-3", {}, {}, ["d/s1"], checksums={"d/s1": "md5:x"})
    assert catalog.get_dataset_version("dv-3") is None
    catalog.remove_sequences(["d/s1"])  # the pins outlive the data: that is what audit checks
    assert catalog.get_dataset_version("dv-1").checksums == want


def test_commit_sync_is_a_compare_and_swap(catalog: Any) -> None:
    assert catalog.store_sync() is None
    s1 = make_sequence("d", "s1", "run-1")
    assert catalog.commit_sync(None, StoreSync("store-a", 3, {"d/x": "write"}),
                               runs=[make_run("run-1")], seqs=[s1[0]], timesteps=s1[1],
                               arrays=s1[2])
    st = catalog.store_sync()
    assert (st.store_id, st.position, st.pending, st.version) == ("store-a", 3, {"d/x": "write"}, 1)
    assert catalog.sequence_keys() == ["d/s1"] and catalog.get_run("run-1") is not None
    s2 = make_sequence("d", "s2", "run-1")
    for stale in (None, 0, 2):  # someone else committed: nothing is written
        assert not catalog.commit_sync(stale, StoreSync("store-a", 9, {}), seqs=[s2[0]],
                                       timesteps=s2[1], arrays=s2[2], remove=["d/s1"])
    assert catalog.sequence_keys() == ["d/s1"] and catalog.store_sync().version == 1
    assert catalog.commit_sync(1, StoreSync("store-a", 9, {}), seqs=[s2[0]], timesteps=s2[1],
                               arrays=s2[2], remove=["d/s1"])
    st = catalog.store_sync()
    assert (st.position, st.pending, st.version, catalog.sequence_keys()) == (9, {}, 2, ["d/s2"])


def test_commit_sync_loses_no_update_under_contention(catalog: Any) -> None:
    """Threads increment the position through read + compare-and-swap: no increment is lost."""
    catalog.commit_sync(None, StoreSync("s", 0))
    errors: list[BaseException] = []

    def bump(n: int) -> None:
        try:
            for _ in range(n):
                while True:
                    st = catalog.store_sync()
                    if catalog.commit_sync(st.version, StoreSync("s", st.position + 1)):
                        break
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=bump, args=(10,)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    st = catalog.store_sync()
    assert (st.position, st.version) == (40, 41)


# --------------------------------------------------------------------------- layout migration

V1_DDL = """
CREATE TABLE schema_version (version INTEGER NOT NULL, applied TEXT NOT NULL);
CREATE TABLE generation_runs (
    run_id TEXT PRIMARY KEY, config TEXT NOT NULL, config_hash TEXT NOT NULL,
    seed INTEGER NOT NULL, code_version TEXT NOT NULL, host TEXT NOT NULL,
    started TEXT NOT NULL, finished TEXT, counts TEXT NOT NULL);
CREATE TABLE sequences (
    key TEXT PRIMARY KEY, domain TEXT NOT NULL, sequence_id TEXT NOT NULL,
    run_id TEXT NOT NULL REFERENCES generation_runs(run_id),
    seed INTEGER NOT NULL, pattern TEXT NOT NULL, n_steps INTEGER NOT NULL,
    shape TEXT NOT NULL, levels TEXT NOT NULL, perturbation_kinds TEXT NOT NULL,
    entropy_min REAL NOT NULL, entropy_max REAL NOT NULL, mean_min REAL NOT NULL,
    mean_max REAL NOT NULL, variance_min REAL NOT NULL, variance_max REAL NOT NULL,
    created TEXT NOT NULL, status TEXT NOT NULL);
CREATE INDEX sequences_run ON sequences(run_id);
CREATE TABLE stat_widths (stat TEXT PRIMARY KEY, width REAL NOT NULL);
CREATE TABLE sequence_levels (level INTEGER NOT NULL,
    sequence_key TEXT NOT NULL REFERENCES sequences(key) ON DELETE CASCADE,
    PRIMARY KEY (level, sequence_key)) WITHOUT ROWID;
CREATE TABLE sequence_perturbations (kind TEXT NOT NULL,
    sequence_key TEXT NOT NULL REFERENCES sequences(key) ON DELETE CASCADE,
    PRIMARY KEY (kind, sequence_key)) WITHOUT ROWID;
CREATE TABLE timesteps (key TEXT PRIMARY KEY,
    sequence_key TEXT NOT NULL REFERENCES sequences(key) ON DELETE CASCADE,
    t INTEGER NOT NULL, mean REAL NOT NULL, variance REAL NOT NULL, entropy REAL NOT NULL,
    sum REAL NOT NULL, perturbation_kinds TEXT NOT NULL);
CREATE TABLE arrays (key TEXT PRIMARY KEY,
    sequence_key TEXT NOT NULL REFERENCES sequences(key) ON DELETE CASCADE,
    level INTEGER NOT NULL, field TEXT NOT NULL, shape TEXT NOT NULL, dtype TEXT NOT NULL,
    checksum TEXT NOT NULL, nbytes_stored INTEGER NOT NULL, stat_mean REAL NOT NULL,
    stat_variance REAL NOT NULL, stat_min REAL NOT NULL, stat_max REAL NOT NULL,
    stat_entropy REAL, derived_from TEXT, operation TEXT);
CREATE TABLE dataset_versions (version_id TEXT PRIMARY KEY, query TEXT NOT NULL,
    split TEXT NOT NULL, sequence_keys TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE training_runs (run_id TEXT PRIMARY KEY, config TEXT NOT NULL,
    dataset_version_id TEXT NOT NULL REFERENCES dataset_versions(version_id),
    code_version TEXT, host TEXT, started TEXT NOT NULL, finished TEXT);
CREATE TABLE checkpoints (ckpt_id TEXT PRIMARY KEY,
    training_run_id TEXT NOT NULL REFERENCES training_runs(run_id),
    step INTEGER NOT NULL, metrics TEXT NOT NULL, path TEXT NOT NULL, created TEXT NOT NULL);
CREATE TABLE edges (src TEXT NOT NULL, rel TEXT NOT NULL, dst TEXT NOT NULL,
    props TEXT NOT NULL DEFAULT '{}', PRIMARY KEY (src, rel, dst)) WITHOUT ROWID;
INSERT INTO schema_version VALUES (1, '2026-01-01T00:00:00+00:00');
"""


def test_sqlite_layout_1_is_migrated_in_place(tmp_path: Path) -> None:
    """A catalog file written by the previous release (its DDL above, rows written through a
    layout-2 catalog's rows, which layout 1 shares) opens with everything kept, then takes
    the new records."""
    path = tmp_path / "old.db"
    with SQLiteCatalog(tmp_path / "ref.db") as ref:  # the same content in today's layout
        ref.register_run(make_run("run-1"))
        ref.register_sequences(*batch(make_sequence("d", "s1"), make_sequence("d", "s2")))
        ref.register_dataset_version("dv", {}, {}, ["d/s1"], created="2026-01-01T00:00:00+00:00")
        ref.register_training_run("tr", {}, "dv", started="2026-01-01T00:00:00+00:00")
        ref.register_checkpoint("ck", "tr", 1, {}, "/ck", created="2026-01-01T00:00:00+00:00")
        want_lin = ref.lineage("Checkpoint:ck").to_dict()
        want_seq = ref.get_sequence("d/s1").to_dict()
        copy = {t: [tuple(r) for r in ref._q(f"SELECT * FROM {t}")] for t in (
            "generation_runs", "sequences", "timesteps", "arrays", "sequence_levels",
            "sequence_perturbations", "stat_widths", "dataset_versions", "training_runs",
            "checkpoints", "edges")}
    db = sqlite3.connect(path)
    db.executescript(V1_DDL)
    # layout 1's columns
    ncols = {"generation_runs": 9, "sequences": 18, "dataset_versions": 5, "timesteps": 8,
             "arrays": 15}
    for table, rows in copy.items():
        for r in rows:
            r = r[:ncols.get(table, len(r))]
            db.execute(f"INSERT INTO {table} VALUES ({', '.join('?' * len(r))})", r)
    db.commit()
    db.close()
    with SQLiteCatalog(path) as c:
        assert [r[0] for r in c._q("SELECT version FROM schema_version ORDER BY version")] == [1, 3]
        assert c.get_sequence("d/s1").to_dict() == want_seq
        lin = c.lineage("Checkpoint:ck").to_dict()
        assert lin == {**want_lin, "nodes": [
            {**n, "properties": {**n["properties"], "checksums": {}}} if n["kind"] == "DatasetVersion"
            else n for n in want_lin["nodes"]]}  # (layout 1 pinned nothing)
        assert c._q("PRAGMA foreign_key_check") == [] and c._q("PRAGMA foreign_keys")[0][0] == 1
        c.register_sequences(*batch(make_sequence("d", "api", None, with_entropy=False)))
        assert c.get_sequence("d/api").kind == "api"
        c.remove_sequences(["d/s1"])  # cascades as before
        assert c.get_timesteps("d/s1") == [] and c.get_arrays("d/s1") == []
    with SQLiteCatalog(path) as c:  # opening again changes nothing
        assert [r[0] for r in c._q("SELECT version FROM schema_version ORDER BY version")] == [1, 3]


def test_sqlite_layout_2_gains_the_missing_cell_columns(tmp_path: Path) -> None:
    """A layout-2 file (before missing cells) opens with its rows kept (valid cells unknown:
    None, i.e. every cell) and then records valid cells and valid fractions."""
    path = tmp_path / "v2.db"
    with SQLiteCatalog(path) as c:
        c.register_sequences(*batch(make_sequence("d", "s1")))
    db = sqlite3.connect(path)
    db.executescript("ALTER TABLE timesteps DROP COLUMN valid_cells;"
                     "ALTER TABLE arrays DROP COLUMN stat_valid_fraction;"
                     "UPDATE schema_version SET version = 2;")
    db.close()
    with SQLiteCatalog(path) as c:
        assert [r[0] for r in c._q("SELECT version FROM schema_version ORDER BY version")] == [2, 3]
        assert {t.valid_cells for t in c.get_timesteps("d/s1")} == {None}
        assert all("valid_fraction" not in a.stats for a in c.get_arrays("d/s1"))
        seq, steps, arrays = make_sequence("d", "s2")
        c.register_sequences([seq], steps, arrays)
        assert [t.valid_cells for t in c.get_timesteps("d/s2")] == [s["valid_cells"] for s in steps]
        assert {a.key: a.stats for a in c.get_arrays("d/s2")} == {a["key"]: a["stats"]
                                                                  for a in arrays}


def test_sqlite_read_only(tmp_path: Path) -> None:
    with SQLiteCatalog(tmp_path / "c.db") as c:
        c.register_run(make_run("run-1"))
    with SQLiteCatalog(tmp_path / "c.db", read_only=True) as r:
        assert r.get_run("run-1") is not None
        with pytest.raises(CatalogError, match="read-only"):
            r.register_run(make_run("run-2"))
        with pytest.raises(CatalogError, match="read-only"):
            r.commit_sync(None, StoreSync("s", 0))
    with pytest.raises(CatalogError, match="no such file"):
        SQLiteCatalog(tmp_path / "none.db", read_only=True)
