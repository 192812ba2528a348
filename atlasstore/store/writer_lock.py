"""The writer lock: one generation run writes a store at a time, and a dead holder never
blocks the next run (see :class:`WriterLock`)."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
import uuid
from collections.abc import Mapping
from typing import Any, Protocol, Self

from zarr.core.buffer import cpu as cpu_buffer
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from atlasstore.errors import StoreLocked
from atlasstore.io import object_storage
from atlasstore.io.locations import atomic_write, local_path
from atlasstore.io.provenance import host, utc_now
from atlasstore.store.handle import StoreHandle

#: the lock object's content when nobody holds it (a valid, empty Zarr group document)
RELEASED = json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}).encode()


class _CasObject(Protocol):
    """One object changed only by compare-and-swap on a version tag (an ETag)."""

    def create(self, data: bytes) -> str | None: ...
    def read(self) -> tuple[bytes, str] | None: ...
    def replace(self, data: bytes, etag: str) -> str | None: ...


class _InProcessObject:
    """Compare-and-swap over a zarr Store without conditional writes (``memory://`` and other
    fsspec URLs): atomic between the threads of this process only, which is all a
    ``memory://`` store has. The tag is a digest of the content."""

    _mutex = threading.Lock()

    def __init__(self, zstore: Any, key: str) -> None:
        self.zstore, self.key = zstore, key

    def read(self) -> tuple[bytes, str] | None:
        buf = sync(self.zstore.get(self.key, prototype=default_buffer_prototype()))
        if buf is None:
            return None
        raw = buf.to_bytes()
        return raw, hashlib.sha256(raw).hexdigest()

    def _put(self, data: bytes) -> str:
        sync(self.zstore.set(self.key, cpu_buffer.Buffer.from_bytes(data)))
        return hashlib.sha256(data).hexdigest()

    def create(self, data: bytes) -> str | None:
        with self._mutex:
            return None if self.read() is not None else self._put(data)

    def replace(self, data: bytes, etag: str) -> str | None:
        with self._mutex:
            cur = self.read()
            return self._put(data) if cur is not None and cur[1] == etag else None


class WriterLock:
    """One generation run writes a store at a time; a dead holder never blocks the next run.

    **Local stores** use an OS file lock (``flock``) on the ``_lock`` folder: the kernel
    releases it when the holder exits or is killed, so there is no stale state and no race in
    breaking one. ``_lock/zarr.json`` (a valid Zarr group) names the holder for the refusal.

    **Object storage** (``s3://``) has no such primitive; there the lock object
    ``_lock/zarr.json`` changes only by compare-and-swap, decided by the service: it is taken
    by creating it with ``If-None-Match: *`` (or, when it holds the released document, by
    replacing that with ``If-Match: <its ETag>``), renewed every ``renew_every`` s by a
    replacement with ``If-Match`` on the holder's last ETag, and released by replacing it with
    the released document the same way. Two writers can never both hold it, whatever their
    clocks say: of two replacements from the same ETag the service accepts one. The renewals
    are the heartbeat, used only to tell a dead holder: a contender that sees the ETag
    unchanged for ``stale_after`` s of its own monotonic clock takes the lock over, again by
    ``If-Match`` on that ETag (a holder on the same host whose pid is gone is dead at once).
    A holder whose renewal is refused has lost the lock and must stop writing:
    :meth:`ensure_held` raises from then on (generation checks it after every sequence).
    ``memory://`` and other fsspec URLs use the same protocol with a compare-and-swap that is
    atomic within one process only.
    """

    KEY = "_lock/zarr.json"

    def __init__(self, store: StoreHandle, owner: Mapping[str, Any] | None = None,
                 stale_after: float = 30.0, renew_every: float | None = None) -> None:
        self.store = store
        self.owner = dict(owner or {})
        self.stale_after = float(stale_after)
        self.renew_every = float(renew_every) if renew_every else self.stale_after / 6
        if not 0 < self.renew_every < self.stale_after:
            raise ValueError(f"renew_every ({self.renew_every}) must be in (0, stale_after = "
                             f"{self.stale_after})")
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        root = local_path(store.location)
        self._path = None if root is None else root / self.KEY
        self._obj: _CasObject | None = None
        self._etag: str | None = None
        self._beats = 0
        self._last_ok = 0.0
        self._lost: str | None = None

    def _payload(self) -> bytes:
        lock = {"token": self.token, "pid": os.getpid(), "host": host(), "beat": self._beats,
                "renewed": utc_now(), "renew_every": self.renew_every,
                "stale_after": self.stale_after, **self.owner}
        return json.dumps({"zarr_format": 3, "node_type": "group",
                           "attributes": {"atlasstore_writer_lock": lock}}).encode()

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any]:
        try:
            rec = json.loads(raw)["attributes"]["atlasstore_writer_lock"]
        except (ValueError, KeyError, TypeError):
            return {}
        return rec if isinstance(rec, dict) else {}

    def _refuse(self, rec: Mapping[str, Any]) -> StoreLocked:
        return StoreLocked(
            f"{self.store.location} is being written by another generation run "
            f"({rec.get('run_id', '?')}, pid {rec.get('pid')} on {rec.get('host')}); wait for it "
            f"to finish (a killed run's lock is released automatically)")

    # ------------------------------------------------------------------ local: flock

    def _acquire_local(self) -> None:
        import fcntl

        assert self._path is not None
        self._path.parent.mkdir(parents=True, exist_ok=True)
        # The flock is on the lock *directory*; the holder's details go into its zarr.json by
        # atomic replace, so a reader listing the store never sees a half-written file.
        fd = os.open(self._path.parent, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            try:
                rec = self._parse(self._path.read_bytes())
            except OSError:
                rec = {}
            raise self._refuse(rec) from None
        self._fd = fd
        atomic_write(self._path, self._payload())

    def _release_local(self) -> None:
        import fcntl

        if self._fd is not None:
            assert self._path is not None
            atomic_write(self._path, RELEASED)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    # ------------------------------------------------------------------ object storage: CAS

    def _object(self) -> _CasObject:
        if self._obj is None:
            loc = str(self.store.location)
            if object_storage.is_s3(loc):
                client = object_storage.s3_client(object_storage.S3Location.parse(loc))
                self._obj = object_storage.ConditionalObject(client, self.KEY)
            else:
                self._obj = _InProcessObject(self.store.zarr_group.store, self.KEY)
        return self._obj

    def _read(self) -> dict[str, Any] | None:
        """The holder's record (``{}`` when released or unreadable); None when absent."""
        if self._path is not None:
            try:
                return self._parse(self._path.read_bytes())
            except FileNotFoundError:
                return None
        cur = self._object().read()
        return None if cur is None else self._parse(cur[0])

    def _dead_here(self, rec: Mapping[str, Any]) -> bool:
        """The holder ran on this host and its process is gone."""
        if rec.get("host") != host() or not isinstance(rec.get("pid"), int):
            return False
        try:
            os.kill(rec["pid"], 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass
        return False

    def _watch(self, etag: str, rec: Mapping[str, Any]) -> tuple[bytes, str] | None:
        """Poll the lock object until its ETag changes (returned) or ``stale_after`` s of this
        process's monotonic clock pass (None: the holder is dead). The holder's own renewal
        period and staleness, recorded in its lock, lengthen the watch, never shorten it."""
        obj = self._object()

        def num(key: str, default: float) -> float:
            v = rec.get(key)
            return float(v) if isinstance(v, (int, float)) and v > 0 else default

        end = time.monotonic() + max(self.stale_after, num("stale_after", 0.0))
        step = min(1.0, num("renew_every", self.renew_every) / 2)
        while time.monotonic() < end:
            time.sleep(min(step, max(0.0, end - time.monotonic())))
            cur = obj.read()
            if cur is None or cur[1] != etag:
                return cur or (b"", "")
        return None

    def _acquire_remote(self) -> None:
        obj = self._object()
        for _ in range(8):
            payload = self._payload()
            etag = obj.create(payload)
            if etag is not None:
                return self._held(etag)
            cur = obj.read()
            if cur is None:
                continue  # deleted by hand meanwhile: create again
            raw, etag = cur
            rec = self._parse(raw)
            if rec.get("token") == self.token:
                return self._held(etag)  # our create landed; its answer was lost and retried
            if rec.get("token") and not self._dead_here(rec):
                changed = self._watch(etag, rec)
                if changed is not None:
                    if self._parse(changed[0]).get("token"):
                        raise self._refuse(self._parse(changed[0]))
                    continue  # released meanwhile: try again
            new = obj.replace(payload, etag)
            if new is not None:
                return self._held(new)
        raise StoreLocked(f"could not take the writer lock of {self.store.location}: other "
                          "writers keep changing it")

    def _held(self, etag: str) -> None:
        self._etag = etag
        self._last_ok = time.monotonic()
        self._thread = threading.Thread(target=self._beat, name="atlas-writer-lock", daemon=True)
        self._thread.start()

    def _beat(self) -> None:
        while not self._stop.wait(self.renew_every):
            if not self._renew():
                return

    def _renew(self) -> bool:
        """One renewal by ``If-Match``; False once the lock is lost."""
        obj = self._object()
        assert self._etag is not None
        self._beats += 1
        payload = self._payload()
        try:
            new = obj.replace(payload, self._etag)
            if new is None:
                cur = obj.read()  # a retried PUT whose first attempt landed reads back as ours
                new = cur[1] if cur is not None and cur[0] == payload else None
        except Exception:  # noqa: BLE001 - unreachable service: retried at the next beat
            if time.monotonic() - self._last_ok > self.stale_after:
                self._lost = f"not renewed for {self.stale_after:.0f} s (the service is unreachable)"
                return False
            return True
        if new is None:
            rec = self._read() or {}
            self._lost = (f"taken over by run {rec.get('run_id', '?')}, pid {rec.get('pid')} on "
                          f"{rec.get('host')}" if rec.get("token") else "released by another writer")
            return False
        self._etag, self._last_ok = new, time.monotonic()
        return True

    def _release_remote(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        if self._etag is not None and self._lost is None:
            try:
                self._object().replace(RELEASED, self._etag)
            except Exception:  # noqa: BLE001 - unreachable: a dead holder's lock is taken over later
                pass
        self._etag = None

    # ------------------------------------------------------------------ API

    def acquire(self) -> Self:
        self.store.require_writable()
        if self._path is not None:
            self._acquire_local()
        else:
            self._acquire_remote()
        return self

    def ensure_held(self) -> None:
        """Raise :class:`StoreLocked` if this holder has lost the lock (its renewal was refused,
        or could not reach the service for ``stale_after`` s): it must stop writing."""
        if self._path is not None or self._etag is None:
            return
        if self._lost is None and time.monotonic() - self._last_ok > self.stale_after:
            self._lost = f"not renewed for {self.stale_after:.0f} s"
        if self._lost is not None:
            raise StoreLocked(f"{self.store.location}: this run lost the writer lock "
                              f"({self._lost}) and stopped writing; run it again")

    def release(self) -> None:
        if self._path is not None:
            self._release_local()
        else:
            self._release_remote()

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
