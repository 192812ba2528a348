"""The checking and catalog commands: ``atlas audit`` (with ``--checkpoint``), ``atlas catalog
sync`` and ``atlas catalog lineage``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from atlasstore.catalog.protocol import Catalog
from atlasstore.cli.options import (
    EXIT_FAILED,
    _fmt_bytes,
    _open_catalog,
    _open_store,
)
from atlasstore.errors import UserError


def cmd_audit(args: argparse.Namespace) -> int:
    from atlasstore.audit import audit, summary_rows

    if args.dataset_version or args.checkpoint:
        return _audit_dataset(args)
    store = _open_store(args)
    catalog = _open_catalog(args)
    try:
        if catalog is not None:
            _catch_up_quietly(store, catalog)
        report = audit(store, domains=args.domains or None, verify=not args.quick, catalog=catalog)
    finally:
        if catalog is not None:
            catalog.close()
    rows = summary_rows(report)
    print(f"{'domain':28s} {'seqs':>5s} {'maps':>6s} {'on disk':>11s} {'ratio':>6s} "
          f"{'mean':>9s} {'variance':>10s} {'entropy':>8s}")
    for r in rows:
        print(f"{r['domain']:28s} {r['sequences']:5d} {r['maps']:6d} {_fmt_bytes(r['bytes_on_disk']):>11s} "
              f"{r['compression_ratio']:6.2f} {r['mean']:9.4f} {r['variance']:10.4f} {r['entropy']:8.4f}")
    print(f"checked {report.checked_arrays} arrays: "
          f"{'OK' if report.ok else f'{len(report.problems)} problem(s)'}")
    for p in report.problems:
        print(f"{p.kind.upper()} {p.path}: {p.message}", file=sys.stderr)
    return 0 if report.ok else EXIT_FAILED


def _catch_up_quietly(store: Any, catalog: Catalog) -> None:
    """Apply the store's recent changes to the catalog before reporting on it (what is left
    is drift the change log does not explain); a note when it cannot."""
    from atlasstore.catalog.sync import catch_up
    from atlasstore.errors import CatalogError, CatalogMismatch, CatalogNotSynced

    try:
        res = catch_up(store, catalog)
    except CatalogMismatch:
        raise
    except CatalogNotSynced as exc:
        print(f"atlas: note: {exc}", file=sys.stderr)
        return
    except CatalogError as exc:
        print(f"atlas: note: the catalog was not brought up to date: {exc}", file=sys.stderr)
        return
    if res.applied:
        print(f"catalog: applied {res.applied} store change(s) since its last sync"
              + (f"; {res.pending} still in flight" if res.pending else ""))


def _audit_dataset(args: argparse.Namespace) -> int:
    """`atlas audit --dataset-version ID | --checkpoint PATH`: does the training data still
    match the store?"""
    from atlasstore.audit import audit_dataset

    store = _open_store(args)
    catalog = _open_catalog(args, required=True)
    try:
        vid = args.dataset_version or _checkpoint_dataset_version(args.checkpoint, catalog)
        dv = catalog.get_dataset_version(vid)
    finally:
        catalog.close()
    if dv is None:
        raise UserError(f"dataset version {vid!r} is not in the catalog {catalog.uri}")
    if not dv.checksums:
        raise UserError(f"dataset version {vid!r} pins no checksums (registered before "
                        "datasets were pinned): there is nothing to compare")
    rep = audit_dataset(store, vid, dv.checksums, verify=not args.quick)
    print(f"dataset version {vid}: {len(rep.matches)} sequences match, {len(rep.changed)} "
          f"changed, {len(rep.missing)} missing ({rep.checked_arrays} arrays decoded)")
    for key, why in rep.changed.items():
        print(f"CHANGED {key}: {why}", file=sys.stderr)
    for key in rep.missing:
        print(f"MISSING {key}: no longer in the store", file=sys.stderr)
    return 0 if rep.ok else EXIT_FAILED


def _checkpoint_dataset_version(spec: str, catalog: Catalog) -> str:
    """The dataset version a checkpoint was trained on: from its run directory's ``run.json``
    (a run directory, or a checkpoint folder inside one), else the catalog's checkpoint id."""
    p = Path(spec)
    if p.exists():
        for d in (p, *p.resolve().parents):
            f = d / "run.json"
            if f.is_file():
                try:
                    vid = json.loads(f.read_text()).get("dataset_version_id")
                except (OSError, ValueError) as exc:
                    raise UserError(f"cannot read {f}: {exc}") from None
                if not vid:
                    raise UserError(f"{f} records no dataset version")
                return str(vid)
        raise UserError(f"{spec} is not in a run directory (no run.json at or above it)")
    ck = catalog.get_checkpoint(spec)
    if ck is None:
        raise UserError(f"no checkpoint {spec!r}: neither a path nor a checkpoint id in the catalog")
    tr = catalog.get_training_run(ck.training_run_id)
    if tr is None:
        raise UserError(f"checkpoint {spec!r}: its training run {ck.training_run_id!r} is not in "
                        "the catalog")
    return str(tr.dataset_version_id)


def cmd_catalog_sync(args: argparse.Namespace) -> int:
    from atlasstore.catalog.sync import sync_catalog

    store = _open_store(args)
    catalog = _open_catalog(args, required=True, create=True)
    try:
        result = sync_catalog(store, catalog, prune=not args.no_prune, rebind=args.rebind)
    finally:
        catalog.close()
    print(f"catalog sync: {result['registered']} sequences registered, {result['removed']} removed, "
          f"{result['runs']} runs")
    for key, why in result["refused"].items():
        print(f"REFUSED {key}: {why}", file=sys.stderr)
    return EXIT_FAILED if result["refused"] else 0


def cmd_catalog_lineage(args: argparse.Namespace) -> int:
    from atlasstore.errors import StoreError

    catalog = _open_catalog(args, required=True)
    try:
        try:
            store = _open_store(args)
        except StoreError as exc:  # lineage needs only the catalog
            print(f"atlas: note: {exc}; showing the catalog as it is", file=sys.stderr)
        else:
            _catch_up_quietly(store, catalog)
        lin = catalog.lineage(args.node_id)
    finally:
        catalog.close()
    if args.json:
        print(json.dumps(lin.to_dict(), indent=2, default=str))
        return 0
    print(format_lineage(lin))
    return 0


def format_lineage(lin: Any) -> str:
    """The upstream lineage as an indented tree from the root, one line per edge."""
    by_src: dict[str, list[Any]] = {}
    for e in lin.edges:
        if e.rel in ("hasArray", "hasTimeStep"):  # part-of: shown from the part upwards
            by_src.setdefault(e.dst, []).append(type(e)(e.dst, "partOf", e.src, e.properties))
        else:
            by_src.setdefault(e.src, []).append(e)

    def label(nid: str) -> str:
        node = lin.nodes.get(nid)
        props = node.properties if node else {}
        extra = {k: props[k] for k in ("kind", "seed", "config_hash", "code_version", "host",
                                       "pattern", "source", "step", "path", "format", "size")
                 if props.get(k) is not None}
        if node is None or node.kind != "Sequence" or extra.get("kind") == "generate":
            extra.pop("kind", None)  # (who wrote a sequence, when not the generator)
        if "config_hash" in extra:
            extra["config_hash"] = str(extra["config_hash"])[:12]
        return nid + (" " + " ".join(f"{k}={v}" for k, v in extra.items()) if extra else "")

    lines = [label(lin.root)]
    seen = {lin.root}

    def walk(nid: str, depth: int) -> None:
        for e in sorted(by_src.get(nid, []), key=lambda e: (e.rel, e.dst)):
            op = e.properties.get("operation") or e.properties.get("member")
            lines.append("  " * depth + f"-{e.rel}-> {label(e.dst)}" + (f"  [{op}]" if op else ""))
            if e.dst not in seen:
                seen.add(e.dst)
                walk(e.dst, depth + 1)

    walk(lin.root, 1)
    return "\n".join(lines)
