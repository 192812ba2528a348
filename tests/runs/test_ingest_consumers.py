"""Imported data of a non-256, non-square grid through the consumers: `atlas query`, the
streaming iterator and `atlas train`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atlasstore.query import Query
from atlasstore.runs.ingest import import_well, import_xarray
from atlasstore.store import AtlasStore
from helpers.cli_runner import run_cli
from helpers.well_fixture import write_well_file

TINY: dict[str, Any] = {
    "name": "tiny", "seed": 0,
    "data": {"batch_size": 2, "val_fraction": 0.34, "prefetch": 1, "workers": 1,
             "resolution": 128},
    "model": {"width": 4, "max_width": 8, "depth": 1, "blocks": 1, "groups": 2, "dropout": 0.1},
    "optim": {"learning_rate": 1e-3, "schedule": "warmup_cosine", "warmup_steps": 2},
    "train": {"max_steps": 2, "log_every": 1, "eval_every": 2, "patience": 5,
              "keep_checkpoints": 1},
    "eval": {"mc_samples": 2, "rollout_steps": 2, "n_plots": 1, "batch_size": 2,
             "fit_windows": 4},
}


@pytest.fixture(scope="module")
def well_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """3 trajectories x 6 steps of kinetic energy on a 128 x 384 (x, y) grid: 384x128 maps."""
    root = tmp_path_factory.mktemp("consumers")
    write_well_file(root / "trl.h5", n_traj=3, n_steps=6)
    rep = import_well(root / "atlas.zarr", [root / "trl.h5"], derive="kinetic_energy",
                      scheduler="serial")
    assert rep.ok and rep.written == 3
    return root / "atlas.zarr"


def test_imported_fields_with_their_own_names_are_catalogued(well_store: Path,
                                                             tmp_path: Path) -> None:
    """The catalog takes arrays of any field name the store holds (it refused all but energy and
    its gradients, so a run on imported data could not register its dataset version)."""
    from atlasstore.catalog import SQLiteCatalog
    from atlasstore.catalog.sync import refresh

    with SQLiteCatalog(tmp_path / "c.sqlite") as cat:
        res = refresh(AtlasStore.open(well_store), cat)
        assert not res.refused and cat.count() == 3
        fields = {a.field for a in cat.get_arrays("turbulent_radiative_layer_2D/trl-traj0000")}
        assert fields == {"kinetic_energy", "grad_x", "grad_y"}


def test_atlas_query_at_every_stored_level(well_store: Path, tmp_path: Path) -> None:
    for scale, shape in ((None, (384, 128)), (128, (384, 128)), (64, (192, 64))):
        args = ["query", "--store", str(well_store), "--window", "4", "--out",
                str(tmp_path / f"w{scale}.npz")] + (["--scale", str(scale)] if scale else [])
        rc, out, err = run_cli(*args)
        assert rc == 0, err
        with np.load(tmp_path / f"w{scale}.npz") as z:
            assert z["kinetic_energy"].shape == (9, 4, *shape)
    rc, _, err = run_cli("query", "--store", str(well_store), "--scale", "256", "--count")
    assert rc == 2 and "has no scale 256; levels: [128, 64]" in err


def test_atlas_show_on_imported_fields(well_store: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "q.png"
    rc, _, err = run_cli("show", "--store", str(well_store), "turbulent_radiative_layer_2D",
                         "trl-traj0001", "--t", "2", "--out", str(out))
    assert rc == 0, err
    assert out.stat().st_size > 1000


def test_the_stream_on_imported_data(well_store: Path) -> None:
    pytest.importorskip("jax")
    from atlasstore.training.stream import stream

    store = AtlasStore.open(well_store)
    q = Query(store, scale=128, window=5)
    with stream(q, n_in=4, n_out=1, batch_size=2, seed=0) as it:
        batches = list(it)
    assert len(batches) == 3  # 6 windows, batch 2
    b = batches[0]
    assert b["inputs"][128].shape == (2, 4, 384, 128) and b["inputs"][64].shape == (2, 4, 192, 64)
    assert b["target"].shape == (2, 1, 384, 128)
    d, rest = b["ids"][0].split("/", 1)
    s, t0 = rest.split("@")
    raw = it.denormalise(np.asarray(b["target"]), b["ids"])
    np.testing.assert_allclose(raw[0, 0], store.read(d, s, 128, "kinetic_energy", t=int(t0) + 4),
                               rtol=1e-4, atol=1e-6)


def _train(store: Path, tmp_path: Path) -> tuple[int, str, str]:
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY))
    return run_cli("train", "--config", str(cfg), "--store", str(store), "--out",
                   str(tmp_path / "run"))


@pytest.mark.slow
def test_atlas_train_on_an_imported_384x128_energy_field(tmp_path: Path) -> None:
    pytest.importorskip("flax")
    import xarray as xr

    rng = np.random.default_rng(0)
    da = xr.DataArray(rng.random((3, 6, 384, 128)).astype("float32") + 0.1,
                      dims=("run", "time", "y", "x"), name="energy")
    da.to_dataset().to_netcdf(tmp_path / "e.nc", engine="h5netcdf")
    rep = import_xarray(tmp_path / "a.zarr", tmp_path / "e.nc", "energy", sequence_dim="run",
                        scheduler="serial")
    assert rep.ok and rep.written == 3
    rc, out, err = _train(tmp_path / "a.zarr", tmp_path)
    assert rc == 0, err
    assert "best checkpoint" in out


@pytest.mark.slow
def test_atlas_train_on_an_imported_field_with_its_own_name(well_store: Path,
                                                              tmp_path: Path) -> None:
    pytest.importorskip("flax")
    rc, _, err = _train(well_store, tmp_path)
    assert rc == 0, err
