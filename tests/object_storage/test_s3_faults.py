"""Bad input and faults on object storage, against servers of the tests' own: wrong
credentials, throttling and 500 answers, a server that goes away mid-run and comes back.

Every failure is one clear line naming the URL and what the service answered (never the
secret); transient answers are retried with backoff; nothing partial is ever visible; running
the same command again after the fault completes to the checksums of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import io
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atlasstore import cli
from atlasstore.errors import RemoteStoreError
from atlasstore.io.cache_settings import CacheSettings
from atlasstore.io.object_storage import UNREACHABLE, S3Settings, explain
from atlasstore.read.disk_cache import DiskCachedReader
from atlasstore.store import AtlasStore
from helpers.proc_helpers import ATLAS, ProcTracker, wait_until
from helpers.s3_fixtures import S3Bucket, StoreWatcher

PLAN = ["--domains", "plasma_physics,fluid_dynamics", "--sequences", "4", "--steps", "3",
        "--seed", "11"]


@pytest.fixture
def procs(tmp_path: Path) -> Any:
    t = ProcTracker(tmp_path)
    yield t
    t.cleanup()


def atlas(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def _small_store(b: S3Bucket) -> AtlasStore:
    rc, _, err = atlas("generate", "--store", b.url, "--domains", "plasma_physics", "--sequences",
                       "1", "--steps", "2", "--scheduler", "serial", "--no-catalog", "--quiet")
    assert rc == 0, err
    return AtlasStore.open(b.url)


def checksums(url: str) -> dict[str, str]:
    s = AtlasStore.open(url)
    return {f"{d}/{q}/{k}": r["checksum"] for d, q in s.iter_sequences()
            for k, r in s.sequence_info(d, q)["arrays"].items()}


# --------------------------------------------------------------------------- credentials


def test_wrong_credentials_are_named_without_the_secret(private_s3: S3Bucket,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    b = private_s3
    key, secret = b.server.enable_auth()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    s = _small_store(b)  # the right pair works
    assert s.read("plasma_physics", "seq-00000", 64, "energy").shape == (2, 64, 64)

    wrong = f"wrong-secret-{time.time_ns()}"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    for argv in (("ls", "--store", b.url), ("audit", "--store", b.url),
                 ("generate", "--store", b.url, "--domains", "plasma_physics", "--sequences", "1",
                  "--steps", "2", "--scheduler", "serial", "--no-catalog", "--quiet")):
        rc, out, err = atlas(*argv)
        assert rc == 2, (argv, out, err)
        line = err.strip()
        assert len(line.splitlines()) == 1, err
        assert b.server.endpoint in line and "403 Forbidden (SignatureDoesNotMatch)" in line, line
        assert wrong not in out + err and secret not in out + err
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDONTKNOWYOU")
    rc, out, err = atlas("ls", "--store", b.url)
    assert rc == 2 and "(InvalidAccessKeyId)" in err and wrong not in out + err
    # the read path (TensorStore) of a store opened before the credentials went bad
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    fresh = AtlasStore.open(b.url)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    with pytest.raises(RemoteStoreError) as exc:
        fresh.read("plasma_physics", "seq-00000", 64, "grad_x")
    assert b.bucket in str(exc.value) and wrong not in str(exc.value)


# --------------------------------------------------------------------------- throttling, 500s


def test_throttling_and_server_errors_are_retried(private_s3: S3Bucket,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    b = private_s3
    s = _small_store(b)
    want = s.read("plasma_physics", "seq-00000", 64, "energy")
    # writes, metadata reads and the TensorStore read path all ride out transient answers
    b.server.fail_next(("503 Slow Down", "SlowDown"), ("500 Internal Server Error", "InternalError"),
                       ("503 Slow Down", "SlowDown"))
    b.server.reset_counts()
    rc, out, err = atlas("ls", "--store", b.url, "plasma_physics")
    assert rc == 0 and out.startswith("seq-00000"), err
    fresh = AtlasStore.open(b.url)
    b.server.fail_next(("503 Slow Down", "SlowDown"), ("500 Internal Server Error", "InternalError"))
    np.testing.assert_array_equal(fresh.read("plasma_physics", "seq-00000", 64, "energy"), want)
    cached = DiskCachedReader(fresh, CacheSettings(b.cache / "c", 2**30))
    b.server.fail_next(("503 Slow Down", "SlowDown"), ("500 Internal Server Error", "InternalError"))
    np.testing.assert_array_equal(
        cached.read("plasma_physics/seq-00000/64/energy", (slice(None),) * 3), want)
    b.server.fail_next(("503 Slow Down", "SlowDown"))
    rc, _, err = atlas("generate", "--store", b.url, "--domains", "plasma_physics", "--sequences",
                       "2", "--steps", "2", "--scheduler", "serial", "--no-catalog", "--quiet")
    assert rc == 0, err
    # more failures in a row than retries: one line naming the request and the answer
    monkeypatch.setenv("ATLAS_S3_MAX_RETRIES", "2")
    b.server.fail_next(*[("500 Internal Server Error", "InternalError")] * 3)
    rc, out, err = atlas("ls", "--store", b.url)
    assert rc == 2, out
    assert err.startswith(f"atlas: error: {b.url}: GET {b.server.endpoint}/{b.bucket}/atlas.zarr/")
    assert "after 2 retries: 500 Internal Server Error (InternalError)" in err
    b.server.fail_next(*[("503 Slow Down", "SlowDown")] * 3)
    with pytest.raises(RemoteStoreError, match="503"):
        AtlasStore.open(b.url).read("plasma_physics", "seq-00001", 64, "grad_y")
    rc, out, err = atlas("audit", "--store", b.url)
    assert rc == 0 and "OK" in out, err


# --------------------------------------------------------------------------- a server that goes away


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_server_gone_mid_run_then_back(private_s3: S3Bucket, procs: ProcTracker,
                                       tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    b = private_s3
    ref = tmp_path / "ref.zarr"
    r = procs.run([*ATLAS, "generate", "--store", str(ref), *PLAN, "--scheduler", "serial",
                   "--no-catalog", "--quiet"], timeout=300)
    assert r.proc.returncode == 0, r.describe()
    want = checksums(str(ref))
    monkeypatch.setenv("ATLAS_S3_MAX_RETRIES", "2")  # fail fast once it is gone (child inherits)
    cmd = [*ATLAS, "generate", "--store", b.url, *PLAN, "--scheduler", "serial", "--quiet"]
    watcher = StoreWatcher(b.url)
    watcher.start()
    try:
        run = procs.launch(cmd)
        assert wait_until(lambda: len(watcher.seen) >= 2 or run.proc.poll() is not None, 300), \
            run.describe()
        assert run.proc.poll() is None, f"the run finished before the server went away\n{run.describe()}"
        b.server.go_away()
        rc = run.wait(300)
        # the watcher meets the missing server too: waited for, not assumed after a fixed sleep
        met = wait_until(lambda: watcher.unreachable > 0 or bool(watcher.bad), 300)
        b.server.come_back()
        assert met, "the watcher never met the missing server"
        assert rc != 0, run.describe()
        first_err = run.stderr()
        assert b.server.endpoint in first_err and "cannot connect to the server" in first_err, first_err
        # one error line whatever was in flight when it went: no traceback, and none of
        # Python's shutdown warnings about the writes the failure left pending
        errors = [ln for ln in first_err.splitlines() if ln.startswith("atlas: error:")]
        assert len(errors) == 1 and "Traceback" not in first_err, first_err
        assert "never awaited" not in first_err, first_err
        assert b.server.secret not in run.stdout() + first_err
        again = procs.run(cmd, timeout=600)
        assert again.proc.returncode == 0, again.describe()
        assert wait_until(lambda: len(watcher.seen) == 8, 60)
    finally:
        watcher.stop.set()
        watcher.join(60)
    assert watcher.bad == [], watcher.bad
    assert watcher.unreachable > 0  # it did meet the missing server
    assert checksums(b.url) == want
    rc, out, err = atlas("audit", "--store", b.url)
    assert rc == 0 and "checked 72 arrays: OK" in out, out + err
    print(f"S3 SERVER GONE: reader passes {watcher.passes}, unreachable {watcher.unreachable}, "
          f"first run stderr: {first_err.strip()[:300]!r}", file=sys.stderr)


def test_reads_from_a_gone_server_fail_fast_naming_it(private_s3: S3Bucket,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    b = private_s3
    s = _small_store(b)
    monkeypatch.setenv("ATLAS_S3_MAX_RETRIES", "1")
    fresh = AtlasStore.open(b.url)
    fresh.array("plasma_physics", "seq-00000", 64, "energy")  # metadata read before it goes
    cached = DiskCachedReader(fresh, CacheSettings(b.cache / "c", 2**30))
    b.server.go_away()
    try:
        with pytest.raises(RemoteStoreError, match=rf"{b.bucket}.*ABORTED.*retry"):  # TensorStore
            fresh.read("plasma_physics", "seq-00000", 64, "energy")
        with pytest.raises(Exception) as exc:  # obstore's own error, from zarr's metadata read
            fresh.read("plasma_physics", "seq-00000", 64, "grad_x")
        assert explain(exc.value).startswith(f"GET {b.server.endpoint}/{b.bucket}/atlas.zarr/")
        assert explain(exc.value).endswith("after 1 retries: cannot connect to the server")
        with pytest.raises(RemoteStoreError, match="cannot connect to the server"):
            cached.read("plasma_physics/seq-00000/64/energy", (slice(None),) * 3)
        rc, _, err = atlas("ls", "--store", b.url)
        assert rc == 2 and "cannot connect to the server" in err and b.server.endpoint in err
    finally:
        b.server.come_back()
    assert s.read("plasma_physics", "seq-00000", 64, "energy").shape == (2, 64, 64)


#: what obstore raises when no credentials are configured anywhere (recorded on this machine):
#: the credential chain ends at the instance metadata service, which is not there
NO_CREDENTIALS = ("Generic S3 error: Error performing PUT http://169.254.169.254/latest/api/token "
                  "in 2.356498ms - Server returned non-2xx status code: 403 Forbidden: "
                  "resolve_deny: denied destination\n\nDebug source:\nGeneric {\n    store: \"S3\"")


def test_no_credentials_at_all_is_named_as_such() -> None:
    """Not "PUT http://169.254.169.254/latest/api/token: 403", which says nothing to a user."""
    from atlasstore.io.object_storage import explain_text

    msg = explain_text(NO_CREDENTIALS)
    assert msg.startswith("no AWS credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, "
                          "or AWS_PROFILE"), msg
    assert "403 Forbidden" in msg and "\n" not in msg


# --------------------------------------------------------------------------- one message for "gone"
# The service can go away at any moment of a request: before the connection (refused), as it
# is made (closed, reset), mid-body, or by not answering. Each client says so in its own words;
# the user is told one thing: the endpoint cannot be reached. The errors below are the clients'
# own, provoked against loopback sockets of this test.


def _serve(behaviour: str) -> Iterator[str]:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    endpoint = f"http://127.0.0.1:{srv.getsockname()[1]}"
    if behaviour == "refused":
        srv.close()
        yield endpoint
        return
    stop = threading.Event()
    conns: list[socket.socket] = []

    def handle(c: socket.socket) -> None:
        if behaviour == "reset":  # RST instead of FIN
            c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, (1).to_bytes(4, "little") * 2)
        if behaviour in ("closed", "reset"):
            c.close()
            return
        c.recv(4096)  # the request's head (and maybe some body)
        if behaviour == "cut-body":
            c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\nabc")
            c.close()
        elif behaviour == "put-cut":
            c.close()
        else:  # silent: holds the connection until the test ends
            conns.append(c)

    def loop() -> None:
        while not stop.is_set():
            try:
                c, _ = srv.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(c,), daemon=True).start()

    t = threading.Thread(target=loop, daemon=True)
    t.start()
    try:
        yield endpoint
    finally:
        stop.set()
        srv.close()
        for c in conns:
            c.close()


serve = contextlib.contextmanager(_serve)
GONE = ["refused", "closed", "reset", "cut-body", "put-cut", "silent"]


def _obstore_error(endpoint: str, op: Callable[[Any], Any]) -> BaseException:
    from obstore.store import S3Store

    st = S3Store("bkt", config={"endpoint": endpoint, "region": "us-east-1",  # type: ignore[arg-type]
                                "access_key_id": "a", "secret_access_key": "b"},
                 client_options={"allow_http": True, "connect_timeout": "1s", "timeout": "1s"},
                 retry_config={"max_retries": 1, "retry_timeout": timedelta(seconds=30),  # type: ignore[arg-type]
                               "backoff": {"init_backoff": timedelta(milliseconds=10),
                                           "max_backoff": timedelta(milliseconds=20), "base": 2}})
    with pytest.raises(Exception) as exc:
        op(st)
    return exc.value


@pytest.mark.parametrize("behaviour", GONE)
def test_obstore_gone_at_any_moment_is_one_message(behaviour: str) -> None:
    import obstore

    with serve(behaviour) as endpoint:
        errors = [_obstore_error(endpoint, lambda st: bytes(obstore.get(st, "k").bytes()))]
        if behaviour != "cut-body":  # a PUT's answer has no body to cut
            errors.append(_obstore_error(endpoint, lambda st: obstore.put(st, "k", b"x" * 4_000_000)))
    for err in errors:
        msg = explain(err, S3Settings(endpoint, "us-east-1", None, True))
        assert endpoint in msg and msg.endswith(UNREACHABLE), (behaviour, str(err)[:300])


@pytest.mark.parametrize("behaviour", ["refused", "closed", "cut-body", "silent"])
def test_botocore_gone_at_any_moment_is_one_message(behaviour: str) -> None:
    boto3 = pytest.importorskip("boto3")
    import botocore.config

    with serve(behaviour) as endpoint:
        c = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                         aws_access_key_id="a", aws_secret_access_key="b",
                         config=botocore.config.Config(retries={"max_attempts": 1},
                                                       read_timeout=1, connect_timeout=1))
        with pytest.raises(Exception) as exc:
            c.get_object(Bucket="bkt", Key="k")["Body"].read()
    msg = explain(exc.value, S3Settings(endpoint, "us-east-1", None, True))
    assert endpoint in msg and msg.endswith(UNREACHABLE), (behaviour, str(exc.value)[:300])
