"""The Neo4j catalog's write statements: constant Cypher text, values always passed as parameters
(never formatted into the text, so no string can inject Cypher)."""

from __future__ import annotations

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
         sum: r[6], perturbation_kinds: r[7], valid_cells: r[8]}
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
         operation: r[14], stats_valid_fraction: r[15]}
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
