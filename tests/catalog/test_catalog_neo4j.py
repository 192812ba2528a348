"""Neo4j-specific catalog tests: connection errors, credentials hygiene, schema, concurrency,
parameters-only Cypher, and equivalence with the SQLite backend on the same records.

Tests marked ``neo4j`` need a server (``scripts/neo4j start && eval "$(scripts/neo4j env)"``);
they skip without one, or fail under ATLAS_REQUIRE_NEO4J=1. The others run everywhere.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
import threading
import time

import pytest

from atlasstore.catalog import SQLiteCatalog, open_catalog
from atlasstore.catalog import neo4j as neo4j_backend
from atlasstore.catalog.neo4j import Neo4jCatalog, safe_uri
from atlasstore.errors import CatalogError, CatalogUnavailable
from helpers.catalog_fixtures import (
    batch,
    make_run,
    make_sequence,
    neo4j_settings,
    open_neo4j_or_skip,
    raw_counts,
)

SECRET = "s3cret-Pa55word-never-printed"


@pytest.fixture
def neo(request):
    cat = open_neo4j_or_skip()
    try:
        yield cat
    finally:
        cat.close()


# ------------------------------------------------------------------------------ no server needed


def test_unreachable_server_raises_catalog_unavailable_quickly():
    for uri in ("bolt://127.0.0.1:1", "neo4j://127.0.0.1:1"):
        t0 = time.monotonic()
        with pytest.raises(CatalogUnavailable) as err:
            Neo4jCatalog(uri, "neo4j", SECRET, connection_timeout=2)
        assert time.monotonic() - t0 < 15
        msg = str(err.value)
        assert uri in msg and SECRET not in msg
        assert err.value.uri == uri
        assert isinstance(err.value, CatalogError)


def test_credentials_in_the_uri_never_reach_messages():
    assert safe_uri(f"bolt://neo4j:{SECRET}@127.0.0.1:1") == "bolt://127.0.0.1:1"
    assert safe_uri("neo4j://host:7687/db?x=1") == "neo4j://host:7687/db?x=1"
    with pytest.raises(CatalogError) as err:
        Neo4jCatalog(f"bolt://neo4j:{SECRET}@127.0.0.1:1", connection_timeout=2)
    assert SECRET not in str(err.value) and "bolt://127.0.0.1:1" in str(err.value)
    assert "NEO4J_PASSWORD" in str(err.value)


def test_settings_come_from_the_environment(monkeypatch):
    monkeypatch.delenv("NEO4J_URI", raising=False)
    with pytest.raises(CatalogError, match="NEO4J_URI"):
        Neo4jCatalog()
    with pytest.raises(CatalogError, match="NEO4J_URI"):
        open_catalog("neo4j")
    monkeypatch.setenv("NEO4J_URI", "bolt://127.0.0.1:1")
    monkeypatch.setenv("NEO4J_USER", "someone")
    monkeypatch.setenv("NEO4J_PASSWORD", SECRET)
    with pytest.raises(CatalogUnavailable) as err:
        open_catalog("neo4j", connection_timeout=2)
    assert "bolt://127.0.0.1:1" in str(err.value) and SECRET not in str(err.value)


def test_bad_uri_is_a_catalog_error():
    for uri in ("http://127.0.0.1:7474", "bolt+xyz://127.0.0.1:7687"):
        with pytest.raises(CatalogError, match="invalid Neo4j URI") as err:
            Neo4jCatalog(uri, "neo4j", SECRET)
        assert SECRET not in str(err.value)


def test_cypher_is_never_built_from_data():
    """Every query text passed to the driver is a module constant or composed of constants."""
    src = "\n".join(inspect.getsource(importlib.import_module(m.name)) for m in
                    pkgutil.iter_modules(neo4j_backend.__path__, neo4j_backend.__name__ + "."))
    tree = ast.parse(src)
    keywords = ("MATCH", "MERGE", "CREATE", "DELETE", "SET ", "UNWIND", "RETURN")
    for node in ast.walk(tree):
        if isinstance(node, ast.JoinedStr):  # f-strings may only build messages
            text = "".join(v.value for v in node.values if isinstance(v, ast.Constant))
            assert not any(k in text for k in keywords), ast.unparse(node)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) \
                and node.func.attr == "run":
            first = node.args[0]
            ok = (isinstance(first, ast.Name) and (first.id.startswith("_") or first.id in
                                                   ("query", "stmt")))
            ok = ok or (isinstance(first, ast.Subscript) and isinstance(first.value, ast.Name)
                        and first.value.id.startswith("_"))
            assert ok, f"line {node.lineno}: run({ast.unparse(first)})"
    # the composed queries only ever join constant fragments
    reads = importlib.import_module(neo4j_backend.__name__ + ".cypher_reads")
    for frag in (*reads._SEQ_FILTERS.values(), *reads._TS_FILTERS.values()):
        assert "$" in frag  # every value is a parameter


# ------------------------------------------------------------------------------ with a server


@pytest.mark.neo4j
def test_wrong_password_is_refused_clearly(neo):
    s = neo4j_settings()
    if not s["password"]:
        pytest.skip("the test server runs without authentication")
    with pytest.raises(CatalogUnavailable) as err:
        Neo4jCatalog(s["uri"], s["user"], SECRET, connection_timeout=3)
    msg = str(err.value)
    assert s["uri"] in msg and "authentication failed" in msg
    assert SECRET not in msg and s["password"] not in msg


@pytest.mark.neo4j
def test_unknown_database_is_a_clear_error(neo):
    s = neo4j_settings()
    with pytest.raises(CatalogError, match="(?i)database"):
        Neo4jCatalog(s["uri"], s["user"], s["password"], database="no-such-db-atlas")


@pytest.mark.neo4j
def test_constraints_and_indexes_exist_and_open_is_idempotent(neo):
    rows = neo._rows("SHOW CONSTRAINTS YIELD name, labelsOrTypes, properties, type "
                     "RETURN name, labelsOrTypes AS l, properties AS p, type")
    unique = {r["l"][0] for r in rows if r["p"] == ["key"] and "UNIQUE" in r["type"]}
    assert {"Sequence", "TimeStep", "Array", "DatasetVersion", "Checkpoint", "GenerationRun",
            "TrainingRun", "CodeVersion", "Host"} <= unique
    names = {r["name"] for r in neo._rows("SHOW INDEXES YIELD name RETURN name")}
    assert {"atlas_sequence_domain", "atlas_sequence_entropy_min", "atlas_timestep_entropy"} <= names
    s = neo4j_settings()
    for _ in range(2):  # re-opening changes nothing
        Neo4jCatalog(s["uri"], s["user"], s["password"]).close()
    assert len(neo._rows("SHOW CONSTRAINTS YIELD name RETURN name")) == len(rows)


@pytest.mark.neo4j
def test_find_sequences_uses_an_index(neo):
    neo.register_run(make_run("run-1"))
    neo.register_sequences(*batch(*(make_sequence("d", f"s{i}") for i in range(3))))
    plan = neo._rows("EXPLAIN MATCH (s:Sequence) WHERE s.domain IN $domains "
                     "AND s.entropy_max >= $lo AND s.entropy_min <= $hi RETURN s",
                     domains=["d"], lo=1.0, hi=2.0)
    assert plan == []  # EXPLAIN returns no rows; the planner accepted the query
    with neo._session() as s:
        summary = s.run("EXPLAIN MATCH (s:Sequence) WHERE s.domain IN $domains "
                        "AND s.entropy_max >= $lo AND s.entropy_min <= $hi RETURN s",
                        domains=["d"], lo=1.0, hi=2.0).consume()
    ops = str(summary.plan)
    assert "NodeIndexSeek" in ops or "NodeIndexScan" in ops


@pytest.mark.neo4j
def test_concurrent_writers_are_retried_not_duplicated(neo):
    neo.register_run(make_run("run-1"))
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for j in range(4):
                neo.register_sequences(*batch(make_sequence(f"d{i}", f"s{j}"),
                                              make_sequence("shared", f"s{j}")))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    counts = raw_counts(neo)
    assert neo.count() == 4 * 4 + 4 == counts["Sequence"]
    assert counts["Array"] == 9 * 20 and counts["TimeStep"] == 4 * 20
    assert counts["edges"] == 2 + 20 * (1 + 4 + 9 + 8)


@pytest.mark.neo4j
def test_same_answers_as_sqlite(neo, tmp_path):
    lite = SQLiteCatalog(tmp_path / "c.db")
    seqs = [make_sequence(d, f"s{i}", f"run-{i % 2}", seed=i, entropy=(i * 0.5, i * 0.5 + 1.0),
                          mean=(1.0 - i * 0.1, 1.0 + i * 0.1), variance=(0.01 * i, 0.02 * i + 0.1),
                          perturbations=(("rotation", "thermal_blur", "translation")[i % 3],),
                          levels=(256, 128, 64) if i % 4 else (128, 64))
            for d in ("a", "b") for i in range(8)]
    for cat in (lite, neo):
        cat.register_run(make_run("run-0", seed=0))
        cat.register_run(make_run("run-1", seed=1, host="other"))
        cat.register_sequences(*batch(*seqs))
        cat.register_dataset_version("dv", {"q": 1}, {"val": ["a/s1"]}, ["a/s1", "b/s2", "b/s3"],
                                     created="2026-01-01T00:00:00+00:00")
        cat.register_training_run("tr", {"lr": 0.1}, "dv", code_version="c", host="h",
                                  started="2026-01-01T00:00:00+00:00")
        cat.register_checkpoint("ck", "tr", 5, {"loss": 1.0}, "/ck", created="2026-01-01T00:00:00+00:00")
    queries = [dict(), dict(domains="a"), dict(entropy=(1.0, 2.0)), dict(mean=(0.8, 0.9)),
               dict(variance=(0.1, 0.1)), dict(perturbation="rotation", level=256),
               dict(domains=["a", "b"], run_id="run-1", entropy=(None, 2.5), limit=3)]
    for q in queries:
        assert [s.to_dict() for s in lite.find_sequences(**q)] == \
            [s.to_dict() for s in neo.find_sequences(**q)], q
        assert [t.to_dict() for t in lite.find_timesteps(**q)] == \
            [t.to_dict() for t in neo.find_timesteps(**q)], q
    for node in ("a/s3/64/grad_y", "b/s4/128/grad_x", "a/s0/64/energy", "b/s5/2", "Sequence:a/s1",
                 "ck", "TrainingRun:tr", "dv", "GenerationRun:run-1", "Host:other"):
        assert lite.lineage(node).to_dict() == neo.lineage(node).to_dict(), node
        assert lite.generation_runs_for(node) == neo.generation_runs_for(node), node
    assert lite.list_domains() == neo.list_domains()
    assert lite.sequence_keys() == neo.sequence_keys()
    assert raw_counts(lite) == raw_counts(neo)
    lite.close()
