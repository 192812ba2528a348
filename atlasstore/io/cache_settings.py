"""Settings of the local disk cache of remote shards, as an object (:class:`CacheSettings`).

The command line builds one from ``--cache-dir``/``--cache-bytes`` and passes it down; a library
user passes one to :meth:`AtlasStore.open <atlasstore.store.AtlasStore.open>` or relies on the
environment's defaults (``ATLAS_CACHE_DIR``, ``ATLAS_CACHE_BYTES``), read in one place:
:meth:`CacheSettings.from_environment`.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from atlasstore.errors import StoreError
from atlasstore.io.locations import cache_dir

#: the disk cache's default bound
DEFAULT_MAX_BYTES = 10 * 2**30
_UNITS = {"": 1, "b": 1, "k": 2**10, "kb": 10**3, "kib": 2**10, "m": 2**20, "mb": 10**6,
          "mib": 2**20, "g": 2**30, "gb": 10**9, "gib": 2**30, "t": 2**40, "tb": 10**12,
          "tib": 2**40}


def parse_bytes(text: str | int) -> int:
    """``"20GiB"``, ``"500M"``, ``"1.5gb"`` or a plain integer as bytes (ValueError otherwise)."""
    if isinstance(text, int) and not isinstance(text, bool):
        n: float = text
    else:
        m = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        if m is None or m.group(2).lower() not in _UNITS:
            raise ValueError(f"expected a size like 20GiB, 500MB or 1000000, got {text!r}")
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if n < 0:
        raise ValueError(f"a size cannot be negative, got {text!r}")
    return int(n)


@dataclass(frozen=True)
class CacheSettings:
    """atlasstore's local cache folder (``root``: remote stores' shards under ``chunks/``, their
    default catalogs under ``catalogs/``) and the bound of the shard cache (``max_bytes``; 0:
    off)."""

    root: Path
    max_bytes: int

    @property
    def folder(self) -> Path:
        """The disk cache of remote shards."""
        return self.root / "chunks"

    @classmethod
    def from_environment(cls) -> CacheSettings:
        raw = os.environ.get("ATLAS_CACHE_BYTES")
        try:
            max_bytes = DEFAULT_MAX_BYTES if raw in (None, "") else parse_bytes(raw)
        except ValueError as exc:
            raise StoreError(f"ATLAS_CACHE_BYTES: {exc}") from None
        return cls(cache_dir(), max_bytes)

    @classmethod
    def from_options(cls, cache_dir: str | Path | None = None,
                     max_bytes: int | None = None) -> CacheSettings:
        """The environment's settings with the given ones on top (``atlas --cache-dir`` and
        ``--cache-bytes``)."""
        env = cls.from_environment()
        root = Path(cache_dir).expanduser().resolve() if cache_dir is not None else env.root
        return cls(root, env.max_bytes if max_bytes is None else int(max_bytes))
