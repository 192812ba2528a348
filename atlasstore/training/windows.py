"""Random access over a query's windows as training samples: what one sample of the stream is.

:class:`WindowSource` turns a :class:`~atlasstore.query.Query` into samples of ``n_in`` input
steps at every stored level up to the query's scale and ``n_out`` target steps at that scale,
read through :class:`atlasstore.read.Reader` (TensorStore with a decoded-chunk cache for local
and ``s3://`` stores, the latter through a local disk cache; zarr-python elsewhere) straight into
64-byte-aligned batch buffers. The iterator that orders, prefetches and places batches on
devices is :mod:`atlasstore.training.stream`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from atlasstore.errors import QueryError, StoreError, StreamError
from atlasstore.query import Query, Window
from atlasstore.read.reader import Reader, ReadJob
from atlasstore.records import ArrayKey
from atlasstore.store.atlas_store import AtlasStore

if TYPE_CHECKING:
    from atlasstore.training.normalization import NormStats

#: largest decoded-chunk cache that ``cache_bytes="auto"`` picks
AUTO_CACHE_CAP = 2 * 2**30


def check_int(name: str, v: Any, lo: int) -> int:
    """``v`` as an int >= ``lo``; StreamError naming ``name`` otherwise (bools refused)."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
        raise StreamError(f"{name} must be an integer >= {lo}, got {v!r}")
    return int(v)


def _reader(store: AtlasStore, kind: str, cache_bytes: int) -> Reader:
    try:
        return Reader(store, kind, cache_bytes)
    except StoreError as exc:  # the reader's refusals of the stream's options are the stream's
        raise StreamError(str(exc)) from None


class WindowSource:
    """Random access over a query's windows of ``n_in + n_out`` steps.

    The query says what a sample is, and every parameter of it is honoured or refused: its
    ``window`` must equal ``n_in + n_out`` (StreamError otherwise: a sample is one window, and
    the statistic filters apply to every step of it); its ``stride``, ``time_range``, statistic
    filters, ``perturbation`` and ``run_id`` choose the windows; its ``scale`` is the level of
    the target, and the inputs are every stored level up to it (so ``scale=128`` on a 256 store
    streams inputs at 128 and 64 and the target at 128); inputs and target are the selected
    sequences' primary field (``energy``, or an imported field's own name; they must agree);
    its ``fields`` (other than the primary) are the extra input fields unless ``fields=`` is
    given; a ``region`` is refused (whole maps only).

    ``len(src)`` windows; ``src[i]`` is one sample as NumPy (``{"inputs": {level: (n_in, y, x)},
    "target": (n_out, y, x), "id": str}`` plus ``"fields"`` for extra fields);
    ``src.read_batch(idx)`` reads several at once into stacked arrays (every copy of the batch in
    flight at once). This is Grain's random-access data-source protocol (``__len__``,
    ``__getitem__``, ``_getitems``), so ``grain.MapDataset.source(src)`` works on it.

    ``cache_bytes``: size of the decoded-chunk cache of the TensorStore reader; "auto" is the
    decoded size of every array the stream reads, capped at :data:`AUTO_CACHE_CAP`; 0 disables.
    """

    def __init__(self, query: Query, n_in: int, n_out: int = 1, *,
                 fields: Sequence[str] | None = None, stats: NormStats | None = None,
                 reader: str = "auto", cache_bytes: int | str = "auto") -> None:
        self.n_in = check_int("n_in", n_in, 1)
        self.n_out = check_int("n_out", n_out, 1)
        if not isinstance(query, Query):
            raise StreamError(f"expected a Query, got {type(query).__name__}")
        if query.region is not None:
            raise StreamError("the stream reads whole maps at every level; a query region "
                              f"({query.region}) is not supported (region=None)")
        self.window = self.n_in + self.n_out
        if query.window != self.window:
            raise StreamError(f"the query's window is {query.window} step(s), but a sample is "
                              f"n_in + n_out = {self.n_in} + {self.n_out} = {self.window} steps; "
                              f"build the query with window={self.window}")
        self.query = query
        self.store = query.store
        selected = query.selection()
        if not selected:
            raise StreamError(f"the query selects no sequences (domains={query.domains}, "
                              f"sequences={query.sequences}); it yields no windows: nothing to "
                              "stream")
        longest = max(s.n_steps for s in selected)
        if self.window > longest:
            raise StreamError(f"a sample needs n_in + n_out = {self.n_in} + {self.n_out} = "
                              f"{self.window} steps, but the longest selected sequence has "
                              f"{longest}")
        # One scale per stream: the query's. Every sequence must store the same levels up to it
        # and have the same map shape there (the query already refused sequences without it).
        scale = query.scale
        sig: dict[tuple[tuple[int, ...], tuple[int, int]], str] = {}
        for s in selected:
            full = self.store.sequence_info(s.domain, s.sequence_id)["shape"]
            top = max(s.levels)
            key = (tuple(sorted((lv for lv in s.levels if lv <= scale), reverse=True)),
                   (int(full[0]) * scale // top, int(full[1]) * scale // top))
            sig.setdefault(key, f"{s.domain}/{s.sequence_id}")
        if len(sig) > 1:
            desc = "; ".join(f"{name}: levels {list(k[0])}, shape {list(k[1])}"
                             for k, name in sig.items())
            raise StreamError(f"mismatched scales: at scale {scale} the selected sequences differ "
                              f"in stored levels or map shape ({desc}), so they cannot share a "
                              "batch; select one shape per stream (domains=, sequences=)")
        (levels, shape), = sig
        #: the selected sequences' primary field (energy, or an imported field's own name):
        #: the target, and the first input field
        try:
            self.primary = query.primary_of(self.sequences_of(selected))
        except QueryError as exc:
            raise StreamError(str(exc)) from None
        extra = tuple(f for f in (fields if fields is not None else query.fields or ())
                      if f != self.primary)
        for d, sq in self.sequences_of(selected):
            held = self.store.sequence_info(d, sq)["fields"]
            for f in extra:
                if f not in held:
                    raise StreamError(f"unknown field {f!r}; {d}/{sq} holds: {', '.join(held)}")
        self.extra_fields = tuple(dict.fromkeys(extra))
        self.levels: tuple[int, ...] = levels
        #: the query's scale: the level of the target and the finest input level
        self.base_level = scale
        self.base_shape: tuple[int, int] = shape
        self.level_shapes = {lvl: (shape[0] * lvl // scale, shape[1] * lvl // scale)
                             for lvl in levels}
        self.sequences = [(s.domain, s.sequence_id) for s in selected]
        self.windows: list[Window] = query.windows()
        if not self.windows:
            raise StreamError(f"the query yields no windows of {self.window} steps (stride "
                              f"{query.stride}, time_range {query.time_range}, statistic "
                              "filters); nothing to stream")
        self.data_nbytes = 4 * len(self.all_fields) * sum(
            s.n_steps for s in selected) * sum(ny * nx for ny, nx in self.level_shapes.values())
        if cache_bytes == "auto":
            cache_bytes = min(self.data_nbytes, AUTO_CACHE_CAP)
        self.cache_bytes = check_int("cache_bytes", cache_bytes, 0)
        self._reader = _reader(self.store, reader, self.cache_bytes)
        self.has_missing = self._find_missing()
        self.stats: NormStats | None = None
        self._mi: dict[tuple[str, int], NDArray[np.float32]] = {}
        self.set_stats(stats)

    def _find_missing(self) -> bool:
        """Whether a selected array has missing cells (NaN; its recorded ``valid_fraction`` below
        1): only then are batches masked and filled, so complete data reads as before."""
        for d, sq in self.sequences:
            arrays = self.store.sequence_info(d, sq).get("arrays") or {}
            for f in self.all_fields:
                for lvl in self.levels:
                    st = (arrays.get(f"{lvl}/{f}") or {}).get("stats") or {}
                    if float(st.get("valid_fraction", 1.0)) < 1.0:
                        return True
        return False

    def _fill_missing(self, raw: dict[str, Any], wins: Sequence[Window],
                      params: dict[str, Any] | None) -> NDArray[np.bool_]:
        """The validity mask (B, n_in + n_out, y, x) of the target's level (inputs, then target),
        taken before the missing cells of every array are filled in place: with the mean the
        stream normalises by (so they are 0 after normalisation), else with the mean of the
        sequence's valid cells of that field and level (its recorded statistics)."""
        mask = np.concatenate([np.isfinite(raw["inputs"][self.base_level]),
                               np.isfinite(raw["target"])], axis=1)
        trees = [(self.primary, raw["inputs"], (params or {}).get("inputs")),
                 *[(f, raw["fields"][f], (params or {}).get("fields", {}).get(f))
                   for f in self.extra_fields]]
        leaves = [(f, lvl, a, None if p is None else p[lvl]) for f, tree, p in trees
                  for lvl, a in tree.items()]
        leaves.append((self.primary, self.base_level, raw["target"],
                       None if params is None else params["target"]))
        for f, lvl, a, mi in leaves:
            for i, w in enumerate(wins):
                bad = ~np.isfinite(a[i])
                if bad.any():
                    a[i][bad] = mi[i, 0] if mi is not None else self._sequence_mean(w, f, lvl)
        return mask

    def _sequence_mean(self, w: Window, field: str, level: int) -> float:
        arrays = self.store.sequence_info(w.domain, w.sequence_id).get("arrays") or {}
        return float(((arrays.get(f"{level}/{field}") or {}).get("stats") or {}).get("mean", 0.0))

    def set_stats(self, stats: NormStats | None) -> None:
        """Use these statistics to normalise (None: deliver raw values)."""
        self.stats = stats
        self._mi = {}
        if stats is None:
            return
        doms = sorted({w.domain for w in self.windows})
        dom_index = np.array([doms.index(w.domain) for w in self.windows])
        for f in self.all_fields:
            for lvl in self.levels:
                per_dom = np.array([stats.mean_std(d, f, lvl) for d in doms], np.float64)
                mi = np.stack([per_dom[:, 0], 1.0 / per_dom[:, 1]], axis=1).astype(np.float32)
                self._mi[(f, lvl)] = mi[dom_index]  # (n_windows, 2): mean, 1/std

    @property
    def reader(self) -> str:
        return self._reader.name

    @staticmethod
    def sequences_of(selected: Sequence[Any]) -> list[tuple[str, str]]:
        return [(s.domain, s.sequence_id) for s in selected]

    @property
    def all_fields(self) -> tuple[str, ...]:
        return (self.primary, *self.extra_fields)

    def sample_nbytes(self) -> int:
        """Bytes of one sample as delivered (float32)."""
        n = sum(self.n_in * ny * nx for ny, nx in self.level_shapes.values())
        by, bx = self.base_shape
        return 4 * (n * len(self.all_fields) + self.n_out * by * bx)

    def __len__(self) -> int:
        return len(self.windows)

    def read_raw(self, indices: Sequence[int]
                 ) -> tuple[dict[str, Any], list[str], dict[str, Any] | None]:
        """Raw (unnormalised) arrays of these windows, their ids, and the normalisation params.

        The params tree mirrors the arrays tree with (B, 2) float32 leaves (mean, 1/std per
        sample), or is None without statistics.
        """
        idx = np.asarray(indices, dtype=np.int64)
        wins = [self.windows[int(i)] for i in idx]
        B = len(wins)
        per_field = {f: {lvl: empty_aligned((B, self.n_in, *self.level_shapes[lvl]))
                         for lvl in self.levels} for f in self.all_fields}
        target = empty_aligned((B, self.n_out, *self.base_shape))
        jobs: list[ReadJob] = []
        for i, w in enumerate(wins):
            inputs = slice(w.t0, w.t0 + self.n_in)
            for f in self.all_fields:
                for lvl in self.levels:
                    jobs.append(ReadJob(ArrayKey(w.domain, w.sequence_id, lvl, f), inputs,
                                        per_field[f][lvl][i]))
            jobs.append(ReadJob(ArrayKey(w.domain, w.sequence_id, self.base_level, self.primary),
                                slice(w.t0 + self.n_in, w.t0 + self.window), target[i]))
        self._reader.read_into(jobs)
        raw: dict[str, Any] = {"inputs": per_field[self.primary], "target": target}
        if self.extra_fields:
            raw["fields"] = {f: per_field[f] for f in self.extra_fields}
        params = None
        if self.stats is not None:
            params = {"inputs": {lvl: self._mi[(self.primary, lvl)][idx] for lvl in self.levels},
                      "target": self._mi[(self.primary, self.base_level)][idx]}
            if self.extra_fields:
                params["fields"] = {f: {lvl: self._mi[(f, lvl)][idx] for lvl in self.levels}
                                    for f in self.extra_fields}
        if self.has_missing:
            raw["mask"] = self._fill_missing(raw, wins, params)
        return raw, [w.id for w in wins], params

    def read_batch(self, indices: Sequence[int], normalise: bool = True) -> dict[str, Any]:
        """NumPy batch ``{"inputs", "target", "ids"[, "fields"]}`` for these window indices.

        Normalised on the host when the source has statistics and ``normalise``.
        """
        raw, ids, params = self.read_raw(indices)
        if params is not None and normalise:
            tree_map2(normalise_np, raw, params)
        raw["ids"] = ids
        return raw

    def _unbatch(self, batch: Mapping[str, Any], i: int) -> dict[str, Any]:
        s: dict[str, Any] = {"inputs": {lvl: a[i] for lvl, a in batch["inputs"].items()},
                             "target": batch["target"][i], "id": batch["ids"][i]}
        if "fields" in batch:
            s["fields"] = {f: {lvl: a[i] for lvl, a in v.items()}
                           for f, v in batch["fields"].items()}
        if "mask" in batch:
            s["mask"] = batch["mask"][i]
        return s

    def __getitem__(self, index: int) -> dict[str, Any]:
        i = int(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"window {index} out of range for {len(self)} windows")
        return self._unbatch(self.read_batch([i % len(self)]), 0)

    def _getitems(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        b = self.read_batch(indices)
        return [self._unbatch(b, i) for i in range(len(indices))]


def empty_aligned(shape: tuple[int, ...], align: int = 64) -> NDArray[np.float32]:
    """An uninitialised float32 array whose data start on a 64-byte boundary.

    JAX's CPU backend then adopts the buffer in ``device_put`` without copying it (measured: 26
    MB in ~0.1 ms instead of ~16 ms); on accelerators it makes no difference.
    """
    n = int(np.prod(shape)) * 4
    raw = np.empty(n + align, np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off:off + n].view(np.float32).reshape(shape)


def tree_map2(fn: Callable[[Any, Any], Any], a: Any, b: Any) -> Any:
    """Map over two nested dicts of the same structure (leaves: arrays)."""
    if isinstance(a, dict):  # keys of ``a`` that ``b`` lacks (the mask) pass unchanged
        return {k: tree_map2(fn, v, b[k]) if k in b else v for k, v in a.items()}
    return fn(a, b)


def normalise_np(x: NDArray[np.float32], mi: NDArray[np.float32]) -> NDArray[np.float32]:
    """``(x - mean) * (1/std)`` per sample row, in place; ``mi`` is (B, 2): mean, 1/std."""
    shape = (-1,) + (1,) * (x.ndim - 1)
    x -= mi[:, 0].reshape(shape)
    x *= mi[:, 1].reshape(shape)
    return x
