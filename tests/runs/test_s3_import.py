"""``atlas import npy|well|xarray`` into an ``s3://`` store against the real S3 server: the
sequences, the run records and the change log land in the bucket (each change-log entry by a
conditional create), the default catalog (in the cache folder) registers them, a re-run skips
what is complete, and the secret is in no output or object.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_ingest_xarray import DIMS, dataset
from zarr.core.buffer import cpu as cpu_buffer
from zarr.core.sync import sync

from atlasstore.audit import audit
from atlasstore.store import AtlasStore
from atlasstore.store.change_log import ChangeLog, entry_key
from helpers.cli_runner import run_cli
from helpers.predecessor_fixture import write_predecessor_folder
from helpers.s3_fixtures import S3Bucket
from helpers.well_fixture import write_well_file


def test_import_each_source_into_the_bucket(s3: S3Bucket, tmp_path: Path) -> None:
    write_predecessor_folder(tmp_path / "npy", domains=("plasma_physics",), sequences=2, steps=3,
                             shape=(64, 64))
    write_well_file(tmp_path / "trl.hdf5", n_traj=1, n_steps=3, nx=64, ny=64)
    dataset(runs=2, steps=3, ny=64, nx=96).to_netcdf(tmp_path / "t.nc", engine="h5netcdf")
    commands = [
        ("import", "npy", str(tmp_path / "npy")),
        ("import", "well", str(tmp_path / "trl.hdf5"), "--field", "density"),
        ("import", "xarray", str(tmp_path / "t.nc"), "--var", "T", "--dims",
         ",".join(f"{k}={v}" for k, v in DIMS.items()), "--sequence-dim", "run", "--isel",
         "level=0", "--domain", "era"),
    ]
    outputs: list[str] = []
    for argv in commands:
        rc, out, err = run_cli(*argv, "--store", s3.url, "--scheduler", "serial", "--quiet")
        assert rc == 0, (argv, out, err)
        assert "0 failed" in out and " 0 sequences written" not in out, out
        outputs += [out, err]

    store = AtlasStore.open(s3.url)
    assert store.sequences("plasma_physics") == ["seq_000", "seq_001"]
    assert store.sequences("era") == ["member0", "member1"]
    well_domains = [d for d in store.domains() if d not in ("plasma_physics", "era")]
    assert len(well_domains) == 1 and len(store.sequences(well_domains[0])) == 1
    assert audit(store).ok
    objects = s3.objects()
    assert "atlas.zarr/plasma_physics/seq_000/zarr.json" in objects
    runs = [k for k in objects if k.startswith("atlas.zarr/_runs/") and k.endswith("zarr.json")
            and k.count("/") == 3]
    assert len(runs) == 3, runs

    # the change log in the bucket holds one write per sequence (plus the run records) ...
    log = ChangeLog(store)
    changes = log.read(0)
    assert sorted(c.op for c in changes if c.op == "write") == ["write"] * 5
    assert [c.n for c in changes] == list(range(len(changes)))  # dense
    # ... and an entry is claimed by a conditional create: claiming a taken number changes nothing
    key = f"atlas.zarr/{entry_key(0)}"
    before = objects[key]
    zstore = AtlasStore.open(s3.url, mode="r+").zarr_group.store
    assert type(zstore).__name__ == "ObjectStore"  # obstore: If-None-Match: *, not exists-then-put
    sync(zstore.set_if_not_exists(entry_key(0), cpu_buffer.Buffer.from_bytes(b'{"stolen": 1}')))
    assert s3.server.client().get_object(Bucket=s3.bucket, Key=key)["Body"].read() == before
    json.loads(before)  # a whole entry document

    # the default catalog of the remote store registered every imported sequence
    rc, out, err = run_cli("query", "--store", s3.url, "--domains", "era", "--window", "2",
                           "--count")
    assert rc == 0 and out.strip() == "4", (out, err)
    assert len(list((s3.cache / "catalogs").glob("*.catalog.sqlite"))) == 1

    # the same command again: everything is already complete
    rc, out, err = run_cli(*commands[0], "--store", s3.url, "--scheduler", "serial", "--quiet")
    assert rc == 0 and "0 sequences written, 2 already complete, 0 failed" in out, (out, err)
    outputs += [out, err]
    secret = s3.server.secret
    assert not [o for o in outputs if secret in o]
    assert not [k for k, v in s3.objects().items() if secret.encode() in v]


@pytest.mark.slow
def test_import_on_a_cluster_into_the_bucket(s3: S3Bucket, tmp_path: Path) -> None:
    """The processes engine: each worker opens the bucket with only its own environment."""
    write_predecessor_folder(tmp_path / "npy", domains=("fluid_dynamics",), sequences=3, steps=3,
                             shape=(64, 64))
    rc, out, err = run_cli("import", "npy", str(tmp_path / "npy"), "--store", s3.url,
                           "--workers", "2", "--no-catalog", "--quiet")
    assert rc == 0 and "3 sequences written" in out, (out, err)
    assert audit(AtlasStore.open(s3.url)).ok
