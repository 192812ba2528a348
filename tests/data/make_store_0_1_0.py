"""Build tests/data/store-0.1.0 and its expected.json with the code of the previous release.

Run from a checkout of commit 2aec6f6 (the last commit before the package restructure), with
that checkout's folder first on sys.path so its flat ``atlasstore`` package is the one imported:

    git worktree add /tmp/old 2aec6f6
    cd /tmp/old && python /path/to/tests/data/make_store_0_1_0.py /path/to/tests/data

The facts recorded in expected.json are read back with the OLD code, so the format-compat test
compares the new code's reading against what the old release itself read.
"""
# the imports name the OLD flat package (atlasstore.generate, ...), which isort cannot place
# ruff: noqa: I001
from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import xarray as xr

import atlasstore
from atlasstore.generate import Plan, generate
from atlasstore.ingest import import_xarray
from atlasstore.query import Query
from atlasstore.store import AtlasStore


def main(out: Path) -> None:
    store_path = out / "store-0.1.0"
    shutil.rmtree(store_path, ignore_errors=True)
    generate(store_path, Plan(domains=("fluid_dynamics",), sequences=2, steps=3, shape=(64, 64),
                              seed=7), scheduler="serial")
    rng = np.random.default_rng(11)
    t = np.arange(4, dtype=np.float64) * 0.5
    y = np.linspace(0.0, 1.0, 32)
    x = np.linspace(-1.0, 1.0, 32)
    temp = (300.0 + rng.normal(0.0, 5.0, (4, 32, 32))).astype(np.float32)
    ds = xr.Dataset({"temperature": (("time", "y", "x"), temp, {"units": "K"})},
                    coords={"time": ("time", t, {"units": "s"}), "y": y, "x": x})
    nc = out / "tiny.nc"
    ds.to_netcdf(nc)
    try:
        import_xarray(store_path, nc, "temperature", domain="lab", sequence="run-a",
                      scheduler="serial")
    finally:
        nc.unlink()
    (out / "expected-0.1.0.json").write_text(json.dumps(facts(store_path), indent=1,
                                                        sort_keys=True) + "\n")


def facts(path: Path) -> dict:
    from atlasstore.store import RunLog

    store = AtlasStore.open(str(path), mode="r")
    out: dict = {"made_by": f"atlasstore {atlasstore.__version__} at commit 2aec6f6",
                 "domains": {}, "info": {}, "arrays": {}, "coordinates": {}}
    for domain in store.domains():
        seqs = store.sequences(domain)
        out["domains"][domain] = seqs
        for seq in seqs:
            info = store.sequence_info(domain, seq)
            out["info"][f"{domain}/{seq}"] = json.loads(json.dumps(info, default=str))
            for level in info["levels"]:
                for field in info["fields"]:
                    a = np.asarray(store.read(domain, seq, level, field))
                    out["arrays"][f"{domain}/{seq}/{level}/{field}"] = {
                        "shape": list(a.shape), "dtype": str(a.dtype),
                        "sum": float(a.astype(np.float64).sum()),
                        "first": float(a.flat[0]), "last": float(a.flat[-1]),
                        "sha256": hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest()}
                coords = store.coordinates(domain, seq, level)
                if coords is not None:
                    out["coordinates"][f"{domain}/{seq}/{level}"] = json.loads(
                        json.dumps(coords, default=lambda v: np.asarray(v).tolist()))
    out["runs"] = sorted(r["run_id"] for r in RunLog(store).list())
    out["query_counts"] = {
        "fluid_dynamics/64": Query(store, domains=("fluid_dynamics",), scale=64).count(),
        "fluid_dynamics/64/window2": Query(store, domains=("fluid_dynamics",), scale=64,
                                           window=2).count(),
        "lab/32": Query(store, domains=("lab",), scale=32).count()}
    return out


if __name__ == "__main__":
    sys.path.insert(0, ".")
    main(Path(sys.argv[1]))
