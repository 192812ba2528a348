"""The SQLite catalog's statements: constant SQL text, values always passed as parameters."""

from __future__ import annotations

import json
from collections.abc import Iterable

from atlasstore.catalog.base import (
    STRUCTURAL_RELS,
    UPSTREAM_RELS,
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
_TS_COLS = ("key", "sequence_key", "t", "mean", "variance", "entropy", "sum", "perturbation_kinds",
            "valid_cells")
_UPSERT_TS = (
    f"INSERT INTO timesteps ({', '.join(_TS_COLS)}) VALUES ({', '.join('?' * len(_TS_COLS))}) "
    "ON CONFLICT(key) DO UPDATE SET " + ", ".join(f"{c}=excluded.{c}" for c in _TS_COLS[1:]))
_ARR_COLS = ("key", "sequence_key", "level", "field", "shape", "dtype", "checksum",
             "nbytes_stored", "stat_mean", "stat_variance", "stat_min", "stat_max", "stat_entropy",
             "derived_from", "operation", "stat_valid_fraction")
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
    # the domain and run filters with index use disabled (unary +): for the steps of a stat
    # query, which the step's stat index finds (driving from a domain's sequences would visit
    # every one of them, whatever the range selects)
    "domains_noidx": "+s.domain IN (SELECT atlas_key(value) FROM json_each(?))",
    "run_id_noidx": "+s.run_id = ?",
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
