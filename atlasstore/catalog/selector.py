"""Answering a query's selection from the catalog: :func:`catalog_view` (the catalog caught up
with the store's change log, or the reason it cannot be) and :class:`CatalogSelector`."""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from atlasstore.catalog.protocol import Catalog
from atlasstore.catalog.records import Sequence as CatalogSequence
from atlasstore.catalog.sync import _check_binding, catch_up
from atlasstore.errors import CatalogError, CatalogMismatch
from atlasstore.query import Query, Selected, StoreSelector
from atlasstore.query_names import named_ids
from atlasstore.store.atlas_store import AtlasStore
from atlasstore.store.change_log import ChangeLog, store_id


@dataclass(frozen=True)
class CatalogView:
    """How a catalog may answer right now (see :func:`catalog_view`).

    ``mode``: "catalog" (current), "refreshed" (was behind, caught up), "overlay" (behind and not
    writable: ``scan_keys`` are answered from the store), "scan" (not usable: the store is
    scanned). ``scan_keys`` are always answered from the store (changes in flight); None means
    everything. ``note`` says why, for a person.
    """

    mode: str
    scan_keys: frozenset[str] | None
    note: str | None = None
    applied: int = 0


def catalog_view(store: AtlasStore, catalog: Catalog, refresh: bool = True) -> CatalogView:
    """Check the catalog against the store's change log: one GET past the catalog's position,
    plus one per change since (and per pending change); catch up when ``refresh`` and possible."""
    uri = getattr(catalog, "uri", catalog)
    sid = store_id(store)
    st = catalog.store_sync()
    if st is None:
        return CatalogView("scan", None, f"catalog {uri} has not been synced with this store: "
                           "answered by scanning the store (run `atlas catalog sync` to use it)")
    _check_binding(st, sid, store, catalog)
    entries = ChangeLog(store).read(st.position)
    changed = {e.key for e in entries if e.key is not None} | set(st.pending)
    if not entries and not st.pending:
        return CatalogView("catalog", frozenset())
    why = "refresh is off"
    if refresh:
        try:
            res = catch_up(store, catalog)
        except CatalogMismatch:
            raise
        except (CatalogError, sqlite3.Error, OSError) as exc:  # e.g. a read-only catalog
            why = f"it cannot be updated: {type(exc).__name__}: {str(exc).strip()[:200]}"
        else:
            now = catalog.store_sync()
            return CatalogView("refreshed", frozenset(now.pending if now else ()),
                               applied=res.applied)
    return CatalogView("overlay", frozenset(changed),
                       f"catalog {uri} is {len(entries)} change(s) behind the store and {why}; "
                       f"answered those {len(changed)} sequence(s) from the store (run `atlas "
                       "catalog sync` to update it)")


class CatalogSelector:
    """Answers a query's selection from the catalog's index, giving exactly the store scan's
    answer (see the module docstring): before each selection the catalog is checked against the
    store's change log; changed sequences it could not apply are read from the store.

    Sequence-level filters (domain, run, perturbation kind) go to ``find_sequences``; per-step
    stat ranges go to ``find_timesteps`` and become the set of allowed steps. ``refresh``: catch
    the catalog up when it is behind (else answer the changes from the store). After a
    selection, ``view`` tells how it was answered.
    """

    def __init__(self, catalog: Catalog, *, refresh: bool = True) -> None:
        self.catalog = catalog
        self.refresh = refresh
        self.view: CatalogView | None = None

    def select(self, query: Query) -> list[Selected]:
        self.view = view = catalog_view(query.store, self.catalog, self.refresh)
        if view.scan_keys is None:
            return StoreSelector().select(query)
        out = [s for s in self._from_catalog(query)
               if f"{s.domain}/{s.sequence_id}" not in view.scan_keys]
        if view.scan_keys:
            out += StoreSelector(only=view.scan_keys).select(query)
        domains = query.resolved_domains()
        return sorted(out, key=lambda s: (domains.index(s.domain), s.sequence_id))

    def _from_catalog(self, query: Query) -> list[Selected]:
        domains = query.resolved_domains()
        seqs = self._sequences(query, domains)
        allowed: dict[str, set[int]] = {}
        if query.has_stat_filters() and seqs:
            # the sequences' keys go along only where the catalog cannot filter the sequences
            # itself (named ones, a perturbation kind): a whole domain's keys made every stat
            # query send and match them all, whatever it selected
            narrow = query.sequences is not None or query.perturbation is not None
            for ts in self.catalog.find_timesteps(
                    domains=domains, run_id=query.run_id, entropy=query.entropy,
                    mean=query.mean, variance=query.variance,
                    sequence_keys=[s.key for s in seqs] if narrow else None):
                allowed.setdefault(ts.sequence_key, set()).add(ts.t)
        out = []
        for s in seqs:
            steps = frozenset(allowed.get(s.key, set())) if query.has_stat_filters() else None
            out.append(Selected(s.domain, s.sequence_id, s.n_steps, tuple(s.levels), steps))
        return out

    def _sequences(self, query: Query, domains: list[str]) -> list[CatalogSequence]:
        """The catalogued sequences that qualify. Named sequences are looked up by key (a query
        naming one sequence costs one lookup, whatever the catalog holds). Otherwise every
        sequence of the domains that passes the sequence filters: as in the store scan, one
        whose steps all fail the stat ranges is still selected (its length and levels decide
        the query's errors), so no stat range narrows it here. No level filter either:
        Query.selection() refuses a sequence without the scale, exactly as the scan does."""
        if query.sequences is not None:
            found = (self.catalog.get_sequence(f"{d}/{i}")
                     for d in domains for i in named_ids(d, query.sequences))
            return [s for s in found if s is not None
                    and (query.run_id is None or s.run_id == query.run_id)
                    and (query.perturbation is None or query.perturbation in s.perturbation_kinds)]
        return self.catalog.find_sequences(domains=domains, run_id=query.run_id,
                                           perturbation=query.perturbation)
