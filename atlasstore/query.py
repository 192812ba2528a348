"""Queries: select windows of sequences by domain, scale, time and statistics; read them.

A :class:`Query` is planned in two steps. *Selection* decides which sequences and time steps
qualify; it is answered by a :class:`Selector`: the catalog when one is given (an index, checked
against the store's change log so that it answers exactly as the scan would; see
:class:`atlasstore.catalog.sync.CatalogSelector`), else a scan of the store's committed sequence
attributes. *Reading* turns windows into
arrays, merging the windows of one sequence in a batch into a single contiguous time slice per
array, so a batch costs one read per (sequence, level, field) rather than one per window.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from atlasstore.errors import InvalidName, NotFound, QueryError, QueryNameError
from atlasstore.query_names import complete_named
from atlasstore.read.reader import ReadJob, reader_of
from atlasstore.records import ArrayKey, primary_field, validate_name
from atlasstore.store.atlas_store import AtlasStore

#: an inclusive (lo, hi) statistic range; None is an open bound
Range = tuple[float | None, float | None]


@dataclass(frozen=True)
class Window:
    """One sample: ``length`` steps of a sequence starting at ``t0``."""

    domain: str
    sequence_id: str
    t0: int
    length: int

    @property
    def id(self) -> str:
        return f"{self.domain}/{self.sequence_id}@{self.t0}"


@dataclass(frozen=True)
class Selected:
    """A selected sequence: its length, its levels and the steps that pass the filters."""

    domain: str
    sequence_id: str
    n_steps: int
    levels: tuple[int, ...]
    allowed: frozenset[int] | None = None  # None: every step


class Selector(Protocol):
    """Answers a query's selection: which sequences, and which of their steps, qualify."""

    def select(self, query: Query) -> list[Selected]: ...


def _in_range(value: float | None, rng: Range | None) -> bool:
    """``value`` in the inclusive range; a missing value (a field without entropy) is in no
    range with a bound (as in the catalog, where an unbounded range is no filter at all)."""
    if rng is None or (rng[0] is None and rng[1] is None):
        return True
    return value is not None and ((rng[0] is None or rng[0] <= value)
                                  and (rng[1] is None or value <= rng[1]))


class StoreSelector:
    """Selection by scanning committed sequence attributes in the store (no catalog needed).

    ``only``: just these ``domain/sequence_id`` keys (the ones a catalog cannot answer for:
    read from the store without listing it).
    """

    def __init__(self, only: Iterable[str] | None = None) -> None:
        self.only = None if only is None else frozenset(only)

    def select(self, query: Query) -> list[Selected]:
        out = []
        for domain in query.resolved_domains():
            named = query.sequences if self.only is None else self.only  # read just those
            ids = (query.store.sequences(domain) if named is None
                   else complete_named(query.store, domain, named))
            for seq_id in ids:
                sel = self._one(query, domain, seq_id)
                if sel is not None:
                    out.append(sel)
        return out

    @staticmethod
    def _one(query: Query, domain: str, seq_id: str) -> Selected | None:
        if not query.wants_sequence(domain, seq_id):
            return None
        rec = query.store.sequence_record(domain, seq_id)
        if query.run_id is not None and rec.generation.get("run_id") != query.run_id:
            return None
        steps = rec.steps
        if query.perturbation is not None and not any(
                p.get("kind") == query.perturbation
                for s in steps for p in s.get("perturbations", [])):
            return None
        allowed = None
        if query.has_stat_filters():
            allowed = frozenset(s["t"] for s in steps if query.step_passes(s))
        return Selected(domain, seq_id, rec.n_steps, rec.levels, allowed)


@dataclass(frozen=True)
class Query:
    """What to read. All filters are optional; windows are ``window`` steps, every ``stride``.

    ``scale`` is a stored level, named by the short side of its maps (256, 128, 64 for the
    generator's maps; any level the store holds, e.g. 128 and 64 for 384x128 maps); None means
    the full resolution of the selected sequences (they must agree), found when the query is
    built. ``fields`` are arrays the selected sequences hold; None (the default) is their
    primary field (``energy`` for generated data, the field's own name for imported data; they
    must agree). ``time_range`` is a half-open [start, stop) of steps a window must lie in;
    ``region`` is (y0, y1, x0, x1) in pixels of the query's ``scale``. Stat ranges are
    inclusive and apply to every step of a window (entropy in nats, mean and variance of the
    base-level primary field; a field without entropy - an intensive one - never passes an
    entropy range).
    """

    store: AtlasStore
    domains: tuple[str, ...] | None = None
    sequences: tuple[str, ...] | None = None
    #: None (the default) becomes the selection's full resolution in __post_init__, so a built
    #: query always holds an int
    scale: int = None  # type: ignore[assignment]
    fields: tuple[str, ...] | None = None
    window: int = 1
    stride: int = 1
    time_range: tuple[int, int] | None = None
    region: tuple[int, int, int, int] | None = None
    entropy: Range | None = None
    mean: Range | None = None
    variance: Range | None = None
    perturbation: str | None = None
    run_id: str | None = None
    selector: Selector | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        try:
            self._check()
        except QueryError:
            raise
        except InvalidName as exc:
            raise QueryNameError(str(exc)) from None
        except (TypeError, ValueError) as exc:  # malformed values
            raise QueryError(f"invalid query: {exc}") from None
        if self.scale is None:
            object.__setattr__(self, "scale", self._full_resolution())

    def _full_resolution(self) -> int | None:
        """The finest level of the selected sequences (None when none is selected)."""
        bases: dict[int, str] = {}
        for s in (self.selector or StoreSelector()).select(self):
            bases.setdefault(max(s.levels), f"{s.domain}/{s.sequence_id}")
        if len(bases) > 1:
            desc = ", ".join(f"{lvl} ({name})" for lvl, name in sorted(bases.items()))
            raise QueryError(f"the selected sequences differ in full resolution: {desc}; choose "
                             "a level with scale= (--scale)")
        return next(iter(bases), None)

    def _check(self) -> None:
        for name in ("domains", "sequences", "fields"):
            v = getattr(self, name)
            if isinstance(v, str):
                object.__setattr__(self, name, (v,))
            elif v is not None:
                object.__setattr__(self, name, tuple(v))
        if self.sequences is not None and not self.sequences:
            raise QueryError("sequences is empty")
        if self.domains is not None:
            if not self.domains:
                raise QueryError("domains is empty")
            for d in self.domains:
                validate_name(d, "domain name")
        if self.scale is not None and (isinstance(self.scale, bool) or not isinstance(
                self.scale, (int, np.integer)) or self.scale < 1):
            raise QueryError(f"scale {self.scale!r} must be a positive integer: a stored level, "
                             "named by the short side of its maps")
        if self.fields is not None and not self.fields:
            raise QueryError("fields is empty")
        if self.fields is not None and not all(isinstance(f, str) for f in self.fields):
            raise QueryError(f"fields must be names, got {self.fields!r}")
        for name in ("window", "stride"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise QueryError(f"{name} must be a positive integer, got {v!r}")
        for name, n in (("time_range", 2), ("region", 4)):
            v = getattr(self, name)
            if v is None:
                continue
            if isinstance(v, (str, bytes)) or not hasattr(v, "__len__") or len(v) != n or not all(
                    isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in v):
                what = "(start, stop)" if n == 2 else "(y0, y1, x0, x1)"
                raise QueryError(f"{name} must be {what} integers, got {v!r}")
            object.__setattr__(self, name, tuple(int(i) for i in v))
        if self.time_range is not None:
            a, b = self.time_range
            if a < 0 or b <= a:
                raise QueryError(f"time_range must be [start, stop) with 0 <= start < stop, "
                                 f"got {self.time_range}")
        if self.region is not None:
            y0, y1, x0, x1 = self.region
            if min(self.region) < 0 or y1 <= y0 or x1 <= x0:
                raise QueryError(f"region must be (y0, y1, x0, x1) with 0 <= y0 < y1, 0 <= x0 < x1, "
                                 f"got {self.region}")
        for name in ("entropy", "mean", "variance"):
            r = getattr(self, name)
            if r is None:
                continue
            if isinstance(r, (str, bytes)) or not hasattr(r, "__len__") or len(r) != 2:
                raise QueryError(f"{name} range must be (lo, hi), got {r!r}")
            if any(v is not None and not np.isfinite(float(v)) for v in r):
                raise QueryError(f"{name} range bounds must be finite (None for an open bound), "
                                 f"got {r}")
            lo = None if r[0] is None else float(r[0])
            hi = None if r[1] is None else float(r[1])
            if lo is not None and hi is not None and lo > hi:
                raise QueryError(f"{name} range must be (lo, hi) with lo <= hi, got {r}")
            object.__setattr__(self, name, (lo, hi))

    # ------------------------------------------------------------------ selection helpers

    def resolved_domains(self) -> list[str]:
        have = self.store.domains()
        if self.domains is None:
            return have
        missing = [d for d in self.domains if d not in have]
        if missing:
            raise NotFound(f"unknown domain(s) {', '.join(map(repr, missing))}; the store has: "
                           f"{', '.join(have) or '(none)'}")
        return list(self.domains)

    def wants_sequence(self, domain: str, sequence_id: str) -> bool:
        if self.sequences is None:
            return True
        return sequence_id in self.sequences or f"{domain}/{sequence_id}" in self.sequences

    def has_stat_filters(self) -> bool:
        return any(r is not None for r in (self.entropy, self.mean, self.variance))

    def step_passes(self, step: Mapping[str, Any]) -> bool:
        return (_in_range(step.get("entropy"), self.entropy)
                and _in_range(step.get("mean"), self.mean)
                and _in_range(step.get("variance"), self.variance))

    def where(self, **changes: Any) -> Query:
        """A copy with some parameters changed."""
        return replace(self, **changes)

    # ------------------------------------------------------------------ planning

    def selection(self) -> list[Selected]:
        selected = (self.selector or StoreSelector()).select(self)
        if self.sequences is not None:
            found = {f"{s.domain}/{s.sequence_id}" for s in selected} | {s.sequence_id for s in selected}
            missing = [s for s in self.sequences if s not in found]
            if missing and not self.has_stat_filters() and self.run_id is None and self.perturbation is None:
                raise NotFound(f"unknown sequence(s) {', '.join(map(repr, missing))}")
        for s in selected:
            if self.scale not in s.levels:
                raise NotFound(f"sequence {s.domain}/{s.sequence_id} has no scale {self.scale}; "
                               f"levels: {list(s.levels)}")
        return selected

    def windows(self) -> list[Window]:
        """Every window the query yields, in (domain, sequence, t0) order."""
        out: list[Window] = []
        selected = self.selection()
        longest = max((s.n_steps for s in selected), default=0)
        if selected and self.window > longest:
            raise QueryError(f"window of {self.window} steps is longer than every selected "
                             f"sequence (longest has {longest} steps)")
        for s in selected:
            lo, hi = 0, s.n_steps
            if self.time_range is not None:
                lo, hi = max(lo, self.time_range[0]), min(hi, self.time_range[1])
            for t0 in range(lo, hi - self.window + 1, self.stride):
                if s.allowed is not None and not all(t in s.allowed for t in range(t0, t0 + self.window)):
                    continue
                out.append(Window(s.domain, s.sequence_id, t0, self.window))
        return out

    def count(self) -> int:
        """How many windows the query yields; named ``fields`` must be held by every selected
        sequence, as reading them requires (a count never promises what a read refuses)."""
        wins = self.windows()
        if self.fields is not None and wins:
            self.fields_of(wins)
        return len(wins)

    def _region_slices(self, shape: tuple[int, int]) -> tuple[slice, slice]:
        if self.region is None:
            return slice(None), slice(None)
        y0, y1, x0, x1 = self.region
        if y1 > shape[0] or x1 > shape[1]:
            raise QueryError(f"region {self.region} exceeds the {shape[0]}x{shape[1]} maps at "
                             f"scale {self.scale}")
        return slice(y0, y1), slice(x0, x1)

    # ------------------------------------------------------------------ reading

    def fields_of(self, windows: Sequence[Window], fields: Sequence[str] | None = None
                  ) -> tuple[str, ...]:
        """The fields to read for these windows: ``fields`` (else the query's), each held by
        every window's sequence; None means the sequences' common primary field."""
        want = tuple(fields) if fields else self.fields
        keys = list(dict.fromkeys((w.domain, w.sequence_id) for w in windows))
        if want is None:
            return (self.primary_of(keys),)
        for d, s in keys:
            held = self.store.sequence_info(d, s)["fields"]
            for f in want:
                if f not in held:
                    raise QueryError(f"unknown field {f!r}; {d}/{s} holds: {', '.join(held)}")
        return want

    def primary_of(self, keys: Sequence[tuple[str, str]]) -> str:
        """The primary field these (domain, sequence) hold: one name, or QueryError naming
        the different ones ("energy" for none)."""
        primaries: dict[str, str] = {}
        for d, s in keys:
            primaries.setdefault(primary_field(self.store.sequence_info(d, s)), f"{d}/{s}")
        if len(primaries) > 1:
            desc = ", ".join(f"{f} ({name})" for f, name in sorted(primaries.items()))
            raise QueryError(f"the selected sequences hold different fields: {desc}; name the "
                             "fields to read (fields=, --fields)")
        return next(iter(primaries), "energy")

    def primary_field(self) -> str:
        """The primary field of the selected sequences (they must agree; "energy" when none)."""
        return self.primary_of([(s.domain, s.sequence_id) for s in self.selection()])

    def read_windows(self, windows: Sequence[Window], fields: Sequence[str] | None = None,
                     scale: int | None = None) -> dict[str, NDArray[np.float32]]:
        """Arrays (n, window, y, x) per field for the given windows.

        One copy job per window and field, all handed to the store at once: on local stores
        TensorStore decodes them in parallel straight into the output (only the inner chunks a
        window covers are decoded; see docs/store-format.md, "Chunking").
        """
        scale = scale or self.scale
        if not windows:
            return {f: np.empty((0, self.window, 0, 0), np.float32)
                    for f in (fields or self.fields or ("energy",))}
        fields = self.fields_of(windows, fields)
        shapes = {}
        for w in windows:
            key = (w.domain, w.sequence_id)
            if key not in shapes:
                _, ny_, nx_ = self.store.array(w.domain, w.sequence_id, scale, fields[0]).shape
                shapes[key] = (int(ny_), int(nx_))
        for shape in set(shapes.values()):
            ys, xs = self._region_slices(shape)  # checks the region fits every shape
        if len(set(shapes.values())) > 1 and self.region is None:
            raise QueryError(f"windows mix map shapes ({sorted(set(shapes.values()))}); query one "
                             f"aspect at a time or set a region")
        ny = len(range(*ys.indices(next(iter(shapes.values()))[0])))
        nx = len(range(*xs.indices(next(iter(shapes.values()))[1])))
        out = {f: np.empty((len(windows), windows[0].length, ny, nx), np.float32) for f in fields}
        jobs = [ReadJob(ArrayKey(w.domain, w.sequence_id, scale, f), slice(w.t0, w.t0 + w.length),
                        out[f][i], ys, xs)
                for f in fields for i, w in enumerate(windows)]
        reader_of(self.store).read_into(jobs)
        return out

    def batches(self, batch_size: int = 32, drop_remainder: bool = False
                ) -> Iterator[dict[str, Any]]:
        """NumPy batches ``{field: (B, window, y, x), "ids": [window ids]}`` in window order."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise QueryError(f"batch_size must be a positive integer, got {batch_size!r}")
        wins = self.windows()
        for start in range(0, len(wins), batch_size):
            chunk = wins[start:start + batch_size]
            if drop_remainder and len(chunk) < batch_size:
                return
            batch: dict[str, Any] = dict(self.read_windows(chunk))
            batch["ids"] = [w.id for w in chunk]
            yield batch

    def __iter__(self) -> Iterator[dict[str, Any]]:
        return self.batches()

    def to_numpy(self) -> dict[str, Any]:
        """Every window at once (small queries); same structure as a batch."""
        wins = self.windows()
        if not wins:
            raise QueryError("query selects no windows")
        out: dict[str, Any] = dict(self.read_windows(wins))
        out["ids"] = [w.id for w in wins]
        return out

    def to_xarray(self) -> Any:
        """A lazy, Dask-backed ``xarray.Dataset`` with dims (sample, step, y, x).

        Nothing is read until computed; coordinates give each sample's domain, sequence and t0,
        and y/x are pixel centres in base-level pixels so levels align. Blocks are read through
        :meth:`AtlasStore.read` (not ``dask.array.from_zarr``, which reads a missing shard as
        zeros), so a missing or corrupt shard raises ``CorruptArray`` on compute.
        """
        import dask.array as da
        import xarray as xr
        from dask.base import tokenize

        wins = self.windows()
        if not wins:
            raise QueryError("query selects no windows")
        data_vars = {}
        for f in self.fields_of(wins):
            per_seq: dict[tuple[str, str], Any] = {}
            parts = []
            for w in wins:
                key = (w.domain, w.sequence_id)
                if key not in per_seq:
                    src = _CheckedArray(self.store, w.domain, w.sequence_id, self.scale, f)
                    ys, xs = self._region_slices((src.shape[1], src.shape[2]))
                    rec = self.store.sequence_info(*key)["arrays"][f"{self.scale}/{f}"]
                    name = f"atlasstore-{src.name}-" + tokenize(self.store.location, rec["checksum"])
                    tc = self.store.array(w.domain, w.sequence_id, self.scale, f).chunks[0]
                    per_seq[key] = da.from_array(src, chunks=(tc, -1, -1), name=name,
                                                 meta=np.empty((0, 0, 0), np.float32))[:, ys, xs]
                parts.append(per_seq[key][w.t0:w.t0 + w.length])
            attrs = dict(self.store.array(wins[0].domain, wins[0].sequence_id, self.scale, f).attrs)
            data_vars[f] = (("sample", "step", "y", "x"), da.stack(parts), attrs)
        ds = xr.Dataset(data_vars)
        info = self.store.sequence_info(wins[0].domain, wins[0].sequence_id)
        factor = max(info["levels"]) / self.scale
        y0 = self.region[0] if self.region else 0
        x0 = self.region[2] if self.region else 0
        ny, nx = ds.sizes["y"], ds.sizes["x"]
        coords: dict[str, Any] = {
            "domain": ("sample", [w.domain for w in wins]),
            "sequence_id": ("sample", [w.sequence_id for w in wins]),
            "t0": ("sample", [w.t0 for w in wins]),
            "step": ("step", np.arange(self.window)),
            "y": ("y", (np.arange(y0, y0 + ny) + 0.5) * factor),
            "x": ("x", (np.arange(x0, x0 + nx) + 0.5) * factor)}
        coords.update(self._physical_coords(wins, (slice(y0, y0 + ny), slice(x0, x0 + nx))))
        return ds.assign_coords(coords).assign_attrs(scale=self.scale, window=self.window,
                                                     stride=self.stride)

    def _physical_coords(self, wins: Sequence[Window], yx: tuple[slice, slice]
                         ) -> dict[str, Any]:
        """Physical y/x (when every window's sequence has the same) and time per sample and
        step (when every one has time values), replacing pixel centres."""
        out: dict[str, Any] = {}
        keys = list(dict.fromkeys((w.domain, w.sequence_id) for w in wins))
        axes = [self.store.coordinates(d, s, self.scale) for d, s in keys]
        for i, name in enumerate(("y", "x")):
            if not all(name in a for a in axes):
                continue
            values, attrs = axes[0][name]
            if all(np.array_equal(a[name][0], values) for a in axes):
                out[name] = (name, values[yx[i]], attrs)
        infos = {k: self.store.sequence_info(*k) for k in keys}
        times = {k: [st.get("time") for st in info["steps"]] for k, info in infos.items()}
        if all(t is not None for ts in times.values() for t in ts):
            tv = np.array([times[(w.domain, w.sequence_id)][w.t0:w.t0 + w.length] for w in wins])
            cal = {_calendar(info) for info in infos.values()}
            if tv.dtype.kind == "U":
                tv = tv.astype("datetime64[ns]")
            elif len(cal) == 1 and (only := cal.pop()) is not None:  # one CF calendar: cftime
                import cftime
                tv = np.asarray(cftime.num2date(tv, only[0], calendar=only[1]))
            out["time"] = (("sample", "step"), tv)
        return out


def _calendar(info: Mapping[str, Any]) -> tuple[str, str] | None:
    """(units, calendar) of a sequence's numeric times on a non-standard CF calendar."""
    rec = (info.get("coordinates") or {}).get("time") or {}
    return (str(rec["units"]), str(rec["calendar"])) if rec.get("calendar") else None


class _CheckedArray:
    """One committed array as an indexable for ``dask.array.from_array``: every block is read
    with :meth:`AtlasStore.read`, the store's checked read path (crc32c, missing shards)."""

    def __init__(self, store: AtlasStore, domain: str, sequence_id: str, level: int,
                 field: str) -> None:
        self.store, self.domain, self.sequence_id = store, domain, sequence_id
        self.level, self.field = level, field
        self.name = f"{domain}/{sequence_id}/{level}/{field}"
        self.shape = tuple(store.array(domain, sequence_id, level, field).shape)
        self.dtype = np.dtype(np.float32)
        self.ndim = len(self.shape)

    def __getitem__(self, key: tuple[slice, slice, slice]) -> NDArray[np.float32]:
        t, y, x = key
        return reader_of(self.store).read(
            ArrayKey(self.domain, self.sequence_id, self.level, self.field), t, y, x)
