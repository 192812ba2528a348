"""Fixtures of the S3 tests: the session's S3 server, a bucket of its own per test with the
standard AWS environment pointing at it, and private servers for tests that break theirs.

``scripts/test`` starts one server for the whole run and exports ``ATLAS_TEST_S3_ENDPOINT`` and
``ATLAS_TEST_S3_SECRET``; without them (plain pytest) the session starts its own. Without
moto the S3 tests skip with a message, except in CI (``CI`` or ``ATLAS_REQUIRE_S3=1``), where
they fail. ``conftest.py`` registers the fixtures for every test module.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from atlasstore.errors import NotAnAtlasStore, RemoteStoreError
from atlasstore.store import AtlasStore
from helpers.s3_server import S3Server

#: AWS settings a developer's environment may hold that would steer clients elsewhere
FOREIGN_AWS = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL_S3", "AWS_SESSION_TOKEN",
               "AWS_SECURITY_TOKEN", "AWS_ROLE_ARN", "AWS_WEB_IDENTITY_TOKEN_FILE")


def _required() -> bool:
    return bool(os.environ.get("CI")) or os.environ.get("ATLAS_REQUIRE_S3") == "1"


def _have_moto() -> bool:
    try:
        import moto.server  # noqa: F401
    except ImportError:
        if _required():
            pytest.fail("moto[server] is not installed and the S3 tests are required (CI)")
        pytest.skip("moto[server] is not installed: the S3 tests need its server "
                    "(pip install -e '.[test]')")
    return True


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    endpoint = os.environ.get("ATLAS_TEST_S3_ENDPOINT")
    if endpoint:
        yield S3Server(endpoint, os.environ.get("ATLAS_TEST_S3_SECRET"))
        return
    _have_moto()
    log = tmp_path_factory.mktemp("s3-server") / "server.log"
    srv = S3Server().start(log=log)
    try:
        yield srv
    finally:
        srv.stop()


@dataclass
class S3Bucket:
    """A bucket of one test on a server, and its store URL (``s3://<bucket>/atlas.zarr``)."""

    server: S3Server
    bucket: str
    cache: Path

    @property
    def url(self) -> str:
        return f"s3://{self.bucket}/atlas.zarr"

    def prefix(self, name: str) -> str:
        return f"s3://{self.bucket}/{name}"

    def objects(self) -> dict[str, bytes]:
        """Every object of the bucket (for greps)."""
        c = self.server.client()
        out = {}
        for page in c.get_paginator("list_objects_v2").paginate(Bucket=self.bucket):
            for o in page.get("Contents", []):
                out[o["Key"]] = c.get_object(Bucket=self.bucket, Key=o["Key"])["Body"].read()
        return out


def use_server(monkeypatch: pytest.MonkeyPatch, server: S3Server, tmp_path: Path) -> S3Bucket:
    """Point the standard AWS environment at ``server`` with a new bucket, and the cache
    folder into ``tmp_path``; nothing of the developer's own AWS settings leaks in."""
    for k in FOREIGN_AWS:
        monkeypatch.delenv(k, raising=False)
    for k, v in server.env().items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    monkeypatch.setenv("ATLAS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("ATLAS_CACHE_BYTES", raising=False)
    monkeypatch.delenv("ATLAS_STORE", raising=False)
    monkeypatch.delenv("ATLAS_CATALOG", raising=False)
    bucket = f"atlas-{uuid.uuid4().hex[:16]}"
    server.create_bucket(bucket)
    return S3Bucket(server, bucket, tmp_path / "cache")


@pytest.fixture
def s3(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> S3Bucket:
    """A fresh bucket on the session's server, with the AWS environment set for it."""
    return use_server(monkeypatch, s3_server, tmp_path)


@pytest.fixture
def private_s3(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[S3Bucket]:
    """A server of this test's own (it may be stopped, broken or made to check credentials)."""
    _have_moto()
    srv = S3Server().start(log=tmp_path / "server.log")
    try:
        yield use_server(monkeypatch, srv, tmp_path)
    finally:
        srv.stop()


class StoreWatcher(threading.Thread):
    """Polls the store as a reader would while the writer runs and the server comes and goes:
    every sequence it is shown must be complete and read back to its recorded checksums."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.seen: set[str] = set()
        self.bad: list[str] = []
        self.unreachable = 0
        self.passes = 0

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                s = AtlasStore.open(self.url)
                for d, q in s.iter_sequences():
                    if f"{d}/{q}" in self.seen:
                        continue
                    info = s.sequence_info(d, q)
                    if info.get("status") != "complete":
                        self.bad.append(f"{d}/{q}: status {info.get('status')}")
                    for key in info["arrays"]:
                        lvl, f = key.split("/")
                        s.verify_array(d, q, int(lvl), f)
                    self.seen.add(f"{d}/{q}")
                self.passes += 1
            except NotAnAtlasStore:
                if self.passes:  # it existed: it must not vanish
                    self.bad.append("the store vanished")
            except RemoteStoreError:
                self.unreachable += 1
            except Exception as exc:  # noqa: BLE001 - anything else is a violation
                text = f"{type(exc).__name__}: {exc}"
                if "cannot connect" in text or "Error performing" in text or "ABORTED" in text:
                    self.unreachable += 1
                else:
                    self.bad.append(text[:300])
            self.stop.wait(0.2)
