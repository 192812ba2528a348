"""Serial vs the default process cluster, for generate and import, by plan size: where the
engine's default choice (``atlasstore.runs.scheduling.SERIAL_MAX_TASKS``) comes from.

    .venv/bin/python benchmarks/bench_scheduler.py                  # -> results/scheduler.md
    .venv/bin/python benchmarks/bench_scheduler.py --sizes 1,4 --reps 1 --out /tmp/s.md   # smoke

Each row is one whole call (``generate`` / ``import_npy``; the cluster's start-up and shutdown
included) into a fresh store; the engines alternate, so a change of load hits both. Sequences
are default-sized: 256x256, 10 steps, with pyramids and gradients; the import reads ``.npy``
folders of the same size (no sidecars). ``--workers`` default: one per core, as the engine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import machine

HERE = Path(__file__).resolve().parent


def npy_folder(root: Path, n: int, steps: int) -> Path:
    src = root / f"npy-{n}"
    if not src.exists():
        rng = np.random.default_rng(n)
        (src / "dom").mkdir(parents=True)
        for s in range(n):
            for t in range(steps):
                np.save(src / "dom" / f"s{s:03d}_t{t}.npy",
                        rng.random((256, 256), dtype=np.float32) + 0.5)
    return src


def one(kind: str, n: int, steps: int, sched: str, workers: int | None, tmp: Path) -> float:
    from atlasstore.runs.generate import Plan, generate
    from atlasstore.runs.ingest import import_npy

    store = tmp / f"store-{kind}-{n}-{sched}"
    shutil.rmtree(store, ignore_errors=True)
    t0 = time.perf_counter()
    if kind == "generate":
        r = generate(store, Plan(domains=("fluid_dynamics",), sequences=n, steps=steps),
                     scheduler=sched, workers=workers)
    else:
        r = import_npy(store, npy_folder(tmp, n, steps), sidecars=False, scheduler=sched,
                       workers=workers)
    wall = time.perf_counter() - t0
    assert r.ok and r.written == n, r
    shutil.rmtree(store, ignore_errors=True)
    return wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1,4,8,16,24,32,64", help="sequences per plan")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--workers", type=int, default=None)
    ap.add_argument("--out", default=str(HERE / "results" / "scheduler.md"))
    args = ap.parse_args()
    started = machine.start()
    sizes = [int(s) for s in args.sizes.split(",")]
    walls: dict[tuple[str, int, str], list[float]] = {}
    loads: list[float] = []
    with tempfile.TemporaryDirectory(prefix="bench-sched-") as t:
        tmp = Path(t)
        for n in sizes:
            for _ in range(args.reps):
                for kind in ("generate", "import"):
                    for sched in ("serial", "processes"):
                        loads.append(os.getloadavg()[0])
                        w = one(kind, n, args.steps, sched, args.workers, tmp)
                        walls.setdefault((kind, n, sched), []).append(w)
                        print(kind, n, sched, f"{w:.2f} s", flush=True)
    lines = ["# Engine choice: serial vs the process cluster by plan size", "",
             f"Command: `.venv/bin/python benchmarks/bench_scheduler.py --sizes {args.sizes} "
             f"--reps {args.reps}`", "", *machine.describe(started, ("numpy", "zarr", "dask")),
             f"- 1-minute load average during the runs: {min(loads):.1f}-{max(loads):.1f}", "",
             f"Wall seconds of the whole call (median of {args.reps}; each run in brackets), "
             f"{args.steps}-step 256x256 sequences, workers: {args.workers or 'one per core'}.",
             "", "| sequences | generate serial | generate processes | import serial | "
             "import processes |", "|---:|---:|---:|---:|---:|"]
    for n in sizes:
        cells = []
        for kind in ("generate", "import"):
            for sched in ("serial", "processes"):
                ws = walls[(kind, n, sched)]
                cells.append(f"{statistics.median(ws):.2f} ({', '.join(f'{w:.1f}' for w in ws)})")
        lines.append(f"| {n} | " + " | ".join(cells) + " |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
