"""A folder as the predecessor left it: one ``.npy`` per map, a JSON sidecar each, an inventory.

What the predecessor's summary (``../shared/reference/predecessor-data-layer-summary.md``) says
it wrote: 5 domains x 5 sequences x 10 steps = 250 maps of 256x256, generated with its
synthetic generator (here :func:`atlasstore.physics.synth.synthesize`, the same patterns and
perturbations), saved as ``.npy`` (float64 by NumPy's default, float32 where the generator's
output was saved as is: both occur), a sidecar per map with ``EnergyMapMetadata``'s fields
(``domain``, ``map_id``, ``shape``, ``scale``, ``energy_mean``, ``energy_variance``,
``entropy``, ``timestamp``, ``perturbations`` - records naming their ``type``), and
``catalog.json`` from ``audit_data.py`` (``generated_at``, ``base_path``, ``maps`` with a
16-character SHA-256, ``stats``).

Layout: ``<root>/<domain>/seq_<k>_t<tt>.npy`` + ``.json``: the pattern
``{domain}/{sequence}_t{t}.npy``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from atlasstore.physics import fields as physics
from atlasstore.physics import synth

PATTERN = "{domain}/{sequence}_t{t}.npy"


@dataclass
class Written:
    """What the fixture wrote: maps by (domain, sequence, t), and their files."""

    root: Path
    maps: dict[tuple[str, str, int], np.ndarray] = field(default_factory=dict)
    files: dict[tuple[str, str, int], Path] = field(default_factory=dict)
    sidecars: dict[tuple[str, str, int], dict] = field(default_factory=dict)

    def sequences(self) -> list[tuple[str, str]]:
        return sorted({(d, s) for d, s, _ in self.maps})

    def stack(self, domain: str, sequence: str) -> np.ndarray:
        n = 1 + max(t for d, s, t in self.maps if (d, s) == (domain, sequence))
        return np.stack([self.maps[(domain, sequence, t)] for t in range(n)])


def write_predecessor_folder(root: str | Path, domains: tuple[str, ...] = synth.DEFAULT_DOMAINS,
                             sequences: int = 5, steps: int = 10,
                             shape: tuple[int, int] = (256, 256), seed: int = 0,
                             inventory: bool = True) -> Written:
    """Write the folder (see the module docstring); returns what was written."""
    root = Path(root)
    out = Written(root)
    stamp = dt.datetime(2025, 11, 12, 10, 34, 22)
    inv = []
    for di, domain in enumerate(domains):
        (root / domain).mkdir(parents=True, exist_ok=True)
        for k in range(sequences):
            seq, meta = synth.synthesize(domain, seed * 1000 + di * 100 + k, n_steps=steps,
                                         shape=shape)
            sid = f"seq_{k:03d}"
            for t in range(steps):
                # the predecessor's float64 default, except every third sequence saved as float32
                m = seq[t].astype(np.float32 if (di + k) % 3 == 0 else np.float64)
                path = root / domain / f"{sid}_t{t:02d}.npy"
                np.save(path, m)
                side = {
                    "domain": domain, "map_id": f"{sid}_t{t:02d}", "shape": list(m.shape),
                    "scale": min(m.shape), "energy_mean": float(m.mean()),
                    "energy_variance": float(m.var()),
                    "entropy": float(physics.entropy(m)),
                    "timestamp": (stamp + dt.timedelta(seconds=60 * (di * 1000 + k * 10 + t))
                                  ).isoformat(),
                    "perturbations": [{"type": p["kind"], **{a: b for a, b in p.items()
                                                             if a != "kind"}}
                                      for p in meta[t]["perturbations"]],
                }
                path.with_suffix(".json").write_text(json.dumps(side, indent=2))
                key = (domain, sid, t)
                out.maps[key], out.files[key], out.sidecars[key] = m, path, side
                raw = path.read_bytes()
                inv.append({"path": str(path.relative_to(root)), "domain": domain,
                            "map_id": side["map_id"],
                            "checksum": hashlib.sha256(raw).hexdigest()[:16],
                            "size_mb": round(len(raw) / 2**20, 4),
                            "energy_mean": side["energy_mean"],
                            "energy_variance": side["energy_variance"]})
    if inventory:
        total = sum(p.stat().st_size for p in out.files.values())
        (root / "catalog.json").write_text(json.dumps({
            "generated_at": stamp.isoformat(), "base_path": str(root), "maps": inv,
            "stats": {"total_maps": len(inv), "total_size_mb": round(total / 2**20, 2),
                      "domains": sorted(domains)}}, indent=2))
    return out
