"""The predecessor's folders of maps: one ``.npy`` file per map, a JSON sidecar beside each.

The predecessor (``../shared/reference/predecessor-data-layer-summary.md``) wrote every energy
map as ``<name>.npy`` with a sidecar ``<name>.json`` (energy mean and variance, entropy,
timestamp, the perturbations applied, ...) and an inventory ``catalog.json`` (``maps``: path,
domain, truncated SHA-256, sizes and statistics per file). Files are grouped into sequences by
a pattern with named fields, e.g. ``{domain}/{sequence}_t{t}.npy`` (``{t}`` is a step number;
any other ``{name}`` is kept in the step's ``source`` record), or by sidecar keys
(``sidecar_keys={"sequence": "sequence_id", "t": "time_step"}``) for what the path does not
say. Each sequence's steps must run without gaps and without a duplicated step; they are
stored as t = 0, 1, ... in order (the file's own step number is kept in ``source.t``).

Per step the store keeps the sidecar as ``steps[t]["metadata"]`` and its perturbations as
``steps[t]["perturbations"]`` (normalised to ``{"kind": ...}`` records, so ``--perturbation``
queries work on imported data). A file the importer cannot place or read fails its sequence
with a message naming the file; the other sequences are imported.
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from atlasstore.errors import ImportPlanError, SourceError
from atlasstore.records import NO_COORDINATES, FieldSpec, default_kind, validate_name
from atlasstore.runs.ingest.engine import (
    ImportOptions,
    ImportPlan,
    Opened,
    Unit,
    resolve_inside,
    source_record,
)

#: the predecessor's layout: data/<domain>/<sequence>_t<step>.npy
PREDECESSOR_PATTERN = "{domain}/{sequence}_t{t}.npy"
GROUPING = ("domain", "sequence", "t")
_FIELD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")


def compile_pattern(pattern: str) -> tuple[re.Pattern[str], tuple[str, ...]]:
    """A regular expression for relative paths matching ``pattern`` and its field names.

    ``{t}`` matches digits, any other ``{name}`` one or more characters without ``/``; ``*``
    any characters without ``/``; everything else literally.
    """
    if not isinstance(pattern, str) or not pattern or pattern.startswith("/"):
        raise ImportPlanError(f"pattern must be a relative path pattern like "
                              f"{PREDECESSOR_PATTERN!r}, got {pattern!r}")
    out, names, pos = [], [], 0
    for m in _FIELD.finditer(pattern):
        out.append(_literal(pattern[pos:m.start()]))
        name = m.group(1)
        if name in names:
            raise ImportPlanError(f"pattern {pattern!r} names {{{name}}} twice")
        names.append(name)
        out.append(rf"(?P<{name}>\d+)" if name == "t" else rf"(?P<{name}>[^/]+?)")
        pos = m.end()
    out.append(_literal(pattern[pos:]))
    if "{" in "".join(_FIELD.split(pattern)[::2]) or "}" in "".join(_FIELD.split(pattern)[::2]):
        raise ImportPlanError(f"pattern {pattern!r}: fields are {{name}} with a letter or '_' "
                              "first, then letters, digits or '_'")
    return re.compile("^" + "".join(out) + "$"), tuple(names)


def _literal(text: str) -> str:
    return "[^/]*".join(re.escape(p) for p in text.split("*"))


def normalise_perturbations(value: Any) -> list[dict[str, Any]]:
    """The predecessor's perturbation records as the store's ``{"kind": ..., **params}``:
    a name, or a mapping naming it by ``kind``, ``type`` or ``name``."""
    if value is None:
        return []
    if isinstance(value, Mapping):  # {"rotation": 12.0, "thermal_blur": 2.0}
        return [{"kind": str(k), "value": v} for k, v in value.items()]
    if not isinstance(value, list):
        raise SourceError(f"perturbations must be a list, got {type(value).__name__}")
    out = []
    for p in value:
        if isinstance(p, str):
            out.append({"kind": p})
        elif isinstance(p, Mapping):
            kind = p.get("kind", p.get("type", p.get("name")))
            rest = {k: v for k, v in p.items() if k not in ("kind", "type", "name")}
            out.append({"kind": str(kind) if kind is not None else "unknown", **rest})
        else:
            raise SourceError(f"a perturbation record must be a name or an object, got {p!r}")
    return out


@dataclass(frozen=True)
class NpyStep:
    t: int
    path: str
    sidecar: str | None
    source: Mapping[str, Any]


@dataclass(frozen=True)
class NpySequence:
    """The reader of one sequence of ``.npy`` maps (see :class:`.engine.SourceReader`)."""

    steps: tuple[NpyStep, ...]
    field_name: str = "energy"
    kind: str | None = None

    def options(self) -> dict[str, Any]:
        return {"field": self.field_name}

    def files(self) -> list[str]:
        return [f for s in self.steps for f in (s.path, s.sidecar) if f]

    def sources(self, hashes: Mapping[str, str]) -> list[dict[str, Any]]:
        out = []
        for s in self.steps:
            out.append(source_record(s.path, hashes[s.path], "npy", f"t={s.t}"))
            if s.sidecar:
                out.append(source_record(s.sidecar, hashes[s.sidecar], "npy", f"sidecar t={s.t}"))
        return out

    def open(self, options: ImportOptions, hashes: Mapping[str, str]) -> Opened:
        first = load_map(self.steps[0].path)[0]
        kind = options.kind or self.kind or default_kind(self.field_name)
        seen: dict[str, str] = dict(hashes)
        return Opened(len(self.steps), (int(first.shape[0]), int(first.shape[1])),
                      FieldSpec(self.field_name, kind), NO_COORDINATES,
                      self._blocks(first.shape, seen), lambda: self.sources(seen))

    def _blocks(self, shape: tuple[int, ...], seen: dict[str, str]
                ) -> Iterator[tuple[NDArray, list[dict[str, Any]], str]]:
        for s in self.steps:
            values, digest = load_map(s.path)
            seen[s.path] = digest
            inv = s.source.get("inventory") or {}
            want = inv.get("checksum") or inv.get("sha256")
            if isinstance(want, str) and want and not digest.startswith(want.lower()):
                raise SourceError(f"{s.path}: its SHA-256 {digest[:16]}... differs from the "
                                  f"inventory's {want} (the file changed since it was catalogued)")
            if values.shape != shape:
                raise SourceError(f"{s.path}: a {values.shape[0]}x{values.shape[1]} map in a "
                                  f"sequence of {shape[0]}x{shape[1]} maps ({self.steps[0].path})")
            record: dict[str, Any] = {"source": dict(s.source)}
            if s.sidecar:
                side, seen[s.sidecar] = load_sidecar(s.sidecar)
                record["metadata"] = side
                try:
                    record["perturbations"] = normalise_perturbations(side.get("perturbations"))
                except SourceError as exc:
                    raise SourceError(f"{s.sidecar}: {exc}") from None
            yield values[None], [record], s.path


def load_map(path: str) -> tuple[NDArray, str]:
    """A 2D map from a ``.npy`` file (read once, hashed while read) and its SHA-256.

    Real numbers only: integers are converted, bools, complex and objects refused; pickles are
    never loaded."""
    import hashlib

    with open(path, "rb") as fh:
        raw = fh.read()
    digest = hashlib.sha256(raw).hexdigest()
    try:
        a = np.load(io.BytesIO(raw), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise SourceError(f"{path}: not a readable .npy file ({exc})") from None
    if not isinstance(a, np.ndarray):
        raise SourceError(f"{path}: holds {type(a).__name__}, not one array")
    if a.ndim != 2:
        raise SourceError(f"{path}: expected a 2D (y, x) map, got shape {a.shape}")
    if a.dtype.kind in "iu":
        a = a.astype(np.float64)
    elif a.dtype.kind != "f":
        raise SourceError(f"{path}: dtype {a.dtype} is not a real number type")
    return a, digest


def load_sidecar(path: str) -> tuple[dict[str, Any], str]:
    import hashlib

    try:
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as exc:
        raise SourceError(f"{path}: cannot read the sidecar ({exc.strerror or exc})") from None
    try:
        doc = json.loads(raw, parse_constant=_no_constant)
    except ValueError as exc:
        raise SourceError(f"{path}: the sidecar is not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise SourceError(f"{path}: the sidecar is not a JSON object")
    return doc, hashlib.sha256(raw).hexdigest()


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


@dataclass
class _Found:
    """A matching file while planning: where it goes, or why it cannot go anywhere."""

    path: Path
    rel: str
    fields: dict[str, str]
    sidecar: Path | None = None
    error: str | None = None
    key: tuple[str, str] = ("", "")
    t: int = -1
    inventory: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def plan_npy(root: str | Path, pattern: str = PREDECESSOR_PATTERN, *, domain: str | None = None,
             sequence: str | None = None, sidecars: bool = True,
             sidecar_keys: Mapping[str, str] | None = None, inventory: str | Path | None = None,
             field_name: str = "energy", options: ImportOptions | None = None) -> ImportPlan:
    """Plan the import of a predecessor folder (see the module docstring).

    ``domain``/``sequence``: for what neither the pattern nor the sidecar keys give;
    ``inventory``: the predecessor's ``catalog.json`` (default: ``<root>/catalog.json`` when it
    exists); every file it lists must match its recorded checksum. Refuses (ImportPlanError)
    a pattern that matches nothing; everything else is a failure of the sequence concerned.
    """
    options = options or ImportOptions()
    base = Path(root)
    if not base.is_dir():
        raise ImportPlanError(f"{root} is not a directory")
    regex, names = compile_pattern(pattern)
    keys = dict(sidecar_keys or {})
    for k in keys:
        if k not in GROUPING:
            raise ImportPlanError(f"sidecar keys group by {', '.join(GROUPING)}, not {k!r}")
    for k, given in (("domain", domain), ("sequence", sequence)):
        if k not in names and k not in keys and given is None:
            raise ImportPlanError(f"the pattern {pattern!r} has no {{{k}}} field: give it "
                                  f"(--{k}) or a sidecar key for it")
    if "t" not in names and "t" not in keys:
        raise ImportPlanError(f"the pattern {pattern!r} has no {{t}} field: give a sidecar key "
                              "for the step (--sidecar-keys t=KEY)")
    if keys and not sidecars:
        raise ImportPlanError("sidecar keys need sidecars")
    validate_name(field_name, "field name")
    found, n_npy = _scan(base, regex)
    if not found:
        raise ImportPlanError(f"no file under {root} matches the pattern {pattern!r} "
                              f"({n_npy} .npy file(s) there)")
    inv = _inventory(base, inventory)
    for f in found:
        _place(f, base, names, keys, domain, sequence, sidecars, inv)
    return _group(found, pattern, sidecars, keys, field_name, options, inv, base)


def _scan(base: Path, regex: re.Pattern[str]) -> tuple[list[_Found], int]:
    found, n_npy, seen_dirs = [], 0, set()
    for dirpath, dirnames, files in os.walk(base, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        dirnames.sort()
        for name in sorted(files):
            if not name.endswith(".npy"):
                continue
            n_npy += 1
            p = Path(dirpath) / name
            rel = p.relative_to(base).as_posix()
            m = regex.match(rel)
            if m:
                found.append(_Found(p, rel, {k: v for k, v in m.groupdict().items()}))
    return found, n_npy


def _place(f: _Found, base: Path, names: tuple[str, ...], keys: Mapping[str, str],
           domain: str | None, sequence: str | None, sidecars: bool,
           inv: Mapping[str, dict[str, Any]] | None) -> None:
    """Where a file goes (its domain, sequence and step), or the error that keeps it out."""
    try:
        real = resolve_inside(base, f.path)
        side: dict[str, Any] = {}
        if sidecars:
            sc = f.path.with_suffix(".json")
            if not sc.exists():
                raise SourceError(f"{f.path}: its sidecar {sc.name} is missing (import without "
                                  "sidecars: --no-sidecars)")
            resolve_inside(base, sc)
            f.sidecar = sc
            if keys:
                side = load_sidecar(str(sc))[0]
        got = {}
        for k, given in (("domain", domain), ("sequence", sequence), ("t", None)):
            if k in keys:
                if keys[k] not in side:
                    raise SourceError(f"{f.sidecar}: has no key {keys[k]!r} (the {k} of its map)")
                got[k] = str(side[keys[k]])
            elif k in names:
                got[k] = f.fields[k]
            else:
                got[k] = str(given)
        if not re.fullmatch(r"\d+", got["t"]):
            raise SourceError(f"{f.path}: step {got['t']!r} is not a non-negative integer")
        validate_name(got["domain"], "domain name")
        validate_name(got["sequence"], "sequence id")
    except (SourceError, ValueError) as exc:
        f.error = str(exc) if str(exc).startswith(str(f.path)) else f"{f.path}: {exc}"
        f.key = (f.fields.get("domain", domain or "-"), f.fields.get("sequence", sequence or f.rel))
        return
    f.key, f.t = (got["domain"], got["sequence"]), int(got["t"])
    f.extra = {k: v for k, v in f.fields.items() if k not in GROUPING}
    if inv is not None:
        f.inventory = inv.get(str(real))


def _inventory(base: Path, given: str | Path | None) -> dict[str, dict[str, Any]] | None:
    """The predecessor's inventory by resolved file path (None without one)."""
    path = Path(given) if given is not None else base / "catalog.json"
    if given is None and not path.exists():
        return None
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ImportPlanError(f"inventory {path}: cannot read it ({exc})") from None
    maps = doc.get("maps") if isinstance(doc, dict) else None
    if not isinstance(maps, list):
        raise ImportPlanError(f"inventory {path}: no 'maps' list")
    root = Path(doc.get("base_path") or base)
    if not root.is_dir():
        root = base
    out = {}
    for m in maps:
        if isinstance(m, dict) and isinstance(m.get("path"), str):
            p = Path(m["path"]) if Path(m["path"]).is_absolute() else root / m["path"]
            out[os.path.realpath(p)] = m
    return out


def _group(found: list[_Found], pattern: str, sidecars: bool, keys: Mapping[str, str],
           field_name: str, options: ImportOptions,
           inv: Mapping[str, dict[str, Any]] | None, base: Path) -> ImportPlan:
    by_seq: dict[tuple[str, str], list[_Found]] = {}
    for f in found:
        by_seq.setdefault(f.key, []).append(f)
    units, failures, files = [], [], []
    for (domain, seq), fs in sorted(by_seq.items()):
        fs.sort(key=lambda f: (f.t, f.rel))
        label = f"{fs[0].path.parent}/{seq} ({len(fs)} file{'s' if len(fs) > 1 else ''})"
        err = _sequence_error(fs)
        steps = tuple(NpyStep(i, str(f.path), str(f.sidecar) if f.sidecar else None,
                              {"file": f.rel, "t": f.t, **f.extra,
                               **({"inventory": f.inventory} if f.inventory else {})})
                      for i, f in enumerate(fs))
        unit = Unit(domain, seq, label, "npy", NpySequence(steps, field_name))
        files += [str(p) for f in fs for p in (f.path, f.sidecar) if p is not None]
        if err:
            failures.append((unit, err))
        else:
            units.append(unit)
    source_options = {"root": str(base.resolve()), "pattern": pattern, "sidecars": sidecars,
                      "sidecar_keys": dict(keys), "field": field_name}
    return ImportPlan("npy", units, options, source_options, files, failures)


def _sequence_error(fs: list[_Found]) -> str | None:
    """Why a sequence cannot be imported as planned (the first file-level reason)."""
    for f in fs:
        if f.error:
            return f.error
    by_t: dict[int, _Found] = {}
    for f in fs:
        if f.t in by_t:
            return f"{f.path}: step {f.t} twice in sequence {f.key[0]}/{f.key[1]} (also {by_t[f.t].path})"
        by_t[f.t] = f
    ts = sorted(by_t)
    missing = sorted(set(range(ts[0], ts[-1] + 1)) - set(ts))
    if missing:
        return (f"{fs[0].path.parent}: sequence {f.key[0]}/{f.key[1]} has no step "
                f"{', '.join(map(str, missing[:5]))} (steps run {ts[0]}..{ts[-1]})")
    return None
