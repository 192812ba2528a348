"""Normalisation statistics of a stream: per (domain, field, level) mean and std, cached
beside the store.

Mean and std of every value of every step of the selected sequences (float64 accumulation), read
through the stream's reader (so computing them warms its decoded-chunk cache), computed once and
kept in a JSON file **beside the store**, ``<store>.stream-stats.json`` (or ``path=``), keyed by
a fingerprint of the selected sequences' ids and their recorded array checksums: a changed set of
sequences, or a rewritten one, is recomputed; unchanged ones load. A file beside the store, not
root attributes: training opens stores read-only, and writing the root ``zarr.json`` would race
with other writers of root metadata; the SQLite catalog lives beside the store the same way. For
``s3://`` stores the file is an object beside the store's prefix (written through obstore), for
other URLs it is written through fsspec; if it cannot be written (a read-only bucket) the
statistics are kept in memory only. The stream applies ``(x - mean) / std``.

File format (``format: atlasstore-stream-stats/1``): ``{"format", "entries": {fingerprint:
{"created", "sequences", "fields", "levels", "values": {domain: {field: {level: {"mean",
"std", "count"}}}}}}}``, at most :data:`MAX_STATS_ENTRIES` entries (oldest dropped first).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from atlasstore.errors import StoreError, StreamError
from atlasstore.io import object_storage
from atlasstore.io.locations import atomic_write, is_remote
from atlasstore.io.provenance import utc_now
from atlasstore.read.reader import Reader
from atlasstore.records import ArrayKey
from atlasstore.store.atlas_store import AtlasStore

STATS_FORMAT = "atlasstore-stream-stats/1"
STATS_SUFFIX = ".stream-stats.json"
#: entries kept in one statistics file (oldest dropped first)
MAX_STATS_ENTRIES = 32

@dataclass(frozen=True)
class NormStats:
    """Mean and std per (domain, field, level), with the fingerprint of the data they describe."""

    fingerprint: str
    values: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]]  # dom->field->level->{}

    def mean_std(self, domain: str, field: str, level: int) -> tuple[float, float]:
        try:
            v = self.values[domain][field][str(level)]
        except KeyError:
            raise StreamError(f"no normalisation statistics for {domain}/{field} at level {level}"
                              ) from None
        return float(v["mean"]), float(v["std"])

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "values": json.loads(json.dumps(self.values))}

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> NormStats:
        return cls(str(d["fingerprint"]), d["values"])


def stats_fingerprint(store: AtlasStore, sequences: Sequence[tuple[str, str]],
                      fields: Sequence[str], levels: Sequence[int]) -> str:
    """Hash of the sequences (ids and recorded checksums of the arrays used), fields and levels."""
    recs = []
    for d, s in sorted(sequences):
        arrays = store.sequence_info(d, s).get("arrays", {})
        recs.append([d, s, {f"{lvl}/{f}": arrays.get(f"{lvl}/{f}", {}).get("checksum")
                            for lvl in levels for f in fields}])
    blob = json.dumps({"v": 1, "sequences": recs, "fields": sorted(fields),
                       "levels": sorted(levels)}, sort_keys=True).encode()
    return "sha256:" + hashlib.sha256(blob).hexdigest()


def compute_stats(store: AtlasStore, sequences: Sequence[tuple[str, str]], fields: Sequence[str],
                  levels: Sequence[int], reader: str | Reader = "auto",
                  fingerprint: str | None = None) -> NormStats:
    """Mean/std per (domain, field, level) over every valid value of the given sequences
    (missing cells, stored as NaN, are left out)."""
    rd = Reader(store, reader) if isinstance(reader, str) else reader
    acc: dict[tuple[str, str, int], list[float]] = {}
    for d, s in sorted(sequences):
        for f in fields:
            for lvl in levels:
                a = np.asarray(rd.read_all(ArrayKey(d, s, lvl, f)), dtype=np.float64)
                sm = float(a.sum())
                if not np.isfinite(sm):  # missing cells (NaN): over the valid cells only
                    a = a[np.isfinite(a)]
                    sm = float(a.sum())
                n, s1, sq = acc.setdefault((d, f, lvl), [0.0, 0.0, 0.0])
                acc[(d, f, lvl)] = [n + a.size, s1 + sm, sq + float(np.square(a).sum())]
    values: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for (d, f, lvl), (n, sm, sq) in sorted(acc.items()):
        mean = sm / n if n else 0.0
        var = max(sq / n - mean * mean, 0.0) if n else 0.0
        std = float(np.sqrt(var))
        if not np.isfinite(std) or std <= 1e-12 * max(1.0, abs(mean)):
            std = 1.0  # a constant field: only centre it
        values.setdefault(d, {}).setdefault(f, {})[str(lvl)] = {
            "mean": mean, "std": std, "count": int(n)}
    fp = fingerprint or stats_fingerprint(store, sequences, fields, levels)
    return NormStats(fp, values)


def stats_location(store: AtlasStore) -> str:
    """The default statistics file: ``<store location>.stream-stats.json`` beside the store."""
    return str(store.location).rstrip("/") + STATS_SUFFIX


def _read_stats_file(path: str) -> dict[str, Any]:
    try:
        if object_storage.is_s3(path):
            raw = object_storage.read_bytes(path)
            if raw is None:
                raise FileNotFoundError(path)
            doc = json.loads(raw)
        elif is_remote(path):
            import fsspec

            with fsspec.open(path, "r") as fh:
                doc = json.load(fh)
        else:
            doc = json.loads(Path(path.removeprefix("file://")).read_text())
    except (FileNotFoundError, OSError, ValueError, ImportError, StoreError):
        return {"format": STATS_FORMAT, "entries": {}}
    except Exception as exc:  # the object store's own errors: computed again, kept in memory
        if object_storage.is_storage_error(exc):
            return {"format": STATS_FORMAT, "entries": {}}
        raise
    if not isinstance(doc, dict) or doc.get("format") != STATS_FORMAT:
        return {"format": STATS_FORMAT, "entries": {}}
    doc.setdefault("entries", {})
    return doc


def _write_stats_file(path: str, doc: Mapping[str, Any]) -> bool:
    text = json.dumps(doc, indent=1, sort_keys=True)
    try:
        if object_storage.is_s3(path):
            object_storage.write_bytes(path, text.encode())
            return True
        if is_remote(path):
            import fsspec

            with fsspec.open(path, "w") as fh:
                fh.write(text)
            return True
        atomic_write(path.removeprefix("file://"), text)  # readers see the old or the new file
        return True
    except (OSError, ImportError, StoreError):
        return False
    except Exception as exc:  # e.g. a read-only bucket: the statistics stay in memory
        if object_storage.is_storage_error(exc):
            return False
        raise


_stats_lock = threading.Lock()


def load_or_compute_stats(store: AtlasStore, sequences: Sequence[tuple[str, str]],
                          fields: Sequence[str], levels: Sequence[int], path: str | None = None,
                          reader: str | Reader = "auto", recompute: bool = False
                          ) -> tuple[NormStats, bool]:
    """Statistics for these sequences from the cache file, else computed and saved.

    Returns ``(stats, computed)``. The cache is keyed by :func:`stats_fingerprint`.
    """
    path = path or stats_location(store)
    fp = stats_fingerprint(store, sequences, fields, levels)
    with _stats_lock:
        doc = _read_stats_file(path)
        entry = doc["entries"].get(fp)
        if entry is not None and not recompute:
            return NormStats(fp, entry["values"]), False
        st = compute_stats(store, sequences, fields, levels, reader=reader, fingerprint=fp)
        doc = _read_stats_file(path)  # re-read: keep entries another process added meanwhile
        doc["entries"][fp] = {"created": utc_now(),
                              "sequences": [f"{d}/{s}" for d, s in sorted(sequences)],
                              "fields": list(fields), "levels": list(levels),
                              "values": st.to_json()["values"]}
        if len(doc["entries"]) > MAX_STATS_ENTRIES:
            for old in sorted(doc["entries"], key=lambda k: doc["entries"][k]["created"]
                              )[:len(doc["entries"]) - MAX_STATS_ENTRIES]:
                if old != fp:
                    del doc["entries"][old]
        _write_stats_file(path, doc)
        return st, True
