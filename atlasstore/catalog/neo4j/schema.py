"""The Neo4j catalog's constraints, indexes and metadata node (layout version 2)."""

from __future__ import annotations

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
