"""Writing many records at once: the batch both backends take, in the order lineage needs
(every array after the arrays it was derived from)."""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence as Seq
from dataclasses import dataclass
from typing import Any

from atlasstore.catalog.records import (
    ArrayRecord,
    GenerationRun,
    R,
    Sequence,
    TimeStep,
    run_record,
)
from atlasstore.errors import SchemaError


@dataclass
class Batch:
    """A validated registration batch (what both backends write)."""

    seqs: list[Sequence]
    timesteps: list[TimeStep]
    arrays: list[ArrayRecord]

    @property
    def seq_keys(self) -> set[str]:
        return {s.key for s in self.seqs}

    def child_keys_by_sequence(self) -> dict[str, list[str]]:
        """For each sequence of the batch: the keys of its parts given in this batch."""
        out: dict[str, list[str]] = {s.key: [] for s in self.seqs}
        parts: list[TimeStep | ArrayRecord] = [*self.timesteps, *self.arrays]
        for c in parts:
            if c.sequence_key in out:
                out[c.sequence_key].append(c.key)
        return out

    def outside_sequence_keys(self) -> set[str]:
        """Sequences referred to by parts of this batch but not registered in it."""
        mine = self.seq_keys
        parts: list[TimeStep | ArrayRecord] = [*self.timesteps, *self.arrays]
        return {c.sequence_key for c in parts} - mine

    def outside_derived_keys(self) -> set[str]:
        """Arrays named in ``derived_from`` that are not in this batch."""
        mine = {a.key for a in self.arrays}
        return {a.derived_from for a in self.arrays if a.derived_from is not None} - mine


def make_batch(seqs: Iterable[Any], timesteps: Iterable[Any], arrays: Iterable[Any],
               check: bool) -> Batch:
    """Validate and de-duplicate a batch (the last record of a repeated key wins)."""
    def dedup(items: list[R]) -> list[R]:
        return list({r.key: r for r in items}.values())  # type: ignore[attr-defined]
    b = Batch(dedup([Sequence.coerce(s, check=check) for s in seqs]),
              dedup([TimeStep.coerce(t, check=check) for t in timesteps]),
              derivation_order(dedup([ArrayRecord.coerce(a, check=check) for a in arrays])))
    return b


def sync_batch(runs: Iterable[Any], seqs: Iterable[Any], timesteps: Iterable[Any],
               arrays: Iterable[Any], remove: Iterable[str], check: bool
               ) -> tuple[list[GenerationRun], Batch, list[str]]:
    """The validated parts of a ``commit_sync`` call: runs, the registration batch, and the keys
    to remove (those registered again in the batch are not removed)."""
    b = make_batch(seqs, timesteps, arrays, check)
    return ([run_record(r, check=check) for r in runs], b,
            [k for k in dict.fromkeys(remove) if k not in b.seq_keys])


def derivation_order(arrays: list[ArrayRecord]) -> list[ArrayRecord]:
    """Arrays ordered so that a ``derived_from`` source in the batch comes before the arrays
    derived from it (stable otherwise); SchemaError on a derivation cycle."""
    by_key = {a.key: a for a in arrays}
    depth: dict[str, int] = {}
    for a in arrays:
        chain: list[str] = []
        k: str | None = a.key
        while k is not None and k in by_key and k not in depth:
            if k in chain:
                raise SchemaError(f"derivation cycle among arrays: {' -> '.join(chain + [k])}")
            chain.append(k)
            k = by_key[k].derived_from
        d = depth.get(k, -1) if k is not None and k in by_key else -1
        for ck in reversed(chain):
            d += 1
            depth[ck] = d
    return sorted(arrays, key=lambda a: depth[a.key])


def missing_message(what: str, keys: Iterable[str], context: str = "") -> str:
    keys = sorted(keys)
    shown = ", ".join(repr(k) for k in keys[:5]) + (f" and {len(keys) - 5} more" if len(keys) > 5 else "")
    return f"{len(keys)} {what} not in the catalog{context}: {shown}"


def chunks(items: Seq[Any], n: int) -> Iterable[Seq[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]
