"""How well the physical invariants hold in practice, measured over many random cases.

Run:  .venv/bin/python benchmarks/invariants_report.py [--cases 1000] [--sequences 50] [--workers N]

Part 1, conservation: for every transformation, ``--cases`` random cases (shape drawn uniformly
among the nine valid shapes unless the row says otherwise, pattern drawn among the four synthetic
patterns, random seed, random parameters), float32 maps as the store holds them. Reported: the MAX
relative energy error |sum E_after - sum E_before| / sum E_before (exact sums via math.fsum), for
energy_scaling(s) the max of |(sum E_after / sum E_before) / s - 1|, plus the median and how many
cases broke the design limit (5 %) or produced negative / non-finite values. A second small table
runs rotation on maps whose energy sits in one pixel, the case where rotation is known to fail.

Part 2, entropy: per default domain, ``--sequences`` sequences (seeds 0..N-1) of ``--steps`` steps
at the preset's shape; the fraction of step transitions whose entropy did not decrease, and, by
replaying each step's recorded perturbations, the fraction of thermal_blur applications that
decreased entropy (strictly, in float64 arithmetic on the stored float32 maps).

Nothing here is tuned: each case's parameters come from a generator seeded by (row, case index),
so the report is reproducible and independent of the number of workers.
Output: Markdown, printed and written to benchmarks/results/invariants.md.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_v] = "1"

import argparse
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

import machine
from atlasstore.physics import fields as physics
from atlasstore.physics import synth

RESULTS = Path(__file__).resolve().parent / "results"
VALID_SHAPES = [(s, s) for s in (64, 128, 256)] + [(s * 3 // 2, s) for s in (64, 128, 256)] + \
               [(s, s * 3 // 2) for s in (64, 128, 256)]
PATTERNS = list(synth.PATTERNS)

# row id -> (label, parameter description)
ROWS = {
    "rotation": ("rotation", "angle ~ U(-180, 180) deg, all 9 shapes"),
    "gaussian_noise": ("gaussian_noise", "sigma ~ U(0, 0.5], all 9 shapes"),
    "thermal_blur": ("thermal_blur", "sigma ~ U(0, 6], all 9 shapes"),
    "translation": ("translation", "shift_x, shift_y ~ U{-n, n} px, all 9 shapes"),
    "energy_scaling": ("energy_scaling", "s ~ 10^U(-2, 2), all 9 shapes"),
    "pyr_256_128": ("pyramid 256 -> 128", "256x256"),
    "pyr_256_64": ("pyramid 256 -> 64", "256x256"),
    "pyr_23_128": ("pyramid 2:3 -> 128", "256x384 -> 128x192 or 384x256 -> 192x128"),
    "pyr_23_64": ("pyramid 2:3 -> 64", "256x384 -> 64x96 or 384x256 -> 96x64"),
    "pyr_128_64": ("pyramid 128 -> 64", "128x128, 128x192, 192x128"),
}


def _fsum(a: np.ndarray) -> float:
    return math.fsum(np.asarray(a, dtype=np.float64).ravel())


def run_case(row: str, i: int, row_index: int) -> dict:
    rng = np.random.default_rng([row_index, i])
    if row.startswith("pyr_"):
        pool = {"pyr_256_128": [(256, 256)], "pyr_256_64": [(256, 256)],
                "pyr_23_128": [(256, 384), (384, 256)], "pyr_23_64": [(256, 384), (384, 256)],
                "pyr_128_64": [(128, 128), (128, 192), (192, 128)]}[row]
    else:
        pool = VALID_SHAPES
    shape = pool[int(rng.integers(len(pool)))]
    pattern = PATTERNS[int(rng.integers(len(PATTERNS)))]
    e = synth.make_pattern(pattern, shape, int(rng.integers(2**63 - 1)))
    factor = 1.0
    dh = None
    if row == "rotation":
        out = synth.apply_rotation(e, float(rng.uniform(-180, 180)))
    elif row == "gaussian_noise":
        out = synth.apply_gaussian_noise(e, 0.5 * (1.0 - rng.random()), int(rng.integers(2**63 - 1)))
    elif row == "thermal_blur":
        out = synth.apply_thermal_blur(e, 6.0 * (1.0 - rng.random()))
        dh = float(physics.entropy(out)) - float(physics.entropy(e))
    elif row == "translation":
        ny, nx = shape
        out = synth.apply_translation(e, int(rng.integers(-nx, nx + 1)), int(rng.integers(-ny, ny + 1)))
    elif row == "energy_scaling":
        factor = float(10.0 ** rng.uniform(-2, 2))
        out = synth.apply_energy_scaling(e, factor)
    else:
        level = 128 if row in ("pyr_256_128", "pyr_23_128") else 64
        out = physics.downsample(e, level)
    before, after = _fsum(e), _fsum(out)
    if row == "energy_scaling":
        err = abs((after / before) / factor - 1.0)
    else:
        err = abs(after - before) / before
    bad = bool(not np.isfinite(out).all() or (out < 0).any())
    exact = bool(np.sum(out, dtype=np.float64) == np.sum(e, dtype=np.float64))
    return {"err": err, "bad": bad, "dh": dh, "exact": exact}


def run_row(args: tuple[str, int, int]) -> tuple[str, list[dict], float]:
    row, row_index, n = args
    t0 = time.perf_counter()
    res = [run_case(row, i, row_index) for i in range(n)]
    return row, res, time.perf_counter() - t0


def run_hot_pixel(n: int) -> dict:
    """Rotation of maps whose energy is one pixel (uniformly placed): the adversarial case."""
    errs, zero = [], 0
    for i in range(n):
        rng = np.random.default_rng([99, i])
        shape = VALID_SHAPES[int(rng.integers(len(VALID_SHAPES)))]
        e = np.zeros(shape, np.float32)
        e[int(rng.integers(shape[0])), int(rng.integers(shape[1]))] = 1.0
        out = synth.apply_rotation(e, float(rng.uniform(-180, 180)))
        errs.append(abs(_fsum(out) - 1.0))
        zero += int(out.sum() == 0)
    errs_a = np.array(errs)
    return {"n": n, "max": float(errs_a.max()), "median": float(np.median(errs_a)),
            "over": int((errs_a >= physics.CONSERVATION_TOLERANCE).sum()), "zero": zero}


def run_domain(args: tuple[str, int, int]) -> dict:
    domain, n_seq, n_steps = args
    t0 = time.perf_counter()
    preset = synth.load_preset(domain)
    transitions = nondecreasing = 0
    per_op: dict[str, list] = {}  # kind -> [applications, decreases, min dH]
    step_min_dh = math.inf
    for seed in range(n_seq):
        seq, meta = synth.synthesize(preset, seed, n_steps=n_steps)
        for t in range(1, n_steps):
            transitions += 1
            dh = meta[t]["entropy_change"]
            step_min_dh = min(step_min_dh, dh)
            nondecreasing += int(dh >= 0)
            cur = seq[t - 1]
            for op in meta[t]["perturbations"]:
                nxt = synth.apply_perturbation(cur, op)
                d = float(physics.entropy(nxt)) - float(physics.entropy(cur))
                acc = per_op.setdefault(op["kind"], [0, 0, math.inf])
                acc[0] += 1
                acc[1] += int(d < 0)
                acc[2] = min(acc[2], d)
                cur = nxt
            assert np.array_equal(cur, seq[t]), "replay of recorded perturbations differs"
    return {"domain": domain, "perturbations": ", ".join(preset.perturbations.to_dict()),
            "shape": "x".join(map(str, preset.shape)), "transitions": transitions,
            "nondecreasing": nondecreasing, "step_min_dh": step_min_dh,
            "blur_n": per_op.get("thermal_blur", [0])[0], "blur_dec": per_op.get("thermal_blur", [0, 0])[1],
            "blur_min_dh": per_op.get("thermal_blur", [0, 0, math.nan])[2],
            "other_ops": {k: v for k, v in per_op.items() if k != "thermal_blur"},
            "seconds": time.perf_counter() - t0}


def _fmt(x: float) -> str:
    return "0" if x == 0 else f"{x:.2e}"


def main(argv: list[str] | None = None) -> int:
    started = machine.start()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=1000, help="random cases per transformation")
    ap.add_argument("--sequences", type=int, default=50, help="sequences per default domain")
    ap.add_argument("--steps", type=int, default=10, help="steps per sequence")
    ap.add_argument("--hot", type=int, default=1000, help="hot-pixel rotation cases")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", type=Path, default=RESULTS / "invariants.md")
    args = ap.parse_args(argv)

    t0 = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers) as pool:
        fut_rows = [pool.submit(run_row, (row, k, args.cases)) for k, row in enumerate(ROWS)]
        fut_dom = [pool.submit(run_domain, (d, args.sequences, args.steps)) for d in synth.DEFAULT_DOMAINS]
        fut_hot = pool.submit(run_hot_pixel, args.hot)
        rows = {f.result()[0]: f.result()[1] for f in fut_rows}
        domains = [f.result() for f in fut_dom]
        hot = fut_hot.result()
    elapsed = time.perf_counter() - t0

    L = [
        "# Physical invariants in practice",
        "",
        f"- command: `{' '.join(['.venv/bin/python', *sys.argv])}` (from the repository root)",
        *machine.describe(started, ("numpy", "scipy")),
        f"- this run: {args.workers} worker processes, 1 thread each; wall time {elapsed:.0f} s",
        "- maps: float32 synthetic patterns (turbulent/laminar/vortex/random, drawn uniformly), mean "
        "energy 1; sums taken exactly (math.fsum of the float32 values)",
        "",
        "## Energy conservation (design limit: relative error < 5 %)",
        "",
        "| transformation | cases | parameters | max rel. error | median rel. error "
        "| cases >= 5 % | cases > 1e-5 | negative / non-finite outputs |",
        "|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    for row, (label, params) in ROWS.items():
        res = rows[row]
        errs = np.array([r["err"] for r in res])
        name = label + (" (error of sum ratio vs s)" if row == "energy_scaling" else "")
        L.append(f"| {name} | {len(res)} | {params} | {_fmt(errs.max())} | {_fmt(float(np.median(errs)))} | "
                 f"{int((errs >= physics.CONSERVATION_TOLERANCE).sum())} | {int((errs > 1e-5).sum())} | "
                 f"{sum(r['bad'] for r in res)} |")
    tr = rows["translation"]
    blur = [r["dh"] for r in rows["thermal_blur"]]
    L += [
        "",
        f"Translation: the values are a permutation and the exact (fsum) error is 0 in every case; "
        f"{sum(r['exact'] for r in tr)} of {len(tr)} cases also have a bit-identical float64 numpy sum "
        f"(the rest differ by float64 summation order only).",
        f"Thermal blur, random cases: {sum(d < 0 for d in blur)} of {len(blur)} decreased entropy "
        f"(min change {min(blur):+.3e} nats).",
        "",
        "### Rotation of single-hot-pixel maps (adversarial; not what the presets generate)",
        "",
        "| cases | max abs. error (sum E = 1) | median | cases >= 5 % | outputs that are all zero |",
        "|---:|---:|---:|---:|---:|",
        f"| {hot['n']} | {_fmt(hot['max'])} | {_fmt(hot['median'])} | {hot['over']} | {hot['zero']} |",
        "",
        "`apply_rotation` (scipy.ndimage.rotate, reshape=False) never samples the input's corners; the "
        "energy there is dropped and the renormalisation spreads the remaining total, which hides the "
        "loss for dense maps but not when the energy sits in a corner.",
        "",
        f"## Entropy per default domain ({args.sequences} sequences x {args.steps} steps, seeds "
        f"0..{args.sequences - 1}, preset shape)",
        "",
        "| domain | perturbations | shape | step transitions | entropy did not decrease | min step dH (nats) "
        "| thermal_blur applications | blur decreased entropy | min blur dH (nats) "
        "| other perturbations that decreased entropy |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    for d in domains:
        frac = d["nondecreasing"] / d["transitions"]
        bfrac = d["blur_dec"] / d["blur_n"] if d["blur_n"] else float("nan")
        L.append(f"| {d['domain']} | {d['perturbations']} | {d['shape']} | {d['transitions']} | "
                 f"{d['nondecreasing']} ({frac:.1%}) | {d['step_min_dh']:+.3e} | {d['blur_n']} | "
                 f"{d['blur_dec']} ({bfrac:.1%}) | {d['blur_min_dh']:+.3e} | "
                 + "; ".join(f"{k}: {v[1]}/{v[0]} (min dH {v[2]:+.2e})" for k, v in d["other_ops"].items())
                 + " |")
    L += ["", "A step applies every configured perturbation in order (rotation, noise, blur); only thermal "
              "blur is required not to decrease entropy. Entropy changes per perturbation come from "
              "replaying each step's recorded perturbations one at a time (the replay reproduces every "
              "stored step bit for bit).", ""]
    text = "\n".join(L)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
