"""The SQLite catalog: the writing and the reading halves over one connection."""

from __future__ import annotations

from atlasstore.catalog.sqlite.queries import SQLiteQueries
from atlasstore.catalog.sqlite.writes import SQLiteWrites


class SQLiteCatalog(SQLiteWrites, SQLiteQueries):
    """The catalog in one SQLite file (``":memory:"`` for a private in-memory catalog).

    ``validate`` (default True) checks every record against its JSON Schema before writing;
    ``read_only`` opens an existing file for reading only (every write is a CatalogError).
    """
