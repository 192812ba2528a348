"""The stream's background work: a producer thread that reads batches ahead into a bounded queue
(:class:`_Producer`) and the reading and normalising of one batch (:class:`_BatchMaker`)."""

from __future__ import annotations

import collections
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from atlasstore.training.order import epoch_batches
from atlasstore.training.windows import WindowSource, normalise_np, tree_map2

_jit_normalise: Any = None


def _device_normalise(raw: Any, params: Any) -> Any:
    """``(x - mean) * (1/std)`` per sample, one fused jitted pass per array on the device."""
    global _jit_normalise
    if _jit_normalise is None:
        import jax

        def norm(raw: Any, params: Any) -> Any:
            def one(x: Any, mi: Any) -> Any:
                shape = (-1,) + (1,) * (x.ndim - 1)
                return (x - mi[:, 0].reshape(shape)) * mi[:, 1].reshape(shape)
            return jax.tree_util.tree_map(one, raw, params)

        _jit_normalise = jax.jit(norm, donate_argnums=0)
    return _jit_normalise(raw, params)


_END = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class _Producer:
    """A background thread filling a bounded queue with (epoch, step, batch) items, in order.

    With ``workers > 1`` it keeps that many batches in flight on a small thread pool (reads
    overlap the NumPy copies and normalisation of the previous batch) and still enqueues them in
    stream order. Holds no reference to the iterator, so an iterator dropped without ``close()``
    is collected and its finaliser stops this thread.
    """

    def __init__(self, make: Callable[[int, int], Any], positions: Iterator[tuple[int, int]],
                 depth: int, workers: int = 1) -> None:
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=depth)
        self.stop_event = threading.Event()
        self._make = make
        self._positions = positions
        self._workers = workers
        self.thread = threading.Thread(target=self._run, name="atlasstore-stream-prefetch",
                                       daemon=True)
        self.thread.start()

    def _put(self, item: Any) -> bool:
        while not self.stop_event.is_set():
            try:
                self.queue.put(item, timeout=0.05)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        pool = None
        try:
            if self._workers <= 1:
                for epoch, step in self._positions:
                    if self.stop_event.is_set():
                        return
                    if not self._put((epoch, step, self._make(epoch, step))):
                        return
            else:
                from concurrent.futures import ThreadPoolExecutor

                pool = ThreadPoolExecutor(self._workers,
                                          thread_name_prefix="atlasstore-stream-read")
                inflight: collections.deque[tuple[int, int, Any]] = collections.deque()
                pos = iter(self._positions)
                exhausted = False
                while not self.stop_event.is_set():
                    while not exhausted and len(inflight) < self._workers:
                        nxt = next(pos, None)
                        if nxt is None:
                            exhausted = True
                            break
                        inflight.append((*nxt, pool.submit(self._make, *nxt)))
                    if not inflight:
                        break
                    epoch, step, fut = inflight.popleft()
                    if not self._put((epoch, step, fut.result())):
                        return
                if self.stop_event.is_set():
                    return
            self._put(_END)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the consumer
            self._put(_Failure(exc))
        finally:
            if pool is not None:
                pool.shutdown(wait=True, cancel_futures=True)

    def stop(self) -> None:
        self.stop_event.set()
        while True:  # unblock a producer waiting on a full queue
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        # never join from one of our own threads (a garbage collection may run the iterator's
        # finaliser anywhere): they exit by themselves once the stop event is set
        if not threading.current_thread().name.startswith("atlasstore-stream"):
            self.thread.join(timeout=30)


def _stop_producer(holder: dict[str, Any]) -> None:
    p = holder.get("producer")
    if p is not None:
        holder["producer"] = None
        p.stop()


class _BatchMaker:
    """Builds the batch at (epoch, step): order, read, device placement.

    Separate from the iterator so that the prefetch thread does not keep the iterator alive.
    """

    def __init__(self, source: WindowSource, seed: int, batch_size: int, process_index: int,
                 process_count: int, shuffle: bool, sharding: Any, global_arrays: bool,
                 normalise_on: str = "device") -> None:
        self.source = source
        self.normalise_on = normalise_on
        self.seed, self.batch_size, self.shuffle = seed, batch_size, shuffle
        self.process_index, self.process_count = process_index, process_count
        self.sharding = sharding
        self.global_arrays = global_arrays
        self._cache: tuple[int, NDArray[np.int64]] | None = None

    def order(self, epoch: int) -> NDArray[np.int64]:
        c = self._cache
        if c is not None and c[0] == epoch:
            return c[1]
        b = epoch_batches(len(self.source), self.seed, epoch, self.batch_size,
                          self.process_index, self.process_count, self.shuffle)
        self._cache = (epoch, b)
        return b

    def _put(self, tree: Any) -> Any:
        import jax

        if self.global_arrays:
            return jax.tree_util.tree_map(
                lambda x: jax.make_array_from_process_local_data(self.sharding, x), tree)
        return jax.device_put(tree, self.sharding)

    def __call__(self, epoch: int, step: int) -> dict[str, Any]:
        import jax

        raw, ids, params = self.source.read_raw(self.order(epoch)[step])
        mask = raw.pop("mask", None)  # missing cells: already filled; the mask is not normalised
        if params is None:
            dev = self._put(raw)
        elif self.normalise_on == "host":
            dev = self._put(tree_map2(normalise_np, raw, params))
        else:
            dev = _device_normalise(self._put(raw), self._put(params))
        if mask is not None:
            dev["mask"] = self._put(mask)
        jax.block_until_ready(dev)  # "ahead of the consumer" means: on the device, computed
        dev["ids"] = ids
        return dev
