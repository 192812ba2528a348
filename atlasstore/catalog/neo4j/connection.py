"""The driver, sessions, managed transactions and the mapping of driver failures to catalog errors."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from atlasstore.catalog.neo4j.cypher_writes import _MISSING
from atlasstore.catalog.neo4j.failures import _one_line
from atlasstore.catalog.neo4j.rows import safe_uri
from atlasstore.catalog.neo4j.schema import (
    _AWAIT_INDEXES,
    _META,
    _SCHEMA_STATEMENTS,
    BOLT_SCHEMES,
    DEFAULT_BATCH_SIZE,
    SCHEMA_VERSION,
)
from atlasstore.catalog.protocol import ClosesOnExit
from atlasstore.errors import CatalogError, CatalogUnavailable
from atlasstore.io.provenance import utc_now


class Neo4jConnection(ClosesOnExit):
    """The plumbing every Neo4j catalog operation runs on."""

    backend = "neo4j"

    def __init__(self, uri: str | None = None, user: str | None = None,
                 password: str | None = None, database: str | None = None, *,
                 connection_timeout: float = 10.0, max_transaction_retry_time: float = 30.0,
                 batch_size: int = DEFAULT_BATCH_SIZE, validate: bool = True) -> None:
        import neo4j  # local: only this backend needs the driver

        uri = uri or os.environ.get("NEO4J_URI")
        if not uri:
            raise CatalogError("no Neo4j URI: pass uri= or set NEO4J_URI "
                               "(eval \"$(scripts/neo4j env)\" for the development server)")
        self.uri = safe_uri(uri)
        if not uri.startswith(BOLT_SCHEMES):
            raise CatalogError(f"invalid Neo4j URI {self.uri}: the scheme must be one of "
                               f"{', '.join(BOLT_SCHEMES)}")
        if self.uri != uri:
            raise CatalogError(f"Neo4j URI {self.uri} (credentials removed): put credentials in "
                               "NEO4J_USER / NEO4J_PASSWORD or user=/password=, not in the URI")
        user = user if user is not None else os.environ.get("NEO4J_USER")
        password = password if password is not None else os.environ.get("NEO4J_PASSWORD")
        self.user = user or "neo4j"
        self._has_password = bool(password)
        self.database = database or os.environ.get("ATLAS_NEO4J_DATABASE") or None
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._validate = validate
        self._lock = threading.Lock()
        self._secret = password or None  # only to scrub it from any driver message
        auth = (self.user, password) if password else None
        self._driver: neo4j.Driver | None
        try:
            self._driver = neo4j.GraphDatabase.driver(
                uri, auth=auth, connection_timeout=connection_timeout,
                max_transaction_retry_time=max_transaction_retry_time,
                connection_acquisition_timeout=max(connection_timeout, 10.0),
                user_agent="atlasstore-catalog/1", notifications_min_severity="OFF")
        except (ValueError, neo4j.exceptions.ConfigurationError) as exc:
            raise CatalogError(f"invalid Neo4j URI {self.uri}: {exc}") from None
        try:
            self._driver.verify_connectivity()
            self._ensure_schema()
        except BaseException as exc:
            self._driver.close()
            err = self._translate(exc)
            if err is exc:
                raise
            raise err from None

    # ------------------------------------------------------------------------------ plumbing

    def _translate(self, exc: BaseException) -> BaseException:
        err = self._translate_raw(exc)
        if err is not exc and self._secret and self._secret in str(err):  # belt and braces
            err = CatalogError(str(err).replace(self._secret, "***"))
        return err

    def _translate_raw(self, exc: BaseException) -> BaseException:
        from neo4j import exceptions as nx

        if isinstance(exc, CatalogError):
            return exc
        if isinstance(exc, nx.AuthError):
            how = ("no password was given (NEO4J_PASSWORD is unset)" if not self._has_password
                   else f"check NEO4J_USER / NEO4J_PASSWORD for user {self.user!r}")
            return CatalogUnavailable(self.uri, f"authentication failed: {how}")
        if isinstance(exc, (nx.ServiceUnavailable, nx.SessionExpired)):
            return CatalogUnavailable(self.uri, f"cannot connect ({type(exc).__name__}: "
                                                f"{_one_line(exc)})")
        if isinstance(exc, nx.ConnectionAcquisitionTimeoutError):
            return CatalogUnavailable(self.uri, f"timed out acquiring a connection: {_one_line(exc)}")
        if isinstance(exc, nx.Neo4jError):
            return CatalogError(f"Neo4j catalog at {self.uri}: {exc.code}: {_one_line(exc)}")
        if isinstance(exc, nx.DriverError):
            return CatalogError(f"Neo4j catalog at {self.uri}: {type(exc).__name__}: "
                                f"{_one_line(exc)}")
        if isinstance(exc, OSError):
            return CatalogUnavailable(self.uri, f"{type(exc).__name__}: {exc}")
        return exc

    def _session(self) -> Any:
        if self._driver is None:
            raise CatalogError(f"Neo4j catalog at {self.uri} is closed")
        return self._driver.session(database=self.database)

    def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            with self._session() as s:
                return s.execute_write(fn, *args)
        except Exception as exc:
            err = self._translate(exc)
            if err is exc:
                raise
            raise err from None

    def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            with self._session() as s:
                return s.execute_read(fn, *args)
        except Exception as exc:
            err = self._translate(exc)
            if err is exc:
                raise
            raise err from None

    def _rows(self, query: str, **params: Any) -> list[dict[str, Any]]:
        def work(tx: Any) -> list[dict[str, Any]]:
            return tx.run(query, params).data()
        return self._read(work)

    def _ensure_schema(self) -> None:
        with self._session() as s:
            for stmt in _SCHEMA_STATEMENTS:
                s.run(stmt).consume()
            s.run(_AWAIT_INDEXES, seconds=120).consume()
            version = s.execute_write(
                lambda tx: tx.run(_META, version=SCHEMA_VERSION, now=utc_now()).single()["version"])
        if version is not None and version > SCHEMA_VERSION:
            raise CatalogError(f"Neo4j catalog at {self.uri} has layout version {version}; this "
                               f"atlasstore understands up to {SCHEMA_VERSION} (upgrade atlasstore)")

    def close(self) -> None:
        """Close the driver (its connection pool). Idempotent."""
        with self._lock:
            if self._driver is not None:
                self._driver.close()
                self._driver = None

    def __repr__(self) -> str:
        return f"Neo4jCatalog({self.uri!r}, database={self.database!r})"

    @staticmethod
    def _missing(tx: Any, label: str, keys: Iterable[str]) -> list[str]:
        keys = list(keys)
        if not keys:
            return []
        return list(tx.run(_MISSING[label], keys=keys).single()["missing"])
