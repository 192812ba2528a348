"""The docs' "Object storage and clusters" page runs, in order, against the S3 test server.

The bash block is read from docs/object-storage.md and run as written, with only what must change on a test
machine: the bucket gets a name of its own (the server is shared by the session), the plan is
small (4 sequences of 8 steps, as the README shows seq-00003; then 6 on the cluster: a clash
depends on the ids, seed and length, not on how many), `atlas train` stops after 2 steps, the
Well file is written by ``tests/helpers/well_fixture.py``, and the `dask scheduler` / `dask worker` lines
become a LocalCluster of one worker process on loopback (it inherits the AWS environment, as
the README asks of workers). The `export` line is the fixture's environment.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from atlasstore import cli
from atlasstore.store import AtlasStore
from helpers.doc_blocks import bash_commands, with_options
from helpers.s3_fixtures import S3Bucket

REPO = Path(__file__).resolve().parents[2]

SMALL = {"--sequences": "4", "--steps": "8"}


def s3_section() -> list[list[str]]:
    page = (REPO / "docs" / "object-storage.md").read_text()
    bash = re.findall(r"^```bash\n(.*?)^```$", page, re.S | re.M)
    assert len(bash) == 1, "docs/object-storage.md should have one bash block: update this test"
    assert "```python" not in page, "docs/object-storage.md has a Python block: run it here too"
    return bash_commands(bash[0])


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_docs_object_storage_commands_run(s3: S3Bucket, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    from dask.distributed import LocalCluster

    from helpers.well_fixture import write_well_file

    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    (tmp_path / "trl").mkdir()
    write_well_file(tmp_path / "trl" / "a.hdf5", n_traj=1, n_steps=6)
    bucket = f"readme-{uuid.uuid4().hex[:12]}"
    commands = s3_section()
    heads = [c[0] if c[0] != "atlas" else f"atlas {next(w for w in c[1:] if not w.startswith('-'))}"
             for c in commands]
    assert heads[:2] == ["export", "python"] and heads[-3:] == ["dask", "dask", "atlas generate"], \
        "the page changed: update this test's notes"
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                           host="127.0.0.1", dashboard_address=None)
    try:
        generates = 0
        for argv in commands[1:]:
            argv = [w.replace("s3://atlas/", f"s3://{bucket}/").replace("Bucket='atlas'",
                                                                         f"Bucket='{bucket}'")
                    for w in argv]
            if argv[0] == "python":
                subprocess.run([sys.executable, *argv[1:]], check=True, timeout=120)
                continue
            if argv[0] == "dask":
                continue  # the LocalCluster above
            assert argv[0] == "atlas", argv
            if "generate" in argv:
                generates += 1
                small = SMALL if generates == 1 else {**SMALL, "--sequences": "6"}
                argv = with_options(argv, small)
                if "--scheduler" in argv:
                    argv[argv.index("--scheduler") + 1] = cluster.scheduler_address
                else:
                    argv = with_options(argv, {"--scheduler": "serial"})
            if "train" in argv:
                argv = with_options(argv, {"--max-steps": "2", "--out": str(tmp_path / "run")})
            if "import" in argv:
                argv = [w for w in argv if w != "trl/*.hdf5"]
                argv[argv.index("well") + 1:argv.index("well") + 1] = ["trl/a.hdf5"]
                argv = with_options(argv, {"--scheduler": "serial"})
            code = cli.main(argv[1:])
            out, err = capsys.readouterr()
            assert code == 0, f"`{shlex.join(argv)}` exited {code}:\n{out[-2000:]}\n{err[-2000:]}"
    finally:
        cluster.close()
    store = AtlasStore.open(f"s3://{bucket}/runs.zarr")
    assert store.sequences("plasma_physics") == [f"seq-{i:05d}" for i in range(6)]
    assert AtlasStore.open(f"s3://{bucket}/trl.zarr").domains()
    assert (tmp_path / "quicklook.png").is_file()
