"""Audit a store: checksums, physical invariants, per-domain report, catalog drift, and whether
a dataset version's (a checkpoint's) training data still matches the store.

Every array is decoded in full (crc32c of every chunk checked by the codec) and its SHA-256 of
decoded values compared with the one committed; every stored value is checked finite, and the
primary field's physics where it makes sense: an extensive field (energy) non-negative with
every pyramid level conserving its sum against the base level, an intensive field (a
temperature, a velocity) with every level conserving its mean (its values may be negative).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from atlasstore.catalog.records import sequence_checksum
from atlasstore.errors import CorruptArray, NotFound
from atlasstore.physics import fields as physics
from atlasstore.read.reader import reader_of
from atlasstore.records import ArrayKey, field_kind, primary_field
from atlasstore.store.atlas_store import AtlasStore
from atlasstore.store.values import checksum


@dataclass(frozen=True)
class Problem:
    path: str
    kind: str  # corrupt | checksum | invariant | incomplete | catalog_missing | catalog_extra
    message: str


@dataclass
class DomainReport:
    sequences: int = 0
    maps: int = 0
    arrays: int = 0
    bytes_on_disk: int = 0
    bytes_decoded: int = 0
    mean: float = 0.0
    variance: float = 0.0
    entropy: float = 0.0

    @property
    def compression_ratio(self) -> float:
        return self.bytes_decoded / self.bytes_on_disk if self.bytes_on_disk else float("nan")


@dataclass
class AuditReport:
    domains: dict[str, DomainReport] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    checked_arrays: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def corrupt_arrays(self) -> list[str]:
        return sorted({p.path for p in self.problems if p.kind in ("corrupt", "checksum")})


class SequenceIndex(Protocol):
    """What drift detection needs from a catalog."""

    def sequence_keys(self) -> Iterable[str]: ...


def audit(store: AtlasStore, domains: list[str] | None = None, verify: bool = True,
          catalog: SequenceIndex | None = None, tolerance: float = physics.CONSERVATION_TOLERANCE
          ) -> AuditReport:
    """Check the store (and, given a catalog, drift both ways); never raises on bad data."""
    report = AuditReport()
    stored_keys: set[str] = set()
    for domain in domains or store.domains():
        dr = DomainReport()
        report.domains[domain] = dr
        means, variances, entropies = [], [], []
        for seq in store.sequences(domain, include_incomplete=True):
            if store.sequence_status(domain, seq) != "complete":
                report.problems.append(Problem(f"{domain}/{seq}", "incomplete",
                                               "sequence is not committed (a crashed or running writer); "
                                               "re-run the command that wrote it to complete it"))
                continue
            info = store.sequence_info(domain, seq)
            stored_keys.add(f"{domain}/{seq}")  # every committed sequence is catalogued
            dr.sequences += 1
            dr.maps += info["n_steps"]
            dr.bytes_on_disk += store.nbytes_stored(f"{domain}/{seq}/")
            means += [s["mean"] for s in info["steps"]]
            variances += [s["variance"] for s in info["steps"]]
            entropies += [s["entropy"] for s in info["steps"] if "entropy" in s]
            primary, kind = primary_field(info), field_kind(info)
            reader = reader_of(store)
            base: np.ndarray | None = None
            for key, rec in sorted(info["arrays"].items(), key=lambda kv: -int(kv[0].split("/")[0])):
                lvl_s, fname = key.split("/")
                lvl = int(lvl_s)
                path = f"{domain}/{seq}/{key}"
                dr.arrays += 1
                dr.bytes_decoded += int(np.prod(rec["shape"])) * 4
                if not verify:
                    continue
                report.checked_arrays += 1
                try:
                    values = reader.read(ArrayKey(domain, seq, lvl, fname))
                except CorruptArray as exc:
                    report.problems.append(Problem(path, "corrupt", str(exc)))
                    continue
                except Exception as exc:  # noqa: BLE001 - a broken array must not stop the audit
                    report.problems.append(Problem(path, "corrupt", f"{type(exc).__name__}: {exc}"))
                    continue
                if checksum(values) != rec["checksum"]:
                    report.problems.append(Problem(path, "checksum",
                                                   "decoded values do not match the committed checksum"))
                    continue
                report.problems += _missing_cells(path, values, rec)
                report.problems += _invariants(path, fname == primary, kind, lvl, values,
                                               base, tolerance)
                if fname == primary and lvl == max(info["levels"]):
                    base = values
        if means:
            dr.mean, dr.variance = float(np.mean(means)), float(np.mean(variances))
            dr.entropy = float(np.mean(entropies)) if entropies else float("nan")
    if catalog is not None:
        report.problems += drift(stored_keys, set(catalog.sequence_keys()), domains)
    return report


def _totals(values: np.ndarray, kind: str) -> np.ndarray:
    """What every level of a pyramid conserves, per step: the sum (extensive), the mean
    (intensive), over the valid cells."""
    v = values.astype(np.float64)
    return np.nansum(v, axis=(1, 2)) if kind == "extensive" else np.nanmean(v, axis=(1, 2))


def _missing_cells(path: str, values: np.ndarray, rec: dict) -> list[Problem]:
    """Missing cells (NaN) are data only where the commit recorded them: as many as its valid
    fraction says (a store written before missing cells existed recorded none); inf never."""
    n_inf = int(np.isinf(values).sum())
    n_nan = int(np.isnan(values).sum())
    out = []
    if n_inf:
        out.append(Problem(path, "invariant", f"{n_inf} infinite values stored"))
    fraction = rec.get("stats", {}).get("valid_fraction")
    want = 0 if fraction is None else round((1.0 - fraction) * values.size)
    if n_nan != want:
        out.append(Problem(path, "invariant", f"{n_nan} missing (NaN) cells stored; the commit "
                           f"recorded {want}"))
    return out


def _invariants(path: str, primary: bool, kind: str, level: int, values: np.ndarray,
                base: np.ndarray | None, tolerance: float) -> list[Problem]:
    """A primary field's physics: extensive fields are non-negative; every level conserves
    the base's totals (the sum, or the mean where no cell is missing); an intensive level of
    a map with missing cells is the block mean of the base's valid cells (the mean of block
    means is not the mean), checked by recomputing it."""
    out: list[Problem] = []
    if not primary or np.isinf(values).any():
        return out
    if kind == "extensive" and (values < 0).any():
        out.append(Problem(path, "invariant", f"{int((values < 0).sum())} negative values in an "
                           "extensive field"))
    if base is None:
        return out
    if kind == "intensive" and np.isnan(base).any():
        want = physics.downsample_field(base, base.shape[-1] // values.shape[-1], kind)
        same = np.array_equal(np.isnan(want), np.isnan(values)) and np.allclose(
            np.nan_to_num(want), np.nan_to_num(values), rtol=1e-5, atol=1e-6 * float(
                np.nanmax(np.abs(base))))
        if not same:
            out.append(Problem(path, "invariant", f"level {level} is not the block mean of the "
                               "base's valid cells"))
        return out
    got, want_totals = _totals(values, kind), _totals(base, kind)
    scale = np.abs(want_totals) if kind == "extensive" else np.maximum(
        np.nanmean(np.abs(values).astype(np.float64), axis=(1, 2)), np.abs(want_totals))
    err = np.abs(got - want_totals) / np.where(scale > 0, scale, 1.0)
    if (err >= tolerance).any():
        what = "energy" if kind == "extensive" else "the mean"
        out.append(Problem(path, "invariant", f"level {level} does not conserve {what} "
                           f"(max relative error {float(err.max()):.3e})"))
    return out


def drift(stored: set[str], catalogued: set[str], domains: list[str] | None = None) -> list[Problem]:
    """Sequences in the store but not the catalog, and the reverse."""
    if domains:
        catalogued = {k for k in catalogued if k.split("/")[0] in domains}
    out = [Problem(k, "catalog_missing", "in the store but not in the catalog (run `atlas catalog sync`)")
           for k in sorted(stored - catalogued)]
    out += [Problem(k, "catalog_extra", "in the catalog but not in the store (run `atlas catalog sync`)")
            for k in sorted(catalogued - stored)]
    return out


@dataclass
class DatasetAudit:
    """Whether the data a dataset version pinned is still in the store, unchanged.

    ``matches``/``changed``/``missing``: sequence keys whose data has the pinned checksum, has
    another one (rewritten, or its stored bytes no longer decode to it: ``corrupt``), or is gone.
    """

    version_id: str
    matches: list[str] = field(default_factory=list)
    changed: dict[str, str] = field(default_factory=dict)  # key -> what differs
    missing: list[str] = field(default_factory=list)
    checked_arrays: int = 0

    @property
    def ok(self) -> bool:
        return not self.changed and not self.missing


def audit_dataset(store: AtlasStore, version_id: str, pins: Mapping[str, str],
                  verify: bool = True) -> DatasetAudit:
    """Compare a dataset version's pins (sequence key -> checksum of its data when the version
    was registered, :func:`~atlasstore.catalog.base.sequence_checksum`) with the store: the
    committed checksums, and with ``verify`` the decoded arrays too."""
    out = DatasetAudit(version_id)
    for key in sorted(pins):
        domain, _, seq = key.partition("/")
        try:
            info = store.sequence_info(domain, seq)
        except NotFound:
            out.missing.append(key)
            continue
        recorded = {k: rec["checksum"] for k, rec in info["arrays"].items()}
        if sequence_checksum(recorded) != pins[key]:
            out.changed[key] = "rewritten: its committed checksums differ from the pinned ones"
            continue
        bad = []
        if verify:
            for akey, want in sorted(recorded.items()):
                level, fname = akey.split("/")
                out.checked_arrays += 1
                try:
                    got = checksum(reader_of(store).read(ArrayKey(domain, seq, int(level), fname)))
                except CorruptArray as exc:
                    got = f"corrupt ({exc})"
                if got != want:
                    bad.append(akey)
        if bad:
            out.changed[key] = f"stored data does not match its checksum: {', '.join(bad)}"
        else:
            out.matches.append(key)
    return out


def summary_rows(report: AuditReport) -> list[dict[str, Any]]:
    """One row per domain, for tables."""
    return [{"domain": d, "sequences": r.sequences, "maps": r.maps, "arrays": r.arrays,
             "bytes_on_disk": r.bytes_on_disk, "compression_ratio": r.compression_ratio,
             "mean": r.mean, "variance": r.variance, "entropy": r.entropy}
            for d, r in report.domains.items()]
