"""kill -9 during `atlas import` (a real subprocess), then the same command: the store ends with
the checksums of an uninterrupted import, nothing partial visible, nothing left behind.

The kill comes once a seeded number of sequence groups has appeared on disk (0: during start-up),
for the npy source (files hashed while read) and the well source (one HDF5 file, hashed once as
a shared task, trajectories written by workers). The LocalCluster engine and the serial engine
both run: a killed driver takes its workers with it (checked: none outlive it by 10 s).
"""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest

from atlasstore.audit import audit
from atlasstore.runs.ingest import import_npy, import_well
from atlasstore.store import AtlasStore, RunLog
from helpers.predecessor_fixture import write_predecessor_folder
from helpers.proc_helpers import (
    ATLAS,
    ProcTracker,
    alive,
    checksums,
    descendants,
    lock_record,
    store_state,
    wait_until,
)
from helpers.well_fixture import write_well_file

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

DOMAINS = ("plasma_physics", "fluid_dynamics")
_SUMMARY = re.compile(r"(\d+) sequences written, (\d+) already complete, (\d+) failed")


@pytest.fixture()
def procs(tmp_path: Path):
    tracker = ProcTracker(tmp_path)
    yield tracker
    tracker.cleanup()


@pytest.fixture(scope="module")
def npy_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("npy")
    write_predecessor_folder(root / "data", domains=DOMAINS, sequences=5, steps=8,
                             shape=(256, 256))
    ref = root / "ref.zarr"
    assert import_npy(ref, root / "data", scheduler="serial").written == 10
    return root / "data", checksums(ref)


@pytest.fixture(scope="module")
def well_source(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    root = tmp_path_factory.mktemp("well")
    write_well_file(root / "trl.h5", n_traj=8, n_steps=24, nx=128, ny=384)
    ref = root / "ref.zarr"
    assert import_well(ref, [root / "trl.h5"], derive="kinetic_energy",
                       scheduler="serial").written == 8
    return root / "trl.h5", checksums(ref)


def _kill_and_resume(procs: ProcTracker, tmp_path: Path, cmd: list[str], domains: tuple[str, ...],
                     reference: dict[str, str], seed: int) -> None:
    store = tmp_path / "a.zarr"
    rng = random.Random(seed)
    at_groups = rng.randint(0, 4)
    run = procs.launch(cmd)
    if at_groups:
        wait_until(lambda: store_state(store, domains).groups >= at_groups or
                   run.proc.poll() is not None, 120, 0.01)
    else:
        wait_until(lambda: run.proc.poll() is not None, rng.uniform(0.5, 3.0), 0.05)
    victims = descendants(run.pid)
    procs.kill_tree(run)
    complete_at_kill = len(store_state(store, domains).complete) if store.exists() else 0
    left = wait_until(lambda: not alive(victims), 10.0, 0.1)
    assert left or not alive(victims), "processes of the killed import still run"
    again = procs.run(cmd)
    assert again.proc.returncode == 0, again.describe()
    m = _SUMMARY.search(again.stdout())
    assert m, again.describe()
    written, skipped, failed = (int(g) for g in m.groups())
    assert failed == 0 and skipped == complete_at_kill
    assert written + skipped == len({k.rsplit("/", 2)[0] for k in reference})
    got = checksums(store)
    assert got == reference, sorted(k for k in got if got.get(k) != reference.get(k))[:5]
    st = AtlasStore.open(store)
    assert all(st.sequences(d, include_incomplete=True) == st.sequences(d) for d in st.domains())
    assert audit(st).ok
    assert not lock_record(store)
    (rec,) = RunLog(st).list()
    assert rec["kind"] == "import" and rec["finished"] and len(rec["attempts"]) >= 1


@pytest.mark.parametrize("seed,engine", [(0, "processes"), (1, "serial"), (2, "processes")])
def test_kill_9_during_an_npy_import(procs: ProcTracker, tmp_path: Path,
                                     npy_source: tuple[Path, dict[str, str]], seed: int,
                                     engine: str) -> None:
    src, reference = npy_source
    cmd = [*ATLAS, "import", "npy", str(src), "--store", str(tmp_path / "a.zarr"), "--no-catalog",
           "--quiet", "--scheduler", engine] + (["--workers", "2"] if engine == "processes" else [])
    _kill_and_resume(procs, tmp_path, cmd, DOMAINS, reference, seed)


@pytest.mark.parametrize("seed", [3])
def test_kill_9_during_a_well_import(procs: ProcTracker, tmp_path: Path,
                                     well_source: tuple[Path, dict[str, str]], seed: int) -> None:
    src, reference = well_source
    cmd = [*ATLAS, "import", "well", str(src), "--derive", "kinetic_energy", "--store",
           str(tmp_path / "a.zarr"), "--no-catalog", "--quiet", "--workers", "2"]
    _kill_and_resume(procs, tmp_path, cmd, ("turbulent_radiative_layer_2D",), reference, seed)
