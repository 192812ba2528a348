"""Neo4j catalog: the shared team catalog and lineage graph, over Bolt with the official driver.

Connection
----------
``Neo4jCatalog(uri=None, user=None, password=None, database=None)`` reads ``NEO4J_URI``,
``NEO4J_USER``, ``NEO4J_PASSWORD`` and ``ATLAS_NEO4J_DATABASE`` from the environment for anything
not given (``eval "$(scripts/neo4j env)"`` sets them for the development server). There is no
default password in code; without one the driver connects without authentication. The driver's
``verify_connectivity()`` runs at open: an unreachable server or refused credentials raise
:class:`CatalogUnavailable` naming the URI (credentials stripped) and never the password.

Graph model
-----------
One label per kind (``Sequence``, ``TimeStep``, ``Array``, ``SourceFile``, ``DatasetVersion``,
``Checkpoint``, ``GenerationRun``, ``ImportRun``, ``TrainingRun``, ``CodeVersion``, ``Host``),
each node keyed by a ``key``
property under a uniqueness constraint (created with ``IF NOT EXISTS`` at open, so opening is
idempotent and concurrent opens are safe), range indexes on the filter properties. Relationship
types as in :mod:`atlasstore.catalog.base`. Properties that Neo4j cannot hold natively (config,
counts, query, split, metrics, checksums dicts, a sequence's ``sources`` list) are canonical
JSON strings; ``ArrayRecord.stats`` is flattened to ``stats_mean`` ... ``stats_entropy``; a
missing value (no entropy, no run) is an absent property. The store-sync state is one
``AtlasStoreSync`` node, updated under the documented lost-update guard (its lock is taken with
a write before its version is read, in the transaction that applies the changes).

Layout 2 (this code) reads graphs of layout 1 as they are (absent ``kind`` properties read as
"generate"), and marks them 2 on open so older code refuses them.

Safety and performance
----------------------
* Parameters only: every Cypher text in this module is a constant (filters are composed from a
  fixed table of constant fragments; labels and relationship types are literals). No value ever
  becomes part of a query string.
* Writes are batched ``UNWIND $rows AS r MERGE ...`` statements (``batch_size`` rows per
  statement) inside one managed transaction per public call (``session.execute_write``: retried
  on transient errors such as deadlocks or leader changes; every write is an idempotent MERGE so a
  retry is harmless). Reads use ``session.execute_read``.
* Lineage is one read query: the forward closure over ``wasDerivedFrom|wasGeneratedBy|used|
  wasAssociatedWith`` (variable-length, distinct endpoints), plus the structural parent (the
  Sequence) of every part reached and *its* forward closure, plus the edges among those nodes.
  This is exact for the catalog's model, where only Arrays and TimeSteps are parts, only
  Sequences have parts, and nothing upstream of a Sequence is a part; the SQLite backend computes
  the same closure with a general recursive CTE, and the contract tests compare them.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from atlasstore.catalog.base import (
    RESOLVE_ORDER,
    ArrayRecord,
    Checkpoint,
    ClosesOnExit,
    DatasetVersion,
    GenerationRun,
    ImportRun,
    Lineage,
    LineageEdge,
    LineageNode,
    Range,
    Sequence,
    SourceFile,
    StoreSync,
    TimeStep,
    TrainingRun,
    agent_properties,
    batch_widths,
    check_domains,
    check_limit,
    check_range,
    chunks,
    dumps,
    make_batch,
    missing_message,
    node_id,
    run_record,
    seek_margin,
    sequence_checksum,
    sort_edges,
    split_node_id,
    sync_batch,
)
from atlasstore.errors import CatalogError, CatalogNotFound, CatalogUnavailable
from atlasstore.io.provenance import utc_now

SCHEMA_VERSION = 2
DEFAULT_BATCH_SIZE = 5000
#: Bolt URI schemes (routing ``neo4j`` or direct ``bolt``; ``+s`` TLS, ``+ssc`` self-signed TLS)
BOLT_SCHEMES = ("neo4j://", "neo4j+s://", "neo4j+ssc://", "bolt://", "bolt+s://", "bolt+ssc://")

# --------------------------------------------------------------------------------- schema

_SCHEMA_STATEMENTS = (
    "CREATE CONSTRAINT atlas_sequence_key IF NOT EXISTS FOR (n:Sequence) REQUIRE n.key IS UNIQUE",
    "CREATE CONSTRAINT atlas_timestep_key IF NOT EXISTS FOR (n:TimeStep) REQUIRE n.key IS UNIQUE",
    "CREATE CONSTRAINT atlas_array_key IF NOT EXISTS FOR (n:Array) REQUIRE n.key IS UNIQUE",
    "CREATE CONSTRAINT atlas_datasetversion_key IF NOT EXISTS "
    "FOR (n:DatasetVersion) REQUIRE n.key IS UNIQUE",
    "CREATE CONSTRAINT atlas_checkpoint_key IF NOT EXISTS FOR (n:Checkpoint) REQUIRE n.key IS UNIQUE",
    "CREATE CONSTRAINT atlas_generationrun_key IF NOT EXISTS "
    "FOR (n:GenerationRun) REQUIRE n.key IS UNIQUE",
    "CREATE CONSTRAINT atlas_trainingrun_key IF NOT EXISTS FOR (n:TrainingRun) REQUIRE n.key IS UNIQUE",
    "CREATE CONSTRAINT atlas_codeversion_key IF NOT EXISTS FOR (n:CodeVersion) REQUIRE n.key IS UNIQUE",
    "CREATE CONSTRAINT atlas_host_key IF NOT EXISTS FOR (n:Host) REQUIRE n.key IS UNIQUE",
    "CREATE CONSTRAINT atlas_meta_key IF NOT EXISTS FOR (n:AtlasCatalogMeta) REQUIRE n.key IS UNIQUE",
    "CREATE CONSTRAINT atlas_importrun_key IF NOT EXISTS FOR (n:ImportRun) REQUIRE n.key IS UNIQUE",
    "CREATE CONSTRAINT atlas_sourcefile_key IF NOT EXISTS FOR (n:SourceFile) REQUIRE n.key IS UNIQUE",
    "CREATE CONSTRAINT atlas_storesync_key IF NOT EXISTS "
    "FOR (n:AtlasStoreSync) REQUIRE n.key IS UNIQUE",
    # Overlap filters seek on <stat>_min (see base.seek_margin), so only the *_min are indexed;
    # parts are reached from their sequence through hasTimeStep/hasArray, not by an index.
    "CREATE INDEX atlas_sequence_domain_entropy IF NOT EXISTS "
    "FOR (n:Sequence) ON (n.domain, n.entropy_min)",
    "CREATE INDEX atlas_sequence_domain_mean IF NOT EXISTS "
    "FOR (n:Sequence) ON (n.domain, n.mean_min)",
    "CREATE INDEX atlas_sequence_domain IF NOT EXISTS FOR (n:Sequence) ON (n.domain)",
    "CREATE INDEX atlas_sequence_run IF NOT EXISTS FOR (n:Sequence) ON (n.run_id)",
    "CREATE INDEX atlas_sequence_entropy_min IF NOT EXISTS FOR (n:Sequence) ON (n.entropy_min)",
    "CREATE INDEX atlas_sequence_mean_min IF NOT EXISTS FOR (n:Sequence) ON (n.mean_min)",
    "CREATE INDEX atlas_sequence_variance_min IF NOT EXISTS FOR (n:Sequence) ON (n.variance_min)",
    "CREATE INDEX atlas_timestep_entropy IF NOT EXISTS FOR (n:TimeStep) ON (n.entropy)",
    "CREATE INDEX atlas_timestep_mean IF NOT EXISTS FOR (n:TimeStep) ON (n.mean)",
    "CREATE INDEX atlas_timestep_variance IF NOT EXISTS FOR (n:TimeStep) ON (n.variance)",
)
_AWAIT_INDEXES = "CALL db.awaitIndexes($seconds)"
# Widen the recorded stat widths when this batch has a wider range (takes the meta node's lock
# only then, so concurrent writers do not serialise on it in the common case).
_GROW_WIDTHS = """
OPTIONAL MATCH (m:AtlasCatalogMeta {key: 'catalog'})
WITH m WHERE m IS NULL OR coalesce(m.width_entropy, -1.0) < $entropy
          OR coalesce(m.width_mean, -1.0) < $mean OR coalesce(m.width_variance, -1.0) < $variance
MERGE (n:AtlasCatalogMeta {key: 'catalog'})
SET n.width_entropy = CASE WHEN coalesce(n.width_entropy, -1.0) < $entropy
                           THEN $entropy ELSE n.width_entropy END,
    n.width_mean = CASE WHEN coalesce(n.width_mean, -1.0) < $mean
                        THEN $mean ELSE n.width_mean END,
    n.width_variance = CASE WHEN coalesce(n.width_variance, -1.0) < $variance
                            THEN $variance ELSE n.width_variance END
"""
_META = """
MERGE (m:AtlasCatalogMeta {key: 'catalog'})
ON CREATE SET m.schema_version = $version, m.created = $now
WITH m, m.schema_version AS found
SET m.schema_version = CASE WHEN found < $version THEN $version ELSE found END
RETURN found AS version
"""

# --------------------------------------------------------------------------------- writes

# Agents live only through their edges: one left without any after a change is deleted. A run
# registered under the other kind is replaced; the sequences naming the run get their edge.
# (One constant text per label: labels cannot be parameters.)
_MERGE_RUN_TEMPLATE = """
OPTIONAL MATCH (o:OTHER_LABEL {key: $props.key})
OPTIONAL MATCH (o)-[:wasAssociatedWith]->(op)
DETACH DELETE o
WITH collect(op) AS oprevs
MERGE (g:RUN_LABEL {key: $props.key})
SET g = $props
WITH g, oprevs
OPTIONAL MATCH (g)-[old:wasAssociatedWith]->(prev)
DELETE old
WITH g, oprevs, collect(prev) AS gprevs
WITH g, oprevs + gprevs AS prevs
MERGE (c:CodeVersion {key: $code_version})
MERGE (h:Host {key: $host})
MERGE (g)-[:wasAssociatedWith]->(c)
MERGE (g)-[:wasAssociatedWith]->(h)
WITH g, prevs
CALL (g) {
  MATCH (s:Sequence {run_id: g.key})
  MERGE (s)-[:wasGeneratedBy]->(g)
}
WITH prevs
UNWIND prevs AS p
WITH DISTINCT p WHERE NOT EXISTS { (p)--() }
DELETE p
"""
_MERGE_RUN = {label: _MERGE_RUN_TEMPLATE.replace("OTHER_LABEL", other).replace("RUN_LABEL", label)
              for label, other in (("GenerationRun", "ImportRun"), ("ImportRun", "GenerationRun"))}
_MISSING = {  # keys (from $keys) with no node of that label
    "Sequence": "UNWIND $keys AS k OPTIONAL MATCH (n:Sequence {key: k}) "
                "WITH k, n WHERE n IS NULL RETURN collect(k) AS missing",
    "Array": "UNWIND $keys AS k OPTIONAL MATCH (n:Array {key: k}) "
             "WITH k, n WHERE n IS NULL RETURN collect(k) AS missing",
    "DatasetVersion": "UNWIND $keys AS k OPTIONAL MATCH (n:DatasetVersion {key: k}) "
                      "WITH k, n WHERE n IS NULL RETURN collect(k) AS missing",
    "TrainingRun": "UNWIND $keys AS k OPTIONAL MATCH (n:TrainingRun {key: k}) "
                   "WITH k, n WHERE n IS NULL RETURN collect(k) AS missing",
}
_DELETE_STALE_PARTS = """
UNWIND $rows AS r
MATCH (s:Sequence {key: r.key})-[:hasTimeStep|hasArray]->(c)
WHERE NOT c.key IN r.keep
DETACH DELETE c
"""
# Rows are sent as lists (column order: the *_COLUMNS tuples below), not maps: the driver's
# pure-Python PackStream encoder costs per packed value, and lists do not repeat the keys.
_MERGE_SEQUENCES = """
UNWIND $rows AS r
MERGE (s:Sequence {key: r[0]})
SET s = {key: r[0], domain: r[1], sequence_id: r[2], run_id: r[3], seed: r[4], pattern: r[5],
         n_steps: r[6], shape: r[7], levels: r[8], perturbation_kinds: r[9],
         entropy_min: r[10], entropy_max: r[11], mean_min: r[12], mean_max: r[13],
         variance_min: r[14], variance_max: r[15], created: r[16], status: r[17], kind: r[18],
         source: r[19], sources: r[20]}
WITH s, r
OPTIONAL MATCH (s)-[old:wasGeneratedBy]->()
DELETE old
WITH DISTINCT s, r
OPTIONAL MATCH (g1:GenerationRun {key: r[3]})
OPTIONAL MATCH (g2:ImportRun {key: r[3]})
WITH s, coalesce(g1, g2) AS g
WHERE g IS NOT NULL
MERGE (s)-[:wasGeneratedBy]->(g)
"""
# A sequence's source files: its old edges go (the files they led to are returned, to drop the
# ones nothing derives from any more), the new ones come.
_DETACH_SOURCES = """
UNWIND $keys AS k
MATCH (:Sequence {key: k})-[d:wasDerivedFrom]->(f:SourceFile)
DELETE d
RETURN collect(DISTINCT f.key) AS files
"""
_MERGE_SOURCES = """
UNWIND $rows AS r
MATCH (s:Sequence {key: r[0]})
MERGE (f:SourceFile {key: r[1]})
SET f = {key: r[1], uri: r[2], size: r[3], sha256: r[4], format: r[5]}
MERGE (s)-[d:wasDerivedFrom]->(f)
SET d = CASE WHEN r[6] IS NULL THEN {} ELSE {member: r[6]} END
"""
_DROP_ORPHAN_SOURCES = """
UNWIND $keys AS k
MATCH (f:SourceFile {key: k})
WHERE NOT EXISTS { (f)--() }
DELETE f
"""
_MERGE_TIMESTEPS = """
UNWIND $rows AS r
MATCH (s:Sequence {key: r[1]})
MERGE (t:TimeStep {key: r[0]})
SET t = {key: r[0], sequence_key: r[1], t: r[2], mean: r[3], variance: r[4], entropy: r[5],
         sum: r[6], perturbation_kinds: r[7]}
MERGE (s)-[:hasTimeStep]->(t)
"""
# One statement per chunk: the array, its hasArray edge, and its wasDerivedFrom edge (replacing
# a different one). Cypher runs clause by clause, so every array of the chunk exists before the
# derivation MATCH looks for its source.
_MERGE_ARRAYS = """
UNWIND $rows AS r
MATCH (s:Sequence {key: r[1]})
MERGE (a:Array {key: r[0]})
SET a = {key: r[0], sequence_key: r[1], level: r[2], field: r[3], shape: r[4], dtype: r[5],
         checksum: r[6], nbytes_stored: r[7], stats_mean: r[8], stats_variance: r[9],
         stats_min: r[10], stats_max: r[11], stats_entropy: r[12], derived_from: r[13],
         operation: r[14]}
MERGE (s)-[:hasArray]->(a)
WITH a, r
OPTIONAL MATCH (a)-[old:wasDerivedFrom]->(prev)
WHERE r[13] IS NULL OR prev.key <> r[13]
DELETE old
WITH DISTINCT a, r
WHERE r[13] IS NOT NULL
MATCH (src:Array {key: r[13]})
MERGE (a)-[d:wasDerivedFrom]->(src)
SET d.operation = r[14]
"""
_REMOVE_SEQUENCES = """
UNWIND $keys AS k
MATCH (s:Sequence {key: k})
CALL (s) {
  MATCH (s)-[:hasTimeStep|hasArray]->(c)
  DETACH DELETE c
}
DETACH DELETE s
RETURN count(*) AS n
"""
_ARRAY_CHECKSUMS = """
UNWIND $keys AS k
MATCH (:Sequence {key: k})-[:hasArray]->(a:Array)
RETURN k AS key, collect([a.level, a.field, a.checksum]) AS arrays
"""
_MERGE_DATASET = """
MERGE (d:DatasetVersion {key: $props.key})
SET d = $props
WITH d
OPTIONAL MATCH (d)-[old:wasDerivedFrom]->()
DELETE old
"""
_LINK_DATASET = """
MATCH (d:DatasetVersion {key: $key})
UNWIND $keys AS k
MATCH (s:Sequence {key: k})
MERGE (d)-[:wasDerivedFrom]->(s)
"""
_MERGE_TRAINING = """
MATCH (d:DatasetVersion {key: $props.dataset_version_id})
MERGE (t:TrainingRun {key: $props.key})
SET t = $props
WITH t, d
OPTIONAL MATCH (t)-[old:used|wasAssociatedWith]->(prev)
DELETE old
WITH t, d, collect(prev) AS prevs
MERGE (t)-[:used]->(d)
FOREACH (_ IN CASE WHEN $code_version IS NULL THEN [] ELSE [1] END |
  MERGE (c:CodeVersion {key: $code_version})
  MERGE (t)-[:wasAssociatedWith]->(c))
FOREACH (_ IN CASE WHEN $host IS NULL THEN [] ELSE [1] END |
  MERGE (h:Host {key: $host})
  MERGE (t)-[:wasAssociatedWith]->(h))
WITH t, prevs
CALL (prevs) {
  UNWIND prevs AS p
  WITH p WHERE (p:CodeVersion OR p:Host) AND NOT EXISTS { (p)--() }
  DELETE p
}
RETURN t.key AS key
"""
# The store-sync state: the lock is taken by a write before the version is read (Neo4j's
# lost-update guard), and released when the transaction commits or rolls back.
_SYNC_LOCK = """
MERGE (m:AtlasStoreSync {key: 'store'})
SET m._LOCK_ = true
RETURN m.version AS version
"""
_SYNC_SET = """
MATCH (m:AtlasStoreSync {key: 'store'})
SET m.store_id = $store_id, m.position = $position, m.pending = $pending, m.version = $version,
    m.updated = $updated
REMOVE m._LOCK_
"""
_SYNC_GET = """
MATCH (m:AtlasStoreSync {key: 'store'})
WHERE m.version IS NOT NULL
RETURN m.store_id AS store_id, m.position AS position, m.pending AS pending,
       m.version AS version, m.updated AS updated
"""
_MERGE_CHECKPOINT = """
MATCH (t:TrainingRun {key: $props.training_run_id})
MERGE (c:Checkpoint {key: $props.key})
SET c = $props
WITH c, t
OPTIONAL MATCH (c)-[old:wasGeneratedBy]->()
DELETE old
WITH DISTINCT c, t
MERGE (c)-[:wasGeneratedBy]->(t)
RETURN c.key AS key
"""

# --------------------------------------------------------------------------------- reads

# Constant filter fragments; find_* joins the ones whose filter is given (values are parameters).
# The *_seek fragments are redundant lower bounds on <stat>_min that make overlap tests index
# range seeks (see base.seek_margin: the same formula). They need _WIDTHS_HEAD.
_SEQ_FILTERS = {
    "entropy_seek": "s.entropy_min >= $entropy_seek - 1.000000001 * w_entropy",
    "mean_seek": "s.mean_min >= $mean_seek - 1.000000001 * w_mean",
    "variance_seek": "s.variance_min >= $variance_seek - 1.000000001 * w_variance",
    "domains": "s.domain IN $domains",
    "run_id": "s.run_id = $run_id",
    "level": "$level IN s.levels",
    "sequence_keys": "s.key IN $sequence_keys",
    "entropy_lo": "s.entropy_max >= $entropy_lo", "entropy_hi": "s.entropy_min <= $entropy_hi",
    "mean_lo": "s.mean_max >= $mean_lo", "mean_hi": "s.mean_min <= $mean_hi",
    "variance_lo": "s.variance_max >= $variance_lo", "variance_hi": "s.variance_min <= $variance_hi",
    "perturbation": "$perturbation IN s.perturbation_kinds",
}
_TS_FILTERS = {
    "entropy_lo": "ts.entropy >= $entropy_lo", "entropy_hi": "ts.entropy <= $entropy_hi",
    "mean_lo": "ts.mean >= $mean_lo", "mean_hi": "ts.mean <= $mean_hi",
    "variance_lo": "ts.variance >= $variance_lo", "variance_hi": "ts.variance <= $variance_hi",
    "perturbation": "$perturbation IN ts.perturbation_kinds",
}
_FIND_SEQ_HEAD = "MATCH (s:Sequence)"
_WIDTHS_HEAD = """OPTIONAL MATCH (m:AtlasCatalogMeta {key: 'catalog'})
WITH coalesce(m.width_entropy, 1.0e300) AS w_entropy, coalesce(m.width_mean, 1.0e300) AS w_mean,
     coalesce(m.width_variance, 1.0e300) AS w_variance
MATCH (s:Sequence)"""
_FIND_SEQ_TAIL = "WITH s ORDER BY s.key"
# One record holding all rows as lists (column order of _seq_row): far fewer PackStream values
# and Bolt messages than one map per record.
_FIND_SEQ_RETURN = """RETURN collect([s.key, s.domain, s.sequence_id, s.run_id, s.seed, s.pattern,
  s.n_steps, s.shape, s.levels, s.perturbation_kinds, s.entropy_min, s.entropy_max, s.mean_min,
  s.mean_max, s.variance_min, s.variance_max, s.created, s.status, s.kind, s.source,
  s.sources]) AS rows"""
_FIND_TS_HEAD = "MATCH (s:Sequence)-[:hasTimeStep]->(ts:TimeStep)"
_FIND_TS_TAIL = "WITH ts ORDER BY ts.sequence_key, ts.t"
_FIND_TS_RETURN = """RETURN collect([ts.key, ts.sequence_key, ts.t, ts.mean, ts.variance, ts.entropy,
  ts.sum, ts.perturbation_kinds]) AS rows"""
_WHERE = "WHERE"
_AND = " AND "
_LIMIT = "LIMIT $limit"

_GET = {
    "Sequence": "MATCH (n:Sequence {key: $key}) RETURN properties(n) AS p",
    "GenerationRun": "MATCH (n:GenerationRun {key: $key}) RETURN properties(n) AS p",
    "ImportRun": "MATCH (n:ImportRun {key: $key}) RETURN properties(n) AS p",
    "DatasetVersion": "MATCH (n:DatasetVersion {key: $key}) RETURN properties(n) AS p",
    "TrainingRun": "MATCH (n:TrainingRun {key: $key}) RETURN properties(n) AS p",
    "Checkpoint": "MATCH (n:Checkpoint {key: $key}) RETURN properties(n) AS p",
}
_GET_TIMESTEPS = ("MATCH (:Sequence {key: $key})-[:hasTimeStep]->(n:TimeStep) "
                  "WITH n ORDER BY n.t RETURN properties(n) AS p")
_GET_ARRAYS = ("MATCH (:Sequence {key: $key})-[:hasArray]->(n:Array) "
               "WITH n ORDER BY n.level DESC, n.field RETURN properties(n) AS p")
_LIST_DOMAINS = "MATCH (s:Sequence) RETURN DISTINCT s.domain AS d ORDER BY d"
_COUNT = "MATCH (s:Sequence) RETURN count(s) AS n"
_SEQUENCE_KEYS = "MATCH (s:Sequence) RETURN s.key AS k ORDER BY k"

_EXISTS = """
RETURN EXISTS { MATCH (:Array {key: $key}) } AS Array,
       EXISTS { MATCH (:TimeStep {key: $key}) } AS TimeStep,
       EXISTS { MATCH (:Sequence {key: $key}) } AS Sequence,
       EXISTS { MATCH (:SourceFile {key: $key}) } AS SourceFile,
       EXISTS { MATCH (:ImportRun {key: $key}) } AS ImportRun,
       EXISTS { MATCH (:Checkpoint {key: $key}) } AS Checkpoint,
       EXISTS { MATCH (:DatasetVersion {key: $key}) } AS DatasetVersion,
       EXISTS { MATCH (:TrainingRun {key: $key}) } AS TrainingRun,
       EXISTS { MATCH (:GenerationRun {key: $key}) } AS GenerationRun,
       EXISTS { MATCH (:CodeVersion {key: $key}) } AS CodeVersion,
       EXISTS { MATCH (:Host {key: $key}) } AS Host
"""
_START = {  # the lineage root, one constant per label
    "Sequence": "MATCH (start:Sequence {key: $key})",
    "TimeStep": "MATCH (start:TimeStep {key: $key})",
    "Array": "MATCH (start:Array {key: $key})",
    "DatasetVersion": "MATCH (start:DatasetVersion {key: $key})",
    "Checkpoint": "MATCH (start:Checkpoint {key: $key})",
    "GenerationRun": "MATCH (start:GenerationRun {key: $key})",
    "ImportRun": "MATCH (start:ImportRun {key: $key})",
    "SourceFile": "MATCH (start:SourceFile {key: $key})",
    "TrainingRun": "MATCH (start:TrainingRun {key: $key})",
    "CodeVersion": "MATCH (start:CodeVersion {key: $key})",
    "Host": "MATCH (start:Host {key: $key})",
}
# The upstream closure of `start` into `ns` (see the module docstring).
_CLOSURE = """
CALL (start) {
  MATCH (start)-[:wasDerivedFrom|wasGeneratedBy|used|wasAssociatedWith*0..]->(m)
  RETURN collect(DISTINCT m) AS fwd
}
CALL (fwd) {
  UNWIND fwd AS m
  MATCH (p:Sequence)-[:hasArray|hasTimeStep]->(m)
  RETURN collect(DISTINCT p) AS parents
}
CALL (parents) {
  UNWIND parents AS p
  MATCH (p)-[:wasDerivedFrom|wasGeneratedBy|used|wasAssociatedWith*0..]->(m)
  RETURN collect(DISTINCT m) AS fwd2
}
CALL (fwd, fwd2) {
  UNWIND fwd + fwd2 AS n
  RETURN collect(DISTINCT n) AS ns
}
"""
_LINEAGE_TAIL = """
CALL (ns) {
  UNWIND ns AS u
  MATCH (u)-[r:wasDerivedFrom|wasGeneratedBy|used|wasAssociatedWith]->(v)
  RETURN collect({src_kind: labels(u)[0], src: u.key, rel: type(r), dst_kind: labels(v)[0],
                  dst: v.key, props: properties(r)}) AS e1
}
CALL (ns) {
  UNWIND ns AS v
  MATCH (u:Sequence)-[r:hasArray|hasTimeStep]->(v)
  RETURN collect({src_kind: 'Sequence', src: u.key, rel: type(r), dst_kind: labels(v)[0],
                  dst: v.key, props: properties(r)}) AS e2
}
RETURN [n IN ns | {kind: labels(n)[0], props: properties(n)}] AS nodes, e1 + e2 AS edges
"""
_GENERATION_RUNS_TAIL = """
UNWIND ns AS n
WITH n WHERE n:GenerationRun OR n:ImportRun
RETURN properties(n) AS p ORDER BY p.key
"""

# --------------------------------------------------------------------------------- conversion

_FLOAT_SEQ = ("entropy_min", "entropy_max", "mean_min", "mean_max", "variance_min", "variance_max")


def _run_props(r: GenerationRun) -> dict[str, Any]:
    return {"key": r.run_id, "run_id": r.run_id, "config": dumps(r.config, "config"),
            "config_hash": r.config_hash, "seed": r.seed, "code_version": r.code_version,
            "host": r.host, "started": r.started, "finished": r.finished,
            "counts": dumps(r.counts, "counts"), "kind": r.kind}


def _run_from(p: Mapping[str, Any]) -> GenerationRun:
    kind = p.get("kind") or "generate"
    cls = ImportRun if kind == "import" else GenerationRun
    return cls(run_id=p["run_id"], config=json.loads(p["config"]), config_hash=p["config_hash"],
               seed=p["seed"], code_version=p["code_version"], host=p["host"],
               started=p["started"], finished=p.get("finished"), counts=json.loads(p["counts"]),
               kind=kind)


def _float(x: float | None) -> float | None:
    return None if x is None else float(x)


def _seq_row(s: Sequence) -> list[Any]:
    return [s.key, s.domain, s.sequence_id, s.run_id, s.seed, s.pattern, s.n_steps,
            list(s.shape), list(s.levels), list(s.perturbation_kinds), _float(s.entropy_min),
            _float(s.entropy_max), float(s.mean_min), float(s.mean_max), float(s.variance_min),
            float(s.variance_max), s.created, s.status, s.kind, s.source,
            dumps(s.sources, f"sequence {s.key!r} sources")]


def _kind(kind: str | None, run_id: str | None) -> str:
    """A sequence's kind; graphs of layout 1 have none (every sequence had a run)."""
    return kind or ("generate" if run_id else "api")


def _seq_from(p: Mapping[str, Any]) -> Sequence:
    return Sequence(key=p["key"], domain=p["domain"], sequence_id=p["sequence_id"],
                    run_id=p.get("run_id"), seed=p.get("seed"), pattern=p.get("pattern"),
                    n_steps=p["n_steps"], shape=list(p["shape"]), levels=list(p["levels"]),
                    perturbation_kinds=list(p.get("perturbation_kinds") or []),
                    entropy_min=p.get("entropy_min"), entropy_max=p.get("entropy_max"),
                    mean_min=p["mean_min"], mean_max=p["mean_max"],
                    variance_min=p["variance_min"], variance_max=p["variance_max"],
                    created=p["created"], status=p["status"],
                    kind=_kind(p.get("kind"), p.get("run_id")), source=p.get("source"),
                    sources=json.loads(p.get("sources") or "[]"))


def _ts_row(t: TimeStep) -> list[Any]:
    return [t.key, t.sequence_key, t.t, float(t.mean), float(t.variance), _float(t.entropy),
            _float(t.sum), list(t.perturbation_kinds)]


def _seq_from_row(r: list[Any]) -> Sequence:
    return Sequence(r[0], r[1], r[2], r[3], r[4], r[5], r[6], list(r[7]), list(r[8]),
                    list(r[9] or []), r[10], r[11], r[12], r[13], r[14], r[15], r[16], r[17],
                    _kind(r[18], r[3]), r[19], json.loads(r[20] or "[]"))


def _ts_from_row(r: list[Any]) -> TimeStep:
    return TimeStep(r[0], r[1], r[2], r[3], r[4], r[5], r[6], list(r[7] or []))


def _ts_from(p: Mapping[str, Any]) -> TimeStep:
    return TimeStep(key=p["key"], sequence_key=p["sequence_key"], t=p["t"], mean=p["mean"],
                    variance=p["variance"], entropy=p.get("entropy"), sum=p.get("sum"),
                    perturbation_kinds=list(p.get("perturbation_kinds") or []))


def _arr_row(a: ArrayRecord) -> list[Any]:
    st = a.stats
    ent = st.get("entropy")
    return [a.key, a.sequence_key, a.level, a.field, list(a.shape), a.dtype, a.checksum,
            a.nbytes_stored, float(st["mean"]), float(st["variance"]), float(st["min"]),
            float(st["max"]), None if ent is None else float(ent), a.derived_from, a.operation]


def _arr_from(p: Mapping[str, Any]) -> ArrayRecord:
    stats = {"mean": p["stats_mean"], "variance": p["stats_variance"], "min": p["stats_min"],
             "max": p["stats_max"]}
    if p.get("stats_entropy") is not None:
        stats["entropy"] = p["stats_entropy"]
    return ArrayRecord(key=p["key"], sequence_key=p["sequence_key"], level=p["level"],
                       field=p["field"], shape=list(p["shape"]), dtype=p["dtype"],
                       checksum=p["checksum"], nbytes_stored=p["nbytes_stored"], stats=stats,
                       derived_from=p.get("derived_from"), operation=p.get("operation"))


def _dv_from(p: Mapping[str, Any]) -> DatasetVersion:
    return DatasetVersion(version_id=p["version_id"], query=json.loads(p["query"]),
                          split=json.loads(p["split"]),
                          sequence_keys=list(p.get("sequence_keys") or []), created=p["created"],
                          checksums=json.loads(p.get("checksums") or "{}"))


def _sf_from(p: Mapping[str, Any]) -> SourceFile:
    return SourceFile(key=p["key"], uri=p["uri"], size=p["size"], sha256=p["sha256"],
                      format=p["format"])


def _tr_from(p: Mapping[str, Any]) -> TrainingRun:
    return TrainingRun(run_id=p["run_id"], config=json.loads(p["config"]),
                       dataset_version_id=p["dataset_version_id"],
                       code_version=p.get("code_version"), host=p.get("host"),
                       started=p["started"], finished=p.get("finished"))


def _ck_from(p: Mapping[str, Any]) -> Checkpoint:
    return Checkpoint(ckpt_id=p["ckpt_id"], training_run_id=p["training_run_id"], step=p["step"],
                      metrics=json.loads(p["metrics"]), path=p["path"], created=p["created"])


_FROM_PROPS: dict[str, Callable[[Mapping[str, Any]], Any]] = {
    "Sequence": _seq_from, "TimeStep": _ts_from, "Array": _arr_from,
    "GenerationRun": _run_from, "ImportRun": _run_from, "SourceFile": _sf_from,
    "DatasetVersion": _dv_from, "TrainingRun": _tr_from, "Checkpoint": _ck_from,
}


def safe_uri(uri: str) -> str:
    """``uri`` without any ``user:password@`` part (for messages)."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return "<unparseable URI>"
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    if parts.port is not None:
        host += f":{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment))


# --------------------------------------------------------------------------------- catalog


class Neo4jCatalog(ClosesOnExit):
    """The catalog on a Neo4j 5 server (Bolt, official ``neo4j`` driver).

    ``connection_timeout``: seconds to establish a TCP connection; ``max_transaction_retry_time``:
    how long managed transactions retry transient failures; ``batch_size``: rows per ``UNWIND``
    statement; ``validate``: check records against the JSON Schemas before writing.
    """

    backend = "neo4j"

    def __init__(self, uri: str | None = None, user: str | None = None,
                 password: str | None = None, database: str | None = None, *,
                 connection_timeout: float = 10.0, max_transaction_retry_time: float = 30.0,
                 batch_size: int = DEFAULT_BATCH_SIZE, validate: bool = True) -> None:
        import neo4j  # local: only this backend needs the driver

        uri = uri or os.environ.get("NEO4J_URI")
        if not uri:
            raise CatalogError("no Neo4j URI: pass uri= or set NEO4J_URI "
                               "(eval \"$(scripts/neo4j env)\" for the development server)")
        self.uri = safe_uri(uri)
        if not uri.startswith(BOLT_SCHEMES):
            raise CatalogError(f"invalid Neo4j URI {self.uri}: the scheme must be one of "
                               f"{', '.join(BOLT_SCHEMES)}")
        if self.uri != uri:
            raise CatalogError(f"Neo4j URI {self.uri} (credentials removed): put credentials in "
                               "NEO4J_USER / NEO4J_PASSWORD or user=/password=, not in the URI")
        user = user if user is not None else os.environ.get("NEO4J_USER")
        password = password if password is not None else os.environ.get("NEO4J_PASSWORD")
        self.user = user or "neo4j"
        self._has_password = bool(password)
        self.database = database or os.environ.get("ATLAS_NEO4J_DATABASE") or None
        self.batch_size = int(batch_size)
        if self.batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self._validate = validate
        self._lock = threading.Lock()
        self._secret = password or None  # only to scrub it from any driver message
        auth = (self.user, password) if password else None
        self._driver: neo4j.Driver | None
        try:
            self._driver = neo4j.GraphDatabase.driver(
                uri, auth=auth, connection_timeout=connection_timeout,
                max_transaction_retry_time=max_transaction_retry_time,
                connection_acquisition_timeout=max(connection_timeout, 10.0),
                user_agent="atlasstore-catalog/1", notifications_min_severity="OFF")
        except (ValueError, neo4j.exceptions.ConfigurationError) as exc:
            raise CatalogError(f"invalid Neo4j URI {self.uri}: {exc}") from None
        try:
            self._driver.verify_connectivity()
            self._ensure_schema()
        except BaseException as exc:
            self._driver.close()
            err = self._translate(exc)
            if err is exc:
                raise
            raise err from None

    # ------------------------------------------------------------------------------ plumbing

    def _translate(self, exc: BaseException) -> BaseException:
        err = self._translate_raw(exc)
        if err is not exc and self._secret and self._secret in str(err):  # belt and braces
            err = CatalogError(str(err).replace(self._secret, "***"))
        return err

    def _translate_raw(self, exc: BaseException) -> BaseException:
        from neo4j import exceptions as nx

        if isinstance(exc, CatalogError):
            return exc
        if isinstance(exc, nx.AuthError):
            how = ("no password was given (NEO4J_PASSWORD is unset)" if not self._has_password
                   else f"check NEO4J_USER / NEO4J_PASSWORD for user {self.user!r}")
            return CatalogUnavailable(self.uri, f"authentication failed: {how}")
        if isinstance(exc, (nx.ServiceUnavailable, nx.SessionExpired)):
            return CatalogUnavailable(self.uri, f"cannot connect ({type(exc).__name__}: "
                                                f"{_one_line(exc)})")
        if isinstance(exc, nx.ConnectionAcquisitionTimeoutError):
            return CatalogUnavailable(self.uri, f"timed out acquiring a connection: {_one_line(exc)}")
        if isinstance(exc, nx.Neo4jError):
            return CatalogError(f"Neo4j catalog at {self.uri}: {exc.code}: {_one_line(exc)}")
        if isinstance(exc, nx.DriverError):
            return CatalogError(f"Neo4j catalog at {self.uri}: {type(exc).__name__}: "
                                f"{_one_line(exc)}")
        if isinstance(exc, OSError):
            return CatalogUnavailable(self.uri, f"{type(exc).__name__}: {exc}")
        return exc

    def _session(self) -> Any:
        if self._driver is None:
            raise CatalogError(f"Neo4j catalog at {self.uri} is closed")
        return self._driver.session(database=self.database)

    def _write(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            with self._session() as s:
                return s.execute_write(fn, *args)
        except Exception as exc:
            err = self._translate(exc)
            if err is exc:
                raise
            raise err from None

    def _read(self, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            with self._session() as s:
                return s.execute_read(fn, *args)
        except Exception as exc:
            err = self._translate(exc)
            if err is exc:
                raise
            raise err from None

    def _rows(self, query: str, **params: Any) -> list[dict[str, Any]]:
        def work(tx: Any) -> list[dict[str, Any]]:
            return tx.run(query, params).data()
        return self._read(work)

    def _ensure_schema(self) -> None:
        with self._session() as s:
            for stmt in _SCHEMA_STATEMENTS:
                s.run(stmt).consume()
            s.run(_AWAIT_INDEXES, seconds=120).consume()
            version = s.execute_write(
                lambda tx: tx.run(_META, version=SCHEMA_VERSION, now=utc_now()).single()["version"])
        if version is not None and version > SCHEMA_VERSION:
            raise CatalogError(f"Neo4j catalog at {self.uri} has layout version {version}; this "
                               f"atlasstore understands up to {SCHEMA_VERSION} (upgrade atlasstore)")

    def close(self) -> None:
        """Close the driver (its connection pool). Idempotent."""
        with self._lock:
            if self._driver is not None:
                self._driver.close()
                self._driver = None

    def __repr__(self) -> str:
        return f"Neo4jCatalog({self.uri!r}, database={self.database!r})"

    @staticmethod
    def _missing(tx: Any, label: str, keys: Iterable[str]) -> list[str]:
        keys = list(keys)
        if not keys:
            return []
        return list(tx.run(_MISSING[label], keys=keys).single()["missing"])

    # ------------------------------------------------------------------------------ registration

    def register_run(self, run: GenerationRun | Mapping[str, Any]) -> None:
        r = run_record(run, check=self._validate)
        self._write(lambda tx: self._register_run_tx(tx, r))

    def register_sequences(self, seqs: Iterable[Sequence | Mapping[str, Any]],
                           timesteps: Iterable[TimeStep | Mapping[str, Any]] = (),
                           arrays: Iterable[ArrayRecord | Mapping[str, Any]] = ()) -> None:
        """Insert or replace sequences with their parts, in one transaction.

        Same semantics as :meth:`SQLiteCatalog.register_sequences`: a sequence given here is
        replaced whole (its parts and source files become exactly those of this call); parts of
        other sequences must refer to catalogued ones; ``derived_from`` must resolve; a run id
        may name a run that is not catalogued yet.
        """
        b = make_batch(seqs, timesteps, arrays, self._validate)
        if not (b.seqs or b.timesteps or b.arrays):
            return
        work = self._register_work(b)
        self._write(work)

    def remove_sequences(self, keys: Iterable[str]) -> int:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return 0
        return int(self._write(lambda tx: self._remove_tx(tx, keys)))

    # (the bodies of the public writes, run inside a transaction; commit_sync combines them)

    @staticmethod
    def _register_run_tx(tx: Any, r: GenerationRun) -> None:
        tx.run(_MERGE_RUN[r.NODE_KIND], props=_run_props(r), code_version=r.code_version,
               host=r.host).consume()

    def _register_work(self, b: Any) -> Callable[[Any], None]:
        """The transaction function registering batch ``b`` (rows prepared outside it)."""
        seq_rows = [_seq_row(s) for s in b.seqs]
        ts_rows = [_ts_row(t) for t in b.timesteps]
        arr_rows = [_arr_row(a) for a in b.arrays]
        src_rows = [[s.key, f.key, f.uri, f.size, f.sha256, f.format, member]
                    for s in b.seqs for f, member in s.source_files()]
        stale_rows = [{"key": k, "keep": v} for k, v in b.child_keys_by_sequence().items()]
        widths = batch_widths(b.seqs) if b.seqs else None
        seq_keys = [s.key for s in b.seqs]
        outside = sorted(b.outside_sequence_keys())
        derived_outside = sorted(b.outside_derived_keys())
        n = self.batch_size

        def work(tx: Any) -> None:
            missing = self._missing(tx, "Sequence", outside)
            if missing:
                raise CatalogNotFound(missing_message("sequences", missing,
                                                      " (parts given without their sequence)"))
            missing = self._missing(tx, "Array", derived_outside)
            if missing:
                raise CatalogNotFound(missing_message("arrays named in derived_from", missing))
            for ch in chunks(stale_rows, n):
                tx.run(_DELETE_STALE_PARTS, rows=ch).consume()
            old_files: set[str] = set()
            for ch in chunks(seq_keys, n):
                old_files |= set(tx.run(_DETACH_SOURCES, keys=ch).single()["files"])
            if widths is not None:
                tx.run(_GROW_WIDTHS, **widths).consume()
            for ch in chunks(seq_rows, n):
                tx.run(_MERGE_SEQUENCES, rows=ch).consume()
            for ch in chunks(src_rows, n):
                tx.run(_MERGE_SOURCES, rows=ch).consume()
            for ch in chunks(sorted(old_files), n):
                tx.run(_DROP_ORPHAN_SOURCES, keys=ch).consume()
            for ch in chunks(ts_rows, n):
                tx.run(_MERGE_TIMESTEPS, rows=ch).consume()
            for ch in chunks(arr_rows, n):
                tx.run(_MERGE_ARRAYS, rows=ch).consume()
        return work

    def _remove_tx(self, tx: Any, keys: list[str]) -> int:
        total = 0
        files: set[str] = set()
        for ch in chunks(keys, self.batch_size):
            files |= set(tx.run(_DETACH_SOURCES, keys=ch).single()["files"])
            total += tx.run(_REMOVE_SEQUENCES, keys=ch).single()["n"]
        for ch in chunks(sorted(files), self.batch_size):
            tx.run(_DROP_ORPHAN_SOURCES, keys=ch).consume()
        return total

    # ------------------------------------------------------------------------------ store sync

    def store_sync(self) -> StoreSync | None:
        rows = self._rows(_SYNC_GET)
        if not rows:
            return None
        r = rows[0]
        return StoreSync(r["store_id"], int(r["position"]), json.loads(r["pending"]),
                         int(r["version"]), r["updated"])

    def commit_sync(self, expect_version: int | None, state: StoreSync, *,
                    runs: Iterable[GenerationRun | Mapping[str, Any]] = (),
                    seqs: Iterable[Sequence | Mapping[str, Any]] = (),
                    timesteps: Iterable[TimeStep | Mapping[str, Any]] = (),
                    arrays: Iterable[ArrayRecord | Mapping[str, Any]] = (),
                    remove: Iterable[str] = ()) -> bool:
        """See :meth:`atlasstore.catalog.base.Catalog.commit_sync`: one write transaction that
        first locks the sync node, then compares its version (a retry of the transaction by the
        driver repeats the comparison, so it stays a compare-and-swap)."""
        rs, b, gone = sync_batch(runs, seqs, timesteps, arrays, remove, self._validate)
        register = self._register_work(b) if (b.seqs or b.timesteps or b.arrays) else None
        pending = dumps(state.pending, "pending")

        def work(tx: Any) -> bool:
            have = tx.run(_SYNC_LOCK).single()["version"]
            if have != expect_version:
                raise _VersionMoved  # rolls the transaction back (the lock write too)
            for r in rs:
                self._register_run_tx(tx, r)
            if gone:
                self._remove_tx(tx, gone)
            if register is not None:
                register(tx)
            tx.run(_SYNC_SET, store_id=state.store_id, position=int(state.position),
                   pending=pending, version=(have or 0) + 1, updated=utc_now()).consume()
            return True
        try:
            return bool(self._write(work))
        except _VersionMoved:
            return False

    # ------------------------------------------------------------------------------ lineage records

    def register_dataset_version(self, version_id: str, query: Mapping[str, Any],
                                 split: Mapping[str, Any], sequence_keys: Iterable[str], *,
                                 created: str | None = None,
                                 checksums: Mapping[str, str] | None = None) -> DatasetVersion:
        keys = list(dict.fromkeys(sequence_keys))
        if checksums is not None:  # checked before the transaction
            DatasetVersion.build(version_id, query, split, keys, created, check=self._validate,
                                 checksums=checksums)
        n = self.batch_size

        def work(tx: Any) -> DatasetVersion:
            missing = self._missing(tx, "Sequence", keys)
            if missing:
                raise CatalogNotFound(missing_message("sequences", missing,
                                                      f" (dataset version {version_id!r})"))
            pins = checksums
            if pins is None:
                pins = {}
                for ch in chunks(keys, n):
                    for rec in tx.run(_ARRAY_CHECKSUMS, keys=ch):
                        pins[rec["key"]] = sequence_checksum(
                            {f"{lv}/{f}": c for lv, f, c in rec["arrays"]})
                pins = {k: pins.get(k, sequence_checksum({})) for k in keys}
            dv = DatasetVersion.build(version_id, query, split, keys, created,
                                      check=self._validate, checksums=pins)
            props = {"key": dv.version_id, "version_id": dv.version_id,
                     "query": dumps(dv.query, "query"), "split": dumps(dv.split, "split"),
                     "sequence_keys": dv.sequence_keys, "created": dv.created,
                     "checksums": dumps(dv.checksums, "checksums")}
            tx.run(_MERGE_DATASET, props=props).consume()
            for ch in chunks(dv.sequence_keys, n):
                tx.run(_LINK_DATASET, key=dv.version_id, keys=ch).consume()
            return dv
        return self._write(work)

    def register_training_run(self, run_id: str, config: Mapping[str, Any],
                              dataset_version_id: str, *, code_version: str | None = None,
                              host: str | None = None, started: str | None = None,
                              finished: str | None = None) -> TrainingRun:
        tr = TrainingRun.build(run_id, config, dataset_version_id, code_version, host,
                               started, finished, check=self._validate)
        props = {"key": tr.run_id, "run_id": tr.run_id, "config": dumps(tr.config, "config"),
                 "dataset_version_id": tr.dataset_version_id, "code_version": tr.code_version,
                 "host": tr.host, "started": tr.started, "finished": tr.finished}

        def work(tx: Any) -> None:
            rec = tx.run(_MERGE_TRAINING, props=props, code_version=tr.code_version,
                         host=tr.host).single()
            if rec is None:
                raise CatalogNotFound(f"dataset version {dataset_version_id!r} is not in the "
                                      f"catalog (training run {run_id!r})")
        self._write(work)
        return tr

    def register_checkpoint(self, ckpt_id: str, training_run_id: str, step: int,
                            metrics: Mapping[str, Any], path: str, *,
                            created: str | None = None) -> Checkpoint:
        ck = Checkpoint.build(ckpt_id, training_run_id, step, metrics, path, created,
                              check=self._validate)
        props = {"key": ck.ckpt_id, "ckpt_id": ck.ckpt_id, "training_run_id": ck.training_run_id,
                 "step": ck.step, "metrics": dumps(ck.metrics, "metrics"), "path": ck.path,
                 "created": ck.created}

        def work(tx: Any) -> None:
            if tx.run(_MERGE_CHECKPOINT, props=props).single() is None:
                raise CatalogNotFound(f"training run {training_run_id!r} is not in the catalog "
                                      f"(checkpoint {ckpt_id!r})")
        self._write(work)
        return ck

    # ------------------------------------------------------------------------------ queries

    @staticmethod
    def _filters(frags: Mapping[str, str], where: list[str], params: dict[str, Any], *,
                 entropy: Range | None, mean: Range | None, variance: Range | None,
                 perturbation: str | None, seek: bool = False) -> None:
        for name, rng in (("entropy", entropy), ("mean", mean), ("variance", variance)):
            lo, hi = check_range(name, rng)
            if lo is not None and seek:
                where.append(frags[f"{name}_seek"])
                params[f"{name}_seek"] = lo - seek_margin(lo)
            if lo is not None:
                where.append(frags[f"{name}_lo"])
                params[f"{name}_lo"] = lo
            if hi is not None:
                where.append(frags[f"{name}_hi"])
                params[f"{name}_hi"] = hi
        if perturbation is not None:
            where.append(frags["perturbation"])
            params["perturbation"] = str(perturbation)

    @staticmethod
    def _seq_filters(where: list[str], params: dict[str, Any], domains: Any,
                     run_id: str | None, level: int | None,
                     sequence_keys: Iterable[str] | None = None) -> None:
        doms = check_domains(domains)
        if doms is not None:
            where.append(_SEQ_FILTERS["domains"])
            params["domains"] = doms
        if run_id is not None:
            where.append(_SEQ_FILTERS["run_id"])
            params["run_id"] = str(run_id)
        if level is not None:
            where.append(_SEQ_FILTERS["level"])
            params["level"] = int(level)
        if sequence_keys is not None:
            where.append(_SEQ_FILTERS["sequence_keys"])
            params["sequence_keys"] = list(sequence_keys)

    @staticmethod
    def _compose(head: str, where: list[str], tail: str, limit: int | None, ret: str,
                 params: dict[str, Any]) -> str:
        parts = [head]
        if where:
            parts += [_WHERE, _AND.join(where)]
        parts.append(tail)
        if limit is not None:
            parts.append(_LIMIT)
            params["limit"] = limit
        parts.append(ret)
        return "\n".join(parts)

    def find_sequences(self, domains: str | Iterable[str] | None = None, run_id: str | None = None,
                       level: int | None = None, entropy: Range | None = None,
                       mean: Range | None = None, variance: Range | None = None,
                       perturbation: str | None = None, limit: int | None = None
                       ) -> list[Sequence]:
        """Sequences matching every given filter, ordered by key (ranges: overlap, inclusive)."""
        where: list[str] = []
        params: dict[str, Any] = {}
        self._seq_filters(where, params, domains, run_id, level)
        self._filters(_SEQ_FILTERS, where, params, entropy=entropy, mean=mean,
                      variance=variance, perturbation=perturbation, seek=True)
        head = _WIDTHS_HEAD if any(k.endswith("_seek") for k in params) else _FIND_SEQ_HEAD
        query = self._compose(head, where, _FIND_SEQ_TAIL, check_limit(limit), _FIND_SEQ_RETURN,
                              params)
        return [_seq_from_row(r) for r in self._rows(query, **params)[0]["rows"]]

    def find_timesteps(self, domains: str | Iterable[str] | None = None,
                       run_id: str | None = None, level: int | None = None,
                       entropy: Range | None = None, mean: Range | None = None,
                       variance: Range | None = None, perturbation: str | None = None,
                       limit: int | None = None, sequence_keys: Iterable[str] | None = None
                       ) -> list[TimeStep]:
        """Time steps whose own stats lie in the ranges (inclusive), of sequences matching the
        sequence filters; ordered by (sequence_key, t)."""
        where: list[str] = []
        params: dict[str, Any] = {}
        self._seq_filters(where, params, domains, run_id, level, sequence_keys)
        self._filters(_TS_FILTERS, where, params, entropy=entropy, mean=mean,
                      variance=variance, perturbation=perturbation)
        query = self._compose(_FIND_TS_HEAD, where, _FIND_TS_TAIL, check_limit(limit),
                              _FIND_TS_RETURN, params)
        return [_ts_from_row(r) for r in self._rows(query, **params)[0]["rows"]]

    def _get(self, kind: str, key: str) -> Any:
        rows = self._rows(_GET[kind], key=key)
        return _FROM_PROPS[kind](rows[0]["p"]) if rows else None

    def get_sequence(self, key: str) -> Sequence | None:
        return self._get("Sequence", key)

    def get_run(self, run_id: str) -> GenerationRun | None:
        return self._get("GenerationRun", run_id) or self._get("ImportRun", run_id)

    def get_dataset_version(self, version_id: str) -> DatasetVersion | None:
        return self._get("DatasetVersion", version_id)

    def get_training_run(self, run_id: str) -> TrainingRun | None:
        return self._get("TrainingRun", run_id)

    def get_checkpoint(self, ckpt_id: str) -> Checkpoint | None:
        return self._get("Checkpoint", ckpt_id)

    def get_timesteps(self, sequence_key: str) -> list[TimeStep]:
        return [_ts_from(r["p"]) for r in self._rows(_GET_TIMESTEPS, key=sequence_key)]

    def get_arrays(self, sequence_key: str) -> list[ArrayRecord]:
        return [_arr_from(r["p"]) for r in self._rows(_GET_ARRAYS, key=sequence_key)]

    def list_domains(self) -> list[str]:
        return [r["d"] for r in self._rows(_LIST_DOMAINS)]

    def count(self) -> int:
        return int(self._rows(_COUNT)[0]["n"])

    def sequence_keys(self) -> list[str]:
        return [r["k"] for r in self._rows(_SEQUENCE_KEYS)]

    # ------------------------------------------------------------------------------ lineage

    def _resolve(self, node: str) -> tuple[str, str]:
        q = split_node_id(node)
        if q is not None:
            kind, key = q
            if self._rows(_EXISTS, key=key)[0][kind]:
                return kind, key
        found = self._rows(_EXISTS, key=node)[0]
        kinds = [k for k in RESOLVE_ORDER if found[k]]
        if len(kinds) > 1:
            raise CatalogError(f"{node!r} is ambiguous ({', '.join(kinds)}); "
                               f"pass a node id like {node_id(kinds[0], node)!r}")
        if not kinds:
            raise CatalogNotFound(f"no catalog node {node!r}")
        return kinds[0], node

    def lineage(self, node: str) -> Lineage:
        """Full upstream lineage of any node (a node id ``"Kind:key"`` or a bare key), one query."""
        kind, key = self._resolve(node)
        query = _START[kind] + _CLOSURE + _LINEAGE_TAIL
        rec = self._rows(query, key=key)[0]
        nodes: dict[str, LineageNode] = {}
        for n in rec["nodes"]:
            k, p = n["kind"], n["props"]
            if k in _FROM_PROPS:
                props = _FROM_PROPS[k](p).to_dict()
            else:
                props = agent_properties(k, p["key"])
            nid = node_id(k, p["key"])
            nodes[nid] = LineageNode(nid, k, p["key"], props)
        edges = {(node_id(e["src_kind"], e["src"]), e["rel"], node_id(e["dst_kind"], e["dst"])):
                 LineageEdge(node_id(e["src_kind"], e["src"]), e["rel"],
                             node_id(e["dst_kind"], e["dst"]), dict(e["props"]))
                 for e in rec["edges"]}
        return Lineage(root=node_id(kind, key), nodes=nodes, edges=sort_edges(edges.values()))

    def generation_runs_for(self, node: str) -> list[GenerationRun]:
        """The generation runs upstream of ``node`` (seeds, configs, code versions), one query."""
        kind, key = self._resolve(node)
        query = _START[kind] + _CLOSURE + _GENERATION_RUNS_TAIL
        return [_run_from(r["p"]) for r in self._rows(query, key=key)]


class _VersionMoved(Exception):
    """Another process committed a sync first (commit_sync's compare-and-swap failed)."""


def _one_line(exc: BaseException) -> str:
    """The driver's message on one line (it never contains credentials)."""
    msg = str(getattr(exc, "message", None) or exc).strip()
    return " ".join(msg.split()) if msg else type(exc).__name__
