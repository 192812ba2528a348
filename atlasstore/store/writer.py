"""Writing one sequence in time blocks: the store's write path, for arrays of any length.

:class:`SequenceWriter` takes a sequence a block of time steps at a time (a whole array, a file
per step, a slab of an HDF5 trajectory) and never holds more than one shard's worth of steps
(``Layout.time_shard``, 128) plus what is derived from it: each full block is validated,
its pyramid and gradients derived level by level, written as whole shards (so no shard is ever
read back and rewritten), and folded into per-step records, per-array statistics and the
SHA-256 checksums, which are updated in time order and so equal the checksums of the whole
array. Only :meth:`commit` makes the sequence visible (the store's commit protocol: one atomic
write of the sequence document); an error, or leaving the ``with`` block by an exception,
deletes what was written. :meth:`AtlasStore.write_sequence` is this writer fed one array, so
the all-at-once and the streaming paths give identical sequences.

What a sequence holds is described by a :class:`FieldSpec` (its primary array's name and kind,
see :mod:`atlasstore.physics.fields`) and, optionally, :class:`Coordinates` (physical x, y and time):
sequences with coordinates carry coordinate arrays ``time``, ``y`` and ``x`` in every level group,
so plain ``xarray.open_zarr`` shows physical axes (see docs/store-format.md).
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import zarr
from numpy.typing import ArrayLike, NDArray
from zarr.core.buffer import default_buffer_prototype
from zarr.core.sync import sync

from atlasstore._version import __version__
from atlasstore.errors import SequenceExists, StoreError
from atlasstore.io.provenance import utc_now
from atlasstore.io.schemas import validate
from atlasstore.physics import fields as physics
from atlasstore.records import ENERGY, NO_COORDINATES, Coordinates, FieldSpec, validate_name
from atlasstore.store.change_log import ChangeLog
from atlasstore.store.documents import (
    MULTISCALES_CONVENTION,
    NO_MEMBERS,
    group_document,
    json_buffer,
    json_document,
    multiscales_attr,
    node_document,
)
from atlasstore.store.handle import StoreHandle
from atlasstore.store.values import Moments, with_missing_as_nan

DIMS = ("time", "y", "x")
CHECKSUM_ALGORITHM = "sha256 of decoded values (C order, little-endian float32)"
#: float64 working set of one derivation sub-block (bounds a writer's temporaries)
SUB_BLOCK_BYTES = 32 * 2**20

GRADIENT_ATTRS: dict[str, dict[str, str]] = {
    "grad_x": {"long_name": "d/dx (central differences, one-sided at edges)"},
    "grad_y": {"long_name": "d/dy (central differences, one-sided at edges)"},
}


class _ArrayState:
    """One array being written: its zarr handle, running checksum and statistics."""

    def __init__(self, arr: zarr.Array, with_entropy: bool) -> None:
        self.arr = arr
        self.sha = hashlib.sha256()
        self.moments = Moments(with_entropy)


def shard_steps(layout: Any, n_steps: int) -> tuple[int, int]:
    """(steps per inner chunk, steps per shard) of an array of ``n_steps`` under ``layout``."""
    tc = max(1, min(layout.time_chunk, n_steps))
    ts = -(-max(tc, min(layout.time_shard, n_steps)) // tc) * tc  # whole inner chunks, >= 1
    return tc, ts


class SequenceWriter:
    """Writes one sequence of ``n_steps`` maps of ``(ny, nx)`` in time blocks; see the module
    docstring. Use :meth:`AtlasStore.sequence_writer`::

        with store.sequence_writer("lab", "run0", (1000, 512, 512)) as w:
            for block in blocks:            # (t, 512, 512) each, any t
                w.append(block)             # commits when the block ends without an error

    ``levels``/``smallest`` choose the pyramid (:func:`physics.pyramid_levels`); ``steps``
    given to :meth:`append` are merged over the computed step records (e.g. ``perturbations``,
    ``metadata``, ``time``); ``overwrite`` replaces a complete sequence of the same id (an
    incomplete one, a crashed writer's, is always replaced).

    Missing cells (a land mask, a gap) are stored as NaN (docs/store-format.md): the masked
    cells of a ``numpy.ma.MaskedArray`` always, NaN cells of a plain array when
    ``nan_is_missing`` declares them (otherwise a NaN is bad input). inf is always refused.
    """

    def __init__(self, store: StoreHandle, domain: str, sequence_id: str,
                 shape: tuple[int, int, int], *, field: FieldSpec = ENERGY,
                 levels: Sequence[int] | None = None, smallest: int = physics.SMALLEST_LEVEL,
                 generation: Mapping[str, Any] | None = None,
                 coords: Coordinates | None = None, overwrite: bool = False,
                 nan_is_missing: bool = False) -> None:
        store.require_writable()
        validate_name(sequence_id, "sequence id")
        store.domain_group(domain)
        what = f"sequence {domain}/{sequence_id}"
        if len(shape) != 3 or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool)
                                      and s >= 1 for s in shape):
            raise physics.EnergyMapError(f"{what}: shape must be (time, y, x) positive integers, "
                                         f"got {shape!r}")
        if not isinstance(field, FieldSpec):
            raise TypeError(f"field must be a FieldSpec, got {type(field).__name__}")
        self.store, self.domain, self.sequence_id, self.what = store, domain, sequence_id, what
        self.n_steps, self.ny, self.nx = (int(s) for s in shape)
        self.field = field
        self.kind = field.kind
        try:
            self.levels = physics.pyramid_levels((self.ny, self.nx), smallest,
                                                 None if levels is None else tuple(levels))
        except physics.GridError as exc:
            raise physics.GridError(f"{what}: {exc}") from None
        self.coords = coords or NO_COORDINATES
        self._check_coords()
        gen = json_document(dict(generation or {}), f"{what} generation")
        # who wrote it (docs/catalog.md, lineage): generate, import and save_map say so;
        # anything else came through the Python API
        kind = gen.get("kind") or ("generate" if gen.get("run_id") else "api")
        self.generation = {"code_version": __version__, **gen, "kind": kind}
        self.field_record = json_document(field.record(), f"{what} field")
        self.coord_record = self.coords.record()
        self.overwrite = overwrite
        self.nan_is_missing = nan_is_missing
        self.created = utc_now()
        # the metadata is refused before any data is read or written
        validate(self._attrs(), "sequence", what=f"{what} attributes")
        _, self.block_steps = shard_steps(store.layout, self.n_steps)
        self._buf = np.empty((self.block_steps, self.ny, self.nx), np.float32)
        self._n_buf = 0
        self._extra: list[dict[str, Any]] = []
        self._t = 0  # steps written
        self._steps: list[dict[str, Any]] = []
        self._arrays: dict[str, _ArrayState] = {}
        self._started = False
        self._done = False
        if not overwrite and store.sequence_status(domain, sequence_id) == "complete":
            raise SequenceExists(f"{what} already exists and is complete")

    # ------------------------------------------------------------------ input

    def _check_coords(self) -> None:
        c = self.coords
        for name, n in (("y", self.ny), ("x", self.nx)):
            axis = getattr(c, name)
            if axis is not None and len(axis.values) != n:
                raise physics.EnergyMapError(f"{self.what}: {len(axis.values)} {name} coordinates "
                                             f"for {n} {name} pixels")
        if c.time is not None and len(c.time) != self.n_steps:
            raise physics.EnergyMapError(f"{self.what}: {len(c.time)} time values for "
                                         f"{self.n_steps} steps")

    def append(self, values: ArrayLike, steps: Sequence[Mapping[str, Any]] | None = None) -> None:
        """Add the next ``(t, y, x)`` block (or one ``(y, x)`` map); ``steps``: one mapping per
        step of extra record keys. Bad values raise (naming the steps) and abort the sequence."""
        if self._done:
            raise StoreError(f"{self.what}: the writer is closed")
        try:
            self._append(values, steps)
        except BaseException:
            self.abort()
            raise

    def _append(self, values: ArrayLike, steps: Sequence[Mapping[str, Any]] | None) -> None:
        t_first = self._t + self._n_buf
        a, masked = with_missing_as_nan(values)
        if a.ndim == 2:
            a = a[None]
        label = f"{self.what} step{'s' if a.shape[0] != 1 else ''} {t_first}" + (
            f"..{t_first + a.shape[0] - 1}" if a.ndim == 3 and a.shape[0] > 1 else "")
        if a.ndim != 3 or a.shape[1:] != (self.ny, self.nx):
            raise physics.EnergyMapError(f"{label}: expected maps of {self.ny}x{self.nx} "
                                         f"(time, y, x), got shape {a.shape}")
        if t_first + a.shape[0] > self.n_steps:
            raise physics.EnergyMapError(f"{label}: more than the {self.n_steps} steps declared")
        if masked is not None and not self.nan_is_missing:
            # the mask declares missing cells; a NaN under it is still bad input
            physics.validate_field(np.where(masked, 0.0, a), self.kind, label,
                                   what=self._what_values())
        a = physics.validate_field(a, self.kind, label, what=self._what_values(),
                                   allow_missing=self.nan_is_missing or masked is not None)
        if steps is None:
            steps = [{}] * a.shape[0]
        elif len(steps) != a.shape[0]:
            raise ValueError(f"{label}: {len(steps)} step records for {a.shape[0]} time steps")
        extra = json_document([dict(s) for s in steps], f"{label} step records")
        pos = 0
        while pos < a.shape[0]:
            k = min(a.shape[0] - pos, self.block_steps - self._n_buf)
            dst = self._buf[self._n_buf:self._n_buf + k]
            np.copyto(dst, a[pos:pos + k], casting="unsafe")
            if np.isinf(dst).any():
                raise physics.EnergyMapError(f"{label}: values overflow float32")
            nan = np.isnan(dst)
            if nan.any():  # one NaN bit pattern, so checksums do not depend on the source's
                dst[nan] = np.float32(np.nan)
            self._extra += extra[pos:pos + k]
            self._n_buf += k
            pos += k
            if self._n_buf == self.block_steps or self._t + self._n_buf == self.n_steps:
                self._flush()

    def _what_values(self) -> str:
        return "energy" if self.field.name == "energy" else f"extensive field {self.field.name!r}"

    # ------------------------------------------------------------------ writing

    def _start(self) -> None:
        """Replace whatever the id holds and create the uncommitted sequence with its arrays."""
        store, prefix = self.store, f"{self.domain}/{self.sequence_id}"
        if store.sequence_status(self.domain, self.sequence_id) == "complete" and not self.overwrite:
            raise SequenceExists(f"{self.what} already exists and is complete")
        # Also when there is no sequence metadata: a writer killed while deleting can leave level
        # groups behind without it, and they must not block (or leak into) the rewrite.
        store.delete_sequence(self.domain, self.sequence_id)
        self._started = True
        # "writing", with consolidated metadata that lists no members: through the consolidated
        # path (xarray's default) a sequence shows nothing of itself until it is committed
        zstore = store.zarr_group.store
        writing = json_buffer(group_document(self._attrs(), {}))
        sync(zstore.set_if_not_exists(f"{prefix}/zarr.json", writing))
        got = sync(zstore.get(f"{prefix}/zarr.json", prototype=default_buffer_prototype()))
        if got is None or got.to_bytes() != writing.to_bytes():
            raise StoreError(f"{self.what} is being written by another writer")
        sgroup = zarr.open_group(zstore, path=prefix, mode="r+", use_consolidated=False)
        base = self.levels[0]
        extensive = self.kind == "extensive"
        self._groups: dict[int, zarr.Group] = {}
        for lvl in self.levels:
            g = sgroup.create_group(str(lvl), attributes={"level": lvl,
                                                          "downsample_factor": base // lvl})
            self._groups[lvl] = g
            ny, nx = physics.grid_level_shape((self.ny, self.nx), lvl)
            for name, attrs in self._array_attrs().items():
                arr = self._create_array(g, name, (self.n_steps, ny, nx), {**attrs, "level": lvl})
                self._arrays[f"{lvl}/{name}"] = _ArrayState(
                    arr, with_entropy=extensive and name == self.field.name)

    def _array_attrs(self) -> dict[str, dict[str, Any]]:
        units = self.field.array_attrs()["units"]
        grad_units = ("energy / pixel^2" if units == "energy / pixel" else
                      f"({units}) / pixel" if units != "unknown" else "unknown")
        return {self.field.name: {**self.field.array_attrs(), "grid_spacing": 1.0},
                **{g: {**a, "units": grad_units, "grid_spacing": 1.0}
                   for g, a in GRADIENT_ATTRS.items()}}

    def _create_array(self, group: zarr.Group, name: str, shape: tuple[int, int, int],
                      attrs: Mapping[str, Any]) -> zarr.Array:
        return create_field_array(group, name, shape, self.store.layout, attrs)

    def _flush(self) -> None:
        """Derive, write and fold in the buffered block (whole shards; see module docstring)."""
        if not self._started:
            self._start()
        n, t0 = self._n_buf, self._t
        block = self._buf[:n]
        base = self.levels[0]
        sub = max(1, SUB_BLOCK_BYTES // (self.ny * self.nx * 8))
        for s0 in range(0, n, sub):
            for i, rec in enumerate(self._step_records(block[s0:s0 + sub]), start=s0):
                given = {k: v for k, v in self._extra[i].items() if k != "t"}  # t is ours
                if self.coords.time is not None:
                    rec["time"] = self.coords.time[t0 + i]
                self._steps.append({"t": t0 + i, "perturbations": [], **rec, **given})
        # the base level's per-step entropies are the step records' (computed once)
        step_h = (np.array([st["entropy"] for st in self._steps[-n:]])
                  if self.kind == "extensive" else None)
        for lvl in self.levels:
            ny, nx = physics.grid_level_shape((self.ny, self.nx), lvl)
            out = {name: np.empty((n, ny, nx), np.float32)
                   for name in (self.field.name, "grad_x", "grad_y")}
            for s0 in range(0, n, sub):
                v, gx, gy = physics.derive(block[s0:s0 + sub], (lvl,), self.kind)[lvl] \
                    if lvl != base else self._derive_base(block[s0:s0 + sub])
                for name, vals in zip(out, (v, gx, gy), strict=True):
                    out[name][s0:s0 + sub] = vals
                    known = (step_h[s0:s0 + sub] if step_h is not None and lvl == base
                             and name == self.field.name else None)
                    self._arrays[f"{lvl}/{name}"].moments.add(vals.astype(np.float64), known)
            for name, vals in out.items():
                st = self._arrays[f"{lvl}/{name}"]
                self._write_block(st.arr, t0, vals)
                st.sha.update(np.ascontiguousarray(vals, dtype="<f4").data)
            del out
        self._t += n
        self._n_buf = 0
        self._extra = []

    @staticmethod
    def _write_block(arr: zarr.Array, t0: int, values: NDArray[np.float32]) -> None:
        """Write steps ``t0..`` of one array (whole shards: ``t0`` is a shard boundary)."""
        arr[t0:t0 + values.shape[0]] = values

    @staticmethod
    def _derive_base(values: NDArray[np.float32]) -> tuple[NDArray, NDArray, NDArray]:
        gx, gy = physics.gradients(values)
        return values, gx, gy

    def _step_records(self, values: NDArray[np.float32]) -> list[dict[str, Any]]:
        keys = ("sum", "mean", "variance", "entropy") if self.kind == "extensive" else (
            "mean", "variance", "min", "max")
        out = []
        valid = np.isfinite(values).sum(axis=(-2, -1))
        for i, m in enumerate(values):
            if not valid[i]:
                raise physics.EnergyMapError(f"{self.what} step {len(self._steps) + i}"
                                             ": every cell is missing (a step needs data)")
            stats = physics.field_stats(m, self.kind)
            out.append({**{k: stats[k] for k in keys}, "valid_cells": int(valid[i])})
        return out

    def _attrs(self, status: str = "writing") -> dict[str, Any]:
        rec: dict[str, Any] = {
            "status": status, "domain": self.domain, "sequence_id": self.sequence_id,
            "n_steps": self.n_steps, "shape": [self.ny, self.nx], "levels": list(self.levels),
            "fields": [self.field.name, "grad_x", "grad_y"], "field": self.field_record,
            "dtype": "float32", "generation": self.generation, "created": self.created}
        if self.coord_record:
            rec["coordinates"] = self.coord_record
        return {"zarr_conventions": [MULTISCALES_CONVENTION],
                "multiscales": multiscales_attr(list(self.levels), self.levels[0]),
                "atlasstore_sequence": rec}

    def commit(self, generation: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Make the sequence visible (all ``n_steps`` must have been appended); returns the
        committed sequence attributes. ``generation`` adds keys known only after the data
        were read (an import's source checksums)."""
        if self._done:
            raise StoreError(f"{self.what}: the writer is closed")
        try:
            if generation:
                self.generation.update(json_document(dict(generation), f"{self.what} generation"))
            return self._commit()
        except BaseException:
            self.abort()
            raise

    def _commit(self) -> dict[str, Any]:
        if self._t + self._n_buf != self.n_steps:
            raise physics.EnergyMapError(f"{self.what}: {self._t + self._n_buf} of "
                                         f"{self.n_steps} steps were appended")
        if self._n_buf:
            self._flush()
        prefix = f"{self.domain}/{self.sequence_id}"
        store = self.store
        coord_members = self._write_coordinates()
        arrays: dict[str, Any] = {}
        members: dict[str, Any] = {}
        base = self.levels[0]
        name = self.field.name
        op = "area_downsample" if self.kind == "extensive" else "mean_downsample"
        for lvl in self.levels:
            members[str(lvl)] = {**node_document(self._groups[lvl]),
                                 "consolidated_metadata": NO_MEMBERS}
            for fname in (name, "grad_x", "grad_y"):
                st = self._arrays[f"{lvl}/{fname}"]
                members[f"{lvl}/{fname}"] = node_document(st.arr)
                if fname == name:
                    src = None if lvl == base else f"{base}/{name}"
                    how = None if lvl == base else f"{op}(factor={base // lvl})"
                else:
                    src = f"{lvl}/{name}"
                    how = f"gradient(axis={fname[-1]}, central, edge_order=1, h=1)"
                arrays[f"{lvl}/{fname}"] = {
                    "checksum": "sha256:" + st.sha.hexdigest(), "shape": list(st.arr.shape),
                    "stats": st.moments.result(), "derived_from": src, "operation": how,
                    "nbytes_stored": store.nbytes_stored(f"{prefix}/{lvl}/{fname}/")}
        # each group's members contiguous: zarr rebuilds the nesting with itertools.groupby
        members = dict(sorted({**members, **coord_members}.items()))
        attrs = self._attrs("complete")
        attrs["atlasstore_sequence"].update(
            steps=self._steps, completed=utc_now(), checksum_algorithm=CHECKSUM_ALGORITHM,
            arrays=arrays)
        validate(attrs, "sequence", what=f"{self.what} attributes")
        # intent, before the commit (a write that aborts before here leaves no entry behind)
        ChangeLog(store).record("write", self.domain, self.sequence_id)
        # The commit: one atomic write of the sequence document flips it to complete and carries
        # the consolidated metadata of its levels and arrays (immutable from now on, so it never
        # goes stale; a document per sequence, so concurrent writers never share one).
        sync(store.zarr_group.store.set(f"{prefix}/zarr.json",
                                        json_buffer(group_document(attrs, members))))
        self._done = True
        return attrs["atlasstore_sequence"]

    def _write_coordinates(self) -> dict[str, Any]:
        """Coordinate arrays (time, y, x) in every level group; their consolidated members."""
        c = self.coords
        if c.is_empty():
            return {}
        members: dict[str, Any] = {}
        time = c.time_values()
        for lvl in self.levels:
            f = self.levels[0] // lvl
            axes: dict[str, tuple[NDArray[np.float64], dict[str, Any]]] = {}
            if time is not None:
                tattrs = {"units": c.time_units} if c.time_units else {}
                if c.time_calendar:
                    tattrs["calendar"] = c.time_calendar
                axes["time"] = (time, {**tattrs, "long_name": c.time_source_name or "time"})
            for name in ("y", "x"):
                axis = getattr(c, name)
                if axis is not None:
                    attrs = {"units": axis.units} if axis.units else {}
                    axes[name] = (axis.at_level(f),
                                  {**attrs, "long_name": axis.source_name or name})
            g = self._groups[lvl]
            for name, (values, attrs) in axes.items():
                arr = g.create_array(name, shape=values.shape, dtype="float64",
                                     chunks=values.shape, compressors=[],
                                     fill_value=0.0, dimension_names=(name,),
                                     chunk_key_encoding={"name": "default", "separator": "."},
                                     attributes=attrs)
                arr[...] = values
                members[f"{lvl}/{name}"] = node_document(arr)
        return members

    def abort(self) -> None:
        """Delete what was written (nothing of it was ever visible); idempotent."""
        if self._done:
            return
        self._done = True
        if self._started:
            with contextlib.suppress(Exception):
                settle_zarr_writes()
                self.store.delete_sequence(self.domain, self.sequence_id)

    def __enter__(self) -> SequenceWriter:
        return self

    def __exit__(self, exc_type: object, *rest: object) -> None:
        if exc_type is not None:
            self.abort()
        elif not self._done:
            self.commit()


def create_field_array(group: zarr.Group, name: str, shape: tuple[int, int, int], layout: Any,
                       attrs: Mapping[str, Any]) -> zarr.Array:
    """A (time, y, x) float32 array of a level group, chunked and compressed by ``layout``."""
    t, ny, nx = shape
    tc, ts = shard_steps(layout, t)
    # (a short sequence is one shard; its last inner chunk may extend past the end)
    return group.create_array(
        name, shape=shape, dtype="float32", chunks=(tc, ny, nx), shards=(ts, ny, nx),
        compressors=layout.compressors(), fill_value=0.0, dimension_names=DIMS,
        # every shard is written, even all-zero ones, so a missing shard means corruption
        config={"write_empty_chunks": True},
        # "c.0.0.0" files beside zarr.json instead of nested c/0/0/ directories
        chunk_key_encoding={"name": "default", "separator": "."}, attributes=dict(attrs))


def settle_zarr_writes(timeout: float = 60.0) -> None:
    """Wait for the writes zarr still runs after one of them failed.

    zarr writes a node's metadata and (``set_if_not_exists``) its parents' in one
    ``asyncio.gather``; when one write fails the others go on in the background. A parent
    write that checked "exists" before our cleanup deleted the group would otherwise recreate
    an empty group there afterwards, even after the run has returned.
    """
    import asyncio

    async def _wait() -> None:
        me = asyncio.current_task()
        pending = [t for t in asyncio.all_tasks() if t is not me]
        if pending:
            await asyncio.wait(pending, timeout=timeout)

    sync(_wait())


