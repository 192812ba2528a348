"""NVP benchmark: train on generated data, evaluate on a held-out store, check the goals.

One command::

    .venv/bin/python benchmarks/bench_nvp.py            # the measurement (~15-25 min on 2 cores)
    .venv/bin/python benchmarks/bench_nvp.py --quick    # smoke run (a few minutes)

What it does
------------
1. Generates the five default domains (256x256 maps, 10 steps) into ``<workdir>/train.zarr``
   (16 sequences per domain, run seed 0) and a **held-out store** ``<workdir>/test.zarr``
   (4 sequences per domain, run seed 1: none of its sequences is in training or validation).
2. Trains the config (``configs/nvp-cpu-small.json`` by default: a fixed number of steps, so
   the result does not depend on the machine's load) on the training store; its validation
   split (one sequence in ten per domain) picks the best checkpoint and calibrates the variance.
3. Evaluates the best checkpoint on the held-out store: per domain and overall, one-step and
   rollout VRMSE, coverage, NLL, CRPS, conservation and entropy, against persistence, diffusion
   and a linear autoregressive stencil, each fitted per domain on the training split; every goal
   met or missed by how much (:mod:`atlasstore.nvp.goals`).
4. Measures compute-only training-step throughput at the given resolutions.
5. Writes ``benchmarks/results/nvp.md`` (``--out``): the tables, machine, date, load, command,
   the training time (wall and CPU), steps/s and input wait; and the figures beside it
   (``<out stem>_domains.png``, ``_rollout.png``, ``_training_curves.png``, ``_sample.png``).

``benchmarks/bench_nvp_gpu.sh`` runs the same with ``configs/nvp-gpu.json`` on a GPU.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import machine


def _generate(path: Path, domains: tuple[str, ...], sequences: int, steps: int | None,
              shape: tuple[int, int] | None, seed: int) -> dict[str, Any]:
    from atlasstore.catalog import SQLiteCatalog
    from atlasstore.runs.generate import Plan, generate

    plan = Plan(domains=domains, sequences=sequences, steps=steps, shape=shape, seed=seed)
    cat = SQLiteCatalog(str(path.with_suffix("")) + ".catalog.sqlite")
    try:
        t0 = time.perf_counter()
        rep = generate(path, plan, scheduler="serial", catalog=cat)
    finally:
        cat.close()
    if not rep.ok:
        raise SystemExit(f"generation into {path} failed: {rep.failures}")
    return {"path": str(path), "run_id": rep.run_id, "written": rep.written,
            "skipped": rep.skipped, "seconds": time.perf_counter() - t0,
            "plan": {"domains": list(domains), "sequences": sequences, "steps": steps,
                     "shape": list(shape) if shape else None, "seed": seed}}


def _throughput(cfg: Any, resolution: int, steps: int) -> dict[str, Any]:
    """Steps/s of the training step on random positive inputs at ``resolution`` (after
    compilation), with the config's model, batch and every level up to ``resolution``."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from atlasstore.nvp.model import NVP, pyramid_inputs
    from atlasstore.nvp.prior import DomainPrior
    from atlasstore.nvp.train import make_optimizer
    from atlasstore.nvp.train_steps import train_step

    levels = [lv for lv in (256, 128, 64) if lv <= resolution]
    stats = {lv: (float((resolution // lv) ** 2), float((resolution // lv) ** 2)) for lv in levels}
    j = len(cfg.model.prior_angles)
    w = tuple(1.0 / j for _ in range(j))
    priors = {f"d{i}": DomainPrior(1.0 + i, 0.1, w, 1.0, 2.0, 1.5, 1) for i in range(5)}
    model = NVP(cfg.model, levels, cfg.data.n_in, stats, priors, shape=(resolution, resolution),
                seed=cfg.seed)
    opt = nnx.Optimizer(model, make_optimizer(cfg.optim, 1000), wrt=nnx.Param)
    rng = np.random.default_rng(0)
    b = cfg.data.batch_size
    base = rng.gamma(2.0, 0.5, size=(b, cfg.data.n_in + 1, resolution, resolution)).astype("f4")
    pyr = pyramid_inputs(jnp.asarray(base[:, :cfg.data.n_in]), levels)
    inputs = {lv: pyr[lv] for lv in levels}
    target = jnp.asarray(base[:, cfg.data.n_in:])
    dom = jnp.asarray(np.arange(b) % 5, jnp.int32)
    t0 = time.perf_counter()
    out = train_step(model, opt, inputs, target, dom, jax.random.key(0), cfg.loss, 1)
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(steps):
        out = train_step(model, opt, inputs, target, dom, jax.random.key(i + 1), cfg.loss, 1)
    jax.block_until_ready(out)
    dt = time.perf_counter() - t0
    n_params = int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
    return {"resolution": resolution, "levels": levels, "batch_size": b, "steps": steps,
            "steps_per_s": steps / dt, "samples_per_s": steps * b / dt, "compile_s": compile_s,
            "params": n_params}


def _shape_check(cfg: Any) -> dict[str, Any]:
    """The config's model at its own resolution with every level below it, traced abstractly
    (``jax.eval_shape``: nothing runs or compiles), so a dry run on a CPU checks a GPU config."""
    import jax
    import jax.numpy as jnp

    from atlasstore.nvp.model import NVP
    from atlasstore.nvp.prior import DomainPrior

    res = cfg.data.resolution or 256
    levels = [lv for lv in (256, 128, 64) if lv <= res]
    j = len(cfg.model.prior_angles)
    priors = {"d": DomainPrior(1.0, 0.1, tuple(1.0 / j for _ in range(j)), 1.0, 2.0, 1.5, 1)}
    model = NVP(cfg.model, levels, cfg.data.n_in, {lv: (1.0, 1.0) for lv in levels}, priors,
                shape=(res, res))
    b = cfg.data.batch_size
    x = {lv: jax.ShapeDtypeStruct((b, cfg.data.n_in, lv, lv), jnp.float32) for lv in levels}
    out = jax.eval_shape(lambda x: model(x, jnp.zeros(b, jnp.int32)), x)
    return {"resolution": res, "levels": levels, "batch": b, "mean": list(out.mean.shape)}


def _markdown(ctx: dict[str, Any]) -> str:
    from atlasstore.nvp.goals import markdown_tables

    rep, tr = ctx["report"], ctx["train"]
    out = ["# NVP benchmark" + (" — QUICK SMOKE RUN (not the measurement)" if ctx["quick"]
                                else ""), ""]
    if ctx["quick"]:
        out += [("> `--quick`: tiny data and a few training steps on a small model. It checks that "
                "the pipeline runs end to end; its numbers say nothing about what the model "
                "reaches."), ""]
    out += [*ctx["machine"], "", "## Reproduce", "", "```", ctx["command"], "```", ""]
    out.append("Data: " + "; ".join(
        f"`{Path(g['path']).name}` = {len(g['plan']['domains'])} domains x "
        f"{g['plan']['sequences']} sequences x {g['plan']['steps'] or 'preset (10)'} steps, shape "
        f"{g['plan']['shape'] or 'preset (256x256)'}, run seed {g['plan']['seed']}"
        for g in ctx["data"]) + ". The test store comes from another run seed: none of its "
        "sequences was trained or validated on (the evaluation checks the generation seeds).")
    out += ["", "## Result on the held-out store", "",
            (f"{rep['data']['windows']} windows of {len(rep['data']['sequences'])} sequences at "
            f"resolution {rep['data']['resolution']} (input levels {rep['data']['levels']}). "
            "Baselines fitted per domain on the training split "
            f"({sum(rep['baselines']['fit_on']['windows'].values())} windows); their predictive "
            "std is their RMS error there."), "", markdown_tables(rep)]
    prior = rep["model"]["prior"]
    out += [("Fitted physics prior per domain (sigma px at the predicted level, noise floor tau, "
            "the largest rotation weight) and the variance calibration factor:"), ""]
    out += [("| domain | sigma | tau | max rotation weight (angle) | prior RMSE / diffusion RMSE "
            "(train) | calibration c |"), "|---|---|---|---|---|---|"]
    angles = ctx["config"]["model"]["prior_angles"]
    for d, p in prior.items():
        w = p["weights"]
        top = (f"{max(w):.3f} ({angles[w.index(max(w))]:g} deg)" if w else "-")
        out.append(f"| {d} | {p['sigma']:.3f} | {p['tau']:.3f} | {top} | "
                   f"{p['rmse'] / p['diffusion_rmse']:.4f} | "
                   f"{rep['model']['calibration'][d]:.3f} |")
    out += ["", "## Training", "",
            (f"{tr['step']} steps ({tr['stopped']}) in {tr['seconds']:.0f} s wall, "
            f"{tr['cpu_seconds']:.0f} s CPU (all threads of this process, including the prior's "
            f"least-squares fit and the validations); {tr['steps_per_second']:.2f} steps/s over "
            f"the loop; input pipeline wait {100 * tr['wait'].get('fraction', 0):.1f} % of the "
            f"loop's wall time (the device idle share; mean "
            f"{1000 * tr['wait'].get('mean', 0):.1f} ms, p95 "
            f"{1000 * tr['wait'].get('p95', 0):.1f} ms per batch); {tr['train_sequences']} "
            f"train / {tr['val_sequences']} validation sequences; best checkpoint at step "
            f"{tr['best_step']} (validation MSE in units of the prior's error, "
            f"{tr['best_metric']}); evaluation {rep['seconds']:.0f} s."), ""]
    if tr["best_step"] == 0:
        out += [("**The best checkpoint is step 0: the fitted physics prior alone** (the network's "
                 "heads start at zero, so its correction is nil and its variance is the prior's "
                 "training error, calibrated per domain). Training did not lower the validation "
                 "MSE below it, so every NVP figure above is the prior's, not a learned "
                 "correction's."), ""]
    out += [f"![per-domain VRMSE]({ctx['figs']['domains']})",
            f"![rollout]({ctx['figs']['rollout']})",
            f"![training curves]({ctx['figs']['training_curves']})",
            f"![sample]({ctx['figs']['sample']})", ""]
    if ctx["throughput"]:
        out += ["## Training-step throughput (compute only)", "",
                ("Random positive inputs, no input pipeline, after compilation; the config's "
                "model and batch size."), "",
                "| input | levels | params | batch | steps/s | samples/s | compile (s) |",
                "|---|---|---|---|---|---|---|"]
        for t in ctx["throughput"]:
            out.append(f"| {t['resolution']}x{t['resolution']} | {t['levels']} | "
                       f"{t['params']:,} | {t['batch_size']} | {t['steps_per_s']:.2f} | "
                       f"{t['samples_per_s']:.1f} | {t['compile_s']:.1f} |")
        out.append("")
    out += ["<details><summary>Training config (after overrides)</summary>", "", "```json",
            json.dumps(ctx["config"], indent=1), "```", "</details>", ""]
    return "\n".join(out)


def _quick(cfg: Any) -> Any:
    return cfg.with_overrides(
        data_resolution=64, data_val_fraction=0.3, train_max_steps=10, train_eval_every=5,
        train_log_every=5, model_width=4, model_max_width=8, model_depth=1, model_blocks=1,
        model_embed=4, model_groups=2, model_prior_fit_windows=8, eval_mc_samples=0,
        eval_rollout_steps=2, eval_n_plots=5, eval_fit_windows=8)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny data, model, steps")
    ap.add_argument("--config", default=str(REPO / "configs" / "nvp-cpu-small.json"))
    ap.add_argument("--workdir", default=None, help="data and runs (default: a folder in /tmp)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "nvp.md"))
    ap.add_argument("--train-sequences", type=int, default=16, help="per domain")
    ap.add_argument("--test-sequences", type=int, default=4, help="per domain, held out")
    ap.add_argument("--steps", type=int, default=None, help="override train.max_steps")
    ap.add_argument("--throughput-steps", type=int, default=None)
    ap.add_argument("--resolutions", default="64,128", help="throughput at these ('' for none)")
    ap.add_argument("--reproduce", default=None, help=argparse.SUPPRESS)  # the command to show
    args = ap.parse_args(argv)
    started = machine.start()

    from atlasstore.nvp.checkpoint import clear_run
    from atlasstore.nvp.config import TrainConfig
    from atlasstore.nvp.evaluate import evaluate_checkpoint
    from atlasstore.nvp.metrics import read_metrics
    from atlasstore.nvp.train import train
    from atlasstore.physics.synth import DEFAULT_DOMAINS

    work = Path(args.workdir or f"/tmp/atlas-bench-nvp{'-quick' if args.quick else ''}")
    work.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig.load(args.config)
    print(f"[config] {args.config}: model traced at its resolution: {_shape_check(cfg)}",
          flush=True)
    if args.quick:
        data = [_generate(work / "train.zarr", DEFAULT_DOMAINS, 3, 5, (128, 128), 0),
                _generate(work / "test.zarr", DEFAULT_DOMAINS, 1, 5, (128, 128), 1)]
        cfg = _quick(cfg)
    else:
        data = [_generate(work / "train.zarr", DEFAULT_DOMAINS, args.train_sequences, None,
                          None, 0),
                _generate(work / "test.zarr", DEFAULT_DOMAINS, args.test_sequences, None,
                          None, 1)]
    if args.steps is not None:
        cfg = cfg.with_overrides(train_max_steps=args.steps)
    run_dir = work / "run"
    clear_run(run_dir)

    def progress(e: dict[str, Any]) -> None:
        if e["event"] in ("start", "eval", "end"):
            keep = {k: v for k, v in e.items() if not isinstance(v, (dict, list))}
            print(f"[train] {json.dumps(keep, default=str)[:300]}", flush=True)

    t0, c0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    res = train(cfg, store=str(work / "train.zarr"), out_dir=run_dir, progress=progress)
    c1 = resource.getrusage(resource.RUSAGE_SELF)
    train_s = time.perf_counter() - t0
    best = res.best or res.latest
    print(f"[train] done in {train_s:.0f} s; evaluating {best['path']}", flush=True)
    report = evaluate_checkpoint(best["path"], store=str(work / "test.zarr"), split="all",
                                 out_dir=work / "eval")
    h = report["headline"]
    print(f"[eval] {h['note']}; mean VRMSE {h['mean_vrmse']}; worst {h['worst_domain']}; goals "
          f"{h['goals_met']}/{h['goals']}", flush=True)
    tps = []
    steps = args.throughput_steps or (2 if args.quick else 10)
    for r in (int(x) for x in args.resolutions.split(",") if x):
        tps.append(_throughput(cfg, r, steps))
        print(f"[throughput] {tps[-1]}", flush=True)

    vals = [m for m in read_metrics(run_dir) if m["split"] == "val"]
    monitor = cfg.train.monitor
    best_val = min(vals, key=lambda m: m[monitor]) if vals else {}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figs = {}
    for key, src in (("domains", "domains.png"), ("rollout", "rollout.png"),
                     ("training_curves", "training_curves.png"), ("sample", "sample_4.png")):
        name = f"{out.stem}_{key}.png"
        if (work / "eval" / src).exists():
            shutil.copyfile(work / "eval" / src, out.parent / name)
        figs[key] = name
    command = ".venv/bin/python benchmarks/bench_nvp.py" + (" --quick" if args.quick else "")
    for flag, val, default in (("--config", args.config,
                                str(REPO / "configs" / "nvp-cpu-small.json")),
                               ("--train-sequences", args.train_sequences, 16),
                               ("--test-sequences", args.test_sequences, 4),
                               ("--steps", args.steps, None),
                               ("--resolutions", args.resolutions, "64,128")):
        if val != default:
            shown = os.path.relpath(val, REPO) if flag == "--config" else val
            command += f" {flag} {shown}"
    command = args.reproduce or command
    ctx = {
        "quick": args.quick,
        "machine": [*machine.describe(started, ("numpy", "jax", "jaxlib", "flax", "optax",
                                                "orbax-checkpoint")),
                    f"- JAX backend: {machine.jax_backend()}"],
        "command": command, "data": data,
        "config": json.loads((run_dir / "run.json").read_text())["config"],
        "report": report, "figs": figs,
        "train": {"step": res.step, "seconds": train_s, "stopped": res.stopped,
                  "cpu_seconds": (c1.ru_utime + c1.ru_stime) - (c0.ru_utime + c0.ru_stime),
                  "steps_per_second": res.steps_per_second, "wait": res.wait,
                  "train_sequences": len(res.train_sequences),
                  "val_sequences": len(res.val_sequences),
                  "best_step": best_val.get("step"),
                  "best_metric": round(best_val[monitor], 5) if best_val else None},
        "throughput": tps,
    }
    out.write_text(_markdown(ctx))
    (work / "bench_nvp.json").write_text(json.dumps(ctx, indent=1, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
