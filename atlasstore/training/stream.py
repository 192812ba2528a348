"""Streaming training input: a JAX iterator of (multi-scale input window, target) batches.

Usage::

    q = Query(store, domains=("fluid_dynamics",), scale=256, window=5, stride=1)
    with stream(q, n_in=4, n_out=1, batch_size=16, seed=0, num_epochs=None) as it:
        for batch in it:              # {"inputs": {256: (B,4,256,256), 128: ..., 64: ...},
            ...                       #  "target": (B,1,256,256), "ids": [...]}  (jax.Arrays)
        ckpt = it.state()             # JSON-able; StreamIterator(...).restore(ckpt) resumes exactly

What a batch is
---------------
A *sample* is one of the query's windows, so the query's ``window`` must be ``n_in + n_out``
(a mismatch is refused with :class:`StreamError`); its ``stride``, ``time_range``, statistic
filters, ``perturbation`` and ``run_id`` choose the windows, and a ``region`` is refused (whole
maps only). ``inputs[level]`` holds the first ``n_in`` steps at every stored level up to the
query's ``scale`` (exactly as stored: nothing is resized at read time); ``target`` holds the
next ``n_out`` steps at the query's ``scale`` (so ``scale=128`` on a 256 store streams inputs
at 128 and 64 and a 128 target; see :class:`~atlasstore.training.windows.WindowSource`). Extra fields
(``fields=("grad_x",)``) come as ``batch["fields"][name][level]`` shaped like ``inputs``. Every
array is float32 ``(B, steps, y, x)``, normalised (see below) unless ``normalise=False``, and
already placed (transfer and normalisation finished) on the devices as a ``jax.Array``
sharded over a 1-D mesh axis ``"data"`` of the local devices (``batch_size``, the batch of this
process, must divide evenly between them); with several real JAX processes the mesh is global
and each process contributes its local rows (``jax.make_array_from_process_local_data``), so
the arrays hold ``batch_size * process_count`` rows. ``ids`` are this process's windows,
``domain/sequence@t0``.

Missing cells (stored as NaN, see docs/store-format.md) never reach the consumer: when a
selected array records missing cells (``stats.valid_fraction`` below 1), every batch is finite
and carries ``mask``, bool ``(B, n_in + n_out, y, x)`` at the query's scale (the input steps,
then the target steps; True = valid). A missing cell holds the mean the stream normalises by,
so 0 after normalisation; with ``normalise=False``, the mean of its sequence's valid cells of
that field and level (the sequence's recorded statistics). The normalisation statistics are
over valid cells only. Data without missing cells has no ``mask`` and is read as before.

Order, sharding, resume
-----------------------
Epoch ``e``'s order is ``permutation(N)`` of a PCG64 generator seeded with
``SeedSequence([seed, e])`` (identity when ``shuffle=False``): a pure function of (seed, epoch),
so it is the same on every process and after every restart. Process ``p`` of ``P`` takes
``perm[:N - N % P][p::P]`` (disjoint, equal shares that cover the epoch minus its remainder) and
cuts it into ``len // batch_size`` batches (the last partial batch is dropped, so every process
takes the same number of steps per epoch). The *state* is ``(epoch, step)`` of the next batch the
**consumer** will receive, plus seed and a fingerprint of everything that determines the stream
(windows, levels, n_in/n_out, batch size, shuffle, process share, fields, normalisation). Batches
that the prefetch thread read ahead are not counted, so ``restore(state)`` on a fresh iterator
continues with exactly the batch that would have come next. A state from another configuration
is refused with :class:`StreamError`.

Read path and machinery: measured choices
-----------------------------------------
Measured while building this (``/tmp`` experiments and ``benchmarks/bench_stream.py --quick``)
on the benchmark store (5 domains x 4 sequences x 20 steps at 256x256, levels 256/128/64;
n_in=4, n_out=1, batch 16 = 26 MB of float32), on a 2-core AMD EPYC VM shared with other jobs
(load average 2-11, so +-30 % noise; the full benchmark run on a quiet machine replaces these
numbers in ``benchmarks/results/stream.md``):

* **Read path: TensorStore's ``zarr3`` driver** (one handle per array; every copy of a batch
  issued at once and run in TensorStore's thread pool without the GIL). It reads the store's
  sharded arrays with blosc/zstd and crc32c and checks the digests (a flipped byte fails with
  ``DATA_LOSS ... Digest mismatch``, re-raised as :class:`~atlasstore.store.atlas_store.CorruptArray`).
  One batch: zarr-python per-sample ``AtlasStore.read`` 375 ms (43 samples/s),
  ``Query.read_windows`` per level 360 ms, TensorStore 65-70 ms (230-245 samples/s): ~6x.
  ``s3://`` stores are read the same way from a bounded local disk cache of their shards
  (:mod:`atlasstore.read.disk_cache`: fetched whole on first use, so the next epoch reads local
  disk); other URLs fall back to zarr-python (``reader="zarr"``).
* **A decoded-chunk cache** (TensorStore ``cache_pool``; ``cache_bytes="auto"`` = the decoded
  size of the arrays streamed, capped at 2 GiB). With stride 1 each step belongs to up to
  n_in + n_out windows, and every epoch reads everything again; without a cache each is decoded
  each time. Reads of one epoch: 150 samples/s uncached -> 2,490 samples/s once cached (the
  normalisation statistics pass warms it when it runs).
* **Copy straight into the batch** (``ts.array(view).write(source)``, no intermediate array),
  into 64-byte-aligned buffers, which JAX's CPU backend adopts in ``device_put`` without a copy
  (26 MB: ~16 ms -> ~0.1 ms), and **normalise on the device** in one jitted fused pass
  (per-sample mean and 1/std vectors) instead of two NumPy passes on the host; on a GPU that
  pass is free and the host does only the copy. Cached reads, batch of 16: read + NumPy
  normalise 442 samples/s, copy-into + NumPy 583, copy-into + device 663 (no normalisation at
  all: 1,104).
* **Machinery: our own producer thread** (bounded queue of ``prefetch`` batches; ``workers``
  batches in flight on a small pool, delivered in order), not Grain. Grain 0.2.18 was evaluated
  over the same source: ``MapDataset.source(src).shuffle(seed).batch(B).to_iter_dataset(
  ReadOptions(num_threads, prefetch_buffer_size))`` + ``grain.experimental.device_put``, and a
  batch-level ``MapDataset.range(steps).map(read_batch)`` variant. Its ``get_state``/
  ``set_state`` do resume exactly (checked in the benchmark). Throughput, uncached, median of 3:
  ours with 2 workers 358 samples/s; Grain batch-level 338 (2 threads) / 306 (4 threads); Grain
  per-sample (stacks samples again after reading them) 256-327. Same speed within the noise, as
  expected: the work is decoding and copying inside TensorStore, not Python. So Grain's speed
  was no reason to take it, and it does not express what we need directly: its per-epoch seed is
  ``seed + epoch`` (seed 0 epoch 1 == seed 1 epoch 0); slicing a repeated dataset across
  processes does not drop a per-epoch remainder; its state is a position inside its own
  pipeline, not (seed, epoch, step) with a fingerprint to refuse a foreign state; and it adds a
  dependency layer between us and the device stage. Here the stream is a pure function of
  (seed, epoch, step), and :class:`WindowSource` still implements Grain's random-access
  protocol (``__len__``, ``__getitem__``, ``_getitems``) so a Grain pipeline can be built on it.

Normalisation
-------------
Per (domain, field, level) mean and std, computed once and cached beside the store
(:mod:`atlasstore.training.normalization`, ``stats_path=`` to put them elsewhere); ``(x - mean) / std``
on the device; :meth:`StreamIterator.denormalise` (alias ``inverse``) undoes it per sample
(domains from the batch's ids).

Wait metric
-----------
Every ``next()`` records the time the consumer was blocked waiting for the batch (on the queue
with prefetch; the whole read with ``prefetch=0``): ``wait_times`` and :meth:`StreamIterator.wait_summary`
(count, mean, p50, p95, total and fraction of wall time since the first ``next()``).
"""

from __future__ import annotations

import hashlib
import json
import time
import weakref
from collections.abc import Mapping, Sequence
from typing import Any, Self

import numpy as np
from numpy.typing import NDArray

from atlasstore.errors import StreamError
from atlasstore.query import Query
from atlasstore.training.normalization import NormStats, load_or_compute_stats
from atlasstore.training.order import _positions
from atlasstore.training.producer import _END, _BatchMaker, _Failure, _Producer, _stop_producer
from atlasstore.training.windows import WindowSource, check_int

STATE_VERSION = 1


# ---------------------------------------------------------------------------- iterator


class StreamIterator:
    """Batches of a query's windows on the device(s); see the module docstring.

    Parameters: ``n_in`` input steps and ``n_out`` target steps per sample; ``batch_size``
    samples per batch on this process (split evenly over the local devices); ``seed``/``shuffle``
    for the per-epoch order; ``num_epochs`` (``None``: forever); ``prefetch`` batches read ahead
    by a background thread (0: read in ``next()``), ``workers`` batches read concurrently by it;
    ``fields`` extra input fields (default: the query's fields other than the primary field,
    see :class:`WindowSource`); ``normalise`` with statistics from ``stats_path`` (default
    beside the store); ``process_index``/``process_count`` override JAX's (for tests and custom
    launchers); ``devices`` the local devices to shard over (default ``jax.local_devices()``);
    ``reader`` "auto", "tensorstore" or "zarr".
    """

    def __init__(self, query: Query, *, n_in: int, n_out: int = 1, batch_size: int,
                 seed: int = 0, shuffle: bool = True, num_epochs: int | None = 1,
                 prefetch: int = 2, workers: int = 2, fields: Sequence[str] | None = None,
                 normalise: bool = True, normalise_on: str = "device",
                 stats_path: str | None = None, process_index: int | None = None,
                 process_count: int | None = None, devices: Sequence[Any] | None = None,
                 reader: str = "auto", cache_bytes: int | str = "auto") -> None:
        import jax
        from jax.sharding import Mesh, NamedSharding, PartitionSpec

        check_int("n_in", n_in, 1)
        check_int("n_out", n_out, 1)
        self.batch_size = check_int("batch_size", batch_size, 1)
        self.seed = check_int("seed", seed, 0)
        self.prefetch = check_int("prefetch", prefetch, 0)
        self.workers = check_int("workers", workers, 1)
        if num_epochs is not None:
            check_int("num_epochs", num_epochs, 1)
        self.num_epochs = num_epochs
        self.shuffle = bool(shuffle)
        self.process_count = check_int("process_count", jax.process_count()
                                        if process_count is None else process_count, 1)
        self.process_index = check_int("process_index", jax.process_index()
                                        if process_index is None else process_index, 0)
        if self.process_index >= self.process_count:
            raise StreamError(f"process_index {self.process_index} is not below process_count "
                              f"{self.process_count}")

        if normalise_on not in ("device", "host"):
            raise StreamError(f"normalise_on must be 'device' or 'host', got {normalise_on!r}")
        self.source = WindowSource(query, n_in, n_out, fields=fields, reader=reader,
                                   cache_bytes=cache_bytes)
        src = self.source
        n = len(src)
        share = n // self.process_count
        if self.batch_size > share:
            raise StreamError(f"batch_size {self.batch_size} is larger than this process's share "
                              f"of the data ({n} windows / {self.process_count} process(es) = "
                              f"{share} per epoch); use a smaller batch or a larger query")
        self.steps_per_epoch = share // self.batch_size

        # devices and sharding
        self._global = devices is None and process_count is None and jax.process_count() > 1
        devs = list(jax.devices() if self._global else (devices or jax.local_devices()))
        n_local = len([d for d in devs if d.process_index == jax.process_index()]) or len(devs)
        if self.batch_size % n_local:
            raise StreamError(f"batch_size {self.batch_size} is not divisible by the {n_local} "
                              f"local device(s) it is sharded over")
        self.mesh = Mesh(np.array(devs), ("data",))
        self.sharding = NamedSharding(self.mesh, PartitionSpec("data"))

        # normalisation
        self.norm_stats: NormStats | None = None
        self.stats_computed = False
        if normalise:
            self.norm_stats, self.stats_computed = load_or_compute_stats(
                src.store, src.sequences, src.all_fields, src.levels, path=stats_path,
                reader=src._reader)  # computing through the stream's reader warms its cache
            src.set_stats(self.norm_stats)

        self.fingerprint = self._fingerprint()
        self._epoch = 0
        self._step = 0
        self._holder: dict[str, Any] = {"producer": None}
        self._finalizer = weakref.finalize(self, _stop_producer, self._holder)
        self._closed = False
        self.wait_times: list[float] = []
        self._t_first: float | None = None
        self._t_last: float | None = None
        self._maker = _BatchMaker(src, self.seed, self.batch_size, self.process_index,
                                  self.process_count, self.shuffle, self.sharding, self._global,
                                  normalise_on)

    # ---------------------------------------------------------------- identity & state

    def _fingerprint(self) -> str:
        src = self.source
        cfg = {
            "v": STATE_VERSION, "windows": [w.id for w in src.windows], "n_in": src.n_in,
            "n_out": src.n_out, "levels": list(src.levels), "fields": list(src.all_fields),
            "batch_size": self.batch_size, "shuffle": self.shuffle,
            "process_index": self.process_index, "process_count": self.process_count,
            "normalisation": self.norm_stats.fingerprint if self.norm_stats else None,
        }
        blob = json.dumps(cfg, sort_keys=True).encode()
        return "sha256:" + hashlib.sha256(blob).hexdigest()

    def state(self) -> dict[str, Any]:
        """Position of the next batch the consumer will receive (JSON-able)."""
        return {"version": STATE_VERSION, "seed": self.seed, "epoch": self._epoch,
                "step": self._step, "steps_per_epoch": self.steps_per_epoch,
                "fingerprint": self.fingerprint}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continue from ``state``; refuses a state of another configuration."""
        if not isinstance(state, Mapping):
            raise StreamError(f"state must be a dict from state(), got {type(state).__name__}")
        missing = [k for k in ("version", "seed", "epoch", "step", "fingerprint") if k not in state]
        if missing:
            raise StreamError(f"not a stream state (missing {', '.join(missing)})")
        if state["version"] != STATE_VERSION:
            raise StreamError(f"stream state version {state['version']} is not {STATE_VERSION}")
        if state["seed"] != self.seed:
            raise StreamError(f"state was saved with seed {state['seed']}, this stream has seed "
                              f"{self.seed}")
        if state["fingerprint"] != self.fingerprint:
            raise StreamError("state belongs to a different stream configuration (windows, "
                              "n_in/n_out, batch size, shuffle, process share, fields, or "
                              "normalisation statistics differ): refusing to resume from it")
        epoch, step = check_int("epoch", state["epoch"], 0), check_int("step", state["step"], 0)
        if step >= self.steps_per_epoch:
            raise StreamError(f"state step {step} is beyond the {self.steps_per_epoch} steps of "
                              "an epoch")
        self._stop()
        self._epoch, self._step = epoch, step

    # ---------------------------------------------------------------- order

    def epoch_indices(self, epoch: int) -> NDArray[np.int64]:
        """This process's window indices of every batch in ``epoch``: (steps, batch_size)."""
        return self._maker.order(epoch)

    # ---------------------------------------------------------------- iteration

    def __iter__(self) -> StreamIterator:
        return self

    def _done(self) -> bool:
        return self.num_epochs is not None and self._epoch >= self.num_epochs

    def __next__(self) -> dict[str, Any]:
        if self._closed:
            raise StreamError("the stream is closed")
        t0 = time.perf_counter()
        if self._t_first is None:
            self._t_first = t0
        if self._done():
            raise StopIteration
        if self.prefetch == 0:
            epoch, step = self._epoch, self._step
            batch = self._maker(epoch, step)
        else:
            prod = self._holder["producer"]
            if prod is None:
                where = _positions(self._epoch, self._step, self.steps_per_epoch,
                                   self.num_epochs)
                prod = _Producer(self._maker, where, self.prefetch, self.workers)
                self._holder["producer"] = prod
            item = prod.queue.get()
            if isinstance(item, _Failure):
                self._stop()
                raise item.exc
            if item is _END:
                self._stop()
                raise StopIteration
            epoch, step, batch = item
            assert (epoch, step) == (self._epoch, self._step), "producer out of step"
        step += 1
        if step == self.steps_per_epoch:
            epoch, step = epoch + 1, 0
        self._epoch, self._step = epoch, step
        t1 = time.perf_counter()
        self.wait_times.append(t1 - t0)
        self._t_last = t1
        return batch

    # ---------------------------------------------------------------- metrics

    def wait_summary(self) -> dict[str, float]:
        """Consumer wait per ``next()``: count, mean, p50, p95, total (s), fraction of wall time."""
        w = np.asarray(self.wait_times, dtype=np.float64)
        wall = (self._t_last - self._t_first) if self._t_first is not None and self._t_last else 0.0
        if w.size == 0:
            return {"count": 0, "mean": 0.0, "p50": 0.0, "p95": 0.0, "total": 0.0,
                    "wall": 0.0, "fraction": 0.0}
        return {"count": int(w.size), "mean": float(w.mean()), "p50": float(np.percentile(w, 50)),
                "p95": float(np.percentile(w, 95)), "total": float(w.sum()), "wall": float(wall),
                "fraction": float(w.sum() / wall) if wall > 0 else 1.0}

    def reset_waits(self) -> None:
        self.wait_times.clear()
        self._t_first = self._t_last = None

    # ---------------------------------------------------------------- normalisation

    def denormalise(self, x: Any, ids: Sequence[str], field: str | None = None,
                    level: int | None = None) -> Any:
        """Undo the normalisation of ``x`` (B, ...) whose rows are the windows ``ids``.

        ``field`` defaults to the primary field (the target's), ``level`` to the full-resolution
        level (the target's). Returns the same kind of array (NumPy in, NumPy out; jax in, jax
        out). Identity when ``normalise=False``.
        """
        if self.norm_stats is None:
            return x
        field = field or self.source.primary
        lvl = self.source.base_level if level is None else int(level)
        doms = [i.split("/", 1)[0] for i in ids]
        if len(doms) != x.shape[0]:
            raise StreamError(f"{len(doms)} ids for {x.shape[0]} rows")
        ms = np.array([self.norm_stats.mean_std(d, field, lvl) for d in doms], np.float32)
        shape = (len(doms),) + (1,) * (x.ndim - 1)
        mean, std = ms[:, 0].reshape(shape), ms[:, 1].reshape(shape)
        if isinstance(x, np.ndarray):
            return x * std + mean
        import jax.numpy as jnp

        return x * jnp.asarray(std) + jnp.asarray(mean)

    inverse = denormalise

    def normalise(self, x: Any, ids: Sequence[str], field: str | None = None,
                  level: int | None = None) -> Any:
        """Apply the stream's normalisation to raw values ``x`` (B, ...) of the windows ``ids``."""
        if self.norm_stats is None:
            return x
        field = field or self.source.primary
        lvl = self.source.base_level if level is None else int(level)
        ms = np.array([self.norm_stats.mean_std(i.split("/", 1)[0], field, lvl) for i in ids],
                      np.float32)
        shape = (len(ids),) + (1,) * (x.ndim - 1)
        return (x - ms[:, 0].reshape(shape)) / ms[:, 1].reshape(shape)

    # ---------------------------------------------------------------- lifecycle

    def _stop(self) -> None:
        _stop_producer(self._holder)

    def close(self) -> None:
        """Stop the prefetch thread and drop read-ahead batches (idempotent)."""
        self._stop()
        self._closed = True

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def levels(self) -> tuple[int, ...]:
        return self.source.levels

    def __len__(self) -> int:
        """Batches in the whole stream (``num_epochs`` epochs); TypeError when endless."""
        if self.num_epochs is None:
            raise TypeError("an endless stream (num_epochs=None) has no length")
        return self.num_epochs * self.steps_per_epoch


def stream(query: Query, *, n_in: int, n_out: int = 1, batch_size: int, **kwargs: Any
           ) -> StreamIterator:
    """A :class:`StreamIterator` over ``query``; see its parameters.

    The query defines the samples and none of its parameters is ignored: ``window`` must equal
    ``n_in + n_out`` (StreamError otherwise); ``stride``, ``time_range``, statistic filters,
    ``perturbation`` and ``run_id`` choose the windows; the target is at the query's ``scale``
    and the inputs at every stored level up to it; a ``region`` is refused.
    """
    return StreamIterator(query, n_in=n_in, n_out=n_out, batch_size=batch_size, **kwargs)
