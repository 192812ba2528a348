"""Finding records and walking lineage on the server."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
from atlasstore.catalog.neo4j.connection import Neo4jConnection
from atlasstore.catalog.neo4j.cypher_reads import (
    _AND,
    _CLOSURE,
    _COUNT,
    _EXISTS,
    _FIND_SEQ_HEAD,
    _FIND_SEQ_RETURN,
    _FIND_SEQ_TAIL,
    _FIND_TS_HEAD,
    _FIND_TS_RETURN,
    _FIND_TS_TAIL,
    _GENERATION_RUNS_TAIL,
    _GET,
    _GET_ARRAYS,
    _GET_TIMESTEPS,
    _LIMIT,
    _LINEAGE_TAIL,
    _LIST_DOMAINS,
    _SEQ_FILTERS,
    _SEQUENCE_KEYS,
    _START,
    _TS_FILTERS,
    _WHERE,
    _WIDTHS_HEAD,
)
from atlasstore.catalog.neo4j.rows import (
    _FROM_PROPS,
    _arr_from,
    _run_from,
    _seq_from_row,
    _ts_from,
    _ts_from_row,
)
from atlasstore.catalog.records import (
    ArrayRecord,
    Checkpoint,
    DatasetVersion,
    GenerationRun,
    Sequence,
    TimeStep,
    TrainingRun,
)
from atlasstore.errors import CatalogError, CatalogNotFound


class Neo4jQueries(Neo4jConnection):
    """The reading half of :class:`~atlasstore.catalog.neo4j.Neo4jCatalog`."""

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
