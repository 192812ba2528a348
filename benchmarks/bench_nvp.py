"""NVP benchmark: train on the default synthetic data, evaluate on held-out sequences, measure speed.

One command::

    .venv/bin/python benchmarks/bench_nvp.py            # full run (~10-15 min on 2 quiet cores)
    .venv/bin/python benchmarks/bench_nvp.py --quick    # smoke run (~2-4 min)

What it does
------------
1. Generates the *default synthetic data* (the five default domain presets: 256x256 maps, 10
   steps) into ``<workdir>/train.zarr`` (8 sequences per domain, seed 0; the SQLite catalog
   beside it), and a separate **held-out test store** ``<workdir>/test.zarr`` (2 sequences per
   domain from a different run seed, so none of its sequences was seen in training or
   validation). ``--quick`` uses 128x128 maps, 2 + 1 sequences per domain and 5 steps.
2. Trains ``configs/nvp-cpu-small.json`` (``--config``) on the training store (5% of its
   sequences held out for validation / early stopping).
3. Evaluates the best checkpoint on every sequence of the test store (``split="all"``):
   one-step VRMSE vs persistence and the fitted diffusion baseline, conservation and entropy,
   NLL/CRPS/coverage/spread-skill of the MC-dropout predictive, rollouts.
4. Measures pure training-step throughput (random inputs, no input pipeline) at 64, 128 and 256
   inputs with the config's model and batch size, after compilation.
5. Writes Markdown with the machine, the exact commands and config, and every number, to
   ``benchmarks/results/nvp.md`` (``--out``).

Goals checked (reported, not enforced): one-step VRMSE at least 30% below persistence on the
held-out sequences; 90% interval coverage within 85-95%.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import machine  # noqa: E402


def _generate(path: Path, domains: tuple[str, ...], sequences: int, steps: int | None,
              shape: tuple[int, int] | None, seed: int) -> dict[str, Any]:
    from atlasstore.catalog import SQLiteCatalog
    from atlasstore.generate import Plan, generate

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


def _throughput(cfg: Any, resolution: int, steps: int) -> dict[str, float]:
    """Steps/s of train_step on random positive inputs at ``resolution`` (after compilation)."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from atlasstore.nvp.model import NVP
    from atlasstore.nvp.train import make_optimizer, train_step

    levels = [lv for lv in (256, 128, 64) if lv <= resolution]
    stats = {lv: (float((resolution // lv) ** 2), float((resolution // lv) ** 2)) for lv in levels}
    model = NVP(cfg.model, levels, cfg.data.n_in, stats, shape=(resolution, resolution),
                seed=cfg.seed)
    opt = nnx.Optimizer(model, make_optimizer(cfg.optim, 1000), wrt=nnx.Param)
    rng = np.random.default_rng(0)
    b = cfg.data.batch_size
    base = rng.gamma(2.0, 0.5, size=(b, cfg.data.n_in + 1, resolution, resolution)).astype("f4")
    from atlasstore.nvp.model import pyramid_inputs

    pyr = pyramid_inputs(jnp.asarray(base[:, :cfg.data.n_in]), levels)
    inputs = {lv: pyr[lv] for lv in levels}
    target = jnp.asarray(base[:, cfg.data.n_in:])
    t0 = time.perf_counter()
    out = train_step(model, opt, inputs, target, jax.random.key(0), cfg.loss, 1)
    jax.block_until_ready(out)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(steps):
        out = train_step(model, opt, inputs, target, jax.random.key(i + 1), cfg.loss, 1)
    jax.block_until_ready(out)
    dt = time.perf_counter() - t0
    n_params = int(sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param))))
    return {"resolution": resolution, "levels": levels, "batch_size": b, "steps": steps,
            "steps_per_s": steps / dt, "samples_per_s": steps * b / dt, "compile_s": compile_s,
            "params": n_params}


def _fmt(x: Any, nd: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float):
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4):
            return f"{x:.2e}"
        return f"{x:.{nd}f}"
    return str(x)


def _markdown(ctx: dict[str, Any]) -> str:
    rep = ctx["report"]
    one = rep["one_step"]
    tr = ctx["train"]
    lines = []
    quick = ctx["quick"]
    lines.append("# NVP benchmark" + (" — QUICK SMOKE RUN (not the measurement)" if quick else ""))
    lines.append("")
    if quick:
        lines.append("> `--quick`: tiny data (128x128, few sequences and steps) and a few dozen "
                     "training steps, on a shared machine. It checks that the pipeline runs end "
                     "to end; its numbers say nothing about what the model reaches. Run without "
                     "`--quick` on a quiet machine for the measurement.")
        lines.append("")
    lines += ctx["machine"]
    lines.append("")
    lines.append("## Reproduce")
    lines.append("")
    lines.append("```")
    lines.append(ctx["command"])
    lines.append("```")
    lines.append("")
    lines.append("Data: " + "; ".join(
        f"`{Path(g['path']).name}` = {len(g['plan']['domains'])} domains x "
        f"{g['plan']['sequences']} sequences x {g['plan']['steps'] or 'preset (10)'} steps, shape "
        f"{g['plan']['shape'] or 'preset (256x256)'}, seed {g['plan']['seed']} (run {g['run_id']})"
        for g in ctx["data"]) + ". The test store's sequences come from another run seed: none "
        "was seen in training or validation.")
    lines.append("")
    lines.append("<details><summary>Training config (after overrides)</summary>")
    lines.append("")
    lines.append("```json")
    lines.append(json.dumps(ctx["config"], indent=1))
    lines.append("```")
    lines.append("</details>")
    lines.append("")
    lines.append("## Goals")
    lines.append("")
    red = rep["vs_persistence"]["vrmse_reduction"]
    cov = one["model"]["coverage_90"]
    lines.append("| goal | measured | met |")
    lines.append("|---|---|---|")
    lines.append(f"| one-step VRMSE >= 30% below persistence (held-out) | "
                 f"{100 * abs(red):.1f}% {'below' if red >= 0 else 'above'} "
                 f"({_fmt(one['model']['vrmse'])} vs "
                 f"{_fmt(one['persistence']['vrmse'])}) | {'yes' if red >= 0.30 else 'NO'} |")
    lines.append(f"| 90% interval coverage in [85%, 95%] | {100 * cov:.1f}% | "
                 f"{'yes' if 0.85 <= cov <= 0.95 else 'NO'} |")
    lines.append("")
    lines.append("## One-step metrics on the held-out test store")
    lines.append("")
    lines.append(f"{rep['data']['windows']} windows of {len(rep['data']['sequences'])} sequences "
                 f"at resolution {rep['data']['resolution']} (inputs {rep['data']['levels']}); "
                 f"MC dropout with {rep['settings']['mc_samples']} samples; diffusion sigma "
                 f"{rep['diffusion']['sigma']} px fitted on {rep['diffusion']['fit_on']} "
                 f"({rep['diffusion']['fit_windows']} windows). Baselines' predictive std: "
                 f"their RMSE on those training windows.")
    lines.append("")
    lines.append("| predictor | VRMSE | cons. err | entropy viol. | NLL | CRPS | cov 50% | cov 90% "
                 "| spread/skill |")
    lines.append("|---|---|---|---|---|---|---|---|---|")
    for name in ("model", "persistence", "diffusion"):
        m = one[name]
        lines.append(f"| {'NVP' if name == 'model' else name} | {_fmt(m['vrmse'])} | "
                     f"{_fmt(m['conservation_error'])} | {_fmt(m['entropy_violations']['rate'], 3)} | "
                     f"{_fmt(m['nll'])} | {_fmt(m['crps'])} | {_fmt(m['coverage_50'], 3)} | "
                     f"{_fmt(m['coverage_90'], 3)} | {_fmt(m['spread_skill'], 3)} |")
    lines.append("")
    lines.append(f"NVP: minimum predicted energy {_fmt(one['model']['min_prediction'])} (non-negative "
                 f"by construction); aleatoric share of the predictive variance "
                 f"{_fmt(one['model']['aleatoric_fraction'], 3)}; entropy of the truth itself "
                 f"decreases in {_fmt(one['truth_entropy_violations']['rate'], 3)} of the windows.")
    lines.append("")
    lines.append("Per domain (VRMSE):")
    lines.append("")
    lines.append("| domain | windows | NVP | persistence | diffusion | NVP cov 90% |")
    lines.append("|---|---|---|---|---|---|")
    for d, v in rep["per_domain"].items():
        lines.append(f"| {d} | {v['windows']} | {_fmt(v['model_vrmse'])} | "
                     f"{_fmt(v['persistence_vrmse'])} | {_fmt(v['diffusion_vrmse'])} | "
                     f"{_fmt(v['model_coverage_90'], 3)} |")
    ro = rep.get("rollout") or {}
    if ro:
        lines.append("")
        lines.append(f"Rollout ({ro['sequences']} sequences from t=0, VRMSE by lead):")
        lines.append("")
        lines.append("| lead | " + " | ".join(str(k) for k in ro["lead"]) + " |")
        lines.append("|---|" + "---|" * len(ro["lead"]))
        for k, lab in (("model_vrmse", "NVP"), ("persistence_vrmse", "persistence"),
                       ("diffusion_vrmse", "diffusion"),
                       ("model_conservation_error", "NVP cons. err")):
            lines.append(f"| {lab} | " + " | ".join(_fmt(v) for v in ro[k]) + " |")
    lines.append("")
    lines.append("## Training")
    lines.append("")
    lines.append(f"{tr['step']} steps in {tr['seconds']:.0f} s ({tr['stopped']}); "
                 f"{tr['steps_per_second']:.2f} steps/s including validation and checkpoints; "
                 f"input pipeline wait {100 * tr['wait'].get('fraction', 0):.1f}% of the loop's wall "
                 f"time (mean {1000 * tr['wait'].get('mean', 0):.1f} ms, p95 "
                 f"{1000 * tr['wait'].get('p95', 0):.1f} ms per batch); "
                 f"{tr['train_sequences']} train / {tr['val_sequences']} validation sequences; "
                 f"best checkpoint at step {tr['best_step']} (val energy fidelity "
                 f"{_fmt(tr['best_metric'])}).")
    lines.append("")
    lines.append("## Training-step throughput (CPU, compute only)")
    lines.append("")
    lines.append("Random positive inputs, no input pipeline, after compilation; the config's "
                 "model and batch size.")
    lines.append("")
    lines.append("| input | levels | params | batch | steps/s | samples/s | compile (s) |")
    lines.append("|---|---|---|---|---|---|---|")
    for t in ctx["throughput"]:
        lines.append(f"| {t['resolution']}x{t['resolution']} | {t['levels']} | {t['params']:,} | "
                     f"{t['batch_size']} | {t['steps_per_s']:.2f} | {t['samples_per_s']:.1f} | "
                     f"{t['compile_s']:.1f} |")
    lines.append("")
    lines.append("Numbers from a shared machine (see the load average above) are lower bounds.")
    lines.append("")
    lines.append(f"Figures and the full report: `{rep['out_dir']}` (not committed).")
    lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny data, few steps")
    ap.add_argument("--config", default=str(REPO / "configs" / "nvp-cpu-small.json"))
    ap.add_argument("--workdir", default=None, help="data and runs (default: a folder in /tmp)")
    ap.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "nvp.md"))
    ap.add_argument("--throughput-steps", type=int, default=None)
    ap.add_argument("--resolutions", default="64,128,256")
    args = ap.parse_args(argv)
    started = machine.start()


    from atlasstore.nvp.checkpoint import clear_run
    from atlasstore.nvp.config import TrainConfig
    from atlasstore.nvp.evaluate import evaluate_checkpoint
    from atlasstore.nvp.train import train
    from atlasstore.synth import DEFAULT_DOMAINS

    work = Path(args.workdir or f"/tmp/atlas-bench-nvp{'-quick' if args.quick else ''}")
    work.mkdir(parents=True, exist_ok=True)
    cfg = TrainConfig.load(args.config)
    if args.quick:
        data = [_generate(work / "train.zarr", DEFAULT_DOMAINS, 2, 5, (128, 128), 0),
                _generate(work / "test.zarr", DEFAULT_DOMAINS, 1, 5, (128, 128), 1)]
        cfg = cfg.with_overrides(train_max_steps=30, train_eval_every=10, train_log_every=5,
                                 train_max_minutes=None, optim_warmup_steps=5,
                                 eval_mc_samples=4, eval_rollout_steps=3, eval_n_plots=2,
                                 data_val_fraction=0.1)
        tp_steps = args.throughput_steps or 2
    else:
        data = [_generate(work / "train.zarr", DEFAULT_DOMAINS, 8, None, None, 0),
                _generate(work / "test.zarr", DEFAULT_DOMAINS, 2, None, None, 1)]
        tp_steps = args.throughput_steps or 10
    run_dir = work / "run"
    clear_run(run_dir)

    def progress(e: dict[str, Any]) -> None:
        if e["event"] in ("start", "eval", "end"):
            keep = {k: v for k, v in e.items() if not isinstance(v, (dict, list))}
            print(f"[train] {json.dumps(keep, default=str)[:300]}", flush=True)

    t0 = time.perf_counter()
    res = train(cfg, store=str(work / "train.zarr"), out_dir=run_dir, progress=progress)
    train_s = time.perf_counter() - t0
    best = res.best or res.latest
    print(f"[train] done in {train_s:.0f} s; evaluating {best['path']}", flush=True)
    report = evaluate_checkpoint(best["path"], store=str(work / "test.zarr"), split="all",
                                 out_dir=work / "eval")
    print(f"[eval] VRMSE model {report['one_step']['model']['vrmse']:.4f} persistence "
          f"{report['one_step']['persistence']['vrmse']:.4f} coverage90 "
          f"{report['one_step']['model']['coverage_90']:.3f}", flush=True)
    tps = []
    for r in (int(x) for x in args.resolutions.split(",")):
        tps.append(_throughput(cfg, r, tp_steps))
        print(f"[throughput] {tps[-1]}", flush=True)

    from atlasstore.nvp.metrics import read_metrics

    vals = [m for m in read_metrics(run_dir) if m["split"] == "val"]
    best_val = min(vals, key=lambda m: m["energy_fidelity"]) if vals else {}
    ctx = {
        "quick": args.quick,
        "machine": [*machine.describe(started, ("numpy", "jax", "jaxlib", "flax", "optax",
                                                "orbax-checkpoint")),
                    f"- JAX backend: {machine.jax_backend()}"],
        "command": (".venv/bin/python benchmarks/bench_nvp.py" + (" --quick" if args.quick else "")
                    + (f" --config {args.config}" if Path(args.config).resolve()
                       != (REPO / "configs" / "nvp-cpu-small.json").resolve() else "")),
        "data": data,
        "config": res and json.loads((run_dir / "run.json").read_text())["config"],
        "report": report,
        "train": {"step": res.step, "seconds": train_s, "stopped": res.stopped,
                  "steps_per_second": res.steps_per_second, "wait": res.wait,
                  "train_sequences": len(res.train_sequences),
                  "val_sequences": len(res.val_sequences),
                  "best_step": best_val.get("step"), "best_metric": best_val.get("energy_fidelity")},
        "throughput": tps,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(_markdown(ctx))
    (work / "bench_nvp.json").write_text(json.dumps(ctx, indent=1, default=str))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
