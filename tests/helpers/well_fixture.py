"""HDF5 files in The Well's format that The Well's own ``write_dummy_data`` does not write: a
non-square grid (x first, 128 x-points and 384 y-points, like turbulent_radiative_layer_2D),
time-varying t0 fields, a t1 velocity, boundary conditions with masks, constant and
time-varying scalars, and fields whose flags leave axes out (per ``notes/well.md``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import h5py
import numpy as np


def pattern(b: int, t: int, nx: int, ny: int) -> np.ndarray:
    """A field whose every value says where it is: 1 + i + 1000 j + 1e6 t + 1e7 b (i along x)."""
    i = np.arange(nx)[:, None]
    j = np.arange(ny)[None, :]
    return (1.0 + i + 1000.0 * j + 1e6 * t + 1e7 * b).astype(np.float64)


def write_header(f: h5py.File, *, n_traj: int, n_steps: int, nx: int, ny: int,
                 name: str = "turbulent_radiative_layer_2D", tcool: float = 0.1,
                 names: Callable[[list[str]], object] = lambda v: v) -> None:
    """Root attributes, ``dimensions/`` (x first), boundary conditions (x periodic, y open,
    masks at both ends) and the constant scalar ``tcool`` of a TRL-like file."""
    f.attrs.update(dataset_name=name, grid_type="cartesian", n_spatial_dims=2,
                   n_trajectories=n_traj, simulation_parameters=names(["tcool"]), tcool=tcool)
    d = f.create_group("dimensions")
    d.attrs["spatial_dims"] = names(["x", "y"])
    d["time"] = np.linspace(0.0, 1.597033 * (n_steps - 1), n_steps, dtype="float32")
    d["time"].attrs["sample_varying"] = False
    d["x"] = np.linspace(-0.5, 0.5, nx, dtype="float32")
    d["y"] = np.linspace(-1.0, 2.0, ny, dtype="float32")
    for k in ("x", "y"):
        d[k].attrs.update(sample_varying=False, time_varying=False)
    bc = f.create_group("boundary_conditions")
    for bname, ax, typ, size in (("x_periodic", "x", "PERIODIC", nx), ("y_open", "y", "OPEN", ny)):
        g = bc.create_group(bname)
        m = np.zeros(size, bool)
        m[[0, -1]] = True
        g.attrs.update(associated_dims=names([ax]), associated_fields=[], bc_type=typ,
                       sample_varying=False, time_varying=False)
        g["mask"] = m
    s = f.create_group("scalars")
    s.attrs["field_names"] = names(["tcool"])
    s["tcool"] = np.float32(tcool)
    s["tcool"].attrs.update(sample_varying=False, time_varying=False)


def write_well_file(path: str | Path, *, n_traj: int = 2, n_steps: int = 5, nx: int = 128,
                    ny: int = 384, seed: int = 0, density: bool = True,
                    name: str = "turbulent_radiative_layer_2D", tcool: float = 0.1,
                    byte_strings: bool = False) -> dict[str, np.ndarray]:
    """Write the file; returns the arrays written (in The Well's (b, t, x, y[, c]) order).

    ``density``: position-coded (:func:`pattern`, scaled down) so orientation errors show;
    ``pressure``: random; ``velocity``: random normal (b, t, x, y, 2); ``mask_x``: a t0 field
    that varies only along x, stored without its y axis (``dim_varying=[True, False]``).
    ``byte_strings`` writes names as fixed-length bytes, as some writers do.
    """
    rng = np.random.default_rng(seed)

    def names(v: list[str]) -> object:
        return np.array([s.encode() for s in v]) if byte_strings else v

    out: dict[str, np.ndarray] = {}
    with h5py.File(path, "w") as f:
        write_header(f, n_traj=n_traj, n_steps=n_steps, nx=nx, ny=ny, name=name, tcool=tcool,
                     names=names)
        s = f["scalars"]
        s.attrs["field_names"] = names(["tcool", "mass_flux"])
        flux = rng.random((n_traj, n_steps))
        s["mass_flux"] = flux
        s["mass_flux"].attrs.update(sample_varying=True, time_varying=True)
        out["mass_flux"] = flux
        t0 = f.create_group("t0_fields")
        t0_names = (["density"] if density else []) + ["pressure", "mask_x"]
        t0.attrs["field_names"] = names(t0_names)
        if density:
            rho = np.stack([np.stack([pattern(b, t, nx, ny) for t in range(n_steps)])
                            for b in range(n_traj)]) * 1e-7
            t0["density"] = rho.astype("float32")
            t0["density"].attrs.update(dim_varying=[True, True], sample_varying=True,
                                       time_varying=True)
            out["density"] = t0["density"][()]
        t0["pressure"] = rng.random((n_traj, n_steps, nx, ny)).astype("float32") - 0.5
        t0["pressure"].attrs.update(dim_varying=[True, True], sample_varying=True, time_varying=True)
        out["pressure"] = t0["pressure"][()]
        t0["mask_x"] = rng.random((n_traj, n_steps, nx)).astype("float32")  # no y axis
        t0["mask_x"].attrs.update(dim_varying=[True, False], sample_varying=True, time_varying=True)
        out["mask_x"] = t0["mask_x"][()]
        t1 = f.create_group("t1_fields")
        t1.attrs["field_names"] = names(["velocity"])
        t1["velocity"] = rng.normal(size=(n_traj, n_steps, nx, ny, 2)).astype("float32")
        t1["velocity"].attrs.update(dim_varying=[True, True], sample_varying=True, time_varying=True)
        out["velocity"] = t1["velocity"][()]
        f.create_group("t2_fields").attrs["field_names"] = []
    return out
