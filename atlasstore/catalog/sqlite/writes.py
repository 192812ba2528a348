"""Registering records, store-sync state and lineage records, one transaction per call."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Mapping
from typing import Any

from atlasstore.catalog.base import (
    batch_widths,
    dumps,
    node_id,
)
from atlasstore.catalog.batches import make_batch, missing_message, sync_batch
from atlasstore.catalog.records import (
    ArrayRecord,
    Checkpoint,
    DatasetVersion,
    GenerationRun,
    Sequence,
    SourceFile,
    StoreSync,
    TimeStep,
    TrainingRun,
    run_record,
    sequence_checksum,
)
from atlasstore.catalog.sqlite.connection import SQLiteConnection
from atlasstore.catalog.sqlite.rows import _arr_row, _run_row, _seq_row, _ts_row
from atlasstore.catalog.sqlite.sql import (
    _UPSERT_ARR,
    _UPSERT_EDGE,
    _UPSERT_RUN,
    _UPSERT_SEQ,
    _UPSERT_TS,
    _key_list,
)
from atlasstore.errors import CatalogNotFound
from atlasstore.io.provenance import utc_now


class SQLiteWrites(SQLiteConnection):
    """The writing half of :class:`~atlasstore.catalog.sqlite.SQLiteCatalog`."""

    # ------------------------------------------------------------------------------ registration

    def register_run(self, run: GenerationRun | Mapping[str, Any]) -> None:
        r = run_record(run, check=self._validate)
        with self._tx() as db:
            self._register_run_tx(db, r)

    def register_sequences(self, seqs: Iterable[Sequence | Mapping[str, Any]],
                           timesteps: Iterable[TimeStep | Mapping[str, Any]] = (),
                           arrays: Iterable[ArrayRecord | Mapping[str, Any]] = ()) -> None:
        """Insert or replace sequences with their parts, in one transaction.

        A sequence given here is replaced whole: its time steps, arrays and source files become
        exactly the ones given in this call (earlier parts not given again are removed). Parts
        whose sequence is not in ``seqs`` must belong to a sequence already catalogued and are
        inserted or replaced individually. ``derived_from`` must name an array of this batch or
        one already catalogued. A run id names a run whether or not it is catalogued yet.
        """
        b = make_batch(seqs, timesteps, arrays, self._validate)
        if not (b.seqs or b.timesteps or b.arrays):
            return
        with self._tx() as db:
            self._register_tx(db, b)

    def remove_sequences(self, keys: Iterable[str]) -> int:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return 0
        with self._tx() as db:
            return self._remove_tx(db, keys)

    # (the bodies of the public writes, run inside a transaction; commit_sync combines them)

    def _register_run_tx(self, db: sqlite3.Connection, r: GenerationRun) -> None:
        rid = node_id(r.NODE_KIND, r.run_id)
        other = node_id("ImportRun" if r.NODE_KIND == "GenerationRun" else "GenerationRun",
                        r.run_id)
        db.execute(_UPSERT_RUN, _run_row(r))
        db.execute("DELETE FROM edges WHERE src IN (?, ?) AND rel = 'wasAssociatedWith'",
                   (rid, other))
        db.executemany(_UPSERT_EDGE, [
            (rid, "wasAssociatedWith", node_id("CodeVersion", r.code_version), "{}"),
            (rid, "wasAssociatedWith", node_id("Host", r.host), "{}")])
        # the sequences that name it (registered before it, or under the other kind)
        db.execute("DELETE FROM edges WHERE dst = ? AND rel = 'wasGeneratedBy'", (other,))
        db.execute("INSERT OR IGNORE INTO edges (src, rel, dst, props) SELECT 'Sequence:' || key, "
                   "'wasGeneratedBy', ?, '{}' FROM sequences WHERE run_id = ?", (rid, r.run_id))

    def _register_tx(self, db: sqlite3.Connection, b: Any) -> None:
        outside = b.outside_sequence_keys()
        missing = outside - self._existing(db, "sequences", "key", outside)
        if missing:
            raise CatalogNotFound(missing_message("sequences", missing,
                                                  " (parts given without their sequence)"))
        derived = b.outside_derived_keys()
        missing = derived - self._existing(db, "arrays", "key", derived)
        if missing:
            raise CatalogNotFound(missing_message("arrays named in derived_from", missing))
        # stale parts of re-registered sequences
        keep = b.child_keys_by_sequence()
        stale: list[str] = []
        for skey, kids in keep.items():
            kids_set = set(kids)
            for r in db.execute("SELECT key FROM timesteps WHERE sequence_key = ?", (skey,)):
                if r[0] not in kids_set:
                    stale.append(node_id("TimeStep", r[0]))
            for r in db.execute("SELECT key FROM arrays WHERE sequence_key = ?", (skey,)):
                if r[0] not in kids_set:
                    stale.append(node_id("Array", r[0]))
        if stale:
            self._delete_nodes(db, stale)
            db.executemany("DELETE FROM timesteps WHERE key = ?",
                           [(i.split(":", 1)[1],) for i in stale if i.startswith("TimeStep:")])
            db.executemany("DELETE FROM arrays WHERE key = ?",
                           [(i.split(":", 1)[1],) for i in stale if i.startswith("Array:")])
        # sequences
        old_sources = self._source_keys_of(db, [s.key for s in b.seqs])
        db.executemany(_UPSERT_SEQ, [_seq_row(s) for s in b.seqs])
        db.executemany("DELETE FROM sequence_levels WHERE sequence_key = ?",
                       [(s.key,) for s in b.seqs])
        db.executemany("INSERT OR IGNORE INTO sequence_levels (level, sequence_key) VALUES (?, ?)",
                       [(lv, s.key) for s in b.seqs for lv in s.levels])
        db.executemany("DELETE FROM sequence_perturbations WHERE sequence_key = ?",
                       [(s.key,) for s in b.seqs])
        db.executemany("INSERT OR IGNORE INTO sequence_perturbations (kind, sequence_key) "
                       "VALUES (?, ?)", [(k, s.key) for s in b.seqs for k in s.perturbation_kinds])
        if b.seqs:
            db.executemany("INSERT INTO stat_widths (stat, width) VALUES (?, ?) "
                           "ON CONFLICT(stat) DO UPDATE SET width = max(width, excluded.width)",
                           list(batch_widths(b.seqs).items()))
        db.executemany("DELETE FROM edges WHERE src = ? AND rel IN ('wasGeneratedBy', "
                       "'wasDerivedFrom')", [(node_id("Sequence", s.key),) for s in b.seqs])
        runs = {s.run_id for s in b.seqs if s.run_id is not None}
        run_kind = {r[0]: r[1] for r in db.execute(
            "SELECT run_id, kind FROM generation_runs WHERE run_id IN "
            "(SELECT atlas_key(value) FROM json_each(?))", (_key_list(sorted(runs)),))} if runs else {}
        edges = [(node_id("Sequence", s.key), "wasGeneratedBy",
                  node_id("ImportRun" if run_kind[s.run_id] == "import" else "GenerationRun",
                          s.run_id), "{}")
                 for s in b.seqs if s.run_id in run_kind]
        # source files of imports
        files: dict[str, SourceFile] = {}
        for s in b.seqs:
            for f, member in s.source_files():
                files[f.key] = f
                edges.append((node_id("Sequence", s.key), "wasDerivedFrom",
                              node_id("SourceFile", f.key),
                              dumps({"member": member} if member is not None else {}, "edge")))
        db.executemany("INSERT INTO source_files (key, uri, size, sha256, format) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET uri=excluded.uri, "
                       "size=excluded.size, sha256=excluded.sha256, format=excluded.format",
                       [(f.key, f.uri, f.size, f.sha256, f.format) for f in files.values()])
        # parts
        db.executemany(_UPSERT_TS, [_ts_row(t) for t in b.timesteps])
        edges += [(node_id("Sequence", t.sequence_key), "hasTimeStep",
                   node_id("TimeStep", t.key), "{}") for t in b.timesteps]
        db.executemany(_UPSERT_ARR, [_arr_row(a) for a in b.arrays])
        edges += [(node_id("Sequence", a.sequence_key), "hasArray", node_id("Array", a.key), "{}")
                  for a in b.arrays]
        db.executemany("DELETE FROM edges WHERE src = ? AND rel = 'wasDerivedFrom'",
                       [(node_id("Array", a.key),) for a in b.arrays])
        edges += [(node_id("Array", a.key), "wasDerivedFrom", node_id("Array", a.derived_from),
                   dumps({"operation": a.operation} if a.operation is not None else {}, "edge"))
                  for a in b.arrays if a.derived_from is not None]
        db.executemany(_UPSERT_EDGE, edges)
        self._drop_orphan_sources(db, old_sources - set(files))

    def _remove_tx(self, db: sqlite3.Connection, keys: list[str]) -> int:
        present = sorted(self._existing(db, "sequences", "key", keys))
        sources = self._source_keys_of(db, present)
        ids: list[str] = []
        for k in present:
            ids.append(node_id("Sequence", k))
            ids += [node_id("TimeStep", r[0]) for r in
                    db.execute("SELECT key FROM timesteps WHERE sequence_key = ?", (k,))]
            ids += [node_id("Array", r[0]) for r in
                    db.execute("SELECT key FROM arrays WHERE sequence_key = ?", (k,))]
        self._delete_nodes(db, ids)
        db.executemany("DELETE FROM sequences WHERE key = ?", [(k,) for k in present])
        self._drop_orphan_sources(db, sources)
        return len(present)

    @staticmethod
    def _source_keys_of(db: sqlite3.Connection, seq_keys: list[str]) -> set[str]:
        if not seq_keys:
            return set()
        return {r[0].split(":", 1)[1] for r in db.execute(
            "SELECT dst FROM edges WHERE rel = 'wasDerivedFrom' AND dst LIKE 'SourceFile:%' AND "
            "src IN (SELECT 'Sequence:' || atlas_key(value) FROM json_each(?))", (_key_list(seq_keys),))}

    @staticmethod
    def _drop_orphan_sources(db: sqlite3.Connection, keys: set[str]) -> None:
        """SourceFile nodes live through the sequences derived from them."""
        for k in keys:
            if db.execute("SELECT 1 FROM edges WHERE dst = ? LIMIT 1",
                          (node_id("SourceFile", k),)).fetchone() is None:
                db.execute("DELETE FROM source_files WHERE key = ?", (k,))

    # ------------------------------------------------------------------------------ store sync

    def store_sync(self) -> StoreSync | None:
        rows = self._q("SELECT store_id, position, pending, version, updated FROM store_sync "
                       "WHERE id = 1")
        if not rows:
            return None
        r = rows[0]
        return StoreSync(r[0], r[1], json.loads(r[2]), r[3], r[4])

    def commit_sync(self, expect_version: int | None, state: StoreSync, *,
                    runs: Iterable[GenerationRun | Mapping[str, Any]] = (),
                    seqs: Iterable[Sequence | Mapping[str, Any]] = (),
                    timesteps: Iterable[TimeStep | Mapping[str, Any]] = (),
                    arrays: Iterable[ArrayRecord | Mapping[str, Any]] = (),
                    remove: Iterable[str] = ()) -> bool:
        """See :meth:`atlasstore.catalog.base.Catalog.commit_sync` (BEGIN IMMEDIATE: the check
        and the writes are one transaction, so a concurrent commit cannot slip in between)."""
        rs, b, gone = sync_batch(runs, seqs, timesteps, arrays, remove, self._validate)
        with self._tx() as db:
            row = db.execute("SELECT version FROM store_sync WHERE id = 1").fetchone()
            have = None if row is None else int(row[0])
            if have != expect_version:
                return False
            for r in rs:
                self._register_run_tx(db, r)
            if gone:
                self._remove_tx(db, gone)
            if b.seqs or b.timesteps or b.arrays:
                self._register_tx(db, b)
            db.execute("INSERT INTO store_sync (id, store_id, position, pending, version, updated) "
                       "VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                       "store_id=excluded.store_id, position=excluded.position, "
                       "pending=excluded.pending, version=excluded.version, "
                       "updated=excluded.updated",
                       (state.store_id, int(state.position), json.dumps(state.pending, sort_keys=True),
                        (have or 0) + 1, utc_now()))
        return True

    # ------------------------------------------------------------------------------ lineage records

    def register_dataset_version(self, version_id: str, query: Mapping[str, Any],
                                 split: Mapping[str, Any], sequence_keys: Iterable[str], *,
                                 created: str | None = None,
                                 checksums: Mapping[str, str] | None = None) -> DatasetVersion:
        keys = list(dict.fromkeys(sequence_keys))
        with self._tx() as db:
            missing = set(keys) - self._existing(db, "sequences", "key", keys)
            if missing:
                raise CatalogNotFound(missing_message("sequences", missing,
                                                      f" (dataset version {version_id!r})"))
            if checksums is None:
                per: dict[str, dict[str, str]] = {k: {} for k in keys}
                for r in db.execute("SELECT sequence_key, level, field, checksum FROM arrays "
                                    "WHERE sequence_key IN (SELECT atlas_key(value) FROM json_each(?))",
                                    (_key_list(keys),)):
                    per[r[0]][f"{r[1]}/{r[2]}"] = r[3]
                checksums = {k: sequence_checksum(v) for k, v in per.items()}
            dv = DatasetVersion.build(version_id, query, split, keys, created,
                                      check=self._validate, checksums=checksums)
            vid = node_id("DatasetVersion", dv.version_id)
            db.execute("INSERT INTO dataset_versions (version_id, query, split, sequence_keys, "
                       "created, checksums) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(version_id) DO "
                       "UPDATE SET query=excluded.query, split=excluded.split, "
                       "sequence_keys=excluded.sequence_keys, created=excluded.created, "
                       "checksums=excluded.checksums",
                       (dv.version_id, dumps(dv.query, "query"), dumps(dv.split, "split"),
                        json.dumps(dv.sequence_keys, ensure_ascii=False), dv.created,
                        dumps(dv.checksums, "checksums")))
            db.execute("DELETE FROM edges WHERE src = ? AND rel = 'wasDerivedFrom'", (vid,))
            db.executemany(_UPSERT_EDGE, [(vid, "wasDerivedFrom", node_id("Sequence", k), "{}")
                                          for k in dv.sequence_keys])
        return dv

    def register_training_run(self, run_id: str, config: Mapping[str, Any],
                              dataset_version_id: str, *, code_version: str | None = None,
                              host: str | None = None, started: str | None = None,
                              finished: str | None = None) -> TrainingRun:
        tr = TrainingRun.build(run_id, config, dataset_version_id, code_version, host,
                               started, finished, check=self._validate)
        tid = node_id("TrainingRun", tr.run_id)
        with self._tx() as db:
            if not self._existing(db, "dataset_versions", "version_id", [dataset_version_id]):
                raise CatalogNotFound(f"dataset version {dataset_version_id!r} is not in the "
                                      f"catalog (training run {run_id!r})")
            db.execute("INSERT INTO training_runs (run_id, config, dataset_version_id, "
                       "code_version, host, started, finished) VALUES (?, ?, ?, ?, ?, ?, ?) "
                       "ON CONFLICT(run_id) DO UPDATE SET config=excluded.config, "
                       "dataset_version_id=excluded.dataset_version_id, "
                       "code_version=excluded.code_version, host=excluded.host, "
                       "started=excluded.started, finished=excluded.finished",
                       (tr.run_id, dumps(tr.config, "config"), tr.dataset_version_id,
                        tr.code_version, tr.host, tr.started, tr.finished))
            db.execute("DELETE FROM edges WHERE src = ? AND rel IN ('used', 'wasAssociatedWith')",
                       (tid,))
            edges = [(tid, "used", node_id("DatasetVersion", tr.dataset_version_id), "{}")]
            if tr.code_version is not None:
                edges.append((tid, "wasAssociatedWith", node_id("CodeVersion", tr.code_version), "{}"))
            if tr.host is not None:
                edges.append((tid, "wasAssociatedWith", node_id("Host", tr.host), "{}"))
            db.executemany(_UPSERT_EDGE, edges)
        return tr

    def register_checkpoint(self, ckpt_id: str, training_run_id: str, step: int,
                            metrics: Mapping[str, Any], path: str, *,
                            created: str | None = None) -> Checkpoint:
        ck = Checkpoint.build(ckpt_id, training_run_id, step, metrics, path, created,
                              check=self._validate)
        cid = node_id("Checkpoint", ck.ckpt_id)
        with self._tx() as db:
            if not self._existing(db, "training_runs", "run_id", [training_run_id]):
                raise CatalogNotFound(f"training run {training_run_id!r} is not in the catalog "
                                      f"(checkpoint {ckpt_id!r})")
            db.execute("INSERT INTO checkpoints (ckpt_id, training_run_id, step, metrics, path, "
                       "created) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(ckpt_id) DO UPDATE SET "
                       "training_run_id=excluded.training_run_id, step=excluded.step, "
                       "metrics=excluded.metrics, path=excluded.path, created=excluded.created",
                       (ck.ckpt_id, ck.training_run_id, ck.step, dumps(ck.metrics, "metrics"),
                        ck.path, ck.created))
            db.execute("DELETE FROM edges WHERE src = ? AND rel = 'wasGeneratedBy'", (cid,))
            db.execute(_UPSERT_EDGE, (cid, "wasGeneratedBy",
                                      node_id("TrainingRun", ck.training_run_id), "{}"))
        return ck
