"""SeaweedFS as a real, multi-threaded S3 server for ``bench_remote.py`` (never for the tests: the
build takes minutes and needs Go).

SeaweedFS (https://github.com/seaweedfs/seaweedfs, Apache License 2.0: its ``LICENSE``, checked
by :func:`build`) is built once from its Go module through the Go module proxy and cached as
``~/.cache/atlasstore/seaweedfs-<VERSION>/weed`` (``$XDG_CACHE_HOME`` is honoured). SeaweedFS
tags its releases ``4.53``, not ``v4.53``, so the module proxy serves them only as
pseudo-versions; :data:`VERSION` is the one of release 4.53 (``weed/util/version``). ``go
install module@version`` refuses the module (its go.mod has ``replace`` directives), so the
module's source is downloaded (``go mod download``) and ``./weed`` built in a copy of it.

:class:`SeaweedServer` runs ``weed server -s3`` single-node on 127.0.0.1 (master, volume server,
filer and S3 gateway in one Go process; every port chosen free; data in a temporary folder
removed on stop) with an identity file giving one access/secret key pair, and counts the S3
requests reaching it from its Prometheus metrics (``SeaweedFS_s3_request_total``). It has the
part of ``tests/helpers/s3_server.S3Server``'s interface the stream benchmark uses (``env``,
``counts``, ``reset_counts``, ``create_bucket``, ``stop``).

    python benchmarks/seaweedfs.py build      # build (or find) the binary, print its path
    python benchmarks/seaweedfs.py serve      # run one until Ctrl-C, printing its AWS_* settings
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

MODULE = "github.com/seaweedfs/seaweedfs"
#: SeaweedFS 4.53 (``VERSION_NUMBER`` in weed/util/version/constants.go), 2026-11-09
VERSION = "v0.0.0-20261109003541-7506e5f91cd6"
RELEASE = "4.53"
ACCESS_KEY_ID = "atlas-bench-key"
REGION = "us-east-1"


class Unavailable(RuntimeError):
    """SeaweedFS cannot be built here (no Go, no module proxy, a failed build)."""


def go_version() -> str:
    """``go version``'s answer (``go1.26.8 linux/amd64``), or "no Go"."""
    go = shutil.which("go")
    if go is None:
        return "no Go"
    out = subprocess.run([go, "version"], capture_output=True, text=True).stdout.split()
    return " ".join(out[2:4]) if len(out) >= 4 else "go (version unknown)"


def binary() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "atlasstore" / f"seaweedfs-{VERSION}" / "weed"


def build(log: Path | None = None) -> Path:
    """The cached ``weed`` binary, built first if missing (minutes; niced). Raises
    :class:`Unavailable` with the reason when it cannot be."""
    out = binary()
    if out.exists():
        return out
    go = shutil.which("go")
    if go is None:
        raise Unavailable("Go is not installed (https://go.dev/dl/), so SeaweedFS cannot be built")
    env = {**os.environ, "GOFLAGS": "-buildvcs=false"}
    with tempfile.TemporaryDirectory(prefix="seaweedfs_build_") as tmp:
        dl = subprocess.run([go, "mod", "download", "-json", f"{MODULE}@{VERSION}"], cwd=tmp,
                            capture_output=True, text=True, env=env)
        try:
            info = json.loads(dl.stdout)
        except ValueError:
            info = {}
        if dl.returncode or "Dir" not in info:
            raise Unavailable(f"go mod download {MODULE}@{VERSION} failed: "
                              f"{info.get('Error') or dl.stderr.strip()[-500:]}")
        licence = (Path(info["Dir"]) / "LICENSE").read_text()[:200]
        if "Apache License" not in licence or "Version 2.0" not in licence:
            raise Unavailable(f"{MODULE}@{VERSION}: LICENSE is not Apache-2.0 ({licence[:80]!r})")
        src = Path(tmp) / "src"
        shutil.copytree(info["Dir"], src)
        for p in [src, *src.rglob("*")]:  # the module cache is read-only
            p.chmod(p.stat().st_mode | 0o200)
        out.parent.mkdir(parents=True, exist_ok=True)
        part = out.with_name(f".weed.{uuid.uuid4().hex[:8]}")
        with open(log or os.devnull, "w") as fh:
            rc = subprocess.run(["nice", "-n", "10", go, "build", "-ldflags=-s -w",
                                 "-o", str(part), "./weed"], cwd=src, stdout=fh,
                                stderr=subprocess.STDOUT, env=env).returncode
        if rc:
            part.unlink(missing_ok=True)
            raise Unavailable(f"go build of SeaweedFS {RELEASE} failed (exit {rc})"
                              + (f"; see {log}" if log else ""))
        os.replace(part, out)
    return out


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


class SeaweedServer:
    """``weed server -s3`` on loopback, single node, data in a temporary folder."""

    def __init__(self, weed: Path | None = None) -> None:
        self.weed = weed or binary()
        self.proc: subprocess.Popen[bytes] | None = None
        self.endpoint = ""
        self.secret = f"atlas-bench-secret-{uuid.uuid4().hex}"
        self.dir: Path | None = None
        self._metrics = ""
        self._base: Counter[str] = Counter()
        self._log: Any = None

    def start(self, log: Path | None = None, timeout: float = 120.0) -> SeaweedServer:
        self.dir = Path(tempfile.mkdtemp(prefix="seaweedfs_"))
        (self.dir / "data").mkdir()
        ident = {"identities": [{"name": "atlas", "credentials": [
            {"accessKey": ACCESS_KEY_ID, "secretKey": self.secret}],
            "actions": ["Admin", "Read", "List", "Tagging", "Write"]}]}
        cfg = self.dir / "s3.json"
        cfg.write_text(json.dumps(ident))
        cfg.chmod(0o600)
        # every port explicit: a gRPC port left out is its HTTP port + 10000, past 65535 for
        # many of the ports the OS hands out
        (m, mg, v, vg, f, fg, s3, s3g, met) = _free_ports(9)
        self.endpoint = f"http://127.0.0.1:{s3}"
        self._metrics = f"http://127.0.0.1:{met}/metrics"
        cmd = [str(self.weed), "server", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
               f"-dir={self.dir / 'data'}", f"-master.port={m}", f"-master.port.grpc={mg}",
               f"-volume.port={v}", f"-volume.port.grpc={vg}", f"-filer.port={f}",
               f"-filer.port.grpc={fg}", "-s3", f"-s3.port={s3}", f"-s3.port.grpc={s3g}", f"-s3.config={cfg}",
               "-s3.port.iceberg=0", "-s3.port.lance=0", f"-metricsPort={met}",
               "-master.volumeSizeLimitMB=1024", "-volume.max=0"]
        self._log = open(log or os.devnull, "wb")
        self.proc = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:  # up once a bucket can be made and listed
            if self.proc.poll() is not None:
                self.stop()
                raise Unavailable(f"weed server exited with {self.proc.returncode}"
                                  + (f"; see {log}" if log else ""))
            try:
                c = self.client()
                c.create_bucket(Bucket="atlas-probe")
                c.list_objects_v2(Bucket="atlas-probe")
                c.delete_bucket(Bucket="atlas-probe")
                return self
            except Exception as exc:  # noqa: BLE001 - not up yet
                last = exc
                time.sleep(0.5)
        self.stop()
        raise Unavailable(f"SeaweedFS's S3 gateway did not answer within {timeout:.0f} s: {last}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        if self._log is not None:
            self._log.close()
            self._log = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def env(self) -> dict[str, str]:
        return {"AWS_ENDPOINT_URL": self.endpoint, "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
                "AWS_SECRET_ACCESS_KEY": self.secret, "AWS_DEFAULT_REGION": REGION,
                "AWS_REGION": REGION}

    def client(self) -> Any:
        import boto3

        return boto3.client("s3", endpoint_url=self.endpoint, aws_access_key_id=ACCESS_KEY_ID,
                            aws_secret_access_key=self.secret, region_name=REGION)

    def create_bucket(self, name: str) -> None:
        self.client().create_bucket(Bucket=name)

    def _totals(self) -> Counter[str]:
        """S3 requests answered so far by action (GetObject, PutObject, ...), all status codes."""
        with urllib.request.urlopen(self._metrics, timeout=30) as resp:
            text = resp.read().decode()
        out: Counter[str] = Counter()
        for line in text.splitlines():
            if line.startswith("SeaweedFS_s3_request_total{"):
                labels, value = line.rsplit(" ", 1)
                kind = labels.split('type="', 1)[1].split('"', 1)[0]
                out[kind] += int(float(value))
        return out

    def counts(self) -> Counter[str]:
        now = self._totals()
        now.subtract(self._base)
        return +now

    def reset_counts(self) -> None:
        self._base = self._totals()


def main(argv: list[str]) -> int:
    if argv[:1] == ["build"]:
        print(build(Path(argv[1]) if len(argv) > 1 else None))
        return 0
    if argv[:1] == ["serve"]:
        srv = SeaweedServer(build()).start()
        try:
            for k, v in srv.env().items():
                print(f"export {k}={v}")
            sys.stdout.flush()
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            return 0
        finally:
            srv.stop()
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
