"""``atlas train`` and ``atlas evaluate``, registered by :func:`atlasstore.cli.parser.build_parser`.

The NVP is imported only when one of them runs, so the parser never imports JAX; the handlers
here are where the NVP's progress is printed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

#: the exit status of a command stopped by Ctrl-C (the CLI's, :mod:`atlasstore.cli.entry`)
EXIT_INTERRUPTED = 130


def _explicit_or(args: argparse.Namespace, common: argparse.ArgumentParser, fallback: Any) -> Any:
    """``--store`` when it differs from the parser default (given, or $ATLAS_STORE), else
    ``fallback`` (the config's / checkpoint's store) when there is one."""
    default = common.get_default("store")
    if args.store != default or not fallback:
        return args.store
    return fallback


def _train_config(args: argparse.Namespace) -> Any:
    """The config file's (else the default, :data:`~atlasstore.nvp.config.DEFAULT_CONFIG`),
    with the command line's options over it."""
    from atlasstore.nvp.config import TrainConfig

    cfg = TrainConfig.load(args.config) if args.config else TrainConfig.default()
    changes: dict[str, Any] = {}
    for opt, key in (("max_steps", "train_max_steps"), ("max_minutes", "train_max_minutes"),
                     ("seed", "seed"), ("batch_size", "data_batch_size"),
                     ("scale", "data_resolution")):
        if getattr(args, opt) is not None:
            changes[key] = getattr(args, opt)
    if args.domains is not None:
        changes["data_domains"] = [d for d in args.domains.split(",") if d]
    return cfg.with_overrides(**changes) if changes else cfg


def resume_command(args: argparse.Namespace, store: str, out_dir: str) -> str:
    """The ``atlas train`` command that resumes this run: its options, ``--out`` and
    ``--resume``."""
    argv = ["atlas", "train", "--store", str(store), "--out", out_dir]
    for opt in ("config", "domains", "field", "scale", "batch_size", "max_steps",
                "max_minutes", "seed", "catalog"):
        if getattr(args, opt, None) is not None:
            argv += [f"--{opt.replace('_', '-')}", str(getattr(args, opt))]
    argv += ["--no-catalog"] if args.no_catalog else []
    argv += ["--quiet"] if args.quiet else []
    return shlex.join([*argv, "--resume"])


def _print_train_event(e: dict[str, Any], quiet: bool) -> None:
    ev = e["event"]
    if ev == "start":
        resumed = e["resumed_from"]
        what = f"resuming at step {resumed}" if resumed is not None else "new run"
        print(f"train {e['run_id']} ({what}) -> {e['out_dir']}")
        print(f"  data: {e['train_sequences']} train / {e['val_sequences']} val sequences, "
              f"{e['train_windows']} / {e['val_windows']} windows of {e['field']}, resolution "
              f"{e['resolution']}, levels {e['levels']}, batch {e['batch_size']}; dataset "
              f"version {e['dataset_version_id']}; model {e['params']:,} parameters", flush=True)
    elif ev == "log" and not quiet:
        print(f"  step {e['step']:6d}  loss {e['loss']:.5f}  mse {e['mse']:.5f}  cons "
              f"{e['conservation']:.2e}  ent {e['entropy']:.2e}  nll {e['nll']:.4f}  "
              f"lr {e['lr']:.2e}  {e['steps_per_s']:.2f} steps/s  wait "
              f"{1000 * e['wait_s']:.1f} ms ({100 * e['wait_fraction']:.0f}%)", flush=True)
    elif ev == "eval":
        mark = " *best*" if e["improved"] else ""
        print(f"  val @ {e['step']}: {e['monitor']} {e[e['monitor']]:.5f} (vrmse "
              f"{e['vrmse']:.4f}, persistence {e['persistence_vrmse']:.4f}, conservation "
              f"{e['conservation']:.2e}){mark}", flush=True)
    elif ev == "checkpoint" and not quiet:
        print(f"  checkpoint {e['ckpt_id']}", flush=True)
    elif ev == "catalog_error":
        print(f"catalog not updated ({e['error']}); training goes on", file=sys.stderr)
    elif ev == "end":
        best = e["best"] or {}
        print(f"stopped at step {e['step']} ({e['stopped']}); {e['steps_per_second']:.2f} "
              f"steps/s; input wait {100 * e['wait'].get('fraction', 0.0):.1f}% of wall time")
        if best:
            print(f"best checkpoint: {best['ckpt_id']} at {best['path']}")


def _interrupted(args: argparse.Namespace, store: str, out_dir: str,
                 where: dict[str, Any] | None) -> int:
    """Ctrl-C: say how far the run got and the command that continues it."""
    again = resume_command(args, store, out_dir)
    if where is None:  # before the first training step
        print("atlas: interrupted before the first training step; run the same command again "
              "to start", file=sys.stderr)
    elif where["latest"] is None:
        print(f"atlas: interrupted: {where['run_id']} stopped at step {where['step']} before "
              "its first checkpoint; run the same command again to start over", file=sys.stderr)
    else:
        print(f"atlas: interrupted: {where['run_id']} stopped at step {where['step']}; last "
              f"checkpoint: step {where['latest_step']} at {where['latest']}; resume with:\n"
              f"  {again}", file=sys.stderr)
    return EXIT_INTERRUPTED


def cmd_train(args: argparse.Namespace, common: argparse.ArgumentParser) -> int:
    from atlasstore.nvp.checkpoint import resolve_out_dir
    from atlasstore.nvp.train import train

    cfg = _train_config(args)
    store = _explicit_or(args, common, cfg.store)
    catalog: Any = False if args.no_catalog else args.catalog or None
    out_dir = str(resolve_out_dir(cfg, args.out))
    where: dict[str, Any] = {}

    def progress(e: dict[str, Any]) -> None:
        if e["event"] == "interrupted":
            where.update(e)
        _print_train_event(e, args.quiet)

    try:
        result = train(cfg, store=store, catalog=catalog, out_dir=out_dir, resume=args.resume,
                       cache=args.cache, field=args.field, progress=progress)
    except KeyboardInterrupt:
        return _interrupted(args, store, out_dir, where or None)
    return 1 if result.catalog_errors else 0


def cmd_evaluate(args: argparse.Namespace, common: argparse.ArgumentParser) -> int:
    from atlasstore.nvp.evaluate import evaluate_checkpoint

    ckpt = args.checkpoint
    if not Path(ckpt).exists() and args.catalog:
        from atlasstore.catalog import open_catalog

        with open_catalog(args.catalog) as cat:
            rec = cat.get_checkpoint(ckpt)
        if rec is None:
            raise FileNotFoundError(f"{ckpt} is neither a checkpoint path nor a checkpoint id in "
                                    f"{args.catalog}")
        ckpt = rec.path
    # --store when given; else the checkpoint's own store
    store = args.store if args.store != common.get_default("store") else None
    quiet = args.quiet

    def progress(e: dict[str, Any]) -> None:
        if e["event"] == "held_out" and not quiet:
            print(e["note"], flush=True)
        elif e["event"] == "baselines" and not quiet:
            f = e["fit_on"]
            print(f"baselines fitted per domain on the training split ({f['sequences']} "
                  f"sequences of {f['store']})", flush=True)

    report = evaluate_checkpoint(ckpt, store=store, train_store=args.train_store, cache=args.cache,
                                 out_dir=args.out, split=args.split,
                                 mc_samples=args.mc_samples, rollout_steps=args.rollout_steps,
                                 n_plots=args.plots, max_windows=args.max_windows,
                                 plots=args.plots != 0, progress=progress)
    if args.json:
        print(json.dumps({k: v for k, v in report.items()}, indent=1, default=str))
        return 0
    from atlasstore.nvp.goals import markdown_tables

    d = report["data"]
    print(f"checkpoint {report['checkpoint']['ckpt_id']} (step {report['checkpoint']['step']}) on "
          f"{d['windows']} windows of {len(d['sequences'])} sequences ({d['split']}) of "
          f"{d['store']}")
    print(markdown_tables(report), end="")
    print(f"wrote {report['out_dir']}/report.json and {len(report['figures'])} figure(s)")
    return 0


def add_commands(sub: Any, common: argparse.ArgumentParser, cat: argparse.ArgumentParser) -> None:
    """Register ``train`` and ``evaluate`` on the ``atlas`` subparsers."""
    s = sub.add_parser("train", parents=[common, cat],
                       help="train the NVP next-step model on a store (resumable)")
    s.add_argument("--config", default=None, help="training config JSON "
                   "(schemas/train-config.schema.json), e.g. configs/nvp-cpu-small.json; "
                   "default: the nvp-cpu-small settings with the data's own resolution, levels, "
                   "field and a batch size the data holds (the options below override either)")
    s.add_argument("--domains", default=None, help="train on these domains only (a,b)")
    s.add_argument("--field", default=None, help="the field to train on (default: the "
                   "sequences' primary field; the model predicts the primary field only)")
    s.add_argument("--scale", type=int, default=None, help="the level to predict (default: "
                   "the selection's full resolution); coarser stored levels are extra inputs")
    s.add_argument("--batch-size", type=int, default=None,
                   help="override data.batch_size (cut to the training windows either way)")
    s.add_argument("--out", default=None,
                   help="run directory (default: config out_dir or runs/<name>); it gets "
                        "run.json, config.resolved.json, metrics and checkpoints")
    s.add_argument("--resume", action="store_true", help="continue the run in --out from its "
                   "latest checkpoint")
    s.add_argument("--max-steps", type=int, default=None, help="override train.max_steps")
    s.add_argument("--max-minutes", type=float, default=None, help="override train.max_minutes")
    s.add_argument("--seed", type=int, default=None, help="override the seed")
    s.add_argument("--no-catalog", action="store_true", help="do not register lineage")
    s.add_argument("--quiet", action="store_true", help="only start, validation and end lines")
    s.set_defaults(func=lambda a: cmd_train(a, common))

    s = sub.add_parser("evaluate", parents=[common, cat],
                       help="evaluate a checkpoint: metrics vs baselines, report.json and PNGs")
    s.add_argument("checkpoint", help="run directory (best checkpoint), checkpoints/best|latest, "
                   "a step directory, or a checkpoint id with --catalog")
    s.add_argument("--out", default=None, help="output directory (default: <run>/eval)")
    s.add_argument("--split", choices=("val", "train", "all"), default=None,
                   help="all: every matching sequence of --store (the default for a store other "
                        "than the training store: a held-out evaluation); val: the run's "
                        "validation sequences (the default on the training store; reported as "
                        "NOT held out)")
    s.add_argument("--train-store", default=None,
                   help="where the checkpoint's training store is now, if it moved (the "
                        "baselines are fitted on its training split)")
    s.add_argument("--quiet", action="store_true", help="only the tables")
    s.add_argument("--mc-samples", type=int, default=None,
                   help="MC-dropout samples (default: the run config's eval.mc_samples)")
    s.add_argument("--rollout-steps", type=int, default=None,
                   help="autoregressive rollout length in steps (default: eval.rollout_steps)")
    s.add_argument("--plots", type=int, default=None, help="sample figures (0: no figures)")
    s.add_argument("--max-windows", type=int, default=None,
                   help="evaluate at most this many windows (default: eval.max_windows)")
    s.add_argument("--json", action="store_true", help="print the whole report as JSON")
    s.set_defaults(func=lambda a: cmd_evaluate(a, common))
