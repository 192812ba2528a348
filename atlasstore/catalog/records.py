"""The catalog's typed records: runs, source files, sequences, time steps, arrays, dataset
versions, training runs and checkpoints, each checked on construction and JSON-able both ways."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, TypeVar

from atlasstore.catalog._fastcheck import checker
from atlasstore.catalog.base import _FIELD_NAMES, plain
from atlasstore.errors import CatalogError, SchemaError
from atlasstore.io.provenance import utc_now
from atlasstore.io.schemas import validate


def _finite(what: str, **values: Any) -> None:
    bad = {k: v for k, v in values.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v)}
    if bad:
        raise SchemaError(f"{what}: values must be finite, got {bad}")


R = TypeVar("R", bound="_Record")


class _Record:
    """Dataclass mixin: ``from_dict`` (validated), ``to_dict`` (plain JSON types)."""

    SCHEMA: ClassVar[str]

    def to_dict(self) -> dict[str, Any]:
        return plain(asdict(self))  # type: ignore[call-overload]

    @classmethod
    def from_dict(cls: type[R], d: Mapping[str, Any], *, check: bool = True) -> R:
        doc = plain(d)
        if check and not checker(cls.SCHEMA)(doc):  # fast sound pre-check, else jsonschema
            ident = next((doc[k] for k in ("key", "run_id", "version_id", "ckpt_id")
                          if isinstance(doc, Mapping) and isinstance(doc.get(k), str)), None)
            validate(doc, cls.SCHEMA, what=cls.__name__ + (f" {ident!r}" if ident else ""))
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = frozenset(f.name for f in fields(cls))  # type: ignore[arg-type]
        obj = cls(**(doc if doc.keys() <= names else {k: v for k, v in doc.items() if k in names}))
        obj._check_keys()
        return obj

    @classmethod
    def coerce(cls: type[R], x: Any, *, check: bool = True) -> R:
        """A record from a dict or an instance; validated against the JSON Schema when ``check``."""
        if isinstance(x, cls):
            return cls.from_dict(x.to_dict(), check=True) if check else x
        if isinstance(x, Mapping):
            return cls.from_dict(x, check=check)
        raise CatalogError(f"expected a {cls.__name__} or a dict, got {type(x).__name__}")

    def _check_keys(self) -> None:
        pass


@dataclass
class GenerationRun(_Record):
    """A generation run (PROV activity); :class:`ImportRun` is the same record for imports."""

    SCHEMA: ClassVar[str] = "catalog-generation-run"
    NODE_KIND: ClassVar[str] = "GenerationRun"
    run_id: str
    config: dict[str, Any]
    config_hash: str
    seed: int
    code_version: str
    host: str
    started: str
    finished: str | None = None
    counts: dict[str, int] = field(default_factory=dict)
    kind: str = "generate"

    def _check_keys(self) -> None:
        want = "import" if self.NODE_KIND == "ImportRun" else "generate"
        if self.kind != want:
            raise SchemaError(f"{type(self).__name__} {self.run_id!r} has kind {self.kind!r}, "
                              f"expected {want!r}")


@dataclass
class ImportRun(GenerationRun):
    """An ``atlas import`` run (PROV activity): its options, sources summary, code version, host."""

    NODE_KIND: ClassVar[str] = "ImportRun"
    kind: str = "import"


def run_record(run: GenerationRun | Mapping[str, Any], *, check: bool = True) -> GenerationRun:
    """The run record of the right class for its ``kind`` (``"generate"`` when absent)."""
    if isinstance(run, GenerationRun):
        cls: type[GenerationRun] = ImportRun if run.kind == "import" else GenerationRun
        return cls.coerce(run.to_dict(), check=check) if type(run) is not cls or check else run
    if isinstance(run, Mapping):
        cls = ImportRun if run.get("kind") == "import" else GenerationRun
        return cls.coerce(run, check=check)
    raise CatalogError(f"expected a GenerationRun or a dict, got {type(run).__name__}")


def source_file_key(uri: str, sha256: str) -> str:
    """The key of a SourceFile node: the file's location and content (a changed file is another
    entity)."""
    return f"{uri}@sha256:{sha256}"


@dataclass
class SourceFile(_Record):
    """A file an import read (PROV entity); ``member`` is on the Sequence's edge, not here."""

    SCHEMA: ClassVar[str] = "catalog-source-file"
    key: str
    uri: str
    size: int
    sha256: str
    format: str

    def _check_keys(self) -> None:
        want = source_file_key(self.uri, self.sha256)
        if self.key != want:
            raise SchemaError(f"SourceFile key {self.key!r} must be '<uri>@sha256:<hex>' = {want!r}")


@dataclass
class Sequence(_Record):
    """A stored sequence (PROV entity). Stat ranges are min/max over its time steps.

    ``kind`` says who wrote it (:data:`SEQUENCE_KINDS`; None reads as "generate" with a run id,
    else "api"); ``run_id``/``seed``/``pattern`` are None where the writer had none; the entropy
    range is None for fields without entropy (intensive fields); ``sources`` are the files an
    import read (``uri, size, sha256, format, member``).
    """

    SCHEMA: ClassVar[str] = "catalog-sequence"
    key: str
    domain: str
    sequence_id: str
    run_id: str | None
    seed: int | None
    pattern: str | None
    n_steps: int
    shape: list[int]
    levels: list[int]
    perturbation_kinds: list[str]
    entropy_min: float | None
    entropy_max: float | None
    mean_min: float
    mean_max: float
    variance_min: float
    variance_max: float
    created: str
    status: str = "complete"
    kind: str | None = None
    source: str | None = None
    sources: list[dict[str, Any]] = field(default_factory=list)

    def _check_keys(self) -> None:
        want = f"{self.domain}/{self.sequence_id}"
        if self.key != want:
            raise SchemaError(f"Sequence key {self.key!r} must be '<domain>/<sequence_id>' = {want!r}")
        if self.kind is None:
            self.kind = "generate" if self.run_id else "api"
        for s in ("entropy", "mean", "variance"):
            lo, hi = getattr(self, f"{s}_min"), getattr(self, f"{s}_max")
            if s == "entropy" and lo is None and hi is None:
                continue
            if lo is None or hi is None or not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi:
                raise SchemaError(f"Sequence {self.key!r}: {s}_min={lo} / {s}_max={hi} "
                                  "must be finite with min <= max")

    def source_files(self) -> list[tuple[SourceFile, str | None]]:
        """The SourceFile records of ``sources`` with each edge's ``member``."""
        return [(SourceFile(source_file_key(f["uri"], f["sha256"]), f["uri"], int(f["size"]),
                            f["sha256"], f["format"]), f.get("member")) for f in self.sources]


@dataclass
class TimeStep(_Record):
    """Statistics of one time step of a sequence (PROV entity, part of the sequence)."""

    SCHEMA: ClassVar[str] = "catalog-timestep"
    key: str
    sequence_key: str
    t: int
    mean: float
    variance: float
    entropy: float | None  # None for fields without entropy (intensive fields)
    sum: float | None
    perturbation_kinds: list[str] = field(default_factory=list)
    valid_cells: int | None = None  # cells with data (None: every cell; older records)

    def _check_keys(self) -> None:
        want = f"{self.sequence_key}/{self.t}"
        if self.key != want:
            raise SchemaError(f"TimeStep key {self.key!r} must be '<sequence_key>/<t>' = {want!r}")
        _finite(f"TimeStep {self.key!r}", mean=self.mean, variance=self.variance,
                entropy=self.entropy, sum=self.sum)


@dataclass
class ArrayRecord(_Record):
    """One stored array (time, y, x) of a sequence at one level (PROV entity)."""

    SCHEMA: ClassVar[str] = "catalog-array"
    key: str
    sequence_key: str
    level: int
    field: str
    shape: list[int]
    dtype: str
    checksum: str
    nbytes_stored: int
    stats: dict[str, float]
    derived_from: str | None = None
    operation: str | None = None

    def _check_keys(self) -> None:
        want = f"{self.sequence_key}/{self.level}/{self.field}"
        if self.key != want:
            raise SchemaError(f"ArrayRecord key {self.key!r} must be "
                              f"'<sequence_key>/<level>/<field>' = {want!r}")
        if self.derived_from == self.key:
            raise SchemaError(f"ArrayRecord {self.key!r} cannot be derived from itself")
        if "entropy" in self.stats and self.stats["entropy"] is None:
            self.stats = {k: v for k, v in self.stats.items() if k != "entropy"}
        _finite(f"ArrayRecord {self.key!r} stats", **self.stats)


@dataclass
class DatasetVersion(_Record):
    """An exact selection of sequences for training (PROV entity), pinned by ``checksums``:
    sequence key -> :func:`sequence_checksum` of its arrays when it was registered ({} for a
    version registered before checksums were pinned)."""

    SCHEMA: ClassVar[str] = "catalog-dataset-version"
    version_id: str
    query: dict[str, Any]
    split: dict[str, Any]
    sequence_keys: list[str]
    created: str
    checksums: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(cls, version_id: str, query: Mapping[str, Any], split: Mapping[str, Any],
              sequence_keys: Iterable[str], created: str | None, check: bool,
              checksums: Mapping[str, str] | None = None) -> DatasetVersion:
        """The record both backends register (keys de-duplicated in order, time defaulted)."""
        return cls.coerce({"version_id": version_id, "query": plain(query), "split": plain(split),
                           "sequence_keys": list(dict.fromkeys(sequence_keys)),
                           "created": created or utc_now(),
                           "checksums": dict(checksums or {})}, check=check)

    def _check_keys(self) -> None:
        if self.checksums and set(self.checksums) != set(self.sequence_keys):
            extra = sorted(set(self.checksums) ^ set(self.sequence_keys))[:3]
            raise SchemaError(f"DatasetVersion {self.version_id!r}: checksums must cover exactly "
                              f"its sequence keys (differ at {extra})")


def sequence_checksum(array_checksums: Mapping[str, str]) -> str:
    """One checksum of a sequence's data: SHA-256 over its arrays' ``"<level>/<field> <checksum>"``
    lines in sorted order (any change of any array's values changes it)."""
    lines = "\n".join(f"{k} {array_checksums[k]}" for k in sorted(array_checksums))
    return "sha256:" + hashlib.sha256(lines.encode()).hexdigest()


@dataclass
class StoreSync:
    """How far a catalog has followed its store's change log (see "Keeping up with the store").

    ``position``: entries before it are applied; ``pending``: sequence key -> the change
    (``"write"``/``"delete"``, or ``"refused"`` for a record the catalog cannot hold) not yet
    confirmed by the store when it was applied: re-checked on every catch-up and answered from
    the store meanwhile; ``version`` increases with every commit (the compare-and-swap token).
    """

    store_id: str
    position: int
    pending: dict[str, str] = field(default_factory=dict)
    version: int = 0
    updated: str = ""


@dataclass
class TrainingRun(_Record):
    """A training run (PROV activity) that used one dataset version."""

    SCHEMA: ClassVar[str] = "catalog-training-run"
    run_id: str
    config: dict[str, Any]
    dataset_version_id: str
    code_version: str | None
    host: str | None
    started: str
    finished: str | None = None

    @classmethod
    def build(cls, run_id: str, config: Mapping[str, Any], dataset_version_id: str,
              code_version: str | None, host: str | None, started: str | None,
              finished: str | None, check: bool) -> TrainingRun:
        return cls.coerce({"run_id": run_id, "config": plain(config),
                           "dataset_version_id": dataset_version_id, "code_version": code_version,
                           "host": host, "started": started or utc_now(), "finished": finished},
                          check=check)


@dataclass
class Checkpoint(_Record):
    """A model checkpoint (PROV entity) generated by a training run."""

    SCHEMA: ClassVar[str] = "catalog-checkpoint"
    ckpt_id: str
    training_run_id: str
    step: int
    metrics: dict[str, Any]
    path: str
    created: str

    @classmethod
    def build(cls, ckpt_id: str, training_run_id: str, step: int, metrics: Mapping[str, Any],
              path: str, created: str | None, check: bool) -> Checkpoint:
        return cls.coerce({"ckpt_id": ckpt_id, "training_run_id": training_run_id,
                           "step": plain(step), "metrics": plain(metrics), "path": str(path),
                           "created": created or utc_now()}, check=check)
