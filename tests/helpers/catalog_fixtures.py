"""Small synthetic catalog records and Neo4j test-server helpers, shared by catalog tests.

``make_run`` / ``make_sequence`` build records exactly as the store and generator hand them to
the catalog (plain dicts with the documented field names). ``make_sequence`` returns the sequence,
its time steps (stats spread between the given min and max) and its 9 arrays (3 levels x 3 fields)
with the derivation chain the store writes::

    256/energy                          (generated)
    128/energy  <- 256/energy           area_downsample(factor=2)
    64/energy   <- 256/energy           area_downsample(factor=4)
    L/grad_x    <- L/energy             gradient(x, central, h=1)
    L/grad_y    <- L/energy             gradient(y, central, h=1)

``neo4j_settings()`` finds the test server (env, else ``scripts/neo4j env``); ``open_neo4j_or_skip``
returns a :class:`Neo4jCatalog` on a wiped database, or skips (fails when
``ATLAS_REQUIRE_NEO4J=1``) with a clear message.
"""

from __future__ import annotations

import hashlib
import os
import shlex
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
LEVELS = (256, 128, 64)
FIELDS = ("energy", "grad_x", "grad_y")
CREATED = "2026-01-02T03:04:05+00:00"


def make_source(name: str, fmt: str = "well", size: int = 1234) -> dict[str, Any]:
    """One ``generation.sources`` entry of an imported sequence (the provenance contract)."""
    return {"uri": f"file:///data/{name}", "size": size,
            "sha256": hashlib.sha256(name.encode()).hexdigest(), "format": fmt,
            "member": f"trajectory 0 of {name}"}


def make_run(run_id: str = "run-1", *, seed: int = 1234, code_version: str = "atlasstore 0.1.0+g1234",
             host: str = "node-a", config: dict[str, Any] | None = None,
             finished: str | None = "2026-01-02T04:00:00+00:00", kind: str = "generate"
             ) -> dict[str, Any]:
    cfg = config if config is not None else {"domains": ["plasma_physics"], "n_sequences": 2,
                                             "n_steps": 4, "seed": seed}
    config_hash = "sha256:" + hashlib.sha256(run_id.encode()).hexdigest()
    return {"run_id": run_id, "config": cfg, "config_hash": config_hash,
            "seed": seed, "code_version": code_version, "host": host,
            "started": "2026-01-02T03:00:00+00:00", "finished": finished,
            "counts": {"sequences": 2, "arrays": 18}, "kind": kind}


def make_sequence(domain: str, sequence_id: str, run_id: str = "run-1", *, seed: int = 7,
                  n_steps: int = 4, entropy: tuple[float, float] = (7.0, 7.5),
                  mean: tuple[float, float] = (1.0, 1.0), variance: tuple[float, float] = (0.1, 0.3),
                  perturbations: tuple[str, ...] = ("rotation", "gaussian_noise"),
                  levels: tuple[int, ...] = LEVELS, shape: tuple[int, int] = (256, 256),
                  pattern: str | None = "turbulent", kind: str | None = None,
                  sources: list[dict[str, Any]] | None = None, source: str | None = None,
                  with_entropy: bool = True) -> tuple[dict, list[dict], list[dict]]:
    """(sequence, timesteps, arrays) dicts for one synthetic sequence.

    ``kind`` defaults to "generate" with a run id, else "api"; ``with_entropy=False`` makes an
    intensive field (no entropy, no sums)."""
    kind = kind or ("generate" if run_id else "api")
    key = f"{domain}/{sequence_id}"
    seq = {"key": key, "domain": domain, "sequence_id": sequence_id, "run_id": run_id,
           "seed": seed, "pattern": pattern, "n_steps": n_steps, "shape": list(shape),
           "levels": list(levels), "perturbation_kinds": list(perturbations),
           "entropy_min": entropy[0] if with_entropy else None,
           "entropy_max": entropy[1] if with_entropy else None, "mean_min": mean[0],
           "mean_max": mean[1], "variance_min": variance[0], "variance_max": variance[1],
           "created": CREATED, "status": "complete", "kind": kind, "source": source,
           "sources": list(sources or [])}

    def lerp(rng: tuple[float, float], t: int) -> float:
        if t == 0 or n_steps == 1:
            return rng[0]
        return rng[1] if t == n_steps - 1 else rng[0] + (rng[1] - rng[0]) * t / (n_steps - 1)

    steps = []
    for t in range(n_steps):
        kinds = [] if t == 0 else [perturbations[(t - 1) % len(perturbations)]] if perturbations else []
        m = lerp(mean, t)
        steps.append({"key": f"{key}/{t}", "sequence_key": key, "t": t, "mean": m,
                      "variance": lerp(variance, t),
                      "entropy": lerp(entropy, t) if with_entropy else None,
                      "sum": m * shape[0] * shape[1] if with_entropy else None,
                      "perturbation_kinds": kinds,
                      # a missing cell in every other step: the count round-trips, None too
                      "valid_cells": shape[0] * shape[1] - 1 if t % 2 else None})
    arrays = []
    base = levels[0]
    for lv in levels:
        ny, nx = shape[0] * lv // base, shape[1] * lv // base
        for f in FIELDS:
            akey = f"{key}/{lv}/{f}"
            if f == "energy":
                derived = None if lv == base else f"{key}/{base}/energy"
                op = None if lv == base else f"area_downsample(factor={base // lv})"
            else:
                derived = f"{key}/{lv}/energy"
                op = f"gradient({f[-1]}, central, h=1)"
            stats = {"mean": 1.0 if f == "energy" else 0.0, "variance": 0.2,
                     "min": 0.0 if f == "energy" else -1.0, "max": 3.0,
                     "valid_fraction": 1.0 if lv == base else 0.75}
            if f == "energy" and with_entropy:
                stats["entropy"] = entropy[0]
            arrays.append({"key": akey, "sequence_key": key, "level": lv, "field": f,
                           "shape": [n_steps, ny, nx], "dtype": "float32",
                           "checksum": "sha256:" + hashlib.sha256(akey.encode()).hexdigest(),
                           "nbytes_stored": 1000 + lv, "stats": stats,
                           "derived_from": derived, "operation": op})
    return seq, steps, arrays


def batch(*made: tuple[dict, list[dict], list[dict]]) -> tuple[list[dict], list[dict], list[dict]]:
    """Concatenate several make_sequence results into register_sequences arguments."""
    seqs, steps, arrays = [], [], []
    for s, t, a in made:
        seqs.append(s)
        steps += t
        arrays += a
    return seqs, steps, arrays


# The hostile strings of the injection tests: each must round-trip as plain data.
HOSTILE = [
    "it's \"quoted\"",
    "back`tick`",
    "{braces} [brackets] (parens)",
    "'}) DETACH DELETE n //",
    "\"}) MATCH (n) DETACH DELETE n RETURN 1 //",
    "$param {key: $key}",
    "line1\nline2\r\nline3\ttab",
    "unicode Ωμέγα ✓ 能量 🚀",
    "; DROP TABLE sequences; --",
    "x' OR '1'='1",
    "\\backslash\\",
]


# ---------------------------------------------------------------------------------- neo4j


def neo4j_settings() -> dict[str, str] | None:
    """NEO4J_URI/USER/PASSWORD from the environment, else from ``scripts/neo4j env``."""
    if os.environ.get("NEO4J_URI"):
        return {"uri": os.environ["NEO4J_URI"], "user": os.environ.get("NEO4J_USER", "neo4j"),
                "password": os.environ.get("NEO4J_PASSWORD", "")}
    script = REPO / "scripts" / "neo4j"
    if not script.is_file():
        return None
    try:
        out = subprocess.run([str(script), "env"], capture_output=True, text=True, timeout=20,
                             check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    env: dict[str, str] = {}
    for line in out.splitlines():
        parts = shlex.split(line)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            k, v = parts[1].split("=", 1)
            env[k] = v
    if "NEO4J_URI" not in env:
        return None
    return {"uri": env["NEO4J_URI"], "user": env.get("NEO4J_USER", "neo4j"),
            "password": env.get("NEO4J_PASSWORD", "")}


def _unavailable(reason: str) -> None:
    msg = (f"Neo4j test server not reachable: {reason}. Start one with `scripts/neo4j start` and "
           "`eval \"$(scripts/neo4j env)\"`")
    if os.environ.get("ATLAS_REQUIRE_NEO4J") == "1":
        pytest.fail(f"ATLAS_REQUIRE_NEO4J=1 but {msg}", pytrace=False)
    pytest.skip(msg)


def wipe_neo4j(settings: dict[str, str]) -> None:
    """Delete every node and relationship (a test server only!); constraints stay."""
    import neo4j

    auth = (settings["user"], settings["password"]) if settings["password"] else None
    with neo4j.GraphDatabase.driver(settings["uri"], auth=auth, connection_timeout=5) as drv:
        with drv.session(database=os.environ.get("ATLAS_NEO4J_DATABASE") or None) as s:
            s.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()


def open_neo4j_or_skip(**kwargs: Any) -> Any:
    """A Neo4jCatalog on a wiped test database; skip (or fail under ATLAS_REQUIRE_NEO4J=1)."""
    import neo4j

    from atlasstore.catalog.neo4j import Neo4jCatalog
    from atlasstore.errors import CatalogUnavailable

    settings = neo4j_settings()
    if settings is None:
        _unavailable("NEO4J_URI is not set and `scripts/neo4j env` gave no settings")
    try:
        wipe_neo4j(settings)
    except (neo4j.exceptions.ServiceUnavailable, neo4j.exceptions.AuthError, OSError) as exc:
        _unavailable(f"{settings['uri']}: {type(exc).__name__}: {exc}")
    try:
        return Neo4jCatalog(settings["uri"], settings["user"], settings["password"],
                            connection_timeout=5, **kwargs)
    except CatalogUnavailable as exc:
        _unavailable(str(exc))


def raw_counts(cat: Any) -> dict[str, int]:
    """Stored node counts per kind and the edge count, read around the public API (tests only)."""
    if cat.backend == "sqlite":
        q = cat._q
        return {"Sequence": q("SELECT COUNT(*) FROM sequences")[0][0],
                "TimeStep": q("SELECT COUNT(*) FROM timesteps")[0][0],
                "Array": q("SELECT COUNT(*) FROM arrays")[0][0],
                "GenerationRun": q("SELECT COUNT(*) FROM generation_runs WHERE kind = 'generate'")[0][0],
                "ImportRun": q("SELECT COUNT(*) FROM generation_runs WHERE kind = 'import'")[0][0],
                "SourceFile": q("SELECT COUNT(*) FROM source_files")[0][0],
                "edges": q("SELECT COUNT(*) FROM edges")[0][0]}
    rows = cat._rows("MATCH (n) RETURN labels(n)[0] AS kind, count(*) AS n")
    out = {k: 0 for k in ("Sequence", "TimeStep", "Array", "GenerationRun", "ImportRun",
                          "SourceFile")}
    out.update({r["kind"]: r["n"] for r in rows if r["kind"] in out})
    out["edges"] = cat._rows("MATCH ()-[r]->() RETURN count(r) AS n")[0]["n"]
    return out


@pytest.fixture(params=["sqlite", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def catalog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """An empty catalog of each backend (Neo4j: the test server, wiped); closed afterwards.

    Test modules use it with ``from catalog_fixtures import catalog``."""
    from atlasstore.catalog import SQLiteCatalog

    cat = SQLiteCatalog(tmp_path / "catalog.db") if request.param == "sqlite" else open_neo4j_or_skip()
    try:
        yield cat
    finally:
        cat.close()
