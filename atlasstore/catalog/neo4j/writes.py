"""Registering records, store-sync state and lineage records in managed write transactions."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from atlasstore.catalog.base import (
    batch_widths,
    dumps,
)
from atlasstore.catalog.batches import chunks, make_batch, missing_message, sync_batch
from atlasstore.catalog.neo4j.connection import Neo4jConnection
from atlasstore.catalog.neo4j.cypher_writes import (
    _ARRAY_CHECKSUMS,
    _DELETE_STALE_PARTS,
    _DETACH_SOURCES,
    _DROP_ORPHAN_SOURCES,
    _LINK_DATASET,
    _MERGE_ARRAYS,
    _MERGE_CHECKPOINT,
    _MERGE_DATASET,
    _MERGE_RUN,
    _MERGE_SEQUENCES,
    _MERGE_SOURCES,
    _MERGE_TIMESTEPS,
    _MERGE_TRAINING,
    _REMOVE_SEQUENCES,
    _SYNC_GET,
    _SYNC_LOCK,
    _SYNC_SET,
)
from atlasstore.catalog.neo4j.failures import _VersionMoved
from atlasstore.catalog.neo4j.rows import _arr_row, _run_props, _seq_row, _ts_row
from atlasstore.catalog.neo4j.schema import _GROW_WIDTHS
from atlasstore.catalog.records import (
    ArrayRecord,
    Checkpoint,
    DatasetVersion,
    GenerationRun,
    Sequence,
    StoreSync,
    TimeStep,
    TrainingRun,
    run_record,
    sequence_checksum,
)
from atlasstore.errors import CatalogNotFound
from atlasstore.io.provenance import utc_now


class Neo4jWrites(Neo4jConnection):
    """The writing half of :class:`~atlasstore.catalog.neo4j.Neo4jCatalog`."""

    # ------------------------------------------------------------------------------ registration

    def register_run(self, run: GenerationRun | Mapping[str, Any]) -> None:
        r = run_record(run, check=self._validate)
        self._write(lambda tx: self._register_run_tx(tx, r))

    def register_sequences(self, seqs: Iterable[Sequence | Mapping[str, Any]],
                           timesteps: Iterable[TimeStep | Mapping[str, Any]] = (),
                           arrays: Iterable[ArrayRecord | Mapping[str, Any]] = ()) -> None:
        """Insert or replace sequences with their parts, in one transaction.

        Same semantics as :meth:`SQLiteCatalog.register_sequences`: a sequence given here is
        replaced whole (its parts and source files become exactly those of this call); parts of
        other sequences must refer to catalogued ones; ``derived_from`` must resolve; a run id
        may name a run that is not catalogued yet.
        """
        b = make_batch(seqs, timesteps, arrays, self._validate)
        if not (b.seqs or b.timesteps or b.arrays):
            return
        work = self._register_work(b)
        self._write(work)

    def remove_sequences(self, keys: Iterable[str]) -> int:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return 0
        return int(self._write(lambda tx: self._remove_tx(tx, keys)))

    # (the bodies of the public writes, run inside a transaction; commit_sync combines them)

    @staticmethod
    def _register_run_tx(tx: Any, r: GenerationRun) -> None:
        tx.run(_MERGE_RUN[r.NODE_KIND], props=_run_props(r), code_version=r.code_version,
               host=r.host).consume()

    def _register_work(self, b: Any) -> Callable[[Any], None]:
        """The transaction function registering batch ``b`` (rows prepared outside it)."""
        seq_rows = [_seq_row(s) for s in b.seqs]
        ts_rows = [_ts_row(t) for t in b.timesteps]
        arr_rows = [_arr_row(a) for a in b.arrays]
        src_rows = [[s.key, f.key, f.uri, f.size, f.sha256, f.format, member]
                    for s in b.seqs for f, member in s.source_files()]
        stale_rows = [{"key": k, "keep": v} for k, v in b.child_keys_by_sequence().items()]
        widths = batch_widths(b.seqs) if b.seqs else None
        seq_keys = [s.key for s in b.seqs]
        outside = sorted(b.outside_sequence_keys())
        derived_outside = sorted(b.outside_derived_keys())
        n = self.batch_size

        def work(tx: Any) -> None:
            missing = self._missing(tx, "Sequence", outside)
            if missing:
                raise CatalogNotFound(missing_message("sequences", missing,
                                                      " (parts given without their sequence)"))
            missing = self._missing(tx, "Array", derived_outside)
            if missing:
                raise CatalogNotFound(missing_message("arrays named in derived_from", missing))
            for ch in chunks(stale_rows, n):
                tx.run(_DELETE_STALE_PARTS, rows=ch).consume()
            old_files: set[str] = set()
            for ch in chunks(seq_keys, n):
                old_files |= set(tx.run(_DETACH_SOURCES, keys=ch).single()["files"])
            if widths is not None:
                tx.run(_GROW_WIDTHS, **widths).consume()
            for ch in chunks(seq_rows, n):
                tx.run(_MERGE_SEQUENCES, rows=ch).consume()
            for ch in chunks(src_rows, n):
                tx.run(_MERGE_SOURCES, rows=ch).consume()
            for ch in chunks(sorted(old_files), n):
                tx.run(_DROP_ORPHAN_SOURCES, keys=ch).consume()
            for ch in chunks(ts_rows, n):
                tx.run(_MERGE_TIMESTEPS, rows=ch).consume()
            for ch in chunks(arr_rows, n):
                tx.run(_MERGE_ARRAYS, rows=ch).consume()
        return work

    def _remove_tx(self, tx: Any, keys: list[str]) -> int:
        total = 0
        files: set[str] = set()
        for ch in chunks(keys, self.batch_size):
            files |= set(tx.run(_DETACH_SOURCES, keys=ch).single()["files"])
            total += tx.run(_REMOVE_SEQUENCES, keys=ch).single()["n"]
        for ch in chunks(sorted(files), self.batch_size):
            tx.run(_DROP_ORPHAN_SOURCES, keys=ch).consume()
        return total

    # ------------------------------------------------------------------------------ store sync

    def store_sync(self) -> StoreSync | None:
        rows = self._rows(_SYNC_GET)
        if not rows:
            return None
        r = rows[0]
        return StoreSync(r["store_id"], int(r["position"]), json.loads(r["pending"]),
                         int(r["version"]), r["updated"])

    def commit_sync(self, expect_version: int | None, state: StoreSync, *,
                    runs: Iterable[GenerationRun | Mapping[str, Any]] = (),
                    seqs: Iterable[Sequence | Mapping[str, Any]] = (),
                    timesteps: Iterable[TimeStep | Mapping[str, Any]] = (),
                    arrays: Iterable[ArrayRecord | Mapping[str, Any]] = (),
                    remove: Iterable[str] = ()) -> bool:
        """See :meth:`atlasstore.catalog.base.Catalog.commit_sync`: one write transaction that
        first locks the sync node, then compares its version (a retry of the transaction by the
        driver repeats the comparison, so it stays a compare-and-swap)."""
        rs, b, gone = sync_batch(runs, seqs, timesteps, arrays, remove, self._validate)
        register = self._register_work(b) if (b.seqs or b.timesteps or b.arrays) else None
        pending = dumps(state.pending, "pending")

        def work(tx: Any) -> bool:
            have = tx.run(_SYNC_LOCK).single()["version"]
            if have != expect_version:
                raise _VersionMoved  # rolls the transaction back (the lock write too)
            for r in rs:
                self._register_run_tx(tx, r)
            if gone:
                self._remove_tx(tx, gone)
            if register is not None:
                register(tx)
            tx.run(_SYNC_SET, store_id=state.store_id, position=int(state.position),
                   pending=pending, version=(have or 0) + 1, updated=utc_now()).consume()
            return True
        try:
            return bool(self._write(work))
        except _VersionMoved:
            return False

    # ------------------------------------------------------------------------------ lineage records

    def register_dataset_version(self, version_id: str, query: Mapping[str, Any],
                                 split: Mapping[str, Any], sequence_keys: Iterable[str], *,
                                 created: str | None = None,
                                 checksums: Mapping[str, str] | None = None) -> DatasetVersion:
        keys = list(dict.fromkeys(sequence_keys))
        if checksums is not None:  # checked before the transaction
            DatasetVersion.build(version_id, query, split, keys, created, check=self._validate,
                                 checksums=checksums)
        n = self.batch_size

        def work(tx: Any) -> DatasetVersion:
            missing = self._missing(tx, "Sequence", keys)
            if missing:
                raise CatalogNotFound(missing_message("sequences", missing,
                                                      f" (dataset version {version_id!r})"))
            pins = checksums
            if pins is None:
                pins = {}
                for ch in chunks(keys, n):
                    for rec in tx.run(_ARRAY_CHECKSUMS, keys=ch):
                        pins[rec["key"]] = sequence_checksum(
                            {f"{lv}/{f}": c for lv, f, c in rec["arrays"]})
                pins = {k: pins.get(k, sequence_checksum({})) for k in keys}
            dv = DatasetVersion.build(version_id, query, split, keys, created,
                                      check=self._validate, checksums=pins)
            props = {"key": dv.version_id, "version_id": dv.version_id,
                     "query": dumps(dv.query, "query"), "split": dumps(dv.split, "split"),
                     "sequence_keys": dv.sequence_keys, "created": dv.created,
                     "checksums": dumps(dv.checksums, "checksums")}
            tx.run(_MERGE_DATASET, props=props).consume()
            for ch in chunks(dv.sequence_keys, n):
                tx.run(_LINK_DATASET, key=dv.version_id, keys=ch).consume()
            return dv
        return self._write(work)

    def register_training_run(self, run_id: str, config: Mapping[str, Any],
                              dataset_version_id: str, *, code_version: str | None = None,
                              host: str | None = None, started: str | None = None,
                              finished: str | None = None) -> TrainingRun:
        tr = TrainingRun.build(run_id, config, dataset_version_id, code_version, host,
                               started, finished, check=self._validate)
        props = {"key": tr.run_id, "run_id": tr.run_id, "config": dumps(tr.config, "config"),
                 "dataset_version_id": tr.dataset_version_id, "code_version": tr.code_version,
                 "host": tr.host, "started": tr.started, "finished": tr.finished}

        def work(tx: Any) -> None:
            rec = tx.run(_MERGE_TRAINING, props=props, code_version=tr.code_version,
                         host=tr.host).single()
            if rec is None:
                raise CatalogNotFound(f"dataset version {dataset_version_id!r} is not in the "
                                      f"catalog (training run {run_id!r})")
        self._write(work)
        return tr

    def register_checkpoint(self, ckpt_id: str, training_run_id: str, step: int,
                            metrics: Mapping[str, Any], path: str, *,
                            created: str | None = None) -> Checkpoint:
        ck = Checkpoint.build(ckpt_id, training_run_id, step, metrics, path, created,
                              check=self._validate)
        props = {"key": ck.ckpt_id, "ckpt_id": ck.ckpt_id, "training_run_id": ck.training_run_id,
                 "step": ck.step, "metrics": dumps(ck.metrics, "metrics"), "path": ck.path,
                 "created": ck.created}

        def work(tx: Any) -> None:
            if tx.run(_MERGE_CHECKPOINT, props=props).single() is None:
                raise CatalogNotFound(f"training run {training_run_id!r} is not in the catalog "
                                      f"(checkpoint {ckpt_id!r})")
        self._write(work)
        return ck
