"""Runs that write many sequences: the engine shared by both write verbs (:mod:`.engine`: Dask
tasks per sequence, resume, the writer lock, run records), :mod:`.generate` (synthetic domains)
and :mod:`.ingest` (``atlas import``)."""
