"""The predecessor's EnergyAtlasLoader API over the atlas store."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from atlasstore.compat import EnergyAtlasLoader, parse_map_id
from atlasstore.errors import (
    EnergyMapError,
    InvalidMetadata,
    InvalidName,
    NotAnAtlasStore,
    NotFound,
    SequenceExists,
    StoreError,
)
from atlasstore.physics import fields as physics
from atlasstore.store import AtlasStore
from helpers.store_fixtures import copy_store, energy_sequence, listing


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("compat") / "atlas.zarr"
    s = AtlasStore.create(p)
    s.create_domain("alpha")
    s.write_sequence("alpha", "s0", energy_sequence(5, 128, 128, seed=1))
    s.write_sequence("alpha", "s1", energy_sequence(3, 128, 128, seed=2))
    return p


@pytest.fixture()
def loader(tmp_path: Path, template: Path) -> EnergyAtlasLoader:
    return EnergyAtlasLoader(AtlasStore.open(copy_store(template, tmp_path / "atlas.zarr"), mode="r+"))


def _map(ny: int = 128, nx: int = 128, seed: int = 0) -> np.ndarray:
    return energy_sequence(1, ny, nx, seed=seed)[0]


# --------------------------------------------------------------------------- construction


def test_loader_creates_or_opens(tmp_path: Path) -> None:
    p = tmp_path / "new.zarr"
    ld = EnergyAtlasLoader(p)
    assert (p / "zarr.json").is_file()
    assert ld.store.domains() == []
    ld.save_map(_map(64, 64), "alpha", "m0")
    again = EnergyAtlasLoader(str(p), create=False)
    assert again.store.sequences("alpha") == ["m0"]
    with pytest.raises(NotAnAtlasStore):
        EnergyAtlasLoader(tmp_path / "missing.zarr", create=False)
    assert not (tmp_path / "missing.zarr").exists()


# --------------------------------------------------------------------------- load_map / save_map


def test_load_map_steps_and_scales(loader: EnergyAtlasLoader) -> None:
    e = energy_sequence(5, 128, 128, seed=1)
    m, meta = loader.load_map("alpha", "s0@3", scale=128)
    np.testing.assert_array_equal(m, e[3])
    assert meta["map_id"] == "s0@3" and meta["t"] == 3 and meta["sequence_id"] == "s0"
    assert meta["domain"] == "alpha" and meta["scale"] == 128 and meta["shape"] == [128, 128]
    assert meta["entropy"] == pytest.approx(float(physics.entropy(e[3])), rel=1e-6)
    assert meta["energy_mean"] == pytest.approx(float(e[3].astype(np.float64).mean()), rel=1e-6)
    m0, meta0 = loader.load_map("alpha", "s0", scale=64)  # bare id: step 0
    np.testing.assert_array_equal(m0, physics.downsample(e[0], 64))
    assert meta0["map_id"] == "s0@0" and m0.shape == (64, 64)
    assert isinstance(meta0["perturbations"], list)


@pytest.mark.parametrize("map_id,exc,match", [
    ("s0@5", NotFound, "step 5 outside 0..4"),
    ("s0@99", NotFound, "outside"),
    ("s0@-1", ValueError, "non-negative integer"),
    ("s0@x", ValueError, "non-negative integer"),
    ("s0@", ValueError, "non-negative integer"),
    ("nope", NotFound, "unknown sequence"),
    ("a/b", InvalidName, "path separator"),
    ("..@0", InvalidName, r"\.\."),
    ("", InvalidName, "empty"),
])
def test_load_map_bad_ids(loader: EnergyAtlasLoader, map_id: str, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        loader.load_map("alpha", map_id, scale=128)


def test_load_map_bad_domain_or_scale(loader: EnergyAtlasLoader) -> None:
    with pytest.raises(NotFound):
        loader.load_map("beta", "s0", scale=128)
    with pytest.raises(InvalidName):
        loader.load_map("../alpha", "s0", scale=128)
    with pytest.raises(NotFound, match="no level 256"):
        loader.load_map("alpha", "s0")  # default scale 256; these maps are 128
    with pytest.raises(ValueError, match="must be a string"):
        parse_map_id(3)  # type: ignore[arg-type]


@pytest.mark.parametrize("shape", [(256, 256), (128, 192), (64, 64), (384, 256)])
def test_save_map_load_map_round_trip(loader: EnergyAtlasLoader, shape: tuple[int, int]) -> None:
    m = _map(*shape, seed=5)
    assert loader.save_map(m, "gamma", "m1", metadata={"source": "unit test"}) == "m1@0"
    assert "gamma" in loader.store.domains()
    scale = min(shape)
    got, meta = loader.load_map("gamma", "m1", scale=scale)
    np.testing.assert_array_equal(got, m)
    assert got.dtype == np.float32
    assert meta["generation"]["source"] == "save_map: unit test"
    info = loader.store.sequence_info("gamma", "m1")
    assert info["n_steps"] == 1
    assert info["levels"] == [s for s in (256, 128, 64) if s <= scale]
    for lvl in info["levels"]:
        low, _ = loader.load_map("gamma", "m1@0", scale=lvl)
        assert float(low.sum(dtype=np.float64)) == pytest.approx(float(m.sum(dtype=np.float64)), rel=1e-5)


def test_save_map_keeps_all_json_metadata(loader: EnergyAtlasLoader) -> None:
    """Every JSON-able key comes back from load_map and sits in the committed step record."""
    meta_in = {"source": "lab run 7", "temperature_K": 293.5, "shots": 12, "calibrated": True,
               "operator": None, "tags": ["a", "b"], "detector": {"gain": 2.0, "id": "D-3"},
               "window": (1, 2), "peak": np.float32(1.5), "n_pixels": np.int64(4096)}
    loader.save_map(_map(64, 64, 4), "gamma", "m2", metadata=meta_in)
    want = {**meta_in, "window": [1, 2], "peak": 1.5, "n_pixels": 4096}
    _, meta = loader.load_map("gamma", "m2", scale=64)
    assert meta["metadata"] == want
    assert meta["generation"]["source"] == "save_map: lab run 7"
    # in the committed sequence record (what queries and the catalog index read), also after a
    # fresh open of the store
    again = AtlasStore.open(loader.store.location)
    assert again.sequence_info("gamma", "m2")["steps"][0]["metadata"] == want
    # without metadata the record has none, and load_map says so with an empty mapping
    loader.save_map(_map(64, 64, 5), "gamma", "m3")
    assert "metadata" not in loader.store.sequence_info("gamma", "m3")["steps"][0]
    assert loader.load_map("gamma", "m3", scale=64)[1]["metadata"] == {}


@pytest.mark.parametrize("bad,match", [
    ({"when": object()}, "/when is a object"),
    ({"raw": b"bytes"}, "/raw is a bytes"),
    ({"ids": {1, 2}}, "/ids is a set"),
    ({"image": np.zeros(3)}, "/image is a ndarray"),
    ({"gain": float("nan")}, "/gain is nan"),
    ({"gain": np.float64("inf")}, "/gain is inf"),
    ({"nested": {"deep": [1, {"x": float("-inf")}]}}, "/nested/deep/1/x is -inf"),
    ({"z": 1j}, "/z is a complex"),
    ({1: "int key"}, "key 1 at top level is not a string"),
    ({"detector": {("a", "b"): 1}}, r"key \('a', 'b'\) at /detector is not a string"),
])
def test_save_map_refuses_metadata_that_is_not_json(loader: EnergyAtlasLoader, bad: dict,
                                                    match: str) -> None:
    before = listing(loader.store.location)
    with pytest.raises(InvalidMetadata, match=f"metadata of map gamma/m4.*{match}"):
        loader.save_map(_map(64, 64), "gamma", "m4", metadata=bad)
    assert listing(loader.store.location) == before


@pytest.mark.parametrize("generation,match", [
    ({"note": object()}, "/note is a object"),  # zarr's encoder failed after the delete: data lost
    ({"note": float("nan")}, "/note is nan"),   # was written as NaN, which is not JSON
])
def test_overwrite_with_bad_metadata_keeps_the_old_sequence(loader: EnergyAtlasLoader,
                                                            generation: dict, match: str) -> None:
    """A refused write deletes nothing: the records are checked before the old complete
    sequence would be replaced."""
    before = listing(loader.store.location)
    with pytest.raises(InvalidMetadata, match=f"alpha/s0 generation: {match}"):
        loader.store.write_sequence("alpha", "s0", energy_sequence(2, 128, 128, seed=9),
                                    generation=generation, overwrite=True)
    assert listing(loader.store.location) == before
    assert AtlasStore.open(loader.store.location).sequence_info("alpha", "s0")["n_steps"] == 5


def test_save_map_overwrite(loader: EnergyAtlasLoader) -> None:
    loader.save_map(_map(64, 64, 1), "alpha", "m")
    m2 = _map(64, 64, 2)
    loader.save_map(m2, "alpha", "m")  # overwrite=True is the predecessor's default
    np.testing.assert_array_equal(loader.load_map("alpha", "m", 64)[0], m2)
    before = listing(loader.store.location)
    with pytest.raises(SequenceExists):
        loader.save_map(_map(64, 64, 3), "alpha", "m", overwrite=False)
    assert listing(loader.store.location) == before


def _bad_maps() -> list[tuple[str, object, type, str]]:
    m = _map(64, 64)
    nan = m.copy()
    nan[0, 0] = np.nan
    inf = m.copy()
    inf[1, 1] = np.inf
    neg = m.copy()
    neg[2, 2] = -1.0
    return [
        ("nan", nan, EnergyMapError, "non-finite"),
        ("inf", inf, EnergyMapError, "non-finite"),
        ("negative", neg, EnergyMapError, "negative"),
        ("int", np.ones((64, 64), np.int64), EnergyMapError, "floating-point"),
        ("3d", np.ones((2, 64, 64), np.float32), EnergyMapError, "expected a 2D map"),
        ("100x100", np.ones((100, 100), np.float32), EnergyMapError, "short side 100"),
        ("64x100", np.ones((64, 100), np.float32), EnergyMapError, "neither square nor 2:3"),
    ]


@pytest.mark.parametrize("label,data,exc,match", _bad_maps(), ids=[b[0] for b in _bad_maps()])
def test_save_map_bad_maps_write_nothing(loader: EnergyAtlasLoader, label: str, data: object,
                                         exc: type, match: str) -> None:
    before = listing(loader.store.location)
    with pytest.raises(exc, match=match):
        loader.save_map(data, "newdomain", "m")
    assert listing(loader.store.location) == before
    assert "newdomain" not in loader.store.domains()


@pytest.mark.parametrize("domain,map_id,exc,match", [
    ("a/b", "m", InvalidName, "path separator"),
    ("new dom", "m", InvalidName, "whitespace"),
    ("_runs", "m", InvalidName, "reserved|must start"),
    ("alpha", "m@1", ValueError, "single maps"),
    ("alpha", "../m", InvalidName, r"path separator|\.\."),
    ("alpha", "m\n", InvalidName, "whitespace"),
])
def test_save_map_bad_names_write_nothing(loader: EnergyAtlasLoader, domain: str, map_id: str,
                                          exc: type, match: str) -> None:
    before = listing(loader.store.location)
    with pytest.raises(exc, match=match):
        loader.save_map(_map(64, 64), domain, map_id)
    assert listing(loader.store.location) == before


def test_save_map_read_only(tmp_path: Path, loader: EnergyAtlasLoader) -> None:
    ro = EnergyAtlasLoader(AtlasStore.open(loader.store.location))
    before = listing(loader.store.location)
    with pytest.raises(StoreError, match="read-only"):
        ro.save_map(_map(64, 64), "alpha", "m")
    assert listing(loader.store.location) == before


# --------------------------------------------------------------------------- load_batch


@pytest.mark.parametrize("window,stride,n", [(1, 1, 8), (2, 1, 6), (3, 2, 3), (5, 1, 1), (4, 4, 1)])
def test_load_batch(loader: EnergyAtlasLoader, window: int, stride: int, n: int) -> None:
    batch, meta = loader.load_batch("alpha", window=window, scale=64, stride=stride)
    assert batch.shape == (n, window, 64, 64)
    assert len(meta) == n
    for i, m in enumerate(meta):
        assert m["domain"] == "alpha" and m["window"] == window and m["scale"] == 64
        np.testing.assert_array_equal(
            batch[i], loader.store.read("alpha", m["sequence_id"], 64, t=slice(m["t0"], m["t0"] + window)))
    t0s = [(m["sequence_id"], m["t0"]) for m in meta]
    assert t0s == sorted(t0s)


def test_load_batch_errors(loader: EnergyAtlasLoader) -> None:
    from atlasstore.errors import QueryError

    with pytest.raises(NotFound):
        loader.load_batch("beta", window=1, scale=64)
    with pytest.raises(NotFound, match="no scale 256"):
        loader.load_batch("alpha", window=1, scale=256)
    with pytest.raises(QueryError, match="longer than every"):
        loader.load_batch("alpha", window=6, scale=64)
    with pytest.raises(QueryError, match="window"):
        loader.load_batch("alpha", window=0, scale=64)
    with pytest.raises(QueryError, match="stride"):
        loader.load_batch("alpha", window=1, scale=64, stride=0)


def test_load_batch_empty_domain(loader: EnergyAtlasLoader) -> None:
    loader.store.create_domain("empty")
    batch, meta = loader.load_batch("empty", window=2, scale=64)
    assert batch.shape == (0, 2, 64, 64) and meta == []


# --------------------------------------------------------------------------- physics helpers


def test_precompute_pyramids() -> None:
    m = _map(256, 384, seed=3)
    pyr = EnergyAtlasLoader.precompute_pyramids(m)
    assert sorted(pyr) == [64, 128, 256]
    assert pyr[128].shape == (128, 192) and pyr[64].shape == (64, 96)
    for a in pyr.values():
        assert a.dtype == np.float32 and (a >= 0).all()
        assert float(a.sum(dtype=np.float64)) == pytest.approx(float(m.sum(dtype=np.float64)), rel=1e-5)
    only = EnergyAtlasLoader.precompute_pyramids(m, target_scales=[64])
    assert list(only) == [64]
    np.testing.assert_array_equal(only[64], pyr[64])
    with pytest.raises(EnergyMapError):
        EnergyAtlasLoader.precompute_pyramids(m, target_scales=[32])
    with pytest.raises(EnergyMapError):
        EnergyAtlasLoader.precompute_pyramids(np.ones((100, 100), np.float32))


def test_compute_gradients() -> None:
    m = _map(64, 96, seed=4)
    gx, gy = EnergyAtlasLoader.compute_gradients(m)
    egx, egy = physics.gradients(m)
    np.testing.assert_array_equal(gx, egx)
    np.testing.assert_array_equal(gy, egy)
    ramp = np.tile(np.arange(96, dtype=np.float32) * 2, (64, 1))
    gx, gy = EnergyAtlasLoader.compute_gradients(ramp)
    np.testing.assert_allclose(gx, 2.0)
    np.testing.assert_allclose(gy, 0.0)
    with pytest.raises(EnergyMapError, match="negative"):
        EnergyAtlasLoader.compute_gradients(-ramp - 1)


def test_compute_entropy() -> None:
    assert EnergyAtlasLoader.compute_entropy(np.ones((64, 64), np.float32)) == pytest.approx(math.log(4096))
    spike = np.zeros((64, 64), np.float32)
    spike[3, 4] = 5.0
    assert EnergyAtlasLoader.compute_entropy(spike) == pytest.approx(0.0)
    assert isinstance(EnergyAtlasLoader.compute_entropy(_map(64, 64)), float)
    with pytest.raises(EnergyMapError):
        EnergyAtlasLoader.compute_entropy(np.full((64, 64), np.nan, np.float32))


@pytest.mark.parametrize("shape,ok", [
    ((256, 256), True), ((128, 128), True), ((64, 64), True), ((256, 384), True), ((384, 256), True),
    ((64, 96), True), ((100, 100), False), ((64, 100), False), ((64, 128), False), ((512, 512), False),
    ((32, 32), False), ((2, 64, 64), False), ((64,), False),
])
def test_validate_shape(shape: tuple[int, ...], ok: bool) -> None:
    assert EnergyAtlasLoader.validate_shape(np.zeros(shape, np.float32)) is ok


def test_get_domain_stats(loader: EnergyAtlasLoader) -> None:
    st = loader.get_domain_stats("alpha")
    assert st["domain"] == "alpha"
    assert st["n_sequences"] == 2 and st["n_maps"] == 8
    maps = np.concatenate([energy_sequence(5, 128, 128, seed=1), energy_sequence(3, 128, 128, seed=2)])
    assert st["energy_mean"] == pytest.approx(float(np.mean([m.mean(dtype=np.float64) for m in maps])),
                                              rel=1e-6)
    assert st["energy_variance"] == pytest.approx(
        float(np.mean([m.astype(np.float64).var() for m in maps])), rel=1e-6)
    ents = [float(physics.entropy(m)) for m in maps]
    assert st["entropy_mean"] == pytest.approx(float(np.mean(ents)), rel=1e-9)
    assert st["entropy_min"] == pytest.approx(min(ents)) and st["entropy_max"] == pytest.approx(max(ents))
    assert st["bytes_on_disk"] > 0
    with pytest.raises(NotFound):
        loader.get_domain_stats("beta")
    loader.store.create_domain("empty")
    with pytest.raises(StoreError, match="no complete sequences"):
        loader.get_domain_stats("empty")


def test_generator_api_reexported() -> None:
    from atlasstore import compat

    for name in ("generate_sequence", "validate_energy_conservation", "validate_entropy_increase",
                 "apply_rotation", "apply_gaussian_noise", "apply_thermal_blur", "apply_translation",
                 "apply_energy_scaling", "PerturbationConfig"):
        assert callable(getattr(compat, name))


def test_save_map_records_its_kind(tmp_path: Path) -> None:
    """The provenance contract: a map saved through the predecessor's API says so."""
    loader = EnergyAtlasLoader(tmp_path / "k.zarr")
    loader.save_map(np.ones((64, 64), np.float32), "d", "m0", {"source": "lab"})
    gen = loader.store.sequence_info("d", "m0")["generation"]
    assert gen["kind"] == "save_map" and gen["source"] == "save_map: lab"
