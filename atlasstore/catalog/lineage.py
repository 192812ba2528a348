"""Lineage as a graph (PROV: entities, activities, agents): the nodes and edges both backends
return from ``lineage()``."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from atlasstore.catalog.base import PROV_CLASS


@dataclass(frozen=True)
class LineageNode:
    """A node of a lineage graph. ``properties`` is the record's ``to_dict()`` (agents:
    ``{"version": ...}`` / ``{"name": ...}``)."""

    id: str
    kind: str
    key: str
    properties: dict[str, Any]

    @property
    def prov(self) -> str:
        """The PROV class: ``"entity"``, ``"activity"`` or ``"agent"``."""
        return PROV_CLASS[self.kind]


@dataclass(frozen=True)
class LineageEdge:
    """``src -rel-> dst`` between node ids; ``properties`` e.g. ``{"operation": ...}``."""

    src: str
    rel: str
    dst: str
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass
class Lineage:
    """The full upstream lineage of ``root``: every node reached and the edges between them."""

    root: str
    nodes: dict[str, LineageNode]
    edges: list[LineageEdge]

    def of_kind(self, kind: str) -> list[LineageNode]:
        return sorted((n for n in self.nodes.values() if n.kind == kind), key=lambda n: n.id)

    def has_edge(self, src: str, rel: str, dst: str) -> bool:
        return any(e.src == src and e.rel == rel and e.dst == dst for e in self.edges)

    def edge(self, src: str, rel: str, dst: str) -> LineageEdge:
        for e in self.edges:
            if e.src == src and e.rel == rel and e.dst == dst:
                return e
        raise KeyError(f"no edge {src} -{rel}-> {dst}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (for the CLI and for PROV-JSON-like export)."""
        return {"root": self.root,
                "nodes": [{"id": n.id, "kind": n.kind, "prov": n.prov, "key": n.key,
                           "properties": n.properties} for n in sorted(self.nodes.values(),
                                                                       key=lambda n: n.id)],
                "edges": [{"src": e.src, "rel": e.rel, "dst": e.dst, "properties": e.properties}
                          for e in self.edges]}


def sort_edges(edges: Iterable[LineageEdge]) -> list[LineageEdge]:
    return sorted(edges, key=lambda e: (e.src, e.rel, e.dst))


def agent_properties(kind: str, key: str) -> dict[str, Any]:
    return {"version": key} if kind == "CodeVersion" else {"name": key}
