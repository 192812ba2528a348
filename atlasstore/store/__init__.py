"""The store: :class:`AtlasStore` (one Zarr v3 hierarchy: domain / sequence / level / field),
its writer, documents, change log and writer lock. The only package that touches zarr's
internals."""

from atlasstore.store.atlas_store import (
    DEFAULT_LAYOUT,
    FIELDS,
    AtlasStore,
    Layout,
    RunLog,
    array_stats,
    checksum,
    step_record,
)
from atlasstore.store.writer import DIMS, SequenceWriter

__all__ = ["DEFAULT_LAYOUT", "DIMS", "FIELDS", "AtlasStore", "Layout", "RunLog", "SequenceWriter",
           "array_stats", "checksum", "step_record"]
