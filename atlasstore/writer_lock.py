"""The writer lock: one generation run writes a store at a time, and a dead holder never
blocks the next run (see :class:`WriterLock`)."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Self

from zarr.core.buffer import cpu as cpu_buffer
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from .locations import atomic_write, local_path
from .provenance import host
from .store_errors import StoreError

if TYPE_CHECKING:
    from .store import AtlasStore


class StoreLocked(StoreError):
    """Another live writer holds the store's writer lock."""


class WriterLock:
    """One generation run writes a store at a time; a dead holder never blocks the next run.

    Local stores use an OS file lock (``flock``) on ``_lock/zarr.json``: the kernel releases it
    when the holder exits or is killed, so there is no stale state and no race in breaking one.
    The file is a valid Zarr group whose attributes name the holder (run id, pid, host) for the
    refusal message. Remote (fsspec) stores have no such primitive: there the lock object is
    created with the store's exclusive put and is stale when its holder's pid is gone (same
    host) or its heartbeat, refreshed every ``stale_after / 4`` s, is older than ``stale_after``
    s; two runs breaking the same stale remote lock at the same instant can both proceed.
    """

    KEY = "_lock/zarr.json"

    def __init__(self, store: AtlasStore, owner: Mapping[str, Any] | None = None,
                 stale_after: float = 120.0) -> None:
        self.store = store
        self.owner = dict(owner or {})
        self.stale_after = stale_after
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._fd: int | None = None
        root = local_path(store.location)
        self._path = None if root is None else root / self.KEY

    def _payload(self) -> bytes:
        lock = {"token": self.token, "pid": os.getpid(), "host": host(),
                "heartbeat": time.time(), **self.owner}
        return json.dumps({"zarr_format": 3, "node_type": "group",
                           "attributes": {"atlasstore_writer_lock": lock}}).encode()

    @staticmethod
    def _parse(raw: bytes) -> dict[str, Any]:
        try:
            return json.loads(raw)["attributes"]["atlasstore_writer_lock"]
        except (ValueError, KeyError, TypeError):
            return {}

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
        self._write_local(self._payload())

    def _write_local(self, payload: bytes) -> None:
        assert self._path is not None
        atomic_write(self._path, payload)

    def _release_local(self) -> None:
        import fcntl

        if self._fd is not None:
            self._write_local(json.dumps({"zarr_format": 3, "node_type": "group",
                                          "attributes": {}}).encode())
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    # ------------------------------------------------------------------ remote: heartbeat

    def _read(self) -> dict[str, Any] | None:
        buf = sync(self.store.zarr_group.store.get(self.KEY, prototype=default_buffer_prototype()))
        return None if buf is None else self._parse(buf.to_bytes())

    def _is_stale(self, rec: Mapping[str, Any]) -> bool:
        if rec.get("host") == host() and isinstance(rec.get("pid"), int):
            try:
                os.kill(rec["pid"], 0)
            except ProcessLookupError:
                return True
            except PermissionError:
                pass
        return time.time() - float(rec.get("heartbeat", 0)) > self.stale_after

    def _acquire_remote(self) -> None:
        zstore = self.store.zarr_group.store
        for _ in range(3):
            sync(zstore.set_if_not_exists(self.KEY, cpu_buffer.Buffer.from_bytes(self._payload())))
            rec = self._read()
            if rec is not None and rec.get("token") == self.token:
                self._thread = threading.Thread(target=self._beat, name="atlas-writer-lock",
                                                daemon=True)
                self._thread.start()
                return
            if rec is None or self._is_stale(rec):
                sync(zstore.delete_dir(self.KEY.split("/")[0]))
                continue
            raise self._refuse(rec)
        raise StoreLocked(f"could not take the writer lock of {self.store.location}")

    def _beat(self) -> None:
        while not self._stop.wait(self.stale_after / 4):
            rec = self._read()
            if rec is None or rec.get("token") != self.token:
                return
            sync(self.store.zarr_group.store.set(self.KEY, cpu_buffer.Buffer.from_bytes(self._payload())))

    def _release_remote(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        rec = self._read()
        if rec is not None and rec.get("token") == self.token:
            sync(self.store.zarr_group.store.delete_dir(self.KEY.split("/")[0]))

    # ------------------------------------------------------------------ API

    def acquire(self) -> Self:
        self.store._require_writable()
        if self._path is not None:
            self._acquire_local()
        else:
            self._acquire_remote()
        return self

    def release(self) -> None:
        if self._path is not None:
            self._release_local()
        else:
            self._release_remote()

    def __enter__(self) -> Self:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()
