"""The store and the catalog together: generation registers, queries select from the catalog,
``sync_catalog`` rebuilds, audit finds drift, lineage reaches the run, the CLI uses the default
SQLite catalog, and a Neo4j outage during generation loses nothing.

Backends: the ``catalog`` fixture is parametrised like ``test_catalog_contract.py`` (SQLite
always; Neo4j from NEO4J_URI / ``scripts/neo4j env``, skipped without a server, failed under
ATLAS_REQUIRE_NEO4J=1). The outage tests start their *own* Neo4j server (a private home and
port under the test's temp folder, jars linked from an already fetched ``scripts/neo4j`` home)
so that stopping it never disturbs a shared server; they skip (or fail under
ATLAS_REQUIRE_NEO4J=1) when no Java or no fetched jars are found.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from atlasstore import cli
from atlasstore.audit import Problem, audit
from atlasstore.catalog import ArrayRecord, GenerationRun, Sequence, SQLiteCatalog, TimeStep, node_id
from atlasstore.catalog.selector import CatalogSelector
from atlasstore.catalog.sync import RUN_FIELDS, is_catalogued, records_from_info, sync_catalog
from atlasstore.errors import CatalogNotFound, NotFound, QueryError
from atlasstore.io.provenance import code_version
from atlasstore.query import Query, StoreSelector
from atlasstore.runs.generate import Plan, generate, sequence_seed
from atlasstore.store import AtlasStore, RunLog
from atlasstore.store.change_log import ChangeLog, entry_key
from helpers.catalog_fixtures import (
    REPO,
    _unavailable,
    batch,
    make_run,
    make_sequence,
    raw_counts,
    wipe_neo4j,
)
from helpers.proc_helpers import ATLAS, ProcTracker, store_state, wait_until
from helpers.store_fixtures import copy_store, listing

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATLAS_CATALOG", raising=False)
    monkeypatch.delenv("ATLAS_STORE", raising=False)


#: run A: two domains with different perturbation kinds; run B: a third domain and one more
#: plasma sequence (another run id), so run/domain/perturbation filters all discriminate.
PLAN_A = Plan(domains=("plasma_physics", "turbulent_radiative_layer"), sequences=2, steps=5, seed=21)
PLAN_B = Plan(domains=("fluid_dynamics", "plasma_physics"), sequences=1, steps=4, seed=22,
              start_index=2)


@pytest.fixture(scope="module")
def cat_store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two generation runs, 6 sequences at 256x256 (levels 256/128/64). Read-only use."""
    p = tmp_path_factory.mktemp("catstore") / "atlas.zarr"
    for plan in (PLAN_A, PLAN_B):
        rep = generate(p, plan, scheduler="serial")
        assert rep.ok and rep.written == len(plan.tasks())
    return p


@pytest.fixture()
def cat_store(cat_store_path: Path) -> AtlasStore:
    return AtlasStore.open(cat_store_path)


# --------------------------------------------------------------------------- helpers


def expected_records(store: AtlasStore) -> dict[str, tuple[dict, list[dict], list[dict]]]:
    """What the catalog must hold for every catalogued committed sequence, normalised."""
    out = {}
    for d, s in store.iter_sequences():
        info = store.sequence_info(d, s)
        if not is_catalogued(info):
            continue
        seq, steps, arrays = records_from_info(info)
        out[seq["key"]] = (Sequence.from_dict(seq).to_dict(),
                           [TimeStep.from_dict(t).to_dict() for t in steps],
                           sorted((ArrayRecord.from_dict(a).to_dict() for a in arrays),
                                  key=lambda a: a["key"]))
    return out


def assert_catalog_matches_store(store: AtlasStore, cat: Any) -> None:
    """Every key and every field: sequences, time steps, arrays, runs; no drift either way."""
    want = expected_records(store)
    assert sorted(cat.sequence_keys()) == sorted(want)
    for key, (seq, steps, arrays) in want.items():
        got = cat.get_sequence(key)
        assert got is not None, key
        assert got.to_dict() == seq, key
        assert [t.to_dict() for t in cat.get_timesteps(key)] == steps, key
        assert sorted((a.to_dict() for a in cat.get_arrays(key)), key=lambda a: a["key"]) == arrays, key
    for run in RunLog(store).list():
        got = cat.get_run(run["run_id"])
        assert got is not None, run["run_id"]
        assert got.to_dict() == GenerationRun.from_dict({k: run[k] for k in RUN_FIELDS}).to_dict()
    counts = raw_counts(cat)
    assert counts["Sequence"] == len(want)
    assert counts["TimeStep"] == sum(len(v[1]) for v in want.values())
    assert counts["Array"] == sum(len(v[2]) for v in want.values())
    rep = audit(store, verify=False, catalog=cat)
    assert rep.problems == [], rep.problems[:5]


def windows_of(q: Query) -> list[tuple[str, str, int, int]]:
    return [(w.domain, w.sequence_id, w.t0, w.length) for w in q.windows()]


def step_values(store: AtlasStore, stat: str) -> list[float]:
    return sorted({s[stat] for d, q in store.iter_sequences()
                   for s in store.sequence_info(d, q)["steps"]})


# --------------------------------------------------------------------------- generation registers


def test_generate_registers_every_record_and_the_run(catalog: Any, tmp_path: Path) -> None:
    plan = Plan(domains=("plasma_physics", "turbulent_radiative_layer"), sequences=2, steps=3,
                shape=(128, 128), seed=5)
    loc = tmp_path / "g.zarr"
    rep = generate(loc, plan, scheduler="serial", catalog=catalog, catalog_batch=3)
    assert rep.ok and rep.written == 4 and rep.catalog_errors == []
    store = AtlasStore.open(loc)
    assert_catalog_matches_store(store, catalog)
    counts = raw_counts(catalog)
    assert (counts["Sequence"], counts["TimeStep"], counts["Array"], counts["GenerationRun"]) == \
        (4, 4 * 3, 4 * 6, 1)  # 128x128: levels 128 and 64, three fields each
    run = catalog.get_run(plan.run_id())
    assert run.seed == 5 and run.config_hash == plan.config_hash()
    assert run.code_version == code_version() and run.host == socket.gethostname()
    assert run.config == json.loads(json.dumps(plan.to_dict()))
    assert run.finished is not None
    assert run.counts == {"tasks": 4, "written": 4, "skipped": 0, "failed": 0, "maps": 12}
    for t in plan.tasks():
        seq = catalog.get_sequence(f"{t.domain}/{t.sequence_id}")
        assert seq.seed == t.seed == sequence_seed(5, t.domain, t.index)
        assert seq.run_id == plan.run_id() and seq.levels == [128, 64]
    # registered from the store's change log: the catalog has applied all of it, so the next
    # query has nothing to catch up (4 writes + the run's start and finish)
    st = catalog.store_sync()
    assert (st.position, st.pending) == (ChangeLog(store).head(), {}) and st.position == 6
    # a re-run skips everything and re-registers the same records: nothing duplicated
    before = raw_counts(catalog)
    rep2 = generate(loc, plan, scheduler="serial", catalog=catalog)
    assert rep2.skipped == 4 and rep2.written == 0 and rep2.catalog_errors == []
    assert raw_counts(catalog) == before
    assert_catalog_matches_store(AtlasStore.open(loc), catalog)


# --------------------------------------------------------------------------- catalog selection


def _query_cases(store: AtlasStore) -> list[dict[str, Any]]:
    ent = step_values(store, "entropy")
    mean = step_values(store, "mean")
    var = step_values(store, "variance")
    k = len(ent)
    run_a, run_b = PLAN_A.run_id(), PLAN_B.run_id()
    return [
        {},
        {"domains": ["plasma_physics"]},
        {"domains": ["fluid_dynamics", "plasma_physics"], "scale": 64},
        {"run_id": run_a}, {"run_id": run_b}, {"run_id": "run-nobody"},
        {"perturbation": "rotation"}, {"perturbation": "thermal_blur", "scale": 128},
        {"perturbation": "gaussian_noise", "domains": ["fluid_dynamics"]}, {"perturbation": "nope"},
        {"window": 3, "stride": 2}, {"window": 2, "time_range": (1, 4)},
        {"sequences": ["seq-00000"]}, {"sequences": ["plasma_physics/seq-00002"], "window": 2},
        # per-step stat windows, with bounds exactly on stored step values (inclusive)
        {"entropy": (ent[0], ent[-1])},
        {"entropy": (ent[k // 3], ent[2 * k // 3])},
        {"entropy": (ent[k // 2], ent[k // 2])},
        {"entropy": (ent[k // 4], ent[-1]), "window": 2},
        {"entropy": (ent[-1] + 1.0, ent[-1] + 2.0)},
        {"mean": (mean[len(mean) // 2], mean[-1]), "window": 2, "stride": 1},
        {"variance": (var[0], var[len(var) // 2])},
        {"variance": (var[len(var) // 3], var[-1]), "entropy": (ent[0], ent[2 * k // 3]),
         "window": 2},
        {"entropy": (ent[k // 4], ent[-1]), "perturbation": "thermal_blur", "run_id": run_a},
        {"mean": (mean[0], mean[-1]), "sequences": ["seq-00001"], "time_range": (1, 5)},
    ]


def test_catalog_selector_gives_the_store_scan_windows(catalog: Any, cat_store: AtlasStore) -> None:
    sync_catalog(cat_store, catalog)
    cases = _query_cases(cat_store)
    nonempty = 0
    for kw in cases:
        scan = windows_of(Query(cat_store, selector=StoreSelector(), **kw))
        via_catalog = windows_of(Query(cat_store, selector=CatalogSelector(catalog), **kw))
        assert via_catalog == scan, kw
        nonempty += bool(scan)
    assert nonempty >= len(cases) - 4  # the cases discriminate: most select something
    # and the data read through a catalog-planned query is the data of the store
    q = Query(cat_store, domains=["turbulent_radiative_layer"], scale=64, window=2,
              fields=("energy", "grad_y"), selector=CatalogSelector(catalog))
    data = q.to_numpy()
    w = q.windows()[-1]
    assert (data["grad_y"][-1] == cat_store.read(w.domain, w.sequence_id, 64, "grad_y",
                                                 t=slice(w.t0, w.t0 + 2))).all()


@pytest.fixture(scope="module")
def synced_sqlite(cat_store_path: Path, tmp_path_factory: pytest.TempPathFactory):
    cat = SQLiteCatalog(tmp_path_factory.mktemp("fuzzcat") / "c.db")
    sync_catalog(AtlasStore.open(cat_store_path), cat)
    yield cat
    cat.close()


@settings(max_examples=40, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_catalog_selector_fuzzed_stat_windows(data: st.DataObject, cat_store: AtlasStore,
                                              synced_sqlite: SQLiteCatalog) -> None:
    """Random per-step stat windows (bounds drawn from stored values) on the SQLite catalog."""
    cat = synced_sqlite
    kw: dict[str, Any] = {}
    for stat in ("entropy", "mean", "variance"):
        if data.draw(st.booleans(), label=f"use {stat}"):
            vals = step_values(cat_store, stat)
            lo, hi = sorted(data.draw(st.tuples(st.sampled_from(vals), st.sampled_from(vals)),
                                      label=stat))
            kw[stat] = (lo, hi)
    kw["window"] = data.draw(st.integers(1, 4), label="window")
    kw["stride"] = data.draw(st.integers(1, 3), label="stride")
    kw["scale"] = data.draw(st.sampled_from([256, 128, 64]), label="scale")
    kw["domains"] = data.draw(st.sampled_from([None, ["plasma_physics"], ["fluid_dynamics",
                                                                          "turbulent_radiative_layer"]]))
    scan = windows_of(Query(cat_store, **kw))
    assert windows_of(Query(cat_store, selector=CatalogSelector(cat), **kw)) == scan, kw


def test_catalog_selection_reads_no_sequence_attributes(catalog: Any, cat_store_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Selection through the catalog asks the store nothing about sequences: no
    ``sequence_info``/``sequences``/``sequence_status`` call, no sequence ``zarr.json`` read;
    checking that the catalog is current costs one read: the change-log entry at its position,
    which does not exist yet."""
    import zarr

    sync_catalog(AtlasStore.open(cat_store_path), catalog)
    calls: list[str] = []
    for name in ("sequence_info", "sequences", "sequence_status", "iter_sequences", "array"):
        orig = getattr(AtlasStore, name)

        def spy(self, *a, _orig=orig, _name=name, **k):
            calls.append(_name)
            return _orig(self, *a, **k)
        monkeypatch.setattr(AtlasStore, name, spy)
    keys: list[str] = []
    orig_get = zarr.storage.LocalStore.get

    async def get_spy(self, key, *a, **k):
        keys.append(key)
        return await orig_get(self, key, *a, **k)
    monkeypatch.setattr(zarr.storage.LocalStore, "get", get_spy)

    ent = (9.0, 12.0)
    for sel, expect_reads in ((CatalogSelector(catalog), False), (StoreSelector(), True)):
        store = AtlasStore.open(cat_store_path)  # fresh: no cached attributes
        calls.clear()
        keys.clear()
        n = Query(store, scale=64, window=2, entropy=ent, perturbation="thermal_blur",
                  selector=sel).count()
        assert n > 0
        seq_keys = [k for k in keys if k.count("/") >= 2 and not k.startswith("_log/")]
        if expect_reads:  # the spy works: the store scan does read them
            assert "sequence_info" in calls and seq_keys
        else:
            assert calls == [], calls
            assert seq_keys == [], seq_keys
            assert [k for k in keys if k.startswith("_log/")] == \
                [entry_key(catalog.store_sync().position)]


def test_save_map_and_api_sequences_are_catalogued(tmp_path: Path, cat_store_path: Path) -> None:
    """Maps stored with ``save_map`` and sequences written with ``write_sequence`` carry no run;
    they are catalogued all the same (kind, no run edge), so scan and catalog agree, and audit
    counts them (it used to skip them, so it could not see the catalog missing them)."""
    import numpy as np

    from atlasstore.compat import EnergyAtlasLoader
    from helpers.store_fixtures import energy_sequence

    loc = copy_store(cat_store_path, tmp_path / "c.zarr")
    store = AtlasStore.open(loc, mode="r+")
    cat = SQLiteCatalog(tmp_path / "c.catalog.sqlite")
    sync_catalog(store, cat)
    EnergyAtlasLoader(store).save_map(np.ones((256, 256), np.float32), "plasma_physics", "saved",
                                      metadata={"source": "lab-7"})
    store.write_sequence("plasma_physics", "api", energy_sequence(3, 256, 256))
    assert audit(store, verify=False, catalog=cat).problems == [
        Problem("plasma_physics/api", "catalog_missing",
                "in the store but not in the catalog (run `atlas catalog sync`)"),
        Problem("plasma_physics/saved", "catalog_missing",
                "in the store but not in the catalog (run `atlas catalog sync`)")]
    scan = Query(store, domains=["plasma_physics"]).count()
    via = Query(store, domains=["plasma_physics"], selector=CatalogSelector(cat)).count()
    assert scan == via
    saved, api = cat.get_sequence("plasma_physics/saved"), cat.get_sequence("plasma_physics/api")
    assert (saved.kind, saved.run_id, saved.source) == ("save_map", None, "save_map: lab-7")
    assert (api.kind, api.run_id, api.source) == ("api", None, None)
    lin = cat.lineage("plasma_physics/api/64/grad_x")
    assert lin.of_kind("GenerationRun") == [] and lin.of_kind("ImportRun") == []
    assert {n.id for n in lin.of_kind("Sequence")} == {"Sequence:plasma_physics/api"}
    assert audit(store, verify=False, catalog=cat).problems == []
    assert_catalog_matches_store(store, cat)


@pytest.mark.parametrize("kw", [{"scale": 64}, {"scale": 128, "window": 3, "entropy": (100.0, 200.0)}],
                         ids=["scale-missing", "window-longer-with-stats"])
def test_catalog_selector_errors_like_the_store_scan(tmp_path: Path, kw: dict) -> None:
    loc = tmp_path / "s.zarr"
    generate(loc, Plan(domains=("plasma_physics",), sequences=1, steps=2, shape=(128, 128),
                       scales=(128,), seed=1), scheduler="serial")
    generate(loc, Plan(domains=("plasma_physics",), sequences=1, steps=2, shape=(128, 128),
                       seed=2, start_index=1), scheduler="serial")
    store = AtlasStore.open(loc)
    cat = SQLiteCatalog(tmp_path / "c.db")
    sync_catalog(store, cat)

    def answer(sel: Any) -> Any:
        try:
            return windows_of(Query(store, selector=sel, **kw))
        except (NotFound, QueryError) as exc:
            return type(exc).__name__
    assert answer(StoreSelector()) in ("NotFound", "QueryError")
    assert answer(CatalogSelector(cat)) == answer(StoreSelector())


# --------------------------------------------------------------------------- sync


def test_sync_rebuilds_an_empty_catalog_and_is_idempotent(catalog: Any, cat_store: AtlasStore) -> None:
    assert catalog.count() == 0
    first = sync_catalog(cat_store, catalog)
    assert first == {"registered": 6, "removed": 0, "runs": 2, "refused": {}}
    assert_catalog_matches_store(cat_store, catalog)
    counts = raw_counts(catalog)
    lin = catalog.lineage("plasma_physics/seq-00000/64/grad_x").to_dict()
    second = sync_catalog(cat_store, catalog)
    assert second == first
    assert raw_counts(catalog) == counts
    assert catalog.lineage("plasma_physics/seq-00000/64/grad_x").to_dict() == lin
    assert_catalog_matches_store(cat_store, catalog)


def test_sync_prunes_what_the_store_lacks(catalog: Any, cat_store_path: Path, tmp_path: Path) -> None:
    loc = copy_store(cat_store_path, tmp_path / "p.zarr")
    store = AtlasStore.open(loc, mode="r+")
    sync_catalog(store, catalog)
    catalog.register_run(make_run("run-ghost"))
    catalog.register_sequences(*batch(make_sequence("plasma_physics", "ghost", "run-ghost")))
    store.delete_sequence("fluid_dynamics", "seq-00002")
    kept = sync_catalog(store, catalog, prune=False)
    # without pruning, what the store never had stays; what its change log says it deleted goes
    assert kept["removed"] == 0
    assert "plasma_physics/ghost" in catalog.sequence_keys()
    assert "fluid_dynamics/seq-00002" not in catalog.sequence_keys()
    pruned = sync_catalog(store, catalog)
    assert pruned == {"registered": 5, "removed": 1, "runs": 2, "refused": {}}
    assert "plasma_physics/ghost" not in catalog.sequence_keys()
    with pytest.raises(CatalogNotFound):
        catalog.lineage("fluid_dynamics/seq-00002/64/grad_x")
    assert_catalog_matches_store(store, catalog)


@pytest.mark.parametrize("generation", [{"run_id": "run-handmade", "seed": 1}, "own-run-negative-seed"],
                         ids=["unknown-run", "negative-seed"])
def test_sync_registers_the_rest_when_one_sequence_is_refused(catalog: Any, cat_store_path: Path,
                                                              tmp_path: Path, generation: Any) -> None:
    from helpers.store_fixtures import energy_sequence

    loc = copy_store(cat_store_path, tmp_path / "x.zarr")
    store = AtlasStore.open(loc, mode="r+")
    if generation == "own-run-negative-seed":
        generation = {"run_id": PLAN_A.run_id(), "seed": -1}
    store.write_sequence("plasma_physics", "handmade", energy_sequence(2, 256, 256), generation=generation)
    try:
        sync_catalog(store, catalog)
    except Exception:  # noqa: BLE001 - reporting the one bad sequence is fine; losing the rest is not
        pass
    assert len(catalog.sequence_keys()) >= 6, "the 6 generated sequences must be catalogued"


def test_sequences_without_run_records_are_catalogued(tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    from helpers.store_fixtures import build_stats_store

    loc = tmp_path / "atlas.zarr"
    build_stats_store(loc)  # sequences with run ids 'run-A'/'run-B' but no run records
    S = ["--store", str(loc)]
    code, out, _ = _cli(capsys, "query", *S, "--count", "--scale", "64")
    assert code == 0 and int(out) == 15
    # catalogued all the same: the run id is kept, there is no run node to link it to
    code, out, err = _cli(capsys, "catalog", "sync", *S)
    assert code == 0 and "REFUSED" not in err, err
    code, out, _ = _cli(capsys, "query", *S, "--count", "--scale", "64")
    assert code == 0 and int(out) == 15
    code, out, _ = _cli(capsys, "query", *S, "--count", "--scale", "64", "--run", "run-A")
    code2, out2, _ = _cli(capsys, "query", *S, "--count", "--scale", "64", "--run", "run-A",
                          "--no-catalog")
    assert code == code2 == 0 and out == out2 and int(out) > 0


# --------------------------------------------------------------------------- drift


def test_audit_names_drift_both_ways(catalog: Any, cat_store: AtlasStore) -> None:
    sync_catalog(cat_store, catalog)
    assert audit(cat_store, verify=False, catalog=catalog).problems == []
    catalog.remove_sequences(["turbulent_radiative_layer/seq-00001"])
    catalog.register_run(make_run("run-ghost"))
    s, t, a = make_sequence("fluid_dynamics", "only-in-catalog", "run-ghost")
    catalog.register_sequences([s], t, a)
    rep = audit(cat_store, verify=False, catalog=catalog)
    assert [(p.kind, p.path) for p in rep.problems] == [
        ("catalog_missing", "turbulent_radiative_layer/seq-00001"),
        ("catalog_extra", "fluid_dynamics/only-in-catalog")]
    assert all("atlas catalog sync" in p.message for p in rep.problems)
    # the domain filter limits drift to that domain, both ways
    rep = audit(cat_store, domains=["fluid_dynamics"], verify=False, catalog=catalog)
    assert [(p.kind, p.path) for p in rep.problems] == [("catalog_extra", "fluid_dynamics/only-in-catalog")]
    sync_catalog(cat_store, catalog)
    assert audit(cat_store, verify=False, catalog=catalog).problems == []


# --------------------------------------------------------------------------- lineage


def test_lineage_from_a_coarse_gradient_reaches_the_run(catalog: Any, cat_store: AtlasStore) -> None:
    sync_catalog(cat_store, catalog)
    key = "plasma_physics/seq-00000"
    lin = catalog.lineage(f"{key}/64/grad_x")
    A = lambda p: node_id("Array", f"{key}/{p}")  # noqa: E731
    seq, run = node_id("Sequence", key), node_id("GenerationRun", PLAN_A.run_id())
    cv, host = node_id("CodeVersion", code_version()), node_id("Host", socket.gethostname())
    assert lin.root == A("64/grad_x")
    assert set(lin.nodes) == {A("64/grad_x"), A("64/energy"), A("256/energy"), seq, run, cv, host}
    assert lin.edge(A("64/grad_x"), "wasDerivedFrom", A("64/energy")).properties["operation"] \
        .startswith("gradient(axis=x")
    assert lin.edge(A("64/energy"), "wasDerivedFrom", A("256/energy")).properties["operation"] \
        == "area_downsample(factor=4)"
    for part in ("64/grad_x", "64/energy", "256/energy"):
        assert lin.has_edge(seq, "hasArray", A(part))
    assert lin.has_edge(seq, "wasGeneratedBy", run)
    assert lin.has_edge(run, "wasAssociatedWith", cv) and lin.has_edge(run, "wasAssociatedWith", host)
    rp = lin.nodes[run].properties
    assert (rp["seed"], rp["config_hash"], rp["code_version"], rp["host"]) == \
        (PLAN_A.seed, PLAN_A.config_hash(), code_version(), socket.gethostname())
    assert rp["config"]["domains"] == list(PLAN_A.domains)
    assert lin.nodes[seq].properties["seed"] == sequence_seed(PLAN_A.seed, "plasma_physics", 0)
    assert [r.run_id for r in catalog.generation_runs_for(f"{key}/64/grad_x")] == [PLAN_A.run_id()]
    # the other run's sequence is not upstream
    other = catalog.lineage("plasma_physics/seq-00002/128/grad_y")
    assert node_id("GenerationRun", PLAN_B.run_id()) in other.nodes and run not in other.nodes


# --------------------------------------------------------------------------- CLI, default SQLite


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_uses_the_default_sqlite_catalog(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store_path = tmp_path / "atlas.zarr"
    default_cat = tmp_path / "atlas.catalog.sqlite"
    S = ["--store", str(store_path)]
    code, out, err = _cli(capsys, "generate", *S, "--domains", "plasma_physics,turbulent_radiative_layer",
                          "--sequences", "2", "--steps", "3", "--seed", "5", "--scheduler", "serial",
                          "--quiet")
    assert code == 0, err
    assert default_cat.is_file(), "generate registers into <store>.catalog.sqlite by default"
    store = AtlasStore.open(store_path)
    with SQLiteCatalog(default_cat) as cat:
        assert_catalog_matches_store(store, cat)

    # lineage, as text and JSON
    code, out, err = _cli(capsys, "catalog", "lineage", "plasma_physics/seq-00000/64/grad_x", *S)
    assert code == 0, err
    assert out.splitlines()[0] == "Array:plasma_physics/seq-00000/64/grad_x"
    for needle in ("-wasDerivedFrom-> Array:plasma_physics/seq-00000/64/energy  [gradient(axis=x",
                   "-wasDerivedFrom-> Array:plasma_physics/seq-00000/256/energy  [area_downsample(factor=4)]",
                   "-partOf-> Sequence:plasma_physics/seq-00000 seed=",
                   "-wasGeneratedBy-> GenerationRun:run-", "seed=5 config_hash=",
                   f"-wasAssociatedWith-> CodeVersion:{code_version()}",
                   f"-wasAssociatedWith-> Host:{socket.gethostname()}"):
        assert needle in out, (needle, out)
    code, out, _ = _cli(capsys, "catalog", "lineage", "plasma_physics/seq-00000/64/grad_x", "--json", *S)
    doc = json.loads(out)
    assert doc["root"] == "Array:plasma_physics/seq-00000/64/grad_x"
    assert {n["kind"] for n in doc["nodes"]} == {"Array", "Sequence", "GenerationRun", "CodeVersion", "Host"}

    # query counts through the catalog equal the store scan
    for argv, kw in ((["--scale", "64", "--window", "2"], {"scale": 64, "window": 2}),
                     (["--perturbation", "rotation"], {"perturbation": "rotation"}),
                     (["--entropy", "0:11", "--window", "2"], {"entropy": (0.0, 11.0), "window": 2})):
        code, out, err = _cli(capsys, "query", *S, "--count", *argv)
        assert code == 0, err
        assert int(out) == Query(store, **kw).count(), argv

    # the CLI really plans from the catalog: drop one sequence from it ...
    with SQLiteCatalog(default_cat) as cat:
        cat.remove_sequences(["plasma_physics/seq-00001"])
    code, out, _ = _cli(capsys, "query", *S, "--count")
    assert int(out) == Query(store).count() - 3
    code, out, err = _cli(capsys, "audit", *S, "--quick")
    assert code == 1 and "CATALOG_MISSING plasma_physics/seq-00001" in err
    # ... `atlas catalog sync` brings it back
    code, out, err = _cli(capsys, "catalog", "sync", *S)
    assert code == 0, err
    assert out.strip() == "catalog sync: 4 sequences registered, 0 removed, 1 runs"
    code, out, _ = _cli(capsys, "query", *S, "--count")
    assert int(out) == Query(store).count()
    code, out, err = _cli(capsys, "audit", *S)
    assert code == 0, err

    # a lost catalog file is rebuilt from the store alone
    for f in tmp_path.glob("atlas.catalog.sqlite*"):
        f.unlink()
    code, out, err = _cli(capsys, "catalog", "sync", *S)
    assert code == 0, err
    with SQLiteCatalog(default_cat) as cat:
        assert_catalog_matches_store(store, cat)
    run_id = RunLog(store).list()[0]["run_id"]
    code, out, _ = _cli(capsys, "catalog", "lineage", f"GenerationRun:{run_id}", *S)
    assert code == 0 and "CodeVersion:" in out


def test_cli_unreachable_neo4j_from_the_start_writes_nothing(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    uri = "bolt://127.0.0.1:1"
    secret = "unreachable-" + secrets.token_hex(8)
    monkeypatch.setenv("NEO4J_URI", uri)
    monkeypatch.setenv("NEO4J_USER", "neo4j")
    monkeypatch.setenv("NEO4J_PASSWORD", secret)
    fresh = tmp_path / "fresh.zarr"
    gen = ["--domains", "plasma_physics", "--sequences", "1", "--steps", "2", "--scheduler", "serial",
           "--catalog", "neo4j", "--quiet"]
    t0 = time.monotonic()
    code, out, err = _cli(capsys, "generate", "--store", str(fresh), *gen)
    assert time.monotonic() - t0 < 30
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("atlas: error: ") and uri in lines[0] and "unavailable" in lines[0]
    assert secret not in out + err
    assert not fresh.exists() and sorted(p.name for p in tmp_path.iterdir()) == []
    # an existing store is not touched either (no run record, no lock holder, no domain)
    existing = tmp_path / "existing.zarr"
    AtlasStore.create(existing)
    before = listing(tmp_path)
    for argv in (["generate", "--store", str(existing), *gen],
                 ["catalog", "sync", "--store", str(existing), "--catalog", "neo4j"],
                 ["audit", "--store", str(existing), "--catalog", "neo4j"],
                 ["query", "--store", str(existing), "--catalog", "neo4j", "--count"],
                 ["catalog", "lineage", "x", "--store", str(existing), "--catalog", "neo4j"]):
        code, out, err = _cli(capsys, *argv)
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and uri in lines[0], (argv, err)
        assert secret not in out + err
    assert listing(tmp_path) == before


# --------------------------------------------------------------------------- Neo4j outage


NEO4J_VERSION = os.environ.get("ATLAS_NEO4J_VERSION", "5.26.30")


def _fetched_lib() -> Path | None:
    """A complete lib/ of an already fetched scripts/neo4j home (we never download here)."""
    homes = [os.environ.get("ATLAS_NEO4J_HOME"), os.environ.get("ATLAS_NEO4J_TEST_HOME")]
    try:
        env = {k: v for k, v in os.environ.items() if k != "ATLAS_NEO4J_HOME"}
        homes.append(subprocess.run([str(REPO / "scripts" / "neo4j"), "path"], capture_output=True,
                                    text=True, timeout=20, env=env).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    cache = Path.home() / ".cache" / "atlasstore"
    if cache.is_dir():
        homes += [str(p) for p in sorted(cache.iterdir())]
    for h in homes:
        if not h:
            continue
        lib = Path(h) / "lib"
        try:
            if (lib / ".complete").read_text().strip() == NEO4J_VERSION:
                return lib.resolve()
        except OSError:
            continue
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class PrivateNeo4j:
    """A Neo4j server of our own: private home, port and password; controlled by scripts/neo4j."""

    home: Path
    port: int
    password: str

    @property
    def uri(self) -> str:
        return f"bolt://127.0.0.1:{self.port}"

    def server_env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items()
               if k not in ("NEO4J_AUTH", "NEO4J_URI", "NEO4J_USER", "NEO4J_PASSWORD")}
        env.update(ATLAS_NEO4J_HOME=str(self.home), ATLAS_NEO4J_BOLT_PORT=str(self.port),
                   ATLAS_NEO4J_PASSWORD=self.password, ATLAS_NEO4J_PAGECACHE="64m",
                   ATLAS_NEO4J_VERSION=NEO4J_VERSION)
        env.pop("ATLAS_NEO4J_HTTP_PORT", None)
        return env

    def client_env(self) -> dict[str, str]:
        return {"NEO4J_URI": self.uri, "NEO4J_USER": "neo4j", "NEO4J_PASSWORD": self.password,
                "ATLAS_CATALOG": "", "ATLAS_NEO4J_DATABASE": ""}

    def settings(self) -> dict[str, str]:
        return {"uri": self.uri, "user": "neo4j", "password": self.password}

    def script(self, cmd: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(REPO / "scripts" / "neo4j"), cmd], env=self.server_env(),
                              capture_output=True, text=True, timeout=timeout)

    def start(self) -> float:
        t0 = time.monotonic()
        r = self.script("start")
        assert r.returncode == 0, f"private Neo4j did not start:\n{r.stderr[-3000:]}"
        return time.monotonic() - t0

    def stop(self) -> float:
        t0 = time.monotonic()
        r = self.script("stop", timeout=120)
        assert r.returncode == 0, r.stderr
        return time.monotonic() - t0

    def catalog(self) -> Any:
        from atlasstore.catalog.neo4j import Neo4jCatalog

        return Neo4jCatalog(self.uri, "neo4j", self.password, connection_timeout=5)


@pytest.fixture(scope="module")
def private_neo4j(tmp_path_factory: pytest.TempPathFactory):
    if not (shutil.which("java") or os.environ.get("JAVA_HOME") or os.environ.get("ATLAS_NEO4J_JAVA")):
        _unavailable("no Java for a private server")
    lib = _fetched_lib()
    if lib is None:
        _unavailable(f"no fetched Neo4j {NEO4J_VERSION} jars (run `scripts/neo4j fetch` once)")
    home = tmp_path_factory.mktemp("neo4j-private")
    (home / "lib").symlink_to(lib)
    server = PrivateNeo4j(home, _free_port(), "atlas-" + secrets.token_hex(12))
    r = server.script("start")
    if r.returncode != 0:
        server.script("stop", timeout=120)
        _unavailable(f"private server did not start: {r.stderr.strip()[-500:]}")
    try:
        yield server
    finally:
        server.script("stop", timeout=120)


_GEN_72 = ["--domains", "plasma_physics,fluid_dynamics", "--sequences", "36", "--steps", "2",
           "--scheduler", "serial", "--catalog", "neo4j", "--quiet"]
N_72 = 72  # > 64: the CLI registers in batches of 64, so one batch is written mid-run


def _gen_cmd(store: Path) -> list[str]:
    return [*ATLAS, "generate", "--store", str(store), *_GEN_72]


def _summary(stdout: str) -> tuple[int, int, int]:
    m = re.search(r"(\d+) sequences written, (\d+) already complete, (\d+) failed", stdout)
    assert m, stdout
    return int(m.group(1)), int(m.group(2)), int(m.group(3))


@pytest.mark.slow
@pytest.mark.neo4j
@pytest.mark.timeout(420)
def test_neo4j_stopped_mid_run_then_sync_loses_nothing(private_neo4j: PrivateNeo4j, tmp_path: Path) -> None:
    """The issue's scenario: Neo4j goes down during generation. The store stays complete and
    consistent, the run exits 1 saying the catalog was not updated and to run `atlas catalog
    sync`; after a restart, the sync makes catalog == store with nothing lost."""
    srv = private_neo4j
    wipe_neo4j(srv.settings())
    store = tmp_path / "atlas.zarr"
    procs = ProcTracker(tmp_path)
    try:
        run = procs.launch(_gen_cmd(store), env=srv.client_env())
        started = wait_until(lambda: store_state(store, ("plasma_physics", "fluid_dynamics")).groups >= 4
                             or run.proc.poll() is not None, 120.0)
        assert started and run.proc.poll() is None, run.describe()
        # Freeze the generator while the server goes down, so that on any machine speed the
        # server is gone before the run's first catalog batch (64 sequences) is written.
        os.kill(run.pid, signal.SIGSTOP)
        try:
            at_stop = store_state(store, ("plasma_physics", "fluid_dynamics")).summary()
            stop_s = srv.stop()
        finally:
            os.kill(run.pid, signal.SIGCONT)
        rc = run.wait(240)
        out, err = run.stdout(), run.stderr()
    finally:
        procs.cleanup()
    print(f"RELIABILITY neo4j-stop: stopped at {at_stop} ({stop_s:.1f} s); run exit {rc}; "
          f"stderr: {err.strip().splitlines()[-1][:160] if err.strip() else ''}")
    assert rc == 1, run.describe()
    assert _summary(out) == (N_72, 0, 0)
    assert "catalog not updated" in err and "atlas catalog sync" in err
    assert srv.password not in out + err
    assert "Traceback" not in err
    s = AtlasStore.open(store)
    rep = audit(s)
    assert rep.ok, rep.problems[:5]
    assert sum(len(s.sequences(d)) for d in s.domains()) == N_72

    srv.start()
    env = {**os.environ, **srv.client_env()}
    with srv.catalog() as cat:
        before_sync = set(cat.sequence_keys())
        drift = audit(s, verify=False, catalog=cat).problems
        assert len(before_sync) < N_72
        assert {p.path for p in drift} == {f"{d}/{q}" for d, q in s.iter_sequences()} - before_sync
        assert all(p.kind == "catalog_missing" for p in drift)
        r = subprocess.run([*ATLAS, "catalog", "sync", "--store", str(store), "--catalog", "neo4j"],
                           capture_output=True, text=True, timeout=240, env=env)
        assert r.returncode == 0, r.stderr
        assert f"{N_72} sequences registered, 0 removed, 1 runs" in r.stdout
        assert_catalog_matches_store(s, cat)  # includes audit drift (none either way)
        run_rec = cat.get_run(RunLog(s).list()[0]["run_id"])
        assert run_rec.finished and run_rec.counts["written"] == N_72
    print(f"RELIABILITY neo4j-stop: catalog had {len(before_sync)}/{N_72} before sync, "
          f"{N_72}/{N_72} after; audit with catalog OK")


@pytest.mark.slow
@pytest.mark.neo4j
@pytest.mark.timeout(420)
def test_neo4j_restarted_mid_run(private_neo4j: PrivateNeo4j, tmp_path: Path) -> None:
    """Neo4j stops and comes back while generation runs. Whatever the timing, the run never
    claims a catalog it does not have: exit 0 only with catalog == store; exit 1 says to sync,
    and the sync then makes catalog == store."""
    srv = private_neo4j
    wipe_neo4j(srv.settings())
    store = tmp_path / "atlas.zarr"
    procs = ProcTracker(tmp_path)
    try:
        run = procs.launch(_gen_cmd(store), env=srv.client_env())
        started = wait_until(lambda: store_state(store, ("plasma_physics", "fluid_dynamics")).groups >= 4
                             or run.proc.poll() is not None, 120.0)
        assert started and run.proc.poll() is None, run.describe()
        os.kill(run.pid, signal.SIGSTOP)  # as above: down before the first catalog batch
        try:
            srv.stop()
            down_at = store_state(store, ("plasma_physics", "fluid_dynamics")).groups
        finally:
            os.kill(run.pid, signal.SIGCONT)
        start_s = srv.start()
        up_at = store_state(store, ("plasma_physics", "fluid_dynamics")).groups
        rc = run.wait(240)
        out, err = run.stdout(), run.stderr()
    finally:
        procs.cleanup()
    print(f"RELIABILITY neo4j-restart: down at {down_at} groups, back after {start_s:.1f} s at "
          f"{up_at} groups; run exit {rc}")
    assert rc in (0, 1), run.describe()
    assert _summary(out) == (N_72, 0, 0)
    assert srv.password not in out + err and "Traceback" not in err
    s = AtlasStore.open(store)
    assert audit(s).ok
    if rc == 1:
        assert "catalog not updated" in err and "atlas catalog sync" in err
        r = subprocess.run([*ATLAS, "catalog", "sync", "--store", str(store), "--catalog", "neo4j"],
                           capture_output=True, text=True, timeout=240,
                           env={**os.environ, **srv.client_env()})
        assert r.returncode == 0, r.stderr
    else:
        assert "catalog not updated" not in err
    with srv.catalog() as cat:
        assert_catalog_matches_store(s, cat)
    print(f"RELIABILITY neo4j-restart: {'driver retries bridged the restart' if rc == 0 else 'sync needed'}"
          f"; catalog == store")
