"""The store's JSON documents: the root check, group documents with Zarr's inline consolidated
metadata, the multiscales attribute, and what metadata may hold.

Kept apart from :mod:`atlasstore.store.atlas_store` (the hierarchy and its commit protocol) because they are
pure functions of documents: every one of them can be read and tested without a store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr
from zarr.core.buffer import cpu as cpu_buffer
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from atlasstore.errors import InvalidMetadata, NotAnAtlasStore, SchemaError
from atlasstore.io.schemas import validate

#: the atlas format this code reads and writes (root attribute ``atlasstore.format_version``)
FORMAT_VERSION = 1


def json_document(value: Any, what: str) -> Any:
    """``value`` as it will read back from a metadata document, or InvalidMetadata naming where.

    Refused: what JSON cannot hold (sets, bytes, arrays, objects), NaN and infinities (Zarr
    would write invalid JSON) and non-string keys (JSON would turn them into strings, so the
    value would not read back as written). NumPy scalars become numbers, tuples lists.
    """
    def conv(v: Any, where: str) -> Any:
        if isinstance(v, Mapping):
            out = {}
            for k, x in v.items():
                if not isinstance(k, str):
                    raise InvalidMetadata(f"{what}: key {k!r} at {where or 'top level'} is not a "
                                          "string")
                out[k] = conv(x, f"{where}/{k}")
            return out
        if isinstance(v, (list, tuple)):
            return [conv(x, f"{where}/{i}") for i, x in enumerate(v)]
        if isinstance(v, np.generic):
            v = v.item()
        if v is None or isinstance(v, (str, int)):
            return v
        if isinstance(v, float) and math.isfinite(v):
            return v
        got = repr(v) if isinstance(v, float) else f"a {type(v).__name__}"
        raise InvalidMetadata(f"{what}: {where or 'the value'} is {got}, which JSON cannot hold")

    return conv(value, "")


#: Zarr's inline consolidated metadata of a group without members (xarray and zarr then find no
#: children through it instead of listing the store)
NO_MEMBERS: dict[str, Any] = {"kind": "inline", "must_understand": False, "metadata": {}}


def group_document(attributes: Mapping[str, Any], members: Mapping[str, Any]) -> dict[str, Any]:
    """A group's ``zarr.json`` with inline consolidated metadata of ``members`` (flat paths ->
    node documents, as ``zarr.consolidate_metadata`` writes them)."""
    return {"zarr_format": 3, "node_type": "group", "attributes": dict(attributes),
            "consolidated_metadata": {**NO_MEMBERS, "metadata": dict(members)}}


def node_document(node: zarr.Group | zarr.Array) -> dict[str, Any]:
    """The ``zarr.json`` document of a node, as zarr serialises it."""
    buf = node.metadata.to_buffer_dict(default_buffer_prototype())["zarr.json"]
    return json.loads(buf.to_bytes())


def json_buffer(doc: Mapping[str, Any]) -> Any:
    return cpu_buffer.Buffer.from_bytes(json.dumps(doc, allow_nan=False).encode())


def json_or_none(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def json_type(v: Any) -> str:
    """JSON's name for the type of a parsed value (for error messages)."""
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean",
             int: "a number", float: "a number", type(None): "null"}
    return names.get(type(v), type(v).__name__)


def root_document(zstore: Any, loc: str) -> dict[str, Any]:
    """The root ``zarr.json`` of an atlas store, checked before zarr parses it.

    Any other content (absent, not JSON, JSON that is not a Zarr v3 group document, attributes
    or ``attributes.atlasstore`` that are not objects, an invalid root record, another format
    version) is NotAnAtlasStore naming the location: zarr itself would raise TypeError or
    AttributeError on e.g. ``[]`` or ``{"attributes": []}``.
    """
    what = f"{loc} is not an atlas store"
    buf = sync(zstore.get("zarr.json", prototype=default_buffer_prototype()))
    if buf is None:
        raise NotAnAtlasStore(f"{what} (no Zarr v3 root group: no zarr.json)")
    doc = json_or_none(buf.to_bytes())
    if not isinstance(doc, dict):
        got = "not JSON" if doc is None and buf.to_bytes().strip() != b"null" else json_type(doc)
        raise NotAnAtlasStore(f"{what} (its root zarr.json is {got}, not a Zarr group document)")
    if doc.get("zarr_format") != 3 or doc.get("node_type") != "group":
        raise NotAnAtlasStore(f"{what} (its root zarr.json is not a Zarr v3 group: zarr_format "
                              f"{doc.get('zarr_format')!r}, node_type {doc.get('node_type')!r})")
    attrs = doc.get("attributes", {})
    if not isinstance(attrs, dict):
        raise NotAnAtlasStore(f"{what} (its root attributes are {json_type(attrs)}, not an "
                              "object)")
    if "atlasstore" not in attrs:
        raise NotAnAtlasStore(f"{loc} is a Zarr group but not an atlas store "
                              f"(no 'atlasstore' root attribute)")
    if not isinstance(attrs["atlasstore"], dict):
        raise NotAnAtlasStore(f"{what} (its 'atlasstore' root attribute is "
                              f"{json_type(attrs['atlasstore'])}, not an object)")
    fmt = attrs["atlasstore"].get("format_version")
    if fmt != FORMAT_VERSION:
        raise NotAnAtlasStore(f"{loc} has atlas format {fmt!r}; this code reads {FORMAT_VERSION}")
    try:
        validate(attrs, "root", what=f"root attributes of {loc}")
    except SchemaError as exc:
        raise NotAnAtlasStore(f"{what} readable by this code ({exc})") from None
    return doc


def multiscales_attr(levels: Sequence[int], base: int) -> dict[str, Any]:
    """The zarr-conventions ``multiscales`` block: each level derived from the base level."""
    layout: list[dict[str, Any]] = []
    for lvl in levels:
        f = float(base // lvl)
        entry: dict[str, Any] = {"asset": str(lvl),
                                 "transform": {"scale": [f, f], "translation": [(f - 1) / 2] * 2}}
        if lvl != base:
            entry["derived_from"] = str(base)
            entry["resampling_method"] = "sum"
        layout.append(entry)
    return {"layout": layout, "resampling_method": "sum"}


MULTISCALES_CONVENTION = {
    "schema_url": "https://raw.githubusercontent.com/zarr-conventions/multiscales/refs/tags/v1/schema.json",
    "spec_url": "https://github.com/zarr-conventions/multiscales/blob/v1/README.md",
    "uuid": "d35379db-88df-4056-af3a-620245f8e347",
    "name": "multiscales",
    "description": "Multiscale layout of zarr datasets",
}
