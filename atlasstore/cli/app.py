"""The ``atlas`` command. The only module that prints or exits.

User errors (bad input, missing data, unreachable services) print one line ``atlas: error: ...``
and exit 2; ``--debug`` shows the traceback of anything unexpected.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import json
import os
import select
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from atlasstore._version import __version__
from atlasstore.errors import UserError

DEFAULT_STORE = "atlas.zarr"
EXIT_USER_ERROR = 2
EXIT_FAILED = 1
EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE, as a shell reports `ls | head -1`'s ls


#: Optional packages and the extra that installs each (pyproject.toml's optional-dependencies):
#: a command that needs a missing one says which extra to install instead of failing inside.
EXTRA_OF = {"matplotlib": "plots", "neo4j": "neo4j", "jax": "stream", "jaxlib": "stream",
            "flax": "nvp", "optax": "nvp", "orbax": "nvp", "tensorboardX": "nvp",
            "h5py": "hdf5", "obstore": "s3", "boto3": "s3", "botocore": "s3"}


def missing_extra(exc: BaseException) -> tuple[str, str] | None:
    """(module, extra) when ``exc`` is a missing optional package, else None."""
    if not isinstance(exc, ModuleNotFoundError) or not exc.name:
        return None
    top = exc.name.partition(".")[0]
    return (top, EXTRA_OF[top]) if top in EXTRA_OF else None


def _user_error_types() -> tuple[type[BaseException], ...]:
    from atlasstore.errors import (
        CatalogError,
        EnergyMapError,
        QueryError,
        SchemaError,
        StoreError,
        ThermodynamicViolation,
    )

    return (UserError, StoreError, QueryError, SchemaError, EnergyMapError, ThermodynamicViolation,
            CatalogError, ValueError, KeyError, FileNotFoundError, PermissionError)


# --------------------------------------------------------------------------- argument helpers

def _range(text: str) -> tuple[float, float]:
    try:
        lo, hi = text.split(":")
        return float(lo), float(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LO:HI, got {text!r}") from None


def _int_range(text: str) -> tuple[int, int]:
    try:
        lo, hi = text.split(":")
        return int(lo), int(hi)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected START:STOP (integers), got {text!r}") from None


def _region(text: str) -> tuple[int, int, int, int]:
    try:
        ys, xs = text.split(",")
        y0, y1 = (int(v) for v in ys.split(":"))
        x0, x1 = (int(v) for v in xs.split(":"))
        return y0, y1, x0, x1
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected Y0:Y1,X0:X1, got {text!r}") from None


def _csv(text: str) -> list[str]:
    return [t for t in (s.strip() for s in text.replace(",", " ").split()) if t]


def _scales(text: str) -> list[int]:
    try:
        return [int(s) for s in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected scales like 256,128,64, got {text!r}") from None


def cache_settings(args: argparse.Namespace) -> Any:
    """The local cache settings of ``--cache-dir``/``--cache-bytes``, passed down to every store
    the command opens (None: the library's default, the environment's)."""
    if args.cache_dir is None and args.cache_bytes is None:
        return None
    from atlasstore.io.cache_settings import CacheSettings

    return CacheSettings.from_options(args.cache_dir, args.cache_bytes)


def _open_store(args: argparse.Namespace, mode: str = "r") -> Any:
    from atlasstore.store.atlas_store import AtlasStore

    return AtlasStore.open(args.store, mode=mode, cache=getattr(args, "cache", None))


def _open_catalog(args: argparse.Namespace, required: bool = False, create: bool = False) -> Any:
    """The catalog named by --catalog/$ATLAS_CATALOG, else the SQLite file beside the store.

    Read-only commands never create a catalog file; without ``required`` an absent or empty
    default catalog means "no catalog" (the store is scanned instead).
    """
    from atlasstore.catalog import open_catalog
    from atlasstore.errors import CatalogError
    from atlasstore.io.locations import default_catalog_location, is_remote

    given = getattr(args, "catalog", None)
    explicit = bool(given)
    cache = getattr(args, "cache", None)
    spec = str(given) if explicit else default_catalog_location(args.store, cache and cache.root)
    local = str(spec).removeprefix("sqlite:///")
    is_file = "://" not in str(spec).replace("sqlite:///", "") and str(spec) != "neo4j"
    if is_file and not create and not Path(local).exists():
        if required or explicit:
            raise UserError(f"no catalog at {local}; create it with `atlas catalog sync`")
        return None
    if is_file and create and not explicit and is_remote(args.store):
        Path(local).parent.mkdir(parents=True, exist_ok=True)  # a remote store's, in our cache
    try:
        cat = open_catalog(spec)
    except CatalogError:
        # a catalog file we may read but not write (another user's): queries still use it,
        # answering what it has not applied from the store
        if not (is_file and Path(local).is_file() and not os.access(local, os.W_OK)):
            raise
        cat = open_catalog(str(spec), read_only=True)
    if not explicit and not required and cat.count() == 0 and cat.store_sync() is None:
        cat.close()
        return None
    return cat


def _note(view: Any) -> None:
    """How a catalog answered (when it did not simply answer), on stderr."""
    if view is not None and view.note:
        print(f"atlas: note: {view.note}", file=sys.stderr)


def _one_line(error: str) -> str:
    """A recorded error as one line (an object-store error names its request and URL)."""
    from atlasstore.io.object_storage import explain_text

    return explain_text(error) or error


def _byte_size(text: str) -> int:
    from atlasstore.io.cache_settings import parse_bytes

    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} TiB"


def _stdout_closed() -> bool:
    """True when stdout is a pipe whose reader has gone (poll reports POLLERR)."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in poller.poll(0))
    except (OSError, ValueError, AttributeError):
        return False


# --------------------------------------------------------------------------- commands

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
    preflight(args.store, plan, workers=args.workers, scheduler=args.scheduler)
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
        report = generate(args.store, plan, workers=args.workers, scheduler=args.scheduler,
                          catalog=catalog, progress=progress, dask_logs=args.debug)
    finally:
        bar.close()
        if catalog is not None:
            catalog.close()
    return _run_summary(report, f"{_fmt_bytes(report.bytes_written)} decoded",
                        lambda f: f" seed={f.seed}: ")


def _run_summary(report: Any, volume: str, label: Callable[[Any], str]) -> int:
    """The summary line of a run, a FAILED line per failure (``label(failure)`` between the
    sequence and its error), store and catalog problems; the exit status."""
    print(f"run {report.run_id}: {report.written} sequences written, {report.skipped} already "
          f"complete, {len(report.failures)} failed; {report.maps} maps, {volume}, "
          f"{report.seconds:.1f} s, {report.maps_per_second:.1f} maps/s ({report.engine})")
    for f in report.failures:
        print(f"FAILED {f.domain}/{f.sequence_id}{label(f)}{_one_line(f.error)}", file=sys.stderr)
    for e in report.store_errors:
        print(f"store: {e}", file=sys.stderr)
    for e in report.catalog_errors:
        print(f"catalog not updated ({e}); the store is complete - run `atlas catalog sync` "
              f"when the catalog is back", file=sys.stderr)
    return EXIT_FAILED if report.failures or report.store_errors or report.catalog_errors else 0


def _pairs(text: str) -> dict[str, str]:
    """'a=x,b=y' -> {'a': 'x', 'b': 'y'}."""
    out = {}
    for item in _csv(text):
        k, sep, v = item.partition("=")
        if not sep or not k or not v:
            raise argparse.ArgumentTypeError(f"expected NAME=VALUE[,NAME=VALUE...], got {text!r}")
        out[k] = v
    return out


def _int_pairs(text: str) -> dict[str, int]:
    try:
        return {k: int(v) for k, v in _pairs(text).items()}
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected DIM=INDEX[,DIM=INDEX...], got {text!r}") from None


def _size(text: str) -> tuple[int, int]:
    try:
        ny, nx = text.lower().split("x")
        return int(ny), int(nx)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected NYxNX (rows x columns), e.g. 128x384, got "
                                         f"{text!r}") from None


def cmd_import(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from atlasstore.runs.ingest import ImportOptions, plan_npy, plan_well, plan_xarray, run_import

    options = ImportOptions(kind=args.kind, levels=tuple(args.levels) if args.levels else None,
                            smallest=args.min_level, crop=args.crop, pad=args.pad,
                            pad_mode=args.pad_mode)
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

    preflight_store(args.store, workers=args.workers, scheduler=args.scheduler)
    catalog = None if args.no_catalog else _open_catalog(args, required=True, create=True)
    bar = tqdm(total=len(plan.units) + len(plan.failures), unit="seq", desc="import",
               disable=args.quiet or not sys.stderr.isatty() and not args.progress,
               file=sys.stderr)

    def progress(_result: dict[str, Any]) -> None:
        bar.update(1)

    try:
        report = run_import(args.store, plan, workers=args.workers, scheduler=args.scheduler,
                            catalog=catalog, progress=progress, dask_logs=args.debug)
    finally:
        bar.close()
        if catalog is not None:
            catalog.close()
    # the error names the file it comes from
    return _run_summary(report, f"{_fmt_bytes(report.source_bytes)} read", lambda f: ": ")


def cmd_ls(args: argparse.Namespace) -> int:
    store = _open_store(args)
    if args.domain:
        for seq in store.sequences(args.domain):
            info = store.sequence_info(args.domain, seq)
            gen = info.get("generation", {})
            print(f"{seq}\t{info['n_steps']} steps\t{info['shape'][0]}x{info['shape'][1]}\t"
                  f"levels {','.join(map(str, info['levels']))}\tseed {gen.get('seed')}")
        incomplete = (set(store.sequences(args.domain, include_incomplete=True))
                      - set(store.sequences(args.domain)))
        for seq in sorted(incomplete):
            print(f"{seq}\t(incomplete: not visible to queries)")
    else:
        for d in store.domains():
            print(f"{d}\t{len(store.sequences(d))} sequences")
    return 0


def _build_query(args: argparse.Namespace, store: Any, catalog: Any) -> Any:
    from atlasstore.query import Query

    selector = None
    if catalog is not None:
        from atlasstore.catalog.selector import CatalogSelector

        selector = CatalogSelector(catalog)
    return Query(store, domains=tuple(args.domains) if args.domains else None,
                 sequences=tuple(args.sequences) if args.sequences else None,
                 scale=args.scale, fields=None if args.fields is None else tuple(args.fields),
                 window=args.window,
                 stride=args.stride, time_range=args.time_range, region=args.region,
                 entropy=args.entropy, mean=args.mean, variance=args.variance,
                 perturbation=args.perturbation, run_id=args.run, selector=selector)


def cmd_query(args: argparse.Namespace) -> int:
    import numpy as np

    from atlasstore.errors import NotFound

    store = _open_store(args)
    catalog = None if args.no_catalog else _open_catalog(args)
    try:
        q = _build_query(args, store, catalog)
        n = q.count()
        _note(getattr(q.selector, "view", None))
        if args.count:
            print(n)
            return 0
        if n == 0:
            raise UserError("query selects no windows")
        if n > args.limit:
            raise UserError(f"query selects {n} windows, more than --limit {args.limit}; "
                            f"narrow it or raise --limit")
        try:
            data = q.to_numpy()
        except NotFound as exc:
            if catalog is None:
                raise
            raise UserError(f"{exc} (the store changed while reading, or the catalog does not "
                            "match it: run `atlas catalog sync`, or query with --no-catalog)"
                            ) from None
    finally:
        if catalog is not None:
            catalog.close()
    if args.out:
        out = Path(args.out)
        tmp = out.with_name(out.name + ".partial.npz")
        np.savez(tmp, **{k: v for k, v in data.items() if k != "ids"}, ids=np.array(data["ids"]))
        os.replace(tmp, out)
        shapes = ', '.join(f'{k}{tuple(v.shape)}' for k, v in data.items() if k != 'ids')
        print(f"{n} windows -> {out} ({shapes})")
    else:
        for wid in data["ids"]:
            print(wid)
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from atlasstore.physics.fields import gradient_magnitude
    from atlasstore.records import primary_field

    store = _open_store(args)
    info = store.sequence_info(args.domain, args.sequence)
    name = primary_field(info)  # energy, or an imported field's own name
    if not 0 <= args.t < info["n_steps"]:
        raise UserError(f"--t {args.t} outside 0..{info['n_steps'] - 1}")
    # after the checks: a bad sequence or step is named even where the plots extra is missing
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    levels = info["levels"]
    fig, axes = plt.subplots(2, len(levels), figsize=(4 * len(levels), 7.5), squeeze=False)
    for j, lvl in enumerate(levels):
        e = store.read(args.domain, args.sequence, lvl, name, t=args.t)
        gx = store.read(args.domain, args.sequence, lvl, "grad_x", t=args.t)
        gy = store.read(args.domain, args.sequence, lvl, "grad_y", t=args.t)
        sym = "E" if name == "energy" else name
        panels = ((e, f"{sym} at {lvl}", "inferno"),
                  (gradient_magnitude(gx, gy), f"|grad {sym}| at {lvl}", "viridis"))
        for i, (img, title, cmap) in enumerate(panels):
            ax = axes[i][j]
            im = ax.imshow(img, cmap=cmap, origin="lower")
            ax.set_title(title)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, fraction=0.046)
    step = info["steps"][args.t]
    stats = (f"H={step['entropy']:.3f} nats  sum={step['sum']:.4g}" if "entropy" in step
             else f"mean={step['mean']:.4g}")  # an intensive field has no entropy
    fig.suptitle(f"{args.domain}/{args.sequence} t={args.t}  {stats}")
    fig.tight_layout()
    out = Path(args.out or f"{args.domain}_{args.sequence}_t{args.t}.png")
    fig.savefig(out, dpi=80)
    plt.close(fig)
    print(f"wrote {out}")
    return 0


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


def cmd_stats(args: argparse.Namespace) -> int:
    from atlasstore.compat import EnergyAtlasLoader

    store = _open_store(args)
    loader = EnergyAtlasLoader(store)
    domains = [args.domain] if args.domain else store.domains()
    stats = [loader.get_domain_stats(d) for d in domains if store.sequences(d)]
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    for s in stats:
        print(f"{s['domain']}: {s['n_sequences']} sequences, {s['n_maps']} maps, mean E "
              f"{s['energy_mean']:.4f}, var {s['energy_variance']:.4f}, entropy "
              f"{s['entropy_mean']:.4f} [{s['entropy_min']:.4f}, {s['entropy_max']:.4f}], "
              f"{_fmt_bytes(s['bytes_on_disk'])}")
    return 0


def _catch_up_quietly(store: Any, catalog: Any) -> None:
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


def _checkpoint_dataset_version(spec: str, catalog: Any) -> str:
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


# --------------------------------------------------------------------------- parser

class _Parser(argparse.ArgumentParser):
    """argparse with a "did you mean" for a mistyped command."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        if isinstance(action, argparse._SubParsersAction) and value not in action.choices:
            prefix = self.prog.partition(" ")[2]
            name = f"{prefix} {value}".strip()
            close = difflib.get_close_matches(value, list(action.choices), n=1)
            hint = (f"did you mean {f'{prefix} {close[0]}'.strip()!r}?" if close
                    else f"commands: {', '.join(action.choices)}")
            self.exit(EXIT_USER_ERROR, f"atlas: error: unknown command {name!r}; {hint}\n")
        super()._check_value(action, value)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument("--store", default=os.environ.get("ATLAS_STORE", DEFAULT_STORE),
                        help="atlas store: a path, s3://bucket/prefix (endpoint and credentials from the "
                             "standard AWS settings) or another fsspec URL (default: $ATLAS_STORE "
                             "or ./atlas.zarr)")
    cat = _Parser(add_help=False)
    cat.add_argument("--catalog", default=os.environ.get("ATLAS_CATALOG"),
                     help="catalog: a SQLite path, sqlite:///path, or neo4j (URI and credentials "
                          "from NEO4J_URI/NEO4J_USER/NEO4J_PASSWORD); default $ATLAS_CATALOG or "
                          "<store>.catalog.sqlite beside a local store (a remote store's in the "
                          "cache folder's catalogs/) where a catalog is needed")

    p = _Parser(prog="atlas", description="Generate, store, query and stream energy maps.")
    p.add_argument("--version", action="version", version=f"atlasstore {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="local cache folder: the default catalogs of remote stores and the disk "
                        "cache of their chunks (default $ATLAS_CACHE_DIR or ~/.cache/atlasstore)")
    p.add_argument("--cache-bytes", type=_byte_size, default=None, metavar="SIZE",
                   help="bound of the disk cache of remote stores' chunks, e.g. 20GiB; 0 turns "
                        "it off (default $ATLAS_CACHE_BYTES or 10GiB)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("init", parents=[common], help="create an empty atlas store")
    s.add_argument("--exist-ok", action="store_true", help="succeed if the store already exists")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("generate", parents=[common, cat],
                       help="generate synthetic sequences into the store (Dask-parallel, resumable)")
    from atlasstore.physics.synth import DEFAULT_DOMAINS

    s.add_argument("--domains", type=_csv, default=list(DEFAULT_DOMAINS),
                   help="comma-separated domain presets (default: the five defaults)")
    s.add_argument("--sequences", type=int, default=5, help="sequences per domain (default 5)")
    s.add_argument("--steps", type=int, default=None, help="steps per sequence (default: preset's, 10)")
    s.add_argument("--scales", type=_scales, default=None, help="levels to store, e.g. 256,128,64")
    s.add_argument("--seed", type=int, default=0, help="run seed; sequence seeds derive from it")
    s.add_argument("--start-index", type=int, default=0,
                   help="index of the first sequence (append to a domain without clashing)")
    s.add_argument("--workers", type=int, default=None, help="local Dask workers (default: cores)")
    s.add_argument("--scheduler", default=None,
                   help="'processes' (default), 'threads', 'serial', or a Dask scheduler address")
    s.add_argument("--no-catalog", action="store_true", help="do not register in a catalog")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--progress", action="store_true", help="progress bar even when not a TTY")
    s.set_defaults(func=cmd_generate)

    _add_import_command(sub, common, cat)

    s = sub.add_parser("ls", parents=[common], help="list domains, or the sequences of a domain")
    s.add_argument("domain", nargs="?", help="list this domain's sequences (default: list domains)")
    s.set_defaults(func=cmd_ls)

    s = sub.add_parser("query", parents=[common, cat], help="select windows and save them as .npz")
    s.add_argument("--domains", type=_csv, default=None,
                   help="comma-separated domains (default: every domain of the store)")
    s.add_argument("--sequences", type=_csv, default=None, help="sequence ids or domain/id")
    s.add_argument("--scale", type=int, default=None,
                   help="pyramid level to read, by the short side of its maps (256, 128 or 64 for "
                        "generated data; any stored level; default: the full resolution of the "
                        "selected sequences)")
    s.add_argument("--fields", type=_csv, default=None,
                   help="comma-separated fields: the primary field (energy, or an imported "
                        "field's name), grad_x, grad_y (default: the primary field)")
    s.add_argument("--window", type=int, default=1, help="time steps per window (default 1)")
    s.add_argument("--stride", type=int, default=1,
                   help="steps between the starts of successive windows (default 1)")
    s.add_argument("--time-range", type=_int_range, default=None, metavar="START:STOP",
                   help="only windows inside steps START..STOP-1")
    s.add_argument("--region", type=_region, default=None, metavar="Y0:Y1,X0:X1",
                   help="crop every window to rows Y0..Y1-1 and columns X0..X1-1 (pixels of "
                        "--scale)")
    s.add_argument("--entropy", type=_range, default=None, metavar="LO:HI",
                   help="only windows whose every step has a Shannon entropy (nats) in LO..HI")
    s.add_argument("--mean", type=_range, default=None, metavar="LO:HI",
                   help="only windows whose every step has a mean energy in LO..HI")
    s.add_argument("--variance", type=_range, default=None, metavar="LO:HI",
                   help="only windows whose every step has an energy variance in LO..HI")
    s.add_argument("--perturbation", default=None,
                   help="only sequences with a step perturbed this way (e.g. thermal_blur)")
    s.add_argument("--run", default=None, help="only sequences of this generation run id")
    s.add_argument("--count", action="store_true", help="print the number of windows only")
    s.add_argument("--no-catalog", action="store_true",
                   help="select by scanning the store, without the catalog (the answer is the "
                        "same; the catalog is faster on large stores)")
    s.add_argument("--limit", type=int, default=10000, help="refuse to load more windows (default 10000)")
    s.add_argument("--out", default=None, help="write the windows to this .npz file")
    s.set_defaults(func=cmd_query)

    s = sub.add_parser("show", parents=[common], help="PNG quicklook: every level and |grad E|")
    s.add_argument("domain", help="domain of the sequence")
    s.add_argument("sequence", help="sequence id, e.g. seq-00000")
    s.add_argument("--t", type=int, default=0, help="time step to show (default 0)")
    s.add_argument("--out", default=None,
                   help="PNG file to write (default: <domain>_<sequence>_t<T>.png)")
    s.set_defaults(func=cmd_show)

    s = sub.add_parser("audit", parents=[common, cat],
                       help="verify checksums and invariants; report per domain; catalog drift")
    s.add_argument("--domains", type=_csv, default=None,
                   help="comma-separated domains to audit (default: all)")
    s.add_argument("--quick", action="store_true", help="skip decoding arrays")
    s.add_argument("--dataset-version", default=None, metavar="ID",
                   help="instead: check that the data this dataset version pinned is still in "
                        "the store, unchanged (exit 1 if not)")
    s.add_argument("--checkpoint", default=None, metavar="PATH_OR_ID",
                   help="instead: the same for the dataset version a checkpoint was trained on "
                        "(a run directory or checkpoint folder, or a catalog checkpoint id)")
    s.set_defaults(func=cmd_audit)

    s = sub.add_parser("stats", parents=[common], help="per-domain statistics")
    s.add_argument("domain", nargs="?", help="one domain (default: every domain)")
    s.add_argument("--json", action="store_true", help="print the statistics as JSON")
    s.set_defaults(func=cmd_stats)

    s = sub.add_parser("catalog", help="catalog maintenance and lineage")
    csub = s.add_subparsers(dest="catalog_command", required=True, metavar="SUBCOMMAND")
    c = csub.add_parser("sync", parents=[common, cat], help="rebuild/reconcile the catalog from the store")
    c.add_argument("--no-prune", action="store_true",
                   help="keep catalog entries the store never had (deletes the store logged "
                        "are applied all the same)")
    c.add_argument("--rebind", action="store_true",
                   help="take over a catalog built for another store (its sequences are "
                        "replaced by this store's; training lineage stays)")
    c.set_defaults(func=cmd_catalog_sync)
    c = csub.add_parser("lineage", parents=[common, cat], help="print the upstream lineage of a node")
    c.add_argument("node_id", help="e.g. plasma_physics/seq-00000/64/grad_x, a run id, a checkpoint id")
    c.add_argument("--json", action="store_true", help="print nodes and edges as JSON")
    c.set_defaults(func=cmd_catalog_lineage)

    _add_nvp_commands(sub, common, cat)
    return p


def _add_import_command(sub: Any, common: argparse.ArgumentParser,
                        cat: argparse.ArgumentParser) -> None:
    """`atlas import npy|well|xarray`: bring your own data (atlasstore.runs.ingest)."""
    shape = _Parser(add_help=False)
    g = shape.add_argument_group("shaping (every source)")
    g.add_argument("--kind", choices=("extensive", "intensive"), default=None,
                   help="the field's kind: extensive (per-pixel content: block-sum pyramid, "
                        "non-negative, entropy) or intensive (mean pyramid, any sign); default: "
                        "extensive for energy and *_energy, else intensive")
    g.add_argument("--levels", type=_scales, default=None,
                   help="pyramid levels by short side, the full resolution first, e.g. 512,256 "
                        "(default: the native size and its halvings down to --min-level)")
    g.add_argument("--min-level", type=int, default=64,
                   help="smallest short side the default pyramid halves down to (default 64)")
    g.add_argument("--crop", type=_size, default=None, metavar="NYxNX",
                   help="keep the first NY rows and NX columns of every map")
    g.add_argument("--pad", type=_size, default=None, metavar="NYxNX",
                   help="pad every map at its far end to NY rows and NX columns")
    g.add_argument("--pad-mode", choices=("zero", "edge", "reflect"), default=None,
                   help="what --pad fills with (default: zero for extensive fields, edge for "
                        "intensive ones)")
    e = shape.add_argument_group("engine")
    e.add_argument("--workers", type=int, default=None, help="local Dask workers (default: cores)")
    e.add_argument("--scheduler", default=None,
                   help="'processes' (default), 'threads', 'serial', or a Dask scheduler address")
    e.add_argument("--no-catalog", action="store_true", help="do not register in a catalog")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--progress", action="store_true", help="progress bar even when not a TTY")

    s = sub.add_parser("import", help="import your own data: the predecessor's .npy folders, "
                                      "The Well's HDF5 files, any xarray dataset")
    isub = s.add_subparsers(dest="source", required=True, metavar="SOURCE")
    parents = [common, cat, shape]
    i = isub.add_parser("npy", parents=parents,
                        help="a folder of .npy maps with JSON sidecars (the predecessor's layout)")
    i.add_argument("dir", help="the folder")
    i.add_argument("--pattern", default="{domain}/{sequence}_t{t}.npy",
                   help="relative path of every map with fields {domain}, {sequence} and {t} "
                        "(default '{domain}/{sequence}_t{t}.npy'); '*' matches within a name")
    i.add_argument("--domain", default=None, help="the domain, if the pattern has no {domain}")
    i.add_argument("--sequence", default=None,
                   help="the sequence id, if the pattern has no {sequence}")
    i.add_argument("--sidecar-keys", type=_pairs, default=None, metavar="FIELD=KEY,...",
                   help="take domain, sequence or t from these sidecar keys, e.g. "
                        "sequence=sequence_id,t=time_step")
    i.add_argument("--no-sidecars", action="store_true", help="maps without JSON sidecars")
    i.add_argument("--inventory", default=None,
                   help="the predecessor's catalog.json (default: DIR/catalog.json if present); "
                        "files must match its checksums")
    i.add_argument("--field", default="energy", help="name of the stored field (default energy)")
    i.set_defaults(func=cmd_import)
    i = isub.add_parser("well", parents=parents,
                        help="HDF5 files in The Well's format, one sequence per trajectory")
    i.add_argument("files", nargs="+", help="the HDF5 files")
    what = i.add_mutually_exclusive_group(required=True)
    what.add_argument("--field", default=None,
                      help="a t0 field (e.g. density) or a t1 component (e.g. velocity_x)")
    what.add_argument("--derive", choices=("kinetic_energy",), default=None,
                      help="a derived energy density: kinetic_energy = 1/2 rho |u|^2 (1/2 |u|^2 "
                           "where the file has no density)")
    i.add_argument("--domain", default=None, help="the domain (default: the file's dataset_name)")
    i.add_argument("--density", default="density", help="density field for --derive (default density)")
    i.add_argument("--velocity", default="velocity",
                   help="velocity field for --derive (default velocity)")
    i.set_defaults(func=cmd_import)
    i = isub.add_parser("xarray", parents=parents,
                        help="a variable of anything xarray opens (NetCDF, Zarr, HDF5)")
    i.add_argument("path", help="the file or Zarr store")
    i.add_argument("--var", required=True, help="the variable to import")
    i.add_argument("--dims", type=_pairs, default=None, metavar="time=T,y=Y,x=X",
                   help="which of the variable's dimensions are time, y and x (default: "
                        "dimensions named time, y, x)")
    i.add_argument("--sequence-dim", default=None,
                   help="a dimension whose every index is its own sequence")
    i.add_argument("--isel", type=_int_pairs, default=None, metavar="DIM=INDEX,...",
                   help="fix other dimensions at an index")
    i.add_argument("--domain", default=None, help="the domain (default: the file's name)")
    i.add_argument("--sequence", default=None,
                   help="the sequence id without --sequence-dim (default: the variable's name)")
    i.add_argument("--field", default=None, help="name of the stored field (default: --var)")
    i.add_argument("--engine", default=None, help="xarray's engine (default: by the file)")
    i.set_defaults(func=cmd_import)


def _add_nvp_commands(sub: Any, common: argparse.ArgumentParser, cat: argparse.ArgumentParser) -> None:
    """`atlas train` / `atlas evaluate`, when the NVP module is present."""
    try:
        from atlasstore.nvp import cli as nvp_cli
    except ImportError:
        return
    nvp_cli.add_commands(sub, common, cat)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.cache = cache_settings(args)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit: a reader that went away surfaces below
        return code
    except KeyboardInterrupt as exc:
        drv = sys.modules.get("atlasstore.runs.engine")  # only runs raise the detailed one
        if drv is not None and isinstance(exc, drv.RunInterrupted):
            print(f"atlas: interrupted: {exc.complete} of {exc.total} sequences of {exc.run_id} "
                  f"are complete; run the same command again to resume", file=sys.stderr)
        else:
            print("atlas: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the one place errors become exit codes (re-raised with --debug)
        if isinstance(exc, BrokenPipeError) and _stdout_closed():
            # like ls or git when `| head` has read enough: stop quietly, with the status of a
            # process killed by SIGPIPE; stdout goes to /dev/null so the flush at exit is quiet
            with contextlib.suppress(OSError, ValueError):
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return EXIT_BROKEN_PIPE
        if (missing := missing_extra(exc)) is not None and not args.debug:
            module, extra = missing
            print(f"atlas: error: `atlas {args.command}` needs {module}, which is not installed: "
                  f"pip install 'atlasstore[{extra}]'", file=sys.stderr)
            return EXIT_USER_ERROR
        from atlasstore.io.object_storage import explain, is_storage_error

        if is_storage_error(exc) and not args.debug:  # the service failed or refused a request
            print(f"atlas: error: {explain(exc)}", file=sys.stderr)
            return EXIT_USER_ERROR
        if isinstance(exc, _user_error_types()) and not args.debug:
            msg = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            print(f"atlas: error: {msg}", file=sys.stderr)
            return EXIT_USER_ERROR
        if args.debug:
            raise
        print(f"atlas: internal error: {type(exc).__name__}: {exc} (re-run with --debug for the "
              f"traceback)", file=sys.stderr)
        return EXIT_FAILED
