"""What every command shares: option parsers, opening the store and the catalog with the
command's settings, and the one-line summaries."""

from __future__ import annotations

import argparse
import os
import select
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atlasstore.errors import AtlasError, UserError

#: exit statuses: a refused request (the class of its error says so), a failed run, and a
#: reader that went away (SIGPIPE, as a shell reports `ls | head -1`'s ls)
EXIT_USER_ERROR = AtlasError.exit_code
EXIT_FAILED = 1
EXIT_BROKEN_PIPE = 128 + 13

DEFAULT_STORE = "atlas.zarr"


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


def _run_summary(report: Any, volume: str, label: Callable[[Any], str]) -> int:
    """The summary line of a run, a FAILED line per failure (``label(failure)`` between the
    sequence and its error), store and catalog problems; the exit status."""
    print(f"run {report.run_id}: {report.written} sequences written, {report.skipped} already "
          f"complete, {len(report.failures)} failed; {report.maps} maps, {volume}, "
          f"{report.seconds:.1f} s, {report.maps_per_second:.1f} maps/s ({report.engine}"
          f"{', ' + report.engine_reason if report.engine_reason else ''})")
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
