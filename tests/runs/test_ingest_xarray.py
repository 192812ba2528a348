"""`atlas import xarray`: a variable of anything xarray opens (NetCDF 4 and 3, Zarr, HDF5), with
its coordinates and attributes, one sequence per index of a sequence dimension."""

from __future__ import annotations

import contextlib
import io
import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from atlasstore import cli
from atlasstore.query import Query
from atlasstore.runs.ingest import ImportOptions, ImportPlanError, import_xarray, plan_xarray
from atlasstore.store import AtlasStore
from helpers.cli_runner import run_cli

DIMS = {"time": "t", "y": "lat", "x": "lon"}


def dataset(runs: int = 2, steps: int = 6, ny: int = 96, nx: int = 160) -> xr.Dataset:
    rng = np.random.default_rng(0)
    return xr.Dataset(
        {"T": (("run", "t", "level", "lat", "lon"),
               rng.normal(280.0, 5.0, (runs, steps, 2, ny, nx)).astype("float32"),
               {"units": "K", "long_name": "air temperature"}),
         "E": (("t", "lat", "lon"), rng.random((steps, ny, nx)).astype("float32") * 3,
               {"units": "J m-2"})},
        coords={"run": [f"member{i}" for i in range(runs)],
                "t": pd.date_range("2020-01-01", periods=steps, freq="6h"),
                "lat": ("lat", np.linspace(-10.0, 10.0, ny), {"units": "degrees_north"}),
                "lon": ("lon", np.linspace(0.0, 30.0, nx), {"units": "degrees_east"}),
                "level": [850, 500]},
        attrs={"title": "test"})


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("xr")
    ds = dataset()
    out = {"nc4": root / "f4.nc", "nc3": root / "f3.nc", "zarr": root / "f.zarr"}
    ds.to_netcdf(out["nc4"], engine="h5netcdf")
    ds.drop_vars("run").to_netcdf(out["nc3"], engine="scipy", format="NETCDF3_64BIT")
    with warnings.catch_warnings():  # xarray's own Zarr writing of the string coordinate
        warnings.simplefilter("ignore")
        ds.to_zarr(out["zarr"])
    return out


@pytest.mark.parametrize("kind", ["nc4", "nc3", "zarr"])
def test_each_format_imports_with_coordinates_and_attrs(tmp_path: Path, files: dict[str, Path],
                                                        kind: str) -> None:
    ds = dataset()
    rep = import_xarray(tmp_path / "a.zarr", files[kind], "T", dims=DIMS, sequence_dim="run",
                        isel={"level": 1}, domain="era", scheduler="serial")
    assert rep.ok and rep.written == 2, rep.failures
    store = AtlasStore.open(tmp_path / "a.zarr")
    ids = ["member0", "member1"] if kind != "nc3" else ["run-0000", "run-0001"]
    assert store.sequences("era") == ids
    info = store.sequence_info("era", ids[1])
    assert info["field"]["name"] == "T" and info["field"]["kind"] == "intensive"
    assert info["field"]["units"] == "K" and info["field"]["attrs"]["long_name"] == "air temperature"
    assert info["levels"] == [96] and info["shape"] == [96, 160]
    np.testing.assert_array_equal(store.read("era", ids[1], 96, "T"), ds.T.values[1, :, 1])
    assert info["steps"][2]["time"] == "2020-01-01T12:00:00.000000000"
    assert info["coordinates"]["y"]["units"] == "degrees_north"
    src, = info["generation"]["sources"]
    assert src["format"] == "xarray" and src["member"] == "variable T [level=1, run=1]"
    plain = xr.open_zarr(f"{tmp_path}/a.zarr/era/{ids[1]}", group="96")
    np.testing.assert_allclose(plain.lat.values if "lat" in plain else plain.y.values, ds.lat.values)
    assert plain.time.values[2] == np.datetime64("2020-01-01T12:00")


def test_one_sequence_without_a_sequence_dim(tmp_path: Path, files: dict[str, Path]) -> None:
    rep = import_xarray(tmp_path / "a.zarr", files["nc4"], "E", dims=DIMS, scheduler="serial")
    assert rep.ok and rep.written == 1
    store = AtlasStore.open(tmp_path / "a.zarr")
    assert store.domains() == ["f4"] and store.sequences("f4") == ["E"]
    info = store.sequence_info("f4", "E")
    assert info["field"]["kind"] == "intensive"  # by name: not an energy
    rep = import_xarray(tmp_path / "b.zarr", files["nc4"], "E", dims=DIMS, field="energy",
                        sequence="e0", domain="lab", scheduler="serial")
    info = AtlasStore.open(tmp_path / "b.zarr").sequence_info("lab", "e0")
    assert info["field"]["name"] == "energy" and info["field"]["kind"] == "extensive"
    assert "entropy" in info["steps"][0]


def test_crop_pad_and_levels(tmp_path: Path, files: dict[str, Path]) -> None:
    """160 x 96 does not halve to 64 cleanly... 96 does not halve at all above 64; ask for
    a 128 x 128 crop-and-pad: levels 128, 64; coordinates follow."""
    opts = ImportOptions(crop=(96, 128), pad=(128, 128), kind="extensive")
    rep = import_xarray(tmp_path / "a.zarr", files["nc4"], "E", dims=DIMS, options=opts,
                        scheduler="serial")
    assert rep.ok, rep.failures
    store = AtlasStore.open(tmp_path / "a.zarr")
    info = store.sequence_info("f4", "E")
    assert info["levels"] == [128, 64] and info["shape"] == [128, 128]
    e = store.read("f4", "E", 128, "E")
    src = dataset().E.values
    np.testing.assert_array_equal(e[:, :96, :], src[:, :, :128])
    assert not e[:, 96:, :].any()  # zero padding: no energy added
    lat = store.coordinates("f4", "E", 128)["y"][0]
    np.testing.assert_allclose(lat[:96], dataset().lat.values)
    np.testing.assert_allclose(np.diff(lat)[95:], np.diff(lat)[0])
    assert info["generation"]["options"]["crop"] == [96, 128]


def test_refusals_name_the_problem(tmp_path: Path, files: dict[str, Path]) -> None:
    """A file that cannot give what the command asks (no such variable, dimension or index; not
    a file xarray opens) is a failure of that file, named, which the run reports as a FAILED
    line (exit 1); options that make no sense on any file are refused before the run."""
    failures = [
        (dict(var="nope", dims=DIMS), "has no variable 'nope'; variables: T, E"),
        (dict(var="T", dims=DIMS), "fix run, level with --isel run=0"),
        (dict(var="T", dims=DIMS, sequence_dim="run"), "fix level with --isel level=0"),
        (dict(var="E", dims={"time": "t"}), "no y=y, x=x"),
        (dict(var="T", dims=DIMS, sequence_dim="run", isel={"level": 5}), "index 5 is outside"),
        (dict(var="T", dims=DIMS, sequence_dim="nope", isel={"level": 0}), "no dimension 'nope'"),
    ]
    for kw, match in failures:
        plan = plan_xarray(files["nc4"], **kw)  # type: ignore[arg-type]
        assert not plan.units and len(plan.failures) == 1
        assert re.search(match, plan.failures[0][1]), plan.failures
        assert str(files["nc4"].resolve()) in plan.failures[0][1]
    for kw, match in [(dict(var="E", dims={"time": "t", "y": "lat", "x": "lat"}),
                       "two axes to one dimension"),
                      (dict(var="E", dims={"z": "t"}), "maps time, y and x")]:
        with pytest.raises(ImportPlanError, match=match):
            plan_xarray(files["nc4"], **kw)  # type: ignore[arg-type]
    with pytest.raises(ImportPlanError, match="does not exist"):
        plan_xarray(tmp_path / "missing.nc", "E")
    garbage = tmp_path / "garbage.nc"
    garbage.write_bytes(b"\x00" * 100)
    plan = plan_xarray(garbage, "E", dims=DIMS)
    assert "xarray cannot open it" in plan.failures[0][1]


def test_a_missing_variable_is_a_failed_line_and_exit_1(tmp_path: Path,
                                                        files: dict[str, Path]) -> None:
    """The README's rule for bad input: a FAILED line naming the file and exit 1 (it was exit 2
    and no FAILED line); nothing is left behind in the store."""
    store = tmp_path / "a.zarr"
    rc, out, err = run_cli("import", "xarray", str(files["nc4"]), "--var", "nope", "--dims",
                           "time=t,y=lat,x=lon", "--store", str(store), "--scheduler", "serial",
                           "--no-catalog")
    assert rc == 1, (out, err)
    assert "FAILED" in out + err and "has no variable 'nope'" in out + err
    assert str(files["nc4"].resolve()) in out + err


def test_the_command_line(tmp_path: Path, files: dict[str, Path]) -> None:
    rc, out, err = run_cli("import", "xarray", str(files["zarr"]), "--var", "T", "--dims",
                           "time=t,y=lat,x=lon", "--sequence-dim", "run", "--isel", "level=0",
                           "--domain", "era", "--store", str(tmp_path / "a.zarr"),
                           "--scheduler", "serial", "--no-catalog")
    assert rc == 0, err
    assert "2 sequences written" in out
    store = AtlasStore.open(tmp_path / "a.zarr")
    x = Query(store, domains=("era",), scale=96, window=3).to_xarray()
    assert x.T.dims == ("sample", "step", "y", "x")
    assert x.time.dtype.kind == "M"
    err_out = io.StringIO()
    with contextlib.redirect_stderr(err_out), pytest.raises(SystemExit) as exit_:
        cli.main(["import", "xarray", str(files["zarr"]), "--var", "T", "--dims", "time=t,y",
                  "--store", str(tmp_path / "b.zarr")])
    assert exit_.value.code == 2 and "expected NAME=VALUE" in err_out.getvalue()
    assert not (tmp_path / "b.zarr").exists()
