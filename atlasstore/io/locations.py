"""Where things live: store locations (local paths or URLs), the default catalog beside a store,
and the atomic file replace every local write of a whole document uses.

A location is a local path, a ``file://`` URL, or any other URL (``s3://``, ``memory://``, ...),
which is remote. Keeping the test in one place keeps every module agreeing on what is remote.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

#: Suffix of the embedded default catalog file.
CATALOG_SUFFIX = ".catalog.sqlite"
#: The store suffix dropped when naming files beside a store (``atlas.zarr`` -> ``atlas.*``).
STORE_SUFFIX = ".zarr"


def is_url(location: str | os.PathLike[str]) -> bool:
    """True for a URL with a scheme (``file://`` included)."""
    return "://" in str(location)


def is_remote(location: str | os.PathLike[str]) -> bool:
    """True for a URL that is not ``file://``: the store is not on a local filesystem."""
    return is_url(location) and not str(location).startswith("file://")


def local_path(location: str | os.PathLike[str]) -> Path | None:
    """The filesystem path of a local location (``file://`` stripped); None when remote."""
    if is_remote(location):
        return None
    return Path(str(location).removeprefix("file://"))


def cache_dir() -> Path:
    """atlasstore's cache folder: ``$ATLAS_CACHE_DIR``, else ``$XDG_CACHE_HOME/atlasstore``,
    else ``~/.cache/atlasstore``."""
    env = os.environ.get("ATLAS_CACHE_DIR")
    if env:
        return Path(env)
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "atlasstore"


def beside_store(location: str | os.PathLike[str], suffix: str) -> str:
    """A file named after a local store, next to it: ``atlas.zarr`` -> ``atlas<suffix>``.

    Only a trailing ``.zarr`` is dropped, so ``exp.a`` and ``exp.b`` get ``exp.a<suffix>`` and
    ``exp.b<suffix>`` (``Path.with_suffix`` would give both ``exp<suffix>``).
    """
    path = local_path(location)
    if path is None:
        raise ValueError(f"{location} is remote; there is no folder beside it")
    text = str(path).rstrip("/") or "/"
    if text.endswith(STORE_SUFFIX) and len(Path(text).name) > len(STORE_SUFFIX):
        text = text[: -len(STORE_SUFFIX)]
    return text + suffix


def default_catalog_location(location: str | os.PathLike[str], cache_root: Path | None = None) -> str:
    """The embedded default catalog of a store.

    Local store: a SQLite file beside it (:func:`beside_store`). Remote store: a SQLite file in
    the local cache folder, named from the URL (the catalog is an index that ``atlas catalog
    sync`` can always rebuild from the store, so a per-machine copy is safe): ``cache_root``, or
    :func:`cache_dir`.
    """
    if not is_remote(location):
        return beside_store(location, CATALOG_SUFFIX)
    url = str(location).rstrip("/")
    scheme, _, rest = url.partition("://")
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", rest).strip("-.")[:80] or "store"
    if stem.endswith(STORE_SUFFIX):
        stem = stem[: -len(STORE_SUFFIX)]
    digest = hashlib.sha256(url.encode()).hexdigest()[:10]
    return str((cache_root or cache_dir()) / "catalogs" / f"{scheme}-{stem}-{digest}{CATALOG_SUFFIX}")


def atomic_write(path: str | os.PathLike[str], data: bytes | str) -> None:
    """Write a whole file so that readers (and a crash) see the old content or the new, never a
    mix: a temporary file in the same folder, fsync'ed, then ``os.replace``."""
    p = Path(path)
    raw = data.encode() if isinstance(data, str) else data
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
