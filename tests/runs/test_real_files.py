"""Real public data files that someone else wrote, shipped inside PyPI wheels (the test extra
installs them): the Met Office's Iris sample data and the eofs package's NOAA examples.

Each brings what our own generator never makes: land cells declared missing (CF ``_FillValue``
/ ``missing_value``), a climate model's 360-day calendar, grids that do not halve (18x432,
37x49, 18x30, 29x49, 330x360), float64 values, a length-one pressure axis. Every import is
compared with what plain xarray reads from the source, and plain xarray reads our store.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from atlasstore.audit import audit
from atlasstore.query import Query
from atlasstore.runs.ingest import import_xarray
from atlasstore.store import AtlasStore
from helpers.cli_runner import run_cli

iris_sample_data = pytest.importorskip("iris_sample_data")
eofs = pytest.importorskip("eofs")

IRIS = Path(iris_sample_data.__file__).parent / "sample_data"
EOFS = Path(eofs.__file__).parent / "examples" / "example_data"
LATLON = {"time": "time", "y": "latitude", "x": "longitude"}

# (name, file, variable, dims, isel, levels, total missing cells in the source)
FILES = [
    ("ostia", IRIS / "ostia_monthly.nc", "surface_temperature", LATLON, {}, [18], 110970),
    ("e1_360day", IRIS / "E1_north_america.nc", "air_temperature", LATLON, {}, [37], 0),
    ("sst_anom", EOFS / "sst_ndjfm_anom.nc", "sst", LATLON, {}, [18], 4500),
    ("hgt", EOFS / "hgt_djf.nc", "z", LATLON, {"pressure": 0}, [29], 0),
    ("nemo", IRIS / "NEMO" / "nemo_1m_20150101-20150201_grid-T.nc", "tos",
     {"time": "time_counter", "y": "y", "x": "x"}, {}, [330, 165], 53617),
]


def _source(path: Path, var: str, dims: dict[str, str], isel: dict[str, int]) -> xr.DataArray:
    da = xr.open_dataset(path)[var].isel(isel)
    return da.transpose(dims["time"], dims["y"], dims["x"])


@pytest.fixture(scope="module")
def real_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every file imported into one store, one domain each, in one process (small plans)."""
    root = tmp_path_factory.mktemp("real") / "real.zarr"
    for name, path, var, dims, isel, _, _ in FILES:
        rep = import_xarray(root, path, var, dims=dims, isel=isel, domain=name, sequence="s0",
                            scheduler="serial")
        assert rep.ok, rep.failures
    return root


@pytest.mark.parametrize("name,path,var,dims,isel,levels,n_missing", FILES,
                         ids=[f[0] for f in FILES])
def test_values_missing_cells_and_coordinates_equal_the_source(
        real_store: Path, name: str, path: Path, var: str, dims: dict[str, str],
        isel: dict[str, int], levels: list[int], n_missing: int) -> None:
    src = _source(path, var, dims, isel)
    store = AtlasStore.open(real_store)
    info = store.sequence_info(name, "s0")
    assert info["levels"] == levels  # grids that do not halve: the base, and exact halvings
    ours = xr.open_zarr(real_store / name / "s0", group=str(levels[0]))[var]
    want = src.values.astype(np.float32)
    assert ours.shape == want.shape
    np.testing.assert_array_equal(np.isnan(ours.values), np.isnan(want))
    assert int(np.isnan(ours.values).sum()) == n_missing
    np.testing.assert_array_equal(ours.values[~np.isnan(want)], want[~np.isnan(want)])
    assert [s["valid_cells"] for s in info["steps"]] == [
        int(v) for v in (~np.isnan(want)).sum(axis=(1, 2))]
    if "latitude" in dims.values():  # 1-D physical axes (NEMO's are 2-D: pixel indices)
        ds = xr.open_zarr(real_store / name / "s0", group=str(levels[0]))
        np.testing.assert_allclose(ds["y"].values, src["latitude"].values)
        np.testing.assert_allclose(ds["x"].values, src["longitude"].values)
        assert ds["y"].attrs["units"] == src["latitude"].attrs["units"]
    assert info["field"]["units"] == src.attrs.get("units")


def test_a_360_day_calendar_is_kept_and_plain_xarray_decodes_the_same_dates(
        real_store: Path) -> None:
    src = _source(IRIS / "E1_north_america.nc", "air_temperature", LATLON, {})
    ds = xr.open_zarr(real_store / "e1_360day" / "s0", group="37")
    assert ds["time"].encoding["calendar"] == "360_day"
    assert list(ds["time"].values) == list(src["time"].values)  # cftime.Datetime360Day
    assert type(ds["time"].values[0]).__name__ == "Datetime360Day"
    info = AtlasStore.open(real_store).sequence_info("e1_360day", "s0")
    assert info["coordinates"]["time"]["calendar"] == "360_day"
    # and a query's xarray view shows the same dates
    q = Query(AtlasStore.open(real_store), domains=("e1_360day",), window=3, stride=100)
    view = q.to_xarray()
    assert list(view["time"].values[1]) == list(src["time"].values[100:103])


def test_standard_calendar_dates_come_back_as_dates(real_store: Path) -> None:
    src = _source(IRIS / "ostia_monthly.nc", "surface_temperature", LATLON, {})
    ds = xr.open_zarr(real_store / "ostia" / "s0", group="18")
    np.testing.assert_array_equal(ds["time"].values, src["time"].values)


def test_coarser_levels_of_a_masked_ocean_grid_are_block_means_of_valid_cells(
        real_store: Path) -> None:
    store = AtlasStore.open(real_store)
    base = store.read("nemo", "s0", 330, "tos").astype(np.float64)
    coarse = store.read("nemo", "s0", 165, "tos")
    blocks = base.reshape(1, 165, 2, 180, 2)
    counts = (~np.isnan(blocks)).sum(axis=(2, 4))
    with np.errstate(invalid="ignore"):
        want = np.nansum(blocks, axis=(2, 4)) / counts
    np.testing.assert_array_equal(np.isnan(coarse), counts == 0)
    np.testing.assert_allclose(coarse[counts > 0], want[counts > 0], rtol=1e-6)


def test_the_audit_passes_and_queries_read_the_missing_cells_as_stored(real_store: Path) -> None:
    store = AtlasStore.open(real_store)
    assert audit(store, verify=True).ok
    q = Query(store, domains=("ostia",), window=2, stride=1)
    windows = q.windows()
    assert len(windows) == 53
    got = q.read_windows(windows[:3])["surface_temperature"]
    src = _source(IRIS / "ostia_monthly.nc", "surface_temperature", LATLON, {}).values
    np.testing.assert_array_equal(np.isnan(got[0]), np.isnan(src[0:2]))
    # statistics filters are over the valid cells: a mean window around step 5's mean
    m5 = store.sequence_info("ostia", "s0")["steps"][5]["mean"]
    assert abs(m5 - float(np.nanmean(src[5].astype(np.float32)))) < 1e-4
    hit = Query(store, domains=("ostia",), window=1, mean=(m5 - 1e-7, m5 + 1e-7)).windows()
    assert 5 in [w.t0 for w in hit]


def test_undeclared_nan_from_a_real_file_is_refused_then_kept_with_the_flag(
        tmp_path: Path) -> None:
    """The OSTIA field with its fill declaration removed: its NaN cells are then undeclared,
    a FAILED line names the file and the flag; ``--nan-is-missing`` keeps them."""
    src = xr.open_dataset(IRIS / "ostia_monthly.nc")
    da = src["surface_temperature"].isel(time=slice(0, 4))
    da.encoding.pop("_FillValue", None)
    da.encoding.pop("missing_value", None)
    path = tmp_path / "undeclared.nc"
    xr.Dataset({"sst": da}).to_netcdf(path, engine="h5netcdf",
                                      encoding={"sst": {"_FillValue": None}})
    assert "_FillValue" not in xr.open_dataset(path)["sst"].encoding
    args = ["import", "xarray", str(path), "--var", "sst", "--dims",
            "time=time,y=latitude,x=longitude", "--store", str(tmp_path / "s.zarr"),
            "--scheduler", "serial", "--no-catalog"]
    rc, out, err = run_cli(*args)
    assert rc == 1 and "FAILED" in out + err and "--nan-is-missing" in out + err
    assert str(path) in out + err
    rc, out, err = run_cli(*args, "--nan-is-missing")
    assert rc == 0, err
    info = AtlasStore.open(tmp_path / "s.zarr").sequence_info("undeclared", "sst")
    assert info["arrays"]["18/sst"]["stats"]["valid_fraction"] < 1


def test_the_command_line_imports_a_real_file_with_missing_cells(tmp_path: Path) -> None:
    rc, out, err = run_cli("import", "xarray", str(IRIS / "ostia_monthly.nc"), "--var",
                           "surface_temperature", "--dims", "time=time,y=latitude,x=longitude",
                           "--store", str(tmp_path / "s.zarr"), "--no-catalog")
    assert rc == 0, err
    assert "1 sequences written" in out
