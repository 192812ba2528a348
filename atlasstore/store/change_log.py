"""The store's change log: one small object per sequence write, sequence delete or run record
update, so a catalog learns what changed since it last looked without listing the store.

Layout: ``_log/`` is an empty Zarr group (so listing the root finds a group there, not a stray
folder; its consolidated metadata lists no members, so xarray's tree walk skips it) and the
entries are ``_log/entries/<n>.json``, ``n`` zero-padded to 16 digits (lexicographic order is
numeric order); plain Zarr never lists the entries (a deep
``members()`` walk of the whole store warns once about the ``entries`` folder). Entries are
dense (0, 1, 2, ... with no gap) and never rewritten:

* **Claiming** number ``n`` is an exclusive create (``Store.set_if_not_exists``: a hard link on
  a local disk; a conditional PUT ``If-None-Match: *`` on S3) of a document carrying a random
  token, read back to see who won; the loser tries ``n + 1``. So concurrent writers (Dask
  workers, several hosts) never lose or share an entry, and no counter is rewritten.
* A writer finds the head (the first free number) by galloping from the last head this process
  saw (``exists`` probes: O(1) for a writer that keeps writing, O(log changes) otherwise), which
  is exact because the log is dense: ``n + 1`` is only ever claimed after ``n`` exists.
* **Intent first**: the store claims the entry *before* the change becomes visible (before a
  sequence's commit flips it to complete, before a delete removes its document). A crash
  between the two leaves an entry whose change never happened; a reader confirms every entry
  against the sequence's status (see :mod:`atlasstore.catalog.sync`), so nothing committed can be
  missed. A ``write`` is claimed after the old version (if any) was deleted under its own
  ``delete`` entry, so a reader that sees a ``write`` entry and then a complete sequence sees
  the new data, never the old.
* Reading from position ``p`` asks for the entries in concurrent rounds of 1, 2, 4, ... up to
  64 keys until one is missing: a catalog that is up to date learns it with a single GET,
  whatever the size of the store; k changes cost k GETs plus at most min(k, 63) + 1 misses, in
  about log2(k) round trips.

The log is not compacted yet: it grows by one object of about 200 bytes per change. Truncating
entries every catalog has applied is left for later (it needs a low-water mark object that
readers consult before their position).
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from zarr.core.buffer import cpu as cpu_buffer
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from atlasstore.errors import ChangeLogError
from atlasstore.io.provenance import utc_now
from atlasstore.store.documents import NO_MEMBERS
from atlasstore.store.handle import StoreHandle

LOG_DIR = "_log"
OPS = ("write", "delete", "run")
_DIGITS = 16
#: entries read concurrently per round trip when catching up
READ_BATCH = 64
#: a store created before the change log has no ``store_id``; its identity is derived from its
#: root record instead (stable, so every process agrees without writing anything)
_LEGACY_NAMESPACE = uuid.UUID("5b3c6a2e-1f0d-4c1e-9d7a-6f1e2c3b4a59")

_heads: dict[str, int] = {}
_heads_lock = threading.Lock()


@dataclass(frozen=True)
class Change:
    """One log entry: ``op`` on a sequence (``write``/``delete``) or a run record (``run``)."""

    n: int
    op: str
    domain: str | None = None
    sequence_id: str | None = None
    run_id: str | None = None
    at: str = ""

    @property
    def key(self) -> str | None:
        """``domain/sequence_id`` of a sequence change, None for a run change."""
        return f"{self.domain}/{self.sequence_id}" if self.domain is not None else None


def entry_key(n: int) -> str:
    return f"{LOG_DIR}/entries/{n:0{_DIGITS}d}.json"


# with consolidated metadata listing no members: xarray's tree walk finds nothing in it
_GROUP_DOC = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {
    "atlasstore_log": {"description": "the store's change log: one entry per sequence write or "
                       "delete and run record update, _log/entries/<n>.json (see "
                       "atlasstore.store.change_log)"}}, "consolidated_metadata": NO_MEMBERS}).encode()


def store_id(store: StoreHandle) -> str:
    """The store's identity: ``atlasstore.store_id`` written at creation, or for a store made
    before there was one, a UUID derived from its root record (which never changes)."""
    rec: Any = store.zarr_group.attrs.get("atlasstore", {})
    sid = rec.get("store_id") if isinstance(rec, Mapping) else None
    if isinstance(sid, str) and sid:
        return sid
    blob = json.dumps(dict(rec) if isinstance(rec, Mapping) else rec, sort_keys=True)
    return str(uuid.uuid5(_LEGACY_NAMESPACE, blob))


def logs_whole_history(store: StoreHandle) -> bool:
    """True when the store was created with its change log (it has a ``store_id``): then the log
    holds every change since creation and a catalog can be built from it alone."""
    rec: Any = store.zarr_group.attrs.get("atlasstore", {})
    return isinstance(rec, Mapping) and bool(rec.get("store_id"))


class ChangeLog:
    """The change log of one store (see the module docstring)."""

    def __init__(self, store: StoreHandle) -> None:
        self.store = store
        self._z = store.zarr_group.store
        self._cache_key = f"{store.location}#{store_id(store)}"

    # ------------------------------------------------------------------ writing

    def record(self, op: str, domain: str | None = None, sequence_id: str | None = None,
               run_id: str | None = None) -> int:
        """Claim the next entry for a change about to happen; returns its number."""
        if op not in OPS:
            raise ValueError(f"unknown change {op!r} (one of {', '.join(OPS)})")
        if (op == "run") != (run_id is not None) or (op != "run" and not (domain and sequence_id)):
            need = "a run id" if op == "run" else "a domain and a sequence id"
            raise ValueError(f"change {op!r} needs {need}")
        doc = {"op": op, "domain": domain, "sequence_id": sequence_id, "run_id": run_id,
               "at": utc_now(), "host": socket.gethostname(), "pid": os.getpid(),
               "token": uuid.uuid4().hex}
        n = self.head()
        if n == 0:  # the first entry of this store: the group holding the log comes first
            sync(self._z.set_if_not_exists(f"{LOG_DIR}/zarr.json",
                                           cpu_buffer.Buffer.from_bytes(_GROUP_DOC)))
        while True:
            body = json.dumps({"n": n, **doc}, sort_keys=True).encode()
            key = entry_key(n)
            sync(self._z.set_if_not_exists(key, cpu_buffer.Buffer.from_bytes(body)))
            got = sync(self._z.get(key, prototype=default_buffer_prototype()))
            if got is not None and got.to_bytes() == body:
                self._remember(n + 1)
                return n
            n += 1  # another writer took n: n exists now, so n + 1 keeps the log dense

    # ------------------------------------------------------------------ reading

    def head(self) -> int:
        """The number the next entry will get (= how many entries exist)."""
        with _heads_lock:
            lo = _heads.get(self._cache_key, 0)  # entries are never removed: lo - 1 exists
        if not self._exists(lo):
            return lo
        step = 1
        hi = lo + step
        while self._exists(hi):  # gallop: lo exists, find a missing hi
            lo, step = hi, step * 2
            hi = lo + step
        while hi - lo > 1:  # lo exists, hi does not
            mid = (lo + hi) // 2
            if self._exists(mid):
                lo = mid
            else:
                hi = mid
        self._remember(hi)
        return hi

    def read(self, start: int, limit: int | None = None) -> list[Change]:
        """The entries from ``start`` on (at most ``limit``), up to the first missing one."""
        if start < 0:
            raise ValueError(f"log position must be >= 0, got {start}")
        out: list[Change] = []
        n, step = start, 1  # one GET when nothing changed; then rounds of up to READ_BATCH
        while limit is None or len(out) < limit:
            want = step if limit is None else min(step, limit - len(out))
            docs = sync(self._get_many([entry_key(i) for i in range(n, n + want)]))
            for i, raw in enumerate(docs):
                if raw is None:
                    self._remember(n + i)
                    return out
                out.append(_parse(n + i, raw))
            n += want
            step = min(step * 2, READ_BATCH)
        return out

    # ------------------------------------------------------------------ plumbing

    def _exists(self, n: int) -> bool:
        return bool(sync(self._z.exists(entry_key(n))))

    async def _get_many(self, keys: list[str]) -> list[bytes | None]:
        proto = default_buffer_prototype()

        async def one(k: str) -> bytes | None:
            buf = await self._z.get(k, prototype=proto)
            return None if buf is None else buf.to_bytes()

        return list(await asyncio.gather(*(one(k) for k in keys)))

    def _remember(self, head: int) -> None:
        with _heads_lock:
            if head > _heads.get(self._cache_key, 0):
                _heads[self._cache_key] = head


def _parse(n: int, raw: bytes) -> Change:
    try:
        doc = json.loads(raw)
        if not isinstance(doc, dict) or doc.get("n") != n or doc.get("op") not in OPS:
            raise ValueError("not a change document")
        return Change(n=n, op=doc["op"], domain=doc.get("domain"),
                      sequence_id=doc.get("sequence_id"), run_id=doc.get("run_id"),
                      at=str(doc.get("at", "")))
    except (ValueError, TypeError) as exc:
        raise ChangeLogError(f"change log entry {entry_key(n)} is damaged ({exc}); "
                             "`atlas catalog sync` rebuilds a catalog without it") from None
