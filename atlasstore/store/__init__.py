"""The store: :class:`AtlasStore` (one Zarr v3 hierarchy: domain / sequence / level / field),
its writer, documents, change log and writer lock. The only package that touches zarr's
internals."""

from atlasstore.store.atlas_store import FIELDS, AtlasStore
from atlasstore.store.layout import DEFAULT_LAYOUT, Layout
from atlasstore.store.run_log import RunLog
from atlasstore.store.values import array_stats, checksum, step_record
from atlasstore.store.writer import DIMS, SequenceWriter

__all__ = ["DEFAULT_LAYOUT", "DIMS", "FIELDS", "AtlasStore", "Layout", "RunLog", "SequenceWriter",
           "array_stats", "checksum", "step_record"]
