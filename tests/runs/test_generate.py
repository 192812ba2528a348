"""Bulk generation: plan validation, seeds, determinism, engines, resume, failures, run records."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atlasstore.errors import InvalidName, PlanClash, PlanError
from atlasstore.io.schemas import validate
from atlasstore.physics import fields as physics
from atlasstore.physics import synth
from atlasstore.runs.generate import MAX_TASK_BYTES, Plan, generate, sequence_id, sequence_seed, write_one
from atlasstore.store import AtlasStore
from atlasstore.store.run_log import RunLog
from helpers import store_fixtures
from helpers.store_fixtures import all_checksums, copy_store, generated_plan

#: the shared fixture under its own name (imported by name, every test taking it would
#: "redefine" the import)
generated_store_path = store_fixtures.generated_store_path

SMALL = dict(steps=3, shape=(64, 64))


# --------------------------------------------------------------------------- plan validation


@pytest.mark.parametrize("kw,exc,match", [
    ({"domains": ("no_such_domain",)}, PlanError, "unknown domain 'no_such_domain'.*plasma_physics"),
    ({"domains": ("plasma_physics", "plasma_physics")}, PlanError, "duplicate domains"),
    ({"domains": ()}, PlanError, "no domains"),
    ({"domains": ("a/b",)}, InvalidName, "path separator"),
    ({"domains": ("..",)}, InvalidName, r"\.\."),
    ({"sequences": 0}, PlanError, r"sequences must be in \[1, "),
    ({"sequences": -3}, PlanError, "sequences must be in"),
    ({"sequences": 2.5}, PlanError, "sequences must be an integer"),
    ({"sequences": True}, PlanError, "sequences must be an integer"),
    ({"steps": 0}, PlanError, "steps must be in"),
    ({"steps": 10**9}, PlanError, "1000000000"),
    ({"seed": -1}, PlanError, r"seed must be in \[0, "),
    ({"seed": 1.0}, PlanError, "seed must be an integer"),
    ({"start_index": -1}, PlanError, "start_index must be in"),
    ({"scales": (128, 64)}, PlanError, "include the full resolution 256"),
    ({"scales": (256, 32)}, PlanError, r"scales \[256, 32\] invalid"),
    ({"scales": (128,), "shape": (64, 64)}, PlanError, "invalid for"),
    ({"shape": (100, 100)}, physics.EnergyMapError, "short side 100"),
    ({"shape": (64, 100)}, physics.EnergyMapError, "neither square nor 2:3"),
])
def test_plan_validation(kw: dict[str, Any], exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        Plan(**{"domains": ("plasma_physics",), **kw})


def test_plan_refuses_tasks_too_big_for_memory_naming_the_size() -> None:
    with pytest.raises(PlanError, match=r"100000 steps at \(256, 256\) needs ~\d+\.\d GiB"):
        Plan(domains=("plasma_physics",), steps=100_000)
    with pytest.raises(PlanError, match="GiB"):
        Plan(domains=("plasma_physics",), steps=100_000, shape=(256, 384))
    # the same step count at a small shape is fine when it fits
    steps = MAX_TASK_BYTES // (64 * 64 * 4 * 3 * 2 * 2)
    Plan(domains=("plasma_physics",), steps=min(steps, 100_000), shape=(64, 64))


def test_plan_error_is_value_error() -> None:
    assert issubclass(PlanError, ValueError)


def test_plan_empty_scales() -> None:
    with pytest.raises(PlanError, match="scales"):
        Plan(domains=("plasma_physics",), scales=())


def test_plan_normalises_and_defaults() -> None:
    p = Plan(domains="fluid_dynamics", sequences=2, scales=[64, 256, 128, 128])
    assert p.domains == ("fluid_dynamics",)
    assert p.scales == (256, 128, 64)
    assert Plan().domains == synth.DEFAULT_DOMAINS
    tasks = Plan(domains=("plasma_physics", "astrophysics"), sequences=2, start_index=3).tasks()
    assert [(t.domain, t.index, t.sequence_id) for t in tasks] == [
        ("plasma_physics", 3, "seq-00003"), ("plasma_physics", 4, "seq-00004"),
        ("astrophysics", 3, "seq-00003"), ("astrophysics", 4, "seq-00004")]
    assert all(t.seed == sequence_seed(0, t.domain, t.index) for t in tasks)
    assert sequence_id(7) == "seq-00007"


def test_run_id_deterministic_and_config_sensitive() -> None:
    a = Plan(domains=("plasma_physics",), sequences=2, **SMALL)
    assert a.run_id() == Plan(domains=("plasma_physics",), sequences=2, **SMALL).run_id()
    assert a.run_id().startswith("run-") and len(a.run_id()) == 20
    assert a.run_id() != Plan(domains=("plasma_physics",), sequences=2, seed=1, **SMALL).run_id()
    assert a.run_id() != Plan(domains=("plasma_physics",), sequences=3, **SMALL).run_id()


# --------------------------------------------------------------------------- seeds


def test_sequence_seed_deterministic_and_independent() -> None:
    assert sequence_seed(0, "plasma_physics", 0) == sequence_seed(0, "plasma_physics", 0)
    seeds = {sequence_seed(r, d, i) for r in range(3) for d in synth.DEFAULT_DOMAINS for i in range(20)}
    assert len(seeds) == 3 * len(synth.DEFAULT_DOMAINS) * 20
    for s in seeds:
        assert 0 <= s < 2**63
    assert sequence_seed(0, "a", 1) != sequence_seed(0, "b", 1)
    assert sequence_seed(0, "a", 1) != sequence_seed(0, "a", 2)
    assert sequence_seed(0, "a", 1) != sequence_seed(1, "a", 1)
    # not a trivial function of the index: neighbouring indices differ in many bits
    x = sequence_seed(0, "a", 1) ^ sequence_seed(0, "a", 2)
    assert bin(x).count("1") > 10


def test_different_seeds_give_different_data() -> None:
    p = synth.load_preset("plasma_physics")
    a, _ = synth.synthesize(p, sequence_seed(0, "plasma_physics", 0), n_steps=2, shape=(64, 64))
    b, _ = synth.synthesize(p, sequence_seed(0, "plasma_physics", 1), n_steps=2, shape=(64, 64))
    a2, _ = synth.synthesize(p, sequence_seed(0, "plasma_physics", 0), n_steps=2, shape=(64, 64))
    np.testing.assert_array_equal(a, a2)
    assert not np.array_equal(a, b)
    assert abs(np.corrcoef(a[0].ravel(), b[0].ravel())[0, 1]) < 0.5


# --------------------------------------------------------------------------- serial runs


def test_generated_store_contents(generated_store_path: Path) -> None:
    plan = generated_plan()
    store = AtlasStore.open(generated_store_path)
    assert store.domains() == sorted(plan.domains)
    for d in plan.domains:
        assert store.sequences(d) == ["seq-00000", "seq-00001"]
        assert store.domain_info(d)["preset"]["name"] == d
        for i, sid in enumerate(store.sequences(d)):
            info = store.sequence_info(d, sid)
            gen = info["generation"]
            assert gen["run_id"] == plan.run_id()
            assert gen["seed"] == sequence_seed(plan.seed, d, i)
            assert gen["index"] == i
            assert gen["pattern"] == synth.load_preset(d).pattern
            assert gen["code_version"]
            assert info["n_steps"] == 4 and info["shape"] == [64, 64]
            e = store.read(d, sid, 64)
            assert (e >= 0).all() and np.isfinite(e).all()
            # the stored sequence is exactly what synth makes from the recorded seed
            ref, steps = synth.synthesize(synth.load_preset(d), gen["seed"], n_steps=4, shape=(64, 64))
            np.testing.assert_array_equal(e, ref)
            assert [s["t"] for s in info["steps"]] == [0, 1, 2, 3]
            assert info["steps"][1]["perturbations"] == steps[1]["perturbations"]
            sums = e.astype(np.float64).sum(axis=(1, 2))
            assert np.all(np.abs(sums - sums[0]) / sums[0] < physics.CONSERVATION_TOLERANCE)


def test_run_record_stored_under_runs(generated_store_path: Path) -> None:
    store = AtlasStore.open(generated_store_path)
    runs = RunLog(store).list()
    assert len(runs) == 1
    rec = runs[0]
    validate(rec, "run")
    plan = generated_plan()
    assert rec["run_id"] == plan.run_id()
    assert rec["config_hash"] == plan.config_hash()
    assert rec["config"]["domains"] == list(plan.domains)
    assert rec["config"]["presets"]["plasma_physics"]["pattern"] == "turbulent"
    assert rec["seed"] == plan.seed and rec["finished"]
    assert rec["counts"] == {"tasks": 4, "written": 4, "skipped": 0, "failed": 0, "maps": 16}
    assert rec["failures"] == []
    assert len(rec["attempts"]) == 1
    assert "_runs" in set(store.zarr_group.group_keys())


def test_rerun_skips_complete_sequences(tmp_path: Path, generated_store_path: Path) -> None:
    p = copy_store(generated_store_path, tmp_path / "g.zarr")
    before = all_checksums(AtlasStore.open(p))
    seen: list[str] = []
    report = generate(p, generated_plan(), scheduler="serial", catalog=None,
                      progress=lambda r: seen.append(r["status"]))
    assert report.ok
    assert report.skipped == 4 and report.written == 0 and report.maps == 0
    assert seen == ["skipped"] * 4
    assert all_checksums(AtlasStore.open(p)) == before
    rec = RunLog(AtlasStore.open(p)).list()
    assert len(rec) == 1 and len(rec[0]["attempts"]) == 2
    assert rec[0]["counts"]["skipped"] == 4


def test_resume_after_crash_is_identical(tmp_path: Path, generated_store_path: Path) -> None:
    p = copy_store(generated_store_path, tmp_path / "g.zarr")
    reference = all_checksums(AtlasStore.open(p))
    store = AtlasStore.open(p, mode="r+")
    # a killed writer: one sequence deleted, one left half-written
    store.delete_sequence("plasma_physics", "seq-00001")
    g = store.zarr_group["fluid_dynamics/seq-00000"]
    info = dict(g.attrs)["atlasstore_sequence"]
    g.attrs.update({"atlasstore_sequence": {**info, "status": "writing"}})
    store.zarr_group["fluid_dynamics/seq-00000/64/energy"][0] = np.float32(0.0)
    assert AtlasStore.open(p).sequences("fluid_dynamics") == ["seq-00001"]
    report = generate(p, generated_plan(), scheduler="serial", catalog=None)
    assert report.ok and report.written == 2 and report.skipped == 2
    assert all_checksums(AtlasStore.open(p)) == reference


def test_subset_regenerates_bit_identically(tmp_path: Path, generated_store_path: Path) -> None:
    full = AtlasStore.open(generated_store_path)
    sub_plan = dataclasses.replace(generated_plan(), sequences=1, start_index=1)
    report = generate(tmp_path / "sub.zarr", sub_plan, scheduler="serial", catalog=None)
    assert report.written == 2
    sub = AtlasStore.open(tmp_path / "sub.zarr")
    for d in sub_plan.domains:
        assert sub.sequences(d) == ["seq-00001"]
        a = sub.sequence_info(d, "seq-00001")
        b = full.sequence_info(d, "seq-00001")
        assert {k: v["checksum"] for k, v in a["arrays"].items()} == \
            {k: v["checksum"] for k, v in b["arrays"].items()}
        assert a["generation"]["seed"] == b["generation"]["seed"]
        np.testing.assert_array_equal(sub.read(d, "seq-00001", 64), full.read(d, "seq-00001", 64))


def test_explicit_scales_and_2_3_shape(tmp_path: Path) -> None:
    plan = Plan(domains=("active_matter",), sequences=1, steps=2, shape=(128, 192), scales=(128,))
    report = generate(tmp_path / "g.zarr", plan, scheduler="serial", catalog=None)
    assert report.ok and report.written == 1
    info = AtlasStore.open(tmp_path / "g.zarr").sequence_info("active_matter", "seq-00000")
    assert info["levels"] == [128] and info["shape"] == [128, 192]
    assert report.bytes_written == 3 * 2 * 128 * 192 * 4
    assert report.maps == 2


def test_generate_into_memory_url() -> None:
    import uuid

    import fsspec

    name = f"gen-{uuid.uuid4().hex}"
    try:
        report = generate(f"memory://{name}", Plan(domains=("plasma_physics",), sequences=1, **SMALL),
                          scheduler="serial", catalog=None)
        assert report.ok and report.written == 1
        s = AtlasStore.open(f"memory://{name}")
        assert s.sequences("plasma_physics") == ["seq-00000"]
    finally:
        fs = fsspec.filesystem("memory")
        if fs.exists(f"/{name}"):
            fs.rm(f"/{name}", recursive=True)


# --------------------------------------------------------------------------- failures


def _fragile_preset(monkeypatch: pytest.MonkeyPatch, fragile: str) -> None:
    """Make ``fragile``'s preset hold energy conservation to 1e-300: float32 rounding breaks it."""
    real = Plan.preset

    def preset(self: Plan, domain: str) -> synth.DomainPreset:
        p = real(self, domain)
        if domain != fragile:
            return p
        return dataclasses.replace(p, perturbations=dataclasses.replace(p.perturbations, tolerance=1e-300))

    monkeypatch.setattr(Plan, "preset", preset)


def test_failing_task_reported_others_written(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _fragile_preset(monkeypatch, "fluid_dynamics")
    plan = Plan(domains=("plasma_physics", "fluid_dynamics"), sequences=2, seed=5, **SMALL)
    events: list[dict[str, Any]] = []
    report = generate(tmp_path / "g.zarr", plan, scheduler="serial", catalog=None, progress=events.append)
    assert not report.ok
    assert report.written == 2
    got = sorted((f.domain, f.sequence_id, f.seed) for f in report.failures)
    assert got == [("fluid_dynamics", "seq-00000", sequence_seed(5, "fluid_dynamics", 0)),
                   ("fluid_dynamics", "seq-00001", sequence_seed(5, "fluid_dynamics", 1))]
    assert all("ThermodynamicViolation" in f.error and "energy not conserved" in f.error
               for f in report.failures)
    assert sorted(e["status"] for e in events) == ["failed", "failed", "written", "written"]
    store = AtlasStore.open(tmp_path / "g.zarr")
    assert store.sequences("plasma_physics") == ["seq-00000", "seq-00001"]
    assert store.sequences("fluid_dynamics", include_incomplete=True) == []
    rec = RunLog(store).list()[0]
    assert rec["counts"]["failed"] == 2 and rec["counts"]["written"] == 2
    assert sorted((f["domain"], f["sequence_id"], f["seed"]) for f in rec["failures"]) == got


def test_catalog_outage_does_not_stop_the_run(tmp_path: Path) -> None:
    class Broken:
        def __getattr__(self, name: str) -> Any:
            def fail(*a: Any, **k: Any) -> None:
                raise ConnectionError("catalog down")
            return fail

    report = generate(tmp_path / "g.zarr", Plan(domains=("plasma_physics",), sequences=2, **SMALL),
                      scheduler="serial", catalog=Broken())
    assert report.written == 2 and not report.failures
    assert report.catalog_errors, "the outage is recorded"
    assert AtlasStore.open(tmp_path / "g.zarr").sequences("plasma_physics") == ["seq-00000", "seq-00001"]


def test_bad_location_is_refused(tmp_path: Path) -> None:
    from atlasstore.errors import StoreError

    d = tmp_path / "notastore"
    d.mkdir()
    (d / "precious.txt").write_text("keep me")
    with pytest.raises(StoreError):
        generate(d, Plan(domains=("plasma_physics",), sequences=1, **SMALL), scheduler="serial", catalog=None)
    assert sorted(p.name for p in d.iterdir()) == ["precious.txt"]


def test_live_writer_lock_refuses_a_second_run(tmp_path: Path) -> None:
    from atlasstore.errors import StoreError
    from atlasstore.store.writer_lock import WriterLock

    p = tmp_path / "g.zarr"
    plan = Plan(domains=("plasma_physics",), sequences=1, **SMALL)
    generate(p, plan, scheduler="serial", catalog=None)
    store = AtlasStore.open(p, mode="r+")
    lock = WriterLock(store, {"run_id": "run-other"}).acquire()
    try:
        with pytest.raises(StoreError, match="being written by another generation run"):
            generate(p, dataclasses.replace(plan, sequences=2), scheduler="serial", catalog=None)
        assert AtlasStore.open(p).sequences("plasma_physics") == ["seq-00000"]
    finally:
        lock.release()
    report = generate(p, dataclasses.replace(plan, sequences=2), scheduler="serial", catalog=None)
    assert report.written == 1 and report.skipped == 1


def test_rerun_with_different_data_is_refused_not_skipped(tmp_path: Path) -> None:
    """A complete sequence from another seed or length is a clash, never silently 'skipped':
    refused before any work, naming the clash and the start index that appends instead."""
    p = tmp_path / "g.zarr"
    plan = Plan(domains=("plasma_physics",), sequences=1, **SMALL)
    generate(p, plan, scheduler="serial", catalog=None)
    before = AtlasStore.open(p).sequence_info("plasma_physics", "seq-00000")["arrays"]
    listing = sorted(str(f.relative_to(p)) for f in p.rglob("*") if "_lock" not in f.parts)
    for other, why in ((dataclasses.replace(plan, seed=plan.seed + 1), "another seed"),
                       (dataclasses.replace(plan, steps=4), "steps 3 stored vs 4 planned")):
        with pytest.raises(PlanClash) as exc:
            generate(p, other, scheduler="serial", catalog=None)
        msg = str(exc.value)
        assert "plasma_physics/seq-00000 already holds other data" in msg and why in msg
        assert "--start-index 1" in msg and "\n" not in msg
    assert AtlasStore.open(p).sequence_info("plasma_physics", "seq-00000")["arrays"] == before
    # nothing written: no run record, no domain, no attempt
    assert sorted(str(f.relative_to(p)) for f in p.rglob("*") if "_lock" not in f.parts) == listing
    assert len(RunLog(AtlasStore.open(p)).list()[0]["attempts"]) == 1
    # more sequences with the same seed extend the domain: the existing one is skipped
    report = generate(p, dataclasses.replace(plan, sequences=2), scheduler="serial", catalog=None)
    assert (report.skipped, report.written) == (1, 1)


def test_clash_names_every_clashing_range_and_the_next_free_index(tmp_path: Path) -> None:
    p = tmp_path / "g.zarr"
    base = Plan(domains=("plasma_physics", "fluid_dynamics"), sequences=3, **SMALL)
    generate(p, base, scheduler="serial", catalog=None)
    generate(p, dataclasses.replace(base, domains=("fluid_dynamics",), sequences=1,
                                    start_index=6), scheduler="serial", catalog=None)
    other = dataclasses.replace(base, seed=9, sequences=5)
    with pytest.raises(PlanClash, match=r"^plasma_physics/seq-00000\.\.seq-00002, "
                       r"fluid_dynamics/seq-00000\.\.seq-00002 already hold other data than "
                       r"planned \(plasma_physics/seq-00000: another seed\).*--start-index 7,"):
        generate(p, other, scheduler="serial", catalog=None)
    # the suggested start index appends without a clash, and re-running it resumes
    appended = dataclasses.replace(other, start_index=7)
    assert generate(p, appended, scheduler="serial", catalog=None).written == 10
    again = generate(p, appended, scheduler="serial", catalog=None)
    assert (again.written, again.skipped) == (0, 10)


def test_deterministic_task_errors_come_back_as_failed_results(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """Not raised (Dask would retry and log them): returned, with the error named."""
    _fragile_preset(monkeypatch, "fluid_dynamics")
    plan = Plan(domains=("fluid_dynamics",), sequences=1, seed=5, **SMALL)
    loc = tmp_path / "g.zarr"
    AtlasStore.create(loc).create_domain("fluid_dynamics")
    result = write_one(str(loc), plan.tasks()[0], plan)
    assert result["status"] == "failed"
    assert result["error"].startswith("ThermodynamicViolation: ") and "info" not in result
    assert AtlasStore.open(loc).sequences("fluid_dynamics", include_incomplete=True) == []


# --------------------------------------------------------------------------- dask engines


def test_threads_engine_matches_serial(tmp_path: Path, generated_store_path: Path) -> None:
    report = generate(tmp_path / "t.zarr", generated_plan(), scheduler="threads", workers=2, catalog=None)
    assert report.ok and report.written == 4 and report.engine == "threads"
    assert all_checksums(AtlasStore.open(tmp_path / "t.zarr")) == \
        all_checksums(AtlasStore.open(generated_store_path))


@pytest.mark.slow
@pytest.mark.parametrize("workers", [1, 2])
def test_process_cluster_matches_serial(tmp_path: Path, generated_store_path: Path, workers: int) -> None:
    report = generate(tmp_path / f"w{workers}.zarr", generated_plan(), scheduler="processes",
                      workers=workers, catalog=None)
    assert report.ok and report.written == 4 and report.engine == "processes"
    assert all_checksums(AtlasStore.open(tmp_path / f"w{workers}.zarr")) == \
        all_checksums(AtlasStore.open(generated_store_path))


def test_local_cluster_is_started_with_the_tuned_dask_settings(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """generate()'s own LocalCluster: Dask's malloc trim off, housekeeping slowed down, SIGINT
    blocked while it starts, HTTP server on a free loopback port, logs silenced (the real
    cluster runs; its construction is observed)."""
    import logging
    import signal

    import dask
    import distributed

    import atlasstore.runs.generate as gen

    seen: dict[str, Any] = {}
    real_init = distributed.LocalCluster.__init__

    def spy(self: Any, *a: Any, **k: Any) -> None:
        seen.update({key: dask.config.get(key) for key in gen.LOCAL_CLUSTER_CONFIG})
        seen["sigint_blocked"] = signal.SIGINT in signal.pthread_sigmask(signal.SIG_BLOCK, [])
        seen["kwargs"] = k
        real_init(self, *a, **k)

    monkeypatch.setattr(distributed.LocalCluster, "__init__", spy)
    plan = Plan(domains=("plasma_physics",), sequences=1, **SMALL)
    assert generate(tmp_path / "g.zarr", plan, scheduler="threads", workers=1).written == 1
    assert {k: seen[k] for k in gen.LOCAL_CLUSTER_CONFIG} == gen.LOCAL_CLUSTER_CONFIG
    assert gen.LOCAL_CLUSTER_CONFIG["distributed.worker.profile.enabled"] is False
    assert seen["sigint_blocked"] and signal.SIGINT not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    assert seen["kwargs"]["scheduler_kwargs"] == {"dashboard_address": "127.0.0.1:0"}
    assert seen["kwargs"]["silence_logs"] == logging.CRITICAL
