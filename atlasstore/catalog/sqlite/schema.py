"""The SQLite catalog's tables (layout version 3) and the migrations of layout-1 and -2 files."""

from __future__ import annotations

SCHEMA_VERSION = 3

_SEQUENCES_TABLE = """
CREATE TABLE IF NOT EXISTS sequences (
    key TEXT PRIMARY KEY, domain TEXT NOT NULL, sequence_id TEXT NOT NULL,
    run_id TEXT, seed INTEGER, pattern TEXT, n_steps INTEGER NOT NULL,
    shape TEXT NOT NULL, levels TEXT NOT NULL, perturbation_kinds TEXT NOT NULL,
    entropy_min REAL, entropy_max REAL,
    mean_min REAL NOT NULL, mean_max REAL NOT NULL,
    variance_min REAL NOT NULL, variance_max REAL NOT NULL,
    created TEXT NOT NULL, status TEXT NOT NULL,
    kind TEXT NOT NULL, source TEXT, sources TEXT NOT NULL
);"""
_TIMESTEPS_TABLE = """
CREATE TABLE IF NOT EXISTS timesteps (
    key TEXT PRIMARY KEY,
    sequence_key TEXT NOT NULL REFERENCES sequences(key) ON DELETE CASCADE,
    t INTEGER NOT NULL, mean REAL NOT NULL, variance REAL NOT NULL, entropy REAL,
    sum REAL, perturbation_kinds TEXT NOT NULL,
    valid_cells INTEGER  -- NULL: every cell (recorded before missing cells existed)
);"""
_VERSION_TABLE = """
CREATE TABLE IF NOT EXISTS schema_version (
    version  INTEGER NOT NULL,
    applied  TEXT NOT NULL
);"""
_DDL = _VERSION_TABLE + """
-- generation and import runs (kind); a sequence's run_id may name a run not (yet) catalogued
CREATE TABLE IF NOT EXISTS generation_runs (
    run_id TEXT PRIMARY KEY, config TEXT NOT NULL, config_hash TEXT NOT NULL,
    seed INTEGER NOT NULL, code_version TEXT NOT NULL, host TEXT NOT NULL,
    started TEXT NOT NULL, finished TEXT, counts TEXT NOT NULL,
    kind TEXT NOT NULL DEFAULT 'generate'
);
__SEQUENCES_DDL__
CREATE INDEX IF NOT EXISTS sequences_domain_entropy ON sequences(domain, entropy_min);
CREATE INDEX IF NOT EXISTS sequences_domain_mean ON sequences(domain, mean_min);
CREATE INDEX IF NOT EXISTS sequences_run ON sequences(run_id);
CREATE INDEX IF NOT EXISTS sequences_entropy ON sequences(entropy_min);
CREATE INDEX IF NOT EXISTS sequences_mean ON sequences(mean_min);
CREATE INDEX IF NOT EXISTS sequences_variance ON sequences(variance_min);
-- widest <stat>_max - <stat>_min ever registered: bounds the index seek of overlap queries
CREATE TABLE IF NOT EXISTS stat_widths (
    stat TEXT PRIMARY KEY, width REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS sequence_levels (
    level INTEGER NOT NULL,
    sequence_key TEXT NOT NULL REFERENCES sequences(key) ON DELETE CASCADE,
    PRIMARY KEY (level, sequence_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sequence_levels_seq ON sequence_levels(sequence_key);
CREATE TABLE IF NOT EXISTS sequence_perturbations (
    kind TEXT NOT NULL,
    sequence_key TEXT NOT NULL REFERENCES sequences(key) ON DELETE CASCADE,
    PRIMARY KEY (kind, sequence_key)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS sequence_perturbations_seq ON sequence_perturbations(sequence_key);
__TIMESTEPS_DDL__
CREATE INDEX IF NOT EXISTS timesteps_seq ON timesteps(sequence_key, t);
CREATE INDEX IF NOT EXISTS timesteps_entropy ON timesteps(entropy);
CREATE INDEX IF NOT EXISTS timesteps_mean ON timesteps(mean);
CREATE INDEX IF NOT EXISTS timesteps_variance ON timesteps(variance);
CREATE TABLE IF NOT EXISTS arrays (
    key TEXT PRIMARY KEY,
    sequence_key TEXT NOT NULL REFERENCES sequences(key) ON DELETE CASCADE,
    level INTEGER NOT NULL, field TEXT NOT NULL, shape TEXT NOT NULL, dtype TEXT NOT NULL,
    checksum TEXT NOT NULL, nbytes_stored INTEGER NOT NULL,
    stat_mean REAL NOT NULL, stat_variance REAL NOT NULL, stat_min REAL NOT NULL,
    stat_max REAL NOT NULL, stat_entropy REAL,
    derived_from TEXT, operation TEXT, stat_valid_fraction REAL
);
CREATE INDEX IF NOT EXISTS arrays_seq ON arrays(sequence_key, level, field);
CREATE TABLE IF NOT EXISTS dataset_versions (
    version_id TEXT PRIMARY KEY, query TEXT NOT NULL, split TEXT NOT NULL,
    sequence_keys TEXT NOT NULL, created TEXT NOT NULL, checksums TEXT NOT NULL DEFAULT '{}'
);
CREATE TABLE IF NOT EXISTS source_files (
    key TEXT PRIMARY KEY, uri TEXT NOT NULL, size INTEGER NOT NULL, sha256 TEXT NOT NULL,
    format TEXT NOT NULL
);
-- how far this catalog has followed its store's change log (one row; see base.StoreSync)
CREATE TABLE IF NOT EXISTS store_sync (
    id INTEGER PRIMARY KEY CHECK (id = 1), store_id TEXT NOT NULL, position INTEGER NOT NULL,
    pending TEXT NOT NULL, version INTEGER NOT NULL, updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS training_runs (
    run_id TEXT PRIMARY KEY, config TEXT NOT NULL,
    dataset_version_id TEXT NOT NULL REFERENCES dataset_versions(version_id),
    code_version TEXT, host TEXT, started TEXT NOT NULL, finished TEXT
);
CREATE TABLE IF NOT EXISTS checkpoints (
    ckpt_id TEXT PRIMARY KEY,
    training_run_id TEXT NOT NULL REFERENCES training_runs(run_id),
    step INTEGER NOT NULL, metrics TEXT NOT NULL, path TEXT NOT NULL, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS edges (
    src TEXT NOT NULL, rel TEXT NOT NULL, dst TEXT NOT NULL, props TEXT NOT NULL DEFAULT '{}',
    PRIMARY KEY (src, rel, dst)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS edges_dst ON edges(dst, rel);
""".replace("__SEQUENCES_DDL__", _SEQUENCES_TABLE).replace("__TIMESTEPS_DDL__", _TIMESTEPS_TABLE)
# Layout 1 -> 2 (foreign keys off, one transaction): rebuild the two tables whose columns became
# nullable or grew, add the new columns elsewhere; the new tables come from _DDL afterwards.
_UPGRADE_FROM_1 = (
    _SEQUENCES_TABLE.replace("TABLE IF NOT EXISTS sequences", "TABLE sequences_v2"),
    "INSERT INTO sequences_v2 SELECT key, domain, sequence_id, run_id, seed, pattern, n_steps, "
    "shape, levels, perturbation_kinds, entropy_min, entropy_max, mean_min, mean_max, "
    "variance_min, variance_max, created, status, 'generate', NULL, '[]' FROM sequences",
    "DROP TABLE sequences",
    "ALTER TABLE sequences_v2 RENAME TO sequences",
    _TIMESTEPS_TABLE.replace("TABLE IF NOT EXISTS timesteps", "TABLE timesteps_v2"),
    "INSERT INTO timesteps_v2 (key, sequence_key, t, mean, variance, entropy, sum, "
    "perturbation_kinds) SELECT key, sequence_key, t, mean, variance, entropy, sum, "
    "perturbation_kinds FROM timesteps",
    "DROP TABLE timesteps",
    "ALTER TABLE timesteps_v2 RENAME TO timesteps",
    "ALTER TABLE generation_runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'generate'",
    "ALTER TABLE dataset_versions ADD COLUMN checksums TEXT NOT NULL DEFAULT '{}'",
    "ALTER TABLE arrays ADD COLUMN stat_valid_fraction REAL",
)
# Layout 2 -> 3: missing cells (valid cells per step, the valid fraction of an array).
_UPGRADE_FROM_2 = (
    "ALTER TABLE timesteps ADD COLUMN valid_cells INTEGER",
    "ALTER TABLE arrays ADD COLUMN stat_valid_fraction REAL",
)
