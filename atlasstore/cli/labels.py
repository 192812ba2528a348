"""What the read commands say about a sequence, from its document alone: the field with its
unit and kind, where it came from, its coordinate and time span, and whether it is one of the
synthetic stand-ins that ``atlas generate`` makes (``ls``, ``show`` and ``stats`` share these
words, so they never disagree)."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from atlasstore.catalog.sync import sequence_kind
from atlasstore.physics.synth import list_presets
from atlasstore.records import FieldSpec

#: what a generated sequence is, in the words every read command uses
SYNTHETIC = ("synthetic stand-in{s} made by noise, blur and rotation of generated patterns, "
             "not The Well's simulations")


def field_units(spec: FieldSpec) -> str:
    """The field's unit as its array's attributes say it ("unknown" when the source gave none)."""
    return str(spec.array_attrs()["units"])


def field_label(spec: FieldSpec) -> str:
    """``name [units] (kind)``: what a number of this field is."""
    return f"{spec.name} [{field_units(spec)}] ({spec.kind})"


def is_synthetic(info: Mapping[str, Any]) -> bool:
    """Whether a sequence was made by ``atlas generate`` from a synthetic preset (every generated
    sequence is: the generator has no other source)."""
    gen = info.get("generation") or {}
    return sequence_kind(gen) == "generate" and (
        bool(gen.get("pattern")) or str(info.get("domain")) in list_presets())


def synthetic_note(domains: Iterable[str]) -> str | None:
    """The one-line note naming the listed domains whose data is synthetic (None if none is)."""
    names = sorted(set(domains))
    if not names:
        return None
    return f"note: {', '.join(names)}: {SYNTHETIC.format(s='s' if len(names) > 1 else '')}"


def origin(info: Mapping[str, Any]) -> str:
    """Who wrote the sequence: ``generate seed N (synthetic)``, ``import FORMAT: FILE``, ``api``."""
    gen = info.get("generation") or {}
    kind = sequence_kind(gen)
    if kind == "generate":
        seed = gen.get("seed")
        return (f"generate seed {seed}" if seed is not None else "generate") + (
            " (synthetic)" if is_synthetic(info) else "")
    if kind == "import":
        sources = [s for s in gen.get("sources") or () if isinstance(s, Mapping)]
        if not sources:
            return "import"
        fmt = sources[0].get("format", "?")
        if len(sources) == 1:
            return f"import {fmt}: {os.path.basename(str(sources[0].get('uri', '')).rstrip('/'))}"
        return f"import {fmt}: {len(sources)} files"
    return kind


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, (int, float)) else str(v)


#: calendars whose dates need no note
STANDARD_CALENDARS = {"standard", "gregorian", "proleptic_gregorian"}


def _time_record(info: Mapping[str, Any]) -> Mapping[str, Any]:
    rec = (info.get("coordinates") or {}).get("time")
    return rec if isinstance(rec, Mapping) else {}


def _as_date(info: Mapping[str, Any], v: Any) -> str | None:
    """A step's time as an ISO 8601 date to the second: an ISO string as given, a number with
    CF units ("hours since 1970-01-01") on its calendar (360_day too); None if it is no date."""
    if isinstance(v, str):
        try:
            return str(np.datetime64(v, "s"))
        except ValueError:
            return v
    rec = _time_record(info)
    units = rec.get("units")
    if not isinstance(v, (int, float)) or not isinstance(units, str) or " since " not in units:
        return None
    import cftime

    try:
        date = cftime.num2date(v, units, rec.get("calendar") or "standard")
    except (ValueError, TypeError):  # units cftime cannot read: shown as numbers
        return None
    return str(date.isoformat()).split(".")[0]


def time_text(info: Mapping[str, Any], *values: Any) -> str:
    """Step times (one, or ``first..last``) with the sequence's time unit: dates as dates (the
    recorded unit belongs to the numeric coordinate array) and their calendar where it is not
    the standard one; other numbers with their unit."""
    rec = _time_record(info)
    dates = [_as_date(info, v) for v in values]
    if all(d is not None for d in dates):
        calendar = rec.get("calendar")
        note = f" ({calendar} calendar)" if calendar and calendar not in STANDARD_CALENDARS else ""
        return "..".join(str(d) for d in dates) + note
    units = rec.get("units")
    return "..".join(_num(v) for v in values) + (f" {units}" if units else "")


def _axis_span(name: str, rec: Mapping[str, Any]) -> str:
    units = f" {rec['units']}" if rec.get("units") else ""
    label = rec.get("source_name") or name
    first = rec.get("origin")
    if rec.get("uniform") and rec.get("spacing") is not None and first is not None:
        last = first + rec["spacing"] * (int(rec.get("n", 1)) - 1)
        return f"{label} {_num(first)}..{_num(last)}{units}"
    return f"{label} from {_num(first)}{units} (non-uniform)"


def spans(info: Mapping[str, Any]) -> str | None:
    """The coordinate and time span of a sequence with coordinates (``y 0..1 m, x ..., time
    0..9 s``), from its document; None for a sequence on plain pixels and steps."""
    rec = info.get("coordinates") or {}
    parts = [_axis_span(n, rec[n]) for n in ("y", "x") if isinstance(rec.get(n), Mapping)]
    steps = info.get("steps") or ()
    times = [s["time"] for s in steps if isinstance(s, Mapping) and "time" in s]
    if times:
        t: Mapping[str, Any] = rec["time"] if isinstance(rec.get("time"), Mapping) else {}
        label = t.get("source_name") or "time"
        parts.append(f"{label} {time_text(info, times[0], times[-1])}")
    return ", ".join(parts) or None


def valid_fraction(info: Mapping[str, Any], steps: Iterable[Mapping[str, Any]] | None = None
                   ) -> float:
    """Fraction of the base level's cells that hold a value over the given steps (default: all),
    from the step records' ``valid_cells`` (absent: every cell is valid)."""
    ny, nx = (int(v) for v in info["shape"][-2:])
    chosen = list(info.get("steps") or () if steps is None else steps)
    if not chosen:
        return 1.0
    valid = sum(int(s.get("valid_cells", ny * nx)) for s in chosen)
    return valid / (ny * nx * len(chosen))
