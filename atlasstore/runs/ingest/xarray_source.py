"""Anything xarray opens (NetCDF, Zarr, HDF5 through its engines): one variable, one sequence
per index of an optional sequence dimension.

``dims`` maps the store's axes to the variable's dimensions (``{"time": "t", "y": "lat",
"x": "lon"}``); other dimensions must be fixed with ``isel`` (or be the ``sequence_dim``).
Coordinates of the mapped dimensions become the sequence's physical axes (numeric y/x; time as
numbers or dates) and the variable's attributes the field's; values are read lazily, a time
block at a time, so a variable larger than memory imports in bounded memory. Sequence ids are
the sequence dimension's coordinate values where they are valid names, else
``<dim>-<index>``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from atlasstore.errors import ImportPlanError, SourceError
from atlasstore.records import FieldSpec, default_kind, validate_name
from atlasstore.runs.ingest.engine import (
    READ_BLOCK_BYTES,
    ImportOptions,
    ImportPlan,
    Opened,
    Unit,
    source_record,
)
from atlasstore.store.xarray_input import dataarray_metadata, declares_missing

AXES = ("time", "y", "x")


def open_dataset(path: str, engine: str | None = None) -> Any:
    """``xarray.open_zarr`` for a Zarr store (a directory with ``zarr.json``/``.zgroup`` or a
    ``.zarr`` name), ``xarray.open_dataset`` otherwise; lazy either way."""
    import xarray as xr

    p = Path(path)
    try:
        if engine == "zarr" or (engine is None and p.is_dir() and (
                (p / "zarr.json").exists() or (p / ".zgroup").exists() or p.suffix == ".zarr")):
            return xr.open_zarr(path, chunks=None)
        return xr.open_dataset(path, engine=engine, chunks=None, cache=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"{path}: xarray cannot open it ({type(exc).__name__}: {exc})") from None


def _safe(value: Any) -> str | None:
    s = str(value)
    try:
        validate_name(s)
    except ValueError:
        return None
    return s


@dataclass(frozen=True)
class XarraySlice:
    """The reader of one sequence of a variable (see :class:`.engine.SourceReader`)."""

    path: str
    var: str
    dims: Mapping[str, str]
    isel: Mapping[str, int] = field(default_factory=dict)
    engine: str | None = None
    field_name: str | None = None

    def options(self) -> dict[str, Any]:
        return {"var": self.var, "dims": dict(self.dims), "isel": dict(self.isel),
                "engine": self.engine, "field": self.field_name}

    def files(self) -> list[str]:
        return [self.path]

    def member(self) -> str:
        sel = ", ".join(f"{k}={v}" for k, v in self.isel.items())
        return f"variable {self.var}" + (f" [{sel}]" if sel else "")

    def sources(self, hashes: Mapping[str, str]) -> list[dict[str, Any]]:
        return [source_record(self.path, hashes[self.path], "xarray", self.member())]

    def open(self, options: ImportOptions, hashes: Mapping[str, str]) -> Opened:
        ds = open_dataset(self.path, self.engine)
        try:
            da = select(ds, self.path, self.var, self.dims, self.isel)
            coords, attrs, name = dataarray_metadata(da)  # the values stay lazy until read
            nm = self.field_name or name or self.var
            units, long_name = attrs.get("units"), attrs.get("long_name")
            spec = FieldSpec(nm, options.kind or default_kind(nm),
                             units if isinstance(units, str) else None,
                             long_name if isinstance(long_name, str) else None, attrs)
            n, ny, nx = (int(da.sizes[self.dims[a]]) for a in AXES)
        except BaseException:
            ds.close()
            raise
        return Opened(n, (ny, nx), spec, coords, self._blocks(da, n, ny, nx),
                      lambda: self.sources(hashes), ds.close, declares_missing(da))

    def _blocks(self, da: Any, n: int, ny: int, nx: int
                ) -> Iterator[tuple[NDArray, list[dict[str, Any]], str]]:
        step = max(1, READ_BLOCK_BYTES // (ny * nx * max(da.dtype.itemsize, 4)))
        for t0 in range(0, n, step):
            t1 = min(n, t0 + step)
            block = da.isel({self.dims["time"]: slice(t0, t1)})
            values = np.asarray(block.values)
            if values.dtype.kind in "iu":
                values = values.astype(np.float64)
            elif values.dtype.kind != "f":
                raise SourceError(f"{self.path}: variable {self.var} has dtype {values.dtype}, "
                                  "not real numbers")
            yield values, [{}] * (t1 - t0), f"{self.path} {self.member()} steps {t0}..{t1 - 1}"


def select(ds: Any, path: str, var: str, dims: Mapping[str, str], isel: Mapping[str, int]) -> Any:
    """The variable with ``isel`` applied and its dims in (time, y, x) order; SourceError for a
    variable or dimension the dataset lacks, or dimensions left over."""
    if var not in ds.data_vars:
        raise SourceError(f"{path}: has no variable {var!r}; variables: "
                          f"{', '.join(map(str, ds.data_vars)) or '(none)'}")
    da = ds[var]
    for k, i in isel.items():
        if k not in da.dims:
            raise SourceError(f"{path}: variable {var} has no dimension {k!r} to select from "
                              f"(dims {list(da.dims)})")
        if not -da.sizes[k] <= i < da.sizes[k]:
            raise SourceError(f"{path}: index {i} is outside dimension {k} (size {da.sizes[k]})")
    da = da.isel(dict(isel))
    missing = [f"{a}={dims[a]}" for a in AXES if dims[a] not in da.dims]
    if missing:
        raise SourceError(f"{path}: variable {var} has dims {list(da.dims)}; no "
                          f"{', '.join(missing)} (map them with --dims time=..,y=..,x=..)")
    extra = [d for d in da.dims if d not in dims.values()]
    if extra:
        raise SourceError(f"{path}: variable {var} has dims {list(da.dims)}; fix "
                          f"{', '.join(map(str, extra))} with --isel {extra[0]}=0 (or make it "
                          "the --sequence-dim)")
    return da.transpose(*(dims[a] for a in AXES))


def parse_dims(dims: Mapping[str, str] | None) -> dict[str, str]:
    out = {a: a for a in AXES}
    for k, v in (dims or {}).items():
        if k not in AXES:
            raise ImportPlanError(f"--dims maps time, y and x, not {k!r}")
        out[k] = str(v)
    if len(set(out.values())) != 3:
        raise ImportPlanError(f"--dims maps two axes to one dimension: {out}")
    return out


def plan_xarray(path: str | Path, var: str, *, dims: Mapping[str, str] | None = None,
                sequence_dim: str | None = None, isel: Mapping[str, int] | None = None,
                domain: str | None = None, sequence: str | None = None,
                field: str | None = None, engine: str | None = None,
                options: ImportOptions | None = None) -> ImportPlan:
    """Plan the import of one variable: one unit per index of ``sequence_dim`` (or one unit,
    sequence id ``sequence`` or the variable's name); domain ``domain`` or the file's stem."""
    options = options or ImportOptions()
    d = parse_dims(dims)
    sel = {str(k): int(v) for k, v in (isel or {}).items()}
    p = str(Path(path).resolve())
    if not Path(p).exists():
        raise ImportPlanError(f"{path} does not exist")
    for name, v in (("domain name", domain), ("sequence id", sequence), ("field name", field)):
        if v is not None:
            validate_name(v, name)
    dom = domain or re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(p).stem).strip("._-") or "xarray"
    validate_name(dom, "domain name")
    source_options = {"var": var, "dims": d, "sequence_dim": sequence_dim, "isel": sel,
                      "domain": domain, "sequence": sequence, "field": field, "engine": engine}
    try:
        units = _units(p, var, d, sel, sequence_dim, dom, sequence, field, engine)
    except SourceError as exc:  # the file is not what the command asks of it: one FAILED line
        failed = Unit(dom, sequence or _safe(var) or "sequence", f"{p} variable {var}", "xarray",
                      XarraySlice(p, var, d, sel, engine, field))
        return ImportPlan("xarray", [], options, source_options, [p], [(failed, str(exc))])
    return ImportPlan("xarray", units, options, source_options, [p])


def _units(p: str, var: str, d: dict[str, str], sel: dict[str, int], sequence_dim: str | None,
           dom: str, sequence: str | None, field: str | None, engine: str | None) -> list[Unit]:
    """The units of one variable of one file; SourceError when the file cannot give them."""
    ds = open_dataset(p, engine)
    try:
        if sequence_dim is None:
            select(ds, p, var, d, sel)
            seq = sequence or _safe(var) or "sequence"
            return [Unit(dom, seq, f"{p} variable {var}", "xarray",
                         XarraySlice(p, var, d, sel, engine, field), shared_hashes=(p,))]
        if var in ds.data_vars and sequence_dim not in ds[var].dims:
            raise SourceError(f"{p}: variable {var} has no dimension {sequence_dim!r} "
                              f"(dims {list(ds[var].dims)})")
        n = int(ds[var].sizes[sequence_dim]) if var in ds.data_vars else 0
        select(ds, p, var, d, {**sel, sequence_dim: 0})
        ids: list[str | None] = [f"{_safe(sequence_dim) or 'seq'}-{i:04d}" for i in range(n)]
        if sequence_dim in ds[var].coords:  # named by its coordinate where it can be
            named = [_safe(v) for v in ds[var][sequence_dim].values]
            if None not in named and len(set(named)) == n:
                ids = named
        return [Unit(dom, str(ids[i]), f"{p} variable {var} {sequence_dim}={i}", "xarray",
                     XarraySlice(p, var, d, {**sel, sequence_dim: i}, engine, field),
                     shared_hashes=(p,)) for i in range(n)]
    finally:
        ds.close()
