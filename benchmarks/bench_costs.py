"""Costs that follow the request, not the store (issue 19 item 4): listing, a query naming one
sequence, and catalog count/select, as the store grows.

One command::

    .venv/bin/python benchmarks/bench_costs.py            # 200 / 2,000 / 20,000 sequences
    .venv/bin/python benchmarks/bench_costs.py --quick --out /tmp/costs.md   # a smoke run

What is measured (in-process wall time, median of ``--repeats``; a fresh ``AtlasStore`` per run,
so nothing is cached between runs):

(1) Stores of ``n`` tiny committed sequences (64x64, 2 steps, one level; built as
    ``tests/helpers/s3_tiny_stores.py`` builds them: two written through the real write path,
    the rest copies with their id replaced in their ``zarr.json``) with their SQLite catalog
    bound at the change log's head, on local disk and on the loopback S3 test server (moto;
    requests counted). Rows: ``atlas ls``, ``atlas ls DOMAIN``, a query naming one sequence
    (``--count``) without and with the catalog. Each row has its baseline measured in the same
    run: main's old behaviour, which is still there to call (``ls -l`` reads every document as
    ``ls`` did; the old selection is re-enacted by :class:`OldScan` / :class:`OldCatalog`, the
    removed code verbatim).
(2) SQLite catalogs of 2k / 20k / 200k synthetic sequence records (``make_sequence``, 4 steps
    each, registered through the catalog API; no store needed): the catalog calls a query's
    selection issues - a named sequence (``get_sequence``), a whole domain (``find_sequences``),
    a selective stat range (``find_sequences`` + ``find_timesteps``) - timed.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import io
import os
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np

import machine
from atlasstore import cli
from atlasstore.catalog import SQLiteCatalog
from atlasstore.catalog.records import StoreSync
from atlasstore.catalog.selector import CatalogSelector
from atlasstore.catalog.sync import register_run, register_sequence_infos
from atlasstore.query import Query, Selected, StoreSelector
from atlasstore.store import AtlasStore, RunLog
from atlasstore.store.change_log import ChangeLog, store_id
from helpers import s3_tiny_stores as tiny
from helpers.catalog_fixtures import make_sequence
from helpers.s3_server import S3Server

RESULTS = ROOT / "benchmarks" / "results"
DOMAIN = tiny.DOMAIN


class OldScan(StoreSelector):
    """main's store scan before this change: every sequence document of the domain, then the
    name filter (``Query.wants_sequence``)."""

    def select(self, query: Query) -> list[Selected]:
        out = []
        for domain in query.resolved_domains():
            for seq_id in query.store.sequences(domain):
                sel = self._one(query, domain, seq_id)
                if sel is not None:
                    out.append(sel)
        return out


class OldCatalog(CatalogSelector):
    """main's catalog selection before this change: every sequence of the domains, then the
    name filter."""

    def _sequences(self, query: Query, domains: list[str]) -> list[Any]:
        seqs = self.catalog.find_sequences(domains=domains, run_id=query.run_id,
                                           perturbation=query.perturbation)
        return [s for s in seqs if query.wants_sequence(s.domain, s.sequence_id)]


# --------------------------------------------------------------------------- building


def build_local(path: Path, n: int, catalog: Path) -> None:
    """The tiny store of :mod:`helpers.s3_tiny_stores` on local disk (copies by the file)."""
    s = AtlasStore.create(path)
    s.create_domain(DOMAIN)
    runs = RunLog(s)
    for run in (tiny.BULK, tiny.PICK):
        runs.start(run)
    infos = {}
    ramp = np.linspace(0.5, 1.5, 64 * 64, dtype=np.float32).reshape(64, 64)
    for i, run in ((0, tiny.BULK), (1, tiny.PICK)):
        energy = np.stack([ramp + i, ramp * 2 + i])
        infos[run["run_id"]] = s.write_sequence(DOMAIN, tiny.seq_id(i), energy,
                                                generation={"run_id": run["run_id"], "seed": i})
    for j in range(2, n):
        i = 1 if j % tiny.PICK_EVERY == 1 else 0
        src, dst = path / DOMAIN / tiny.seq_id(i), path / DOMAIN / tiny.seq_id(j)
        shutil.copytree(src, dst)
        doc = dst / "zarr.json"
        doc.write_text(doc.read_text().replace(tiny.seq_id(i), tiny.seq_id(j)))
    with SQLiteCatalog(str(catalog)) as cat:
        for run in (tiny.BULK, tiny.PICK):
            register_run(cat, run)
        batch = []
        for j in range(n):
            info = copy.deepcopy(infos[(tiny.PICK if j % tiny.PICK_EVERY == 1
                                        else tiny.BULK)["run_id"]])
            info["sequence_id"] = tiny.seq_id(j)
            batch.append(info)
        register_sequence_infos(cat, batch)
        assert cat.commit_sync(None, StoreSync(store_id(s), ChangeLog(s).head()))


# --------------------------------------------------------------------------- measuring


def timed(fn: Callable[[], Any], repeats: int, srv: S3Server | None) -> tuple[float, int | None]:
    """(median seconds, requests of one run) of ``fn``."""
    times, reqs = [], None
    for _ in range(repeats):
        if srv is not None:
            srv.reset_counts()
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
        if srv is not None:
            reqs = sum(srv.counts().values())
    return statistics.median(times), reqs


def atlas(*argv: str) -> None:
    with contextlib.redirect_stdout(io.StringIO()):
        assert cli.main(list(argv)) == 0


def named_count(url: str, catalog: Path | None, selector: type) -> None:
    store = AtlasStore.open(url)
    cat = SQLiteCatalog(str(catalog), read_only=True) if catalog is not None else None
    try:
        sel = selector(cat) if cat is not None else selector()
        q = Query(store, domains=[DOMAIN], sequences=(tiny.seq_id(7),), window=2, selector=sel)
        assert q.count() == 1
    finally:
        if cat is not None:
            cat.close()


def store_rows(url: str, catalog: Path, repeats: int, srv: S3Server | None) -> list[tuple]:
    """(what, new (s, requests), old (s, requests)) for one store."""
    return [
        ("`atlas ls`", timed(lambda: atlas("ls", "--store", url), repeats, srv),
         timed(lambda: atlas("ls", "-l", "--store", url), repeats, srv)),
        ("`atlas ls DOMAIN`", timed(lambda: atlas("ls", DOMAIN, "--store", url), repeats, srv),
         timed(lambda: atlas("ls", "-l", DOMAIN, "--store", url), repeats, srv)),
        ("query naming 1 sequence, no catalog",
         timed(lambda: named_count(url, None, StoreSelector), repeats, srv),
         timed(lambda: named_count(url, None, OldScan), repeats, srv)),
        ("query naming 1 sequence, catalog",
         timed(lambda: named_count(url, catalog, CatalogSelector), repeats, srv),
         timed(lambda: named_count(url, catalog, OldCatalog), repeats, srv)),
    ]


def catalog_rows(tmp: Path, n: int, repeats: int) -> dict[str, float]:
    """Seconds of each catalog call a selection issues, on ``n`` synthetic records."""
    cat = SQLiteCatalog(str(tmp / f"records{n}.sqlite"))
    rng = np.random.default_rng(0)
    ent = rng.uniform(5.0, 12.0, n)
    for k in range(0, n, 5000):
        seqs, steps = [], []
        for j in range(k, min(n, k + 5000)):
            s, ts, _ = make_sequence("d", f"s{j:06d}", entropy=(ent[j], ent[j] + 0.01))
            seqs.append(s)
            steps += ts
        cat.register_sequences(seqs, steps)
    lo = float(np.sort(ent)[n // 2])  # a range that holds ~20 sequences at any n
    hi = lo + 20 * 7.0 / n
    store = AtlasStore.create(tmp / f"records{n}.zarr")  # a domain to query, bound to the catalog
    store.create_domain("d")
    assert cat.commit_sync(None, StoreSync(store_id(store), ChangeLog(store).head()))

    def count(selector: type, **kw: Any) -> int:
        return Query(AtlasStore.open(store.location), domains=["d"], scale=256, window=2,
                     selector=selector(cat), **kw).count()
    assert count(CatalogSelector, sequences=("s000007",)) == 3
    out = {
        "query naming 1 sequence, `count()` through the catalog":
            timed(lambda: count(CatalogSelector, sequences=("s000007",)), repeats, None)[0],
        "the same, old selection (`OldCatalog`)":
            timed(lambda: count(OldCatalog, sequences=("s000007",)), repeats, None)[0],
        "query with an entropy range (~20 sequences), `count()` through the catalog":
            timed(lambda: count(CatalogSelector, entropy=(lo, hi)), repeats, None)[0],
        "get_sequence (a named sequence)":
            timed(lambda: cat.get_sequence("d/s000007"), repeats * 10, None)[0],
        "find_sequences, entropy range (~20 sequences)":
            timed(lambda: cat.find_sequences(domains=["d"], entropy=(lo, hi)), repeats, None)[0],
        "find_timesteps, entropy range (~20 sequences)":
            timed(lambda: cat.find_timesteps(domains=["d"], entropy=(lo, hi)), repeats, None)[0],
        "find_sequences, whole domain":
            timed(lambda: cat.find_sequences(domains=["d"]), repeats, None)[0],
    }
    cat.close()
    return out


# --------------------------------------------------------------------------- report


def _ms(s: float) -> str:
    if s < 0.001:
        return f"{s * 1e6:,.0f} us"
    return f"{s * 1000:,.1f} ms" if s < 10 else f"{s:,.1f} s"


def _store_table(results: dict[tuple[str, int], list[tuple]], sizes: list[int]) -> list[str]:
    lines = ["| where | what | " + " | ".join(f"{n:,} seq: now / old (ratio)" for n in sizes)
             + " | now, growth over the sizes |",
             "|---|---|" + "---:|" * len(sizes) + "---:|"]
    for where in ("local disk", "S3"):
        keys = [(where, n) for n in sizes if (where, n) in results]
        if not keys:
            continue
        for i, (what, _, _) in enumerate(results[keys[0]]):
            cells = []
            for k in keys:
                _, (t_new, r_new), (t_old, r_old) = results[k][i]
                req = f", {r_new} / {r_old} req" if r_new is not None else ""
                cells.append(f"{_ms(t_new)} / {_ms(t_old)} ({t_old / t_new:.1f}x){req}")
            first, last = results[keys[0]][i][1][0], results[keys[-1]][i][1][0]
            cells += [""] * (len(sizes) - len(keys))
            lines.append(f"| {where} | {what} | " + " | ".join(cells)
                         + f" | {last / first:.2f}x |")
    return lines


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="200,2000,20000", help="store sizes (sequences)")
    ap.add_argument("--s3-sizes", default="200,2000", help="store sizes on S3")
    ap.add_argument("--catalog-sizes", default="2000,20000,200000")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quick", action="store_true", help="small sizes (smoke run)")
    ap.add_argument("--out", default=str(RESULTS / "costs.md"))
    args = ap.parse_args(argv)
    if args.quick:
        args.sizes, args.s3_sizes, args.catalog_sizes, args.repeats = "50,200", "50", "500,2000", 2
    sizes = [int(x) for x in args.sizes.split(",") if x]
    s3_sizes = [int(x) for x in args.s3_sizes.split(",") if x]
    cat_sizes = [int(x) for x in args.catalog_sizes.split(",")]
    started = machine.start()
    cmd = "python benchmarks/bench_costs.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
    t_all = time.perf_counter()
    results: dict[tuple[str, int], list[tuple]] = {}
    cat_results: dict[int, dict[str, float]] = {}
    build_s: dict[int, float] = {}
    with tempfile.TemporaryDirectory(prefix="bench-costs-") as tmp_:
        tmp = Path(tmp_)
        for n in sizes:
            print(f"local disk, {n} sequences", flush=True)
            build_local(tmp / f"l{n}.zarr", n, tmp / f"l{n}.sqlite")
            results[("local disk", n)] = store_rows(str(tmp / f"l{n}.zarr"), tmp / f"l{n}.sqlite",
                                                    args.repeats, None)
            shutil.rmtree(tmp / f"l{n}.zarr")
        if s3_sizes:
            srv = S3Server().start(log=tmp / "server.log")
            try:
                os.environ.update(srv.env())
                os.environ["ATLAS_CACHE_DIR"] = str(tmp / "cache")
                srv.create_bucket("bench")
                for n in s3_sizes:
                    print(f"S3, {n} sequences", flush=True)
                    url = f"s3://bench/tiny{n}.zarr"
                    tiny.build(srv, url, n, tmp / f"s{n}.sqlite")
                    results[("S3", n)] = store_rows(url, tmp / f"s{n}.sqlite",
                                                    max(1, args.repeats // 2), srv)
            finally:
                srv.stop()
        for n in cat_sizes:
            print(f"catalog, {n} records", flush=True)
            t = time.perf_counter()
            cat_results[n] = catalog_rows(tmp, n, args.repeats)
            build_s[n] = time.perf_counter() - t
    lines = [
        "# Costs that follow the request, not the store",
        "",
        f"- command: `{cmd.strip()}` (from the repository root; "
        f"{time.perf_counter() - t_all:.0f} s in all)"
        + ("; **smoke run (--quick): small sizes, not for quoting**" if args.quick else ""),
        *machine.describe(started, ("numpy", "zarr", "obstore", "moto")),
        "- stores: tiny committed sequences (64x64, 2 steps, one level) in one domain, with their "
        "SQLite catalog bound at the change log's head; a fresh `AtlasStore` per run; in-process "
        f"wall time, median of {args.repeats} runs ({max(1, args.repeats // 2)} on S3); "
        "requests: those reaching the loopback moto server in one run",
        "- old: main's behaviour before this change, measured in the same run: `ls -l` (what `ls` "
        "did: read every sequence document), and the removed selection code re-enacted "
        "(`OldScan`, `OldCatalog` in the benchmark)",
        "",
        *(["## (1) Listing and a query naming one sequence", "",
           *_store_table(results, sorted({n for _, n in results})), ""] if results else []),
        "## (2) The catalog calls of a selection (SQLite, synthetic records, 4 steps each)",
        "",
        "Building and measuring each catalog took " + ", ".join(
            f"{build_s[n]:.0f} s ({n:,})" for n in cat_sizes) + ".",
        "",
        "| call | " + " | ".join(f"{n:,} records" for n in cat_sizes) + " | growth |",
        "|---|" + "---:|" * len(cat_sizes) + "---:|",
    ]
    for what in next(iter(cat_results.values())):
        vals = [cat_results[n][what] for n in cat_sizes]
        lines.append(f"| {what} | " + " | ".join(_ms(v) for v in vals)
                     + f" | {vals[-1] / vals[0]:.2f}x |")
    lines += [""]
    text = "\n".join(lines)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
