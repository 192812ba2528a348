"""``atlas generate --scheduler tcp://...`` on a real Dask cluster (``dask scheduler`` and
``dask worker`` processes started here, loopback only) writing to an s3:// store.

The workers take the credentials from their own environment: the graph the driver sends holds
no secret (the scheduler keeps every task it receives, pickled, for the grep). ``kill -9`` of a
worker and of the driver mid-run, then the same command: the checksums equal an uninterrupted
run, and a reader polling meanwhile never sees a partial sequence.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from atlasstore.store import AtlasStore
from helpers.proc_helpers import ATLAS, ProcTracker, kill9, wait_until
from helpers.s3_fixtures import S3Bucket, StoreWatcher, use_server
from helpers.s3_server import S3Server

DASK = str(Path(sys.executable).with_name("dask"))
RECORDER = str(Path(__file__).parents[1] / "helpers" / "dask_graph_recorder.py")
PLAN = ["--domains", "plasma_physics,fluid_dynamics", "--sequences", "5", "--steps", "3",
        "--seed", "21"]
N_SEQUENCES = 10


class Cluster:
    def __init__(self, procs: ProcTracker, folder: Path) -> None:
        sched_file = folder / "scheduler.json"
        self.scheduler = procs.launch([DASK, "scheduler", "--host", "127.0.0.1", "--port", "0",
                                       "--dashboard-address", "127.0.0.1:0", "--scheduler-file",
                                       str(sched_file), "--preload", RECORDER])
        assert wait_until(lambda: sched_file.exists() and sched_file.stat().st_size > 0
                          or self.scheduler.proc.poll() is not None, 120), self.scheduler.describe()
        self.address = json.loads(sched_file.read_text())["address"]
        self.workers = procs.launch([DASK, "worker", "--scheduler-file", str(sched_file), "--host",
                                     "127.0.0.1", "--dashboard-address", "127.0.0.1:0",
                                     "--nworkers", "2", "--nthreads", "1", "--memory-limit", "1GiB",
                                     "--death-timeout", "60", "--local-directory",
                                     str(folder / "workers")])
        with self.client() as c:
            c.wait_for_workers(2, timeout=180)

    def client(self) -> Any:
        from dask.distributed import Client

        return Client(self.address, timeout="30s")

    def worker_pids(self) -> list[int]:
        """The worker processes (children of the nannies), not the nannies."""
        with self.client() as c:
            return sorted(int(pid) for pid in c.run(os.getpid).values())

    def recorded(self) -> list[bytes]:
        with self.client() as c:
            return list(c.run_on_scheduler(
                lambda dask_scheduler: list(dask_scheduler.plugins["atlas-graph-recorder"].blobs)))

    def idle(self) -> bool:
        with self.client() as c:
            return not c.run_on_scheduler(lambda dask_scheduler: [
                k for k, ts in dask_scheduler.tasks.items() if ts.state in ("processing", "waiting")])


@pytest.fixture(scope="module")
def cluster_env(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory
                ) -> Iterator[tuple[Cluster, S3Bucket, ProcTracker, Path]]:
    """A bucket and a cluster whose processes got the AWS environment when they started."""
    folder = tmp_path_factory.mktemp("cluster")
    procs = ProcTracker(folder)
    with pytest.MonkeyPatch.context() as mp:
        b = use_server(mp, s3_server, folder)
        try:
            cluster = Cluster(procs, folder)
            yield cluster, b, procs, folder
        finally:
            procs.cleanup()


@pytest.fixture(scope="module")
def reference(cluster_env: Any) -> dict[str, str]:
    """Checksums of the plan generated serially into a local store."""
    _, _, procs, folder = cluster_env
    r = procs.run([*ATLAS, "generate", "--store", str(folder / "ref.zarr"), *PLAN, "--scheduler",
                   "serial", "--no-catalog", "--quiet"], timeout=300)
    assert r.proc.returncode == 0, r.describe()
    return checksums(str(folder / "ref.zarr"))


def checksums(url: str) -> dict[str, str]:
    s = AtlasStore.open(url)
    return {f"{d}/{q}/{k}": r["checksum"] for d, q in s.iter_sequences()
            for k, r in s.sequence_info(d, q)["arrays"].items()}


def _cmd(url: str, address: str) -> list[str]:
    return [*ATLAS, "generate", "--store", url, *PLAN, "--scheduler", address, "--quiet"]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cluster_generates_into_s3_and_the_graph_holds_no_secret(cluster_env: Any,
                                                                  reference: dict[str, str]) -> None:
    cluster, b, procs, _ = cluster_env
    secret = b.server.secret
    with cluster.client() as c:  # the workers do have the secret: in their own environment
        digests = c.run(lambda: hashlib.sha256(os.environ.get("AWS_SECRET_ACCESS_KEY", "").encode())
                        .hexdigest())
    assert set(digests.values()) == {hashlib.sha256(secret.encode()).hexdigest()}
    url = b.prefix("plain.zarr")
    before = len(cluster.recorded())
    r = procs.run(_cmd(url, cluster.address), timeout=600)
    assert r.proc.returncode == 0, r.describe()
    assert f"{N_SEQUENCES} sequences written" in r.stdout()
    assert f"({cluster.address}, as given)" in r.stdout()
    assert checksums(url) == reference
    graph = cluster.recorded()[before:]
    assert len(graph) == N_SEQUENCES
    assert all(url.encode() in blob for blob in graph)  # the grep sees the task's arguments
    assert not [blob for blob in graph if secret.encode() in blob]
    assert secret not in r.stdout() + r.stderr()
    # a marker passed as an argument is found the same way: the grep would see a secret
    with cluster.client() as c:
        c.submit(len, "marker-7f3a9c", pure=False).result()
    assert any(b"marker-7f3a9c" in blob for blob in cluster.recorded())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_a_worker_mid_run(cluster_env: Any, reference: dict[str, str]) -> None:
    cluster, b, procs, _ = cluster_env
    url = b.prefix("worker-kill.zarr")
    watcher = StoreWatcher(url)
    watcher.start()
    try:
        run = procs.launch(_cmd(url, cluster.address))
        assert wait_until(lambda: len(watcher.seen) >= 2 or run.proc.poll() is not None, 300), \
            run.describe()
        assert run.proc.poll() is None, "finished before the kill: make the plan larger"
        victim = cluster.worker_pids()[0]
        kill9(victim)
        assert run.wait(600) == 0, run.describe()
        again = procs.run(_cmd(url, cluster.address), timeout=600)
        assert again.proc.returncode == 0, again.describe()
        assert f"0 sequences written, {N_SEQUENCES} already complete" in again.stdout()
        assert wait_until(lambda: len(watcher.seen) == N_SEQUENCES, 60)
    finally:
        watcher.stop.set()
        watcher.join(60)
    assert watcher.bad == [], watcher.bad
    assert checksums(url) == reference
    assert victim not in cluster.worker_pids()  # it was really killed (the nanny restarted one)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_kill_the_driver_mid_run(cluster_env: Any, reference: dict[str, str]) -> None:
    cluster, b, procs, _ = cluster_env
    url = b.prefix("driver-kill.zarr")
    watcher = StoreWatcher(url)
    watcher.start()
    try:
        run = procs.launch(_cmd(url, cluster.address))
        assert wait_until(lambda: len(watcher.seen) >= 2 or run.proc.poll() is not None, 300), \
            run.describe()
        assert run.proc.poll() is None, "finished before the kill: make the plan larger"
        kill9(run.pid)
        run.wait(30)
        seen_at_kill = len(watcher.seen)
        again = procs.run(_cmd(url, cluster.address), timeout=600)
        assert again.proc.returncode == 0, again.describe()
        assert wait_until(lambda: len(watcher.seen) == N_SEQUENCES, 60)
    finally:
        watcher.stop.set()
        watcher.join(60)
    assert seen_at_kill < N_SEQUENCES
    assert watcher.bad == [], watcher.bad
    assert checksums(url) == reference
    s = AtlasStore.open(url)
    assert all(s.sequence_status(d, q) == "complete" for d in s.domains()
               for q in s.sequences(d, include_incomplete=True))
    assert wait_until(cluster.idle, 120)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_cluster_imports_into_s3_and_the_graph_holds_no_secret(cluster_env: Any) -> None:
    """``atlas import npy --scheduler tcp://...``: the workers read the source folder and write
    the bucket with their own credentials; the result equals a serial import into a local store."""
    from helpers.predecessor_fixture import write_predecessor_folder

    cluster, b, procs, folder = cluster_env
    src = folder / "npy-source"
    write_predecessor_folder(src, domains=("plasma_physics",), sequences=3, steps=3, shape=(64, 64))
    local = folder / "import-ref.zarr"
    r = procs.run([*ATLAS, "import", "npy", str(src), "--store", str(local), "--scheduler",
                   "serial", "--no-catalog", "--quiet"], timeout=300)
    assert r.proc.returncode == 0, r.describe()
    url = b.prefix("imported.zarr")
    before = len(cluster.recorded())
    r = procs.run([*ATLAS, "import", "npy", str(src), "--store", url, "--scheduler",
                   cluster.address, "--quiet"], timeout=600)
    assert r.proc.returncode == 0, r.describe()
    assert "3 sequences written" in r.stdout() and f"({cluster.address}, as given)" in r.stdout()
    assert checksums(url) == checksums(str(local))
    graph = cluster.recorded()[before:]
    assert graph and any(url.encode() in blob for blob in graph)
    assert not [blob for blob in graph if b.server.secret.encode() in blob]
    assert b.server.secret not in r.stdout() + r.stderr()
