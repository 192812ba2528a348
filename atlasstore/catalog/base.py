"""The catalog contract: record types, lineage types, errors and the :class:`Catalog` protocol.

The store is the truth for arrays; the catalog is the index for search and lineage. Two backends
implement the same protocol and pass the same contract tests (``tests/test_catalog_contract.py``):
:class:`~atlasstore.catalog.sqlite.SQLiteCatalog` (embedded default) and
:class:`~atlasstore.catalog.neo4j.Neo4jCatalog` (shared server, lineage graph).

Records
-------
Plain dataclasses with ``from_dict`` / ``to_dict``. Every registration method accepts either the
dataclass or a plain dict with exactly the same field names; both are checked against the JSON
Schemas ``schemas/catalog-*.schema.json`` before anything is written (NumPy scalars are turned
into Python numbers first). Keys are derived, and checked:

* Sequence ``key == f"{domain}/{sequence_id}"``
* TimeStep ``key == f"{sequence_key}/{t}"``
* ArrayRecord ``key == f"{sequence_key}/{level}/{field}"``

Keys and names are opaque data to the catalog: any string (quotes, braces, newlines, unicode) is
stored and returned unchanged. The store refuses '/' in domain and sequence names, which keeps the
keys unambiguous; the catalog does not parse keys.

Lineage (W3C PROV shape)
------------------------
Every catalogued thing is a node with a *node id* ``"<Kind>:<key>"`` (see :func:`node_id`):

========================  ==========  ==============================================
kind                      PROV class  key
========================  ==========  ==============================================
``Sequence``              entity      ``domain/sequence_id``
``TimeStep``              entity      ``domain/sequence_id/t``
``Array``                 entity      ``domain/sequence_id/level/field``
``SourceFile``            entity      ``<uri>@sha256:<hex>`` (a file an import read)
``DatasetVersion``        entity      version id
``Checkpoint``            entity      checkpoint id
``GenerationRun``         activity    run id (``run-<16 hex>``)
``ImportRun``             activity    run id (``import-<16 hex>``)
``TrainingRun``           activity    run id
``CodeVersion``           agent       code version string
``Host``                  agent       host name
========================  ==========  ==============================================

Edges (src -rel-> dst)::

    Sequence       -wasGeneratedBy->    GenerationRun | ImportRun  (when the run is catalogued)
    GenerationRun  -wasAssociatedWith-> CodeVersion, Host  (ImportRun the same)
    Sequence       -wasDerivedFrom->    SourceFile         {member: "trajectory 3, ..."} (imports)
    Sequence       -hasTimeStep->       TimeStep           (structural: part of)
    Sequence       -hasArray->          Array              (structural: part of)
    Array          -wasDerivedFrom->    Array              {operation: "area_downsample(factor=2)", ...}
    DatasetVersion -wasDerivedFrom->    Sequence           (one per selected sequence)
    TrainingRun    -used->              DatasetVersion
    TrainingRun    -wasAssociatedWith-> CodeVersion, Host  (when given)
    Checkpoint     -wasGeneratedBy->    TrainingRun

*Upstream* of a node means: follow ``wasGeneratedBy``, ``used``, ``wasDerivedFrom`` and
``wasAssociatedWith`` forwards, and the structural ``hasTimeStep``/``hasArray`` backwards (from a
part to the sequence it belongs to), transitively. :meth:`Catalog.lineage` returns that closure,
nodes with their properties and the edges between them, in one backend query.

Who wrote a sequence (``Sequence.kind``): ``"generate"`` and ``"import"`` sequences name their
run (``run_id``); ``"api"`` (``AtlasStore.write_sequence``) and ``"save_map"`` sequences have no
run and no ``wasGeneratedBy`` edge: their Sequence node itself records the kind (and save_map's
``source``), which is all the store knows about them. An import's Sequence lists its ``sources``
(uri, size, sha256, format, member), each a ``SourceFile`` node.

Registration semantics
----------------------
* ``register_sequences(seqs, timesteps, arrays)`` is one transaction per call (call it once per
  batch of sequences) and idempotent: the same keys overwrite, never duplicate. A sequence given
  in ``seqs`` is replaced whole: its time steps, arrays and source files become exactly those of
  the call. Parts whose sequence is not in ``seqs`` are upserted into an already catalogued
  sequence. Unknown sequences or ``derived_from`` arrays raise :class:`CatalogNotFound` and
  nothing of the batch is written. A ``run_id`` may name a run that is not catalogued (the store
  is the truth, and it may lack the record): the ``wasGeneratedBy`` edge appears when
  ``register_run`` registers it.
* Invalid records raise :class:`atlasstore.io.schemas.SchemaError` (a ValueError) before anything
  is written: JSON Schema, key consistency, finite stats, ``min <= max``, no derivation cycles.
* ``remove_sequences`` removes sequences with their parts and edges (a DatasetVersion keeps its
  recorded ``sequence_keys`` and checksums but loses the edge to a removed sequence); a
  SourceFile no sequence derives from any more goes with it.
* A DatasetVersion pins what it selected: ``checksums`` maps every sequence key to
  :func:`sequence_checksum` of its arrays (given, or computed from the catalogued arrays).

Keeping up with the store
-------------------------
A catalog serves one store. :meth:`Catalog.store_sync` returns what it last applied of that
store's change log (:mod:`atlasstore.store.change_log`): the store id, the log position, the sequences
whose change was still in flight (``pending``) and a version number. :meth:`Catalog.commit_sync`
applies a batch of records and the new state in one transaction, *only if* the version is still
the one the caller read (compare-and-swap), so two processes catching up at once never let an
older reading overwrite a newer one. :mod:`atlasstore.catalog.sync` drives both.

Range filters
-------------
``find_sequences(entropy=(lo, hi))`` matches a sequence when its ``[entropy_min, entropy_max]``
range *overlaps* ``[lo, hi]`` (``entropy_min <= hi and entropy_max >= lo``), bounds inclusive;
either bound may be ``None`` (open). The same holds for ``mean`` and ``variance``. To select
windows by per-step values use :meth:`Catalog.find_timesteps`, where a step matches when its value
lies in ``[lo, hi]`` (inclusive).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from collections.abc import Sequence as Seq
from dataclasses import asdict, dataclass, field, fields
from typing import Any, ClassVar, Protocol, Self, TypeVar, runtime_checkable

from atlasstore.catalog._fastcheck import checker
from atlasstore.errors import CatalogError, CatalogMismatch, CatalogNotFound, CatalogUnavailable, SchemaError
from atlasstore.io.provenance import utc_now
from atlasstore.io.schemas import validate

__all__ = [
    "AGENT_KINDS", "ARRAY_FIELDS", "KINDS", "SEQUENCE_KINDS", "ArrayRecord", "Catalog",
    "CatalogError", "CatalogMismatch", "CatalogNotFound", "CatalogUnavailable", "Checkpoint",
    "DatasetVersion", "GenerationRun", "ImportRun", "Lineage", "LineageEdge", "LineageNode",
    "Range", "Sequence", "SourceFile", "StoreSync", "TimeStep", "TrainingRun", "UPSTREAM_RELS",
    "STRUCTURAL_RELS", "node_id", "run_record", "sequence_checksum", "source_file_key",
    "split_node_id", "utc_now",
]

# ------------------------------------------------------------------------------------ errors


# ------------------------------------------------------------------------------------ helpers

Range = tuple[float | None, float | None]

#: the fields of a generated sequence (an imported one names its primary field itself)
ARRAY_FIELDS: tuple[str, ...] = ("energy", "grad_x", "grad_y")
ENTITY_KINDS = ("Sequence", "TimeStep", "Array", "SourceFile", "DatasetVersion", "Checkpoint")
ACTIVITY_KINDS = ("GenerationRun", "ImportRun", "TrainingRun")
AGENT_KINDS = ("CodeVersion", "Host")
KINDS: tuple[str, ...] = ENTITY_KINDS + ACTIVITY_KINDS + AGENT_KINDS
PROV_CLASS = {**{k: "entity" for k in ENTITY_KINDS}, **{k: "activity" for k in ACTIVITY_KINDS},
              **{k: "agent" for k in AGENT_KINDS}}
#: relations followed forwards when walking upstream
UPSTREAM_RELS: tuple[str, ...] = ("wasDerivedFrom", "wasGeneratedBy", "used", "wasAssociatedWith")
#: structural relations (parent -> part), followed backwards when walking upstream
STRUCTURAL_RELS: tuple[str, ...] = ("hasTimeStep", "hasArray")
#: order in which a bare key (no "Kind:" prefix) is resolved by lineage()
RESOLVE_ORDER: tuple[str, ...] = ("Array", "TimeStep", "Sequence", "SourceFile", "Checkpoint",
                                  "DatasetVersion", "TrainingRun", "GenerationRun", "ImportRun",
                                  "CodeVersion", "Host")
#: who wrote a sequence (``atlasstore_sequence.generation.kind``)
SEQUENCE_KINDS: tuple[str, ...] = ("generate", "import", "api", "save_map")


def node_id(kind: str, key: str) -> str:
    """The lineage node id of a catalogued thing: ``"<Kind>:<key>"``, e.g. ``"Array:d/s/64/grad_x"``."""
    if kind not in KINDS:
        raise ValueError(f"unknown node kind {kind!r} (one of {', '.join(KINDS)})")
    return f"{kind}:{key}"


def split_node_id(nid: str) -> tuple[str, str] | None:
    """``("Array", "d/s/64/grad_x")`` for a qualified id, None when it has no known kind prefix."""
    kind, sep, key = nid.partition(":")
    if sep and kind in KINDS:
        return kind, key
    return None


_SCALARS = (str, int, float, bool, type(None))


def plain(x: Any) -> Any:
    """NumPy scalars/arrays, tuples and mappings turned into plain JSON types (recursively)."""
    t = type(x)
    if t in _SCALARS:
        return x
    if t is dict:
        return {k if type(k) is str else str(k): v if type(v) in _SCALARS else plain(v)
                for k, v in x.items()}
    if t is list or t is tuple:
        return [v if type(v) in _SCALARS else plain(v) for v in x]
    if isinstance(x, bool):
        return bool(x)
    if isinstance(x, int):
        return int(x)
    if isinstance(x, float):
        return float(x)
    if isinstance(x, str):
        return str(x)
    if isinstance(x, Mapping):
        return plain(dict(x))
    if isinstance(x, (list, tuple)):
        return [plain(v) for v in x]
    if getattr(x, "ndim", 0) > 0 and hasattr(x, "tolist"):  # numpy array
        return plain(x.tolist())
    if hasattr(x, "item"):  # numpy scalar / 0-d array
        return plain(x.item())
    return x


def dumps(x: Any, what: str) -> str:
    """Canonical JSON text of a JSON-able value (sorted keys, no NaN); CatalogError otherwise."""
    try:
        return json.dumps(x, sort_keys=True, allow_nan=False, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise CatalogError(f"{what} is not JSON-able: {exc}") from None


def check_range(name: str, rng: Range | None) -> tuple[float | None, float | None]:
    """Normalise a (lo, hi) filter; ValueError for a malformed or reversed interval."""
    if rng is None:
        return None, None
    try:
        lo, hi = rng
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a (lo, hi) pair, got {rng!r}") from None
    out: list[float | None] = []
    for b in (lo, hi):
        if b is None:
            out.append(None)
            continue
        b = plain(b)
        if isinstance(b, bool) or not isinstance(b, (int, float)) or math.isnan(b):
            raise ValueError(f"{name} bounds must be numbers or None, got {rng!r}")
        out.append(float(b))
    if out[0] is not None and out[1] is not None and out[0] > out[1]:
        raise ValueError(f"{name} range is reversed: lo={out[0]} > hi={out[1]}")
    return out[0], out[1]


STATS: tuple[str, ...] = ("entropy", "mean", "variance")


def batch_widths(seqs: Iterable[Any]) -> dict[str, float]:
    """The widest ``<stat>_max - <stat>_min`` of a batch of sequences, per stat."""
    out = {st: 0.0 for st in STATS}
    for s in seqs:
        for st in STATS:
            lo = getattr(s, f"{st}_min")
            if lo is None:  # no entropy (intensive field)
                continue
            w = getattr(s, f"{st}_max") - lo
            if w > out[st]:
                out[st] = w
    return out


def seek_margin(lo: float) -> float:
    """Rounding margin of the redundant overlap seek bound (both backends use it).

    Overlap with ``[lo, hi]`` needs ``<stat>_max >= lo``; every catalogued sequence has
    ``<stat>_max - <stat>_min <= W`` where W is the widest range ever registered (kept by the
    backend and never shrunk), hence ``<stat>_min >= lo - W``. Adding that redundant predicate
    turns the overlap test into an index range seek on ``<stat>_min`` over
    ``[lo - W - margin, hi]`` instead of a half-open scan. The bound is written
    ``(lo - seek_margin(lo)) - 1.000000001 * W`` so float rounding can only widen it; the exact
    overlap predicates still decide what matches.
    """
    return 1e-9 * (abs(lo) + 1.0)


def check_limit(limit: int | None) -> int | None:
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(plain(limit), int) or limit < 0:
        raise ValueError(f"limit must be a non-negative int or None, got {limit!r}")
    return int(limit)


def check_domains(domains: str | Iterable[str] | None) -> list[str] | None:
    if domains is None:
        return None
    if isinstance(domains, str):
        return [domains]
    out = list(domains)
    if not all(isinstance(d, str) for d in out):
        raise ValueError(f"domains must be strings, got {out!r}")
    return out


# ------------------------------------------------------------------------------------ records


def _finite(what: str, **values: Any) -> None:
    bad = {k: v for k, v in values.items()
           if isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isfinite(v)}
    if bad:
        raise SchemaError(f"{what}: values must be finite, got {bad}")

R = TypeVar("R", bound="_Record")
_FIELD_NAMES: dict[type, frozenset[str]] = {}


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


# ------------------------------------------------------------------------------------ lineage


@dataclass(frozen=True)
class LineageNode:
    """A node of a lineage graph. ``properties`` is the record's ``to_dict()`` (agents:
    ``{"version": ...}`` / ``{"name": ...}``)."""

    id: str
    kind: str
    key: str
    properties: dict[str, Any]

    @property
    def prov(self) -> str:
        """The PROV class: ``"entity"``, ``"activity"`` or ``"agent"``."""
        return PROV_CLASS[self.kind]


@dataclass(frozen=True)
class LineageEdge:
    """``src -rel-> dst`` between node ids; ``properties`` e.g. ``{"operation": ...}``."""

    src: str
    rel: str
    dst: str
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class Lineage:
    """The full upstream lineage of ``root``: every node reached and the edges between them."""

    root: str
    nodes: dict[str, LineageNode]
    edges: list[LineageEdge]

    def of_kind(self, kind: str) -> list[LineageNode]:
        return sorted((n for n in self.nodes.values() if n.kind == kind), key=lambda n: n.id)

    def has_edge(self, src: str, rel: str, dst: str) -> bool:
        return any(e.src == src and e.rel == rel and e.dst == dst for e in self.edges)

    def edge(self, src: str, rel: str, dst: str) -> LineageEdge:
        for e in self.edges:
            if e.src == src and e.rel == rel and e.dst == dst:
                return e
        raise KeyError(f"no edge {src} -{rel}-> {dst}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for the CLI and for PROV-JSON-like export)."""
        return {"root": self.root,
                "nodes": [{"id": n.id, "kind": n.kind, "prov": n.prov, "key": n.key,
                           "properties": n.properties} for n in sorted(self.nodes.values(),
                                                                       key=lambda n: n.id)],
                "edges": [{"src": e.src, "rel": e.rel, "dst": e.dst, "properties": e.properties}
                          for e in self.edges]}


def sort_edges(edges: Iterable[LineageEdge]) -> list[LineageEdge]:
    return sorted(edges, key=lambda e: (e.src, e.rel, e.dst))


def agent_properties(kind: str, key: str) -> dict[str, Any]:
    return {"version": key} if kind == "CodeVersion" else {"name": key}


# ------------------------------------------------------------------------------------ protocol


@runtime_checkable
class Catalog(Protocol):
    """What every catalog backend offers. See the module docstring for semantics."""

    # registration ---------------------------------------------------------------------------
    def register_run(self, run: GenerationRun | Mapping[str, Any]) -> None:
        """Insert or replace a generation or import run (by its ``kind``) and its agent edges,
        and link the sequences that name it (idempotent)."""

    def register_sequences(self, seqs: Iterable[Sequence | Mapping[str, Any]],
                           timesteps: Iterable[TimeStep | Mapping[str, Any]] = (),
                           arrays: Iterable[ArrayRecord | Mapping[str, Any]] = ()) -> None:
        """Insert or replace a batch of sequences with their time steps and arrays, atomically."""

    def remove_sequences(self, keys: Iterable[str]) -> int:
        """Remove sequences with their time steps, arrays and edges; returns how many existed."""

    def register_dataset_version(self, version_id: str, query: Mapping[str, Any],
                                 split: Mapping[str, Any], sequence_keys: Iterable[str], *,
                                 created: str | None = None,
                                 checksums: Mapping[str, str] | None = None) -> DatasetVersion:
        """Register the selection; ``checksums`` (key -> :func:`sequence_checksum`) pins the data
        it was trained on, else they are computed from the catalogued arrays."""

    def register_training_run(self, run_id: str, config: Mapping[str, Any],
                              dataset_version_id: str, *, code_version: str | None = None,
                              host: str | None = None, started: str | None = None,
                              finished: str | None = None) -> TrainingRun:
        ...

    def register_checkpoint(self, ckpt_id: str, training_run_id: str, step: int,
                            metrics: Mapping[str, Any], path: str, *,
                            created: str | None = None) -> Checkpoint:
        ...

    # queries ----------------------------------------------------------------------------------
    def find_sequences(self, domains: str | Iterable[str] | None = None, run_id: str | None = None,
                       level: int | None = None, entropy: Range | None = None,
                       mean: Range | None = None, variance: Range | None = None,
                       perturbation: str | None = None, limit: int | None = None
                       ) -> list[Sequence]:
        ...

    def find_timesteps(self, domains: str | Iterable[str] | None = None,
                       run_id: str | None = None, level: int | None = None,
                       entropy: Range | None = None, mean: Range | None = None,
                       variance: Range | None = None, perturbation: str | None = None,
                       limit: int | None = None, sequence_keys: Iterable[str] | None = None
                       ) -> list[TimeStep]:
        ...

    def get_sequence(self, key: str) -> Sequence | None: ...
    def get_run(self, run_id: str) -> GenerationRun | None: ...
    def get_timesteps(self, sequence_key: str) -> list[TimeStep]: ...
    def get_arrays(self, sequence_key: str) -> list[ArrayRecord]: ...
    def get_dataset_version(self, version_id: str) -> DatasetVersion | None: ...
    def get_training_run(self, run_id: str) -> TrainingRun | None: ...
    def get_checkpoint(self, ckpt_id: str) -> Checkpoint | None: ...
    def list_domains(self) -> list[str]: ...
    def count(self) -> int: ...
    def sequence_keys(self) -> list[str]: ...
    def lineage(self, node: str) -> Lineage: ...
    def generation_runs_for(self, node: str) -> list[GenerationRun]: ...

    def store_sync(self) -> StoreSync | None:
        """What this catalog last applied of its store's change log; None if never synced."""

    def commit_sync(self, expect_version: int | None, state: StoreSync, *,
                    runs: Iterable[GenerationRun | Mapping[str, Any]] = (),
                    seqs: Iterable[Sequence | Mapping[str, Any]] = (),
                    timesteps: Iterable[TimeStep | Mapping[str, Any]] = (),
                    arrays: Iterable[ArrayRecord | Mapping[str, Any]] = (),
                    remove: Iterable[str] = ()) -> bool:
        """In one transaction, if the sync version is still ``expect_version`` (None: never
        synced): register ``runs``, remove the sequences ``remove``, register ``seqs`` with
        their parts, and record ``state`` (its version becomes the old one + 1). False, with
        nothing written, when another process committed in between."""

    def close(self) -> None: ...
    def __enter__(self) -> Catalog: ...
    def __exit__(self, *exc: object) -> None: ...


class ClosesOnExit:
    """Context-manager support shared by the backends: ``with`` closes the catalog."""

    def close(self) -> None:  # pragma: no cover - each backend defines it
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ------------------------------------------------------------------------------------ shared logic


@dataclass
class Batch:
    """A validated registration batch (what both backends write)."""

    seqs: list[Sequence]
    timesteps: list[TimeStep]
    arrays: list[ArrayRecord]

    @property
    def seq_keys(self) -> set[str]:
        return {s.key for s in self.seqs}

    def child_keys_by_sequence(self) -> dict[str, list[str]]:
        """For each sequence of the batch: the keys of its parts given in this batch."""
        out: dict[str, list[str]] = {s.key: [] for s in self.seqs}
        parts: list[TimeStep | ArrayRecord] = [*self.timesteps, *self.arrays]
        for c in parts:
            if c.sequence_key in out:
                out[c.sequence_key].append(c.key)
        return out

    def outside_sequence_keys(self) -> set[str]:
        """Sequences referred to by parts of this batch but not registered in it."""
        mine = self.seq_keys
        parts: list[TimeStep | ArrayRecord] = [*self.timesteps, *self.arrays]
        return {c.sequence_key for c in parts} - mine

    def outside_derived_keys(self) -> set[str]:
        """Arrays named in ``derived_from`` that are not in this batch."""
        mine = {a.key for a in self.arrays}
        return {a.derived_from for a in self.arrays if a.derived_from is not None} - mine


def make_batch(seqs: Iterable[Any], timesteps: Iterable[Any], arrays: Iterable[Any],
               check: bool) -> Batch:
    """Validate and de-duplicate a batch (the last record of a repeated key wins)."""
    def dedup(items: list[R]) -> list[R]:
        return list({r.key: r for r in items}.values())  # type: ignore[attr-defined]
    b = Batch(dedup([Sequence.coerce(s, check=check) for s in seqs]),
              dedup([TimeStep.coerce(t, check=check) for t in timesteps]),
              derivation_order(dedup([ArrayRecord.coerce(a, check=check) for a in arrays])))
    return b


def sync_batch(runs: Iterable[Any], seqs: Iterable[Any], timesteps: Iterable[Any],
               arrays: Iterable[Any], remove: Iterable[str], check: bool
               ) -> tuple[list[GenerationRun], Batch, list[str]]:
    """The validated parts of a ``commit_sync`` call: runs, the registration batch, and the keys
    to remove (those registered again in the batch are not removed)."""
    b = make_batch(seqs, timesteps, arrays, check)
    return ([run_record(r, check=check) for r in runs], b,
            [k for k in dict.fromkeys(remove) if k not in b.seq_keys])


def derivation_order(arrays: list[ArrayRecord]) -> list[ArrayRecord]:
    """Arrays ordered so that a ``derived_from`` source in the batch comes before the arrays
    derived from it (stable otherwise); SchemaError on a derivation cycle."""
    by_key = {a.key: a for a in arrays}
    depth: dict[str, int] = {}
    for a in arrays:
        chain: list[str] = []
        k: str | None = a.key
        while k is not None and k in by_key and k not in depth:
            if k in chain:
                raise SchemaError(f"derivation cycle among arrays: {' -> '.join(chain + [k])}")
            chain.append(k)
            k = by_key[k].derived_from
        d = depth.get(k, -1) if k is not None and k in by_key else -1
        for ck in reversed(chain):
            d += 1
            depth[ck] = d
    return sorted(arrays, key=lambda a: depth[a.key])


def missing_message(what: str, keys: Iterable[str], context: str = "") -> str:
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return f"{len(keys)} {what} not in the catalog{context}: {shown}"


def chunks(items: Seq[Any], n: int) -> Iterable[Seq[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]
