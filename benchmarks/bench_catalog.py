"""Catalog benchmark: registration throughput and stats-filter query latency, SQLite vs Neo4j.

One command (starts the development Neo4j server with ``scripts/neo4j start`` when NEO4J_URI is
not set; the Neo4j part is skipped, and said so, when no server can be had)::

    .venv/bin/python benchmarks/bench_catalog.py --wipe-neo4j

WARNING: the Neo4j part deletes every node of the database it is pointed at (it needs an empty
one to measure inserts); it refuses to run on a non-empty database without ``--wipe-neo4j``.
Point it only at a development/test server.

What is measured (all through the public catalog API, records validated against their JSON
Schemas as in production, unless a row says otherwise):

1. Registering ``--arrays`` (100k) ArrayRecords of already-registered sequences (9 per sequence:
   3 levels x energy/grad_x/grad_y with their ``wasDerivedFrom`` edges):
   * Neo4j per-row: one managed transaction (``execute_write``) per record running the MERGE
     statements for that one record; measured on ``--per-row`` (5k) records and reported as a
     rate (extrapolated to 100k, as said in the table). Two variants: the bare statements
     (no reference checks) and the public API called with one record per call.
   * Neo4j batched: ``register_sequences([], [], batch)`` with ``--batch-size`` (5000) records per
     call, i.e. one transaction per batch of ``UNWIND $rows AS r MERGE ...`` statements.
   * SQLite: the same calls (``executemany`` inside one transaction per batch).
2. ``find_sequences(domains=d, entropy=(lo, hi), mean=(lo, hi))`` over ``--sequences`` (100k)
   sequences in 5 domains: p50/p95 latency of ``--queries`` (200) random queries after 20 warm-up
   queries, on both backends (same data, same queries, same results checked equal).

Writes a Markdown report to ``benchmarks/results/catalog.md`` (``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import os
import random
import shlex
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

import machine
from atlasstore.catalog import SQLiteCatalog
from atlasstore.catalog.neo4j import Neo4jCatalog
from atlasstore.catalog.neo4j.cypher_writes import _MERGE_ARRAYS
from atlasstore.catalog.records import ArrayRecord
from atlasstore.catalog.sqlite.rows import _arr_row
from atlasstore.errors import CatalogUnavailable
from helpers.catalog_fixtures import make_run, make_sequence

DOMAINS = ("plasma_physics", "fluid_dynamics", "astrophysics", "turbulent_radiative_layer",
           "active_matter")


# ------------------------------------------------------------------------------ data


def array_workload(n_arrays: int, prefix: str) -> tuple[list[dict], list[dict]]:
    """Sequences (no parts) and exactly n_arrays ArrayRecords belonging to them."""
    seqs, arrays = [], []
    i = 0
    while len(arrays) < n_arrays:
        s, _, a = make_sequence(DOMAINS[i % 5], f"{prefix}{i:06d}", "bench-run", seed=i)
        seqs.append(s)
        arrays += a
        i += 1
    return seqs, arrays[:n_arrays]


def query_workload(n_seq: int, rng: random.Random) -> list[dict]:
    out = []
    for i in range(n_seq):
        d = DOMAINS[i % 5]
        e0 = rng.uniform(5.0, 11.0)
        m0 = rng.uniform(0.5, 2.0)
        v0 = rng.uniform(0.0, 1.0)
        out.append({"key": f"{d}/q{i:06d}", "domain": d, "sequence_id": f"q{i:06d}",
                    "run_id": "bench-run", "seed": i, "pattern": "turbulent", "n_steps": 16,
                    "shape": [256, 256], "levels": [256, 128, 64],
                    "perturbation_kinds": ["rotation", "thermal_blur"],
                    "entropy_min": e0, "entropy_max": e0 + rng.uniform(0.0, 0.2),
                    "mean_min": m0, "mean_max": m0 + rng.uniform(0.0, 0.1),
                    "variance_min": v0, "variance_max": v0 + rng.uniform(0.0, 0.5),
                    "created": "2026-01-01T00:00:00+00:00", "status": "complete"})
    return out


def random_queries(n: int, rng: random.Random) -> list[dict]:
    qs = []
    for _ in range(n):
        e = rng.uniform(5.0, 11.0)
        m = rng.uniform(0.5, 2.0)
        qs.append({"domains": rng.choice(DOMAINS), "entropy": (e, e + rng.uniform(0.05, 0.3)),
                   "mean": (m, m + rng.uniform(0.05, 0.3))})
    return qs


# ------------------------------------------------------------------------------ helpers


def neo4j_settings(start: bool) -> dict[str, str] | None:
    if os.environ.get("NEO4J_URI"):
        return {"uri": os.environ["NEO4J_URI"], "user": os.environ.get("NEO4J_USER", "neo4j"),
                "password": os.environ.get("NEO4J_PASSWORD", "")}
    script = REPO / "scripts" / "neo4j"
    if not script.is_file():
        return None
    if start:
        print("starting the development server: scripts/neo4j start", file=sys.stderr)
        if subprocess.run([str(script), "start"]).returncode != 0:
            return None
    out = subprocess.run([str(script), "env"], capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        parts = shlex.split(line)
        if len(parts) == 2 and parts[0] == "export" and "=" in parts[1]:
            k, v = parts[1].split("=", 1)
            env[k] = v
    if "NEO4J_URI" not in env:
        return None
    return {"uri": env["NEO4J_URI"], "user": env.get("NEO4J_USER", "neo4j"),
            "password": env.get("NEO4J_PASSWORD", "")}


def wipe(cat: Neo4jCatalog) -> None:
    with cat._session() as s:
        s.run("MATCH (n) CALL (n) { DETACH DELETE n } IN TRANSACTIONS OF 10000 ROWS").consume()


def neo4j_node_count(cat: Neo4jCatalog) -> int:
    return cat._rows("MATCH (n) WHERE NOT n:AtlasCatalogMeta RETURN count(n) AS n")[0]["n"]


def register_in_batches(cat: Any, seqs: list, timesteps: list, arrays: list, bs: int) -> None:
    for i in range(0, len(seqs), bs):
        cat.register_sequences(seqs[i:i + bs], [], [])
    for i in range(0, len(arrays), bs):
        cat.register_sequences([], [], arrays[i:i + bs])


def timed(fn: Any) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    k = (len(xs) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


# ------------------------------------------------------------------------------ benchmark


def bench_writes(cat: Any, args: argparse.Namespace, rows: list[tuple], is_neo: bool) -> None:
    name = cat.backend
    seqs, arrays = array_workload(args.arrays, "w")
    cat.register_run(make_run("bench-run"))
    if is_neo:
        # per-row (a): bare statements, one transaction per record
        pseqs, parr = array_workload(args.per_row, "p")
        register_in_batches(cat, pseqs, [], [], args.batch_size)
        recs = [ArrayRecord.from_dict(a) for a in parr]

        def per_row_bare() -> None:
            with cat._session() as s:
                for r in recs:
                    row = _arr_row(r)
                    s.execute_write(lambda tx, row=row: tx.run(_MERGE_ARRAYS, rows=[row]).consume())
        t = timed(per_row_bare)
        rows.append(("per_row_bare", name,
                     "per-row MERGE, 1 transaction per record (the same UNWIND statement, 1 row)",
                     len(recs), t, len(recs) / t, f"{len(recs)} records, rate extrapolated"))
        wipe(cat)
        cat.register_run(make_run("bench-run"))
        # per-row (b): the public API with one record per call
        register_in_batches(cat, pseqs, [], [], args.batch_size)
        t = timed(lambda: [cat.register_sequences([], [], [a]) for a in parr])
        rows.append(("per_row_api", name, "per-row via API: register_sequences([], [], [rec])", len(parr), t,
                     len(parr) / t, f"{len(parr)} records, rate extrapolated"))
        wipe(cat)
        cat.register_run(make_run("bench-run"))
    if is_neo:
        # batched, bare statement: the same UNWIND statement, batch_size rows per transaction
        register_in_batches(cat, seqs, [], [], args.batch_size)
        brecs = [_arr_row(ArrayRecord.from_dict(a)) for a in arrays]

        def batched_bare() -> None:
            with cat._session() as s:
                for i in range(0, len(brecs), args.batch_size):
                    ch = brecs[i:i + args.batch_size]
                    s.execute_write(lambda tx, ch=ch: tx.run(_MERGE_ARRAYS, rows=ch).consume())
        t = timed(batched_bare)
        rows.append(("batched_bare", name, f"batched, the same UNWIND statement, {args.batch_size}"
                     " rows per transaction (bare)", len(brecs), t, len(brecs) / t, ""))
        wipe(cat)
        cat.register_run(make_run("bench-run"))
    t_seq = timed(lambda: register_in_batches(cat, seqs, [], [], args.batch_size))
    rows.append(("seq", name, f"batched sequences (setup), {args.batch_size}/call", len(seqs), t_seq,
                 len(seqs) / t_seq, "Sequence nodes + wasGeneratedBy"))
    t = timed(lambda: [cat.register_sequences([], [], arrays[i:i + args.batch_size])
                       for i in range(0, len(arrays), args.batch_size)])
    rows.append(("batched", name, f"batched arrays, {args.batch_size}/call", len(arrays), t, len(arrays) / t,
                 "hasArray + wasDerivedFrom edges, schema-validated"))
    # the same again: an idempotent re-registration (updates, no duplicates)
    t = timed(lambda: [cat.register_sequences([], [], arrays[i:i + args.batch_size])
                       for i in range(0, len(arrays), args.batch_size)])
    rows.append(("again", name, f"batched arrays again (idempotent update), {args.batch_size}/call",
                 len(arrays), t, len(arrays) / t, ""))


def bench_queries(cat: Any, args: argparse.Namespace, data: list[dict], queries: list[dict],
                  results: dict[str, Any]) -> None:
    name = cat.backend
    cat.register_run(make_run("bench-run"))
    t = timed(lambda: register_in_batches(cat, data, [], [], args.batch_size))
    print(f"{name}: registered {len(data)} sequences in {t:.1f}s", file=sys.stderr)
    assert cat.count() == len(data)
    for q in queries[:20]:
        cat.find_sequences(**q)
    lat, counts, answers = [], [], []
    for q in queries:
        t0 = time.perf_counter()
        res = cat.find_sequences(**q)
        lat.append(time.perf_counter() - t0)
        counts.append(len(res))
        answers.append([s.key for s in res])
    results[name] = {"p50": percentile(lat, 0.5) * 1e3, "p95": percentile(lat, 0.95) * 1e3,
                     "max": max(lat) * 1e3, "mean_results": statistics.mean(counts),
                     "answers": answers, "register_s": t}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--arrays", type=int, default=100_000)
    p.add_argument("--per-row", type=int, default=5_000)
    p.add_argument("--batch-size", type=int, default=5_000)
    p.add_argument("--sequences", type=int, default=100_000)
    p.add_argument("--queries", type=int, default=200)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-neo4j", action="store_true", help="SQLite only")
    p.add_argument("--no-start", action="store_true", help="do not run scripts/neo4j start")
    p.add_argument("--wipe-neo4j", action="store_true",
                   help="allow deleting everything in a non-empty Neo4j database")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results" / "catalog.md")
    args = p.parse_args(argv)
    rng = random.Random(args.seed)
    started = machine.start()
    command = "python benchmarks/bench_catalog.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))

    neo: Neo4jCatalog | None = None
    neo_note = ""
    if not args.no_neo4j:
        s = neo4j_settings(start=not args.no_start)
        if s is None:
            neo_note = "Neo4j: skipped (no NEO4J_URI and scripts/neo4j could not provide a server)"
        else:
            try:
                neo = Neo4jCatalog(s["uri"], s["user"], s["password"], batch_size=args.batch_size)
            except CatalogUnavailable as exc:
                neo_note = f"Neo4j: skipped ({exc})"
        if neo is not None:
            if neo4j_node_count(neo) and not args.wipe_neo4j:
                print(f"refusing: the Neo4j database at {neo.uri} is not empty and the benchmark "
                      "deletes everything in it; pass --wipe-neo4j (dev/test servers only)",
                      file=sys.stderr)
                return 2
            version = neo._rows("CALL dbms.components() YIELD name, versions, edition "
                                "RETURN name, versions[0] AS v, edition")[0]
            neo_note = (f"Neo4j {version['v']} {version['edition']} at {neo.uri} "
                        f"(heap {os.environ.get('ATLAS_NEO4J_HEAP', '512m (scripts/neo4j default)')}, "
                        f"page cache {os.environ.get('ATLAS_NEO4J_PAGECACHE', '256m (default)')})")

    write_rows: list[tuple] = []
    qres: dict[str, Any] = {}
    data = query_workload(args.sequences, rng)
    queries = random_queries(args.queries + 20, rng)
    with tempfile.TemporaryDirectory() as tmp:
        lite = SQLiteCatalog(Path(tmp) / "w.db")
        bench_writes(lite, args, write_rows, is_neo=False)
        lite.close()
        lite = SQLiteCatalog(Path(tmp) / "q.db")
        bench_queries(lite, args, data, queries, qres)
        lite.close()
    if neo is not None:
        wipe(neo)
        bench_writes(neo, args, write_rows, is_neo=True)
        wipe(neo)
        bench_queries(neo, args, data, queries, qres)
        wipe(neo)
        neo.close()
    if "neo4j" in qres:
        assert qres["neo4j"]["answers"] == qres["sqlite"]["answers"], "backends disagree"

    # ---------------------------------------------------------------- report
    lines = ["# Catalog benchmark", "",
             *machine.describe(started, ("neo4j",), {"sqlite": sqlite3.sqlite_version}),
             f"- server: {neo_note or 'n/a'}",
             f"- command: `{command}`", "",
             f"## Registering ArrayRecords ({args.arrays:,} records; batch size {args.batch_size})", "",
             "| backend | method | records | seconds | records/s | notes |",
             "|---|---|---:|---:|---:|---|"]
    for _, b, m, n, t, r, note in write_rows:
        lines.append(f"| {b} | {m} | {n:,} | {t:.2f} | {r:,.0f} | {note} |")
    by = {(b, i): r for i, b, m, n, t, r, _ in write_rows}
    lines.append("")
    if ("neo4j", "per_row_bare") in by:
        bare = by[("neo4j", "per_row_bare")]
        api = by[("neo4j", "per_row_api")]
        batched = by[("neo4j", "batched")]
        bbare = by[("neo4j", "batched_bare")]
        lines += [f"- Neo4j batched / per-row, the same statement without the API: "
                  f"**{bbare / bare:.0f}x** (goal >= 50x)",
                  f"- Neo4j batched API ({args.arrays:,} records) / per-row bare statement: "
                  f"**{batched / bare:.0f}x**",
                  f"- Neo4j batched / per-row (public API, 1 call per record): "
                  f"**{batched / api:.0f}x**",
                  f"- per-row extrapolated to {args.arrays:,} records: "
                  f"{args.arrays / bare / 60:.1f} min (bare) vs batched "
                  f"{args.arrays / batched:.1f} s"]
    lines += [f"- SQLite batched arrays: {by[('sqlite', 'batched')]:,.0f} records/s", "",
              f"## Stats-filter query latency ({args.sequences:,} sequences in 5 domains, "
              f"{args.queries} queries after 20 warm-up)", "",
              "`find_sequences(domains=d, entropy=(lo, lo+0.05..0.3), mean=(lo, lo+0.05..0.3))`, "
              "overlap semantics, ordered by key; same data, same queries, same answers on "
              "both backends.", "",
              "| backend | p50 ms | p95 ms | max ms | mean results/query | goal p95 < 50 ms |",
              "|---|---:|---:|---:|---:|---|"]
    for b, r in qres.items():
        lines.append(f"| {b} | {r['p50']:.2f} | {r['p95']:.2f} | {r['max']:.2f} | "
                     f"{r['mean_results']:.1f} | {'met' if r['p95'] < 50 else 'NOT met'} |")
    if neo is None:
        lines += ["", f"Neo4j rows missing: {neo_note}"]
    report = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(report)
    print(report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
