"""Finding records by domain, run and statistics, and walking lineage (one recursive CTE)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

from atlasstore.catalog.base import (
    RESOLVE_ORDER,
    Range,
    check_domains,
    check_limit,
    check_range,
    node_id,
    seek_margin,
    split_node_id,
)
from atlasstore.catalog.lineage import Lineage, LineageEdge, LineageNode, agent_properties, sort_edges
from atlasstore.catalog.records import (
    ArrayRecord,
    Checkpoint,
    DatasetVersion,
    GenerationRun,
    Sequence,
    TimeStep,
    TrainingRun,
)
from atlasstore.catalog.sqlite.connection import SQLiteConnection
from atlasstore.catalog.sqlite.rows import (
    _KEY_ATTR,
    _NODE_FETCH,
    _arr_from,
    _ck_from,
    _dv_from,
    _run_from,
    _seq_from,
    _tr_from,
    _ts_from,
)
from atlasstore.catalog.sqlite.sql import (
    _GENERATION_RUNS,
    _LINEAGE_EDGES,
    _LINEAGE_NODES,
    _SEQ_FILTERS,
    _TS_FILTERS,
    _key_list,
)
from atlasstore.errors import CatalogError, CatalogNotFound


class SQLiteQueries(SQLiteConnection):
    """The reading half of :class:`~atlasstore.catalog.sqlite.SQLiteCatalog`."""

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
                     level: int | None, sequence_keys: Iterable[str] | None = None,
                     by_steps: bool = False) -> None:
        # by_steps: the steps' stat index leads, the domain and run filters only filter
        noidx = "_noidx" if by_steps else ""
        doms = check_domains(domains)
        if doms is not None:
            where.append(_SEQ_FILTERS["domains" + noidx])
            params.append(_key_list(doms))
        if run_id is not None:
            where.append(_SEQ_FILTERS["run_id" + noidx])
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
        ranged = any(check_range(n, r) != (None, None)
                     for n, r in (("entropy", entropy), ("mean", mean), ("variance", variance)))
        self._seq_filters(where, params, domains, run_id, level, sequence_keys,
                          by_steps=ranged and sequence_keys is None)
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
