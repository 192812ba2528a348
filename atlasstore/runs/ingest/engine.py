"""The import engine: one sequence per source unit, written and committed by a Dask task.

A source module (:mod:`.npy`, :mod:`.well`, :mod:`.xarray_source`) *plans* an import: its units
(one sequence each: the ``.npy`` files of a sequence, one trajectory of an HDF5 file, one slice
of a variable), the failures it found before any work (a file the pattern cannot place, a
duplicated time index, a file that is not HDF5, ...), and for every unit a reader that opens
the source and yields its maps in time blocks. This module runs such a plan through
:mod:`atlasstore.runs.engine` (the engine ``atlas generate`` uses too), so an import has the same
writer lock, run record (``kind: "import"``), progress, catalog registration, failure report and
Ctrl-C handling.

Each task, on a worker: a sequence that is already complete is skipped when it was imported
from the same data with the same options (the recorded SHA-256 of every source file, its
member and format, and the options are compared) and refused otherwise; anything else (absent,
half-written by a killed run) is written through :class:`~atlasstore.store.atlas_store.SequenceWriter`,
block by block, so a trajectory of any length needs one shard of memory. The sequence records
where it came from (``generation.kind/run_id/sources/options``, see
``docs/catalog.md``); errors name the file they come from; nothing of a failed
sequence is ever visible.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray
from zarr.core.sync import sync

from atlasstore.errors import ImportPlanError, SequenceExists, SourceError
from atlasstore.io.provenance import code_version, host, utc_now
from atlasstore.physics import fields as physics
from atlasstore.records import Axis, Coordinates, FieldSpec, validate_name
from atlasstore.runs import engine as run_driver
from atlasstore.runs.engine import Job, RunReport, Shared
from atlasstore.runs.options import RunOptions
from atlasstore.store.atlas_store import AtlasStore
from atlasstore.store.layout import Layout

#: bytes of source values a reader hands over at a time (the writer buffers one shard)
READ_BLOCK_BYTES = 32 * 2**20
PAD_MODES = ("zero", "edge", "reflect", "missing")
#: options that only decide whether input is accepted, never what an accepted input stores: a
#: re-run that adds them (the hint of a refused NaN) does not conflict with what is stored
ACCEPTANCE_OPTIONS = frozenset({"nan_is_missing"})
#: source paths a run record lists (all of them are in its ``paths_sha256``)
MAX_LISTED_SOURCES = 1000


# --------------------------------------------------------------------------- options


@dataclass(frozen=True)
class ImportOptions:
    """How every imported sequence is shaped (recorded in ``generation.options``).

    ``kind``: the field's kind (default by name, :func:`default_kind`); ``levels``/``smallest``:
    the pyramid (:func:`physics.pyramid_levels`); ``crop``/``pad``: (ny, nx) to cut the maps to
    (keeping the first rows and columns, i.e. from the coordinate origin) or to pad them to (at
    the far end; ``pad_mode`` zero - the default for extensive fields, adds no energy - edge,
    reflect - the default for intensive ones, edge - or missing: padded cells are missing
    cells). ``nan_is_missing``: NaN cells are missing cells even where the source does not
    declare them (a CF ``_FillValue``/``missing_value``, an HDF5 fill value declares them;
    otherwise a NaN is refused).
    """

    kind: str | None = None
    levels: tuple[int, ...] | None = None
    smallest: int = physics.SMALLEST_LEVEL
    crop: tuple[int, int] | None = None
    pad: tuple[int, int] | None = None
    pad_mode: str | None = None
    nan_is_missing: bool = False

    def __post_init__(self) -> None:
        if self.kind is not None:
            physics.check_kind(self.kind)
        for name in ("crop", "pad"):
            v = getattr(self, name)
            if v is None:
                continue
            if len(v) != 2 or not all(isinstance(i, (int, np.integer)) and not isinstance(i, bool)
                                      and i >= 1 for i in v):
                raise ImportPlanError(f"{name} must be (ny, nx) positive integers, got {v!r}")
            object.__setattr__(self, name, (int(v[0]), int(v[1])))
        if self.levels is not None:
            object.__setattr__(self, "levels", tuple(int(v) for v in self.levels))
        if self.pad_mode is not None and self.pad_mode not in PAD_MODES:
            raise ImportPlanError(f"pad mode must be one of {', '.join(PAD_MODES)}, got "
                               f"{self.pad_mode!r}")
        if isinstance(self.smallest, bool) or not isinstance(self.smallest, int) or self.smallest < 1:
            raise ImportPlanError(f"smallest level must be a positive integer, got {self.smallest!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for k in ("levels", "crop", "pad"):
            d[k] = list(d[k]) if d[k] is not None else None
        return d

    def reshape(self, values: NDArray, kind: str) -> NDArray:
        """Crop and pad a (t, y, x) block as asked."""
        if self.crop is not None:
            cy, cx = self.crop
            if cy > values.shape[1] or cx > values.shape[2]:
                raise SourceError(f"--crop {cy}x{cx} is larger than the "
                                  f"{values.shape[1]}x{values.shape[2]} maps")
            values = values[:, :cy, :cx]
        if self.pad is not None:
            py, px = self.pad
            if py < values.shape[1] or px < values.shape[2]:
                raise SourceError(f"--pad {py}x{px} is smaller than the "
                                  f"{values.shape[1]}x{values.shape[2]} maps (crop instead)")
            mode = self.pad_mode or ("zero" if kind == "extensive" else "edge")
            width = ((0, 0), (0, py - values.shape[1]), (0, px - values.shape[2]))
            if mode == "missing":
                values = np.pad(values.astype(np.float64, copy=False), width,
                                constant_values=np.nan)
            else:
                values = (np.pad(values, width) if mode == "zero"
                          else np.pad(values, width, mode="edge" if mode == "edge" else "reflect"))
        return values

    def reshape_axis(self, axis: Axis | None, n_crop: int | None, n_pad: int | None) -> Axis | None:
        """The coordinate values after cropping to ``n_crop`` / padding to ``n_pad`` points
        (continued with the last spacing)."""
        if axis is None:
            return None
        v = np.asarray(axis.values)
        if n_crop is not None:
            v = v[:n_crop]
        if n_pad is not None and n_pad > v.size:
            step = v[-1] - v[-2] if v.size > 1 else 1.0
            v = np.concatenate([v, v[-1] + step * np.arange(1, n_pad - v.size + 1)])
        return Axis(tuple(v), axis.units, axis.source_name)

    def reshape_coords(self, coords: Coordinates) -> Coordinates:
        cy, cx = self.crop or (None, None)
        py, px = self.pad or (None, None)
        return dataclasses.replace(coords, y=self.reshape_axis(coords.y, cy, py),
                                   x=self.reshape_axis(coords.x, cx, px))

    def shape_after(self, ny: int, nx: int) -> tuple[int, int]:
        if self.crop is not None:
            ny, nx = min(ny, self.crop[0]), min(nx, self.crop[1])
        if self.pad is not None:
            ny, nx = max(ny, self.pad[0]), max(nx, self.pad[1])
        return ny, nx


# --------------------------------------------------------------------------- sources


def sha256_file(path: str | Path) -> str:
    """SHA-256 of a file's bytes; of a directory (a Zarr store), of its sorted relative file
    names and their SHA-256s (a tree hash)."""
    p = Path(path)
    if p.is_dir():
        h = hashlib.sha256()
        for f in sorted(q for q in p.rglob("*") if q.is_file()):
            h.update(f"{f.relative_to(p).as_posix()}\0{sha256_file(f)}\n".encode())
        return h.hexdigest()
    h = hashlib.sha256()
    with open(p, "rb") as fh:
        while chunk := fh.read(8 * 2**20):
            h.update(chunk)
    return h.hexdigest()


def source_size(path: str | Path) -> int:
    p = Path(path)
    if p.is_dir():
        return sum(f.stat().st_size for f in p.rglob("*") if f.is_file())
    return p.stat().st_size


def source_record(path: str | Path, sha256: str, fmt: str, member: str | None) -> dict[str, Any]:
    """One entry of ``generation.sources`` (see docs/catalog.md)."""
    p = Path(path).resolve()
    return {"uri": p.as_uri(), "size": source_size(p), "sha256": sha256, "format": fmt,
            "member": member}


@dataclass
class Opened:
    """An open source unit: what it holds and its maps in time blocks.

    ``blocks`` yields ``(values (t, y, x), step records, where)``: ``where`` names the file (and
    part) the block came from, for error messages. ``sources()`` is valid once every block has
    been read (readers that hash while reading fill it in then).
    """

    n_steps: int
    shape: tuple[int, int]
    field: FieldSpec
    coords: Coordinates
    blocks: Iterator[tuple[NDArray, list[dict[str, Any]], str]]
    sources: Callable[[], list[dict[str, Any]]]
    close: Callable[[], None] = lambda: None
    #: the source declares missing cells (CF _FillValue/missing_value, an HDF5 fill value):
    #: its NaN cells are kept as missing
    missing_declared: bool = False


class SourceReader(Protocol):
    """What a unit reads (pickled to the worker)."""

    def files(self) -> list[str]:
        """Every source file (or directory) the unit reads."""
        ...

    def sources(self, hashes: Mapping[str, str]) -> list[dict[str, Any]]:
        """``generation.sources`` of the unit, from the files' SHA-256s."""
        ...

    def open(self, options: ImportOptions, hashes: Mapping[str, str]) -> Opened: ...


@dataclass(frozen=True)
class Unit:
    """One sequence to import: where it goes, what a failure names, how to read it.

    ``shared_hashes``: files whose SHA-256 several units need (an HDF5 file of many
    trajectories), computed once per run; the others are hashed by the unit itself.
    """

    domain: str
    sequence_id: str
    source: str
    format: str
    reader: Any
    shared_hashes: tuple[str, ...] = ()


@dataclass
class ImportPlan:
    """What an import will do: units, failures found while planning, options, sources."""

    format: str
    units: list[Unit]
    options: ImportOptions
    source_options: dict[str, Any]
    files: list[str]
    failures: list[tuple[Unit, str]] = field(default_factory=list)

    def config(self) -> dict[str, Any]:
        """The run's config: the command's options and a summary of its sources (no checksums:
        the run id must not need a pass over the data)."""
        files = sorted(str(Path(f).resolve()) for f in self.files)
        listing = hashlib.sha256("\n".join(files).encode()).hexdigest()
        return {"source_format": self.format,
                "sources": {"count": len(files), "paths_sha256": listing,
                            "paths": files[:MAX_LISTED_SOURCES]},
                "options": {**self.source_options, **self.options.to_dict()}}

    def config_hash(self) -> str:
        return hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode()).hexdigest()

    def run_id(self) -> str:
        """Deterministic: re-running the same import resumes the same run."""
        return "import-" + self.config_hash()[:16]

    def domains(self) -> list[str]:
        return sorted({u.domain for u in self.units} | {u.domain for u, _ in self.failures
                                                        if _valid(u.domain)})

    def check_unique(self) -> None:
        """Two units writing the same sequence id: both fail, naming each other's source."""
        seen: dict[tuple[str, str], Unit] = {}
        clash: dict[tuple[str, str], list[Unit]] = {}
        for u in self.units:
            key = (u.domain, u.sequence_id)
            if key in seen:
                clash.setdefault(key, [seen[key]]).append(u)
            else:
                seen[key] = u
        if not clash:
            return
        bad = {id(u) for us in clash.values() for u in us}
        for (d, s), us in clash.items():
            for u in us:
                others = "; ".join(o.source for o in us if o is not u)
                self.failures.append((u, f"{u.source}: would be sequence {d}/{s}, like {others}; "
                                         f"give each source its own sequence id"))
        self.units = [u for u in self.units if id(u) not in bad]


def _valid(name: str) -> bool:
    try:
        validate_name(name)
    except ValueError:
        return False
    return True


# --------------------------------------------------------------------------- the task


def write_unit(location: str, unit: Unit, options: ImportOptions, run_id: str,
               layout: Mapping[str, Any] | None, storage_options: Mapping[str, Any] | None,
               *hashes: str) -> dict[str, Any]:
    """Import one unit (on a worker); see the module docstring. ``hashes`` are the SHA-256s of
    ``unit.shared_hashes``, in order."""
    counted: dict[str, int] = {"bytes": 0}
    result = run_driver.task_result(
        _task(unit), lambda: _write_unit(location, unit, options, run_id, layout,
                                         storage_options, dict(zip(unit.shared_hashes, hashes,
                                                                   strict=True)), counted))
    result["source_bytes"] = counted["bytes"]
    return result


@dataclass(frozen=True)
class ImportTask:
    """What results and failures of a unit carry (see :class:`run_driver.Job`)."""

    domain: str
    sequence_id: str
    source: str
    format: str


def _task(unit: Unit) -> ImportTask:
    return ImportTask(unit.domain, unit.sequence_id, unit.source, unit.format)


def _identity(sources: Sequence[Mapping[str, Any]]) -> list[tuple[Any, ...]]:
    """What makes two imports the same data: each source's content, part and format (not its
    path: a moved folder holds the same data)."""
    return sorted((s.get("sha256"), s.get("member"), s.get("format")) for s in sources)


def _difference(info: Mapping[str, Any], unit: Unit, options: Mapping[str, Any],
                hashes: Mapping[str, str]) -> str | None:
    gen = info.get("generation") or {}
    if gen.get("kind") != "import":
        return (f"written by {gen.get('kind') or ('generate' if gen.get('run_id') else 'the API')}"
                f" ({gen.get('run_id') or 'no run'}), not imported")
    had = gen.get("options") or {}
    diff = sorted(k for k in set(options) | set(had)
                  if k not in ACCEPTANCE_OPTIONS and options.get(k) != had.get(k))
    if diff:
        return f"imported with other options ({', '.join(diff)})"
    have = gen.get("sources") or []
    want = unit.reader.sources({**hashes, **{f: sha256_file(f) for f in unit.reader.files()
                                             if f not in hashes}})
    if _identity(have) != _identity(want):
        changed = [w["uri"] for w in want if (w["sha256"], w["member"], w["format"])
                   not in set(_identity(have))]
        return f"from other source data ({', '.join(changed[:3]) or 'other files'} differ)"
    return None


def _write_unit(location: str, unit: Unit, options: ImportOptions, run_id: str,
                layout: Mapping[str, Any] | None, storage_options: Mapping[str, Any] | None,
                hashes: Mapping[str, str], counted: dict[str, int]) -> tuple[str, dict[str, Any]]:
    store = AtlasStore.open(location, mode="r+", storage_options=storage_options,
                            layout=Layout(**layout) if layout else Layout())
    opts = {**options.to_dict()}
    d, s = unit.domain, unit.sequence_id
    if store.sequence_status(d, s) == "complete":
        info = store.sequence_info(d, s)
        diff = _difference(info, unit, {**unit_options(unit), **opts}, hashes)
        if diff:
            raise SequenceExists(f"{d}/{s} already holds other data ({diff}): import into "
                                 f"another store or domain, or delete it first")
        return "skipped", info
    try:
        opened = unit.reader.open(options, hashes)
    except (OSError, KeyError, TypeError) as exc:  # a file that is not what it claims to be
        raise SourceError(f"{unit.source}: cannot read it ({type(exc).__name__}: {exc})") from None
    try:
        kind = opened.field.kind
        ny, nx = options.shape_after(*opened.shape)
        generation = {"kind": "import", "run_id": run_id, "code_version": code_version(),
                      "options": {**unit_options(unit), **opts}, "sources": []}
        try:
            writer = store.sequence_writer(
                d, s, (opened.n_steps, ny, nx), field=opened.field, levels=options.levels,
                smallest=options.smallest, generation=generation,
                coords=options.reshape_coords(opened.coords), overwrite=True,
                nan_is_missing=(options.nan_is_missing or opened.missing_declared
                                or options.pad_mode == "missing"))
        except physics.EnergyMapError as exc:
            raise SourceError(f"{unit.source}: {exc}") from None
        with writer:
            for values, steps, where in _read(opened.blocks, unit.source):
                counted["bytes"] += int(values.nbytes)
                try:
                    writer.append(options.reshape(values, kind), steps)
                except (physics.EnergyMapError, SourceError) as exc:
                    raise SourceError(f"{where}: {exc}") from None
            info = writer.commit(generation={"sources": opened.sources()})
    finally:
        opened.close()
    return "written", info


def _read(blocks: Iterator[tuple[NDArray, list[dict[str, Any]], str]], source: str
          ) -> Iterator[tuple[NDArray, list[dict[str, Any]], str]]:
    """The blocks of a source; a read that fails (a truncated file) is a SourceError naming
    the source."""
    it = iter(blocks)
    while True:
        try:
            item = next(it)
        except StopIteration:
            return
        except SourceError:
            raise
        except (OSError, KeyError, TypeError, ValueError) as exc:
            raise SourceError(f"{source}: cannot read it ({type(exc).__name__}: {exc})") from None
        yield item


def unit_options(unit: Unit) -> dict[str, Any]:
    opts = getattr(unit.reader, "options", None)
    return dict(opts() if callable(opts) else {})


# --------------------------------------------------------------------------- the run


def run_import(location: str | Path, plan: ImportPlan, settings: RunOptions | None = None,
               **overrides: Any) -> RunReport:
    """Run an import plan into the store at ``location`` (created if missing); see the module
    docstring. Returns the run's report (failures name their files)."""
    opts = RunOptions.of(settings, **overrides)
    layout, storage_options = opts.layout, opts.storage_options
    loc = str(location)
    run_driver.check_engine(opts.scheduler, opts.workers)
    if not plan.units and not plan.failures:
        raise ImportPlanError("nothing to import")
    plan.check_unique()
    lay = asdict(layout) if layout else None
    run_id = plan.run_id()
    with run_driver.locked_store(loc, run_id, layout=layout,
                                 storage_options=storage_options) as store:
        existing = set(store.domains())
        created = [d for d in plan.domains() if d not in existing]
        for d in created:
            store.create_domain(d, None)
        config = plan.config()
        run = {"run_id": run_id, "kind": "import", "config": config,
               "config_hash": plan.config_hash(), "seed": 0, "code_version": code_version(),
               "host": host(), "started": utc_now(), "finished": None, "counts": {}}
        shared = {f: Shared(f"sha256-{run_id}-{hashlib.sha256(f.encode()).hexdigest()[:16]}",
                            sha256_file, (f,))
                  for u in [*plan.units, *(u for u, _ in plan.failures)] for f in u.shared_hashes}

        def job(unit: Unit) -> Job:
            key = f"import-{unit.domain}-{unit.sequence_id}-{run_id}"
            args = (loc, unit, plan.options, run_id, lay, storage_options,
                    *(shared[f] for f in unit.shared_hashes))
            return Job(_task(unit), unit.domain, unit.sequence_id, key, write_unit, args,
                       source=unit.source)

        failed = [(job(u), err) for u, err in plan.failures]
        try:
            return run_driver.execute(store, run, [job(u) for u in plan.units], failed=failed,
                                      settings=opts, values=_source_values(plan.units))
        finally:  # also after Ctrl-C; not when the writer lock was lost (another run writes)
            if run_driver.holds_lock(store):
                drop_empty_domains(store, created)


def _source_values(units: Sequence[Unit]) -> int | None:
    """About how many values the units' source files hold (float32; None: unknown)."""
    try:
        files = {f for u in units for f in u.reader.files()}
        return sum(source_size(f) for f in files) // 4
    except (OSError, AttributeError, TypeError):
        return None


def drop_empty_domains(store: AtlasStore, domains: Sequence[str]) -> None:
    """Remove each of ``domains`` (created by this run) that holds no committed sequence, with
    whatever failed tasks left in it, so a run whose every task failed leaves nothing visible."""
    for d in domains:
        if d in store.domains() and not store.sequences(d):
            zstore = store.zarr_group.store
            sync(zstore.delete(f"{d}/zarr.json"))  # from here on it is no domain
            sync(zstore.delete_dir(d))


def resolve_inside(root: Path, path: Path) -> Path:
    """``path`` resolved (symlinks followed); SourceError when that leaves ``root``."""
    real = Path(os.path.realpath(path))
    base = Path(os.path.realpath(root))
    if real != base and base not in real.parents:
        raise SourceError(f"{path}: resolves to {real}, outside {root} (through a symlink); "
                          "refused")
    return real
