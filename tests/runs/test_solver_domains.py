"""Solver-backed domains (exponax PDEs) through `atlas generate`'s engine: presets, energy,
physics checks, determinism, lineage, catalog, resume, refusal of a blown-up run.

The runs are tiny (64 x 64, 3 stored steps, a few warm-up steps): the presets are the shipped
ones with a shorter warm-up (and for the refusals an absurd dt or bound), given to the plan as
``solver_presets`` under the shipped names.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("exponax")

from atlasstore.audit import audit
from atlasstore.catalog import open_catalog
from atlasstore.errors import PlanClash, PlanError, SchemaError, SolverDiverged
from atlasstore.io.schemas import validate
from atlasstore.physics import solvers
from atlasstore.query import Query
from atlasstore.runs.generate import Plan, generate
from atlasstore.store import AtlasStore
from helpers.store_fixtures import all_checksums

NAMES = ("kolmogorov_flow", "kuramoto_sivashinsky", "swift_hohenberg")
TINY = dict(steps=3, shape=(64, 64))


def tiny(name: str, **solver: Any) -> solvers.SolverPreset:
    """The shipped preset with a 4-step warm-up (and ``solver`` overrides)."""
    doc = solvers.load_solver_preset(name).to_dict()
    doc["solver"].update({"warmup_steps": 4, **solver})
    return solvers.SolverPreset.from_dict(doc)


def tiny_plan(names: tuple[str, ...] = NAMES, sequences: int = 2, **solver: Any) -> Plan:
    return Plan(domains=names, sequences=sequences, seed=5,
                solver_presets=tuple(tiny(n, **solver) for n in names), **TINY)


# --------------------------------------------------------------------------- presets


def test_shipped_solver_presets_validate_and_state_every_parameter() -> None:
    assert set(NAMES) <= set(solvers.list_solver_presets())
    for name in solvers.list_solver_presets():
        doc = json.loads((solvers.solver_preset_dir() / f"{name}.json").read_text())
        validate(doc, "preset")  # what a domain group records
        p = solvers.load_solver_preset(name)
        assert p.name == name and p.shape[0] == p.shape[1] and p.n_steps >= 1
        s = p.solver
        assert {"equation", "domain_extent", "dt", "substeps", "warmup_steps", "order",
                "parameters", "initial_condition", "checks"} <= set(s)
        assert set(s["parameters"]) <= solvers.EQUATIONS[s["equation"]].parameters
        assert solvers.load_solver_preset(p.to_dict()) == p


@pytest.mark.parametrize("edit, match", [
    (lambda d: d["solver"]["parameters"].update(viscosity=1.0), r"'viscosity'\] not among"),
    (lambda d: d["solver"].update(dt=0), r"at solver/dt: 0 is less than or equal"),
    (lambda d: d["solver"].update(equation="heat"), r"at solver/equation: 'heat' is not one of"),
    (lambda d: d.update(shape=[64, 128]), r"grids are square"),
    (lambda d: d["solver"].pop("checks"), r"'checks' is a required property"),
])
def test_malformed_solver_preset_refused(edit: Any, match: str) -> None:
    doc = solvers.load_solver_preset("kolmogorov_flow").to_dict()
    edit(doc)
    with pytest.raises(SchemaError, match=match):
        solvers.load_solver_preset(doc)


def test_plan_knows_solver_domains_and_refuses_a_non_square_shape() -> None:
    with pytest.raises(PlanError, match="unknown domain 'nope'.*kolmogorov_flow"):
        Plan(domains=("nope",))
    with pytest.raises(PlanError, match="solver domain: its grid is square"):
        Plan(domains=("swift_hohenberg",), shape=(128, 192))
    p = Plan(domains=("swift_hohenberg", "plasma_physics"))
    assert p.to_dict()["presets"]["swift_hohenberg"]["solver"]["equation"] == "swift_hohenberg"
    assert "solver_presets" not in p.to_dict()
    # a changed solver parameter is another plan (another run id); plans stay hashable values
    assert tiny_plan(dt=0.02).run_id() != tiny_plan().run_id()
    assert hash(tiny_plan()) == hash(tiny_plan()) and tiny_plan() == tiny_plan()
    assert tiny_plan(dt=0.02) != tiny_plan()


# --------------------------------------------------------------------------- energy


def test_energy_densities_match_the_closed_forms() -> None:
    n, extent = 64, 2 * np.pi
    x = np.arange(n) * extent / n
    x0, x1 = x[:, None], x[None, :]
    w = np.broadcast_to(np.cos(x0), (n, n))[None]  # psi = -cos(x0): u = (sin x0, 0)
    np.testing.assert_allclose(solvers.energy_density("kolmogorov_flow", w, extent)[0],
                               np.broadcast_to(0.5 * np.sin(x0) ** 2, (n, n)), atol=1e-12)
    u = np.broadcast_to(3.0 + np.sin(2 * x1), (n, n))[None]  # the mean does not count
    np.testing.assert_allclose(solvers.energy_density("kuramoto_sivashinsky", u, extent)[0],
                               np.broadcast_to(2 * np.cos(2 * x1) ** 2, (n, n)), atol=1e-12)
    np.testing.assert_allclose(solvers.energy_density("swift_hohenberg", u, extent), 0.5 * u**2)


# --------------------------------------------------------------------------- through the engine


def test_solver_domains_generate_in_parallel_with_lineage_and_catalog(tmp_path: Path) -> None:
    plan = tiny_plan()
    catalog = open_catalog(tmp_path / "cat.db")
    report = generate(tmp_path / "g.zarr", plan, scheduler="threads", workers=2, catalog=catalog)
    assert report.ok and report.written == 6 and report.maps == 18, report.failures
    store = AtlasStore.open(tmp_path / "g.zarr")
    for name in NAMES:
        assert store.sequences(name) == ["seq-00000", "seq-00001"]
        preset = plan.preset(name)
        for task in (t for t in plan.tasks() if t.domain == name):
            info = store.sequence_info(name, task.sequence_id)
            assert info["shape"] == [64, 64] and info["levels"][0] == 64 and info["n_steps"] == 3
            assert info["field"]["name"] == "energy" and info["field"]["kind"] == "extensive"
            gen = info["generation"]
            assert gen["seed"] == task.seed and gen["pattern"] == preset.solver["equation"]
            sol = gen["solver"]
            assert sol["package"] == "exponax" and sol["version"] == "0.2.0"
            assert sol["preset"] == preset.to_dict()["solver"]
            assert sol["stepper"].startswith("exponax.stepper.")
            assert sol["stepper_arguments"]["order"] == preset.solver["order"]
            assert {"state", "energy", "jax_version", "backend", "x64",
                    "initial_condition", "repeated_substeps"} <= set(sol)
            steps = store.sequence_info(name, task.sequence_id)["steps"]
            dt = preset.solver["dt"] * preset.solver["substeps"]
            assert [s["time"] for s in steps] == pytest.approx([(4 + t) * dt for t in range(3)])
            # the stored energy is the solver's, reproduced from the seed alone
            run = solvers.simulate(preset, task.seed, n_steps=3, shape=(64, 64))
            np.testing.assert_array_equal(store.read(name, task.sequence_id, 64), run.energy)
            assert (run.energy >= 0).all() and run.energy.sum() > 0
    rows = catalog.find_sequences(domains=list(NAMES))
    assert len(rows) == 6 and {r.pattern for r in rows} == set(NAMES)


def test_same_seed_same_arrays_other_seed_other_arrays() -> None:
    for name in NAMES:
        p = tiny(name)
        a, b = (solvers.simulate(p, 11, n_steps=3, shape=(64, 64)) for _ in range(2))
        np.testing.assert_array_equal(a.energy, b.energy)
        np.testing.assert_array_equal(a.state, b.state)
        c = solvers.simulate(p, 12, n_steps=3, shape=(64, 64))
        assert not np.array_equal(a.state, c.state)
        assert a.lineage == c.lineage


def test_a_non_finite_energy_fails_its_bound_check() -> None:
    """NaN compares false with every bound: the energy check refuses it instead of passing it."""
    preset = tiny("swift_hohenberg")
    state = np.zeros((2, 64, 64), dtype=np.float32)
    solvers.check_run(preset, state, np.array([0.0, 0.0]), "ok")
    with pytest.raises(SolverDiverged, match=r"mean energy density nan at step 1 exceeds"):
        solvers.check_run(preset, state, np.array([0.0, np.nan]), "x")


@pytest.mark.slow  # two worker processes each start JAX and compile the solver
def test_worker_processes_write_what_one_process_writes(tmp_path: Path) -> None:
    """The default engine (a LocalCluster of worker processes, each with its own JAX) gives
    the arrays of an in-process run: the determinism a resume across processes relies on."""
    plan = tiny_plan(("swift_hohenberg",))
    generate(tmp_path / "serial.zarr", plan, scheduler="serial", catalog=None)
    report = generate(tmp_path / "procs.zarr", plan, workers=2, catalog=None)
    assert report.ok and report.written == 2
    assert all_checksums(AtlasStore.open(tmp_path / "procs.zarr")) == \
        all_checksums(AtlasStore.open(tmp_path / "serial.zarr"))


def test_resume_after_an_interrupted_run_is_identical(tmp_path: Path) -> None:
    plan = tiny_plan()
    p = tmp_path / "g.zarr"
    assert generate(p, plan, scheduler="serial", catalog=None).written == 6
    reference = all_checksums(AtlasStore.open(p))
    store = AtlasStore.open(p, mode="r+")
    # a killed writer: one sequence gone, one left half-written with damaged values
    store.delete_sequence("kolmogorov_flow", "seq-00001")
    g = store.zarr_group["swift_hohenberg/seq-00000"]
    info = dict(g.attrs)["atlasstore_sequence"]
    g.attrs.update({"atlasstore_sequence": {**info, "status": "writing"}})
    store.zarr_group["swift_hohenberg/seq-00000/64/energy"][0] = np.float32(0.0)
    report = generate(p, plan, scheduler="threads", workers=2, catalog=None)
    assert report.ok and report.written == 2 and report.skipped == 4
    assert all_checksums(AtlasStore.open(p)) == reference


def test_a_plan_with_other_solver_parameters_is_refused_over_stored_data(tmp_path: Path) -> None:
    plan = tiny_plan(("swift_hohenberg",), sequences=1)
    generate(tmp_path / "g.zarr", plan, scheduler="serial", catalog=None)
    other = tiny_plan(("swift_hohenberg",), sequences=1, dt=0.05)
    with pytest.raises(PlanClash, match="other solver parameters"):
        generate(tmp_path / "g.zarr", other, scheduler="serial", catalog=None)


@pytest.mark.parametrize("solver, match", [
    ({"dt": 50.0}, r"went non-finite during the 4 warm-up steps \(blow-up; dt 50.0 x 10 "
                   r"substeps, 64x64\)"),
    ({"dt": 50.0, "warmup_steps": 0}, r"went non-finite at step 1 \(blow-up"),
    ({"checks": {"max_abs_state": 1e-3, "max_mean_energy": 1.0}},
     r"max \|state\| .* at step 0 exceeds the bound 0.001"),
    ({"checks": {"max_abs_state": 1e6, "max_mean_energy": 1e-9}},
     r"mean energy density .* at step 0 exceeds the bound 1e-09"),
])
def test_a_run_that_blows_up_or_fails_its_checks_is_refused_and_not_stored(
        tmp_path: Path, solver: dict[str, Any], match: str) -> None:
    plan = tiny_plan(("kolmogorov_flow",), sequences=1, **solver)
    report = generate(tmp_path / "g.zarr", plan, scheduler="serial", catalog=None)
    assert not report.ok and report.written == 0
    (failure,) = report.failures
    assert "SolverDiverged" in failure.error and "nothing stored" in failure.error
    assert re.search(match, failure.error), failure.error
    assert AtlasStore.open(tmp_path / "g.zarr").sequences("kolmogorov_flow") == []
    with pytest.raises(SolverDiverged, match=match):
        solvers.simulate(plan.preset("kolmogorov_flow"), 1, n_steps=3, shape=(64, 64))



def test_atlas_generate_selects_a_solver_domain_by_name(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    from atlasstore import cli

    monkeypatch.delenv("ATLAS_CATALOG", raising=False)
    monkeypatch.delenv("ATLAS_STORE", raising=False)
    code = cli.main(["generate", "--store", str(tmp_path / "g.zarr"), "--domains",
                     "swift_hohenberg", "--sequences", "1", "--steps", "2", "--scheduler", "serial",
                     "--no-catalog", "--quiet"])
    assert code == 0
    info = AtlasStore.open(tmp_path / "g.zarr").sequence_info("swift_hohenberg", "seq-00000")
    assert info["shape"] == [128, 128] and info["n_steps"] == 2
    assert info["generation"]["solver"]["preset"] == \
        solvers.load_solver_preset("swift_hohenberg").to_dict()["solver"]
    # the machinery of every energy domain applies: an energy-conserving pyramid, gradients,
    # entropy in the step records, queries and the audit
    store = AtlasStore.open(tmp_path / "g.zarr")
    assert info["levels"] == [128, 64] and set(info["fields"]) == {"energy", "grad_x", "grad_y"}
    full, half = (store.read("swift_hohenberg", "seq-00000", lvl).astype(np.float64)
                  for lvl in (128, 64))
    np.testing.assert_allclose(half.sum(axis=(1, 2)), full.sum(axis=(1, 2)), rtol=1e-5)
    assert all(s["entropy"] > 0 for s in info["steps"])
    q = Query(store, domains=["swift_hohenberg"], scale=64, window=2)
    assert q.read_windows(q.windows())["energy"].shape == (1, 2, 64, 64)
    assert audit(store).ok


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_kill9_during_a_solver_run_then_resume_is_identical(tmp_path: Path) -> None:
    """A real ``kill -9`` of ``atlas generate`` while it integrates, then the same command."""
    from helpers.proc_helpers import ProcTracker, generate_cmd, kill9, store_state, wait_until

    domains, n = ("kuramoto_sivashinsky",), 6
    ref = tmp_path / "ref.zarr"
    plan = Plan(domains=domains, sequences=n, steps=3, seed=3)
    assert generate(ref, plan, scheduler="serial", catalog=None).written == n
    store = tmp_path / "g.zarr"
    procs = ProcTracker(tmp_path)
    try:
        run = procs.launch(generate_cmd(store, domains, n, 3, seed=3, scheduler="serial"))
        assert wait_until(lambda: store_state(store, domains).groups >= 2
                          or run.proc.poll() is not None, 240.0), run.describe()
        finished_first = run.proc.poll() is not None
        kill9(run.pid)
        run.wait(30)
    finally:
        procs.cleanup()
    before = store_state(store, domains)
    report = generate(store, plan, scheduler="serial", catalog=None)
    print(f"SOLVER crash: killed at {before.summary()}{' (child had finished)' * finished_first};"
          f" re-run wrote {report.written}, skipped {report.skipped}")
    assert report.ok and report.skipped == len(before.complete)
    assert report.written + report.skipped == n
    assert all_checksums(AtlasStore.open(store)) == all_checksums(AtlasStore.open(ref))
