"""Sequences from xarray: an ``xarray.DataArray``'s values in store order, its physical
coordinates and its JSON-able attributes, without reading more than asked."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from atlasstore.physics import fields as physics
from atlasstore.records import Axis, Coordinates, json_attr


def from_dataarray(da: Any, dims: Mapping[str, str] | None = None
                   ) -> tuple[NDArray, Coordinates, dict[str, Any], str | None]:
    """(values (time, y, x), coordinates, JSON attrs, name) of an ``xarray.DataArray``.

    ``dims`` maps our axes to the array's dimension names (default: ``time``, ``y``, ``x``
    themselves; a 2D array is one step). Coordinates of those dimensions are kept (dates as
    ISO strings), and so are the array's attributes that JSON can hold.
    """
    da = in_store_order(da, dims)
    coords, attrs, name = dataarray_metadata(da, dims)
    return np.asarray(da.values), coords, attrs, name


def in_store_order(da: Any, dims: Mapping[str, str] | None = None) -> Any:
    """``da`` with its dims mapped by ``dims`` in (time, y, x) order (a 2D array gains a time
    axis of one step); EnergyMapError when they do not fit."""
    want = {"time": "time", "y": "y", "x": "x", **dict(dims or {})}
    names = tuple(da.dims)
    if len(names) == 2 and want["time"] not in names:
        da = da.expand_dims(want["time"])
        names = tuple(da.dims)
    order = (want["time"], want["y"], want["x"])
    missing = [d for d in order if d not in names]
    if missing or len(names) != 3:
        raise physics.EnergyMapError(
            f"DataArray {da.name!r} has dims {names}; expected (time, y, x), given as "
            f"{dict(zip(('time', 'y', 'x'), order, strict=True))}"
            + (f" (missing {missing})" if missing else "") + "; pass dims={'time': ..., "
            "'y': ..., 'x': ...}")
    return da.transpose(*order)


def dataarray_metadata(da: Any, dims: Mapping[str, str] | None = None
                       ) -> tuple[Coordinates, dict[str, Any], str | None]:
    """Coordinates, JSON attributes and name of a (time, y, x) DataArray, without reading its
    values."""
    order = tuple(da.dims)
    axes: dict[str, Axis | None] = {}
    for ours, theirs in zip(("y", "x"), order[1:], strict=True):
        c = da.coords.get(theirs)
        if c is not None and c.ndim == 1 and np.issubdtype(c.dtype, np.number):
            axes[ours] = Axis(tuple(np.asarray(c.values, np.float64)),
                              json_attr(c.attrs.get("units")), str(theirs))
        else:
            axes[ours] = None
    time, time_units, calendar = _time_axis(da.coords.get(order[0]))
    coords = Coordinates(axes["y"], axes["x"], time, time_units, str(order[0]) if time else None,
                         calendar)
    attrs = {str(k): v for k, v in ((k, json_attr(v)) for k, v in da.attrs.items()) if v is not None}
    return coords, attrs, (str(da.name) if da.name is not None else None)


def _time_axis(tc: Any) -> tuple[tuple[float | str, ...] | None, str | None, str | None]:
    """(values, units, calendar) of a time coordinate as the store keeps it: dates on the
    standard calendar as ISO strings; dates on any other CF calendar (cftime objects: 360_day,
    noleap, ...) as the numbers the source encoded, in its units and calendar, so plain xarray
    decodes the same dates from the store; plain numbers with their units."""
    if tc is None or tc.ndim != 1:
        return None, None, None
    tv = np.asarray(tc.values)
    if np.issubdtype(tv.dtype, np.datetime64):
        stamps = [str(np.datetime_as_string(t, unit="ns")) for t in tv]
        return tuple(stamps), f"seconds since {stamps[0]}", None
    if np.issubdtype(tv.dtype, np.number):
        return tuple(float(t) for t in tv), json_attr(tc.attrs.get("units")), json_attr(
            tc.attrs.get("calendar"))
    if tv.dtype == object and len(tv) and hasattr(tv[0], "calendar"):
        import cftime

        calendar = str(tc.encoding.get("calendar") or tv[0].calendar)
        units = str(tc.encoding.get("units") or f"days since {tv[0].isoformat()}")
        numbers = cftime.date2num(list(tv), units, calendar=calendar)
        return tuple(float(t) for t in np.asarray(numbers, np.float64)), units, calendar
    return None, None, None


def declares_missing(da: Any) -> bool:
    """Whether a DataArray declares missing cells the CF way (``_FillValue`` or
    ``missing_value``, decoded to NaN by xarray and kept in its encoding), so its NaN cells are
    missing values rather than bad input."""
    return any(k in da.encoding or k in da.attrs for k in ("_FillValue", "missing_value"))
