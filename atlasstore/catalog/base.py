"""The catalog contract (records, lineage, the :class:`~atlasstore.catalog.protocol.Catalog`
protocol) and the helpers both backends share: node ids, JSON values, range and limit checks.

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

import json
import math
from collections.abc import Iterable, Mapping
from typing import Any

from atlasstore.errors import CatalogError

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


_FIELD_NAMES: dict[type, frozenset[str]] = {}


# ------------------------------------------------------------------------------------ lineage


# ------------------------------------------------------------------------------------ protocol


# ------------------------------------------------------------------------------------ shared logic


