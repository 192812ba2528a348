"""The previous release's stores still open: tests/data/store-0.1.0 was written by atlasstore
0.1.0 (commit 2aec6f6) and expected-0.1.0.json holds what that release read from it."""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import xarray as xr
import zarr

from atlasstore.audit import audit
from atlasstore.catalog.sqlite import SQLiteCatalog
from atlasstore.catalog.sync import sync_catalog
from atlasstore.query import Query
from atlasstore.store import AtlasStore, RunLog
from atlasstore.training.stream import stream

DATA = Path(__file__).parents[1] / "data"
EXPECTED: dict[str, Any] = json.loads((DATA / "expected-0.1.0.json").read_text())


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """A copy, so no test can change the committed fixture."""
    dst = tmp_path / "store-0.1.0"
    shutil.copytree(DATA / "store-0.1.0", dst)
    return dst


def _digest(a: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()


def _check_contents(store: AtlasStore) -> None:
    assert {d: store.sequences(d) for d in store.domains()} == EXPECTED["domains"]
    for key, info in EXPECTED["info"].items():
        domain, seq = key.split("/")
        assert json.loads(json.dumps(store.sequence_info(domain, seq), default=str)) == info
    for key, want in EXPECTED["arrays"].items():
        domain, seq, level, field = key.split("/")
        a = np.asarray(store.read(domain, seq, int(level), field))
        assert (list(a.shape), str(a.dtype)) == (want["shape"], want["dtype"]), key
        assert _digest(a) == want["sha256"], key
        assert float(a.astype(np.float64).sum()) == want["sum"], key
        assert (float(a.flat[0]), float(a.flat[-1])) == (want["first"], want["last"]), key
    for key, want in EXPECTED["coordinates"].items():
        domain, seq, level = key.split("/")
        got = store.coordinates(domain, seq, int(level))
        assert json.loads(json.dumps(got, default=lambda v: np.asarray(v).tolist())) == want
    assert sorted(r["run_id"] for r in RunLog(store).list()) == EXPECTED["runs"]


def test_old_store_reads_the_same_read_only(old_store: Path) -> None:
    _check_contents(AtlasStore.open(str(old_store), mode="r"))


def test_old_store_opens_for_writing_and_keeps_its_contents(old_store: Path) -> None:
    store = AtlasStore.open(str(old_store), mode="r+")
    _check_contents(store)
    # a write into the old store: a new sequence beside the old ones, then the old ones unchanged
    energy = np.ones((2, 64, 64), np.float32)
    store.write_sequence("fluid_dynamics", "seq-00009", energy)
    assert "seq-00009" in store.sequences("fluid_dynamics")
    store.delete_sequence("fluid_dynamics", "seq-00009")
    _check_contents(AtlasStore.open(str(old_store), mode="r"))


def test_old_store_passes_audit(old_store: Path) -> None:
    report = audit(AtlasStore.open(str(old_store), mode="r"))
    assert report.ok, report.problems
    assert report.checked_arrays == len(EXPECTED["arrays"])


def test_old_store_answers_queries_and_streams(old_store: Path) -> None:
    store = AtlasStore.open(str(old_store), mode="r")
    counts = EXPECTED["query_counts"]
    assert Query(store, domains=("fluid_dynamics",), scale=64).count() == \
        counts["fluid_dynamics/64"]
    assert Query(store, domains=("fluid_dynamics",), scale=64, window=2).count() == \
        counts["fluid_dynamics/64/window2"]
    assert Query(store, domains=("lab",), scale=32).count() == counts["lab/32"]
    q = Query(store, domains=("fluid_dynamics",), scale=64, window=2)
    it = stream(q, n_in=1, n_out=1, batch_size=2, normalise=False, prefetch=0, shuffle=False)
    try:
        batch = next(iter(it))
    finally:
        it.close()
    wid = batch["ids"][0]
    win = next(w for w in q.windows() if w.id == wid)
    want = store.read(win.domain, win.sequence_id, 64, "energy", t=slice(win.t0 + 1, win.t0 + 2))
    np.testing.assert_array_equal(np.asarray(batch["target"][0]), want)


def test_old_store_syncs_into_a_fresh_catalog(old_store: Path, tmp_path: Path) -> None:
    store = AtlasStore.open(str(old_store), mode="r")
    with SQLiteCatalog(str(tmp_path / "catalog.sqlite")) as catalog:
        sync_catalog(store, catalog)
        assert sorted(catalog.sequence_keys()) == sorted(EXPECTED["info"])
        assert sorted(catalog.list_domains()) == sorted(EXPECTED["domains"])


def test_plain_zarr_and_xarray_read_the_old_store(old_store: Path) -> None:
    root = zarr.open_group(str(old_store), mode="r")
    for key, want in EXPECTED["arrays"].items():
        a = np.asarray(root[key][...])
        assert _digest(a) == want["sha256"], key
    ds = xr.open_zarr(str(old_store / "lab" / "run-a" / "32"), consolidated=False)
    assert _digest(ds["temperature"].values) == EXPECTED["arrays"]["lab/run-a/32/temperature"][
        "sha256"]
