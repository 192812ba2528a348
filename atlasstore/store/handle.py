"""What the store's parts need of a store (:class:`StoreHandle`).

The writer, the change log and the writer lock work on an :class:`~atlasstore.store.AtlasStore`,
which in turn builds them; typing them against this protocol instead of the class keeps the
package's imports one way (``atlas_store`` imports its parts, never the reverse), the way
zarr-python's ``abc`` modules let its core and storage meet without importing each other.
"""

from __future__ import annotations

from typing import Any, Protocol

import zarr

from atlasstore.store.layout import Layout


class StoreHandle(Protocol):
    """An open store as its parts see it."""

    location: str
    layout: Layout

    @property
    def zarr_group(self) -> zarr.Group: ...

    @property
    def read_only(self) -> bool: ...

    def require_writable(self) -> None:
        """StoreError unless the store is open for writing."""

    def domain_group(self, domain: str) -> zarr.Group:
        """The group of an existing domain (NotFound naming the domains otherwise)."""

    def sequence_status(self, domain: str, sequence_id: str) -> str | None: ...

    def sequence_info(self, domain: str, sequence_id: str) -> dict[str, Any]: ...

    def delete_sequence(self, domain: str, sequence_id: str) -> None: ...

    def nbytes_stored(self, prefix: str = "") -> int: ...
