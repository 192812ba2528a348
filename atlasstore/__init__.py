"""atlasstore: generate, store, query and stream 2D energy maps for neural surrogates.

The public face, imported lazily (``import atlasstore`` imports neither zarr nor JAX)::

    from atlasstore import AtlasStore, Query, stream, open_catalog, AtlasError
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from atlasstore._version import __version__

_EXPORTS = {
    "AtlasError": "atlasstore.errors",
    "AtlasStore": "atlasstore.store",
    "Layout": "atlasstore.store",
    "FieldSpec": "atlasstore.records",
    "Axis": "atlasstore.records",
    "Coordinates": "atlasstore.records",
    "ArrayKey": "atlasstore.records",
    "Query": "atlasstore.query",
    "stream": "atlasstore.training.stream",
    "open_catalog": "atlasstore.catalog",
    "generate": "atlasstore.runs.generate",
    "Plan": "atlasstore.runs.generate",
    "import_npy": "atlasstore.runs.ingest",
    "import_well": "atlasstore.runs.ingest",
    "import_xarray": "atlasstore.runs.ingest",
    "audit": "atlasstore.audit",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    mod = _EXPORTS.get(name)
    if mod is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(mod), name)


def __dir__() -> list[str]:
    return sorted(__all__)
