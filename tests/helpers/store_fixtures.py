"""Shared helpers and fixtures for the store / query / compat / audit / generate / CLI tests.

Import fixtures into a test module with ``from store_fixtures import <fixture>  # noqa: F401``
(pytest's default import mode puts ``tests/`` on ``sys.path``).

Everything here is small: 64x64 and 128x128 maps, a handful of steps.
"""

from __future__ import annotations

import hashlib
import math
import os
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atlasstore.physics import fields as physics
from atlasstore.store import AtlasStore

# --------------------------------------------------------------------------- data


def energy_sequence(steps: int = 3, ny: int = 64, nx: int = 64, seed: int = 0) -> np.ndarray:
    """A positive, non-trivial float32 (time, y, x) sequence."""
    rng = np.random.default_rng(seed)
    e = rng.gamma(2.0, 1.0, size=(steps, ny, nx)).astype(np.float32)
    return e + np.float32(1e-3)


def lit_map(ny: int, nx: int, mean: float, lit: int) -> np.ndarray:
    """A map whose first ``lit`` pixels (row-major) share all the energy.

    mean = ``mean``; entropy = log(lit); variance = mean^2 (N/lit - 1), N = ny*nx.
    """
    n = ny * nx
    flat = np.zeros(n, np.float64)
    flat[:lit] = mean * n / lit
    return flat.reshape(ny, nx).astype(np.float32)


def step_record(t: int, e: np.ndarray, perturbations: list[dict[str, Any]] | None = None
                ) -> dict[str, Any]:
    """A step record (as the store expects in ``steps=``) computed from the map itself."""
    s = physics.map_stats(e)
    return {"t": t, "perturbations": list(perturbations or []), "sum": s["sum"],
            "mean": s["mean"], "variance": s["variance"], "entropy": s["entropy"]}


def sha256_values(a: np.ndarray) -> str:
    """Independent recompute of the store's checksum definition."""
    b = np.ascontiguousarray(np.asarray(a), dtype="<f4").tobytes()
    return "sha256:" + hashlib.sha256(b).hexdigest()


# --------------------------------------------------------------------------- file system


def listing(root: str | Path) -> dict[str, str]:
    """{relative path: sha256 of content} of every file under ``root`` (empty if missing)."""
    root = Path(root)
    out: dict[str, str] = {}
    if not root.exists():
        return out
    if root.is_file():
        return {".": hashlib.sha256(root.read_bytes()).hexdigest()}
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            p = Path(dirpath) / f
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def dirs(root: str | Path) -> set[str]:
    root = Path(root)
    return {str(Path(d).relative_to(root)) for d, _, _ in os.walk(root)}


def chunk_files(root: str | Path, array_path: str) -> list[Path]:
    """Shard objects of one array (``<array_path>/c.<t>.0.0``, beside its zarr.json)."""
    base = Path(root) / array_path
    return sorted(p for p in base.glob("c.*") if p.is_file())


def flip_bytes(path: Path, start: int, count: int = 16) -> None:
    """Invert ``count`` bytes of a file from ``start`` (negative: from the end)."""
    b = bytearray(path.read_bytes())
    n = len(b)
    s = start if start >= 0 else n + start
    for i in range(s, min(n, s + count)):
        b[i] ^= 0xFF
    path.write_bytes(bytes(b))


def copy_store(src: str | Path, dst: str | Path) -> Path:
    shutil.copytree(src, dst)
    return Path(dst)


# --------------------------------------------------------------------------- stores


def simple_store(path: str | Path, domains: Iterable[str] = ("alpha",),
                 sequences: Sequence[tuple[str, int]] = (("s0", 3),), shape: tuple[int, int] = (64, 64),
                 seed: int = 0) -> AtlasStore:
    """A store with every domain holding ``sequences`` [(id, steps)] of random energy."""
    store = AtlasStore.create(path)
    k = 0
    for d in domains:
        store.create_domain(d)
        for sid, n in sequences:
            store.write_sequence(d, sid, energy_sequence(n, *shape, seed=seed + k))
            k += 1
    return store


#: Known per-step statistics of the ``stats_store`` fixture (base level 128x128, N = 16384).
N128 = 128 * 128
#: alpha/a0: 6 uniform steps of mean t+1 (variance 0, entropy log N)
A0_MEANS = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
#: alpha/a1: 5 steps of mean 1 lit on N / 2**t pixels (entropy log N - t log 2)
A1_LIT = [N128 // 2**t for t in range(5)]
#: beta/b0: 4 uniform steps of mean 1
B0_STEPS = 4


def build_stats_store(path: str | Path) -> AtlasStore:
    """A 128x128 store with known per-step stats, perturbations and run ids.

    alpha/a0  6 steps, uniform, mean t+1, perturbation 'rotation' at t=1, run 'run-A'
    alpha/a1  5 steps, mean 1, lit on N/2**t pixels (entropy decreasing), 'thermal_blur', run 'run-B'
    beta/b0   4 steps, uniform mean 1, no perturbations, no run id
    """
    store = AtlasStore.create(path)
    store.create_domain("alpha")
    store.create_domain("beta")
    a0 = np.stack([np.full((128, 128), m, np.float32) for m in A0_MEANS])
    steps = [step_record(t, a0[t], [{"kind": "rotation", "angle": 3.0}] if t == 1 else [])
             for t in range(len(a0))]
    store.write_sequence("alpha", "a0", a0, steps=steps, generation={"run_id": "run-A", "seed": 1})
    a1 = np.stack([lit_map(128, 128, 1.0, k) for k in A1_LIT])
    steps = [step_record(t, a1[t], [{"kind": "thermal_blur", "sigma": 1.0}] if t else [])
             for t in range(len(a1))]
    store.write_sequence("alpha", "a1", a1, steps=steps, generation={"run_id": "run-B", "seed": 2})
    b0 = energy_sequence(B0_STEPS, 128, 128, seed=7)
    store.write_sequence("beta", "b0", b0)
    return store


def expected_windows(n_steps: int, window: int, stride: int = 1,
                     time_range: tuple[int, int] | None = None,
                     step_ok: Sequence[bool] | None = None) -> list[int]:
    """Independent window arithmetic: the t0s of every window of ``window`` steps."""
    lo, hi = 0, n_steps
    if time_range is not None:
        lo, hi = max(0, time_range[0]), min(n_steps, time_range[1])
    out = []
    t0 = lo
    while t0 + window <= hi:
        if step_ok is None or all(step_ok[t] for t in range(t0, t0 + window)):
            out.append(t0)
        t0 += stride
    return out


@pytest.fixture(scope="session")
def stats_store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Read-only use only (copy it before mutating)."""
    p = tmp_path_factory.mktemp("stats") / "stats.zarr"
    build_stats_store(p)
    return p


@pytest.fixture()
def stats_store(stats_store_path: Path) -> AtlasStore:
    return AtlasStore.open(stats_store_path)


@pytest.fixture(scope="session")
def generated_store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small generated store (serial): 2 domains x 2 sequences x 4 steps at 64x64.

    Read-only use only: copy it (``copy_store``) before mutating.
    """
    from atlasstore.runs.generate import generate

    p = tmp_path_factory.mktemp("gen") / "gen.zarr"
    report = generate(p, generated_plan(), scheduler="serial", catalog=None)
    assert report.ok and report.written == 4
    return p


def generated_plan() -> Any:
    from atlasstore.runs.generate import Plan

    return Plan(domains=("plasma_physics", "fluid_dynamics"), sequences=2, steps=4, shape=(64, 64),
                seed=3)


def all_checksums(store: AtlasStore) -> dict[str, str]:
    """{domain/seq/level/field: checksum} of every committed array."""
    out = {}
    for d, s in store.iter_sequences():
        for key, rec in store.sequence_info(d, s)["arrays"].items():
            out[f"{d}/{s}/{key}"] = rec["checksum"]
    return out


def isclose_rel(a: float, b: float, rel: float = 1e-6) -> bool:
    return math.isclose(a, b, rel_tol=rel, abs_tol=1e-12)
