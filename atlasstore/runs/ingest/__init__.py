"""Bring your own data: import the predecessor's ``.npy`` folders, The Well's HDF5 files and any
xarray dataset into an atlas store, one sequence per source unit, through one engine
(:mod:`.engine`, itself on :mod:`atlasstore.runs.engine`).

>>> from atlasstore.runs.ingest import import_npy, import_well, import_xarray
>>> import_npy("atlas.zarr", "old/data", pattern="{domain}/{sequence}_t{t}.npy")
>>> import_well("atlas.zarr", ["trl_tcool_0.10.hdf5"], field="density")
>>> import_xarray("atlas.zarr", "era.nc", var="t2m", dims={"time": "time", "y": "lat", "x": "lon"})

Each returns the run's :class:`~atlasstore.runs.engine.RunReport`; re-running the same call
skips what is complete, rewrites what is half-written and refuses different data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from atlasstore.errors import ImportPlanError, SourceError
from atlasstore.runs.engine import RunReport
from atlasstore.runs.ingest.engine import ImportOptions, ImportPlan, run_import
from atlasstore.runs.ingest.npy import PREDECESSOR_PATTERN, plan_npy
from atlasstore.runs.ingest.well import DERIVED, plan_well
from atlasstore.runs.ingest.xarray_source import plan_xarray
from atlasstore.runs.options import RunOptions

__all__ = ["DERIVED", "PREDECESSOR_PATTERN", "ImportOptions", "ImportPlan", "ImportPlanError",
           "RunOptions", "RunReport", "SourceError", "import_npy", "import_well", "import_xarray",
           "plan_npy", "plan_well", "plan_xarray", "run_import"]


def _run(location: str | Path, plan: ImportPlan, settings: RunOptions | None,
         overrides: Mapping[str, Any]) -> RunReport:
    return run_import(location, plan, settings, **overrides)


def import_npy(location: str | Path, root: str | Path, pattern: str = PREDECESSOR_PATTERN, *,
               domain: str | None = None, sequence: str | None = None, sidecars: bool = True,
               sidecar_keys: Mapping[str, str] | None = None,
               inventory: str | Path | None = None, field: str = "energy",
               options: ImportOptions | None = None, settings: RunOptions | None = None,
               **overrides: Any) -> RunReport:
    """Import a folder of ``.npy`` maps with JSON sidecars (:mod:`.npy`)."""
    plan = plan_npy(root, pattern, domain=domain, sequence=sequence, sidecars=sidecars,
                    sidecar_keys=sidecar_keys, inventory=inventory, field_name=field,
                    options=options)
    return _run(location, plan, settings, overrides)


def import_well(location: str | Path, files: Sequence[str | Path], *, field: str | None = None,
                derive: str | None = None, domain: str | None = None,
                density: str = "density", velocity: str = "velocity",
                options: ImportOptions | None = None, settings: RunOptions | None = None,
               **overrides: Any) -> RunReport:
    """Import HDF5 files in The Well's format, one sequence per trajectory (:mod:`.well`)."""
    plan = plan_well(files, field=field, derive=derive, domain=domain, density=density,
                     velocity=velocity, options=options)
    return _run(location, plan, settings, overrides)


def import_xarray(location: str | Path, path: str | Path, var: str, *,
                  dims: Mapping[str, str] | None = None, sequence_dim: str | None = None,
                  isel: Mapping[str, int] | None = None, domain: str | None = None,
                  sequence: str | None = None, field: str | None = None,
                  engine: str | None = None, options: ImportOptions | None = None,
                  settings: RunOptions | None = None, **overrides: Any) -> RunReport:
    """Import a variable of anything xarray opens (NetCDF, Zarr, HDF5; :mod:`.xarray_source`)."""
    plan = plan_xarray(path, var, dims=dims, sequence_dim=sequence_dim, isel=isel,
                       domain=domain, sequence=sequence, field=field, engine=engine,
                       options=options)
    return _run(location, plan, settings, overrides)
