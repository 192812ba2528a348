"""The bridge between store and catalog: records from committed sequences, sync, selection.

The store is the truth for arrays; the catalog is an index built from what the store committed.
Everything the catalog holds about a sequence is derived here from the sequence's committed
attributes, so ``sync_catalog`` can rebuild a catalog from the store alone (after an outage, or
to populate a new backend). Sequences without a generation run (maps saved directly with
``save_map``) have no lineage to record and are not catalogued.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .catalog.base import Catalog, CatalogError
from .query import Query, Selected
from .store import AtlasStore, RunLog

RUN_FIELDS = ("run_id", "config", "config_hash", "seed", "code_version", "host", "started",
              "finished", "counts")


def is_catalogued(info: Mapping[str, Any]) -> bool:
    """Only sequences produced by a generation run carry lineage into the catalog."""
    return bool(info.get("generation", {}).get("run_id"))


def records_from_info(info: Mapping[str, Any]
                      ) -> tuple[dict[str, Any], list[dict[str, Any]], list[dict[str, Any]]]:
    """(Sequence, TimeSteps, ArrayRecords) as catalog dicts from committed sequence attributes."""
    gen = info["generation"]
    key = f"{info['domain']}/{info['sequence_id']}"
    steps = info["steps"]
    kinds = sorted({p["kind"] for s in steps for p in s.get("perturbations", [])})
    seq = {
        "key": key, "domain": info["domain"], "sequence_id": info["sequence_id"],
        "run_id": gen["run_id"], "seed": int(gen.get("seed") or 0),
        "pattern": gen.get("pattern") or "unknown", "n_steps": info["n_steps"],
        "shape": list(info["shape"]), "levels": list(info["levels"]), "perturbation_kinds": kinds,
        "entropy_min": min(s["entropy"] for s in steps), "entropy_max": max(s["entropy"] for s in steps),
        "mean_min": min(s["mean"] for s in steps), "mean_max": max(s["mean"] for s in steps),
        "variance_min": min(s["variance"] for s in steps),
        "variance_max": max(s["variance"] for s in steps),
        "created": info.get("completed") or info["created"], "status": "complete",
    }
    timesteps = [{"key": f"{key}/{s['t']}", "sequence_key": key, "t": s["t"], "mean": s["mean"],
                  "variance": s["variance"], "entropy": s["entropy"], "sum": s["sum"],
                  "perturbation_kinds": sorted({p["kind"] for p in s.get("perturbations", [])})}
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


def register_run(catalog: Catalog, run: Mapping[str, Any]) -> None:
    catalog.register_run({k: run[k] for k in RUN_FIELDS})


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


def sync_catalog(store: AtlasStore, catalog: Catalog, prune: bool = True,
                 batch_size: int = 256) -> dict[str, Any]:
    """Make the catalog match the store: register runs and every committed sequence; with
    ``prune``, remove catalogued sequences the store no longer has. Idempotent.

    A batch the catalog refuses is retried one sequence at a time, so one bad record (e.g. a
    sequence naming a run the store has no record of) costs only itself: it is returned under
    ``refused`` with the reason, and everything else is registered.
    """
    runs = RunLog(store).list()
    for run in runs:
        register_run(catalog, run)
    stored: set[str] = set()
    refused: dict[str, str] = {}
    registered = 0

    def flush(batch: list[Mapping[str, Any]]) -> int:
        try:
            return register_sequence_infos(catalog, batch)
        except (CatalogError, ValueError):
            n = 0
            for info in batch:
                try:
                    n += register_sequence_infos(catalog, [info])
                except (CatalogError, ValueError) as exc:
                    refused[f"{info['domain']}/{info['sequence_id']}"] = f"{type(exc).__name__}: {exc}"
            return n

    batch: list[Mapping[str, Any]] = []
    for domain, seq in store.iter_sequences():
        info = store.sequence_info(domain, seq)
        if not is_catalogued(info):
            continue
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
    return {"registered": registered, "removed": removed, "runs": len(runs), "refused": refused}


class CatalogSelector:
    """Answers a query's selection from the catalog's index, without reading Zarr attributes.

    Sequence-level filters (domain, run, scale, perturbation kind) go to ``find_sequences``;
    per-step stat ranges go to ``find_timesteps`` and become the set of allowed steps.
    """

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog

    def select(self, query: Query) -> list[Selected]:
        domains = query.resolved_domains()
        # no level filter here: Query.selection() refuses a sequence without the scale, exactly
        # as with the store scan
        seqs = self.catalog.find_sequences(domains=domains, run_id=query.run_id,
                                           perturbation=query.perturbation)
        seqs = [s for s in seqs if query.wants_sequence(s.domain, s.sequence_id)]
        allowed: dict[str, set[int]] = {}
        if query.has_stat_filters() and seqs:
            for ts in self.catalog.find_timesteps(domains=domains, entropy=query.entropy,
                                                  mean=query.mean,
                                                  variance=query.variance,
                                                  sequence_keys=[s.key for s in seqs]):
                allowed.setdefault(ts.sequence_key, set()).add(ts.t)
        out = []
        for s in sorted(seqs, key=lambda s: (domains.index(s.domain), s.sequence_id)):
            steps = frozenset(allowed.get(s.key, set())) if query.has_stat_filters() else None
            out.append(Selected(s.domain, s.sequence_id, s.n_steps, tuple(s.levels), steps))
        return out
