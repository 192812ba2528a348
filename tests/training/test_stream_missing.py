"""Missing cells (stored as NaN) in the stream: finite inputs and targets, a validity mask, the
missing cells filled with the mean the stream normalises by (0 after normalisation), and
statistics over the valid cells only. Complete data has no mask and reads as before."""

from __future__ import annotations

import numpy as np
import pytest

from atlasstore.query import Query
from atlasstore.store import AtlasStore
from atlasstore.training.normalization import compute_stats
from atlasstore.training.stream import stream
from atlasstore.training.windows import WindowSource


def _energy(steps: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.gamma(2.0, 1.0, (steps, 64, 64)).astype(np.float32) + 0.5


#: a "land" mask: the same cells missing at every step (a corner and a stripe)
LAND = np.zeros((64, 64), bool)
LAND[:16, :16] = True
LAND[40:44, :] = True


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> AtlasStore:
    st = AtlasStore.create(tmp_path_factory.mktemp("missing") / "s.zarr")
    st.create_domain("sea")
    st.create_domain("full")
    for i in range(2):
        e = _energy(5, i)
        e[:, LAND] = np.nan
        st.write_sequence("sea", f"s{i}", e, nan_is_missing=True)
    st.write_sequence("full", "f0", _energy(5, 7))
    return st


def test_batches_are_finite_with_a_mask_of_the_valid_cells(store: AtlasStore) -> None:
    src = WindowSource(Query(store, domains=("sea",), window=3), n_in=2, n_out=1)
    assert src.has_missing
    b = src.read_batch(list(range(len(src))))
    mask = b["mask"]
    assert mask.shape == (len(src), 3, 64, 64) and mask.dtype == bool
    assert (mask == ~LAND).all()  # inputs then target, every window
    for lvl, a in b["inputs"].items():
        assert np.isfinite(a).all(), lvl
    assert np.isfinite(b["target"]).all()
    # unnormalised: a missing cell holds the mean of its sequence's valid cells
    for i, wid in enumerate(b["ids"]):
        seq = wid.split("/")[1].split("@")[0]
        mean = store.sequence_info("sea", seq)["arrays"]["64/energy"]["stats"]["mean"]
        assert np.allclose(b["target"][i, 0][LAND], mean, rtol=1e-6)


def test_statistics_leave_missing_cells_out(store: AtlasStore) -> None:
    st = compute_stats(store, [("sea", "s0"), ("sea", "s1")], ["energy"], [64], fingerprint="-")
    v = st.values["sea"]["energy"]["64"]
    valid = np.concatenate([_energy(5, i)[:, ~LAND].ravel() for i in range(2)]).astype(np.float64)
    assert v["count"] == valid.size
    assert np.isclose(v["mean"], valid.mean(), rtol=1e-6)
    assert np.isclose(v["std"], valid.std(), rtol=1e-5)


def test_normalised_stream_fills_missing_cells_with_zero(store: AtlasStore,
                                                         tmp_path: object) -> None:
    q = Query(store, domains=("sea",), window=3)
    with stream(q, n_in=2, n_out=1, batch_size=2, seed=0, num_epochs=1, shuffle=False,
                stats_path=str(store.location) + ".stats-test.json") as it:
        for batch in it:
            mask = np.asarray(batch["mask"])
            tgt = np.asarray(batch["target"])
            assert np.isfinite(tgt).all()
            assert (tgt[:, 0][~mask[:, -1]] == 0.0).all()
            assert (np.asarray(batch["inputs"][64])[~mask[:, :2]] == 0.0).all()
            assert np.abs(tgt[:, 0][mask[:, -1]]).max() > 0


def test_complete_data_has_no_mask_and_reads_as_stored(store: AtlasStore) -> None:
    src = WindowSource(Query(store, domains=("full",), window=3), n_in=2, n_out=1)
    assert not src.has_missing
    b = src.read_batch([0])
    assert "mask" not in b
    assert np.array_equal(b["target"][0, 0], _energy(5, 7)[2])
