"""Every operation on an ``s3://bucket/prefix`` store, against a real S3 server (moto's, on
loopback), with the endpoint and credentials only in the standard AWS environment.

The secret is random per server; no command output, run record, store object, catalog, cache
file, training run folder or pickled store may contain it. Writes use real conditional PUTs
(``If-None-Match: *``), which the commit protocol and the change log rely on.
"""

from __future__ import annotations

import contextlib
import io
import json
import pickle
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atlasstore import cli
from atlasstore.errors import NotAnAtlasStore, RemoteStoreError, StoreError
from atlasstore.io.object_storage import S3Location, S3Settings, zarr_store
from atlasstore.query import Query
from atlasstore.read.reader import Reader
from atlasstore.store import AtlasStore
from helpers.s3_fixtures import S3Bucket, use_server
from helpers.s3_server import S3Server

DOMAINS = ("plasma_physics", "fluid_dynamics")
TINY_TRAIN: dict[str, Any] = {
    "name": "tiny-s3", "seed": 0,
    "data": {"batch_size": 2, "val_fraction": 0.34, "prefetch": 1, "workers": 1,
             "resolution": 128},
    "model": {"width": 4, "max_width": 8, "depth": 1, "blocks": 1, "groups": 2, "dropout": 0.1},
    "optim": {"learning_rate": 1e-3, "schedule": "warmup_cosine", "warmup_steps": 2},
    "train": {"max_steps": 4, "log_every": 1, "eval_every": 2, "patience": 5,
              "keep_checkpoints": 2},
    "eval": {"mc_samples": 2, "rollout_steps": 2, "n_plots": 1, "batch_size": 2, "fit_windows": 4},
}


def atlas(*argv: str) -> tuple[int, str, str]:
    """``atlas ARGV`` in this process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(argv))
    return rc, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def world(s3_server: S3Server, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A store generated into a bucket through the CLI, with its default catalog (in the cache
    folder); every command's output is kept for the secret grep."""
    tmp = tmp_path_factory.mktemp("s3world")
    with pytest.MonkeyPatch.context() as mp:
        b = use_server(mp, s3_server, tmp)
        outputs: list[str] = []
        rc, out, err = atlas("init", "--store", b.url)
        assert rc == 0, err
        outputs += [out, err]
        rc, out, err = atlas("generate", "--store", b.url, "--domains", ",".join(DOMAINS),
                             "--sequences", "3", "--steps", "4", "--scheduler", "serial", "--quiet")
        assert rc == 0, err
        assert "6 sequences written" in out
        outputs += [out, err]
        yield {"b": b, "tmp": tmp, "outputs": outputs, "mp": mp}


def test_generate_commits_sequences_into_the_bucket(world: dict[str, Any]) -> None:
    b: S3Bucket = world["b"]
    objects = b.objects()
    assert "atlas.zarr/zarr.json" in objects
    assert "atlas.zarr/plasma_physics/seq-00002/256/energy/c.0.0.0" in objects
    s = AtlasStore.open(b.url)
    assert s.domains() == sorted(DOMAINS)
    assert s.sequences("fluid_dynamics") == ["seq-00000", "seq-00001", "seq-00002"]
    lock = json.loads(objects["atlas.zarr/_lock/zarr.json"])
    assert lock["attributes"] == {}  # released: the empty group document


def test_read_commands_work_on_the_bucket(world: dict[str, Any]) -> None:
    b: S3Bucket = world["b"]
    tmp: Path = world["tmp"]
    runs = [
        ("ls", "--store", b.url),
        ("ls", "--store", b.url, "plasma_physics"),
        ("stats", "--store", b.url),
        ("query", "--store", b.url, "--domains", "plasma_physics", "--scale", "128",
         "--window", "2", "--out", str(tmp / "w.npz")),
        ("show", "--store", b.url, "plasma_physics", "seq-00001", "--t", "2",
         "--out", str(tmp / "q.png")),
        ("catalog", "sync", "--store", b.url),
        ("catalog", "lineage", "--store", b.url, "plasma_physics/seq-00000/64/grad_x"),
        ("audit", "--store", b.url),
    ]
    for argv in runs:
        rc, out, err = atlas(*argv)
        assert rc == 0, (argv, err)
        world["outputs"] += [out, err]
    got = np.load(tmp / "w.npz")
    assert got["energy"].shape == (9, 2, 128, 128)
    direct = AtlasStore.open(b.url).read("plasma_physics", "seq-00000", 128, "energy", t=slice(0, 2))
    np.testing.assert_array_equal(got["energy"][0], direct)
    assert (tmp / "q.png").stat().st_size > 0
    rc, out, _ = atlas("audit", "--store", b.url)
    assert "checked 54 arrays: OK" in out
    # the default catalog of a remote store lives in the cache folder, and queries use it
    cats = list((b.cache / "catalogs").glob("*.catalog.sqlite"))
    assert len(cats) == 1
    rc, out, _ = atlas("query", "--store", b.url, "--domains", "fluid_dynamics", "--count")
    assert rc == 0 and out.strip() == "12"


def test_stream_reads_the_bucket_through_the_disk_cache(world: dict[str, Any]) -> None:
    from atlasstore.training.stream import stream

    b: S3Bucket = world["b"]
    s = AtlasStore.open(b.url)
    q = Query(s, domains=["plasma_physics"], scale=128, window=3)
    it = stream(q, n_in=2, n_out=1, batch_size=3, seed=0, normalise=False)
    batch = next(iter(it))
    it.close()
    w = q.windows()
    first = {wid: i for i, wid in enumerate(batch["ids"])}
    i, wid = next(iter(first.values())), next(iter(first))
    win = next(x for x in w if x.id == wid)
    want = s.read(win.domain, win.sequence_id, 128, "energy", t=slice(win.t0 + 2, win.t0 + 3))
    np.testing.assert_array_equal(np.asarray(batch["target"][i]), want)
    assert list((b.cache / "chunks").rglob("c.0.0.0")), "the stream did not fill the disk cache"


@pytest.mark.slow
def test_train_and_evaluate_on_the_bucket(world: dict[str, Any]) -> None:
    b: S3Bucket = world["b"]
    tmp: Path = world["tmp"]
    cfg = tmp / "tiny.json"
    cfg.write_text(json.dumps(TINY_TRAIN))
    rc, out, err = atlas("train", "--config", str(cfg), "--store", b.url, "--out", str(tmp / "run"))
    assert rc == 0, err
    world["outputs"] += [out, err]
    rc, out, err = atlas("evaluate", str(tmp / "run"), "--store", b.url, "--plots", "0",
                         "--mc-samples", "2", "--rollout-steps", "1")
    assert rc == 0, err
    world["outputs"] += [out, err]
    assert "VRMSE" in out
    run = json.loads((tmp / "run" / "run.json").read_text())
    assert b.url in json.dumps(run)


def test_the_secret_is_nowhere(world: dict[str, Any]) -> None:
    """Not in any output, store object (run records, sequence attributes, the lock), catalog,
    cache file, training run file, or a pickled store and its zarr Store."""
    b: S3Bucket = world["b"]
    secret = b.server.secret.encode()
    assert all(b.server.secret not in o for o in world["outputs"])
    objects = b.objects()
    assert any(k.startswith("atlas.zarr/_runs/") for k in objects)
    assert [k for k, v in objects.items() if secret in v] == []
    local = [p for p in world["tmp"].rglob("*") if p.is_file()]
    assert any(p.suffix == ".sqlite" for p in local)
    assert [p for p in local if secret in p.read_bytes()] == []
    s = AtlasStore.open(b.url)
    assert secret not in pickle.dumps(s.zarr_group.store)
    assert secret not in pickle.dumps(S3Settings.from_environment())


# --------------------------------------------------------------------------- the zarr Store


def test_set_if_not_exists_is_one_conditional_put(s3: S3Bucket) -> None:
    """zarr's FsspecStore would send HEAD then PUT (a race between writers); ours is one PUT
    with If-None-Match: * that the server refuses on an existing key."""
    from zarr.core.buffer import cpu
    from zarr.core.sync import sync

    zs = zarr_store(s3.prefix("c.zarr"), read_only=False)
    sync(zs.set_if_not_exists("k", cpu.Buffer.from_bytes(b"first")))
    s3.server.reset_counts()
    sync(zs.set_if_not_exists("k", cpu.Buffer.from_bytes(b"second")))
    assert s3.server.counts() == {"PUT": 1}
    assert s3.objects()["c.zarr/k"] == b"first"


def test_storage_options_cannot_carry_credentials(s3: S3Bucket) -> None:
    with pytest.raises(StoreError, match="credentials into task graphs"):
        AtlasStore.create(s3.url, storage_options={"secret_access_key": "x"})
    assert s3.objects() == {}


def test_s3_locations_are_checked(s3: S3Bucket) -> None:
    assert S3Location.parse("s3://b-1.x/a/b/") == S3Location("b-1.x", "a/b")
    assert S3Location.parse("s3://bucket").key("zarr.json") == "zarr.json"
    for bad in ("s3://B/x", "s3://ab/x", "s3://bucket/a//b", "s3://bucket/a/../b"):
        with pytest.raises(StoreError):
            S3Location.parse(bad)


def test_a_missing_bucket_is_named(s3: S3Bucket) -> None:
    url = "s3://no-such-bucket-atlas/x.zarr"
    for argv in (("init", "--store", url), ("ls", "--store", url),
                 ("generate", "--store", url, "--domains", "plasma_physics", "--sequences", "1",
                  "--steps", "2", "--scheduler", "serial", "--no-catalog", "--quiet")):
        rc, out, err = atlas(*argv)
        assert rc == 2, (argv, out, err)
        assert err.startswith(f"atlas: error: {url}: bucket 'no-such-bucket-atlas' does not exist"
                              f" at endpoint {s3.server.endpoint}"), (argv, err)
        assert len(err.strip().splitlines()) == 1
    with pytest.raises(NotAnAtlasStore, match="does not exist"):
        AtlasStore.open(url)
    with pytest.raises(RemoteStoreError, match="does not exist"):
        AtlasStore.create(url)


def test_an_empty_prefix_is_not_a_store(s3: S3Bucket) -> None:
    rc, _, err = atlas("ls", "--store", s3.prefix("nothing.zarr"))
    assert rc == 2 and "is not an atlas store (no Zarr v3 root group: no zarr.json)" in err


def test_profile_from_aws_files(s3: S3Bucket, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """AWS_PROFILE with ~/.aws-style files (endpoint_url in the config, the key pair in the
    credentials file), nothing else in the environment: writes (obstore through botocore's
    credential chain) and reads (TensorStore's profile credentials) both work."""
    config, creds = tmp_path / "config", tmp_path / "credentials"
    config.write_text(f"[profile atlas-test]\nregion = us-east-1\nendpoint_url = {s3.server.endpoint}\n")
    creds.write_text(f"[atlas-test]\naws_access_key_id = atlas-test-key\n"
                     f"aws_secret_access_key = {s3.server.secret}\n")
    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION",
              "AWS_DEFAULT_REGION"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_PROFILE", "atlas-test")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(config))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(creds))
    settings = S3Settings.from_environment()
    assert settings.endpoint == s3.server.endpoint and not settings.env_credentials
    rc, out, err = atlas("generate", "--store", s3.url, "--domains", "plasma_physics",
                         "--sequences", "1", "--steps", "2", "--scheduler", "serial", "--quiet")
    assert rc == 0, err
    s = AtlasStore.open(s3.url)
    assert Reader(s).name == "tensorstore"
    e = s.read("plasma_physics", "seq-00000", 64, "energy")
    assert e.shape == (2, 64, 64) and np.isfinite(e).all()
    assert s3.server.secret not in out + err


def test_a_fresh_process_reads_with_only_the_environment(s3: S3Bucket) -> None:
    """The CLI as a user runs it: a new process that knows the store only by its URL."""
    rc, _, err = atlas("generate", "--store", s3.url, "--domains", "plasma_physics",
                       "--sequences", "1", "--steps", "2", "--scheduler", "serial", "--no-catalog",
                       "--quiet")
    assert rc == 0, err
    r = subprocess.run([sys.executable, "-m", "atlasstore.cli", "ls", "-l", "--store", s3.url,
                        "plasma_physics"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("seq-00000\t2 steps")  # -l reads the sequence's document
