"""The one interface both catalog backends implement (:class:`Catalog`), checked by the contract
tests against SQLite and a real Neo4j server."""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Any, Protocol, Self, runtime_checkable

from atlasstore.catalog.base import Range
from atlasstore.catalog.lineage import Lineage
from atlasstore.catalog.records import (
    ArrayRecord,
    Checkpoint,
    DatasetVersion,
    GenerationRun,
    Sequence,
    StoreSync,
    TimeStep,
    TrainingRun,
)


@runtime_checkable
class Catalog(Protocol):
    """What every catalog backend offers. See the module docstring for semantics."""

    # registration ---------------------------------------------------------------------------
    def register_run(self, run: GenerationRun | Mapping[str, Any]) -> None:
        """Insert or replace a generation or import run (by its ``kind``) and its agent edges,
        and link the sequences that name it (idempotent)."""

    def register_sequences(self, seqs: Iterable[Sequence | Mapping[str, Any]],
                           timesteps: Iterable[TimeStep | Mapping[str, Any]] = (),
                           arrays: Iterable[ArrayRecord | Mapping[str, Any]] = ()) -> None:
        """Insert or replace a batch of sequences with their time steps and arrays, atomically."""

    def remove_sequences(self, keys: Iterable[str]) -> int:
        """Remove sequences with their time steps, arrays and edges; returns how many existed."""

    def register_dataset_version(self, version_id: str, query: Mapping[str, Any],
                                 split: Mapping[str, Any], sequence_keys: Iterable[str], *,
                                 created: str | None = None,
                                 checksums: Mapping[str, str] | None = None) -> DatasetVersion:
        """Register the selection; ``checksums`` (key -> :func:`sequence_checksum`) pins the data
        it was trained on, else they are computed from the catalogued arrays."""

    def register_training_run(self, run_id: str, config: Mapping[str, Any],
                              dataset_version_id: str, *, code_version: str | None = None,
                              host: str | None = None, started: str | None = None,
                              finished: str | None = None) -> TrainingRun:
        ...

    def register_checkpoint(self, ckpt_id: str, training_run_id: str, step: int,
                            metrics: Mapping[str, Any], path: str, *,
                            created: str | None = None) -> Checkpoint:
        ...

    # queries ----------------------------------------------------------------------------------
    def find_sequences(self, domains: str | Iterable[str] | None = None, run_id: str | None = None,
                       level: int | None = None, entropy: Range | None = None,
                       mean: Range | None = None, variance: Range | None = None,
                       perturbation: str | None = None, limit: int | None = None
                       ) -> list[Sequence]:
        ...

    def find_timesteps(self, domains: str | Iterable[str] | None = None,
                       run_id: str | None = None, level: int | None = None,
                       entropy: Range | None = None, mean: Range | None = None,
                       variance: Range | None = None, perturbation: str | None = None,
                       limit: int | None = None, sequence_keys: Iterable[str] | None = None
                       ) -> list[TimeStep]:
        ...

    def get_sequence(self, key: str) -> Sequence | None: ...
    def get_run(self, run_id: str) -> GenerationRun | None: ...
    def get_timesteps(self, sequence_key: str) -> list[TimeStep]: ...
    def get_arrays(self, sequence_key: str) -> list[ArrayRecord]: ...
    def get_dataset_version(self, version_id: str) -> DatasetVersion | None: ...
    def get_training_run(self, run_id: str) -> TrainingRun | None: ...
    def get_checkpoint(self, ckpt_id: str) -> Checkpoint | None: ...
    def list_domains(self) -> list[str]: ...
    def count(self) -> int: ...
    def sequence_keys(self) -> list[str]: ...
    def lineage(self, node: str) -> Lineage: ...
    def generation_runs_for(self, node: str) -> list[GenerationRun]: ...

    def store_sync(self) -> StoreSync | None:
        """What this catalog last applied of its store's change log; None if never synced."""

    def commit_sync(self, expect_version: int | None, state: StoreSync, *,
                    runs: Iterable[GenerationRun | Mapping[str, Any]] = (),
                    seqs: Iterable[Sequence | Mapping[str, Any]] = (),
                    timesteps: Iterable[TimeStep | Mapping[str, Any]] = (),
                    arrays: Iterable[ArrayRecord | Mapping[str, Any]] = (),
                    remove: Iterable[str] = ()) -> bool:
        """In one transaction, if the sync version is still ``expect_version`` (None: never
        synced): register ``runs``, remove the sequences ``remove``, register ``seqs`` with
        their parts, and record ``state`` (its version becomes the old one + 1). False, with
        nothing written, when another process committed in between."""

    def close(self) -> None: ...
    def __enter__(self) -> Catalog: ...
    def __exit__(self, *exc: object) -> None: ...


class ClosesOnExit:
    """Context-manager support shared by the backends: ``with`` closes the catalog."""

    def close(self) -> None:  # pragma: no cover - each backend defines it
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


#: What a run or a training accepts as its catalog: an open :class:`Catalog` (used, never
#: closed), a spec for :func:`atlasstore.catalog.open_catalog` (opened and closed by the run),
#: None (the default catalog beside the store) or False (no catalog).
CatalogArg = Catalog | str | os.PathLike[str] | bool | None
