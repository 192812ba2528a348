"""The ``atlas`` parser: every command, option and help text (the docs' CLI reference is
generated from it)."""

from __future__ import annotations

import argparse
import difflib
import os
from typing import Any

from atlasstore._version import __version__
from atlasstore.cli.catalog import cmd_audit, cmd_catalog_lineage, cmd_catalog_sync
from atlasstore.cli.inspect import cmd_ls, cmd_query, cmd_show, cmd_stats
from atlasstore.cli.options import (
    DEFAULT_STORE,
    EXIT_USER_ERROR,
    _byte_size,
    _csv,
    _int_pairs,
    _int_range,
    _pairs,
    _range,
    _region,
    _scales,
    _size,
)
from atlasstore.cli.write import cmd_generate, cmd_import, cmd_init


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

    _add_generate(sub, common, cat)
    _add_import_command(sub, common, cat)
    _add_ls(sub, common)
    _add_query(sub, common, cat)
    _add_show_audit_stats(sub, common, cat)
    _add_catalog(sub, common, cat)
    _add_nvp_commands(sub, common, cat)
    return p


def _add_generate(sub: Any, common: argparse.ArgumentParser, cat: argparse.ArgumentParser) -> None:
    """`atlas generate`."""
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
                   help="'serial', 'threads', 'processes' or a Dask scheduler address (default: "
                        "serial for up to 32 default-sized sequences, else processes)")
    s.add_argument("--no-catalog", action="store_true", help="do not register in a catalog")
    s.add_argument("--quiet", action="store_true", help="no progress bar")
    s.add_argument("--progress", action="store_true", help="progress bar even when not a TTY")
    s.set_defaults(func=cmd_generate)


def _add_ls(sub: Any, common: argparse.ArgumentParser) -> None:
    """`atlas ls`."""
    s = sub.add_parser("ls", parents=[common], help="list domains, or the sequences of a domain")
    s.add_argument("domain", nargs="?", help="list this domain's sequences (default: list domains)")
    s.add_argument("-l", "--long", action="store_true",
                   help="details: each sequence's steps, grid, levels, field, spans and origin "
                        "(a domain's fields and origins), marking incomplete sequences; reads "
                        "every sequence document listed (without it: names and counts from one "
                        "listing per domain, writes in progress included)")
    s.set_defaults(func=cmd_ls)


def _add_query(sub: Any, common: argparse.ArgumentParser, cat: argparse.ArgumentParser) -> None:
    """`atlas query`."""
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


def _add_show_audit_stats(sub: Any, common: argparse.ArgumentParser, cat: argparse.ArgumentParser) -> None:
    """`atlas show`, `atlas audit` and `atlas stats`."""
    s = sub.add_parser("show", parents=[common],
                       help="PNG quicklook: every stored level of a step and its gradient magnitude")
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

    s = sub.add_parser("stats", parents=[common], help="per-domain statistics of each field, in its unit")
    s.add_argument("domain", nargs="?", help="one domain (default: every domain)")
    s.add_argument("--json", action="store_true", help="print the statistics as JSON")
    s.set_defaults(func=cmd_stats)


def _add_catalog(sub: Any, common: argparse.ArgumentParser, cat: argparse.ArgumentParser) -> None:
    """`atlas catalog sync|lineage`."""
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


def _import_options() -> argparse.ArgumentParser:
    """The options every ``atlas import`` source takes: shaping and the engine."""
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
    g.add_argument("--pad-mode", choices=("zero", "edge", "reflect", "missing"), default=None,
                   help="what --pad fills with (default: zero for extensive fields, edge for "
                        "intensive ones; missing: the padded cells are missing cells)")
    g.add_argument("--nan-is-missing", action="store_true",
                   help="NaN cells are missing cells (kept as NaN, left out of statistics) even "
                        "where the source does not declare them; cells a source declares "
                        "missing (CF _FillValue/missing_value, an HDF5 fill value) always are")
    e = shape.add_argument_group("engine")
    e.add_argument("--workers", type=int, default=None, help="local Dask workers (default: cores)")
    e.add_argument("--scheduler", default=None,
                   help="'serial', 'threads', 'processes' or a Dask scheduler address (default: "
                        "serial for up to 32 default-sized sequences, else processes)")
    e.add_argument("--no-catalog", action="store_true", help="do not register in a catalog")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument("--progress", action="store_true", help="progress bar even when not a TTY")
    return shape


def _add_import_command(sub: Any, common: argparse.ArgumentParser,
                        cat: argparse.ArgumentParser) -> None:
    """`atlas import npy|well|xarray`: bring your own data (atlasstore.runs.ingest)."""
    shape = _import_options()

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
    """`atlas train` / `atlas evaluate` (their module imports the NVP only when they run)."""
    from atlasstore.cli import train

    train.add_commands(sub, common, cat)
