"""The sequences a query names, found without listing a domain (see :class:`atlasstore.query.Query`).

A query with ``sequences`` costs what it names, not what the store holds: the store scan reads
just those documents and the catalog looks up just those keys, instead of enumerating every
sequence of the domain and filtering (a named ``id`` matches that id in every selected domain, a
``domain/id`` only in its domain).
"""

from __future__ import annotations

from collections.abc import Iterable

from atlasstore.errors import InvalidName, NotFound
from atlasstore.records import validate_name
from atlasstore.store.atlas_store import AtlasStore


def named_ids(domain: str, names: Iterable[str]) -> list[str]:
    """The sequence ids of ``domain`` that ``names`` could mean (sorted, each once); a name that
    cannot be a sequence id names nothing (the query reports it as unknown)."""
    out = set()
    for name in names:
        dom, slash, seq = name.partition("/")
        if not slash:
            seq = name
        elif dom != domain:
            continue
        try:
            validate_name(seq, "sequence id")
        except InvalidName:
            continue
        out.add(seq)
    return sorted(out)


def complete_named(store: AtlasStore, domain: str, names: Iterable[str]) -> list[str]:
    """The named ids of ``domain`` that are complete sequences: one document read each (kept
    in the store's cache of committed documents, so selecting them reads nothing more)."""
    out = []
    for seq in named_ids(domain, names):
        try:
            store.sequence_info(domain, seq)
        except NotFound:  # absent, or not (yet) complete: as the scan, which skips it
            continue
        out.append(seq)
    return out
