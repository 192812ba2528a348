"""SQLite catalog: the embedded default (stdlib ``sqlite3``, one file beside the store).

Design
------
* One table per record kind (columns for everything a query filters on, JSON text for lists and
  config dicts) plus a generic ``edges(src, rel, dst, props)`` table between lineage node ids
  (``"<Kind>:<key>"``). Lineage is one recursive CTE over ``edges``; the tables give the node
  properties.
* ``PRAGMA journal_mode=WAL`` (readers never block the writer and vice versa; other processes
  can read while a generation job writes), ``foreign_keys=ON`` (parts cascade with their
  sequence), ``synchronous=NORMAL`` (durable at checkpoints; safe against corruption), a
  30 s ``busy_timeout`` for concurrent writers in other processes.
* Every public write is one transaction (``BEGIN IMMEDIATE`` ... ``COMMIT``, rolled back on any
  error) using ``executemany`` per table; SQL text is constant, values are always parameters.
* A ``schema_version`` table records the layout version; opening a file written by a newer
  layout is refused, and a file of layout 1 is migrated in place to 2 (nullable run id, seed,
  pattern and entropy; sequence kind and source files; import runs; pinned dataset checksums;
  the store-sync state), in one transaction.

Thread safety: one connection per catalog object, opened with ``check_same_thread=False`` and
guarded by a re-entrant lock, so a catalog object may be shared by threads (calls are
serialised). Separate processes open their own ``SQLiteCatalog`` on the same file; WAL makes that
safe (one writer at a time, writers wait up to ``busy_timeout``).
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from atlasstore.catalog.base import (
    RESOLVE_ORDER,
    STRUCTURAL_RELS,
    UPSTREAM_RELS,
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
from atlasstore.errors import CatalogError, CatalogNotFound
from atlasstore.io.provenance import utc_now

SCHEMA_VERSION = 2

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
    sum REAL, perturbation_kinds TEXT NOT NULL
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
    derived_from TEXT, operation TEXT
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
    "INSERT INTO timesteps_v2 SELECT key, sequence_key, t, mean, variance, entropy, sum, "
    "perturbation_kinds FROM timesteps",
    "DROP TABLE timesteps",
    "ALTER TABLE timesteps_v2 RENAME TO timesteps",
    "ALTER TABLE generation_runs ADD COLUMN kind TEXT NOT NULL DEFAULT 'generate'",
    "ALTER TABLE dataset_versions ADD COLUMN checksums TEXT NOT NULL DEFAULT '{}'",
)

# ---------------------------------------------------------------------------------------- SQL

_UPSERT_RUN = """
INSERT INTO generation_runs (run_id, config, config_hash, seed, code_version, host, started,
                             finished, counts, kind)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT(run_id) DO UPDATE SET config=excluded.config, config_hash=excluded.config_hash,
    seed=excluded.seed, code_version=excluded.code_version, host=excluded.host,
    started=excluded.started, finished=excluded.finished, counts=excluded.counts,
    kind=excluded.kind
"""
_SEQ_COLS = ("key", "domain", "sequence_id", "run_id", "seed", "pattern", "n_steps", "shape",
             "levels", "perturbation_kinds", "entropy_min", "entropy_max", "mean_min", "mean_max",
             "variance_min", "variance_max", "created", "status", "kind", "source", "sources")
_UPSERT_SEQ = (
    f"INSERT INTO sequences ({', '.join(_SEQ_COLS)}) VALUES ({', '.join('?' * len(_SEQ_COLS))}) "
    "ON CONFLICT(key) DO UPDATE SET "
    + ", ".join(f"{c}=excluded.{c}" for c in _SEQ_COLS[1:]))
_TS_COLS = ("key", "sequence_key", "t", "mean", "variance", "entropy", "sum", "perturbation_kinds")
_UPSERT_TS = (
    f"INSERT INTO timesteps ({', '.join(_TS_COLS)}) VALUES ({', '.join('?' * len(_TS_COLS))}) "
    "ON CONFLICT(key) DO UPDATE SET " + ", ".join(f"{c}=excluded.{c}" for c in _TS_COLS[1:]))
_ARR_COLS = ("key", "sequence_key", "level", "field", "shape", "dtype", "checksum",
             "nbytes_stored", "stat_mean", "stat_variance", "stat_min", "stat_max", "stat_entropy",
             "derived_from", "operation")
_UPSERT_ARR = (
    f"INSERT INTO arrays ({', '.join(_ARR_COLS)}) VALUES ({', '.join('?' * len(_ARR_COLS))}) "
    "ON CONFLICT(key) DO UPDATE SET " + ", ".join(f"{c}=excluded.{c}" for c in _ARR_COLS[1:]))
_UPSERT_EDGE = ("INSERT INTO edges (src, rel, dst, props) VALUES (?, ?, ?, ?) "
                "ON CONFLICT(src, rel, dst) DO UPDATE SET props=excluded.props")

_UP_IN = ", ".join(f"'{r}'" for r in UPSTREAM_RELS)          # constants, not data
_STRUCT_IN = ", ".join(f"'{r}'" for r in STRUCTURAL_RELS)
_UPSTREAM_CTE = f"""
WITH RECURSIVE up(id) AS (
    SELECT ?
    UNION
    SELECT e.dst FROM edges AS e JOIN up ON e.src = up.id WHERE e.rel IN ({_UP_IN})
    UNION
    SELECT e.src FROM edges AS e JOIN up ON e.dst = up.id WHERE e.rel IN ({_STRUCT_IN})
)
"""
_LINEAGE_EDGES = _UPSTREAM_CTE + f"""
SELECT e.src, e.rel, e.dst, e.props FROM edges AS e
 WHERE e.src IN (SELECT id FROM up) AND e.rel IN ({_UP_IN})
UNION
SELECT e.src, e.rel, e.dst, e.props FROM edges AS e
 WHERE e.dst IN (SELECT id FROM up) AND e.rel IN ({_STRUCT_IN})
"""
_LINEAGE_NODES = _UPSTREAM_CTE + "SELECT id FROM up"
_GENERATION_RUNS = _UPSTREAM_CTE + """
SELECT g.* FROM generation_runs AS g
 WHERE (CASE g.kind WHEN 'import' THEN 'ImportRun:' ELSE 'GenerationRun:' END) || g.run_id
       IN (SELECT id FROM up)
 ORDER BY g.run_id
"""

# Fixed filter fragments of find_sequences/find_timesteps (the SQL text never contains data).
_SEQ_FILTERS = {
    "domains": "s.domain IN (SELECT atlas_key(value) FROM json_each(?))",
    "run_id": "s.run_id = ?",
    "level": "EXISTS (SELECT 1 FROM sequence_levels AS l WHERE l.level = ? AND l.sequence_key = s.key)",
    # redundant lower bounds on <stat>_min that turn an overlap test into an index range seek
    # (base.seek_margin; the parameter is lo minus the rounding margin)
    "entropy_seek": ("s.entropy_min >= ? - 1.000000001 * coalesce((SELECT width FROM stat_widths "
                     "WHERE stat = 'entropy'), 1e300)"),
    "mean_seek": ("s.mean_min >= ? - 1.000000001 * coalesce((SELECT width FROM stat_widths "
                  "WHERE stat = 'mean'), 1e300)"),
    "variance_seek": ("s.variance_min >= ? - 1.000000001 * coalesce((SELECT width FROM "
                      "stat_widths WHERE stat = 'variance'), 1e300)"),
    # the same predicates with index use disabled (unary +), for the non-leading stats
    "entropy_hi_noidx": "+s.entropy_min <= ?", "mean_hi_noidx": "+s.mean_min <= ?",
    "variance_hi_noidx": "+s.variance_min <= ?",
    "entropy_lo": "s.entropy_max >= ?", "entropy_hi": "s.entropy_min <= ?",
    "mean_lo": "s.mean_max >= ?", "mean_hi": "s.mean_min <= ?",
    "variance_lo": "s.variance_max >= ?", "variance_hi": "s.variance_min <= ?",
    "perturbation": ("EXISTS (SELECT 1 FROM sequence_perturbations AS p "
                     "WHERE p.kind = ? AND p.sequence_key = s.key)"),
    "sequence_keys": "s.key IN (SELECT atlas_key(value) FROM json_each(?))",
}
_TS_FILTERS = {
    "entropy_lo": "ts.entropy >= ?", "entropy_hi": "ts.entropy <= ?",
    "mean_lo": "ts.mean >= ?", "mean_hi": "ts.mean <= ?",
    "variance_lo": "ts.variance >= ?", "variance_hi": "ts.variance <= ?",
    "perturbation": "atlas_has(ts.perturbation_kinds, ?)",
}


# Lists of keys travel as one JSON parameter (any length, one statement). SQLite's JSON
# functions cut a string at NUL, and keys are data (a name may hold any character), so each key
# travels hex-encoded and the connection's own atlas_key() turns it back into the exact string;
# atlas_has() tests membership in a stored JSON list of strings the same way.

def _key_list(keys: Iterable[str]) -> str:
    return json.dumps([k.encode("utf-8", "surrogatepass").hex() for k in keys])


def _atlas_key(hexed: str) -> str:
    return bytes.fromhex(hexed).decode("utf-8", "surrogatepass")


def _atlas_has(doc: str | None, value: str) -> bool:
    return doc is not None and value in json.loads(doc)


# ---------------------------------------------------------------------------------------- rows

def _run_row(r: GenerationRun) -> tuple:
    return (r.run_id, dumps(r.config, f"run {r.run_id!r} config"), r.config_hash, r.seed,
            r.code_version, r.host, r.started, r.finished, dumps(r.counts, "counts"), r.kind)


def _run_from(row: sqlite3.Row) -> GenerationRun:
    cls = ImportRun if row["kind"] == "import" else GenerationRun
    return cls(run_id=row["run_id"], config=json.loads(row["config"]),
               config_hash=row["config_hash"], seed=row["seed"], code_version=row["code_version"],
               host=row["host"], started=row["started"], finished=row["finished"],
               counts=json.loads(row["counts"]), kind=row["kind"])


def _seq_row(s: Sequence) -> tuple:
    return (s.key, s.domain, s.sequence_id, s.run_id, s.seed, s.pattern, s.n_steps,
            json.dumps(s.shape), json.dumps(s.levels),
            json.dumps(s.perturbation_kinds, ensure_ascii=False), s.entropy_min, s.entropy_max,
            s.mean_min, s.mean_max, s.variance_min, s.variance_max, s.created, s.status, s.kind,
            s.source, dumps(s.sources, f"sequence {s.key!r} sources"))


def _seq_from(row: sqlite3.Row) -> Sequence:
    r = tuple(row)  # column order of _SEQ_COLS (SELECT * on the sequences table)
    return Sequence(r[0], r[1], r[2], r[3], r[4], r[5], r[6], _loads(r[7]), _loads(r[8]),
                    _loads(r[9]), r[10], r[11], r[12], r[13], r[14], r[15], r[16], r[17], r[18],
                    r[19], _loads(r[20]))


_loads = json.JSONDecoder().decode


def _ts_row(t: TimeStep) -> tuple:
    return (t.key, t.sequence_key, t.t, t.mean, t.variance, t.entropy, t.sum,
            json.dumps(t.perturbation_kinds, ensure_ascii=False))


def _ts_from(row: sqlite3.Row) -> TimeStep:
    d = dict(row)
    d["perturbation_kinds"] = json.loads(d["perturbation_kinds"])
    return TimeStep(**d)


def _arr_row(a: ArrayRecord) -> tuple:
    st = a.stats
    return (a.key, a.sequence_key, a.level, a.field, json.dumps(a.shape), a.dtype, a.checksum,
            a.nbytes_stored, st["mean"], st["variance"], st["min"], st["max"], st.get("entropy"),
            a.derived_from, a.operation)


def _arr_from(row: sqlite3.Row) -> ArrayRecord:
    stats = {"mean": row["stat_mean"], "variance": row["stat_variance"], "min": row["stat_min"],
             "max": row["stat_max"]}
    if row["stat_entropy"] is not None:
        stats["entropy"] = row["stat_entropy"]
    return ArrayRecord(key=row["key"], sequence_key=row["sequence_key"], level=row["level"],
                       field=row["field"], shape=json.loads(row["shape"]), dtype=row["dtype"],
                       checksum=row["checksum"], nbytes_stored=row["nbytes_stored"], stats=stats,
                       derived_from=row["derived_from"], operation=row["operation"])


def _dv_from(row: sqlite3.Row) -> DatasetVersion:
    return DatasetVersion(version_id=row["version_id"], query=json.loads(row["query"]),
                          split=json.loads(row["split"]),
                          sequence_keys=json.loads(row["sequence_keys"]), created=row["created"],
                          checksums=json.loads(row["checksums"]))


def _sf_from(row: sqlite3.Row) -> SourceFile:
    return SourceFile(key=row["key"], uri=row["uri"], size=row["size"], sha256=row["sha256"],
                      format=row["format"])


def _tr_from(row: sqlite3.Row) -> TrainingRun:
    return TrainingRun(run_id=row["run_id"], config=json.loads(row["config"]),
                       dataset_version_id=row["dataset_version_id"],
                       code_version=row["code_version"], host=row["host"],
                       started=row["started"], finished=row["finished"])


def _ck_from(row: sqlite3.Row) -> Checkpoint:
    return Checkpoint(ckpt_id=row["ckpt_id"], training_run_id=row["training_run_id"],
                      step=row["step"], metrics=json.loads(row["metrics"]), path=row["path"],
                      created=row["created"])


# (kind) -> (SQL fetching rows by key via json_each, row -> record); constant text
_NODE_FETCH: dict[str, tuple[str, Any]] = {
    "Sequence": ("SELECT * FROM sequences WHERE key IN "
                 "(SELECT atlas_key(value) FROM json_each(?))", _seq_from),
    "TimeStep": ("SELECT * FROM timesteps WHERE key IN "
                 "(SELECT atlas_key(value) FROM json_each(?))", _ts_from),
    "Array": ("SELECT * FROM arrays WHERE key IN (SELECT atlas_key(value) FROM json_each(?))", _arr_from),
    "GenerationRun": ("SELECT * FROM generation_runs WHERE kind = 'generate' AND run_id IN "
                      "(SELECT atlas_key(value) FROM json_each(?))", _run_from),
    "ImportRun": ("SELECT * FROM generation_runs WHERE kind = 'import' AND run_id IN "
                  "(SELECT atlas_key(value) FROM json_each(?))", _run_from),
    "SourceFile": ("SELECT * FROM source_files WHERE key IN (SELECT atlas_key(value) FROM json_each(?))",
                   _sf_from),
    "DatasetVersion": ("SELECT * FROM dataset_versions WHERE version_id IN "
                       "(SELECT atlas_key(value) FROM json_each(?))", _dv_from),
    "TrainingRun": ("SELECT * FROM training_runs WHERE run_id IN "
                    "(SELECT atlas_key(value) FROM json_each(?))", _tr_from),
    "Checkpoint": ("SELECT * FROM checkpoints WHERE ckpt_id IN "
                   "(SELECT atlas_key(value) FROM json_each(?))", _ck_from),
}
_KEY_ATTR = {"Sequence": "key", "TimeStep": "key", "Array": "key", "GenerationRun": "run_id",
             "ImportRun": "run_id", "SourceFile": "key",
             "DatasetVersion": "version_id", "TrainingRun": "run_id", "Checkpoint": "ckpt_id"}


class SQLiteCatalog(ClosesOnExit):
    """The catalog in one SQLite file (``":memory:"`` for a private in-memory catalog).

    ``validate`` (default True) checks every record against its JSON Schema before writing;
    ``read_only`` opens an existing file for reading only (every write is a CatalogError).
    """

    backend = "sqlite"

    def __init__(self, path: str | Path, *, validate: bool = True, timeout: float = 30.0,
                 read_only: bool = False) -> None:
        self.path = str(path)
        self.uri = f"sqlite:///{self.path}"
        self._validate = validate
        self.read_only = read_only
        self._lock = threading.RLock()
        if self.path != ":memory:":
            parent = Path(self.path).expanduser().resolve().parent
            if not parent.is_dir():
                raise CatalogError(f"cannot open catalog {self.path}: folder {parent} does not exist")
        if read_only and not Path(self.path).is_file():
            raise CatalogError(f"cannot open catalog {self.path} read-only: no such file")
        try:
            if read_only:  # (a URI, so SQLite refuses every write itself)
                self._db = sqlite3.connect(Path(self.path).resolve().as_uri() + "?mode=ro",
                                           uri=True, timeout=timeout, check_same_thread=False,
                                           isolation_level=None)
            else:
                self._db = sqlite3.connect(self.path, timeout=timeout, check_same_thread=False,
                                           isolation_level=None)
        except sqlite3.Error as exc:
            raise CatalogError(f"cannot open catalog {self.path}: {exc}") from None
        self._db.row_factory = sqlite3.Row
        self._db.create_function("atlas_key", 1, _atlas_key, deterministic=True)
        self._db.create_function("atlas_has", 2, _atlas_has, deterministic=True)
        try:
            if not read_only:
                self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA foreign_keys=ON")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute("PRAGMA cache_size=-65536")  # 64 MiB page cache
            self._db.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
            if read_only:
                if self._version() != SCHEMA_VERSION:
                    raise CatalogError(f"catalog {self.path} has layout version "
                                       f"{self._version()}; open it writable once to upgrade it "
                                       f"to {SCHEMA_VERSION}")
            else:
                self._migrate()
        except CatalogError:
            self._db.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise CatalogError(f"{self.path} is not a usable catalog database: {exc}") from None

    # ------------------------------------------------------------------------------ plumbing

    def _version(self) -> int | None:
        return self._db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]

    def _migrate(self) -> None:
        # executescript commits any open transaction first, so the DDL gets its own.
        self._db.executescript("BEGIN IMMEDIATE;" + _VERSION_TABLE + "COMMIT;")
        have = self._version()
        if have is not None and have > SCHEMA_VERSION:
            raise CatalogError(f"catalog {self.path} has layout version {have}; this atlasstore "
                               f"understands up to {SCHEMA_VERSION} (upgrade atlasstore)")
        if have == 1:
            self._upgrade_from_1()
        self._db.executescript("BEGIN IMMEDIATE;" + _DDL + "COMMIT;")
        with self._tx():
            if self._version() is None:
                self._db.execute("INSERT INTO schema_version (version, applied) VALUES (?, ?)",
                                 (SCHEMA_VERSION, utc_now()))

    def _upgrade_from_1(self) -> None:
        """Layout 1 -> 2 in one transaction (another process may have done it meanwhile)."""
        self._db.execute("PRAGMA foreign_keys=OFF")  # (not settable inside a transaction)
        try:
            with self._tx() as db:
                if self._version() != 1:
                    return
                for stmt in _UPGRADE_FROM_1:
                    db.execute(stmt)
                if db.execute("PRAGMA foreign_key_check").fetchall():
                    raise CatalogError(f"catalog {self.path}: layout upgrade 1 -> 2 found broken "
                                       "references; nothing was changed")
                db.execute("INSERT INTO schema_version (version, applied) VALUES (?, ?)",
                           (SCHEMA_VERSION, utc_now()))
        finally:
            self._db.execute("PRAGMA foreign_keys=ON")

    class _Tx:
        def __init__(self, cat: SQLiteCatalog) -> None:
            self.cat = cat

        def __enter__(self) -> sqlite3.Connection:
            self.cat._lock.acquire()
            try:
                self.cat._db.execute("BEGIN IMMEDIATE")
            except BaseException:
                self.cat._lock.release()
                raise
            return self.cat._db

        def __exit__(self, et: Any, ev: Any, tb: Any) -> None:
            try:
                if et is None:
                    self.cat._db.execute("COMMIT")
                else:
                    self.cat._db.execute("ROLLBACK")
            finally:
                self.cat._lock.release()

    def _tx(self) -> SQLiteCatalog._Tx:
        if self._db is None:
            raise CatalogError(f"catalog {self.path} is closed")
        if self.read_only:
            raise CatalogError(f"catalog {self.path} is open read-only")
        return SQLiteCatalog._Tx(self)

    def _check_open(self) -> None:
        if self._db is None:
            raise CatalogError(f"catalog {self.path} is closed")

    def _q(self, sql: str, params: Iterable[Any] = ()) -> list[sqlite3.Row]:
        with self._lock:
            self._check_open()
            return self._db.execute(sql, tuple(params)).fetchall()

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                try:
                    self._db.execute("PRAGMA optimize")  # refresh planner statistics if useful
                except sqlite3.Error:
                    pass
                self._db.close()
                self._db = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return f"SQLiteCatalog({self.path!r})"

    @staticmethod
    def _existing(db: sqlite3.Connection, table: str, col: str, keys: Iterable[str]) -> set[str]:
        keys = list(keys)
        if not keys:
            return set()
        sql = {("generation_runs", "run_id"): "SELECT run_id FROM generation_runs WHERE run_id IN "
                                              "(SELECT atlas_key(value) FROM json_each(?))",
               ("sequences", "key"): "SELECT key FROM sequences WHERE key IN "
                                     "(SELECT atlas_key(value) FROM json_each(?))",
               ("arrays", "key"): "SELECT key FROM arrays WHERE key IN "
                                  "(SELECT atlas_key(value) FROM json_each(?))",
               ("dataset_versions", "version_id"): "SELECT version_id FROM dataset_versions "
                                                   "WHERE version_id IN "
                                                   "(SELECT atlas_key(value) FROM json_each(?))",
               ("training_runs", "run_id"): "SELECT run_id FROM training_runs WHERE run_id IN "
                                            "(SELECT atlas_key(value) FROM json_each(?))"}[(table, col)]
        return {r[0] for r in db.execute(sql, (_key_list(keys),))}

    @staticmethod
    def _delete_nodes(db: sqlite3.Connection, ids: list[str]) -> None:
        if ids:
            db.executemany("DELETE FROM edges WHERE src = ?", ((i,) for i in ids))
            db.executemany("DELETE FROM edges WHERE dst = ?", ((i,) for i in ids))

    # ------------------------------------------------------------------------------ registration

    def register_run(self, run: GenerationRun | Mapping[str, Any]) -> None:
        r = run_record(run, check=self._validate)
        with self._tx() as db:
            self._register_run_tx(db, r)

    def register_sequences(self, seqs: Iterable[Sequence | Mapping[str, Any]],
                           timesteps: Iterable[TimeStep | Mapping[str, Any]] = (),
                           arrays: Iterable[ArrayRecord | Mapping[str, Any]] = ()) -> None:
        """Insert or replace sequences with their parts, in one transaction.

        A sequence given here is replaced whole: its time steps, arrays and source files become
        exactly the ones given in this call (earlier parts not given again are removed). Parts
        whose sequence is not in ``seqs`` must belong to a sequence already catalogued and are
        inserted or replaced individually. ``derived_from`` must name an array of this batch or
        one already catalogued. A run id names a run whether or not it is catalogued yet.
        """
        b = make_batch(seqs, timesteps, arrays, self._validate)
        if not (b.seqs or b.timesteps or b.arrays):
            return
        with self._tx() as db:
            self._register_tx(db, b)

    def remove_sequences(self, keys: Iterable[str]) -> int:
        keys = list(dict.fromkeys(keys))
        if not keys:
            return 0
        with self._tx() as db:
            return self._remove_tx(db, keys)

    # (the bodies of the public writes, run inside a transaction; commit_sync combines them)

    def _register_run_tx(self, db: sqlite3.Connection, r: GenerationRun) -> None:
        rid = node_id(r.NODE_KIND, r.run_id)
        other = node_id("ImportRun" if r.NODE_KIND == "GenerationRun" else "GenerationRun",
                        r.run_id)
        db.execute(_UPSERT_RUN, _run_row(r))
        db.execute("DELETE FROM edges WHERE src IN (?, ?) AND rel = 'wasAssociatedWith'",
                   (rid, other))
        db.executemany(_UPSERT_EDGE, [
            (rid, "wasAssociatedWith", node_id("CodeVersion", r.code_version), "{}"),
            (rid, "wasAssociatedWith", node_id("Host", r.host), "{}")])
        # the sequences that name it (registered before it, or under the other kind)
        db.execute("DELETE FROM edges WHERE dst = ? AND rel = 'wasGeneratedBy'", (other,))
        db.execute("INSERT OR IGNORE INTO edges (src, rel, dst, props) SELECT 'Sequence:' || key, "
                   "'wasGeneratedBy', ?, '{}' FROM sequences WHERE run_id = ?", (rid, r.run_id))

    def _register_tx(self, db: sqlite3.Connection, b: Any) -> None:
        outside = b.outside_sequence_keys()
        missing = outside - self._existing(db, "sequences", "key", outside)
        if missing:
            raise CatalogNotFound(missing_message("sequences", missing,
                                                  " (parts given without their sequence)"))
        derived = b.outside_derived_keys()
        missing = derived - self._existing(db, "arrays", "key", derived)
        if missing:
            raise CatalogNotFound(missing_message("arrays named in derived_from", missing))
        # stale parts of re-registered sequences
        keep = b.child_keys_by_sequence()
        stale: list[str] = []
        for skey, kids in keep.items():
            kids_set = set(kids)
            for r in db.execute("SELECT key FROM timesteps WHERE sequence_key = ?", (skey,)):
                if r[0] not in kids_set:
                    stale.append(node_id("TimeStep", r[0]))
            for r in db.execute("SELECT key FROM arrays WHERE sequence_key = ?", (skey,)):
                if r[0] not in kids_set:
                    stale.append(node_id("Array", r[0]))
        if stale:
            self._delete_nodes(db, stale)
            db.executemany("DELETE FROM timesteps WHERE key = ?",
                           [(i.split(":", 1)[1],) for i in stale if i.startswith("TimeStep:")])
            db.executemany("DELETE FROM arrays WHERE key = ?",
                           [(i.split(":", 1)[1],) for i in stale if i.startswith("Array:")])
        # sequences
        old_sources = self._source_keys_of(db, [s.key for s in b.seqs])
        db.executemany(_UPSERT_SEQ, [_seq_row(s) for s in b.seqs])
        db.executemany("DELETE FROM sequence_levels WHERE sequence_key = ?",
                       [(s.key,) for s in b.seqs])
        db.executemany("INSERT OR IGNORE INTO sequence_levels (level, sequence_key) VALUES (?, ?)",
                       [(lv, s.key) for s in b.seqs for lv in s.levels])
        db.executemany("DELETE FROM sequence_perturbations WHERE sequence_key = ?",
                       [(s.key,) for s in b.seqs])
        db.executemany("INSERT OR IGNORE INTO sequence_perturbations (kind, sequence_key) "
                       "VALUES (?, ?)", [(k, s.key) for s in b.seqs for k in s.perturbation_kinds])
        if b.seqs:
            db.executemany("INSERT INTO stat_widths (stat, width) VALUES (?, ?) "
                           "ON CONFLICT(stat) DO UPDATE SET width = max(width, excluded.width)",
                           list(batch_widths(b.seqs).items()))
        db.executemany("DELETE FROM edges WHERE src = ? AND rel IN ('wasGeneratedBy', "
                       "'wasDerivedFrom')", [(node_id("Sequence", s.key),) for s in b.seqs])
        runs = {s.run_id for s in b.seqs if s.run_id is not None}
        run_kind = {r[0]: r[1] for r in db.execute(
            "SELECT run_id, kind FROM generation_runs WHERE run_id IN "
            "(SELECT atlas_key(value) FROM json_each(?))", (_key_list(sorted(runs)),))} if runs else {}
        edges = [(node_id("Sequence", s.key), "wasGeneratedBy",
                  node_id("ImportRun" if run_kind[s.run_id] == "import" else "GenerationRun",
                          s.run_id), "{}")
                 for s in b.seqs if s.run_id in run_kind]
        # source files of imports
        files: dict[str, SourceFile] = {}
        for s in b.seqs:
            for f, member in s.source_files():
                files[f.key] = f
                edges.append((node_id("Sequence", s.key), "wasDerivedFrom",
                              node_id("SourceFile", f.key),
                              dumps({"member": member} if member is not None else {}, "edge")))
        db.executemany("INSERT INTO source_files (key, uri, size, sha256, format) "
                       "VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET uri=excluded.uri, "
                       "size=excluded.size, sha256=excluded.sha256, format=excluded.format",
                       [(f.key, f.uri, f.size, f.sha256, f.format) for f in files.values()])
        # parts
        db.executemany(_UPSERT_TS, [_ts_row(t) for t in b.timesteps])
        edges += [(node_id("Sequence", t.sequence_key), "hasTimeStep",
                   node_id("TimeStep", t.key), "{}") for t in b.timesteps]
        db.executemany(_UPSERT_ARR, [_arr_row(a) for a in b.arrays])
        edges += [(node_id("Sequence", a.sequence_key), "hasArray", node_id("Array", a.key), "{}")
                  for a in b.arrays]
        db.executemany("DELETE FROM edges WHERE src = ? AND rel = 'wasDerivedFrom'",
                       [(node_id("Array", a.key),) for a in b.arrays])
        edges += [(node_id("Array", a.key), "wasDerivedFrom", node_id("Array", a.derived_from),
                   dumps({"operation": a.operation} if a.operation is not None else {}, "edge"))
                  for a in b.arrays if a.derived_from is not None]
        db.executemany(_UPSERT_EDGE, edges)
        self._drop_orphan_sources(db, old_sources - set(files))

    def _remove_tx(self, db: sqlite3.Connection, keys: list[str]) -> int:
        present = sorted(self._existing(db, "sequences", "key", keys))
        sources = self._source_keys_of(db, present)
        ids: list[str] = []
        for k in present:
            ids.append(node_id("Sequence", k))
            ids += [node_id("TimeStep", r[0]) for r in
                    db.execute("SELECT key FROM timesteps WHERE sequence_key = ?", (k,))]
            ids += [node_id("Array", r[0]) for r in
                    db.execute("SELECT key FROM arrays WHERE sequence_key = ?", (k,))]
        self._delete_nodes(db, ids)
        db.executemany("DELETE FROM sequences WHERE key = ?", [(k,) for k in present])
        self._drop_orphan_sources(db, sources)
        return len(present)

    @staticmethod
    def _source_keys_of(db: sqlite3.Connection, seq_keys: list[str]) -> set[str]:
        if not seq_keys:
            return set()
        return {r[0].split(":", 1)[1] for r in db.execute(
            "SELECT dst FROM edges WHERE rel = 'wasDerivedFrom' AND dst LIKE 'SourceFile:%' AND "
            "src IN (SELECT 'Sequence:' || atlas_key(value) FROM json_each(?))", (_key_list(seq_keys),))}

    @staticmethod
    def _drop_orphan_sources(db: sqlite3.Connection, keys: set[str]) -> None:
        """SourceFile nodes live through the sequences derived from them."""
        for k in keys:
            if db.execute("SELECT 1 FROM edges WHERE dst = ? LIMIT 1",
                          (node_id("SourceFile", k),)).fetchone() is None:
                db.execute("DELETE FROM source_files WHERE key = ?", (k,))

    # ------------------------------------------------------------------------------ store sync

    def store_sync(self) -> StoreSync | None:
        rows = self._q("SELECT store_id, position, pending, version, updated FROM store_sync "
                       "WHERE id = 1")
        if not rows:
            return None
        r = rows[0]
        return StoreSync(r[0], r[1], json.loads(r[2]), r[3], r[4])

    def commit_sync(self, expect_version: int | None, state: StoreSync, *,
                    runs: Iterable[GenerationRun | Mapping[str, Any]] = (),
                    seqs: Iterable[Sequence | Mapping[str, Any]] = (),
                    timesteps: Iterable[TimeStep | Mapping[str, Any]] = (),
                    arrays: Iterable[ArrayRecord | Mapping[str, Any]] = (),
                    remove: Iterable[str] = ()) -> bool:
        """See :meth:`atlasstore.catalog.base.Catalog.commit_sync` (BEGIN IMMEDIATE: the check
        and the writes are one transaction, so a concurrent commit cannot slip in between)."""
        rs, b, gone = sync_batch(runs, seqs, timesteps, arrays, remove, self._validate)
        with self._tx() as db:
            row = db.execute("SELECT version FROM store_sync WHERE id = 1").fetchone()
            have = None if row is None else int(row[0])
            if have != expect_version:
                return False
            for r in rs:
                self._register_run_tx(db, r)
            if gone:
                self._remove_tx(db, gone)
            if b.seqs or b.timesteps or b.arrays:
                self._register_tx(db, b)
            db.execute("INSERT INTO store_sync (id, store_id, position, pending, version, updated) "
                       "VALUES (1, ?, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET "
                       "store_id=excluded.store_id, position=excluded.position, "
                       "pending=excluded.pending, version=excluded.version, "
                       "updated=excluded.updated",
                       (state.store_id, int(state.position), json.dumps(state.pending, sort_keys=True),
                        (have or 0) + 1, utc_now()))
        return True

    # ------------------------------------------------------------------------------ lineage records

    def register_dataset_version(self, version_id: str, query: Mapping[str, Any],
                                 split: Mapping[str, Any], sequence_keys: Iterable[str], *,
                                 created: str | None = None,
                                 checksums: Mapping[str, str] | None = None) -> DatasetVersion:
        keys = list(dict.fromkeys(sequence_keys))
        with self._tx() as db:
            missing = set(keys) - self._existing(db, "sequences", "key", keys)
            if missing:
                raise CatalogNotFound(missing_message("sequences", missing,
                                                      f" (dataset version {version_id!r})"))
            if checksums is None:
                per: dict[str, dict[str, str]] = {k: {} for k in keys}
                for r in db.execute("SELECT sequence_key, level, field, checksum FROM arrays "
                                    "WHERE sequence_key IN (SELECT atlas_key(value) FROM json_each(?))",
                                    (_key_list(keys),)):
                    per[r[0]][f"{r[1]}/{r[2]}"] = r[3]
                checksums = {k: sequence_checksum(v) for k, v in per.items()}
            dv = DatasetVersion.build(version_id, query, split, keys, created,
                                      check=self._validate, checksums=checksums)
            vid = node_id("DatasetVersion", dv.version_id)
            db.execute("INSERT INTO dataset_versions (version_id, query, split, sequence_keys, "
                       "created, checksums) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(version_id) DO "
                       "UPDATE SET query=excluded.query, split=excluded.split, "
                       "sequence_keys=excluded.sequence_keys, created=excluded.created, "
                       "checksums=excluded.checksums",
                       (dv.version_id, dumps(dv.query, "query"), dumps(dv.split, "split"),
                        json.dumps(dv.sequence_keys, ensure_ascii=False), dv.created,
                        dumps(dv.checksums, "checksums")))
            db.execute("DELETE FROM edges WHERE src = ? AND rel = 'wasDerivedFrom'", (vid,))
            db.executemany(_UPSERT_EDGE, [(vid, "wasDerivedFrom", node_id("Sequence", k), "{}")
                                          for k in dv.sequence_keys])
        return dv

    def register_training_run(self, run_id: str, config: Mapping[str, Any],
                              dataset_version_id: str, *, code_version: str | None = None,
                              host: str | None = None, started: str | None = None,
                              finished: str | None = None) -> TrainingRun:
        tr = TrainingRun.build(run_id, config, dataset_version_id, code_version, host,
                               started, finished, check=self._validate)
        tid = node_id("TrainingRun", tr.run_id)
        with self._tx() as db:
            if not self._existing(db, "dataset_versions", "version_id", [dataset_version_id]):
                raise CatalogNotFound(f"dataset version {dataset_version_id!r} is not in the "
                                      f"catalog (training run {run_id!r})")
            db.execute("INSERT INTO training_runs (run_id, config, dataset_version_id, "
                       "code_version, host, started, finished) VALUES (?, ?, ?, ?, ?, ?, ?) "
                       "ON CONFLICT(run_id) DO UPDATE SET config=excluded.config, "
                       "dataset_version_id=excluded.dataset_version_id, "
                       "code_version=excluded.code_version, host=excluded.host, "
                       "started=excluded.started, finished=excluded.finished",
                       (tr.run_id, dumps(tr.config, "config"), tr.dataset_version_id,
                        tr.code_version, tr.host, tr.started, tr.finished))
            db.execute("DELETE FROM edges WHERE src = ? AND rel IN ('used', 'wasAssociatedWith')",
                       (tid,))
            edges = [(tid, "used", node_id("DatasetVersion", tr.dataset_version_id), "{}")]
            if tr.code_version is not None:
                edges.append((tid, "wasAssociatedWith", node_id("CodeVersion", tr.code_version), "{}"))
            if tr.host is not None:
                edges.append((tid, "wasAssociatedWith", node_id("Host", tr.host), "{}"))
            db.executemany(_UPSERT_EDGE, edges)
        return tr

    def register_checkpoint(self, ckpt_id: str, training_run_id: str, step: int,
                            metrics: Mapping[str, Any], path: str, *,
                            created: str | None = None) -> Checkpoint:
        ck = Checkpoint.build(ckpt_id, training_run_id, step, metrics, path, created,
                              check=self._validate)
        cid = node_id("Checkpoint", ck.ckpt_id)
        with self._tx() as db:
            if not self._existing(db, "training_runs", "run_id", [training_run_id]):
                raise CatalogNotFound(f"training run {training_run_id!r} is not in the catalog "
                                      f"(checkpoint {ckpt_id!r})")
            db.execute("INSERT INTO checkpoints (ckpt_id, training_run_id, step, metrics, path, "
                       "created) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(ckpt_id) DO UPDATE SET "
                       "training_run_id=excluded.training_run_id, step=excluded.step, "
                       "metrics=excluded.metrics, path=excluded.path, created=excluded.created",
                       (ck.ckpt_id, ck.training_run_id, ck.step, dumps(ck.metrics, "metrics"),
                        ck.path, ck.created))
            db.execute("DELETE FROM edges WHERE src = ? AND rel = 'wasGeneratedBy'", (cid,))
            db.execute(_UPSERT_EDGE, (cid, "wasGeneratedBy",
                                      node_id("TrainingRun", ck.training_run_id), "{}"))
        return ck

    # ------------------------------------------------------------------------------ queries

    @staticmethod
    def _filters(frags: dict[str, str], where: list[str], params: list[Any], *,
                 entropy: Range | None, mean: Range | None, variance: Range | None,
                 perturbation: str | None, seek: bool = False) -> None:
        # With ``seek``, the first stat given (entropy, then mean, then variance) leads: it gets
        # the index range seek; the others are plain filters (SQLite has no statistics to choose
        # between two range indexes, so it is told).
        leading: str | None = None
        for name, rng in (("entropy", entropy), ("mean", mean), ("variance", variance)):
            lo, hi = check_range(name, rng)
            if lo is None and hi is None:
                continue
            lead = seek and leading is None
            if lead:
                leading = name
            if lo is not None and lead:
                where.append(frags[f"{name}_seek"])
                params.append(lo - seek_margin(lo))
            if lo is not None:
                where.append(frags[f"{name}_lo"])
                params.append(lo)
            if hi is not None:
                where.append(frags[f"{name}_hi" if lead or not seek else f"{name}_hi_noidx"])
                params.append(hi)
        if perturbation is not None:
            where.append(frags["perturbation"])
            params.append(str(perturbation))

    @staticmethod
    def _seq_filters(where: list[str], params: list[Any], domains: Any, run_id: str | None,
                     level: int | None, sequence_keys: Iterable[str] | None = None) -> None:
        doms = check_domains(domains)
        if doms is not None:
            where.append(_SEQ_FILTERS["domains"])
            params.append(_key_list(doms))
        if run_id is not None:
            where.append(_SEQ_FILTERS["run_id"])
            params.append(str(run_id))
        if level is not None:
            where.append(_SEQ_FILTERS["level"])
            params.append(int(level))
        if sequence_keys is not None:
            where.append(_SEQ_FILTERS["sequence_keys"])
            params.append(_key_list(sequence_keys))

    def find_sequences(self, domains: str | Iterable[str] | None = None, run_id: str | None = None,
                       level: int | None = None, entropy: Range | None = None,
                       mean: Range | None = None, variance: Range | None = None,
                       perturbation: str | None = None, limit: int | None = None
                       ) -> list[Sequence]:
        """Sequences matching every given filter, ordered by key (ranges: overlap, inclusive)."""
        where: list[str] = []
        params: list[Any] = []
        self._seq_filters(where, params, domains, run_id, level)
        self._filters(_SEQ_FILTERS, where, params, entropy=entropy, mean=mean,
                      variance=variance, perturbation=perturbation, seek=True)
        lim = check_limit(limit)
        sql = "SELECT s.* FROM sequences AS s"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY s.key"
        if lim is not None:
            sql += " LIMIT ?"
            params.append(lim)
        return [_seq_from(r) for r in self._q(sql, params)]

    def find_timesteps(self, domains: str | Iterable[str] | None = None,
                       run_id: str | None = None, level: int | None = None,
                       entropy: Range | None = None, mean: Range | None = None,
                       variance: Range | None = None, perturbation: str | None = None,
                       limit: int | None = None, sequence_keys: Iterable[str] | None = None
                       ) -> list[TimeStep]:
        """Time steps whose own stats lie in the ranges (inclusive), of sequences matching the
        sequence filters; ordered by (sequence_key, t)."""
        where: list[str] = []
        params: list[Any] = []
        self._seq_filters(where, params, domains, run_id, level, sequence_keys)
        self._filters(_TS_FILTERS, where, params, entropy=entropy, mean=mean,
                      variance=variance, perturbation=perturbation)
        lim = check_limit(limit)
        sql = "SELECT ts.* FROM timesteps AS ts JOIN sequences AS s ON s.key = ts.sequence_key"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts.sequence_key, ts.t"
        if lim is not None:
            sql += " LIMIT ?"
            params.append(lim)
        return [_ts_from(r) for r in self._q(sql, params)]

    def get_sequence(self, key: str) -> Sequence | None:
        rows = self._q("SELECT * FROM sequences WHERE key = ?", (key,))
        return _seq_from(rows[0]) if rows else None

    def get_run(self, run_id: str) -> GenerationRun | None:
        rows = self._q("SELECT * FROM generation_runs WHERE run_id = ?", (run_id,))
        return _run_from(rows[0]) if rows else None

    def get_timesteps(self, sequence_key: str) -> list[TimeStep]:
        return [_ts_from(r) for r in self._q(
            "SELECT * FROM timesteps WHERE sequence_key = ? ORDER BY t", (sequence_key,))]

    def get_arrays(self, sequence_key: str) -> list[ArrayRecord]:
        return [_arr_from(r) for r in self._q(
            "SELECT * FROM arrays WHERE sequence_key = ? ORDER BY level DESC, field",
            (sequence_key,))]

    def get_dataset_version(self, version_id: str) -> DatasetVersion | None:
        rows = self._q("SELECT * FROM dataset_versions WHERE version_id = ?", (version_id,))
        return _dv_from(rows[0]) if rows else None

    def get_training_run(self, run_id: str) -> TrainingRun | None:
        rows = self._q("SELECT * FROM training_runs WHERE run_id = ?", (run_id,))
        return _tr_from(rows[0]) if rows else None

    def get_checkpoint(self, ckpt_id: str) -> Checkpoint | None:
        rows = self._q("SELECT * FROM checkpoints WHERE ckpt_id = ?", (ckpt_id,))
        return _ck_from(rows[0]) if rows else None

    def list_domains(self) -> list[str]:
        return [r[0] for r in self._q("SELECT DISTINCT domain FROM sequences ORDER BY domain")]

    def count(self) -> int:
        return int(self._q("SELECT COUNT(*) FROM sequences")[0][0])

    def sequence_keys(self) -> list[str]:
        return [r[0] for r in self._q("SELECT key FROM sequences ORDER BY key")]

    # ------------------------------------------------------------------------------ lineage

    def _resolve(self, node: str) -> str:
        """A qualified node id for ``node`` (qualified already, or a bare key looked up)."""
        q = split_node_id(node)
        if q is not None and self._node_exists(*q):
            return node
        found = [k for k in RESOLVE_ORDER if self._node_exists(k, node)]
        if len(found) > 1:
            raise CatalogError(f"{node!r} is ambiguous ({', '.join(found)}); "
                               f"pass a node id like {node_id(found[0], node)!r}")
        if not found:
            raise CatalogNotFound(f"no catalog node {node!r}")
        return node_id(found[0], node)

    def _node_exists(self, kind: str, key: str) -> bool:
        if kind in ("CodeVersion", "Host"):
            return bool(self._q("SELECT 1 FROM edges WHERE dst = ? AND rel = 'wasAssociatedWith' "
                                "LIMIT 1", (node_id(kind, key),)))
        sql, _ = _NODE_FETCH[kind]
        return bool(self._q(sql, (_key_list([key]),)))

    def lineage(self, node: str) -> Lineage:
        """Full upstream lineage of any node (a node id ``"Kind:key"`` or a bare key)."""
        with self._lock:
            root = self._resolve(node)
            ids = [r[0] for r in self._q(_LINEAGE_NODES, (root,))]
            erows = self._q(_LINEAGE_EDGES, (root,))
            by_kind: dict[str, list[str]] = {}
            for i in ids:
                kind, key = split_node_id(i)  # type: ignore[misc]
                by_kind.setdefault(kind, []).append(key)
            nodes: dict[str, LineageNode] = {}
            for kind, keys in by_kind.items():
                if kind in ("CodeVersion", "Host"):
                    for k in keys:
                        nid = node_id(kind, k)
                        nodes[nid] = LineageNode(nid, kind, k, agent_properties(kind, k))
                    continue
                sql, conv = _NODE_FETCH[kind]
                for row in self._q(sql, (_key_list(keys),)):
                    rec = conv(row)
                    k = getattr(rec, _KEY_ATTR[kind])
                    nid = node_id(kind, k)
                    nodes[nid] = LineageNode(nid, kind, k, rec.to_dict())
        edges = [LineageEdge(r["src"], r["rel"], r["dst"], json.loads(r["props"])) for r in erows]
        return Lineage(root=root, nodes=nodes, edges=sort_edges(edges))

    def generation_runs_for(self, node: str) -> list[GenerationRun]:
        """The generation runs upstream of ``node`` (seeds, configs, code versions), by run id."""
        with self._lock:
            root = self._resolve(node)
            return [_run_from(r) for r in self._q(_GENERATION_RUNS, (root,))]
