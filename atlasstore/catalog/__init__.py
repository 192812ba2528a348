"""The catalog: index for search and lineage over the store (SQLite embedded, or Neo4j server).

>>> from atlasstore.catalog import open_catalog
>>> with open_catalog("sqlite:///atlas.catalog.db") as cat:      # or a plain path
...     cat.find_sequences(domains="plasma_physics", entropy=(7.0, 8.0), limit=10)

See :mod:`atlasstore.catalog.base` for the records, the lineage model and the filter semantics.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from atlasstore.catalog.base import ARRAY_FIELDS, KINDS, SEQUENCE_KINDS, Range, node_id, split_node_id
from atlasstore.catalog.lineage import Lineage, LineageEdge, LineageNode
from atlasstore.catalog.protocol import Catalog
from atlasstore.catalog.records import (
    ArrayRecord,
    Checkpoint,
    DatasetVersion,
    GenerationRun,
    ImportRun,
    Sequence,
    SourceFile,
    StoreSync,
    TimeStep,
    TrainingRun,
    sequence_checksum,
)
from atlasstore.catalog.sqlite import SQLiteCatalog
from atlasstore.errors import CatalogError, CatalogMismatch, CatalogNotFound, CatalogUnavailable

__all__ = [
    "ARRAY_FIELDS", "KINDS", "SEQUENCE_KINDS", "ArrayRecord", "Catalog", "CatalogError",
    "CatalogMismatch", "CatalogNotFound", "CatalogUnavailable", "Checkpoint", "DatasetVersion",
    "GenerationRun", "ImportRun", "Lineage", "LineageEdge", "LineageNode", "Neo4jCatalog",
    "Range", "SQLiteCatalog", "Sequence", "SourceFile", "StoreSync", "TimeStep", "TrainingRun",
    "node_id", "open_catalog", "sequence_checksum", "split_node_id",
]

# same as neo4j.BOLT_SCHEMES (kept here so that importing the catalog does not import the driver)
_NEO4J_SCHEMES = ("neo4j://", "neo4j+s://", "neo4j+ssc://", "bolt://", "bolt+s://", "bolt+ssc://")


def __getattr__(name: str) -> Any:  # lazy: importing the catalog does not import the driver
    if name == "Neo4jCatalog":
        from atlasstore.catalog.neo4j import Neo4jCatalog
        return Neo4jCatalog
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def open_catalog(spec: str | os.PathLike[str], **kwargs: Any) -> Catalog:
    """Open a catalog from a spec string.

    * ``"sqlite:///path/to/catalog.db"`` (relative; ``sqlite:////abs/path.db`` absolute, as in
      SQLAlchemy; ``sqlite:///:memory:`` for a private in-memory one) or a plain path
      -> :class:`SQLiteCatalog`
    * ``"neo4j://host:7687"``, ``"bolt://..."`` (and the ``+s`` / ``+ssc`` TLS variants)
      -> :class:`Neo4jCatalog` with credentials from ``NEO4J_USER`` / ``NEO4J_PASSWORD``
    * ``"neo4j"`` -> :class:`Neo4jCatalog` with the URI from ``NEO4J_URI`` too

    ``kwargs`` go to the backend's constructor.
    """
    if isinstance(spec, os.PathLike):
        return SQLiteCatalog(Path(spec), **kwargs)
    if not isinstance(spec, str) or not spec:
        raise CatalogError(f"catalog spec must be a non-empty string or path, got {spec!r}")
    if spec.startswith("sqlite://"):
        # SQLAlchemy's convention: sqlite:///relative.db, sqlite:////absolute/path.db
        path = spec[len("sqlite://"):]
        if not path.startswith("/"):
            raise CatalogError(f"catalog spec {spec!r}: use sqlite:///relative/path.db or "
                               "sqlite:////absolute/path.db")
        path = path[1:]
        if not path:
            raise CatalogError(f"catalog spec {spec!r} names no file (use sqlite:///path/to/file.db)")
        return SQLiteCatalog(path, **kwargs)
    if spec == "neo4j":
        from atlasstore.catalog.neo4j import Neo4jCatalog
        return Neo4jCatalog(**kwargs)
    if spec.startswith(_NEO4J_SCHEMES):
        from atlasstore.catalog.neo4j import Neo4jCatalog
        return Neo4jCatalog(spec, **kwargs)
    if "://" in spec:
        raise CatalogError(f"unknown catalog scheme in {spec.split('://', 1)[0]!r}:// "
                           "(use sqlite:///path, a plain path, neo4j://..., bolt://... or 'neo4j')")
    return SQLiteCatalog(spec, **kwargs)
