"""Per-step moments of a (time, y, x) block in one fused pass: what the store records of every
array it writes (step records, array statistics), over the valid (non-NaN) cells.

One float64 copy of the block, shifted by a value of each step so the sums do not cancel, then
a sum and a sum of squares (``einsum``) per step, and min/max on the float32 values: about a
quarter of the CPU of NumPy's ``mean``/``var``/``min``/``max`` per map (``var`` alone makes two
passes and a temporary). Steps combine exactly (Chan et al.'s pairwise formula), so a whole
array's moments are the fold of its steps'.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class StepMoments:
    """Per step: valid cells ``n``, ``mean``, ``m2`` (sum of squared deviations), ``lo``/``hi``
    (min and max; NaN for a step without a valid cell), and ``cells`` per step."""

    n: NDArray[np.int64]
    mean: NDArray[np.float64]
    m2: NDArray[np.float64]
    lo: NDArray[np.float64]
    hi: NDArray[np.float64]
    cells: int

    @property
    def variance(self) -> NDArray[np.float64]:
        """Population variance per step (0 where a step has fewer than one valid cell)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.n > 0, np.maximum(self.m2, 0.0) / np.maximum(self.n, 1), 0.0)

    @property
    def total(self) -> NDArray[np.float64]:
        """Sum of the valid cells per step."""
        return np.where(self.n > 0, self.mean * self.n, 0.0)

    def combined(self) -> tuple[int, float, float, float, float]:
        """(n, mean, m2, min, max) of all the steps together (exact pairwise combination)."""
        n = int(self.n.sum())
        if n == 0:
            return 0, 0.0, 0.0, float("inf"), float("-inf")
        has = self.n > 0
        mean = float((self.mean[has] * self.n[has]).sum() / n)
        m2 = float(self.m2[has].sum() + (self.n[has] * (self.mean[has] - mean) ** 2).sum())
        return n, mean, m2, float(self.lo[has].min()), float(self.hi[has].max())


#: float64 bytes of one pass's temporaries: a few steps at a time stay in cache (measured:
#: 256x256 maps, 4 steps at a time, half the CPU of a whole 64-step block at once)
CHUNK_BYTES = 2 * 2**20


def step_moments(values: NDArray) -> StepMoments:
    """The moments of each step of a (t, y, x) float block over its valid cells (see the module
    docstring); NaN cells are missing, and a block without NaN takes the fast path."""
    v = np.asarray(values)
    t = v.shape[0]
    cells = int(np.prod(v.shape[1:]))
    k = max(1, CHUNK_BYTES // max(cells * 8, 1))
    if t <= k:
        return _moments(v.reshape(t, -1))
    parts = [_moments(v[i:i + k].reshape(-1, cells)) for i in range(0, t, k)]
    return StepMoments(n=np.concatenate([p.n for p in parts]),
                       mean=np.concatenate([p.mean for p in parts]),
                       m2=np.concatenate([p.m2 for p in parts]),
                       lo=np.concatenate([p.lo for p in parts]),
                       hi=np.concatenate([p.hi for p in parts]), cells=cells)


def _moments(flat: NDArray) -> StepMoments:
    """:func:`step_moments` of (t, cells) values."""
    t = flat.shape[0]
    cells = flat.shape[1]
    nan = np.isnan(flat)
    if not nan.any():
        shift = flat[:, 0].astype(np.float64)
        d = flat.astype(np.float64)
        d -= shift[:, None]
        s1 = d.sum(axis=1)
        s2 = np.einsum("ij,ij->i", d, d)
        n = np.full(t, cells, np.int64)
        lo = flat.min(axis=1).astype(np.float64)
        hi = flat.max(axis=1).astype(np.float64)
    else:
        valid = ~nan
        n = valid.sum(axis=1).astype(np.int64)
        first = np.argmax(valid, axis=1)  # a valid cell of each step (0 when there is none)
        shift = np.where(n > 0, flat[np.arange(t), first], 0.0).astype(np.float64)
        d = np.where(valid, flat.astype(np.float64) - shift[:, None], 0.0)
        s1 = d.sum(axis=1)
        s2 = np.einsum("ij,ij->i", d, d)
        with np.errstate(all="ignore"):
            lo = np.fmin.reduce(flat, axis=1).astype(np.float64)
            hi = np.fmax.reduce(flat, axis=1).astype(np.float64)
    safe = np.maximum(n, 1)
    mean = np.where(n > 0, shift + s1 / safe, np.nan)
    m2 = np.where(n > 0, s2 - s1 * s1 / safe, 0.0)
    return StepMoments(n, mean, np.maximum(m2, 0.0), lo, hi, cells)
