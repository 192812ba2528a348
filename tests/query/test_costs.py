"""Costs that follow the request, not the store: a query naming sequences reads only those
(with or without a catalog); ``atlas ls`` lists names and counts without reading sequence documents.

Counted, not timed: the sequence documents a selection reads, the records a catalog hands back.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import zarr

from atlasstore.catalog.selector import CatalogSelector
from atlasstore.catalog.sqlite import SQLiteCatalog
from atlasstore.catalog.sync import sync_catalog
from atlasstore.query import Query, StoreSelector
from atlasstore.store import AtlasStore
from helpers.store_fixtures import copy_store


def _sequence_documents(keys: list[str]) -> set[str]:
    """The sequence documents (``<domain>/<id>/zarr.json``) among the keys read."""
    return {k for k in keys if k.count("/") == 2 and k.endswith("/zarr.json")
            and not k.startswith("_")}


@pytest.fixture()
def reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every key the local stores read from now on."""
    keys: list[str] = []
    orig = zarr.storage.LocalStore.get

    async def spy(self: Any, key: str, *a: Any, **k: Any) -> Any:
        keys.append(key)
        return await orig(self, key, *a, **k)
    monkeypatch.setattr(zarr.storage.LocalStore, "get", spy)
    return keys


@pytest.mark.parametrize("named", [("a0",), ("alpha/a0",)])
def test_a_query_naming_a_sequence_reads_only_its_document(stats_store_path: Path,
                                                           reads: list[str],
                                                           named: tuple[str, ...]) -> None:
    """Without a catalog, naming one sequence of many reads that sequence's document (and looks
    for it in the other domains), never the documents of the others (it used to read every
    sequence document of every domain, then filter)."""
    store = AtlasStore.open(stats_store_path)  # fresh: nothing cached
    n = Query(store, scale=128, window=2, sequences=named, selector=StoreSelector()).count()
    assert n == 5  # a0 has 6 steps
    assert _sequence_documents(reads) <= {"alpha/a0/zarr.json", "beta/a0/zarr.json"}
    assert "alpha/a0/zarr.json" in reads


def test_unknown_and_unusable_names_are_still_reported(stats_store_path: Path) -> None:
    """The short cut answers as the scan did: a name that is no sequence id, or a domain/id of
    a domain not queried, is an unknown sequence."""
    from atlasstore.errors import NotFound

    store = AtlasStore.open(stats_store_path)
    for named in (("zzz",), ("a b",), ("beta/a0",), ("gamma/a0",)):
        with pytest.raises(NotFound, match="unknown sequence"):
            Query(store, scale=128, sequences=named).windows()
    with pytest.raises(NotFound, match="unknown sequence"):
        Query(store, scale=128, domains=("beta",), sequences=("alpha/a0",)).windows()


class _Counting:
    """A catalog that counts the sequence records it hands back (find_sequences, get_sequence)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.handed: list[str] = []
        self.keys_sent: list[Any] = []  # the sequence_keys of each find_timesteps

    def find_sequences(self, *a: Any, **k: Any) -> Any:
        out = self.inner.find_sequences(*a, **k)
        self.handed += [s.key for s in out]
        return out

    def find_timesteps(self, *a: Any, **k: Any) -> Any:
        self.keys_sent.append(k.get("sequence_keys"))
        return self.inner.find_timesteps(*a, **k)

    def get_sequence(self, key: str) -> Any:
        out = self.inner.get_sequence(key)
        if out is not None:
            self.handed.append(out.key)
        return out

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture()
def synced(stats_store_path: Path, tmp_path: Path) -> tuple[AtlasStore, _Counting]:
    store = AtlasStore.open(copy_store(stats_store_path, tmp_path / "s.zarr"), mode="r+")
    cat = SQLiteCatalog(tmp_path / "c.db")
    sync_catalog(store, cat)
    return store, _Counting(cat)


def test_a_catalog_query_naming_a_sequence_looks_up_only_that_key(
        synced: tuple[AtlasStore, _Counting]) -> None:
    """With a catalog, naming one sequence costs one lookup: the catalog hands back that record
    alone (it used to hand back every sequence of the domains, filtered afterwards)."""
    store, cat = synced
    for named in (("a0",), ("alpha/a0",)):
        cat.handed.clear()
        q = Query(store, scale=128, window=2, sequences=named, selector=CatalogSelector(cat))
        assert [w.id for w in q.windows()] == [w.id for w in q.where(selector=None).windows()]
        assert set(cat.handed) == {"alpha/a0"}, cat.handed
    with_run = Query(store, scale=128, sequences=("a0", "a1"), run_id="run-B",
                     selector=CatalogSelector(cat))
    assert {w.sequence_id for w in with_run.windows()} == {"a1"}
    rotated = Query(store, scale=128, sequences=("a0", "a1", "b0"), perturbation="rotation",
                    selector=CatalogSelector(cat))
    assert {w.sequence_id for w in rotated.windows()} == {"a0"}


def test_a_catalog_stat_query_over_domains_sends_no_list_of_keys(
        synced: tuple[AtlasStore, _Counting]) -> None:
    """A stat query over whole domains asks for the steps by domain and run, which the catalog
    filters itself (it used to send back every key of the domains); named sequences and a
    perturbation kind still go as keys. Same windows as the scan either way."""
    store, cat = synced
    for kw, keys in (({"mean": (2.0, 4.0)}, None), ({"mean": (2.0, 4.0), "run_id": "run-A"}, None),
                     ({"mean": (0.0, 4.0), "perturbation": "rotation"}, ["alpha/a0"]),
                     ({"mean": (2.0, 4.0), "sequences": ("a0",)}, ["alpha/a0"])):
        cat.keys_sent.clear()
        q = Query(store, scale=128, selector=CatalogSelector(cat), **kw)
        assert [w.id for w in q.windows()] == [w.id for w in q.where(selector=None).windows()]
        assert q.count() > 0
        assert cat.keys_sent[0] == keys, (kw, cat.keys_sent)


def test_sqlite_finds_a_stat_range_of_steps_by_its_index(tmp_path: Path) -> None:
    """find_timesteps with a stat range and a domain: SQLite's plan starts from the steps' stat
    index, not from the domain's sequences (it visited every sequence of the domain, however
    few steps the range held). The plan is asked of SQLite itself, and the answer is checked."""
    from helpers.catalog_fixtures import make_sequence

    cat = SQLiteCatalog(tmp_path / "c.db")
    seqs, steps = [], []
    for j in range(50):
        s, ts, _ = make_sequence("d", f"s{j:03d}", entropy=(5.0 + j, 5.5 + j))
        seqs.append(s)
        steps += ts
    cat.register_sequences(seqs, steps)
    plans: list[str] = []
    orig = cat._q

    def spy(sql: str, params: Any = ()) -> Any:
        if sql.startswith("SELECT ts.*"):
            plans.extend(str(r[3]) for r in orig("EXPLAIN QUERY PLAN " + sql, params))
        return orig(sql, params)
    cat._q = spy  # type: ignore[method-assign]
    for kw in ({}, {"run_id": "run-1"}):
        plans.clear()
        found = cat.find_timesteps(domains=["d"], entropy=(10.0, 10.6), **kw)
        assert {t.sequence_key for t in found} == {"d/s005"}
        assert plans[0].startswith("SEARCH ts USING INDEX timesteps_entropy"), plans
    cat.close()
