"""Write-path kernels: what the store computes per map besides encoding, old way against new, in
one run (issue 19's profile-driven write path).

    .venv/bin/python benchmarks/bench_write_path.py            # -> results/write_path.md
    .venv/bin/python benchmarks/bench_write_path.py --quick --out /tmp/write_path.md

On a (64, 256, 256) float32 block of energy-like maps (the writer's sub-block), best of
``--repeats`` CPU times (``time.process_time``):

1. **Gradients**: ``np.gradient`` in float64 then rounded to float32 (before) against
   ``np.gradient`` in float32 (now), and whether the results are bit-identical.
2. **Statistics**: per-map ``mean``/``var``/``min``/``max``/entropy in float64 plus the array's
   ``mean``/``var``/``min``/``max`` of a float64 copy (before) against one fused
   :func:`~atlasstore.physics.moments.step_moments` pass plus entropy map by map (now).
3. **Checksum**: SHA-256 of the block's bytes, and BLAKE3 when the ``blake3`` package is
   installed (it is not a dependency: measured to decide whether to switch).
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(HERE)]

import machine
from atlasstore.physics import fields as physics
from atlasstore.physics.moments import step_moments


def best(fn: Callable[[], object], repeats: int) -> float:
    """Best CPU seconds of ``repeats`` calls."""
    out = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        out = min(out, time.process_time() - t0)
    return out


def old_stats(v: np.ndarray) -> None:
    for m in v:  # the step records, map by map, in float64
        physics.map_stats(m.astype(np.float64))
    a = v.astype(np.float64)  # the array's statistics
    a.mean(), a.var(), a.min(), a.max()


def new_stats(v: np.ndarray) -> None:
    sm = step_moments(v)
    physics.entropy(v)
    sm.variance, sm.total, sm.combined()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="a smaller block, fewer repeats")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", type=Path, default=HERE / "results" / "write_path.md")
    args = ap.parse_args()
    n = 8 if args.quick else 64
    repeats = 2 if args.quick else args.repeats
    v = np.random.default_rng(0).gamma(2.0, 1.0, (n, 256, 256)).astype(np.float32)
    mb = v.nbytes / 1e6
    run = machine.start()

    g64 = [np.asarray(g, np.float32) for g in np.gradient(v.astype(np.float64), axis=(-2, -1))]
    g32 = np.gradient(v, axis=(-2, -1))
    identical = all(np.array_equal(a, b) for a, b in zip(g64, g32, strict=True))
    rows = [
        ("gradients: float64, rounded to float32 (before)",
         best(lambda: [np.asarray(g, np.float32) for g in
                       np.gradient(v.astype(np.float64), axis=(-2, -1))], repeats)),
        ("gradients: float32 (now)", best(lambda: np.gradient(v, axis=(-2, -1)), repeats)),
        ("statistics: per-map float64 + array mean/var/min/max (before)",
         best(lambda: old_stats(v), repeats)),
        ("statistics: fused step_moments + entropy map by map (now)",
         best(lambda: new_stats(v), repeats)),
        ("checksum: SHA-256", best(lambda: hashlib.sha256(v.data).hexdigest(), repeats)),
    ]
    try:
        import blake3  # type: ignore[import-not-found]

        flat = v.view(np.uint8).reshape(-1)
        rows.append(("checksum: BLAKE3 (not used)",
                     best(lambda: blake3.blake3(flat).hexdigest(), repeats)))
    except ImportError:
        pass
    lines = ["# Write-path kernels: before and now", "",
             f"Command: `.venv/bin/python benchmarks/bench_write_path.py{' --quick' if args.quick else ''}`",
             "", *machine.describe(run, ("numpy",)), "",
             f"A ({n}, 256, 256) float32 block ({mb:.1f} MB), best of {repeats} CPU times.", "",
             "| kernel | CPU ms | ms per map | MB/s |", "|---|---:|---:|---:|"]
    for name, s in rows:
        lines.append(f"| {name} | {s * 1e3:.1f} | {s * 1e3 / n:.2f} | {mb / s:.0f} |")
    lines += ["", f"float32 gradients bit-identical to the float64 ones rounded: {identical}."]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
