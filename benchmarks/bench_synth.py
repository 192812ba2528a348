"""Throughput of sequence synthesis with pyramids and gradients, per default domain, on one core.

Run:  .venv/bin/python benchmarks/bench_synth.py [--reps 7] [--seqs 3]

For every default domain it times ``synth.synthesize(domain, seed)`` (10 steps at 256x256, the
preset's shape and length) followed by ``physics.derive_levels(seq)`` (energy pyramid 256/128/64
plus grad_x/grad_y at every level) -- exactly what the store writes per sequence. Each repetition
synthesises ``--seqs`` sequences with fresh seeds; the table reports the median over repetitions.
BLAS/OpenMP thread pools are forced to 1 and the process is pinned to one CPU, so the numbers are
per core. Results are printed as Markdown and written to benchmarks/results/synth.md.
"""

from __future__ import annotations

import os

# One core: must be set before numpy/scipy are imported.
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS",
               "VECLIB_MAXIMUM_THREADS")
for _v in THREAD_VARS:
    os.environ[_v] = "1"

import argparse
import statistics
import sys
import time
from pathlib import Path

import machine
from atlasstore.physics import fields as physics
from atlasstore.physics import synth

RESULTS = Path(__file__).resolve().parent / "results"


def pin_one_core() -> str:
    try:
        cpu = min(os.sched_getaffinity(0))
        os.sched_setaffinity(0, {cpu})
        return f"pinned to CPU {cpu}"
    except (AttributeError, OSError) as exc:  # not Linux
        return f"not pinned ({exc.__class__.__name__})"


def bench_domain(domain: str, reps: int, seqs: int) -> dict[str, float]:
    preset = synth.load_preset(domain)
    # warm-up (imports, FFT plans, caches), not timed
    physics.derive_levels(synth.synthesize(preset, 10**6)[0])
    wall, cpu, wall_synth, wall_levels = [], [], [], []
    for r in range(reps):
        t_synth = t_levels = c_total = 0.0
        for i in range(seqs):
            seed = r * 1000 + i
            c0 = time.process_time()
            t0 = time.perf_counter()
            seq, _meta = synth.synthesize(preset, seed)
            t1 = time.perf_counter()
            levels = physics.derive_levels(seq)
            t2 = time.perf_counter()
            c_total += time.process_time() - c0
            assert levels[64].energy.shape[0] == seq.shape[0]
            t_synth += t1 - t0
            t_levels += t2 - t1
        wall.append((t_synth + t_levels) / seqs)
        cpu.append(c_total / seqs)
        wall_synth.append(t_synth / seqs)
        wall_levels.append(t_levels / seqs)
    steps = preset.n_steps
    return {
        "maps_per_s": steps / statistics.median(wall),
        "maps_per_cpu_s": steps / statistics.median(cpu),
        "seq_ms": statistics.median(wall) * 1e3,
        "cpu_ms": statistics.median(cpu) * 1e3,
        "synth_ms": statistics.median(wall_synth) * 1e3,
        "levels_ms": statistics.median(wall_levels) * 1e3,
        "min_ms": min(wall) * 1e3,
        "max_ms": max(wall) * 1e3,
        "steps": steps,
        "shape": "x".join(map(str, preset.shape)),
        "pattern": preset.pattern,
    }


def main(argv: list[str] | None = None) -> int:
    started = machine.start()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=7, help="repetitions per domain (median reported)")
    ap.add_argument("--seqs", type=int, default=3, help="sequences per repetition")
    ap.add_argument("--out", type=Path, default=RESULTS / "synth.md")
    args = ap.parse_args(argv)

    pinned = pin_one_core()
    rows = {d: bench_domain(d, args.reps, args.seqs) for d in synth.DEFAULT_DOMAINS}

    lines = [
        "# Synthesis throughput (sequence + pyramids + gradients), one core",
        "",
        f"- command: `{' '.join(['.venv/bin/python', *sys.argv])}` (from the repository root)",
        *machine.describe(started, ("numpy", "scipy")),
        f"- this run: one process, {pinned}",
        f"- threads: {', '.join(f'{v}=1' for v in THREAD_VARS)} (set before importing numpy)",
        f"- work per sequence: `synth.synthesize(domain, seed)` (preset shape and n_steps) then "
        f"`physics.derive_levels(seq)` (levels 256/128/64, energy + grad_x + grad_y); "
        f"{args.reps} repetitions x {args.seqs} sequences (fresh seeds), median of the per-repetition "
        f"mean; 1 warm-up sequence per domain not timed",
        "",
        "| domain | pattern | shape x steps | maps/s (wall) | maps/s (CPU time) | ms per sequence (wall, "
        "median) | ms per sequence (CPU) | of which synthesis ms | of which pyramids+gradients ms "
        "| min-max wall ms per sequence |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for d, r in rows.items():
        lines.append(f"| {d} | {r['pattern']} | {r['shape']} x {r['steps']} | {r['maps_per_s']:.1f} | "
                     f"{r['maps_per_cpu_s']:.1f} | {r['seq_ms']:.1f} | {r['cpu_ms']:.1f} | "
                     f"{r['synth_ms']:.1f} | {r['levels_ms']:.1f} | "
                     f"{r['min_ms']:.1f}-{r['max_ms']:.1f} |")
    all_ms = statistics.median(r["seq_ms"] for r in rows.values())
    all_cpu = statistics.median(r["cpu_ms"] for r in rows.values())
    lines += ["", f"Median over domains: {all_ms:.1f} ms wall ({all_cpu:.1f} ms CPU) per 10-step 256x256 "
                  f"sequence with pyramids and gradients, i.e. {10 / all_ms * 1e3:.1f} maps/s per core by "
                  f"wall clock ({10 / all_cpu * 1e3:.1f} by CPU time). CPU time is the steadier figure "
                  f"when other processes share the machine (see load average).", ""]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
