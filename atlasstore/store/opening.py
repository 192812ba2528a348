"""Opening the zarr storage under a store location, with remote failures named (the helpers of
:meth:`AtlasStore.open <atlasstore.store.AtlasStore.open>` and ``create``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import zarr
from zarr.core.buffer import cpu as cpu_buffer
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from atlasstore._version import __version__
from atlasstore.errors import (
    NotAnAtlasStore,
    StoreError,
)
from atlasstore.io import object_storage
from atlasstore.io.locations import local_path
from atlasstore.io.provenance import utc_now
from atlasstore.io.schemas import validate
from atlasstore.physics import fields as physics
from atlasstore.records import FieldSpec, default_kind
from atlasstore.store.documents import FORMAT_VERSION, json_or_none


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


def write_root_document(zstore: Any, loc: str, exist_ok: bool) -> None:
    """Create a new store's root document.

    Exclusive create of the root metadata (atomic on local disks): of two processes creating the
    same new store at once, one writes it and both then open it; neither ever wipes what the
    other wrote (zarr's mode="w" would). Without ``exist_ok`` the loser is told so.
    """
    attrs = {"atlasstore": {"format_version": FORMAT_VERSION, "created": utc_now(),
                            "code_version": __version__, "store_id": str(uuid.uuid4()),
                            "schemas": ["root", "domain", "sequence", "preset"],
                            "layout": "<domain>/<sequence_id>/<level>/{energy,grad_x,grad_y}"}}
    validate(attrs, "root", what="root attributes")
    doc = {"zarr_format": 3, "node_type": "group", "attributes": attrs}
    sync(zstore.set_if_not_exists("zarr.json",
                                  cpu_buffer.Buffer.from_bytes(json.dumps(doc).encode())))
    if not exist_ok:
        got = sync(zstore.get("zarr.json", prototype=default_buffer_prototype()))
        theirs = None if got is None else json_or_none(got.to_bytes())
        if not isinstance(theirs, dict) or theirs.get("attributes") != attrs:
            raise StoreError(f"{loc} was created by another process just now; open it instead")

