"""A real S3 server for the tests and benchmarks: moto's S3 (``moto[server]``) in its own process
on a loopback port the OS chooses, behind a WSGI middleware that counts the requests reaching it
and answers queued faults (500 InternalError, 503 SlowDown) instead of moto.

Run as a script it prints its port on the first line of stdout and serves until SIGTERM
(``scripts/test`` starts one for the session this way). Control, not counted as S3 requests:

- ``GET /_atlas/counts`` -> ``{"GET": n, ...}``; ``GET /_atlas/requests`` -> the requests
  (``"METHOD /bucket/key?query"``); ``POST /_atlas/counts/reset`` forgets both
- ``POST /_atlas/faults`` with a JSON list of ``[status, code]`` answered by the next requests
- ``POST /_atlas/clone`` copies objects inside the server (benchmark seeding, see
  :func:`S3Server.clone`)
- SIGUSR1: go away (stop listening, drop open connections unanswered); SIGUSR2: come back on
  the same port with the same data. The tests use these for a server that dies mid-run.
- It exits by itself when the process that started it is gone.

:class:`S3Server` is the tests' handle on such a process. Every process it starts is stopped by
its pid.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

#: the test credentials' key id; the secret is random per server so tests can grep for it
ACCESS_KEY_ID = "atlas-test-key"
REGION = "us-east-1"


# --------------------------------------------------------------------------- server process


class _Middleware:
    def __init__(self, app: Any) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.counts: Counter[str] = Counter()
        self.requests: list[str] = []  # "METHOD /path?query" since the last reset (capped)
        self.faults: list[tuple[str, str]] = []

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/_atlas/"):
            return self._control(path, environ, start_response)
        if not path.startswith("/moto-api"):
            with self.lock:
                self.counts[environ["REQUEST_METHOD"]] += 1
                if len(self.requests) < 100_000:
                    q = environ.get("QUERY_STRING")
                    self.requests.append(f"{environ['REQUEST_METHOD']} {path}{'?' + q if q else ''}")
                fault = self.faults.pop(0) if self.faults else None
            if fault:
                status, code = fault
                body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                        f'<Message>injected by the test server</Message></Error>').encode()
                start_response(status, [("Content-Type", "application/xml"),
                                        ("Content-Length", str(len(body)))])
                return [body]
        return self.app(environ, start_response)

    def _control(self, path: str, environ: dict[str, Any], start_response: Any) -> Any:
        n = int(environ.get("CONTENT_LENGTH") or 0)
        body = json.loads(environ["wsgi.input"].read(n) or b"null") if n else None
        with self.lock:
            if path == "/_atlas/counts":
                out: Any = dict(self.counts)
            elif path == "/_atlas/counts/reset":
                self.counts.clear()
                self.requests.clear()
                out = {}
            elif path == "/_atlas/requests":
                out = list(self.requests)
            elif path == "/_atlas/faults":
                self.faults.extend((str(s), str(c)) for s, c in body)
                out = {"queued": len(self.faults)}
            elif path == "/_atlas/clone":
                out = {"copied": _clone(body)}
            else:
                out = {"error": f"unknown control path {path}"}
        raw = json.dumps(out).encode()
        start_response("200 OK", [("Content-Type", "application/json"),
                                  ("Content-Length", str(len(raw)))])
        return [raw]


def _clone(req: dict[str, Any]) -> int:
    """Copy every object under ``src`` to each ``prefix`` of ``copies``, replacing ``old`` by
    ``new`` in the ``zarr.json`` documents; written straight into moto's backend."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.s3.models import s3_backends

    backend = s3_backends[DEFAULT_ACCOUNT_ID]["aws"]
    bucket, src = req["bucket"], req["src"]
    objs = []
    for key in list(backend.get_bucket(bucket).keys.keys()):
        if key.startswith(src):
            objs.append((key[len(src):], backend.get_object(bucket, key).value))
    n = 0
    for copy in req["copies"]:
        old, new = copy["replace"]
        for rel, value in objs:
            if rel.endswith("zarr.json"):
                value = value.replace(old.encode(), new.encode())
            backend.put_object(bucket, copy["prefix"] + rel, value)
            n += 1
    return n


def serve(port: int = 0) -> None:
    """Serve until SIGTERM; print the port first (the parent reads it)."""
    import logging

    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import make_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    app = _Middleware(DomainDispatcherApplication(create_backend_app))
    state = {"away": False}
    conns: set[Any] = set()  # the open client connections (kept alive between requests)
    conns_lock = threading.Lock()

    class Handler(MotoRequestHandler):
        def setup(self) -> None:
            super().setup()
            with conns_lock:
                conns.add(self.connection)

        def finish(self) -> None:
            with conns_lock:
                conns.discard(self.connection)
            super().finish()

        def handle_one_request(self) -> None:
            if state["away"]:  # a kept-alive connection of a server that went away
                self.close_connection = True
                return
            super().handle_one_request()

    box: dict[str, Any] = {}

    def start(p: int) -> int:
        httpd = make_server("127.0.0.1", p, app, threaded=True, request_handler=Handler)
        httpd.daemon_threads = True
        httpd.block_on_close = False  # type: ignore[attr-defined]
        t = threading.Thread(target=httpd.serve_forever, daemon=True)
        t.start()
        box.update(httpd=httpd, thread=t)
        return int(httpd.server_address[1])

    bound = start(port)
    print(bound, flush=True)
    parent = os.getppid()

    def orphaned() -> None:  # the process that started it died (even by kill -9): go too
        while os.getppid() == parent:
            time.sleep(1.0)
        os._exit(0)

    threading.Thread(target=orphaned, daemon=True).start()
    wake = threading.Event()
    pending: list[int] = []

    def on_signal(signum: int, _frame: Any) -> None:
        pending.append(signum)
        wake.set()

    for sig in (signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM):
        signal.signal(sig, on_signal)
    while True:
        wake.wait()
        wake.clear()
        while pending:
            sig = pending.pop(0)
            if sig == signal.SIGTERM:
                return
            if sig == signal.SIGUSR1 and not state["away"]:
                state["away"] = True
                box["httpd"].shutdown()
                box["httpd"].server_close()
                with conns_lock:  # reset the kept-alive connections too, as a dead host would
                    for c in list(conns):
                        with contextlib.suppress(OSError):
                            c.shutdown(socket.SHUT_RDWR)
                print("away", flush=True)
            elif sig == signal.SIGUSR2 and state["away"]:
                for _ in range(100):
                    try:
                        start(bound)
                        break
                    except OSError:
                        time.sleep(0.1)
                state["away"] = False
                print("back", flush=True)


# --------------------------------------------------------------------------- the tests' handle


class S3Server:
    """A server process started by this handle, or one already running (``endpoint``).

    ``env()`` is the standard AWS environment a client needs (endpoint, key pair, region).
    """

    def __init__(self, endpoint: str | None = None, secret: str | None = None) -> None:
        self.proc: subprocess.Popen[str] | None = None
        self.endpoint = endpoint or ""
        self.secret = secret or f"atlas-test-secret-{uuid.uuid4().hex}"
        self._log: Any = None

    # lifecycle
    def start(self, log: Path | None = None, timeout: float = 60.0) -> S3Server:
        self._log = open(log or os.devnull, "w")
        self.proc = subprocess.Popen([sys.executable, __file__], stdout=subprocess.PIPE,
                                     stderr=self._log, text=True, start_new_session=True)
        assert self.proc.stdout is not None
        line = _readline(self.proc, timeout)
        self.endpoint = f"http://127.0.0.1:{int(line)}"
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self._log is not None:
            self._log.close()
            self._log = None

    def go_away(self) -> None:
        """Stop answering (connections refused or dropped); the data stays."""
        assert self.proc is not None, "only a server this handle started can go away"
        self.proc.send_signal(signal.SIGUSR1)
        assert _readline(self.proc, 30) == "away"

    def come_back(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGUSR2)
        assert _readline(self.proc, 30) == "back"

    # client side
    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION}

    def _call(self, path: str, body: Any = None, method: str = "POST",
              content_type: str = "application/json") -> Any:
        data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        req = urllib.request.Request(self.endpoint + path, data=data, method=method,
                                     headers={"Content-Type": content_type})
        with urllib.request.urlopen(req, timeout=600) as resp:
            raw = resp.read()
        return json.loads(raw) if raw and path.startswith("/_atlas") else raw

    def counts(self) -> Counter[str]:
        return Counter(self._call("/_atlas/counts", method="GET"))

    def requests(self) -> list[str]:
        return list(self._call("/_atlas/requests", method="GET"))

    def reset_counts(self) -> None:
        self._call("/_atlas/counts/reset", body={})

    def fail_next(self, *faults: tuple[str, str]) -> None:
        """Answer the next requests with these (status, code) instead of moto."""
        self._call("/_atlas/faults", body=[list(f) for f in faults])

    def clone(self, bucket: str, src: str, copies: list[tuple[str, str, str]]) -> int:
        """Copy the objects under ``src`` to each (prefix, old, new), replacing ``old`` with
        ``new`` in their ``zarr.json`` documents, inside the server (no HTTP per object)."""
        body = {"bucket": bucket, "src": src,
                "copies": [{"prefix": p, "replace": [o, n]} for p, o, n in copies]}
        return int(self._call("/_atlas/clone", body=body)["copied"])

    def reset(self) -> None:
        """Forget every bucket and object (moto's reset)."""
        self._call("/moto-api/reset", body=b"")

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY_ID,
                            aws_secret_access_key=self.secret, region_name=REGION)

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def enable_auth(self) -> tuple[str, str]:
        """Make the server check credentials (moto checks none by default): an IAM user with
        ``s3:*`` gets a key pair, then auth is turned on. Returns that (key id, secret); the
        server's usual pair is refused from now on. Irreversible for this server process."""
        import boto3

        iam = boto3.client("iam", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY_ID,
                           aws_secret_access_key=self.secret, region_name=REGION)
        iam.create_user(UserName="atlas")
        iam.put_user_policy(UserName="atlas", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        key = iam.create_access_key(UserName="atlas")["AccessKey"]
        self._call("/moto-api/reset-auth", body=b"0", content_type="text/plain")
        return key["AccessKeyId"], key["SecretAccessKey"]


def _readline(proc: subprocess.Popen[str], timeout: float) -> str:
    """The next stdout line of ``proc`` within ``timeout`` s (AssertionError otherwise)."""
    assert proc.stdout is not None
    box: list[str] = []
    t = threading.Thread(target=lambda: box.append(proc.stdout.readline()), daemon=True)  # type: ignore[union-attr]
    t.start()
    t.join(timeout)
    if not box or not box[0]:
        raise AssertionError(f"the S3 test server said nothing within {timeout} s "
                             f"(exit code {proc.poll()})")
    return box[0].strip()


if __name__ == "__main__":
    serve(int(sys.argv[1]) if len(sys.argv) > 1 else 0)
