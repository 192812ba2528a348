"""Listing a store by names alone: what ``atlas ls`` shows without opening sequence documents.

:meth:`AtlasStore.sequences` reads every sequence document of a domain to tell committed
sequences from writes in progress (one GET each on a remote store); a listing of names is one
LIST per domain (per thousand names on S3), whatever the domain holds.
"""

from __future__ import annotations

from zarr.core.sync import sync

from atlasstore.errors import InvalidName
from atlasstore.records import validate_name
from atlasstore.store.atlas_store import AtlasStore


def sequence_names(store: AtlasStore, domain: str) -> list[str]:
    """Names of a domain's sequence groups, sorted, from one listing and no document read:
    committed sequences and writes in progress alike (``sequences`` tells them apart)."""
    store.domain_group(domain)  # an unknown domain is NotFound naming the ones there are

    async def _names() -> list[str]:
        return [k async for k in store.zarr_group.store.list_dir(domain)]

    out = []
    for name in sorted(sync(_names())):
        try:
            validate_name(name, "sequence id")
        except InvalidName:
            continue
        if name != "zarr.json":
            out.append(name)
    return out
