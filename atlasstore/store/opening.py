"""Opening the zarr storage under a store location, with remote failures named (the helpers of
:meth:`AtlasStore.open <atlasstore.store.AtlasStore.open>` and ``create``)."""

from __future__ import annotations

from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import zarr

from atlasstore.errors import (
    NotAnAtlasStore,
)
from atlasstore.io import object_storage
from atlasstore.io.locations import local_path
from atlasstore.physics import fields as physics
from atlasstore.records import FieldSpec, default_kind


def _is_dataarray(value: Any) -> bool:
    return type(value).__name__ == "DataArray" and hasattr(value, "dims") and hasattr(value, "coords")


def _field_spec(field: FieldSpec | str | None, kind: str | None, name: str | None,
                attrs: Mapping[str, Any]) -> FieldSpec:
    """The FieldSpec of a write: given, or built from a name, a kind and source attributes."""
    if isinstance(field, FieldSpec):
        if kind is not None and kind != field.kind:
            raise physics.EnergyMapError(f"kind {kind!r} contradicts the field's {field.kind!r}")
        return field
    nm = field or name or "energy"
    units = attrs.get("units")
    long_name = attrs.get("long_name")
    return FieldSpec(nm, kind or default_kind(nm), units if isinstance(units, str) else None,
                     long_name if isinstance(long_name, str) else None, dict(attrs))


def _open_zarr_store(location: str | Path, read_only: bool,
                     storage_options: Mapping[str, Any] | None) -> Any:
    """The zarr Store of a location: a local folder, ``s3://`` through obstore (atomic
    conditional writes, see :mod:`atlasstore.io.object_storage`), any other URL through fsspec."""
    loc = str(location)
    path = local_path(loc)
    if object_storage.is_s3(loc):
        return object_storage.zarr_store(loc, read_only, storage_options)
    if path is None:
        return zarr.storage.FsspecStore.from_url(loc, storage_options=dict(storage_options or {}),
                                                 read_only=read_only)
    return zarr.storage.LocalStore(path, read_only=read_only)


def _remote_open_errors(loc: str) -> Any:
    """Object-store errors of opening or creating ``loc`` as one line naming the URL (a missing
    bucket says so); nothing for other locations."""
    return object_storage.errors_named(loc) if object_storage.is_s3(loc) else nullcontext()


def _not_a_store(loc: str, exc: NotAnAtlasStore) -> NotAnAtlasStore:
    """Why an ``s3://`` location holds no store when the bucket itself is the problem."""
    if object_storage.is_s3(loc):
        problem = object_storage.bucket_problem(object_storage.S3Location.parse(loc))
        if problem:
            return NotAnAtlasStore(f"{loc}: {problem}")
    return exc
