"""Open times of a store of many tiny sequences under three metadata layouts.

Why: a plain ``xarray.open_zarr(store, group=...)`` first tries Zarr's consolidated metadata at
the *root* of the path it is given and warns when there is none. This measures what each way of
answering that costs, on one store of ``--sequences`` (1,000) sequences of 2 steps at 64x64 (the
smallest valid maps; 5 domains), built with the Python API, in three copies:

* ``plain``: no consolidated metadata anywhere (the layout before per-sequence consolidation);
* ``per-sequence``: each sequence's ``zarr.json`` holds the consolidated metadata of its own
  levels and arrays, written in the same atomic write as its commit (what ``AtlasStore`` writes;
  built from the plain copy with ``zarr.consolidate_metadata(path=<sequence>)`` when the code
  under test does not write it itself);
* ``root``: ``zarr.consolidate_metadata`` of the whole store into the root ``zarr.json`` (the
  rejected alternative: a shared document that every commit would have to rewrite).

Per layout: ``xarray.open_zarr`` of one level through the store root (``group=d/s/64``) and
through the sequence path (``<store>/d/s``, ``group="64"``), ``xarray.open_datatree`` of the
whole store and of one sequence, ``zarr.open_group`` of the root, ``AtlasStore.open``, a full
store scan (``Query(store, scale=64).count()``: every sequence's committed record), and whether
each xarray call warned about consolidated metadata. CPU seconds (``time.process_time``) and
wall seconds, median of ``--repeats`` after one untimed call; the whole-store datatree once
per layout (it is slow).

    .venv/bin/python benchmarks/bench_consolidated.py [--sequences 1000] [--repeats 5]

Writes ``benchmarks/results/consolidated.md`` (``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr
import zarr

from atlasstore.io.provenance import code_version
from atlasstore.query import Query
from atlasstore.store import AtlasStore

DOMAINS = ("plasma_physics", "fluid_dynamics", "astrophysics", "turbulent_radiative_layer",
           "active_matter")
WARNING = "consolidated metadata"


def build(path: Path, n: int) -> list[tuple[str, str]]:
    store = AtlasStore.create(path)
    rng = np.random.default_rng(0)
    seqs = []
    for d in DOMAINS:
        store.create_domain(d)
    for i in range(n):
        d, s = DOMAINS[i % len(DOMAINS)], f"seq-{i // len(DOMAINS):05d}"
        store.write_sequence(d, s, (rng.gamma(2.0, 1.0, (2, 64, 64)) + 1e-3).astype(np.float32))
        seqs.append((d, s))
    return seqs


def _doc(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def strip_consolidation(root: Path) -> None:
    for p in root.rglob("zarr.json"):
        doc = _doc(p)
        if doc.pop("consolidated_metadata", None) is not None:
            p.write_text(json.dumps(doc))


def consolidate(store: str, path: str | None = None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "not part of the Zarr format 3 specification"
        zarr.consolidate_metadata(store, path=path)


def timed(fn: Callable[[], Any], repeats: int) -> tuple[float, float, bool]:
    """(median CPU s, median wall s, whether any call warned about consolidated metadata)."""
    cpu, wall, warned = [], [], False
    if repeats > 1:  # one untimed call first: imports, caches, page cache
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = fn()
        getattr(out, "close", lambda: None)()
    for _ in range(repeats):
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            c0, w0 = time.process_time(), time.perf_counter()
            out = fn()
            cpu.append(time.process_time() - c0)
            wall.append(time.perf_counter() - w0)
        warned |= any(WARNING in str(w.message) for w in got)
        getattr(out, "close", lambda: None)()
    return statistics.median(cpu), statistics.median(wall), warned


def measure(root: Path, seq: tuple[str, str], repeats: int) -> dict[str, tuple[float, float, bool]]:
    d, s = seq
    loc = str(root)
    return {
        "xarray.open_zarr(store, group=d/s/64)": timed(
            lambda: xr.open_zarr(loc, group=f"{d}/{s}/64"), repeats),
        "xarray.open_zarr(store/d/s, group=64)": timed(
            lambda: xr.open_zarr(f"{loc}/{d}/{s}", group="64"), repeats),
        "xarray.open_datatree(store/d/s)": timed(
            lambda: xr.open_datatree(f"{loc}/{d}/{s}", engine="zarr"), repeats),
        "xarray.open_datatree(store)": timed(lambda: xr.open_datatree(loc, engine="zarr"), 1),
        "zarr.open_group(store)": timed(lambda: zarr.open_group(loc, mode="r"), repeats),
        "AtlasStore.open(store)": timed(lambda: AtlasStore.open(loc), repeats),
        "scan: Query(store, scale=64).count()": timed(
            lambda: Query(AtlasStore.open(loc), scale=64).count(), repeats),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sequences", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "consolidated.md"))
    ap.add_argument("--label", default="", help="what the code under test is (for the report)")
    args = ap.parse_args(argv)
    load0 = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="atlas-consolidated-") as tmp:
        t0 = time.perf_counter()
        plain = Path(tmp) / "plain.zarr"
        seqs = build(plain, args.sequences)
        t_build = time.perf_counter() - t0
        seq = seqs[len(seqs) // 2]
        writes_own = "consolidated_metadata" in _doc(plain / seq[0] / seq[1] / "zarr.json")
        per_seq = Path(tmp) / "per-sequence.zarr"
        shutil.copytree(plain, per_seq)
        strip_consolidation(plain)
        if not writes_own:
            for d, s in seqs:
                consolidate(str(per_seq), f"{d}/{s}")
        root = Path(tmp) / "root.zarr"
        shutil.copytree(plain, root)
        c0, w0 = time.process_time(), time.perf_counter()
        consolidate(str(root))
        t_cons = (time.process_time() - c0, time.perf_counter() - w0)
        sizes = {name: (p / "zarr.json").stat().st_size for name, p in
                 (("plain", plain), ("per-sequence", per_seq), ("root", root))}
        seq_sizes = {name: (p / seq[0] / seq[1] / "zarr.json").stat().st_size for name, p in
                     (("plain", plain), ("per-sequence", per_seq), ("root", root))}
        results = {name: measure(p, seq, args.repeats) for name, p in
                   (("plain", plain), ("per-sequence", per_seq), ("root", root))}
    layouts = list(results)
    cmd = shlex.join([sys.executable.split("/")[-1], *sys.argv])
    lines = [
        "# Consolidated metadata: open times of a store of many tiny sequences",
        "",
        f"Command: `{cmd}`" + (f" ({args.label})" if args.label else ""),
        "",
        (f"- {time.strftime('%Y-%m-%d %H:%M')}; atlasstore {code_version()}; python "
         f"{platform.python_version()}, zarr {zarr.__version__}, xarray {xr.__version__}"),
        (f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; load "
         f"average at start {'/'.join(f'{x:.1f}' for x in load0)}, at end "
         f"{'/'.join(f'{x:.1f}' for x in os.getloadavg())}"),
        (f"- store: {args.sequences} sequences x 2 steps at 64x64 in {len(DOMAINS)} domains "
         f"(built in {t_build:.1f} s; the code under test "
         f"{'writes' if writes_own else 'does not write'} per-sequence consolidated metadata); "
         f"page cache warm; median of {args.repeats} (whole-store datatree: 1 run)"),
        (f"- root zarr.json: plain {sizes['plain']:,} B, per-sequence {sizes['per-sequence']:,} B, "
         f"root-consolidated {sizes['root']:,} B; one sequence's zarr.json: plain "
         f"{seq_sizes['plain']:,} B, per-sequence {seq_sizes['per-sequence']:,} B"),
        (f"- rewriting the root consolidation once (what every commit would cost to keep it "
         f"current): {t_cons[0]:.2f} s CPU, {t_cons[1]:.2f} s wall"),
        "",
        ("CPU s / wall s per call; **W** = the call warned \"Failed to open Zarr store with "
         "consolidated metadata\"."),
        "",
        "| call | " + " | ".join(layouts) + " |",
        "|---|" + "---:|" * len(layouts),
    ]
    for call in results[layouts[0]]:
        cells = []
        for name in layouts:
            cpu, wall, warned = results[name][call]
            cells.append(f"{cpu:.4f} / {wall:.4f}{' **W**' if warned else ''}")
        lines.append(f"| `{call}` | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
