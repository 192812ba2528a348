"""What the store computes of the values it writes: checksums, per-array statistics and per-step
records (one definition shared by the writer, the audit and the catalog)."""

from __future__ import annotations

import hashlib
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
    a = np.asarray(values, dtype=np.float64)
    s = {"mean": float(a.mean()), "variance": float(a.var()), "min": float(a.min()),
         "max": float(a.max())}
    if with_entropy:
        s["entropy"] = float(np.mean(physics.entropy(a)))
    return s
