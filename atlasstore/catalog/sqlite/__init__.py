"""SQLite catalog: the embedded default (stdlib ``sqlite3``, one file beside the store).

Design
------
* One table per record kind (columns for everything a query filters on, JSON text for lists and
  config dicts) plus a generic ``edges(src, rel, dst, props)`` table between lineage node ids
  (``"<Kind>:<key>"``). Lineage is one recursive CTE over ``edges``; the tables give the node
  properties.
* ``PRAGMA journal_mode=WAL`` (readers never block the writer and vice versa; other processes
  can read while a generation job writes), ``foreign_keys=ON`` (parts cascade with their
  sequence), ``synchronous=NORMAL`` (durable at checkpoints; safe against corruption), a
  30 s ``busy_timeout`` for concurrent writers in other processes.
* Every public write is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any
  error) using ``executemany`` per table; SQL text is constant, values are always parameters.
* A ``schema_version`` table records the layout version; opening a file written by a newer
  layout is refused, and a file of layout 1 is migrated in place to 2 (nullable run id, seed,
  pattern and entropy; sequence kind and source files; import runs; pinned dataset checksums;
  the store-sync state), in one transaction.

Thread safety: one connection per catalog object, opened with ``check_same_thread=False`` and
guarded by a re-entrant lock, so a catalog object may be shared by threads (calls are
serialised). Separate processes open their own ``SQLiteCatalog`` on the same file; WAL makes that
safe (one writer at a time, writers wait up to ``busy_timeout``).
"""

from atlasstore.catalog.sqlite.catalog import SQLiteCatalog

__all__ = ["SQLiteCatalog"]
