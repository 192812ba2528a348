"""One connection per catalog object: opening, migration, transactions, closing."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from atlasstore.catalog.protocol import ClosesOnExit
from atlasstore.catalog.sqlite.schema import (
    _DDL,
    _UPGRADE_FROM_1,
    _UPGRADE_FROM_2,
    _VERSION_TABLE,
    SCHEMA_VERSION,
)
from atlasstore.catalog.sqlite.sql import _atlas_has, _atlas_key, _key_list
from atlasstore.errors import CatalogError
from atlasstore.io.provenance import utc_now


class SQLiteConnection(ClosesOnExit):
    """The plumbing every SQLite catalog operation runs on (a re-entrant lock serialises calls)."""


    backend = "sqlite"

    def __init__(self, path: str | Path, *, validate: bool = True, timeout: float = 30.0,
                 read_only: bool = False) -> None:
        self.path = str(path)
        self.uri = f"sqlite:///{self.path}"
        self._validate = validate
        self.read_only = read_only
        self._lock = threading.RLock()
        if self.path != ":memory:":
            parent = Path(self.path).expanduser().resolve().parent
            if not parent.is_dir():
                raise CatalogError(f"cannot open catalog {self.path}: folder {parent} does not exist")
        if read_only and not Path(self.path).is_file():
            raise CatalogError(f"cannot open catalog {self.path} read-only: no such file")
        try:
            if read_only:  # (a URI, so SQLite refuses every write itself)
                self._db = sqlite3.connect(Path(self.path).resolve().as_uri() + "?mode=ro",
                                           uri=True, timeout=timeout, check_same_thread=False,
                                           isolation_level=None)
            else:
                self._db = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False,
                                           isolation_level=None)
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot open catalog {self.path}: {exc}") from None
        self._db.row_factory = sqlite3.Row
        self._db.create_function("atlas_key", 1, _atlas_key, deterministic=True)
        self._db.create_function("atlas_has", 2, _atlas_has, deterministic=True)
        try:
            if not read_only:
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache
            self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            if read_only:
                if self._version() != SCHEMA_VERSION:
                    raise CatalogError(f"catalog {self.path} has layout version "
                                       f"{self._version()}; open it writable once to upgrade it "
                                       f"to {SCHEMA_VERSION}")
            else:
                self._migrate()
        except CatalogError:
            self._db.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise CatalogError(f"{self.path} is not a usable catalog database: {exc}") from None

    # ------------------------------------------------------------------------------ plumbing

    def _version(self) -> int | None:
        return self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]

    def _migrate(self) -> None:
        # executescript commits any open transaction first, so the DDL gets its own.
        self._db.executescript("BEGIN IMMEDIATE;" + _VERSION_TABLE + "COMMIT;")
        have = self._version()
        if have is not None and have > SCHEMA_VERSION:
            raise CatalogError(f"catalog {self.path} has layout version {have}; this atlasstore "
                               f"understands up to {SCHEMA_VERSION} (upgrade atlasstore)")
        if have in (1, 2):
            self._upgrade(have, _UPGRADE_FROM_1 if have == 1 else _UPGRADE_FROM_2)
        self._db.executescript("BEGIN IMMEDIATE;" + _DDL + "COMMIT;")
        with self._tx():
            if self._version() is None:
                self._db.execute("INSERT INTO schema_version (version, applied) VALUES (?, ?)",
                                 (SCHEMA_VERSION, utc_now()))

    def _upgrade(self, have: int, statements: tuple[str, ...]) -> None:
        """Layout ``have`` -> :data:`SCHEMA_VERSION` in one transaction (another process may
        have done it meanwhile)."""
        self._db.execute("PRAGMA foreign_keys=OFF")  # (not settable inside a transaction)
        try:
            with self._tx() as db:
                if self._version() != have:
                    return
                for stmt in statements:
                    db.execute(stmt)
                if db.execute("PRAGMA foreign_key_check").fetchall():
                    raise CatalogError(f"catalog {self.path}: layout upgrade {have} -> "
                                       f"{SCHEMA_VERSION} found broken "
                                       "references; nothing was changed")
                db.execute("INSERT INTO schema_version (version, applied) VALUES (?, ?)",
                           (SCHEMA_VERSION, utc_now()))
        finally:
            self._db.execute("PRAGMA foreign_keys=ON")

    class _Tx:
        def __init__(self, cat: SQLiteConnection) -> None:
            self.cat = cat

        def __enter__(self) -> sqlite3.Connection:
            self.cat._lock.acquire()
            try:
                self.cat._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.cat._lock.release()
                raise
            return self.cat._db

        def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
            try:
                if et is None:
                    self.cat._db.execute("COMMIT")
                else:
                    self.cat._db.execute("ROLLBACK")
            finally:
                self.cat._lock.release()

    def _tx(self) -> SQLiteConnection._Tx:
        if self._db is None:
            raise CatalogError(f"catalog {self.path} is closed")
        if self.read_only:
            raise CatalogError(f"catalog {self.path} is open read-only")
        return SQLiteConnection._Tx(self)

    def _check_open(self) -> None:
        if self._db is None:
            raise CatalogError(f"catalog {self.path} is closed")

    def _q(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            self._check_open()
            return self._db.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                try:
                    self._db.execute("PRAGMA optimize")  # refresh planner statistics if useful
                except sqlite3.Error:
                    pass
                self._db.close()
                self._db = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SQLiteCatalog({self.path!r})"

    @staticmethod
    def _existing(db: sqlite3.Connection, table: str, col: str, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        if not keys:
            return set()
        sql = {("generation_runs", "run_id"): "SELECT run_id FROM generation_runs WHERE run_id IN "
                                              "(SELECT atlas_key(value) FROM json_each(?))",
               ("sequences", "key"): "SELECT key FROM sequences WHERE key IN "
                                     "(SELECT atlas_key(value) FROM json_each(?))",
               ("arrays", "key"): "SELECT key FROM arrays WHERE key IN "
                                  "(SELECT atlas_key(value) FROM json_each(?))",
               ("dataset_versions", "version_id"): "SELECT version_id FROM dataset_versions "
                                                   "WHERE version_id IN "
                                                   "(SELECT atlas_key(value) FROM json_each(?))",
               ("training_runs", "run_id"): "SELECT run_id FROM training_runs WHERE run_id IN "
                                            "(SELECT atlas_key(value) FROM json_each(?))"}[(table, col)]
        return {r[0] for r in db.execute(sql, (_key_list(keys),))}

    @staticmethod
    def _delete_nodes(db: sqlite3.Connection, ids: list[str]) -> None:
        if ids:
            db.executemany("DELETE FROM edges WHERE src = ?", ((i,) for i in ids))
            db.executemany("DELETE FROM edges WHERE dst = ?", ((i,) for i in ids))
