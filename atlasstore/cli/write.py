"""The write commands: ``atlas init``, ``atlas generate`` and ``atlas import``."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from typing import Any

from atlasstore.cli.options import (
    _fmt_bytes,
    _open_catalog,
    _run_summary,
)
from atlasstore.runs.options import RunOptions


def run_options(args: argparse.Namespace) -> RunOptions:
    """The run settings of ``atlas generate``/``import``'s flags, built once and passed down."""
    return RunOptions(workers=args.workers, scheduler=args.scheduler, dask_logs=args.debug)


def cmd_init(args: argparse.Namespace) -> int:
    from atlasstore.store.atlas_store import AtlasStore

    AtlasStore.create(args.store, exist_ok=args.exist_ok)
    print(f"created atlas store {args.store}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from atlasstore.runs.generate import Plan, generate, preflight

    plan = Plan(domains=tuple(args.domains), sequences=args.sequences, steps=args.steps,
                scales=tuple(args.scales) if args.scales is not None else None, seed=args.seed,
                start_index=args.start_index)
    # every refusal (engine, store, a clash with stored sequences) before any file is created
    settings = run_options(args)
    preflight(args.store, plan, settings)
    catalog = None if args.no_catalog else _open_catalog(args, required=True, create=True)
    n = len(plan.tasks())
    bar = tqdm(total=n, unit="seq", desc="generate", disable=args.quiet or not sys.stderr.isatty()
               and not args.progress, file=sys.stderr)
    failures: list[str] = []

    def progress(result: dict[str, Any]) -> None:
        bar.update(1)
        if result["status"] == "failed":
            t = result["task"]
            failures.append(f"{t['domain']}/{t['sequence_id']} (seed {t['seed']})")

    try:
        report = generate(args.store, plan,
                          replace(settings, catalog=catalog, progress=progress))
    finally:
        bar.close()
        if catalog is not None:
            catalog.close()
    return _run_summary(report, f"{_fmt_bytes(report.bytes_written)} decoded",
                        lambda f: f" seed={f.seed}: ")


def cmd_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from atlasstore.runs.ingest import ImportOptions, plan_npy, plan_well, plan_xarray, run_import

    options = ImportOptions(kind=args.kind, levels=tuple(args.levels) if args.levels else None,
                            smallest=args.min_level, crop=args.crop, pad=args.pad,
                            pad_mode=args.pad_mode, nan_is_missing=args.nan_is_missing)
    if args.source == "npy":
        plan = plan_npy(args.dir, args.pattern, domain=args.domain, sequence=args.sequence,
                        sidecars=not args.no_sidecars, sidecar_keys=args.sidecar_keys,
                        inventory=args.inventory, field_name=args.field, options=options)
    elif args.source == "well":
        plan = plan_well(args.files, field=args.field, derive=args.derive, domain=args.domain,
                         density=args.density, velocity=args.velocity, options=options)
    else:
        plan = plan_xarray(args.path, args.var, dims=args.dims, sequence_dim=args.sequence_dim,
                           isel=args.isel, domain=args.domain, sequence=args.sequence,
                           field=args.field, engine=args.engine, options=options)
    # every refusal (engine, store) before any file is created
    from atlasstore.runs.engine import preflight_store

    settings = run_options(args)
    preflight_store(args.store, settings)
    catalog = None if args.no_catalog else _open_catalog(args, required=True, create=True)
    bar = tqdm(total=len(plan.units) + len(plan.failures), unit="seq", desc="import",
               disable=args.quiet or not sys.stderr.isatty() and not args.progress,
               file=sys.stderr)

    def progress(_result: dict[str, Any]) -> None:
        bar.update(1)

    try:
        report = run_import(args.store, plan,
                            replace(settings, catalog=catalog, progress=progress))
    finally:
        bar.close()
        if catalog is not None:
            catalog.close()
    # the error names the file it comes from
    return _run_summary(report, f"{_fmt_bytes(report.source_bytes)} read", lambda f: ": ")
