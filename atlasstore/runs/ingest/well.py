"""HDF5 files in The Well's format: one sequence per trajectory.

The format (the_well repository, ``docs/data_format.md``; what 1.2.0's ``write_dummy_data``
writes is the reference, see docs/bring-your-own-data.md): root attributes ``dataset_name``,
``grid_type``, ``n_spatial_dims``, ``n_trajectories`` and ``simulation_parameters`` (names, each
also a root attribute); ``dimensions/`` with ``time`` ((T,) or (B, T)) and the spatial
coordinates named by its ``spatial_dims`` attribute, x first; ``boundary_conditions/<name>``
(``bc_type``, ``associated_dims``, ``mask``); ``scalars/``; and fields in ``t0_fields`` (scalars),
``t1_fields`` (vectors, components last, in ``spatial_dims`` order) and ``t2_fields``, each
shaped ``[B][T] + (len(x), len(y)) + components`` where the flags ``sample_varying`` and
``time_varying`` say whether the B and T axes exist and ``dim_varying`` whether a spatial axis
does (a missing or size-1 axis is broadcast). Attributes may be missing (defaults: not sample-
or time-varying, varying along every axis) and strings may be bytes.

**Orientation.** The store keeps its own convention, (time, y, x) with x the last axis, so a
Well map stored as ``field[b, t, i, j]`` (i along x, j along y) lands at ``[t, j, i]``: a
128 x 384 (x, y) grid like turbulent_radiative_layer_2D is stored as 384 x 128 maps (short
side 128: levels 128 and 64), ``grad_x`` is the derivative along The Well's x, and the level
groups carry the file's x and y coordinates.

What a sequence holds: a t0 field (``field="density"``), a component of a t1 field
(``field="velocity_x"``, The Well's own channel names) or a derived energy density
(``derive="kinetic_energy"``: 1/2 rho |u|^2 from ``density`` and ``velocity``, or 1/2 |u|^2
where the file has no density). A field that does not vary in time is one step. Kept: time
values (steps' ``time`` and the coordinate arrays), the grid coordinates, and in the field's
attributes the dataset name, grid type, simulation parameters, constant scalars and boundary
conditions; time-varying scalars go to each step's ``metadata``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from atlasstore.errors import ImportPlanError, SourceError
from atlasstore.records import Axis, Coordinates, FieldSpec, default_kind, json_attr, validate_name
from atlasstore.runs.ingest.engine import (
    READ_BLOCK_BYTES,
    ImportOptions,
    ImportPlan,
    Opened,
    Unit,
    source_record,
)

#: derived quantities ``derive=`` can compute
DERIVED = ("kinetic_energy",)
FIELD_GROUPS = ("t0_fields", "t1_fields", "t2_fields")


def _text(v: Any) -> str:
    return v.decode() if hasattr(v, "decode") else str(v)


def _names(v: Any) -> list[str]:
    """A list-of-names attribute as written by any HDF5 writer: a str, bytes, an array of
    str/bytes, or an empty float64 array for an empty list."""
    if v is None:
        return []
    if isinstance(v, (str, bytes, np.bytes_)):
        return [_text(v)]
    arr = np.asarray(v)
    if arr.size == 0:
        return []
    return [_text(x) for x in arr.ravel()]


def _flag(obj: Any, name: str, default: bool = False) -> bool:
    v = obj.attrs.get(name, default)
    return bool(np.asarray(v).item()) if np.ndim(v) == 0 else bool(default)


def _open(path: str) -> Any:
    import h5py

    if not Path(path).is_file():
        raise SourceError(f"{path}: no such file")
    if not h5py.is_hdf5(path):
        raise SourceError(f"{path}: not an HDF5 file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise SourceError(f"{path}: cannot open it as HDF5 (truncated or damaged? {exc})") from None


@dataclass(frozen=True)
class WellLayout:
    """What planning learns from a file (and a worker checks again)."""

    n_traj: int
    spatial_dims: tuple[str, str]
    nx: int
    ny: int
    n_steps: int
    fields: Mapping[str, tuple[str, ...]]
    dataset_name: str


def describe(f: Any, path: str) -> WellLayout:
    """The layout of an open Well file; SourceError naming the file for what cannot be read."""
    try:
        dims_group = f["dimensions"]
        spatial = tuple(_names(dims_group.attrs.get("spatial_dims")))
        if len(spatial) != 2:
            raise SourceError(f"{path}: {len(spatial)} spatial dimensions {list(spatial)}; only "
                              "2D data can be imported")
        n_dims = int(np.asarray(f.attrs.get("n_spatial_dims", 2)).item())
        if n_dims != 2:
            raise SourceError(f"{path}: n_spatial_dims is {n_dims}; only 2D data can be imported")
        sizes = []
        for d in spatial:
            ds = dims_group[d]
            if ds.ndim != 1 or _flag(ds, "sample_varying") or _flag(ds, "time_varying"):
                raise SourceError(f"{path}: coordinate {d} varies by trajectory or time "
                                  f"(shape {ds.shape}); not supported (nor by The Well's code)")
            sizes.append(int(ds.shape[0]))
        n_steps = int(dims_group["time"].shape[-1]) if "time" in dims_group else 1
        fields = {g: tuple(_names(f[g].attrs.get("field_names")) or sorted(f[g].keys()))
                  if g in f else () for g in FIELD_GROUPS}
        n_traj = int(np.asarray(f.attrs.get("n_trajectories", 1)).item())
        name = _text(f.attrs.get("dataset_name", Path(path).stem))
    except KeyError as exc:
        raise SourceError(f"{path}: not in The Well's format (missing {exc})") from None
    return WellLayout(n_traj, (spatial[0], spatial[1]), sizes[0], sizes[1], n_steps, fields, name)


def _read_field(f: Any, group: str, name: str, lay: WellLayout, traj: int, t0: int, t1: int
                ) -> NDArray:
    """Steps t0..t1-1 of a field as (t, nx, ny, components...), broadcast over the axes its
    flags say it does not have."""
    ds = f[group][name]
    order = FIELD_GROUPS.index(group)
    tv = _flag(ds, "time_varying")
    index: list[Any] = []
    if _flag(ds, "sample_varying"):
        index.append(traj)
    if tv:
        index.append(slice(t0, t1))
    a = np.asarray(ds[tuple(index)] if index else ds[()])
    fill = declared_fill(ds)
    if fill is not None and not np.isnan(fill) and a.dtype.kind == "f":
        a = np.where(a == fill, np.nan, a)  # the declared fill marks missing cells
    if not tv:
        a = a[None]
    varying = [bool(v) for v in np.asarray(ds.attrs.get("dim_varying", [True, True])).ravel()]
    present = a.ndim - 1 - order
    if present < 2:  # a non-varying spatial axis left out: put it back
        for i, v in enumerate(varying[:2]):
            if not v:
                a = np.expand_dims(a, 1 + i)
    want = (a.shape[0], lay.nx, lay.ny, *a.shape[3:])
    try:
        a = np.broadcast_to(a, (t1 - t0 if not tv else a.shape[0], *want[1:]))
    except ValueError:
        raise SourceError(f"field {name} has shape {ds.shape}, which does not fit the "
                          f"{lay.nx}x{lay.ny} grid of {lay.spatial_dims}") from None
    return a


def declared_fill(ds: Any) -> float | None:
    """The value an HDF5 dataset declares for missing cells: a CF ``_FillValue`` or
    ``missing_value`` attribute, else a fill value set when it was created (HDF5's default
    fill, 0, declares nothing); None when it declares none."""
    import h5py

    for key in ("_FillValue", "missing_value"):
        if key in ds.attrs:
            v = np.asarray(ds.attrs[key]).ravel()
            if v.size and v.dtype.kind in "fiu":
                return float(v[0])
    try:
        user = ds.id.get_create_plist().fill_value_defined() == h5py.h5d.FILL_VALUE_USER_DEFINED
    except (AttributeError, ValueError):
        return None
    return float(ds.fillvalue) if user and np.asarray(ds.fillvalue).dtype.kind in "fiu" else None


@dataclass(frozen=True)
class WellTrajectory:
    """The reader of one trajectory of a Well file (see :class:`.engine.SourceReader`)."""

    path: str
    traj: int
    field: str | None = None
    derive: str | None = None
    density: str = "density"
    velocity: str = "velocity"

    def options(self) -> dict[str, Any]:
        return {"field": self.field, "derive": self.derive, "density": self.density,
                "velocity": self.velocity}

    @property
    def name(self) -> str:
        return self.derive or str(self.field)

    def files(self) -> list[str]:
        return [self.path]

    def member(self) -> str:
        what = f"field {self.field}" if self.field else f"{self.derive} from {self.velocity}"
        return f"trajectory {self.traj}, {what}"

    def sources(self, hashes: Mapping[str, str]) -> list[dict[str, Any]]:
        return [source_record(self.path, hashes[self.path], "well", self.member())]

    def open(self, options: ImportOptions, hashes: Mapping[str, str]) -> Opened:
        f = _open(self.path)
        try:
            lay = describe(f, self.path)
            if not 0 <= self.traj < lay.n_traj:
                raise SourceError(f"{self.path}: no trajectory {self.traj} "
                                  f"({lay.n_traj} trajectories)")
            spec, time_varying, formula = self._what(f, lay, options)
            n = lay.n_steps if time_varying else 1
            coords = self._coords(f, lay, n, time_varying)
            blocks = self._blocks(f, lay, n, time_varying)
        except BaseException:
            f.close()
            raise
        return Opened(n, (lay.ny, lay.nx), spec, coords, blocks,
                      lambda: self.sources(hashes), f.close, self._declares_missing(f, lay))

    def _declares_missing(self, f: Any, lay: WellLayout) -> bool:
        """Whether a dataset the unit reads declares a fill value (its NaN cells are then
        missing cells, not bad input)."""
        if self.derive:
            used = [("t1_fields", self.velocity), ("t0_fields", self.density)]
        else:
            group, name, _ = locate(lay, self.path, self.field, None, self.density, self.velocity)
            used = [(group, name)]
        return any(name in f[group] and declared_fill(f[group][name]) is not None
                   for group, name in used if group in f)

    def _what(self, f: Any, lay: WellLayout, options: ImportOptions
              ) -> tuple[FieldSpec, bool, str]:
        """The field spec, whether it varies in time, and how it is computed."""
        group, name, comp = locate(lay, self.path, self.field, self.derive, self.density,
                                   self.velocity)
        if self.derive:
            has_rho = self.density in lay.fields["t0_fields"]
            formula = "1/2 rho |u|^2" if has_rho else "1/2 |u|^2 (no density in the file)"
            tv = _flag(f["t1_fields"][self.velocity], "time_varying") or (
                has_rho and _flag(f["t0_fields"][self.density], "time_varying"))
            long_name = f"kinetic energy density {formula}"
        else:
            tv = _flag(f[group][name], "time_varying")
            formula = name if comp is None else f"{name}[..., {comp}]"
            long_name = self.name
        kind = options.kind or default_kind(self.name)
        attrs = {"well": self._attrs(f, lay), "formula": formula}
        return FieldSpec(self.name, kind, None, long_name, attrs), tv, formula

    def _attrs(self, f: Any, lay: WellLayout) -> dict[str, Any]:
        params = {p: json_attr(f.attrs.get(p)) for p in _names(f.attrs.get("simulation_parameters"))}
        bcs = {}
        for bname, g in (f["boundary_conditions"].items() if "boundary_conditions" in f else ()):
            rec: dict[str, Any] = {"bc_type": _text(g.attrs.get("bc_type", "")).upper(),
                                   "associated_dims": _names(g.attrs.get("associated_dims"))}
            if "mask" in g:
                rec["mask"] = [bool(b) for b in np.asarray(g["mask"]).ravel()]
            if "values" in g:
                rec["values"] = json_attr(np.asarray(g["values"]))
            bcs[bname] = rec
        scalars = {}
        for sname, ds in (f["scalars"].items() if "scalars" in f else ()):
            if not _flag(ds, "time_varying"):
                v = np.asarray(ds[()])
                scalars[sname] = json_attr(v[self.traj] if _flag(ds, "sample_varying") else v)
        return {"dataset_name": lay.dataset_name, "grid_type": _text(f.attrs.get("grid_type", "")),
                "file": Path(self.path).name, "trajectory": self.traj,
                "spatial_dims": list(lay.spatial_dims), "simulation_parameters": params,
                "constant_scalars": scalars, "boundary_conditions": bcs}

    def _coords(self, f: Any, lay: WellLayout, n: int, time_varying: bool) -> Coordinates:
        dims = f["dimensions"]
        x = Axis(tuple(np.asarray(dims[lay.spatial_dims[0]][()], np.float64)),
                 source_name=lay.spatial_dims[0])
        y = Axis(tuple(np.asarray(dims[lay.spatial_dims[1]][()], np.float64)),
                 source_name=lay.spatial_dims[1])
        time = None
        if time_varying and "time" in dims:
            t = np.asarray(dims["time"][()], np.float64)
            t = t[self.traj] if t.ndim == 2 else t
            time = tuple(float(v) for v in t[:n])
        return Coordinates(y, x, time, None, "time" if time else None)

    def _step_metadata(self, f: Any, t0: int, t1: int) -> list[dict[str, Any]]:
        """Time-varying scalars per step."""
        per: dict[str, NDArray] = {}
        for sname, ds in (f["scalars"].items() if "scalars" in f else ()):
            if _flag(ds, "time_varying"):
                v = np.asarray(ds[()])
                v = v[self.traj] if _flag(ds, "sample_varying") else v
                per[sname] = v[t0:t1]
        return [{"metadata": {"scalars": {k: json_attr(v[i]) for k, v in per.items()}}}
                if per else {} for i in range(t1 - t0)]

    def _blocks(self, f: Any, lay: WellLayout, n: int, time_varying: bool
                ) -> Iterator[tuple[NDArray, list[dict[str, Any]], str]]:
        per_step = lay.nx * lay.ny * 4 * (3 if self.derive else 1)
        step = max(1, READ_BLOCK_BYTES // per_step)
        for t0 in range(0, n, step):
            t1 = min(n, t0 + step)
            values = self._compute(f, lay, t0, t1)
            where = f"{self.path} trajectory {self.traj} steps {t0}..{t1 - 1}"
            # (t, x, y) -> (t, y, x): the store's orientation, x last
            yield (np.ascontiguousarray(values.transpose(0, 2, 1)),
                   self._step_metadata(f, t0, t1) if time_varying else [{}] * (t1 - t0), where)

    def _compute(self, f: Any, lay: WellLayout, t0: int, t1: int) -> NDArray:
        if self.derive:
            u = _read_field(f, "t1_fields", self.velocity, lay, self.traj, t0, t1)
            ke = 0.5 * np.sum(np.square(u, dtype=np.float64), axis=-1)
            if self.density in lay.fields["t0_fields"]:
                ke *= _read_field(f, "t0_fields", self.density, lay, self.traj, t0, t1)
            return ke
        group, name, comp = locate(lay, self.path, self.field, None, self.density, self.velocity)
        a = _read_field(f, group, name, lay, self.traj, t0, t1)
        return a[..., comp] if comp is not None else a


def locate(lay: WellLayout, path: str, field: str | None, derive: str | None, density: str,
           velocity: str) -> tuple[str, str, int | None]:
    """(group, dataset, component) of what to read; SourceError listing what the file has."""
    have = (f"t0 fields: {', '.join(lay.fields['t0_fields']) or '(none)'}; t1 fields: "
            f"{', '.join(lay.fields['t1_fields']) or '(none)'}")
    if derive:
        if velocity not in lay.fields["t1_fields"]:
            raise SourceError(f"{path}: no velocity field {velocity!r} to derive {derive} from "
                              f"({have})")
        return "t1_fields", velocity, None
    assert field is not None
    if field in lay.fields["t0_fields"]:
        return "t0_fields", field, None
    m = re.fullmatch(r"(.+)_([^_]+)", field)
    if m and m.group(1) in lay.fields["t1_fields"] and m.group(2) in lay.spatial_dims:
        return "t1_fields", m.group(1), lay.spatial_dims.index(m.group(2))
    raise SourceError(f"{path}: has no field {field!r} ({have}; a t1 component is "
                      f"<field>_<dim>, e.g. {(lay.fields['t1_fields'] or ('velocity',))[0]}_"
                      f"{lay.spatial_dims[0]})")


def _safe_name(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-") or "well"
    return s[:100] if s[0].isalnum() else f"w{s}"[:100]


def plan_well(files: Sequence[str | Path], *, field: str | None = None,
              derive: str | None = None, domain: str | None = None, density: str = "density",
              velocity: str = "velocity", options: ImportOptions | None = None) -> ImportPlan:
    """Plan the import of Well files: one unit per trajectory, sequence id
    ``<file stem>-traj<NNNN>``, domain ``domain`` or the file's ``dataset_name``. A file that
    cannot be read, or lacks the field, is one failure naming it; the other files go on."""
    options = options or ImportOptions()
    if (field is None) == (derive is None):
        raise ImportPlanError("choose what to import: a field (--field density) or a derived "
                              f"quantity (--derive {DERIVED[0]})")
    if derive is not None and derive not in DERIVED:
        raise ImportPlanError(f"unknown derived quantity {derive!r}; known: {', '.join(DERIVED)}")
    if field is not None:
        validate_name(field, "field name")
    if domain is not None:
        validate_name(domain, "domain name")
    if not files:
        raise ImportPlanError("no files given")
    units, failures, paths = [], [], []
    for given in files:
        path = str(Path(given).resolve())
        paths.append(path)
        stem = _safe_name(Path(path).stem)
        try:
            f = _open(path)
            try:
                lay = describe(f, path)
                locate(lay, path, field, derive, density, velocity)
            finally:
                f.close()
        except SourceError as exc:
            failures.append((Unit(domain or "-", stem, path, "well", None), str(exc)))
            continue
        dom = domain or _safe_name(lay.dataset_name)
        for b in range(lay.n_traj):
            reader = WellTrajectory(path, b, field, derive, density, velocity)
            units.append(Unit(dom, f"{stem}-traj{b:04d}", f"{path} trajectory {b}", "well",
                              reader, shared_hashes=(path,)))
    source_options = {"field": field, "derive": derive, "domain": domain, "density": density,
                      "velocity": velocity}
    return ImportPlan("well", units, options, source_options, paths, failures)
