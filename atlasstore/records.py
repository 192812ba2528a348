"""Typed records: the one place that knows the JSON shape of what a sequence holds.

:class:`FieldSpec` (a sequence's primary array: name, kind, units), :class:`Axis` and
:class:`Coordinates` (physical axes), :class:`ArrayKey` (the address of one stored array) and
the naming rule of every name that becomes a path in a store (:func:`validate_name`). They are
plain frozen dataclasses with ``record()``/``from_record()`` to and from the sequence document,
shared by the write side (:mod:`atlasstore.store`) and every reader above it, so that no reader
imports the writer to learn the data model.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from atlasstore.errors import EnergyMapError, InvalidName


# --------------------------------------------------------------------------- names
def validate_name(name: str, what: str = "name") -> str:
    """Refuse names that could escape the store or break paths: '/', '..', whitespace, control."""
    if not isinstance(name, str):
        raise InvalidName(f"{what} must be a string, got {type(name).__name__}")
    if name == "":
        raise InvalidName(f"{what} is empty")
    if "/" in name or "\\" in name:
        raise InvalidName(f"{what} {name!r} contains a path separator")
    if ".." in name:
        raise InvalidName(f"{what} {name!r} contains '..'")
    if any(c.isspace() for c in name):
        raise InvalidName(f"{what} {name!r} contains whitespace")
    if any(ord(c) < 32 or ord(c) == 127 for c in name):
        raise InvalidName(f"{what} {name!r} contains control characters")
    if not _NAME_RE.match(name):
        raise InvalidName(f"{what} {name!r} must start with a letter or digit and use only "
                          f"letters, digits, '_', '-', '.' (at most 128 characters)")
    if name in RESERVED or name == "zarr.json":
        raise InvalidName(f"{what} {name!r} is reserved")
    return name


_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")


#: root members that are not domains
RESERVED = {"_runs", "_lock", "_log"}


# --------------------------------------------------------------------------- kinds
#: What a field declares itself: extensive (energy per pixel: block-sum pyramid, non-negative,
#: entropy defined) or intensive (temperature, velocity: mean pyramid, negatives allowed).
FIELD_KINDS: tuple[str, ...] = ("extensive", "intensive")


def check_kind(kind: str) -> str:
    if kind not in FIELD_KINDS:
        raise EnergyMapError(f"field kind must be one of {', '.join(FIELD_KINDS)}, got {kind!r}")
    return kind


# --------------------------------------------------------------------------- fields and axes
@dataclass(frozen=True)
class FieldSpec:
    """What a sequence's primary array holds: its name (the array's name in every level group),
    its kind (extensive or intensive, see :mod:`atlasstore.physics.fields`), units and the source's own
    attributes (JSON). Sequences written before fields had names hold ``energy``, extensive."""

    name: str = "energy"
    kind: str = "extensive"
    units: str | None = None
    long_name: str | None = None
    attrs: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_name(self.name, "field name")
        if self.name in ("grad_x", "grad_y", "time", "y", "x"):
            raise EnergyMapError(f"field name {self.name!r} is reserved (gradient and "
                                         "coordinate arrays use it)")
        check_kind(self.kind)

    def record(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "units": self.units,
                "long_name": self.long_name, "attrs": dict(self.attrs)}

    def array_attrs(self) -> dict[str, Any]:
        """Attributes of the primary array (the source's first, ours on top)."""
        if self.name == "energy" and self.units is None and self.long_name is None:
            own = {"long_name": "energy density", "units": "energy / pixel"}
        else:
            own = {"long_name": self.long_name or self.name, "units": self.units or "unknown"}
        return {**dict(self.attrs), **own, "field_kind": self.kind}

    @classmethod
    def from_record(cls, rec: Mapping[str, Any] | None) -> FieldSpec:
        if not rec:
            return ENERGY
        return cls(rec["name"], rec.get("kind", "extensive"), rec.get("units"),
                   rec.get("long_name"), dict(rec.get("attrs") or {}))


ENERGY = FieldSpec()


def default_kind(name: str) -> str:
    """Energies are extensive (per-pixel content), everything else intensive unless declared:
    a block-sum pyramid of a temperature or a velocity would be wrong, a mean pyramid of an
    energy only loses its conservation check."""
    return "extensive" if name == "energy" or name.endswith("_energy") else "intensive"


def primary_field(info: Mapping[str, Any]) -> str:
    """The name of a committed sequence's primary array ("energy" for older sequences)."""
    rec = info.get("field")
    return str(rec["name"]) if isinstance(rec, Mapping) and rec.get("name") else "energy"


def field_kind(info: Mapping[str, Any]) -> str:
    rec = info.get("field")
    return str(rec.get("kind", "extensive")) if isinstance(rec, Mapping) else "extensive"


@dataclass(frozen=True)
class Axis:
    """Physical coordinate values of one axis at the base level (x, y: pixel centres)."""

    values: tuple[float, ...]
    units: str | None = None
    source_name: str | None = None

    def __post_init__(self) -> None:
        v = np.asarray(self.values, dtype=np.float64)
        if v.ndim != 1 or v.size == 0 or not np.isfinite(v).all():
            raise EnergyMapError(f"coordinate values must be a non-empty 1D list of "
                                         f"finite numbers, got shape {v.shape}")
        object.__setattr__(self, "values", tuple(float(a) for a in v))

    def record(self) -> dict[str, Any]:
        v = np.asarray(self.values)
        d = np.diff(v)
        uniform = bool(d.size == 0 or np.allclose(d, d[0], rtol=1e-6, atol=0.0))
        rec: dict[str, Any] = {"n": int(v.size), "origin": float(v[0]), "uniform": uniform,
                               "spacing": float(d[0]) if d.size and uniform else None,
                               "units": self.units, "source_name": self.source_name}
        return rec

    def at_level(self, factor: int) -> NDArray[np.float64]:
        """Centres of the ``factor`` x ``factor`` blocks of a coarser level."""
        v = np.asarray(self.values, dtype=np.float64)
        return v.reshape(-1, factor).mean(axis=1) if factor > 1 else v


@dataclass(frozen=True)
class Coordinates:
    """Physical axes of a sequence: ``y`` and ``x`` at the base level, ``time`` per step (a
    number, or an ISO 8601 string for dates, then ``time_units`` is CF "seconds since ...")."""

    y: Axis | None = None
    x: Axis | None = None
    time: tuple[float | str, ...] | None = None
    time_units: str | None = None
    time_source_name: str | None = None
    #: the CF calendar of numeric times (``360_day``, ``noleap``, ...); None: standard
    time_calendar: str | None = None

    def is_empty(self) -> bool:
        return self.y is None and self.x is None and self.time is None

    def record(self) -> dict[str, Any]:
        rec: dict[str, Any] = {}
        for name in ("y", "x"):
            axis = getattr(self, name)
            if axis is not None:
                rec[name] = axis.record()
        if self.time is not None:
            rec["time"] = {"n": len(self.time), "units": self.time_units,
                           "source_name": self.time_source_name}
            if self.time_calendar:
                rec["time"]["calendar"] = self.time_calendar
        return rec

    def time_values(self) -> NDArray[np.float64] | None:
        """Time as float64 for the coordinate array (dates: seconds since the first)."""
        if self.time is None:
            return None
        if all(isinstance(t, str) for t in self.time):
            stamps = np.array(self.time, dtype="datetime64[ns]")
            return (stamps - stamps[0]) / np.timedelta64(1, "s")
        return np.asarray(self.time, dtype=np.float64)


NO_COORDINATES = Coordinates()


def json_attr(v: Any) -> Any:
    """An attribute value as JSON can hold it (arrays become lists, bytes text); None if not."""
    if isinstance(v, bytes):
        return v.decode(errors="replace")
    if isinstance(v, np.ndarray):
        v = v.tolist()
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, (list, tuple)):
        items = [json_attr(x) for x in v]
        return None if any(x is None for x in items) else items
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if v is None or isinstance(v, (str, int, float, bool)):
        return v
    return str(v)


@dataclass(frozen=True, order=True)
class ArrayKey:
    """The address of one stored array: ``domain/sequence/level/field`` below the store root.

    The one place that spells an array's path; readers, caches and the audit take keys, not
    strings, so the scale is never renamed, packed into a string and split back apart."""

    domain: str
    sequence_id: str
    level: int
    field: str

    @property
    def path(self) -> str:
        return f"{self.domain}/{self.sequence_id}/{self.level}/{self.field}"

    @classmethod
    def parse(cls, path: str) -> ArrayKey:
        """The key of ``domain/sequence/level/field`` (a path from :attr:`path`)."""
        parts = path.strip("/").split("/")
        if len(parts) != 4 or not parts[2].isdigit():
            raise InvalidName(f"not an array path (domain/sequence/level/field): {path!r}")
        return cls(parts[0], parts[1], int(parts[2]), parts[3])

    def __str__(self) -> str:
        return self.path


@dataclass(frozen=True)
class SequenceRecord:
    """A committed sequence's document (``attrs.atlasstore_sequence``, see
    ``schemas/sequence.schema.json``) as a typed record.

    The fields readers use are typed; ``document`` keeps the whole JSON as stored (what
    :meth:`to_dict` returns), so a field added by a later format version is never lost.
    """

    domain: str
    sequence_id: str
    status: str
    n_steps: int
    shape: tuple[int, int]
    levels: tuple[int, ...]
    fields: tuple[str, ...]
    field: FieldSpec
    generation: Mapping[str, Any]
    steps: tuple[Mapping[str, Any], ...]
    arrays: Mapping[str, Mapping[str, Any]]
    created: str | None
    completed: str | None
    document: Mapping[str, Any]

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> SequenceRecord:
        shape = tuple(int(v) for v in doc["shape"])
        return cls(domain=str(doc["domain"]), sequence_id=str(doc["sequence_id"]),
                   status=str(doc["status"]), n_steps=int(doc["n_steps"]),
                   shape=(shape[-2], shape[-1]), levels=tuple(int(v) for v in doc["levels"]),
                   fields=tuple(str(f) for f in doc["fields"]),
                   field=FieldSpec.from_record(doc.get("field")),
                   generation=dict(doc.get("generation") or {}),
                   steps=tuple(doc.get("steps") or ()), arrays=dict(doc.get("arrays") or {}),
                   created=doc.get("created"), completed=doc.get("completed"), document=doc)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.document)

    @property
    def key(self) -> str:
        return f"{self.domain}/{self.sequence_id}"

    def array_key(self, level: int, field: str | None = None) -> ArrayKey:
        """The address of one of its arrays (default: the primary field)."""
        return ArrayKey(self.domain, self.sequence_id, level, field or self.field.name)

    def checksum(self, level: int, field: str) -> str:
        """The recorded checksum of one of its arrays (KeyError naming it when absent)."""
        return str(self.arrays[f"{level}/{field}"]["checksum"])
