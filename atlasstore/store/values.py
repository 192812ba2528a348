"""What the store computes of the values it writes: checksums, per-array statistics and per-step
records (one definition shared by the writer, the audit and the catalog)."""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from atlasstore.physics import fields as physics


def step_record(t: int, energy: NDArray, **extra: Any) -> dict[str, Any]:
    """The committed record of step ``t`` (stats of its base-level map) plus ``extra`` keys."""
    stats = physics.map_stats(energy)
    return {"t": t, "perturbations": [], **{k: stats[k] for k in ("sum", "mean", "variance",
                                                                 "entropy")}, **extra}


def checksum(values: ArrayLike) -> str:
    """SHA-256 of decoded values as C-order little-endian float32."""
    a = np.ascontiguousarray(np.asarray(values), dtype="<f4")
    return "sha256:" + hashlib.sha256(a.tobytes()).hexdigest()


def array_stats(values: NDArray, with_entropy: bool) -> dict[str, float]:
    """The committed statistics of a whole array (what :class:`Moments` folds block by
    block): over its valid cells, with their fraction."""
    m = Moments(with_entropy)
    m.add(np.asarray(values, dtype=np.float64))
    return m.result()


class Moments:
    """Mean, variance, min, max (and mean entropy) of an array's valid cells, folded block by
    block in float64 (Chan et al.'s pairwise update), so memory does not grow with the array;
    with the fraction of cells that are valid (not missing)."""

    def __init__(self, with_entropy: bool) -> None:
        self.n = 0
        self.cells = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.lo = math.inf
        self.hi = -math.inf
        self.entropies: list[NDArray[np.float64]] | None = [] if with_entropy else None

    def add(self, a64: NDArray[np.float64], entropies: NDArray[np.float64] | None = None) -> None:
        """Fold in a (t, y, x) block; ``entropies``: its per-step entropies if already known."""
        self.cells += a64.size
        if self.entropies is not None:
            self.entropies.append(np.atleast_1d(physics.entropy(a64) if entropies is None
                                                else entropies))
        mask = physics.valid_mask(a64)
        v = a64 if mask is None else a64[mask]
        n_b = v.size
        if n_b == 0:
            return
        mean_b = float(v.mean())
        m2_b = float(v.var()) * n_b
        n = self.n + n_b
        delta = mean_b - self.mean
        self.mean += delta * n_b / n
        self.m2 += m2_b + delta * delta * self.n * n_b / n
        self.n = n
        self.lo = min(self.lo, float(v.min()))
        self.hi = max(self.hi, float(v.max()))

    def result(self) -> dict[str, float]:
        """The array's statistics; an array with no valid cell (a gradient of isolated cells)
        records zeros and ``valid_fraction`` 0."""
        if self.n == 0:
            s = {"mean": 0.0, "variance": 0.0, "min": 0.0, "max": 0.0}
        else:
            s = {"mean": self.mean, "variance": max(self.m2 / self.n, 0.0), "min": self.lo,
                 "max": self.hi}
        s["valid_fraction"] = self.n / self.cells if self.cells else 1.0
        if self.entropies is not None:
            s["entropy"] = float(np.mean(np.concatenate(self.entropies)))
        return s


def with_missing_as_nan(values: ArrayLike) -> tuple[NDArray, NDArray[np.bool_] | None]:
    """``values`` as an array, a masked array's masked cells NaN; with the mask (or None)."""
    if isinstance(values, np.ma.MaskedArray):
        mask = np.ma.getmaskarray(values)
        data = np.asarray(values.data)
        if data.dtype.kind in "iub":  # NaN needs floats; validation refuses ints later
            return data, mask
        return np.where(mask, np.nan, data), mask
    return np.asarray(values), None
