"""The typed records: ArrayKey is the one spelling of an array's path, SequenceRecord the typed
view of a committed sequence's document (round trip, primary field, checksums)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from atlasstore.errors import InvalidName
from atlasstore.records import ArrayKey, Axis, FieldSpec, SequenceRecord
from atlasstore.store import AtlasStore


def test_array_key_paths_round_trip_and_refuse_non_paths() -> None:
    k = ArrayKey("plasma_physics", "seq-00000", 64, "grad_x")
    assert k.path == str(k) == "plasma_physics/seq-00000/64/grad_x"
    assert ArrayKey.parse(k.path) == k
    for bad in ("a/b/c", "a/b/x/energy", "a/b/64/energy/extra"):
        with pytest.raises(InvalidName, match="not an array path"):
            ArrayKey.parse(bad)


def test_sequence_record_is_the_document_typed(tmp_path: Path) -> None:
    store = AtlasStore.create(tmp_path / "a.zarr")
    store.create_domain("lab")
    values = np.random.default_rng(0).random((3, 64, 96)).astype(np.float32) + 1.0
    store.write_sequence("lab", "run0", values, field=FieldSpec("temperature", "intensive", "K"))
    rec = store.sequence_record("lab", "run0")
    info = store.sequence_info("lab", "run0")
    assert rec.to_dict() == info and SequenceRecord.from_dict(info) == rec
    assert (rec.key, rec.status, rec.n_steps, rec.shape) == ("lab/run0", "complete", 3, (64, 96))
    assert rec.levels == tuple(info["levels"]) and rec.fields == tuple(info["fields"])
    assert rec.field == FieldSpec("temperature", "intensive", "K")
    assert rec.array_key(64) == ArrayKey("lab", "run0", 64, "temperature")
    assert rec.checksum(64, "temperature") == info["arrays"]["64/temperature"]["checksum"]
    with pytest.raises(KeyError):
        rec.checksum(64, "energy")


def test_a_float32_axis_is_uniform_to_its_precision_and_records_its_span() -> None:
    """Coordinates stored as float32 (most NetCDF latitudes) differ from an exact linspace by
    rounding: still uniform, with the mean spacing, and the last value recorded so a listing
    shows the span without reading arrays. A really irregular axis stays non-uniform."""
    lat = np.linspace(-5.0, 4.444444, 18).astype(np.float32)
    rec = Axis(tuple(lat), "degrees_north", "latitude").record()
    assert rec["uniform"] and rec["spacing"] == pytest.approx(0.555555, rel=1e-5)
    assert rec["last"] == pytest.approx(4.444444, rel=1e-6)
    rec = Axis((0.0, 1.0, 3.0), None, None).record()
    assert not rec["uniform"] and rec["spacing"] is None and rec["last"] == 3.0
