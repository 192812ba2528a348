"""Training data: the query, the split by sequence, the normalisation and the iterators.

The split is **by sequence** (:func:`split_by_sequence`): no time step of a sequence is on both
sides. The normalisation (:func:`pooled_stats`) is measured on the training split only. Training
batches come from :func:`atlasstore.training.stream.stream` (endless, seeded shuffle, prefetch) in
physical units (``normalise=False``: the model normalises inside, see
:mod:`atlasstore.nvp.model`); validation reads fixed windows from a
:class:`~atlasstore.training.stream.WindowSource`.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from atlasstore.errors import NotFound, QueryError, TrainError
from atlasstore.nvp.config import DataConfig
from atlasstore.query import Query
from atlasstore.records import field_kind
from atlasstore.store.atlas_store import AtlasStore

__all__ = [
    "DataPlan",
    "build_query",
    "plan_data",
    "pooled_stats",
    "resolve_batch_size",
    "select_sequences",
    "split_by_sequence",
    "spread_indices",
    "train_iterator",
    "training_pairs",
    "val_batches",
    "val_source",
]


def build_query(store: AtlasStore, data: DataConfig, scale: int | None,
                sequences: Sequence[str] | None = None) -> Query:
    """The Query of the configured selection (``sequences`` overrides ``data.sequences``; a
    ``scale`` of None is the selection's full resolution)."""
    seqs = tuple(sequences) if sequences is not None else data.sequences
    return Query(store, domains=data.domains, sequences=seqs, scale=scale,  # type: ignore[arg-type]
                 window=data.n_in + 1, stride=data.stride, time_range=data.time_range,
                 entropy=data.entropy, mean=data.mean, variance=data.variance,
                 perturbation=data.perturbation, run_id=data.run_id)


def select_sequences(store: AtlasStore, data: DataConfig) -> list[str]:
    """Sorted ``domain/sequence`` keys the configured query selects (at ``data.resolution``,
    else at the full resolution of the selected sequences, whatever it is)."""
    try:
        selected = build_query(store, data, data.resolution).selection()
    except (QueryError, NotFound) as exc:
        msg = str(exc).strip("'\"")
        if data.resolution is None:
            raise TrainError(msg) from None
        raise TrainError(f"{msg}; data.resolution {data.resolution} is not stored: choose a "
                         "stored level (--scale) or leave it out (the data's full "
                         "resolution)") from None
    if not selected:
        raise TrainError("the data selection matches no sequences")
    return sorted(f"{s.domain}/{s.sequence_id}" for s in selected)


def split_by_sequence(keys: Sequence[str], val_fraction: float = 0.05, seed: int = 0
                      ) -> tuple[list[str], list[str]]:
    """(train, validation) sequence keys ``domain/sequence``: a seeded random choice of whole
    sequences, **per domain**.

    Every domain with at least two sequences gives ``clamp(round(val_fraction * n_d), 1,
    n_d - 1)`` of them to validation, so each domain is validated (and its variance calibrated,
    :mod:`.calibration`) on sequences it was not trained on; a domain with one sequence trains on
    it. If that leaves no validation sequence at all, one sequence of the whole selection is
    held out. At least two sequences are needed. The choice depends only on the sorted set of
    keys and the seed; both lists come back sorted.
    """
    uniq = sorted(set(keys))
    n = len(uniq)
    if n < 2:
        raise TrainError(f"a split by sequence needs at least 2 sequences, the selection has {n} "
                         f"({', '.join(uniq) or 'none'}); generate more sequences, widen the "
                         "query, or import a long record as several sequences (its time axis "
                         "cut into files, or an ensemble's --sequence-dim)")
    if not 0.0 <= val_fraction < 1.0:
        raise TrainError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_domain: dict[str, list[str]] = {}
    for k in uniq:
        by_domain.setdefault(k.split("/", 1)[0], []).append(k)
    val: list[str] = []
    for dom, ks in sorted(by_domain.items()):
        if len(ks) < 2:
            continue
        n_val = min(len(ks) - 1, max(1, round(val_fraction * len(ks))))
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence(
            [int(seed), 0x5EC5, zlib.crc32(dom.encode())])))
        val += [ks[i] for i in rng.permutation(len(ks))[:n_val]]
    if not val:
        rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed), 0x5EC5])))
        val = [uniq[int(rng.integers(n))]]
    chosen = set(val)
    return [k for k in uniq if k not in chosen], sorted(val)


@dataclass(frozen=True)
class DataPlan:
    """What a run trains on: the split, the levels, and the queries of both sides."""

    data: DataConfig
    train_keys: list[str]
    val_keys: list[str]
    resolution: int          # the level the model predicts
    levels: tuple[int, ...]  # the model's input levels, finest (= resolution) first
    factor: int              # 1: the stream's target is already at the resolution
    model_shape: tuple[int, int]
    train_query: Query
    val_query: Query
    #: the sequences' primary field (``energy``, or an imported field's own name): what the
    #: model reads and predicts
    field: str = "energy"
    #: its kind: an extensive field's prediction is kept non-negative, an intensive one's not
    kind: str = "extensive"

    @property
    def keys(self) -> list[str]:
        return sorted(self.train_keys + self.val_keys)

    def query_record(self, location: str) -> dict[str, Any]:
        """The JSON record of the query (part of the dataset version)."""
        d = self.data
        rec = {"store": location, "domains": list(d.domains) if d.domains else None,
               "sequences": list(d.sequences) if d.sequences else None,
               "resolution": self.resolution, "levels": list(self.levels), "n_in": d.n_in,
               "n_out": 1, "window": d.n_in + 1, "stride": d.stride,
               "time_range": list(d.time_range) if d.time_range else None,
               "entropy": d.entropy, "mean": d.mean, "variance": d.variance,
               "perturbation": d.perturbation, "run_id": d.run_id}
        return json.loads(json.dumps(rec))

    def split_record(self, seed: int) -> dict[str, Any]:
        return {"method": "by_sequence", "val_fraction": self.data.val_fraction, "seed": seed,
                "train": self.train_keys, "val": self.val_keys}


def _pairs(keys: Sequence[str]) -> list[tuple[str, str]]:
    """``domain/sequence`` keys as (domain, sequence)."""
    out = []
    for k in keys:
        d, s = k.split("/", 1)
        out.append((d, s))
    return out


def _store_levels(store: AtlasStore, keys: Sequence[str]
                  ) -> tuple[tuple[int, ...], tuple[int, int]]:
    sig = set()
    for k in keys:
        d, s = k.split("/", 1)
        info = store.sequence_info(d, s)
        sig.add((tuple(sorted(info["levels"], reverse=True)), tuple(info["shape"])))
    if len(sig) != 1:
        raise TrainError(f"the selected sequences mix levels or map shapes ({sorted(sig)}); "
                         "select one scale and shape (data.domains / data.sequences)")
    (levels, shape), = sig
    return levels, (int(shape[0]), int(shape[1]))


def plan_data(store: AtlasStore, data: DataConfig, train_keys: Sequence[str],
              val_keys: Sequence[str]) -> DataPlan:
    """The :class:`DataPlan` of a split: checks that every sequence has the same levels and shape
    and that ``data.resolution`` is one of them."""
    train_keys, val_keys = list(train_keys), list(val_keys)
    stored_levels, shape = _store_levels(store, train_keys + val_keys)
    base = stored_levels[0]
    res = data.resolution or base
    if res not in stored_levels:
        raise TrainError(f"data.resolution {res} is not a stored level ({list(stored_levels)})")
    factor = 1  # the stream delivers the target at the query's scale, res
    train_query = build_query(store, data, res, train_keys)
    try:
        field = train_query.primary_of(_pairs(train_keys + val_keys))
    except QueryError as exc:
        raise TrainError(str(exc)) from None
    first = (train_keys + val_keys)[0].split("/", 1)
    return DataPlan(data=data, train_keys=train_keys, val_keys=val_keys, resolution=res,
                    levels=tuple(lv for lv in stored_levels if lv <= res), factor=factor,
                    model_shape=(shape[0] * res // base, shape[1] * res // base),
                    train_query=train_query, val_query=build_query(store, data, res, val_keys),
                    field=field, kind=field_kind(store.sequence_info(first[0], first[1])))


def pooled_stats(store: AtlasStore, keys: Sequence[str], levels: Sequence[int],
                 reader: str, field: str = "energy") -> dict[int, tuple[float, float]]:
    """Mean and std of ``field`` (the sequences' primary field) at every level over all values
    of the given sequences."""
    from atlasstore.training.normalization import compute_stats

    st = compute_stats(store, _pairs(keys), [field], list(levels), reader=reader, fingerprint="-")
    out: dict[int, tuple[float, float]] = {}
    for lv in levels:
        n = s1 = s2 = 0.0
        for dom in st.values.values():
            v = dom[field][str(lv)]
            c, m, sd = float(v["count"]), float(v["mean"]), float(v["std"])
            n += c
            s1 += c * m
            s2 += c * (sd * sd + m * m)
        mean = s1 / n
        std = math.sqrt(max(s2 / n - mean * mean, 0.0))
        out[int(lv)] = (mean, std if std > 0 else 1.0)
    return out


def resolve_batch_size(data: DataConfig, train_windows: int) -> int:
    """The batch size a run uses: ``data.batch_size``, cut to the training windows the data
    holds (a batch larger than the whole training split would only repeat windows)."""
    return max(1, min(int(data.batch_size), int(train_windows)))


def train_iterator(plan: DataPlan, seed: int) -> Any:
    """The endless, seeded, prefetching stream of training batches (physical units)."""
    from atlasstore.training.stream import stream

    d = plan.data
    return stream(plan.train_query, n_in=d.n_in, n_out=1, batch_size=d.batch_size, seed=seed,
                  shuffle=True, num_epochs=None, prefetch=d.prefetch, workers=d.workers,
                  normalise=False, reader=d.reader)


def training_pairs(store: AtlasStore, plan: DataPlan, per_domain: int, history: bool = False
                   ) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Up to ``per_domain`` (E_t, E_t+1) pairs of every domain of the training split, spread
    evenly over its windows, at the model's resolution (float32, (B, y, x) each); with
    ``history`` the first is every input step (B, n_in, y, x), oldest first."""
    from atlasstore.training.windows import WindowSource

    src = WindowSource(plan.train_query, plan.data.n_in, 1, reader=plan.data.reader,
                       cache_bytes=0)
    by_domain: dict[str, list[int]] = {}
    for i, w in enumerate(src.windows):
        by_domain.setdefault(w.domain, []).append(i)
    out: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for dom, idx in sorted(by_domain.items()):
        pick = [idx[j] for j in spread_indices(len(idx), per_domain)]
        prev, tgt = [], []
        for i in range(0, len(pick), 16):
            b = src.read_batch(pick[i:i + 16])
            x = b["inputs"][plan.resolution]
            prev.append(np.asarray(x if history else x[:, -1], np.float32))
            tgt.append(np.asarray(b["target"][:, 0], np.float32))
        out[dom] = (np.concatenate(prev), np.concatenate(tgt))
    return out


def val_source(plan: DataPlan) -> Any:
    """The validation windows, read by index."""
    from atlasstore.training.windows import WindowSource

    return WindowSource(plan.val_query, plan.data.n_in, 1, reader=plan.data.reader)


def spread_indices(n: int, k: int | None) -> list[int]:
    """``range(n)``, or ``k`` indices spread evenly over it (first and last included)."""
    if k is None or n <= k:
        return list(range(n))
    return sorted({int(i) for i in np.linspace(0, n - 1, k).round()})


def val_batches(n: int, batch_size: int, max_windows: int | None) -> list[list[int]]:
    """Window indices in chunks of ``batch_size``; at most ``max_windows`` spread evenly."""
    idx = spread_indices(n, max_windows)
    return [idx[i:i + batch_size] for i in range(0, len(idx), batch_size)]
