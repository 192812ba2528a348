"""The predecessor's loader API (``EnergyAtlasLoader``) as a thin face over the atlas store.

Map ids: the predecessor addressed single maps; here a map is step ``t`` of a sequence, written
``"<sequence_id>@<t>"`` (``"<sequence_id>"`` alone means step 0). ``save_map`` stores a map as a
one-step sequence, so maps saved this way get pyramids, gradients and checksums like any other.
The generator half of the old API lives on in :mod:`atlasstore.physics.synth` and
:mod:`atlasstore.physics.fields` under the same names.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

# The physics and synth names are re-exported (see __all__): the predecessor's imports keep working.
from atlasstore.errors import NotFound, StoreError, ThermodynamicViolation
from atlasstore.physics import fields as physics
from atlasstore.physics.fields import validate_energy_conservation, validate_entropy_increase
from atlasstore.physics.perturbations import (
    PerturbationConfig,
    apply_energy_scaling,
    apply_gaussian_noise,
    apply_rotation,
    apply_thermal_blur,
    apply_translation,
)
from atlasstore.physics.synth import generate_sequence
from atlasstore.query import Query
from atlasstore.read.reader import reader_of
from atlasstore.records import validate_name
from atlasstore.store.atlas_store import AtlasStore
from atlasstore.store.documents import json_document
from atlasstore.store.values import step_record

__all__ = ["EnergyAtlasLoader", "parse_map_id", "ThermodynamicViolation",
           "validate_energy_conservation", "validate_entropy_increase", "PerturbationConfig",
           "apply_energy_scaling", "apply_gaussian_noise", "apply_rotation", "apply_thermal_blur",
           "apply_translation", "generate_sequence"]


def parse_map_id(map_id: str) -> tuple[str, int]:
    """``"seq@t"`` -> (seq, t); ``"seq"`` -> (seq, 0)."""
    if not isinstance(map_id, str):
        raise ValueError(f"map id must be a string, got {type(map_id).__name__}")
    seq, sep, t = map_id.partition("@")
    validate_name(seq, "map id")
    if not sep:
        return seq, 0
    if not t.isdigit():
        raise ValueError(f"map id {map_id!r}: step after '@' must be a non-negative integer")
    return seq, int(t)


class EnergyAtlasLoader:
    """Predecessor-compatible loader over an atlas store (created if missing)."""

    def __init__(self, store: AtlasStore | str | Path, create: bool = True) -> None:
        if isinstance(store, AtlasStore):
            self.store = store
        elif create:
            self.store = AtlasStore.create(store, exist_ok=True)
        else:
            self.store = AtlasStore.open(store, mode="r+")

    # -------------------------------------------------------------- physics helpers

    @staticmethod
    def precompute_pyramids(energy_map: ArrayLike,
                            target_scales: Sequence[int] | None = None) -> dict[int, NDArray]:
        return physics.pyramid(energy_map, tuple(target_scales) if target_scales else None)

    @staticmethod
    def compute_gradients(energy_map: ArrayLike) -> tuple[NDArray, NDArray]:
        return physics.gradients(physics.validate_energy(energy_map))

    @staticmethod
    def compute_entropy(energy_map: ArrayLike) -> float:
        return float(physics.entropy(physics.validate_energy(energy_map)))

    @staticmethod
    def validate_shape(energy_map: ArrayLike) -> bool:
        """True for a valid shape (short side 64/128/256, square or 2:3), else False."""
        try:
            physics.validate_shape(np.shape(energy_map))
            return np.ndim(energy_map) == 2
        except physics.EnergyMapError:
            return False

    # -------------------------------------------------------------- store access

    def load_map(self, domain: str, map_id: str, scale: int = 256) -> tuple[NDArray, dict[str, Any]]:
        """One map at ``scale`` and its metadata (stats, perturbations, checksum, provenance)."""
        seq, t = parse_map_id(map_id)
        rec = self.store.sequence_record(domain, seq)
        if not 0 <= t < rec.n_steps:
            raise NotFound(f"map {domain}/{map_id}: step {t} outside 0..{rec.n_steps - 1}")
        energy = reader_of(self.store).read(rec.array_key(scale), t)
        step = rec.steps[t]
        meta = {"domain": domain, "map_id": f"{seq}@{t}", "sequence_id": seq, "t": t,
                "scale": scale, "shape": list(energy.shape),
                "energy_mean": float(energy.mean()), "energy_variance": float(energy.var()),
                "entropy": (float(physics.entropy(energy)) if rec.field.kind == "extensive"
                            else None),  # an intensive field has none
                "perturbations": step.get("perturbations", []),
                "metadata": step.get("metadata", {}),
                "timestamp": rec.completed, "generation": dict(rec.generation)}
        return energy, meta

    def load_batch(self, domain: str, window: int = 4, scale: int = 256,
                   stride: int = 1) -> tuple[NDArray, list[dict[str, Any]]]:
        """Every ``window``-step window of the domain at ``scale``: (n, window, y, x)."""
        q = Query(self.store, domains=(domain,), scale=scale, window=window, stride=stride)
        wins = q.windows()
        if not wins:
            return np.empty((0, window, scale, scale), np.float32), []
        batch = next(iter(q.read_windows(wins).values()))  # the primary field
        meta = [{"domain": w.domain, "sequence_id": w.sequence_id, "t0": w.t0, "window": w.length,
                 "scale": scale} for w in wins]
        return batch, meta

    def save_map(self, energy_map: ArrayLike, domain: str, map_id: str,
                 metadata: Mapping[str, Any] | None = None, overwrite: bool = True) -> str:
        """Store one map (validated) as a one-step sequence ``map_id``; returns the map id.

        ``metadata`` (any JSON-able mapping; anything else is InvalidMetadata, nothing written)
        is kept whole in the committed record of the step (``sequence_info(...)["steps"][0]
        ["metadata"]``, where queries and the catalog index read per-step facts) and comes back
        from :meth:`load_map` as ``meta["metadata"]``.
        """
        if metadata is not None and not isinstance(metadata, Mapping):
            raise ValueError(f"metadata must be a mapping, got {type(metadata).__name__}")
        seq, t = parse_map_id(map_id)
        if t != 0:
            raise ValueError(f"save_map stores single maps; map id {map_id!r} names step {t}")
        e = physics.validate_energy(energy_map, f"map {domain}/{map_id}")
        if e.ndim != 2:
            raise physics.EnergyMapError(f"map {domain}/{map_id}: expected a 2D map, got {e.shape}")
        physics.validate_shape(e.shape, f"map {domain}/{map_id}")
        validate_name(domain, "domain name")
        meta = json_document(dict(metadata or {}), f"metadata of map {domain}/{map_id}")
        if domain not in self.store.domains():
            self.store.create_domain(domain, None)
        generation = {"kind": "save_map", "source": "save_map"}
        if meta:
            generation["source"] = f"save_map: {str(meta.get('source', 'user'))[:200]}"
        steps = [step_record(0, e, metadata=meta)] if meta else None
        self.store.write_sequence(domain, seq, e[None], steps=steps, generation=generation,
                                  overwrite=overwrite)
        return f"{seq}@0"

    def get_domain_stats(self, domain: str) -> dict[str, Any]:
        """Counts and mean statistics of a domain, from committed sequence attributes."""
        seqs = self.store.sequences(domain)
        steps = [s for sid in seqs for s in self.store.sequence_info(domain, sid)["steps"]]
        if not steps:
            raise StoreError(f"domain {domain!r} has no complete sequences")
        h = [s["entropy"] for s in steps if "entropy" in s] or [float("nan")]  # intensive: none
        return {
            "domain": domain,
            "n_sequences": len(seqs),
            "n_maps": len(steps),
            "energy_mean": float(np.mean([s["mean"] for s in steps])),
            "energy_variance": float(np.mean([s["variance"] for s in steps])),
            "entropy_mean": float(np.mean(h)),
            "entropy_min": float(np.min(h)),
            "entropy_max": float(np.max(h)),
            "bytes_on_disk": self.store.nbytes_stored(f"{domain}/"),
        }
