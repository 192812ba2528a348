"""Remote-store benchmark: the same run on the same data from loopback S3 servers and from local
disk; generation into S3; requests against store size.

Run (from the repository root; the S3 servers are started here: moto's as in the tests, and
SeaweedFS, built once from its Go module by ``benchmarks/seaweedfs.py``):

    nice -n 5 .venv/bin/python benchmarks/bench_remote.py          # full run -> results/remote.md
    .venv/bin/python benchmarks/bench_remote.py --quick --out /tmp/remote.md   # smoke run
    ... --server moto|seaweedfs|both     # the servers of (1); default both (moto only, said so,
                                         # where Go or the SeaweedFS build is unavailable)

(1) Stream, per server: two epochs of one ``atlasstore.training.stream`` (n_in=4 steps at 256,
    128 and 64 + 1 target step at 256, stride 1, batch 16, shuffled, not normalised so no
    statistics pass touches the data first, TensorStore's decoded-chunk cache off so every epoch
    reads storage) over a store generated locally and copied object for object into the bucket,
    each epoch timed (wall, CPU of this process and of the server). Readers: local disk
    (TensorStore ``file``); S3 through the disk cache starting empty (first epoch cold, second
    warm) and starting filled by an earlier run; S3 straight through TensorStore's ``s3``
    kvstore (``ATLAS_CACHE_BYTES=0``); S3 through zarr-python over obstore (``reader="zarr"``).
    Each: samples/s, MB/s delivered, requests reaching the server. The ceiling: plain sequential
    GETs (obstore, one at a time) of the same shard objects. Then one more cold epoch,
    instrumented (:func:`cold_profile`): stream set-up, the disk cache's GETs and their
    concurrency, its ``ensure`` calls and the TensorStore reads.
(2) Generation (moto): ``generate()`` with 2 local worker processes into the bucket and into a local
    folder, maps/s (excluding nothing: start-up included, as a user sees it) and requests per
    sequence.
(3) Requests (moto) for open + select 1 % of the sequences + read 10 windows, on stores of 1k, 10k and
    100k tiny sequences built inside the server (``tests/helpers/s3_tiny_stores.py``), through the
    catalog and (where it is affordable) by scanning the store; plotted to
    ``results/remote_requests.png``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))  # the S3 test server and the tiny-store builder

import machine
import seaweedfs
from atlasstore.io.object_storage import S3Location, s3_client
from atlasstore.physics import synth
from atlasstore.query import Query
from atlasstore.runs.generate import Plan, generate
from atlasstore.store import AtlasStore
from atlasstore.training.stream import stream
from helpers import s3_tiny_stores as tiny
from helpers.s3_server import S3Server
from seaweedfs import SeaweedServer, Unavailable, go_version
from seaweedfs import build as build_seaweedfs

RESULTS = ROOT / "benchmarks" / "results"
N_IN, N_OUT, BATCH = 4, 1, 16
Server = S3Server | SeaweedServer


def _du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def upload(local: Path, url: str) -> int:
    """Copy a local store into the bucket object for object (same bytes); returns objects."""
    import obstore

    client = s3_client(S3Location.parse(url))
    files = [p for p in local.rglob("*") if p.is_file()]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: obstore.put(client, str(p.relative_to(local)), p.read_bytes()), files))
    return len(files)


def _server_cpu(srv: Server) -> float:
    """CPU seconds the server process has used so far (0 when it is not ours)."""
    import psutil

    if srv.proc is None:
        return 0.0
    c = psutil.Process(srv.proc.pid).cpu_times()
    return c.user + c.system + c.children_user + c.children_system


def epochs(srv: Server, url: str, reader: str = "auto", n_epochs: int = 2,
           cache_bytes: int | str = 0) -> list[tuple[float, int, int, int, float, float]]:
    """Epochs of one stream: [(seconds, samples, bytes delivered, requests, CPU s of this
    process, CPU s of the server)] per epoch. The first includes building the stream
    (selection, metadata reads), as a training run's does."""
    counts = [sum(srv.counts().values())]
    cpu0, scpu0 = time.process_time(), _server_cpu(srv)
    t0 = time.perf_counter()
    q = Query(AtlasStore.open(url), window=N_IN + N_OUT)
    it = stream(q, n_in=N_IN, n_out=N_OUT, batch_size=BATCH, seed=0, normalise=False,
                cache_bytes=cache_bytes, reader=reader, num_epochs=n_epochs)
    out, n, nbytes, step = [], 0, 0, 0
    for b in it:
        n += len(b["ids"])
        nbytes += sum(a.nbytes for a in b["inputs"].values()) + b["target"].nbytes
        step += 1
        if step % it.steps_per_epoch == 0:
            t = time.perf_counter()
            cpu, scpu = time.process_time(), _server_cpu(srv)
            counts.append(sum(srv.counts().values()))
            out.append((t - t0, n, nbytes, counts[-1] - counts[-2], cpu - cpu0, scpu - scpu0))
            cpu0, scpu0 = cpu, scpu
            t0, n, nbytes = time.perf_counter(), 0, 0
    it.close()
    return out


def stream_rows(srv: Server, local: Path, url: str, cache: Path, repeats: int,
                warm_up: bool = True) -> dict[Any, Any]:
    """Per reader: the first epoch of a stream and the next one (median over ``repeats``)."""
    rows: dict[Any, Any] = {}

    def run(label: str, target: str, env: dict[str, str], reader: str = "auto",
            fresh_cache: bool = False, cache_bytes: int | str = 0) -> None:
        got: list[list[tuple[float, int, int, int, float, float]]] = []
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            for _ in range(repeats):
                if fresh_cache:
                    shutil.rmtree(cache, ignore_errors=True)
                got.append(epochs(srv, target, reader, cache_bytes=cache_bytes))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        for i, which in enumerate(("first", "next")):
            times = [g[i][0] for g in got]
            t = statistics.median(times)
            _, n, nb, _, _, _ = got[0][i]
            reqs = statistics.median(g[i][3] for g in got)
            cpu = statistics.median(g[i][4] for g in got)
            scpu = statistics.median(g[i][5] for g in got)
            rows[(label, which)] = {"seconds": t, "samples": n, "bytes": nb, "requests": reqs,
                                    "cpu": cpu, "server_cpu": scpu}
            print(f"  {label}, {which} epoch: {n / t:.1f} samples/s, {nb / t / 1e6:.0f} MB/s, "
                  f"{reqs:.0f} requests, CPU {cpu:.2f} s + server {scpu:.2f} s")

    cache_env = {"ATLAS_CACHE_DIR": str(cache.parent), "ATLAS_CACHE_BYTES": str(8 * 2**30)}
    if warm_up:  # untimed: the first stream of a process sets up JAX
        epochs(srv, str(local), n_epochs=1)
    run("local disk", str(local), {})
    run("S3 through the disk cache, empty at start", url, cache_env, fresh_cache=True)
    run("S3 through the disk cache, filled by an earlier run", url, cache_env)
    run("S3, TensorStore s3 kvstore, no disk cache", url, {"ATLAS_CACHE_BYTES": "0"})
    run("S3, zarr-python over obstore, no disk cache", url, {"ATLAS_CACHE_BYTES": "0"},
        reader="zarr")
    run("S3, TensorStore s3 kvstore, no disk cache, decoded-chunk cache on (stream default)", url,
        {"ATLAS_CACHE_BYTES": "0"}, cache_bytes="auto")
    return rows


def get_ceiling(url: str, repeats: int) -> tuple[float, int, int]:
    """Plain sequential GETs of the shard objects the stream reads: (seconds, bytes, objects)."""
    import obstore

    s = AtlasStore.open(url)
    loc = S3Location.parse(url)
    client = s3_client(loc)
    keys = []
    for d, q in s.iter_sequences():
        for lvl in s.sequence_info(d, q)["levels"]:
            keys += [k["path"] for k in obstore.list(client, f"{d}/{q}/{lvl}/energy/").collect()
                     if k["path"].rsplit("/", 1)[-1].startswith("c")]
    times, nbytes = [], 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        nbytes = sum(len(obstore.get(client, k).bytes()) for k in keys)
        times.append(time.perf_counter() - t0)
    return statistics.median(times), nbytes, len(keys)


def _union(spans: list[tuple[float, float]]) -> float:
    """Seconds covered by at least one of these (start, end) intervals."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(spans):
        if b > end:
            total += b - max(a, end)
            end = b
    return total


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans],
                    key=lambda e: (e[0], e[1]))
    most = now = 0
    for _, d in events:
        now += d
        most = max(most, now)
    return most


def cold_profile(srv: Server, url: str, cache: Path) -> dict[str, Any]:
    """One more cold epoch (empty disk cache), instrumented: where its wall time goes. Records
    every GET the disk cache makes (obstore's ``get_async`` until its bytes arrive), every
    ``ensure`` (find what is missing, fetch it, place it) and every TensorStore read from the
    local copies (decode + copy into the batch); the producer runs 2 batches at once, so each is
    reported as the wall time covered by at least one interval."""
    import obstore

    from atlasstore.read import disk_cache
    from atlasstore.store.tensorstore_reader import TensorStoreReader

    gets: list[tuple[float, float]] = []
    ensures: list[tuple[float, float, int]] = []
    reads: list[tuple[float, float]] = []
    get_bytes, other = [0], [0]
    keys: list[str] = []
    cache_clients: set[int] = set()
    orig_get, orig_ensure = obstore.get_async, disk_cache.DiskCachedReader.ensure
    orig_init = disk_cache.DiskCachedReader.__init__
    orig_read = TensorStoreReader.copy_into

    class _Resp:
        def __init__(self, resp: Any, t0: float) -> None:
            self.resp, self.t0 = resp, t0

        async def bytes_async(self) -> Any:
            b = await self.resp.bytes_async()
            gets.append((self.t0, time.perf_counter()))
            get_bytes[0] += len(b)
            return b

    async def get_async(client: Any, key: str, *a: Any, **k: Any) -> Any:
        t0 = time.perf_counter()
        resp = await orig_get(client, key, *a, **k)
        if id(client) not in cache_clients:
            other[0] += 1
            return resp
        keys.append(key)
        return _Resp(resp, t0)

    def init(self: Any, *a: Any, **k: Any) -> None:
        orig_init(self, *a, **k)
        cache_clients.add(id(self.client))

    def ensure(self: Any, selections: Any) -> None:
        t0, f0 = time.perf_counter(), self.cache.fetched
        orig_ensure(self, selections)
        ensures.append((t0, time.perf_counter(), self.cache.fetched - f0))

    def copy_into(self: Any, jobs: Any) -> None:
        t0 = time.perf_counter()
        orig_read(self, jobs)
        reads.append((t0, time.perf_counter()))

    shutil.rmtree(cache, ignore_errors=True)
    saved = {k: os.environ.get(k) for k in ("ATLAS_CACHE_DIR", "ATLAS_CACHE_BYTES")}
    os.environ.update({"ATLAS_CACHE_DIR": str(cache.parent), "ATLAS_CACHE_BYTES": str(8 * 2**30)})
    obstore.get_async = get_async
    disk_cache.DiskCachedReader.__init__ = init  # type: ignore[method-assign]
    disk_cache.DiskCachedReader.ensure = ensure  # type: ignore[method-assign]
    TensorStoreReader.copy_into = copy_into  # type: ignore[method-assign]
    try:
        c0 = sum(srv.counts().values())
        cpu0, scpu0 = time.process_time(), _server_cpu(srv)
        t0 = time.perf_counter()
        q = Query(AtlasStore.open(url), window=N_IN + N_OUT)
        it = stream(q, n_in=N_IN, n_out=N_OUT, batch_size=BATCH, seed=0, normalise=False,
                    cache_bytes=0, num_epochs=1)
        t_built = time.perf_counter()
        first = None
        for _ in it:
            first = first or time.perf_counter()
        t_end = time.perf_counter()
        cpu, scpu = time.process_time() - cpu0, _server_cpu(srv) - scpu0
        it.close()
        reqs = sum(srv.counts().values()) - c0
    finally:
        obstore.get_async = orig_get
        disk_cache.DiskCachedReader.__init__ = orig_init  # type: ignore[method-assign]
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        disk_cache.DiskCachedReader.ensure = orig_ensure  # type: ignore[method-assign]
        TensorStoreReader.copy_into = orig_read  # type: ignore[method-assign]
    spans = [(a, b) for a, b, _ in ensures]
    fetching = [(a, b) for a, b, n in ensures if n]
    out = {
        "epoch": t_end - t0, "build": t_built - t0, "to_first_batch": (first or t_end) - t_built,
        "requests": reqs, "gets": len(gets), "unique_gets": len(set(keys)),
        "other_gets": other[0], "get_bytes": get_bytes[0],
        "get_busy": _union(gets), "get_sum": sum(b - a for a, b in gets),
        "get_max_in_flight": _max_overlap(gets), "ensures": len(ensures),
        "ensures_fetching": len(fetching), "ensure_busy": _union(spans),
        "fetching_busy": _union(fetching), "read_busy": _union(reads),
        "ensure_or_read_busy": _union(spans + reads),
        "last_get_end": (max(b for _, b in gets) - t0) if gets else 0.0,
        "cpu": cpu, "server_cpu": scpu,
    }
    out["get_mean_in_flight"] = out["get_sum"] / out["get_busy"] if out["get_busy"] else 0.0
    print("  cold epoch profile: " + ", ".join(
        f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in out.items()))
    return out


def gen_rows(srv: S3Server, tmp: Path, bucket: str, n_seq: int, steps: int) -> dict[str, Any]:
    rows = {}
    plan = Plan(domains=synth.DEFAULT_DOMAINS[:2], sequences=n_seq, steps=steps, shape=(256, 256))
    for label, target in (("local disk", str(tmp / "gen.zarr")), ("S3", f"s3://{bucket}/gen.zarr")):
        srv.reset_counts()
        t0 = time.perf_counter()
        rep = generate(target, plan, workers=2)
        t = time.perf_counter() - t0
        assert rep.ok and rep.written == 2 * n_seq, rep
        reqs = sum(srv.counts().values())
        rows[label] = {"maps": rep.maps, "seconds": t, "requests_per_seq": reqs / (2 * n_seq)}
        print(f"  generate into {label}: {rep.maps / t:.1f} maps/s, {reqs / (2 * n_seq):.0f} requests/seq")
    return rows


def scale_rows(srv: S3Server, tmp: Path, bucket: str, sizes: list[int], scan_up_to: int
               ) -> dict[int, Any]:
    import psutil

    out = {}
    for n in sizes:
        url, cat = f"s3://{bucket}/tiny{n}.zarr", tmp / f"tiny{n}.sqlite"
        t0 = time.perf_counter()
        tiny.build(srv, url, n, cat)
        t_build = time.perf_counter() - t0
        with_cat, sel = tiny.open_select_read(srv, url, cat)
        scan = None
        if n <= scan_up_to:
            scan, _ = tiny.open_select_read(srv, url, None)
        rss = psutil.Process(srv.proc.pid).memory_info().rss if srv.proc else 0
        out[n] = {"catalog": dict(with_cat), "scan": dict(scan) if scan else None, "selected": sel,
                  "build": t_build, "server_rss": rss, "catalog_bytes": cat.stat().st_size}
        print(f"  {n} sequences: built in {t_build:.0f} s; catalog {dict(with_cat)}; "
              f"scan {dict(scan) if scan else '-'}; server RSS {rss / 2**30:.1f} GiB")
    return out


def catalog_bytes_per_sequence(tmp: Path, steps: int, n: int) -> float:
    """SQLite catalog bytes per sequence of ``steps`` steps at 256x256 with 3 levels (9 arrays):
    ``n`` copies of one real sequence's records registered into a fresh catalog."""
    import copy

    import numpy as np

    from atlasstore.catalog import SQLiteCatalog
    from atlasstore.catalog.sync import register_run, register_sequence_infos

    s = AtlasStore.create(tmp / "catsize.zarr")
    s.create_domain("d")
    ramp = np.linspace(0.5, 1.5, 256 * 256, dtype=np.float32).reshape(256, 256)
    energy = np.stack([ramp * (1 + 0.01 * t) for t in range(steps)])
    run = tiny.run_record("catsize")
    info = s.write_sequence("d", "seq-00000", energy, generation={"run_id": run["run_id"], "seed": 0})
    path = tmp / "catsize.sqlite"
    with SQLiteCatalog(str(path)) as cat:
        register_run(cat, run)
        for k in range(0, n, 500):
            batch = []
            for j in range(k, min(n, k + 500)):
                rec = copy.deepcopy(info)
                rec["sequence_id"] = f"seq-{j:05d}"
                batch.append(rec)
            register_sequence_infos(cat, batch)
    return path.stat().st_size / n


def plot(scale: dict[int, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ns = sorted(scale)
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(ns, [sum(scale[n]["catalog"].values()) for n in ns], "o-",
            label="selected through the catalog")
    sn = [n for n in ns if scale[n]["scan"]]
    ax.plot(sn, [sum(scale[n]["scan"].values()) for n in sn], "s--", label="store scan (no catalog)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("sequences in the store")
    ax.set_ylabel("requests reaching the S3 server")
    ax.set_title("open + select 1 % + read 10 windows")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="small smoke run")
    ap.add_argument("--out", default=str(RESULTS / "remote.md"))
    ap.add_argument("--plot", default=None, help="PNG of requests vs store size "
                    "(default: remote_requests.png beside --out)")
    ap.add_argument("--repeats", type=int, default=None,
                    help="streams per reader, median reported (default 3; --quick 1)")
    ap.add_argument("--server", choices=("moto", "seaweedfs", "both"), default="both",
                    help="S3 server(s) of the stream section (1): moto's (the tests' server), "
                    "SeaweedFS (built once from its Go module, see benchmarks/seaweedfs.py) or "
                    "both (default; moto only, said so, where Go or the build is unavailable); "
                    "sections (2) and (3) always use moto")
    args = ap.parse_args(argv)
    quick = args.quick
    n_dom, n_seq, n_steps = (2, 2, 24) if quick else (3, 4, 24)
    repeats = args.repeats or (1 if quick else 3)
    sizes = [1000, 2000] if quick else [1000, 10_000, 100_000]
    scan_up_to = 1000 if quick else 10_000
    gen_seq, gen_steps = (2, 4) if quick else (4, 10)
    cmd = " ".join(["nice -n 5" if os.nice(0) >= 5 else "",
                    ".venv/bin/python benchmarks/bench_remote.py",
                    *(sys.argv[1:] if argv is None else argv)]).strip()
    out = Path(args.out)
    png = Path(args.plot) if args.plot else out.with_name("remote_requests.png")
    servers = ["moto", "seaweedfs"] if args.server == "both" else [args.server]
    weed: Path | None = None
    skipped = ""
    if "seaweedfs" in servers:
        print("SeaweedFS: finding or building the binary (the first build takes minutes)")
        try:
            weed = build_seaweedfs(log=Path(tempfile.gettempdir()) / "atlas-seaweedfs-build.log")
            print(f"  {weed}")
        except Unavailable as exc:
            if args.server == "seaweedfs":
                print(f"bench_remote: {exc}", file=sys.stderr)
                return 2
            skipped = str(exc)
            print(f"SeaweedFS not measured: {skipped}; measuring moto only", file=sys.stderr)
            servers = ["moto"]
    started = machine.start()
    t_all = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench_remote_"))
    srv = S3Server().start(log=tmp / "server.log")
    sw: SeaweedServer | None = None
    try:
        bucket = "bench"
        # ------------------------------------------------------------ data: same bytes twice
        local = tmp / "atlas.zarr"
        plan = Plan(domains=synth.DEFAULT_DOMAINS[:n_dom], sequences=n_seq, steps=n_steps,
                    shape=(256, 256))
        generate(local, plan, scheduler="serial")
        url = f"s3://{bucket}/atlas.zarr"
        size = _du(local)
        print("(1) stream")
        per: dict[str, dict[str, Any]] = {}
        for i, name in enumerate(servers):
            if name == "moto":
                cur: Server = srv
            else:
                assert weed is not None
                # its log outside tmp, which is removed at the end even when the server failed
                cur = sw = SeaweedServer(weed).start(
                    log=Path(tempfile.gettempdir()) / "atlas-seaweedfs.log")
            os.environ.update(cur.env())
            cur.create_bucket(bucket)
            n_obj = upload(local, url)
            print(f" [{name}] store: {n_obj} objects, {size / 2**20:.1f} MiB")
            cache = tmp / f"cache-{name}" / "chunks"
            rows = stream_rows(cur, local, url, cache, repeats, warm_up=i == 0)
            t_get, get_bytes, get_objects = get_ceiling(url, repeats)
            print(f"  plain GET ceiling: {get_bytes / t_get / 1e6:.0f} MB/s ({get_objects} objects)")
            prof = cold_profile(cur, url, cache)
            per[name] = {"rows": rows, "get": (t_get, get_bytes, get_objects), "profile": prof}
            if sw is not None:
                sw.stop()
                sw = None
        os.environ.update(srv.env())
        os.environ["ATLAS_CACHE_DIR"] = str(tmp / "cache")
        if "moto" not in servers:
            srv.create_bucket(bucket)
        print("(2) generation (moto)")
        gen = gen_rows(srv, tmp, bucket, gen_seq, gen_steps)
        print("(3) requests vs store size (moto)")
        scale = scale_rows(srv, tmp, bucket, sizes, scan_up_to)
        png.parent.mkdir(parents=True, exist_ok=True)
        plot(scale, png)
        cat_steps, cat_n = (24, 200) if quick else (120, 2000)
        per_seq = catalog_bytes_per_sequence(tmp, cat_steps, cat_n)
        print(f"  catalog: {per_seq / 1024:.0f} KiB per sequence of {cat_steps} steps")
        t_total = time.perf_counter() - t_all

        # ------------------------------------------------------------ report
        names = {"moto": "moto", "seaweedfs": f"SeaweedFS {seaweedfs.RELEASE}"}
        lines = [
            "# Remote stores: loopback S3 servers (moto; SeaweedFS) against local disk",
            "",
            f"- command: `{cmd}` (from the repository root; {t_total:.0f} s in all)"
            + ("; **smoke run (--quick): small sizes, not for quoting**" if quick else ""),
            *machine.describe(started, ("numpy", "tensorstore", "zarr", "obstore", "moto", "jax")),
            "- S3 servers, each in its own process on 127.0.0.1, sharing the cores with the "
            "benchmark: **moto**'s standalone server (`tests/helpers/s3_server.py`), one Python "
            "process serving every request; **SeaweedFS**"
            + (f" {seaweedfs.RELEASE} (Apache-2.0; Go module `{seaweedfs.MODULE}@"
               f"{seaweedfs.VERSION}`, built with `{go_version()}` by `benchmarks/seaweedfs.py`), "
               "`weed server -s3` single-node (master, volume server, filer and S3 gateway in one "
               "multi-threaded Go process, data in a temporary folder)"
               if "seaweedfs" in servers else f": not measured ({skipped or 'not asked for'})")
            + ". Sections (2) and (3) use moto only (they read its request log and copy objects "
            "inside it). Loopback servers answer at far lower latency than a real S3 service: "
            "these numbers compare readers and servers and show request counts, they do not "
            "predict AWS",
            f"- stream store: `generate` {n_dom} domains x {n_seq} sequences x {n_steps} steps at "
            f"256x256 (levels 256/128/64), {size / 2**20:.1f} MiB in {n_obj} objects, copied "
            "object for object into each server's bucket (the same bytes on every side)",
            f"- samples: n_in={N_IN} steps at 256, 128, 64 + n_out={N_OUT} step at 256, stride 1, "
            f"batch {BATCH}, shuffled, not normalised; TensorStore's decoded-chunk cache off "
            f"(`cache_bytes=0`, except in the last row), so every epoch reads storage; median of "
            f"{repeats} streams (the empty-cache row empties the cache folder before each); "
            "CPU: seconds of this process (all its threads) and of the server process",
            "",
            "## (1) Stream: samples/s from S3 and from local disk",
            "",
            "| server | GET ceiling | cold epoch | ceiling / cold epoch (goal >= 70 %) | "
            "local first epoch | cold - local first | ceiling / (cold - local first) | "
            "warm vs local (goal <= 1.2x) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in per.items():
            t_get, get_bytes, _ = r["get"]
            cold = r["rows"][("S3 through the disk cache, empty at start", "first")]
            warm = r["rows"][("S3 through the disk cache, empty at start", "next")]
            base = r["rows"][("local disk", "next")]
            lfirst = r["rows"][("local disk", "first")]
            extra = cold["seconds"] - lfirst["seconds"]
            lines.append(f"| {names[name]} | {get_bytes / t_get / 1e6:.0f} MB/s ({t_get:.2f} s) | "
                         f"{cold['seconds']:.2f} s | **{100 * t_get / cold['seconds']:.0f} %** | "
                         f"{lfirst['seconds']:.2f} s | {extra:.2f} s | "
                         + (f"{100 * t_get / extra:.0f} %" if extra > 0 else "-")
                         + f" | **{warm['seconds'] / base['seconds']:.2f}x** |")
        lines += [
            "",
            "The GET ceiling: plain sequential GETs (obstore, one at a time) of every energy shard "
            "the stream reads; the cold epoch: a stream's first epoch with an empty disk cache "
            "(building the stream included), which fetches those shards and decodes every "
            "sample; the warm epoch: its second epoch, from the disk cache. A stream's first "
            "epoch has costs of its own wherever the data is (building the stream, opening the "
            "arrays, starting the producer): \"cold - local first\" is what fetching adds to "
            "the same first epoch read from local disk, and the last ratio compares that with "
            "the ceiling.",
            "",
            "Where the cold epoch's time goes (one more cold epoch, instrumented; \"busy\" is "
            "the wall time covered by at least one such interval, the producer running 2 "
            "batches at once):",
            "",
            "| server | cold epoch | stream built | then first batch | disk-cache GETs "
            "(objects, MiB) | other GETs | GET-busy | GETs in flight, max / mean | ensure busy | "
            "TensorStore reads busy | CPU, benchmark / server |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, r in per.items():
            pf = r["profile"]
            lines.append(
                f"| {names[name]} | {pf['epoch']:.2f} s | {pf['build']:.2f} s | "
                f"{pf['to_first_batch']:.2f} s | {pf['gets']} ({pf['unique_gets']}, "
                f"{pf['get_bytes'] / 2**20:.1f}) | {pf['other_gets']} | {pf['get_busy']:.2f} s | "
                f"{pf['get_max_in_flight']} / {pf['get_mean_in_flight']:.1f} | "
                f"{pf['ensure_busy']:.2f} s | {pf['read_busy']:.2f} s | "
                f"{pf['cpu']:.2f} s / {pf['server_cpu']:.2f} s |")
        lines += [
            "",
            "Stream built: `Query` + `stream()` (selection, sequence documents); then first "
            "batch: until the first batch arrives; disk-cache GETs: those `DiskCachedReader` "
            "makes, with the distinct objects among them and the bytes; other GETs: the "
            "store's own metadata reads; ensure: finding what a batch lacks, fetching and placing "
            "it; TensorStore reads: decoding from the local copies into the batch.",
        ]
        for name, r in per.items():
            rows = r["rows"]
            t_get, get_bytes, get_objects = r["get"]
            lines += [
                "",
                f"### {names[name]}",
                "",
                f"Plain sequential GET ceiling: **{get_bytes / t_get / 1e6:.0f} MB/s** of stored "
                f"bytes ({get_objects} shard objects, {get_bytes / 2**20:.1f} MiB, {t_get:.2f} s).",
                "",
                "| reader | epoch | samples/s | MB/s delivered | epoch s | CPU s, bench / server "
                "| requests | vs local |",
                "|---|---|---:|---:|---:|---:|---:|---:|",
            ]
            base = rows[("local disk", "next")]
            for (label, which), x in rows.items():
                sps = x["samples"] / x["seconds"]
                lines.append(f"| {label} | {which} | {sps:.1f} | "
                             f"{x['bytes'] / x['seconds'] / 1e6:.0f} | {x['seconds']:.2f} | "
                             f"{x['cpu']:.2f} / {x['server_cpu']:.2f} | {x['requests']:.0f} | "
                             f"{base['seconds'] / x['seconds']:.2f}x |")
            direct = rows[("S3, TensorStore s3 kvstore, no disk cache", "next")]
            zr = rows[("S3, zarr-python over obstore, no disk cache", "next")]
            lines += [
                "",
                f"Without the disk cache, steady state: TensorStore's s3 kvstore "
                f"{direct['samples'] / direct['seconds']:.1f} samples/s with "
                f"{direct['requests']:.0f} requests per epoch vs zarr-python over obstore "
                f"{zr['samples'] / zr['seconds']:.1f} samples/s with {zr['requests']:.0f}.",
            ]
        lines += [
            "",
            "\"first\" is a stream's first epoch, building the stream included (the selection "
            "and metadata reads a training run does once); \"next\" is its second epoch. "
            "\"vs local\" divides the local second epoch's time (measured in the same block) "
            "by the row's.",
            "",
            "## (2) Generation with 2 local worker processes",
            "",
            f"Plan: 2 domains x {gen_seq} sequences x {gen_steps} steps at 256x256 (levels "
            "256/128/64), `generate(..., workers=2)`, start-up included.",
            "",
            "| into | maps | seconds | maps/s | requests per sequence |",
            "|---|---:|---:|---:|---:|",
        ]
        for label, g in gen.items():
            reqs = f"{g['requests_per_seq']:.0f}" if label == "S3" else "-"
            lines.append(f"| {label} | {g['maps']} | {g['seconds']:.1f} | "
                         f"{g['maps'] / g['seconds']:.1f} | {reqs} |")
        lines += [
            "",
            "## (3) Requests (moto) for open + select 1 % + read 10 windows, by store size",
            "",
            "Tiny sequences (64x64, one level, 2 steps; 8 objects each) built inside the server "
            "from two templates written through the real write path (`tests/helpers/s3_tiny_stores.py`: "
            "every copy is a valid committed sequence; the catalog gets the records a sync would "
            "derive). 1 % of them belong to one generation run; the query selects that run, then "
            f"reads 10 windows. Plot: `{png.name}`.",
            "",
            "| sequences | objects | selected | requests, catalog | requests, store scan | "
            "catalog file | build s | server RSS |",
            "|---:|---:|---:|---|---|---:|---:|---:|",
        ]
        for n, r in scale.items():
            scan = ", ".join(f"{k} {v}" for k, v in sorted(r["scan"].items())) if r["scan"] \
                else "not run (two GETs per sequence)"
            lines.append(f"| {n:,} | {8 * n:,} | {r['selected']} | "
                         f"{', '.join(f'{k} {v}' for k, v in sorted(r['catalog'].items()))} | {scan} "
                         f"| {r['catalog_bytes'] / 2**20:.1f} MiB | {r['build']:.0f} | "
                         f"{r['server_rss'] / 2**30:.1f} GiB |")
        lines += [
            "",
            f"Catalog size per sequence at a realistic length: {cat_n:,} sequences of "
            f"{cat_steps} steps at 256x256 (3 levels, 9 arrays; the records of one real sequence "
            f"registered {cat_n:,} times into a fresh SQLite catalog): **{per_seq / 1024:.1f} KiB "
            f"per sequence** ({per_seq / cat_steps:.0f} B per step: the per-step statistics rows "
            "and their indexes dominate).",
            "",
        ]
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join(lines))
        print(f"wrote {out} and {png} ({t_total:.0f} s)")
        return 0
    finally:
        if sw is not None:
            sw.stop()
        srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
