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
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import __version__

DEFAULT_STORE = "atlas.zarr"
EXIT_USER_ERROR = 2
EXIT_FAILED = 1
EXIT_BROKEN_PIPE = 128 + 13  # SIGPIPE, as a shell reports `ls | head -1`'s ls


class UserError(Exception):
    """Raised by commands for a clean one-line exit."""


def _user_error_types() -> tuple[type[BaseException], ...]:
    from .catalog.base import CatalogError
    from .physics import EnergyMapError, ThermodynamicViolation
    from .query import QueryError
    from .schemas import SchemaError
    from .store import StoreError

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


def _open_store(args: argparse.Namespace, mode: str = "r") -> Any:
    from .store import AtlasStore

    return AtlasStore.open(args.store, mode=mode)


def _open_catalog(args: argparse.Namespace, required: bool = False, create: bool = False) -> Any:
    """The catalog named by --catalog/$ATLAS_CATALOG, else the SQLite file beside the store.

    Read-only commands never create a catalog file; without ``required`` an absent or empty
    default catalog means "no catalog" (the store is scanned instead).
    """
    from .catalog import open_catalog
    from .locations import default_catalog_location, is_remote

    given = getattr(args, "catalog", None)
    explicit = bool(given)
    spec = str(given) if explicit else default_catalog_location(args.store)
    local = str(spec).removeprefix("sqlite:///")
    is_file = "://" not in str(spec).replace("sqlite:///", "") and str(spec) != "neo4j"
    if is_file and not create and not Path(local).exists():
        if required or explicit:
            raise UserError(f"no catalog at {local}; create it with `atlas catalog sync`")
        return None
    if is_file and create and not explicit and is_remote(args.store):
        Path(local).parent.mkdir(parents=True, exist_ok=True)  # a remote store's, in our cache
    cat = open_catalog(spec)
    if not explicit and not required and cat.count() == 0:
        cat.close()
        return None
    return cat




def _one_line(error: str) -> str:
    """A recorded error as one line (an object-store error names its request and URL)."""
    from .object_storage import explain_text

    return explain_text(error) or error


def _size(text: str) -> int:
    from .chunk_cache import parse_bytes

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
    from .store import AtlasStore

    AtlasStore.create(args.store, exist_ok=args.exist_ok)
    print(f"created atlas store {args.store}")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .generate import Plan, generate, preflight

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
    print(f"run {report.run_id}: {report.written} sequences written, {report.skipped} already "
          f"complete, {len(report.failures)} failed; {report.maps} maps, "
          f"{_fmt_bytes(report.bytes_written)} decoded, {report.seconds:.1f} s, "
          f"{report.maps_per_second:.1f} maps/s ({report.engine})")
    for f in report.failures:
        print(f"FAILED {f.domain}/{f.sequence_id} seed={f.seed}: {_one_line(f.error)}",
              file=sys.stderr)
    for e in report.store_errors:
        print(f"store: {e}", file=sys.stderr)
    for e in report.catalog_errors:
        print(f"catalog not updated ({e}); the store is complete - run `atlas catalog sync` "
              f"when the catalog is back", file=sys.stderr)
    return EXIT_FAILED if report.failures or report.store_errors or report.catalog_errors else 0


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
    from .query import Query

    selector = None
    if catalog is not None:
        from .index import CatalogSelector

        selector = CatalogSelector(catalog)
    return Query(store, domains=tuple(args.domains) if args.domains else None,
                 sequences=tuple(args.sequences) if args.sequences else None,
                 scale=args.scale, fields=tuple(args.fields), window=args.window,
                 stride=args.stride, time_range=args.time_range, region=args.region,
                 entropy=args.entropy, mean=args.mean, variance=args.variance,
                 perturbation=args.perturbation, run_id=args.run, selector=selector)


def cmd_query(args: argparse.Namespace) -> int:
    import numpy as np

    store = _open_store(args)
    catalog = _open_catalog(args)
    try:
        q = _build_query(args, store, catalog)
        n = q.count()
        if args.count:
            print(n)
            return 0
        if n == 0:
            raise UserError("query selects no windows")
        if n > args.limit:
            raise UserError(f"query selects {n} windows, more than --limit {args.limit}; "
                            f"narrow it or raise --limit")
        data = q.to_numpy()
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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .physics import gradient_magnitude

    store = _open_store(args)
    info = store.sequence_info(args.domain, args.sequence)
    if not 0 <= args.t < info["n_steps"]:
        raise UserError(f"--t {args.t} outside 0..{info['n_steps'] - 1}")
    levels = info["levels"]
    fig, axes = plt.subplots(2, len(levels), figsize=(4 * len(levels), 7.5), squeeze=False)
    for j, lvl in enumerate(levels):
        e = store.read(args.domain, args.sequence, lvl, "energy", t=args.t)
        gx = store.read(args.domain, args.sequence, lvl, "grad_x", t=args.t)
        gy = store.read(args.domain, args.sequence, lvl, "grad_y", t=args.t)
        panels = ((e, f"E at {lvl}", "inferno"),
                  (gradient_magnitude(gx, gy), f"|grad E| at {lvl}", "viridis"))
        for i, (img, title, cmap) in enumerate(panels):
            ax = axes[i][j]
            im = ax.imshow(img, cmap=cmap, origin="lower")
            ax.set_title(title)
            ax.set_xticks([])
            ax.set_yticks([])
            fig.colorbar(im, ax=ax, fraction=0.046)
    step = info["steps"][args.t]
    fig.suptitle(f"{args.domain}/{args.sequence} t={args.t}  H={step['entropy']:.3f} nats  "
                 f"sum E={step['sum']:.4g}")
    fig.tight_layout()
    out = Path(args.out or f"{args.domain}_{args.sequence}_t{args.t}.png")
    fig.savefig(out, dpi=80)
    plt.close(fig)
    print(f"wrote {out}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from .audit import audit, summary_rows

    store = _open_store(args)
    catalog = _open_catalog(args)
    try:
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
    from .compat import EnergyAtlasLoader

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


def cmd_catalog_sync(args: argparse.Namespace) -> int:
    from .index import sync_catalog

    store = _open_store(args)
    catalog = _open_catalog(args, required=True, create=True)
    try:
        result = sync_catalog(store, catalog, prune=not args.no_prune)
    finally:
        catalog.close()
    print(f"catalog sync: {result['registered']} sequences registered, {result['removed']} removed, "
          f"{result['runs']} runs")
    for key, why in result["refused"].items():
        print(f"REFUSED {key}: {why}", file=sys.stderr)
    return EXIT_FAILED if result["refused"] else 0


def cmd_catalog_lineage(args: argparse.Namespace) -> int:
    catalog = _open_catalog(args, required=True)
    try:
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
        extra = {k: props[k] for k in ("seed", "config_hash", "code_version", "host", "pattern",
                                       "step", "path") if k in props}
        if "config_hash" in extra:
            extra["config_hash"] = str(extra["config_hash"])[:12]
        return nid + (" " + " ".join(f"{k}={v}" for k, v in extra.items()) if extra else "")

    lines = [label(lin.root)]
    seen = {lin.root}

    def walk(nid: str, depth: int) -> None:
        for e in sorted(by_src.get(nid, []), key=lambda e: (e.rel, e.dst)):
            op = e.properties.get("operation")
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
                          "<store>.catalog.sqlite where a catalog is needed")

    p = _Parser(prog="atlas", description="Generate, store, query and stream energy maps.")
    p.add_argument("--version", action="version", version=f"atlasstore {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of unexpected errors")
    p.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="local cache folder: the default catalogs of remote stores and the disk "
                        "cache of their chunks (default $ATLAS_CACHE_DIR or ~/.cache/atlasstore)")
    p.add_argument("--cache-bytes", type=_size, default=None, metavar="SIZE",
                   help="bound of the disk cache of remote stores' chunks, e.g. 20GiB; 0 turns "
                        "it off (default $ATLAS_CACHE_BYTES or 10GiB)")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    s = sub.add_parser("init", parents=[common], help="create an empty atlas store")
    s.add_argument("--exist-ok", action="store_true", help="succeed if the store already exists")
    s.set_defaults(func=cmd_init)

    s = sub.add_parser("generate", parents=[common, cat],
                       help="generate synthetic sequences into the store (Dask-parallel, resumable)")
    from .synth import DEFAULT_DOMAINS

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

    s = sub.add_parser("ls", parents=[common], help="list domains, or the sequences of a domain")
    s.add_argument("domain", nargs="?", help="list this domain's sequences (default: list domains)")
    s.set_defaults(func=cmd_ls)

    s = sub.add_parser("query", parents=[common, cat], help="select windows and save them as .npz")
    s.add_argument("--domains", type=_csv, default=None,
                   help="comma-separated domains (default: every domain of the store)")
    s.add_argument("--sequences", type=_csv, default=None, help="sequence ids or domain/id")
    s.add_argument("--scale", type=int, default=256,
                   help="pyramid level to read, by the short side of its maps: 256, 128 or 64 "
                        "(default 256)")
    s.add_argument("--fields", type=_csv, default=["energy"],
                   help="comma-separated fields: energy, grad_x, grad_y (default energy)")
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
    s.set_defaults(func=cmd_audit)

    s = sub.add_parser("stats", parents=[common], help="per-domain statistics")
    s.add_argument("domain", nargs="?", help="one domain (default: every domain)")
    s.add_argument("--json", action="store_true", help="print the statistics as JSON")
    s.set_defaults(func=cmd_stats)

    s = sub.add_parser("catalog", help="catalog maintenance and lineage")
    csub = s.add_subparsers(dest="catalog_command", required=True, metavar="SUBCOMMAND")
    c = csub.add_parser("sync", parents=[common, cat], help="rebuild/reconcile the catalog from the store")
    c.add_argument("--no-prune", action="store_true", help="keep catalog entries missing from the store")
    c.set_defaults(func=cmd_catalog_sync)
    c = csub.add_parser("lineage", parents=[common, cat], help="print the upstream lineage of a node")
    c.add_argument("node_id", help="e.g. plasma_physics/seq-00000/64/grad_x, a run id, a checkpoint id")
    c.add_argument("--json", action="store_true", help="print nodes and edges as JSON")
    c.set_defaults(func=cmd_catalog_lineage)

    _add_nvp_commands(sub, common, cat)
    return p


def _add_nvp_commands(sub: Any, common: argparse.ArgumentParser, cat: argparse.ArgumentParser) -> None:
    """`atlas train` / `atlas evaluate`, when the NVP module is present."""
    try:
        from .nvp import cli as nvp_cli
    except ImportError:
        return
    nvp_cli.add_commands(sub, common, cat)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    # the cache settings reach every reader (and the NVP commands) through the environment
    if args.cache_dir is not None:
        os.environ["ATLAS_CACHE_DIR"] = str(Path(args.cache_dir).expanduser().resolve())
    if args.cache_bytes is not None:
        os.environ["ATLAS_CACHE_BYTES"] = str(args.cache_bytes)
    try:
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # here, not at exit: a reader that went away surfaces below
        return code
    except KeyboardInterrupt as exc:
        gen = sys.modules.get("atlasstore.generate")  # only generate raises the detailed one
        if gen is not None and isinstance(exc, gen.GenerationInterrupted):
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
        from .object_storage import explain, is_storage_error

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

if __name__ == "__main__":
    sys.exit(main())
