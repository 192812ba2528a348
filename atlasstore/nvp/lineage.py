"""Lineage of training runs in the catalog: DatasetVersion, TrainingRun, Checkpoint.

A run registers the DatasetVersion (the exact query and split), the TrainingRun and every
checkpoint, so that ``catalog.generation_runs_for("Checkpoint:<ckpt_id>")`` returns the
generation runs (seeds, configs, code versions) behind the training data
(:func:`generation_lineage`). During training the catalog is a side record: a failure to write
it is reported and the run goes on (:class:`LineageRecorder`); ``register_lineage`` can register
a finished run later from its ``run.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Self

from atlasstore.catalog.protocol import Catalog
from atlasstore.io.locations import default_catalog_location, is_remote
from atlasstore.store.atlas_store import AtlasStore

__all__ = [
    "LineageRecorder",
    "dataset_version_id",
    "generation_lineage",
    "register_lineage",
    "register_training_run",
]


def dataset_version_id(query: Mapping[str, Any], split: Mapping[str, Any],
                       keys: Sequence[str]) -> str:
    """A content id of a dataset version: equal query, split and sequences give equal ids."""
    blob = json.dumps({"query": query, "split": split, "keys": sorted(keys)}, sort_keys=True)
    return "dv-" + hashlib.sha256(blob.encode()).hexdigest()[:16]


def register_lineage(catalog: Catalog, run: Mapping[str, Any], store: AtlasStore | None = None,
                     checkpoints: Sequence[Mapping[str, Any]] = ()) -> str:
    """Register a run's DatasetVersion, TrainingRun and checkpoints in ``catalog``.

    ``run`` is the run record (``run.json`` of a run directory: run_id, dataset version id, query,
    split, config, ...). With ``store``, the catalog first catches up with the store
    (``index.refresh``) and the version pins the checksums of the store's sequences as they are
    now (``index.dataset_checksums``); without it, the sequences must already be catalogued and
    the catalog pins its own records. Idempotent. Returns the dataset version id.
    """
    keys = list(run["split"]["train"]) + list(run["split"]["val"])
    checksums = None
    if store is not None:
        from atlasstore.catalog.sync import dataset_checksums, refresh

        refresh(store, catalog)
    missing = [k for k in keys if catalog.get_sequence(k) is None]
    if missing:
        from atlasstore.catalog.batches import missing_message
        from atlasstore.errors import CatalogNotFound

        raise CatalogNotFound(missing_message("sequences", missing, " (training data)"))
    if store is not None:
        checksums = dataset_checksums(store, keys)
    dv = catalog.register_dataset_version(run["dataset_version_id"], run["query"], run["split"],
                                          keys, created=run["started"], checksums=checksums)
    register_training_run(catalog, run)
    for ck in checkpoints:
        catalog.register_checkpoint(ck["ckpt_id"], run["run_id"], int(ck["step"]),
                                    ck.get("metrics", {}), str(ck["path"]),
                                    created=ck.get("created"))
    return dv.version_id


def register_training_run(catalog: Catalog, run: Mapping[str, Any]) -> None:
    """(Re-)register the TrainingRun of a run record (e.g. once it has finished)."""
    catalog.register_training_run(run["run_id"], run["config"], run["dataset_version_id"],
                                  code_version=run.get("code_version"), host=run.get("host"),
                                  started=run["started"], finished=run.get("finished"))


def generation_lineage(catalog: Catalog, ckpt_id: str) -> dict[str, Any]:
    """From a checkpoint id: its training run, dataset version, the generation runs (seed,
    config, code version) and the sequences (with their seeds) behind its training data."""
    nid = f"Checkpoint:{ckpt_id}"
    runs = catalog.generation_runs_for(nid)
    lin = catalog.lineage(nid)
    seqs = [{"key": n.key, "seed": n.properties.get("seed"), "run_id": n.properties.get("run_id")}
            for n in lin.of_kind("Sequence")]
    return {"checkpoint": ckpt_id,
            "training_runs": [n.key for n in lin.of_kind("TrainingRun")],
            "dataset_versions": [n.key for n in lin.of_kind("DatasetVersion")],
            "generation_runs": [{"run_id": r.run_id, "seed": r.seed, "config": r.config,
                                 "code_version": r.code_version} for r in runs],
            "sequences": seqs}


class LineageRecorder:
    """The catalog of a training run, written best-effort.

    ``spec``: a Catalog object (used, never closed here), a catalog spec (opened and closed
    here), None (the SQLite catalog beside a local store; none for a remote one) or False (no
    lineage). The first failure is kept in ``errors`` and reported to ``emit`` as a
    ``catalog_error`` event; later writes are skipped. Use as a context manager: the catalog this
    opened is closed however the run ends.
    """

    def __init__(self, spec: Any, store_location: str,
                 emit: Callable[[dict[str, Any]], None] = lambda e: None) -> None:
        self.catalog: Catalog | None = None
        self._owned = False
        self.errors: list[str] = []
        self._emit = emit
        if spec is None and not is_remote(store_location):
            spec = default_catalog_location(store_location)
        if isinstance(spec, (str, os.PathLike)):
            from atlasstore.catalog import open_catalog

            self.catalog, self._owned = open_catalog(spec), True
        elif spec is not None and spec is not False:
            self.catalog = spec

    def _call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        if self.catalog is None or self.errors:
            return
        try:
            fn(self.catalog, *args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the run goes on; lineage can be re-registered
            self.errors.append(f"{type(exc).__name__}: {exc}")
            self._emit({"event": "catalog_error", "error": self.errors[-1]})

    def register_run(self, run: Mapping[str, Any], store: AtlasStore) -> None:
        self._call(register_lineage, run, store)

    def register_checkpoint(self, run_id: str, info: Mapping[str, Any]) -> None:
        self._call(lambda cat: cat.register_checkpoint(info["ckpt_id"], run_id, info["step"],
                                                       info["metrics"], info["path"],
                                                       created=info["created"]))

    def finish_run(self, run: Mapping[str, Any]) -> None:
        self._call(register_training_run, run)

    def close(self) -> None:
        if self._owned and self.catalog is not None:
            self.catalog.close()
            self.catalog = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
