"""The Neo4j catalog's read statements: filters, lookups and the lineage closure."""

from __future__ import annotations

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
  ts.sum, ts.perturbation_kinds, ts.valid_cells]) AS rows"""
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
