"""The bridge between store and catalog: records from committed sequences, keeping a catalog up
to date with its store, and answering queries from it without ever answering differently.

The store is the truth; the catalog is an index built from what the store committed. Every
committed sequence is catalogued, whoever wrote it (``generation.kind``: the generator, an
import, ``AtlasStore.write_sequence``, ``compat.save_map``), so the catalog can be rebuilt from
the store alone (:func:`sync_catalog`).

Keeping up: the store's change log (:mod:`atlasstore.store.change_log`) has one entry per sequence
write or delete and per run-record update, claimed *before* the change becomes visible. A
catalog remembers the store it serves and the log position it has applied (``StoreSync``).
:func:`catch_up` reads the entries since that position (one GET each, plus one that finds the
end), re-reads the named sequences (one GET each) and applies what it finds in one
compare-and-swap transaction. An entry whose change is not visible yet (a writer between its
intent and its commit, or one that crashed there) stays *pending*: re-read on every catch-up
until the sequence's state confirms it, and answered from the store meanwhile.

Answering: :class:`CatalogSelector` checks that the catalog is current before every selection
(:func:`catalog_view`): if it is behind it catches up (when it can write) or answers the changed
and pending sequences from the store (when it cannot); a catalog never synced with this store is
not used (the store is scanned); a catalog of another store is refused. So a query gives the
store scan's answer with or without a catalog.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from atlasstore.catalog.base import SEQUENCE_KINDS
from atlasstore.catalog.batches import make_batch
from atlasstore.catalog.protocol import Catalog
from atlasstore.catalog.records import StoreSync, run_record, sequence_checksum
from atlasstore.errors import CatalogError, CatalogMismatch, CatalogNotSynced, InvalidName
from atlasstore.records import validate_name
from atlasstore.store.atlas_store import AtlasStore
from atlasstore.store.change_log import Change, ChangeLog, logs_whole_history, store_id
from atlasstore.store.run_log import RunLog

RUN_FIELDS = ("run_id", "config", "config_hash", "seed", "code_version", "host", "started",
              "finished", "counts")
#: log entries applied per catalog transaction
CATCH_UP_BATCH = 512
_MAX_SEED = 2**63 - 1


# --------------------------------------------------------------------------- records


def sequence_kind(generation: Mapping[str, Any]) -> str:
    """Who wrote a sequence (the provenance contract): ``kind``, else "generate" when it names a
    run (stores from before kinds), "save_map" when its source says so, else "api"."""
    kind = generation.get("kind")
    if kind in SEQUENCE_KINDS:
        return str(kind)
    if generation.get("run_id"):
        return "generate"
    source = generation.get("source")
    return "save_map" if isinstance(source, str) and source.startswith("save_map") else "api"


def is_catalogued(info: Mapping[str, Any]) -> bool:
    """Every committed sequence is catalogued, whoever wrote it."""
    return info.get("status") == "complete"


def _opt_str(v: Any, limit: int = 4096) -> str | None:
    return v[:limit] if isinstance(v, str) and v else None


def records_from_info(info: Mapping[str, Any]
                      ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(Sequence, TimeSteps, ArrayRecords) as catalog dicts from committed sequence attributes.

    Every field is taken from the attributes as committed; what the catalog cannot hold as given
    (a seed outside 0..2^63-1) is None. Steps without entropy (intensive fields) have None.
    """
    gen = info.get("generation") or {}
    key = f"{info['domain']}/{info['sequence_id']}"
    steps = info["steps"]
    kinds = sorted({p["kind"] for s in steps for p in s.get("perturbations", [])})
    seed = gen.get("seed")
    ents = [s["entropy"] for s in steps if s.get("entropy") is not None]
    kind = sequence_kind(gen)
    seq = {
        "key": key, "domain": info["domain"], "sequence_id": info["sequence_id"],
        "run_id": _opt_str(gen.get("run_id")),
        "seed": seed if isinstance(seed, int) and not isinstance(seed, bool)
        and 0 <= seed <= _MAX_SEED else None,
        "pattern": _opt_str(gen.get("pattern")), "n_steps": info["n_steps"],
        "shape": list(info["shape"]), "levels": list(info["levels"]), "perturbation_kinds": kinds,
        "entropy_min": min(ents) if ents else None, "entropy_max": max(ents) if ents else None,
        "mean_min": min(s["mean"] for s in steps), "mean_max": max(s["mean"] for s in steps),
        "variance_min": min(s["variance"] for s in steps),
        "variance_max": max(s["variance"] for s in steps),
        "created": info.get("completed") or info["created"], "status": "complete",
        "kind": kind, "source": _opt_str(gen.get("source")),
        "sources": [{k: f.get(k) for k in ("uri", "size", "sha256", "format", "member")}
                    for f in gen.get("sources") or []] if kind == "import" else [],
    }
    timesteps = [{"key": f"{key}/{s['t']}", "sequence_key": key, "t": s["t"], "mean": s["mean"],
                  "variance": s["variance"], "entropy": s.get("entropy"), "sum": s.get("sum"),
                  "perturbation_kinds": sorted({p["kind"] for p in s.get("perturbations", [])}),
                  "valid_cells": s.get("valid_cells")}
                 for s in steps]
    arrays = []
    for akey, rec in info["arrays"].items():
        level, field = akey.split("/")
        arrays.append({
            "key": f"{key}/{akey}", "sequence_key": key, "level": int(level), "field": field,
            "shape": list(rec["shape"]), "dtype": info["dtype"], "checksum": rec["checksum"],
            "nbytes_stored": int(rec.get("nbytes_stored", 0)), "stats": dict(rec["stats"]),
            "derived_from": f"{key}/{rec['derived_from']}" if rec.get("derived_from") else None,
            "operation": rec.get("operation"),
        })
    return seq, timesteps, arrays


def run_from_record(run: Mapping[str, Any]) -> dict[str, Any]:
    """A catalog run dict from a run record of the store (``_runs/<run_id>``)."""
    kind = run.get("kind") or ("import" if str(run["run_id"]).startswith("import-") else "generate")
    return {**{k: run[k] for k in RUN_FIELDS}, "kind": kind}


def register_run(catalog: Catalog, run: Mapping[str, Any]) -> None:
    catalog.register_run(run_from_record(run))


def register_sequence_infos(catalog: Catalog, infos: Iterable[Mapping[str, Any]]) -> int:
    """Register a batch of committed sequences (one catalog transaction); returns how many."""
    seqs, steps, arrays = [], [], []
    for info in infos:
        if not is_catalogued(info):
            continue
        s, t, a = records_from_info(info)
        seqs.append(s)
        steps += t
        arrays += a
    if seqs:
        catalog.register_sequences(seqs, steps, arrays)
    return len(seqs)


def info_checksum(info: Mapping[str, Any]) -> str:
    """:func:`~atlasstore.catalog.base.sequence_checksum` of a committed sequence's arrays."""
    return sequence_checksum({k: rec["checksum"] for k, rec in info["arrays"].items()})


def dataset_checksums(store: AtlasStore, keys: Iterable[str]) -> dict[str, str]:
    """The pins of a dataset version, read from the store: key -> checksum of its data."""
    out = {}
    for key in keys:
        domain, _, seq = key.partition("/")
        out[key] = info_checksum(store.sequence_info(domain, seq))
    return out


# --------------------------------------------------------------------------- reading the store


def _sequence_docs(store: AtlasStore, keys: list[str]) -> dict[str, dict[str, Any] | None]:
    """Fresh ``atlasstore_sequence`` records (None: no sequence; {}: a damaged or incomplete
    document) of ``keys``, read concurrently as plain JSON (never from the store's cache)."""
    return _json_attrs(store, {k: f"{k}/zarr.json" for k in keys}, "atlasstore_sequence")


def _run_docs(store: AtlasStore, run_ids: Iterable[str]) -> dict[str, dict[str, Any] | None]:
    return _json_attrs(store, {r: f"_runs/{r}/zarr.json" for r in run_ids}, "atlasstore_run")


def _json_attrs(store: AtlasStore, paths: Mapping[str, str], attr: str
                ) -> dict[str, dict[str, Any] | None]:
    zstore = store.zarr_group.store
    proto = default_buffer_prototype()

    async def one(path: str) -> dict[str, Any] | None:
        buf = await zstore.get(path, prototype=proto)
        if buf is None:
            return None
        try:
            doc = json.loads(buf.to_bytes())
        except ValueError:
            return {}
        attrs = doc.get("attributes") if isinstance(doc, dict) else None
        rec = attrs.get(attr) if isinstance(attrs, dict) else None
        return rec if isinstance(rec, dict) else {}

    async def all_() -> list[dict[str, Any] | None]:
        return list(await asyncio.gather(*(one(p) for p in paths.values())))

    return dict(zip(paths, sync(all_()), strict=True)) if paths else {}


def _valid_key(key: str) -> bool:
    domain, _, seq = key.partition("/")
    try:
        validate_name(domain, "domain name")
        validate_name(seq, "sequence id")
    except InvalidName:
        return False
    return True


@dataclass
class _Plan:
    """What one catch-up commits: records of the changed sequences, as read now."""

    seqs: list[dict[str, Any]]
    timesteps: list[dict[str, Any]]
    arrays: list[dict[str, Any]]
    remove: list[str]
    pending: dict[str, str]
    runs: list[dict[str, Any]]
    refused: dict[str, str]


def _plan(store: AtlasStore, catalog: Catalog, ops: Mapping[str, str],
          run_ids: Iterable[str]) -> _Plan:
    """Read the sequences named in ``ops`` (key -> the op of its latest entry) and decide.

    A ``write`` is confirmed by a complete sequence, a ``delete`` by an absent one (the log
    claims a write only after the old version was deleted under its own entry, so a complete
    sequence after a write entry is the new data). Whatever the state, the catalog gets it as it
    is now (complete: registered; otherwise removed); an unconfirmed entry stays pending.
    """
    p = _Plan([], [], [], [], {}, [], {})
    keys = [k for k in ops if _valid_key(k)]
    p.remove += [k for k in ops if k not in keys]  # (names the store refuses: never stored)
    docs = _sequence_docs(store, keys)
    need_runs = set(run_ids)
    for key in keys:
        rec, op = docs[key], ops[key]
        if rec and rec.get("status") == "complete":
            try:
                s, t, a = records_from_info(rec)
                make_batch([s], t, a, check=True)
            except (CatalogError, ValueError, KeyError, TypeError, AttributeError) as exc:
                p.refused[key] = f"{type(exc).__name__}: {exc}"
                p.pending[key] = "refused"  # answered from the store until it can be catalogued
                p.remove.append(key)
                continue
            p.seqs.append(s)
            p.timesteps += t
            p.arrays += a
            if s["run_id"] is not None:
                need_runs.add(s["run_id"])
            if op == "delete":
                p.pending[key] = op
        else:
            p.remove.append(key)
            if op == "write" or (op == "delete" and rec is not None):
                p.pending[key] = op  # (a refused one that is gone or incomplete is settled)
    explicit = set(run_ids)
    missing = {r for r in need_runs - explicit if catalog.get_run(r) is None}
    for run in _run_docs(store, sorted(explicit | missing)).values():
        if run:
            try:
                p.runs.append(run_record(run_from_record(run)).to_dict())
            except (CatalogError, ValueError, KeyError, TypeError):
                continue  # a damaged run record: its sequences stay without a run edge
    return p


# --------------------------------------------------------------------------- keeping up


@dataclass
class CatchUp:
    """What :func:`catch_up` did."""

    applied: int = 0  # log entries applied
    registered: int = 0
    removed: int = 0
    pending: int = 0  # changes still in flight (answered from the store)
    position: int = 0
    refused: dict[str, str] = field(default_factory=dict)


def _check_binding(st: StoreSync | None, sid: str, store: AtlasStore, catalog: Catalog) -> None:
    if st is not None and st.store_id != sid:
        raise CatalogMismatch(
            f"catalog {getattr(catalog, 'uri', catalog)} belongs to another store (store id "
            f"{st.store_id}); {store.location} is store {sid}. Use this store's catalog "
            "(--catalog), or rebuild this one for it with `atlas catalog sync --rebind`")


def catch_up(store: AtlasStore, catalog: Catalog, *, batch: int = CATCH_UP_BATCH) -> CatchUp:
    """Apply the store's changes since the catalog's last sync: O(changes), never a listing.

    A catalog never synced is bound to the store here when the store's log holds its whole
    history and the catalog is empty; otherwise :class:`CatalogNotSynced` (``atlas catalog
    sync`` builds it). :class:`CatalogMismatch` for a catalog of another store.
    """
    sid = store_id(store)
    log = ChangeLog(store)
    out = CatchUp()
    while True:
        st = catalog.store_sync()
        _check_binding(st, sid, store, catalog)
        if st is None:
            if not logs_whole_history(store):
                raise CatalogNotSynced(f"catalog {getattr(catalog, 'uri', catalog)} has not been "
                                       f"synced with {store.location}; run `atlas catalog sync`")
            if catalog.count() > 0:
                raise CatalogNotSynced(f"catalog {getattr(catalog, 'uri', catalog)} holds "
                                       "sequences from before it followed this store; run "
                                       "`atlas catalog sync`")
            st_pos, st_pending, expect = 0, {}, None
        else:
            st_pos, st_pending, expect = st.position, dict(st.pending), st.version
        entries = log.read(st_pos, limit=batch)
        if not entries and st is not None and not st_pending:
            out.position = st_pos
            return out
        ops, run_ids = _latest_ops(entries, st_pending)
        plan = _plan(store, catalog, ops, run_ids)
        if not entries and st is not None and plan.pending == st_pending:
            # nothing new: pending changes still in flight; the catalog already holds their
            # current state (registered or removed when they were last read)
            out.pending, out.position = len(plan.pending), st_pos
            return out
        new = StoreSync(sid, st_pos + len(entries), plan.pending)
        if catalog.commit_sync(expect, new, runs=plan.runs, seqs=plan.seqs,
                               timesteps=plan.timesteps, arrays=plan.arrays, remove=plan.remove):
            out.applied += len(entries)
            out.registered += len(plan.seqs)
            out.removed += len(plan.remove)
            out.pending, out.position = len(plan.pending), new.position
            out.refused.update(plan.refused)
            if len(entries) < batch:
                return out
        # else another process committed first: read its state and go on from there


def _latest_ops(entries: list[Change], pending: Mapping[str, str]
                ) -> tuple[dict[str, str], set[str]]:
    """Sequence key -> op of its latest entry (pending ones first, entries override), and the
    run ids of run entries."""
    ops = {k: v for k, v in pending.items()}
    runs: set[str] = set()
    for e in entries:
        if e.op == "run" and e.run_id:
            runs.add(e.run_id)
        elif e.key is not None:
            ops[e.key] = e.op
    return ops, runs


def refresh(store: AtlasStore, catalog: Catalog) -> CatchUp:
    """:func:`catch_up`, or a full :func:`sync_catalog` where the log alone cannot build it."""
    try:
        return catch_up(store, catalog)
    except CatalogNotSynced:
        res = sync_catalog(store, catalog)
        return CatchUp(registered=res["registered"], removed=res["removed"],
                       refused=res["refused"])


def sync_catalog(store: AtlasStore, catalog: Catalog, prune: bool = True,
                 batch_size: int = 256, rebind: bool = False) -> dict[str, Any]:
    """Make the catalog match the store: register runs and every committed sequence; with
    ``prune``, remove catalogued sequences the store no longer has; bind the catalog to the
    store at the log's current head. Idempotent. ``rebind`` takes over a catalog of another
    store (its sequences are pruned; its training lineage stays).

    Concurrent writers are safe: the head is read first, the sequences changed since the
    catalog's last sync are re-read and committed last together with the new position (so a
    change in flight during the scan is pending, not lost), and the position is only ever set
    to that head, so anything a concurrent catch-up applied after it is applied again.

    A sequence the catalog refuses (a record it cannot hold) costs only itself: it is returned
    under ``refused`` with the reason and answered from the store by queries.
    """
    sid = store_id(store)
    st = catalog.store_sync()
    if not rebind:
        _check_binding(st, sid, store, catalog)
    log = ChangeLog(store)
    head = log.head()
    start = st.position if st is not None and st.store_id == sid else 0
    recent = {e.key: e.op for e in log.read(start, limit=max(0, head - start))
              if e.key is not None}
    runs = RunLog(store).list()
    for run in runs:
        try:
            register_run(catalog, run)
        except (CatalogError, ValueError, KeyError):
            continue  # a damaged run record; its sequences stay without a run edge
    stored: set[str] = set()
    refused: dict[str, str] = {}
    registered = 0

    def flush(batch: list[Mapping[str, Any]]) -> int:
        try:
            return register_sequence_infos(catalog, batch)
        except (CatalogError, ValueError, KeyError, TypeError):
            n = 0
            for info in batch:
                try:
                    n += register_sequence_infos(catalog, [info])
                except (CatalogError, ValueError, KeyError, TypeError) as exc:
                    refused[f"{info['domain']}/{info['sequence_id']}"] = f"{type(exc).__name__}: {exc}"
            return n

    batch: list[Mapping[str, Any]] = []
    for domain, seq in store.iter_sequences():
        info = store.sequence_info(domain, seq)
        stored.add(f"{domain}/{seq}")
        batch.append(info)
        if len(batch) >= batch_size:
            registered += flush(batch)
            batch = []
    registered += flush(batch)
    removed = 0
    if prune:
        extra = sorted(set(catalog.sequence_keys()) - stored)
        if extra:
            removed = catalog.remove_sequences(extra)
    # the changes since the last sync, as they are now, and the new position, in one CAS commit
    while True:
        cur = catalog.store_sync()
        ops = {**(dict(cur.pending) if cur is not None and cur.store_id == sid else {}), **recent,
               **{k: "refused" for k in refused}}
        plan = _plan(store, catalog, ops, ())
        if catalog.commit_sync(cur.version if cur is not None else None,
                               StoreSync(sid, head, plan.pending), runs=plan.runs, seqs=plan.seqs,
                               timesteps=plan.timesteps, arrays=plan.arrays, remove=plan.remove):
            break
    refused = {k: v for k, v in refused.items() if k in plan.refused} | plan.refused
    return {"registered": registered, "removed": removed, "runs": len(runs), "refused": refused}


# --------------------------------------------------------------------------- answering queries


