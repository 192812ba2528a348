"""`atlas import well`: HDF5 files in The Well's format, one sequence per trajectory.

Against files written by The Well's own code (``the_well.utils.dummy_data.write_dummy_data``
from the-well 1.2.0) and against our own writer of the same format with a non-square grid
(``well_fixture``: 128 x-points by 384 y-points, time-varying t0 fields), where a transposed
axis or a swapped coordinate would show.
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest
import xarray as xr

from atlasstore.audit import audit
from atlasstore.query import Query
from atlasstore.runs.ingest import ImportOptions, ImportPlanError, import_well, plan_well
from atlasstore.store import AtlasStore
from helpers.cli_runner import run_cli
from helpers.well_fixture import pattern, write_well_file

dummy_data = pytest.importorskip("the_well.utils.dummy_data",
                                 reason="the-well 1.2.0 (scripts/setup installs it --no-deps)")


@pytest.fixture(scope="module")
def dummy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("well") / "dummy.hdf5"
    np.random.seed(7)  # write_dummy_data draws from NumPy's global generator
    dummy_data.write_dummy_data(str(path))
    return path


@pytest.fixture(scope="module")
def trl(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, np.ndarray]]:
    path = tmp_path_factory.mktemp("trl") / "trl_tcool_0.10.hdf5"
    return path, write_well_file(path)


# --------------------------------------------------------------------------- The Well's own file


def test_the_wells_dummy_file_kinetic_energy_without_density(tmp_path: Path, dummy: Path) -> None:
    """The dummy has no density and its t1 field is called ``field``: 1/2 |u|^2."""
    rep = import_well(tmp_path / "a.zarr", [dummy], derive="kinetic_energy", velocity="field",
                      scheduler="serial")
    assert rep.ok and rep.written == 2 and rep.maps == 20
    store = AtlasStore.open(tmp_path / "a.zarr")
    assert store.sequences("dummy_dataset") == ["dummy-traj0000", "dummy-traj0001"]
    with h5py.File(dummy) as f:
        u = f["t1_fields/field"][()]
        t = f["dimensions/time"][()]
        x = f["dimensions/x"][()]
        tv = f["scalars/time_varying_scalar"][()]
    for b in range(2):
        info = store.sequence_info("dummy_dataset", f"dummy-traj{b:04d}")
        assert info["field"]["name"] == "kinetic_energy" and info["field"]["kind"] == "extensive"
        assert info["field"]["attrs"]["formula"] == "1/2 |u|^2 (no density in the file)"
        ke = 0.5 * (u[b].astype(np.float64) ** 2).sum(-1)
        np.testing.assert_allclose(store.read("dummy_dataset", f"dummy-traj{b:04d}", 32,
                                              "kinetic_energy"), ke.transpose(0, 2, 1),
                                   rtol=1e-6)
        assert [s["time"] for s in info["steps"]] == pytest.approx(t.tolist())
        assert [s["metadata"]["scalars"]["time_varying_scalar"] for s in info["steps"]] == \
            pytest.approx(tv.tolist())
        well = info["field"]["attrs"]["well"]
        assert well["simulation_parameters"] == {"a": 0.25, "b": 0.75}
        assert well["constant_scalars"] == {"a": 0.25, "b": 0.75}
        assert well["boundary_conditions"]["x_periodic"]["bc_type"] == "PERIODIC"
        assert well["boundary_conditions"]["x_periodic"]["associated_dims"] == ["x"]
        assert well["trajectory"] == b and well["dataset_name"] == "dummy_dataset"
        src, = info["generation"]["sources"]
        assert src["format"] == "well" and src["member"] == f"trajectory {b}, kinetic_energy from field"
    ds = xr.open_zarr(f"{tmp_path}/a.zarr/dummy_dataset/dummy-traj0001", group="32")
    np.testing.assert_allclose(ds.x.values, x)
    np.testing.assert_allclose(ds.time.values, t)
    assert audit(store).ok


def test_the_wells_dummy_constant_field_is_one_step(tmp_path: Path, dummy: Path) -> None:
    rep = import_well(tmp_path / "a.zarr", [dummy], field="constant_field", scheduler="serial")
    assert rep.ok and rep.maps == 2
    store = AtlasStore.open(tmp_path / "a.zarr")
    with h5py.File(dummy) as f:
        c = f["t0_fields/constant_field"][()]
    info = store.sequence_info("dummy_dataset", "dummy-traj0001")
    assert info["n_steps"] == 1 and info["field"]["kind"] == "intensive"
    assert "time" not in info["steps"][0]
    np.testing.assert_array_equal(store.read("dummy_dataset", "dummy-traj0001", 32,
                                             "constant_field")[0], c[1].T)


# --------------------------------------------------------------------------- non-square


def test_a_non_square_grid_lands_pixel_for_pixel(tmp_path: Path,
                                                 trl: tuple[Path, dict[str, np.ndarray]]) -> None:
    """(x, y) = (128, 384) in the file -> (y, x) = (384, 128) maps: value [t, i, j] of The
    Well's field lands at [t, j, i], with the file's x and y as coordinates."""
    path, arrays = trl
    rep = import_well(tmp_path / "a.zarr", [path], field="density", scheduler="serial")
    assert rep.ok and rep.written == 2
    store = AtlasStore.open(tmp_path / "a.zarr")
    seq = "trl_tcool_0.10-traj0001"
    info = store.sequence_info("turbulent_radiative_layer_2D", seq)
    assert info["shape"] == [384, 128] and info["levels"] == [128, 64]
    got = store.read("turbulent_radiative_layer_2D", seq, 128, "density")
    assert got.shape == (5, 384, 128)
    for t, i, j in ((0, 0, 0), (2, 127, 0), (3, 0, 383), (4, 100, 250)):
        assert got[t, j, i] == np.float32(pattern(1, t, 128, 384)[i, j] * 1e-7)
    np.testing.assert_array_equal(got, arrays["density"][1].transpose(0, 2, 1))
    ds = xr.open_zarr(f"{tmp_path}/a.zarr/turbulent_radiative_layer_2D/{seq}", group="128")
    assert ds.density.shape == (5, 384, 128)
    with h5py.File(path) as f:
        np.testing.assert_allclose(ds.x.values, f["dimensions/x"][()])
        np.testing.assert_allclose(ds.y.values, f["dimensions/y"][()])
    # grad_x is the derivative along The Well's x (the stored maps' last axis): d/di of the
    # pattern is 1e-7, d/dj (along y) 1e-4
    gx = store.read("turbulent_radiative_layer_2D", seq, 128, "grad_x")
    gy = store.read("turbulent_radiative_layer_2D", seq, 128, "grad_y")
    assert float(gx.mean()) == pytest.approx(1e-7, rel=0.05)
    assert float(gy.mean()) == pytest.approx(1e-4, rel=0.05)
    coarse = xr.open_zarr(f"{tmp_path}/a.zarr/turbulent_radiative_layer_2D/{seq}", group="64")
    assert coarse.density.shape == (5, 192, 64)
    np.testing.assert_allclose(coarse.x.values, ds.x.values.reshape(-1, 2).mean(1), rtol=1e-6)


def test_kinetic_energy_with_density(tmp_path: Path, trl: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, arrays = trl
    rep = import_well(tmp_path / "a.zarr", [path], derive="kinetic_energy", scheduler="serial")
    assert rep.ok
    store = AtlasStore.open(tmp_path / "a.zarr")
    seq = "trl_tcool_0.10-traj0000"
    info = store.sequence_info("turbulent_radiative_layer_2D", seq)
    assert info["field"]["attrs"]["formula"] == "1/2 rho |u|^2"
    u = arrays["velocity"][0].astype(np.float64)
    want = 0.5 * arrays["density"][0] * (u ** 2).sum(-1)
    np.testing.assert_allclose(store.read("turbulent_radiative_layer_2D", seq, 128, "kinetic_energy"),
                               want.transpose(0, 2, 1), rtol=1e-6)
    assert [s["metadata"]["scalars"]["mass_flux"] for s in info["steps"]] == \
        pytest.approx(arrays["mass_flux"][0].tolist())
    assert info["field"]["attrs"]["well"]["simulation_parameters"] == {"tcool": pytest.approx(0.1)}
    bcs = info["field"]["attrs"]["well"]["boundary_conditions"]
    assert bcs["y_open"]["bc_type"] == "OPEN" and bcs["y_open"]["mask"][0] is True
    # conserved in the pyramid (extensive), checked by the audit
    assert audit(store).ok


def test_velocity_components_and_fields_without_an_axis(
        tmp_path: Path, trl: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, arrays = trl
    for name, want in (("velocity_y", arrays["velocity"][..., 1]),
                       ("mask_x", np.broadcast_to(arrays["mask_x"][..., None], (2, 5, 128, 384))),
                       ("pressure", arrays["pressure"])):
        store_path = tmp_path / f"{name}.zarr"
        rep = import_well(store_path, [path], field=name, scheduler="serial")
        assert rep.ok, rep.failures
        got = AtlasStore.open(store_path).read("turbulent_radiative_layer_2D",
                                               "trl_tcool_0.10-traj0001", 128, name)
        np.testing.assert_array_equal(got, want[1].transpose(0, 2, 1))
        info = AtlasStore.open(store_path).sequence_info("turbulent_radiative_layer_2D",
                                                         "trl_tcool_0.10-traj0001")
        assert info["field"]["kind"] == "intensive"  # negatives allowed: pressure, velocity


def test_byte_string_attributes_read_like_text(tmp_path: Path) -> None:
    path = tmp_path / "bytes.h5"
    write_well_file(path, n_traj=1, n_steps=2, nx=64, ny=64, byte_strings=True)
    rep = import_well(tmp_path / "a.zarr", [path], derive="kinetic_energy", scheduler="serial")
    assert rep.ok and rep.written == 1


# --------------------------------------------------------------------------- bad input


def test_bad_files_fail_alone(tmp_path: Path, trl: tuple[Path, dict[str, np.ndarray]]) -> None:
    good, _ = trl
    not_hdf5 = tmp_path / "notes.h5"
    not_hdf5.write_text("not HDF5 at all")
    truncated = tmp_path / "truncated.h5"
    write_well_file(truncated, n_traj=1, n_steps=3, nx=64, ny=64)
    raw = truncated.read_bytes()
    truncated.write_bytes(raw[: len(raw) // 2])
    no_density = tmp_path / "nodensity.h5"
    write_well_file(no_density, n_traj=1, n_steps=2, nx=64, ny=64, density=False)
    missing = tmp_path / "missing.h5"
    rc, out, err = run_cli("import", "well", str(good), str(not_hdf5), str(truncated),
                           str(no_density), str(missing), "--field", "density", "--store",
                           str(tmp_path / "a.zarr"), "--scheduler", "serial", "--no-catalog")
    assert rc == 1
    assert "2 sequences written, 0 already complete, 4 failed" in out
    failed = [ln for ln in err.splitlines() if ln.startswith("FAILED")]
    assert len(failed) == 4
    text = "\n".join(failed)
    assert f"{not_hdf5}: not an HDF5 file" in text
    assert str(truncated) in text
    assert f"{no_density}: has no field 'density' (t0 fields: pressure, mask_x; t1 fields: velocity" in text
    assert f"{missing}: no such file" in text
    store = AtlasStore.open(tmp_path / "a.zarr")
    assert store.sequences("turbulent_radiative_layer_2D", include_incomplete=True) == [
        "trl_tcool_0.10-traj0000", "trl_tcool_0.10-traj0001"]


def test_nan_and_negative_values_fail_their_trajectory(tmp_path: Path) -> None:
    path = tmp_path / "bad.h5"
    write_well_file(path, n_traj=3, n_steps=4, nx=64, ny=64)
    with h5py.File(path, "r+") as f:
        f["t0_fields/density"][1, 2, 3, 4] = np.nan
        f["t0_fields/density"][2, 0, 0, 0] = -1.0
    rep = import_well(tmp_path / "a.zarr", [path], field="density",
                      options=ImportOptions(kind="extensive"), scheduler="serial")
    assert rep.written == 1
    errors = {f.sequence_id: f.error for f in rep.failures}
    assert f"{path} trajectory 1 steps 0..3: " in errors["bad-traj0001"]
    assert "non-finite values (1 NaN, 0 inf)" in errors["bad-traj0001"]
    assert "negative values" in errors["bad-traj0002"]
    store = AtlasStore.open(tmp_path / "a.zarr")
    assert store.sequences("turbulent_radiative_layer_2D", include_incomplete=True) == ["bad-traj0000"]


def test_plan_refusals(tmp_path: Path, trl: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = trl
    for kw, match in (({}, "choose what to import"),
                      ({"field": "density", "derive": "kinetic_energy"}, "choose what"),
                      ({"derive": "enstrophy"}, "unknown derived quantity"),
                      ({"field": "a/b"}, "path separator")):
        with pytest.raises((ImportPlanError, ValueError), match=match):
            plan_well([path], **kw)
    with pytest.raises(ImportPlanError, match="no files"):
        plan_well([], field="density")


def test_two_files_with_one_name_do_not_share_sequences(tmp_path: Path) -> None:
    for d in ("a", "b"):
        (tmp_path / d).mkdir()
        write_well_file(tmp_path / d / "run.h5", n_traj=1, n_steps=2, nx=64, ny=64)
    rep = import_well(tmp_path / "s.zarr", [tmp_path / "a/run.h5", tmp_path / "b/run.h5"],
                      field="pressure", scheduler="serial")
    assert rep.written == 0 and len(rep.failures) == 2
    assert all("give each source its own sequence id" in f.error for f in rep.failures)


# --------------------------------------------------------------------------- engine, resume


def test_threads_engine_hashes_each_file_once_and_resumes(
        tmp_path: Path, trl: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, _ = trl
    serial = import_well(tmp_path / "s.zarr", [path], derive="kinetic_energy", scheduler="serial")
    threads = import_well(tmp_path / "t.zarr", [path], derive="kinetic_energy",
                          scheduler="threads", workers=2)
    assert threads.ok and threads.written == 2 and threads.run_id == serial.run_id
    a, b = AtlasStore.open(tmp_path / "s.zarr"), AtlasStore.open(tmp_path / "t.zarr")
    for seq in a.sequences("turbulent_radiative_layer_2D"):
        ia = a.sequence_info("turbulent_radiative_layer_2D", seq)
        ib = b.sequence_info("turbulent_radiative_layer_2D", seq)
        assert {k: v["checksum"] for k, v in ia["arrays"].items()} == \
            {k: v["checksum"] for k, v in ib["arrays"].items()}
        assert ia["generation"]["sources"] == ib["generation"]["sources"]
    again = import_well(tmp_path / "t.zarr", [path], derive="kinetic_energy", scheduler="threads",
                        workers=2)
    assert (again.written, again.skipped) == (0, 2)
    other = import_well(tmp_path / "t.zarr", [path], field="density", scheduler="serial")
    assert other.written == 0 and all("already holds other data" in f.error
                                      for f in other.failures)


def test_query_on_imported_well_data_at_every_level(
        tmp_path: Path, trl: tuple[Path, dict[str, np.ndarray]]) -> None:
    path, arrays = trl
    import_well(tmp_path / "a.zarr", [path], derive="kinetic_energy", scheduler="serial")
    rc, out, _ = run_cli("query", "--store", str(tmp_path / "a.zarr"), "--window", "4", "--count")
    assert rc == 0 and out.strip() == "4"  # 2 trajectories x (5 - 4 + 1)
    store = AtlasStore.open(tmp_path / "a.zarr")
    q = Query(store, scale=64, window=4, fields=("kinetic_energy", "grad_y"))
    data = q.to_numpy()
    assert data["kinetic_energy"].shape == (4, 4, 192, 64)
    x = Query(store, scale=128, window=2).to_xarray()
    assert x.kinetic_energy.shape == (8, 2, 384, 128)
    np.testing.assert_allclose(x.time.values[1], [1.597033, 3.194066], rtol=1e-6)
