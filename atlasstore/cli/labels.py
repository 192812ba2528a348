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


def _time(v: Any) -> str:
    """A step's time: a number, or an ISO 8601 date to the second."""
    if isinstance(v, str):
        try:
            return str(np.datetime64(v, "s"))
        except ValueError:
            return v
    return _num(v)


def time_text(info: Mapping[str, Any], value: Any) -> str:
    """A step's time with the sequence's time unit (dates are their own: the recorded unit is
    the numeric coordinate array's "seconds since ...")."""
    rec = (info.get("coordinates") or {}).get("time")
    units = rec.get("units") if isinstance(rec, Mapping) else None
    return _time(value) + (f" {units}" if units and not isinstance(value, str) else "")


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
        parts.append(f"{label} {_time(times[0])}..{time_text(info, times[-1])}")
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
