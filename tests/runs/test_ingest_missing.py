"""Missing cells through the importers other than xarray's (tests/runs/test_real_files.py has
real NetCDF files): an HDF5 dataset's declared fill value (Well files), a predecessor folder's
NaN maps (refused, then kept with the flag, the other sequences imported either way)."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from atlasstore.runs.ingest import ImportOptions, import_well
from atlasstore.store import AtlasStore
from helpers.cli_runner import run_cli
from helpers.well_fixture import write_well_file


def _refill(path: Path, name: str, *, fillvalue: float | None = None,
            attr: float | None = None) -> np.ndarray:
    """Rewrite ``t0_fields/<name>`` with cells 0..9 of row 3 missing: as the dataset's fill
    value (``fillvalue``: an HDF5 creation property) or as NaN with a ``_FillValue``
    attribute (``attr``); returns the values as written."""
    with h5py.File(path, "r+") as f:
        g = f["t0_fields"]
        values = g[name][()]
        attrs = dict(g[name].attrs)
        del g[name]
        values[:, :, 3, :10] = fillvalue if fillvalue is not None else np.nan
        kw = {"fillvalue": fillvalue} if fillvalue is not None else {}
        ds = g.create_dataset(name, data=values, **kw)
        ds.attrs.update(attrs)
        if attr is not None:
            ds.attrs["_FillValue"] = np.float32(attr)
    return values


def test_an_hdf5_fill_value_declares_missing_cells(tmp_path: Path) -> None:
    path = tmp_path / "filled.h5"
    write_well_file(path, n_traj=1, n_steps=3, nx=64, ny=64)
    src = _refill(path, "pressure", fillvalue=-9999.0)
    rep = import_well(tmp_path / "a.zarr", [path], field="pressure", scheduler="serial")
    assert rep.ok, rep.failures
    store = AtlasStore.open(tmp_path / "a.zarr")
    (domain,) = store.domains()
    (seq,) = store.sequences(domain)
    got = store.read(domain, seq, 64, "pressure")
    want = src[0].transpose(0, 2, 1)  # (t, x, y) -> (t, y, x)
    missing = want == -9999.0
    assert missing.sum() == 30
    np.testing.assert_array_equal(np.isnan(got), missing)
    np.testing.assert_array_equal(got[~missing], want[~missing])
    assert store.sequence_info(domain, seq)["steps"][0]["valid_cells"] == 64 * 64 - 10


def test_a_cf_fill_attribute_on_an_hdf5_dataset_declares_nan_cells(tmp_path: Path) -> None:
    path = tmp_path / "nan.h5"
    write_well_file(path, n_traj=1, n_steps=2, nx=64, ny=64)
    _refill(path, "pressure", attr=np.nan)
    rep = import_well(tmp_path / "a.zarr", [path], field="pressure", scheduler="serial")
    assert rep.ok, rep.failures
    undeclared = tmp_path / "undeclared.h5"
    write_well_file(undeclared, n_traj=1, n_steps=2, nx=64, ny=64)
    _refill(undeclared, "pressure")
    rep = import_well(tmp_path / "b.zarr", [undeclared], field="pressure", scheduler="serial")
    assert not rep.ok and "--nan-is-missing" in rep.failures[0].error
    rep = import_well(tmp_path / "b.zarr", [undeclared], field="pressure", scheduler="serial",
                      options=ImportOptions(nan_is_missing=True))
    assert rep.ok, rep.failures


def test_npy_maps_with_nan_fail_alone_then_import_with_the_flag(tmp_path: Path) -> None:
    root = tmp_path / "maps"
    rng = np.random.default_rng(0)
    for seq in ("good", "holes"):
        (root / "lab").mkdir(parents=True, exist_ok=True)
        for t in range(3):
            a = rng.gamma(2.0, 1.0, (64, 64)).astype(np.float32)
            if seq == "holes":
                a[:4, :4] = np.nan
            np.save(root / "lab" / f"{seq}_t{t}.npy", a)
    store = tmp_path / "a.zarr"
    rc, out, err = run_cli("import", "npy", str(root), "--store", str(store), "--no-catalog",
                           "--scheduler", "serial", "--no-sidecars")
    assert rc == 1 and "FAILED lab/holes" in err and "--nan-is-missing" in err, (out, err)
    assert AtlasStore.open(store).sequences("lab") == ["good"]
    rc, out, err = run_cli("import", "npy", str(root), "--store", str(store), "--no-catalog",
                           "--scheduler", "serial", "--no-sidecars", "--nan-is-missing")
    assert rc == 0, err
    assert "1 sequences written, 1 already complete" in out  # the flag only widens acceptance
    s = AtlasStore.open(store)
    assert s.sequences("lab") == ["good", "holes"]
    assert s.sequence_info("lab", "holes")["steps"][0]["valid_cells"] == 64 * 64 - 16
    assert "valid_cells" in s.sequence_info("lab", "good")["steps"][0]


def test_pad_mode_missing_adds_no_data_and_lets_a_grid_halve(tmp_path: Path) -> None:
    """A 37x49 grid has one level; padded to 40x52 with missing cells it has 40 and 20, and
    the padded cells are missing, not zeros or copies."""
    path = tmp_path / "odd.h5"
    write_well_file(path, n_traj=1, n_steps=2, nx=49, ny=37)
    rep = import_well(tmp_path / "a.zarr", [path], field="pressure", scheduler="serial",
                      options=ImportOptions(pad=(40, 52), pad_mode="missing", smallest=16))
    assert rep.ok, rep.failures
    s = AtlasStore.open(tmp_path / "a.zarr")
    (domain,) = s.domains()
    (seq,) = s.sequences(domain)
    assert s.sequence_info(domain, seq)["levels"] == [40, 20]
    got = s.read(domain, seq, 40, "pressure")
    assert np.isnan(got[:, 37:, :]).all() and np.isnan(got[:, :, 49:]).all()
    assert not np.isnan(got[:, :37, :49]).any()
