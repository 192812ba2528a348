"""``atlas train`` and ``atlas evaluate`` on real public files no one here wrote (the test
extra's Iris sample data): a climate model's air temperature on a 360-day calendar and a 37x49
grid (two scenario runs, E1 and A1B), and OSTIA sea-surface temperature on an 18x432 strip with
its land cells missing. No hand-written config; held out in time: the training store holds
the runs' first 100 years, the held-out store their last 100, as separate files.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path
from typing import Any

import pytest
import xarray as xr

from atlasstore import cli
from atlasstore.store import AtlasStore

iris_sample_data = pytest.importorskip("iris_sample_data")
IRIS = Path(iris_sample_data.__file__).parent / "sample_data"
LATLON = "time=time,y=latitude,x=longitude"

pytestmark = pytest.mark.slow  # two short trainings with their compilation


def atlas(*argv: Any) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def cut(src: Path, var: str, steps: slice, dst: Path) -> Path:
    """Steps ``steps`` of one variable, written as its own NetCDF file (CF encoding kept)."""
    ds = xr.open_dataset(src)
    ds[[var]].isel(time=steps).to_netcdf(dst, engine="h5netcdf")
    return dst


def imported(files: list[tuple[Path, str, str]], store: Path) -> None:
    for path, var, seq in files:
        code, _, err = atlas("import", "xarray", path, "--var", var, "--dims", LATLON,
                             "--domain", "na" if var == "air_temperature" else "ostia",
                             "--sequence", seq, "--store", store, "--no-catalog", "--quiet")
        assert code == 0, err


def train_and_evaluate(root: Path, train: Path, heldout: Path) -> dict[str, Any]:
    run = root / "run"
    code, out, err = atlas("train", "--store", train, "--out", run, "--max-steps", "2",
                           "--no-catalog", "--quiet")
    assert code == 0, err
    code, _, err = atlas("evaluate", run, "--store", heldout, "--out", root / "ev", "--plots", "1",
                         "--max-windows", "4", "--mc-samples", "1", "--rollout-steps", "2",
                         "--quiet")
    assert code == 0, err
    report = json.loads((root / "ev" / "report.json").read_text())
    return {"train_out": out, "report": report}


def _finite_numbers(obj: Any) -> list[float]:
    if isinstance(obj, dict):
        return [x for v in obj.values() for x in _finite_numbers(v)]
    if isinstance(obj, list):
        return [x for v in obj for x in _finite_numbers(v)]
    return [obj] if isinstance(obj, float) else []


def test_a_360_day_climate_run_on_a_37x49_grid(tmp_path: Path) -> None:
    parts = []
    for run in ("E1", "A1B"):
        src = IRIS / f"{run}_north_america.nc"
        parts.append((cut(src, "air_temperature", slice(0, 100), tmp_path / f"{run}-a.nc"),
                      cut(src, "air_temperature", slice(140, 240), tmp_path / f"{run}-b.nc")))
    imported([(a, "air_temperature", f"{run}") for (a, _), run in zip(parts, ("E1", "A1B"),
                                                                      strict=True)],
             tmp_path / "train.zarr")
    imported([(b, "air_temperature", f"{run}") for (_, b), run in zip(parts, ("E1", "A1B"),
                                                                      strict=True)],
             tmp_path / "heldout.zarr")
    info = AtlasStore.open(tmp_path / "train.zarr").sequence_info("na", "E1")
    assert info["levels"] == [37] and info["coordinates"]["time"]["calendar"] == "360_day"
    got = train_and_evaluate(tmp_path, tmp_path / "train.zarr", tmp_path / "heldout.zarr")
    assert "windows of air_temperature, resolution 37" in got["train_out"]
    data = got["report"]["data"]
    assert data["held_out"] is True, data["held_out_note"]
    assert all(math.isfinite(x) for x in _finite_numbers(got["report"].get("metrics", {})))
    assert list((tmp_path / "ev").glob("*.png"))


def test_sea_surface_temperature_with_a_land_mask(tmp_path: Path) -> None:
    """OSTIA: 26 % of the cells are land (missing); 54 months cut into two training pieces
    and one held-out piece."""
    src = IRIS / "ostia_monthly.nc"
    a = cut(src, "surface_temperature", slice(0, 18), tmp_path / "a.nc")
    b = cut(src, "surface_temperature", slice(18, 36), tmp_path / "b.nc")
    c = cut(src, "surface_temperature", slice(36, 54), tmp_path / "c.nc")
    imported([(a, "surface_temperature", "a"), (b, "surface_temperature", "b")],
             tmp_path / "train.zarr")
    imported([(c, "surface_temperature", "c")], tmp_path / "heldout.zarr")
    info = AtlasStore.open(tmp_path / "train.zarr").sequence_info("ostia", "a")
    assert 0.7 < info["arrays"]["18/surface_temperature"]["stats"]["valid_fraction"] < 0.8
    got = train_and_evaluate(tmp_path, tmp_path / "train.zarr", tmp_path / "heldout.zarr")
    data = got["report"]["data"]
    assert data["held_out"] is True, data["held_out_note"]
    assert all(math.isfinite(x) for x in _finite_numbers(got["report"].get("metrics", {})))
