"""One contract suite for every catalog backend (SQLite always; Neo4j with a real server).

The ``catalog`` fixture is parametrised over ``sqlite`` and ``neo4j``. The neo4j parameter finds
its server from NEO4J_URI/NEO4J_USER/NEO4J_PASSWORD (or ``scripts/neo4j env``), starts every test
from an empty database, and skips when no server answers -- or fails when ATLAS_REQUIRE_NEO4J=1
(as in CI). Start one with ``scripts/neo4j start && eval "$(scripts/neo4j env)"``.
"""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pytest

from atlasstore.catalog import (
    ArrayRecord,
    Catalog,
    GenerationRun,
    Lineage,
    Sequence,
    SQLiteCatalog,
    TimeStep,
    node_id,
    open_catalog,
)
from atlasstore.errors import CatalogError, CatalogNotFound, CatalogUnavailable, SchemaError
from helpers.catalog_fixtures import HOSTILE, batch, make_run, make_sequence, raw_counts


@pytest.fixture
def populated(catalog):
    """Two runs, five sequences over three domains with distinct stat ranges."""
    catalog.register_run(make_run("run-1", seed=11))
    catalog.register_run(make_run("run-2", seed=22, code_version="atlasstore 0.2.0", host="node-b"))
    catalog.register_sequences(*batch(
        make_sequence("plasma", "s1", "run-1", entropy=(1.0, 2.0), mean=(0.5, 1.5),
                      variance=(0.1, 0.2), perturbations=("rotation",)),
        make_sequence("plasma", "s2", "run-1", entropy=(3.0, 4.0), mean=(2.0, 3.0),
                      variance=(1.0, 2.0), perturbations=("gaussian_noise", "thermal_blur")),
        make_sequence("fluid", "s1", "run-1", entropy=(5.0, 6.0), mean=(1.0, 1.0),
                      variance=(0.5, 0.5), perturbations=(), levels=(128, 64), shape=(128, 192)),
    ))
    catalog.register_sequences(*batch(
        make_sequence("fluid", "s2", "run-2", entropy=(2.0, 5.0), mean=(4.0, 5.0),
                      variance=(3.0, 4.0), perturbations=("translation",)),
        make_sequence("astro", "s1", "run-2", entropy=(7.0, 7.0), mean=(0.0, 0.25),
                      variance=(0.0, 0.01), perturbations=("energy_scaling", "rotation")),
    ))
    return catalog


def keys(seqs):
    return [s.key for s in seqs]


# ------------------------------------------------------------------------------ basics


def test_is_a_catalog(catalog):
    assert isinstance(catalog, Catalog)
    assert catalog.count() == 0
    assert catalog.list_domains() == []
    assert catalog.sequence_keys() == []
    assert catalog.find_sequences() == []


def test_round_trip_records(catalog):
    run = make_run("run-1")
    catalog.register_run(run)
    seq, steps, arrays = make_sequence("plasma", "s1")
    catalog.register_sequences([seq], steps, arrays)
    assert catalog.get_run("run-1").to_dict() == run
    assert catalog.get_sequence("plasma/s1").to_dict() == seq
    assert [t.to_dict() for t in catalog.get_timesteps("plasma/s1")] == steps
    got = {a.key: a.to_dict() for a in catalog.get_arrays("plasma/s1")}
    assert got == {a["key"]: a for a in arrays}
    assert catalog.get_sequence("plasma/nope") is None
    assert catalog.get_run("nope") is None
    assert catalog.get_timesteps("plasma/nope") == []


def test_accepts_dataclasses_and_numpy_scalars(catalog):
    catalog.register_run(GenerationRun.from_dict(make_run("run-1")))
    seq, steps, arrays = make_sequence("plasma", "s1")
    seq = dict(seq, seed=np.int64(7), entropy_min=np.float32(7.0), n_steps=np.int32(4))
    catalog.register_sequences([Sequence.from_dict(seq)], [TimeStep.from_dict(t) for t in steps],
                               [ArrayRecord.from_dict(a) for a in arrays])
    got = catalog.get_sequence("plasma/s1")
    assert got.seed == 7 and got.entropy_min == 7.0 and got.n_steps == 4
    assert isinstance(got.entropy_min, float) and isinstance(got.seed, int)


def test_registration_is_idempotent(catalog):
    catalog.register_run(make_run("run-1"))
    catalog.register_run(make_run("run-1"))
    args = batch(make_sequence("plasma", "s1"), make_sequence("plasma", "s2"))
    catalog.register_sequences(*args)
    first = raw_counts(catalog)
    lin1 = catalog.lineage("plasma/s1/64/grad_x")
    for _ in range(2):
        catalog.register_sequences(*args)
        catalog.register_run(make_run("run-1"))
    assert raw_counts(catalog) == first
    assert first == {"Sequence": 2, "TimeStep": 8, "Array": 18, "GenerationRun": 1,
                     "ImportRun": 0, "SourceFile": 0,
                     # 2 agent edges, per sequence: 1 run + 4 steps + 9 arrays + 8 derivations
                     "edges": 2 + 2 * (1 + 4 + 9 + 8)}
    assert catalog.count() == 2
    assert len(catalog.find_timesteps()) == 8
    lin2 = catalog.lineage("plasma/s1/64/grad_x")
    assert lin2.to_dict() == lin1.to_dict()
    assert len(lin2.edges) == len({(e.src, e.rel, e.dst) for e in lin2.edges})


def test_reregister_overwrites_and_drops_stale_parts(catalog):
    catalog.register_run(make_run("run-1"))
    catalog.register_run(make_run("run-2", seed=99))
    catalog.register_sequences(*batch(make_sequence("plasma", "s1", n_steps=5)))
    seq, steps, arrays = make_sequence("plasma", "s1", "run-2", n_steps=3, entropy=(9.0, 9.5),
                                       levels=(256, 128))
    catalog.register_sequences([seq], steps, arrays)
    got = catalog.get_sequence("plasma/s1")
    assert got.run_id == "run-2" and got.entropy_min == 9.0 and got.n_steps == 3
    assert [t.t for t in catalog.get_timesteps("plasma/s1")] == [0, 1, 2]
    assert sorted(a.level for a in catalog.get_arrays("plasma/s1")) == [128] * 3 + [256] * 3
    assert [r.run_id for r in catalog.generation_runs_for("plasma/s1")] == ["run-2"]
    assert catalog.find_sequences(run_id="run-1") == []
    with pytest.raises(CatalogNotFound):
        catalog.lineage("plasma/s1/64/grad_x")
    counts = raw_counts(catalog)
    assert counts["TimeStep"] == 3 and counts["Array"] == 6


def test_reregistered_run_moves_its_agents(catalog):
    catalog.register_run(make_run("run-1", host="old-host", code_version="v1"))
    catalog.register_sequences(*batch(make_sequence("plasma", "s1")))
    catalog.register_run(make_run("run-1", host="new-host", code_version="v1"))
    lin = catalog.lineage("plasma/s1")
    assert {n.key for n in lin.of_kind("Host")} == {"new-host"}
    assert [r.host for r in catalog.generation_runs_for("plasma/s1")] == ["new-host"]
    with pytest.raises(CatalogNotFound):  # an agent without edges is gone on both backends
        catalog.lineage("Host:old-host")
    assert set(catalog.lineage("CodeVersion:v1").nodes) == {"CodeVersion:v1"}


def test_parts_of_an_existing_sequence_can_be_added(catalog):
    catalog.register_run(make_run("run-1"))
    seq, steps, arrays = make_sequence("plasma", "s1")
    catalog.register_sequences([seq], steps[:2], arrays[:3])  # 256 level only
    catalog.register_sequences([], steps[2:], arrays[3:])
    assert len(catalog.get_timesteps("plasma/s1")) == 4
    assert len(catalog.get_arrays("plasma/s1")) == 9
    assert catalog.lineage("plasma/s1/64/grad_x").has_edge(
        "Array:plasma/s1/64/energy", "wasDerivedFrom", "Array:plasma/s1/256/energy")


def test_batch_is_atomic_and_references_are_checked(catalog):
    catalog.register_run(make_run("run-1"))
    good = make_sequence("plasma", "ok")
    _, steps, arrays = make_sequence("plasma", "ghost")
    g_seqs, g_steps, g_arrays = batch(good)
    with pytest.raises(CatalogNotFound, match="plasma/ghost"):  # parts without their sequence
        catalog.register_sequences(g_seqs, g_steps + steps, g_arrays + arrays)
    assert catalog.count() == 0 and raw_counts(catalog)["TimeStep"] == 0
    with pytest.raises(CatalogNotFound, match="plasma/ghost"):
        catalog.register_sequences([], steps, arrays)
    seq, steps, arrays = make_sequence("plasma", "s1")
    with pytest.raises(CatalogNotFound, match="derived_from"):
        catalog.register_sequences([seq], steps, arrays[3:])  # 128/64 derived from missing 256
    assert catalog.count() == 0


def test_invalid_records_are_refused_before_writing(catalog):
    catalog.register_run(make_run("run-1"))
    seq, steps, arrays = make_sequence("plasma", "s1")
    with pytest.raises(SchemaError, match="key"):
        catalog.register_sequences([dict(seq, key="plasma/other")], steps, arrays)
    with pytest.raises(SchemaError, match="field"):
        catalog.register_sequences([seq], steps, [dict(arrays[0], field="energy_x")])
    with pytest.raises(SchemaError):
        catalog.register_sequences([dict(seq, entropy_min=3.0, entropy_max=2.0)], [], [])
    with pytest.raises(SchemaError, match="seed"):
        catalog.register_run(dict(make_run("run-2"), seed="not-an-int"))
    with pytest.raises(SchemaError):
        catalog.register_sequences([{k: v for k, v in seq.items() if k != "run_id"}], [], [])
    assert catalog.count() == 0


# ------------------------------------------------------------------------------ filters


def test_filter_domain_run_level(populated):
    c = populated
    assert c.list_domains() == ["astro", "fluid", "plasma"]
    assert c.count() == 5
    assert c.sequence_keys() == ["astro/s1", "fluid/s1", "fluid/s2", "plasma/s1", "plasma/s2"]
    assert keys(c.find_sequences()) == c.sequence_keys()
    assert keys(c.find_sequences(domains="plasma")) == ["plasma/s1", "plasma/s2"]
    assert keys(c.find_sequences(domains=["astro", "fluid"])) == ["astro/s1", "fluid/s1", "fluid/s2"]
    assert c.find_sequences(domains=[]) == []
    assert c.find_sequences(domains="nope") == []
    assert keys(c.find_sequences(run_id="run-2")) == ["astro/s1", "fluid/s2"]
    assert keys(c.find_sequences(run_id="run-1", domains="fluid")) == ["fluid/s1"]
    assert len(c.find_sequences(level=64)) == 5
    assert keys(c.find_sequences(level=256)) == ["astro/s1", "fluid/s2", "plasma/s1", "plasma/s2"]
    assert keys(c.find_sequences(level=128, domains="fluid")) == ["fluid/s1", "fluid/s2"]
    assert c.find_sequences(level=32) == []


@pytest.mark.parametrize("stat", ["entropy", "mean", "variance"])
def test_stat_range_boundaries_are_inclusive_overlap(populated, stat):
    c = populated
    # plasma/s1 ranges: entropy [1, 2], mean [0.5, 1.5], variance [0.1, 0.2]
    lo, hi = {"entropy": (1.0, 2.0), "mean": (0.5, 1.5), "variance": (0.1, 0.2)}[stat]
    f = lambda rng: "plasma/s1" in keys(c.find_sequences(domains="plasma", **{stat: rng}))  # noqa: E731
    assert f((hi, hi + 10))          # touches the max
    assert f((lo - 10, lo))          # touches the min
    assert f((lo, lo)) and f((hi, hi))
    assert f(((lo + hi) / 2, (lo + hi) / 2))  # inside
    assert f((lo - 1, hi + 1))       # contains
    assert not f((np.nextafter(hi, np.inf), hi + 10))
    assert not f((lo - 10, np.nextafter(lo, -np.inf)))
    assert f((None, lo)) and f((hi, None)) and f((None, None))
    assert not f((None, np.nextafter(lo, -np.inf)))
    assert not f((np.nextafter(hi, np.inf), None))


def test_stat_filters_combine(populated):
    c = populated
    assert keys(c.find_sequences(entropy=(2.0, 3.0))) == ["fluid/s2", "plasma/s1", "plasma/s2"]
    assert keys(c.find_sequences(entropy=(2.0, 3.0), mean=(2.5, 10))) == ["fluid/s2", "plasma/s2"]
    assert keys(c.find_sequences(entropy=(2.0, 3.0), mean=(2.5, 10), variance=(0, 2))) == ["plasma/s2"]
    assert keys(c.find_sequences(domains="fluid", entropy=(4.5, 4.6))) == ["fluid/s2"]
    assert c.find_sequences(entropy=(100, 200)) == []


def test_random_filters_match_brute_force(catalog):
    """Overlap filters (index seeks bounded by the widest registered range) are exact."""
    rng = np.random.default_rng(3)
    catalog.register_run(make_run("run-1"))
    made = []
    for i in range(60):
        w = [float(rng.choice([0.0, 0.01, 0.5, 3.0])) for _ in range(3)]
        lo = [float(rng.uniform(0, 10)) for _ in range(3)]
        made.append(make_sequence(["a", "b", "c"][i % 3], f"s{i:03d}",
                                  entropy=(lo[0], lo[0] + w[0]), mean=(lo[1], lo[1] + w[1]),
                                  variance=(lo[2], lo[2] + w[2]), n_steps=2))
    # registered in two batches: the widest range arrives last, after narrower queries ran
    catalog.register_sequences(*batch(*made[:30]))
    seqs = {s["key"]: s for s, _, _ in made[:30]}
    for phase in range(2):
        for _ in range(40):
            q: dict = {}
            for stat in ("entropy", "mean", "variance"):
                if rng.random() < 0.6:
                    a = float(rng.uniform(-1, 11))
                    b = a + float(rng.choice([0.0, 0.1, 1.0, 4.0]))
                    q[stat] = (a if rng.random() < 0.85 else None, b if rng.random() < 0.85 else None)
            if rng.random() < 0.5:
                q["domains"] = ["a", "b", "c"][int(rng.integers(3))]
            want = sorted(
                k for k, s in seqs.items()
                if ("domains" not in q or s["domain"] == q["domains"])
                and all((q[st][0] is None or s[f"{st}_max"] >= q[st][0])
                        and (q[st][1] is None or s[f"{st}_min"] <= q[st][1])
                        for st in ("entropy", "mean", "variance") if st in q))
            assert keys(catalog.find_sequences(**q)) == want, q
        if phase == 0:
            catalog.register_sequences(*batch(*made[30:]))
            seqs.update({s["key"]: s for s, _, _ in made[30:]})


def test_filter_perturbation_and_limit(populated):
    c = populated
    assert keys(c.find_sequences(perturbation="rotation")) == ["astro/s1", "plasma/s1"]
    assert keys(c.find_sequences(perturbation="thermal_blur")) == ["plasma/s2"]
    assert c.find_sequences(perturbation="nope") == []
    assert keys(c.find_sequences(perturbation="rotation", domains="astro")) == ["astro/s1"]
    assert keys(c.find_sequences(limit=2)) == ["astro/s1", "fluid/s1"]
    assert keys(c.find_sequences(limit=2, domains="plasma")) == ["plasma/s1", "plasma/s2"]
    assert c.find_sequences(limit=0) == []
    assert len(c.find_sequences(limit=100)) == 5


def test_bad_filter_arguments(populated):
    c = populated
    with pytest.raises(ValueError, match="reversed"):
        c.find_sequences(entropy=(3.0, 2.0))
    with pytest.raises(ValueError):
        c.find_sequences(mean=(1.0,))
    with pytest.raises(ValueError):
        c.find_sequences(mean=("a", 2))
    with pytest.raises(ValueError):
        c.find_sequences(limit=-1)


def test_find_timesteps(populated):
    c = populated
    # plasma/s1: 4 steps, entropy 1, 4/3, 5/3, 2; perturbations [], [rot], [rot], [rot]
    steps = c.find_timesteps(domains="plasma", entropy=(1.2, 2.0))
    assert [(s.sequence_key, s.t) for s in steps] == [("plasma/s1", 1), ("plasma/s1", 2),
                                                       ("plasma/s1", 3)]
    assert all(isinstance(s, TimeStep) for s in steps)
    assert [s.t for s in c.find_timesteps(domains="plasma", entropy=(2.0, 3.0))] == [3, 0]
    assert [s.t for s in c.find_timesteps(domains="plasma", entropy=(1.0, 1.0))] == [0]
    assert [s.t for s in c.find_timesteps(domains="plasma", mean=(None, 0.5))] == [0]
    assert [s.t for s in c.find_timesteps(domains="plasma", variance=(0.2, 0.2))] == [3]
    # per-step perturbation: plasma/s2 alternates gaussian_noise, thermal_blur, gaussian_noise
    assert [(s.key) for s in c.find_timesteps(perturbation="thermal_blur")] == ["plasma/s2/2"]
    assert [s.t for s in c.find_timesteps(domains="plasma", perturbation="gaussian_noise")] == [1, 3]
    assert len(c.find_timesteps(run_id="run-2")) == 8
    assert len(c.find_timesteps(level=256)) == 16
    assert len(c.find_timesteps(limit=3)) == 3
    assert [s.key for s in c.find_timesteps(sequence_keys=["astro/s1"], entropy=(7, 7))] == \
        [f"astro/s1/{t}" for t in range(4)]
    assert c.find_timesteps(entropy=(100, 200)) == []
    # order: by sequence key then t
    allsteps = c.find_timesteps()
    assert [(s.sequence_key, s.t) for s in allsteps] == sorted((s.sequence_key, s.t) for s in allsteps)


# ------------------------------------------------------------------------------ lineage


def test_lineage_of_a_gradient_array_at_64(populated):
    c = populated
    lin = c.lineage("plasma/s1/64/grad_x")
    assert isinstance(lin, Lineage)
    root = "Array:plasma/s1/64/grad_x"
    assert lin.root == root
    want_nodes = {root, "Array:plasma/s1/64/energy", "Array:plasma/s1/256/energy",
                  "Sequence:plasma/s1", "GenerationRun:run-1",
                  "CodeVersion:atlasstore 0.1.0+g1234", "Host:node-a"}
    assert set(lin.nodes) == want_nodes
    assert lin.edge(root, "wasDerivedFrom", "Array:plasma/s1/64/energy").properties == \
        {"operation": "gradient(x, central, h=1)"}
    assert lin.edge("Array:plasma/s1/64/energy", "wasDerivedFrom",
                    "Array:plasma/s1/256/energy").properties == {"operation": "area_downsample(factor=4)"}
    for a in ("64/grad_x", "64/energy", "256/energy"):
        assert lin.has_edge("Sequence:plasma/s1", "hasArray", f"Array:plasma/s1/{a}")
    assert lin.has_edge("Sequence:plasma/s1", "wasGeneratedBy", "GenerationRun:run-1")
    assert lin.has_edge("GenerationRun:run-1", "wasAssociatedWith", "CodeVersion:atlasstore 0.1.0+g1234")
    assert lin.has_edge("GenerationRun:run-1", "wasAssociatedWith", "Host:node-a")
    assert len(lin.edges) == 8
    # node kinds, PROV classes and properties
    assert lin.nodes[root].kind == "Array" and lin.nodes[root].prov == "entity"
    assert lin.nodes[root].properties["checksum"].startswith("sha256:")
    assert lin.nodes["GenerationRun:run-1"].prov == "activity"
    assert lin.nodes["GenerationRun:run-1"].properties["seed"] == 11
    assert lin.nodes["GenerationRun:run-1"].properties["config"]["n_steps"] == 4
    assert lin.nodes["Host:node-a"].prov == "agent"
    assert lin.nodes["Host:node-a"].properties == {"name": "node-a"}
    assert lin.nodes["Sequence:plasma/s1"].properties["seed"] == 7
    # the qualified node id gives the same answer; JSON-able
    assert c.lineage(root).to_dict() == lin.to_dict()
    json.dumps(lin.to_dict())


def test_lineage_of_other_nodes(populated):
    c = populated
    lin = c.lineage("plasma/s2/3")  # a time step
    assert lin.root == "TimeStep:plasma/s2/3"
    assert set(lin.nodes) == {"TimeStep:plasma/s2/3", "Sequence:plasma/s2", "GenerationRun:run-1",
                              "CodeVersion:atlasstore 0.1.0+g1234", "Host:node-a"}
    assert lin.has_edge("Sequence:plasma/s2", "hasTimeStep", "TimeStep:plasma/s2/3")
    lin = c.lineage("Sequence:fluid/s2")  # a sequence: its run and agents, not its parts
    assert set(lin.nodes) == {"Sequence:fluid/s2", "GenerationRun:run-2",
                              "CodeVersion:atlasstore 0.2.0", "Host:node-b"}
    lin = c.lineage("fluid/s1/128/energy")  # base level of a 2:3 sequence without 256
    assert set(lin.nodes) == {"Array:fluid/s1/128/energy", "Sequence:fluid/s1",
                              "GenerationRun:run-1", "CodeVersion:atlasstore 0.1.0+g1234",
                              "Host:node-a"}
    assert c.lineage("GenerationRun:run-2").nodes.keys() == {
        "GenerationRun:run-2", "CodeVersion:atlasstore 0.2.0", "Host:node-b"}
    assert set(c.lineage("Host:node-b").nodes) == {"Host:node-b"}
    with pytest.raises(CatalogNotFound):
        c.lineage("plasma/s9/64/grad_x")
    with pytest.raises(CatalogNotFound):
        c.lineage("Array:plasma/s9/64/grad_x")


def test_generation_runs_for_sequences_and_arrays(populated):
    c = populated
    runs = c.generation_runs_for("astro/s1/64/grad_y")
    assert [(r.run_id, r.seed, r.code_version) for r in runs] == [("run-2", 22, "atlasstore 0.2.0")]
    assert runs[0].config == make_run("run-2", seed=22)["config"]
    assert [r.run_id for r in c.generation_runs_for("Sequence:plasma/s1")] == ["run-1"]
    assert [r.run_id for r in c.generation_runs_for("GenerationRun:run-1")] == ["run-1"]
    assert c.generation_runs_for("Host:node-a") == []


def test_training_lineage_reaches_generation_runs(populated):
    c = populated
    sel = c.find_sequences(entropy=(3.5, 7.0))
    assert keys(sel) == ["astro/s1", "fluid/s1", "fluid/s2", "plasma/s2"]
    dv = c.register_dataset_version("dv-1", {"entropy": [3.5, 7.0]}, {"val_fraction": 0.05, "seed": 0},
                                    keys(sel))
    assert dv.sequence_keys == keys(sel)
    tr = c.register_training_run("train-1", {"lr": 1e-4, "batch": 32}, "dv-1",
                                 code_version="atlasstore 0.3.0", host="gpu-1")
    assert tr.dataset_version_id == "dv-1"
    ck = c.register_checkpoint("ckpt-100", "train-1", 100, {"loss": 0.25, "fidelity": 0.9},
                               "/ckpt/train-1/100")
    assert ck.step == 100
    assert c.get_dataset_version("dv-1").to_dict() == dv.to_dict()
    assert c.get_training_run("train-1").to_dict() == tr.to_dict()
    assert c.get_checkpoint("ckpt-100").to_dict() == ck.to_dict()

    runs = c.generation_runs_for("ckpt-100")
    assert [(r.run_id, r.seed, r.config["seed"]) for r in runs] == [("run-1", 11, 11), ("run-2", 22, 22)]
    assert [r.run_id for r in c.generation_runs_for("TrainingRun:train-1")] == ["run-1", "run-2"]

    lin = c.lineage("Checkpoint:ckpt-100")
    assert lin.has_edge("Checkpoint:ckpt-100", "wasGeneratedBy", "TrainingRun:train-1")
    assert lin.has_edge("TrainingRun:train-1", "used", "DatasetVersion:dv-1")
    assert lin.has_edge("TrainingRun:train-1", "wasAssociatedWith", "Host:gpu-1")
    assert lin.has_edge("TrainingRun:train-1", "wasAssociatedWith", "CodeVersion:atlasstore 0.3.0")
    for k in keys(sel):
        assert lin.has_edge("DatasetVersion:dv-1", "wasDerivedFrom", f"Sequence:{k}")
    assert {n.key for n in lin.of_kind("Sequence")} == set(keys(sel))
    assert {n.properties["seed"] for n in lin.of_kind("Sequence")} == {7}
    assert {n.key for n in lin.of_kind("GenerationRun")} == {"run-1", "run-2"}
    assert {n.key for n in lin.of_kind("Host")} == {"gpu-1", "node-a", "node-b"}
    assert not lin.of_kind("Array") and not lin.of_kind("TimeStep")
    assert lin.nodes["TrainingRun:train-1"].prov == "activity"
    assert lin.nodes["DatasetVersion:dv-1"].properties["split"] == {"val_fraction": 0.05, "seed": 0}

    # re-registering is idempotent; a changed selection replaces the edges
    c.register_dataset_version("dv-1", {"entropy": [3.5, 7.0]}, {}, ["plasma/s2"])
    c.register_training_run("train-1", {"lr": 1e-4}, "dv-1")
    c.register_checkpoint("ckpt-100", "train-1", 100, {"loss": 0.25}, "/ckpt/train-1/100")
    assert [r.run_id for r in c.generation_runs_for("ckpt-100")] == ["run-1"]
    lin = c.lineage("ckpt-100")
    assert {n.key for n in lin.of_kind("Sequence")} == {"plasma/s2"}
    assert {n.key for n in lin.of_kind("Host")} == {"node-a"}  # train-1 has no host any more


def test_training_references_are_checked(populated):
    c = populated
    with pytest.raises(CatalogNotFound, match="plasma/none"):
        c.register_dataset_version("dv-x", {}, {}, ["plasma/s1", "plasma/none"])
    assert c.get_dataset_version("dv-x") is None
    with pytest.raises(CatalogNotFound, match="dv-missing"):
        c.register_training_run("train-x", {}, "dv-missing")
    assert c.get_training_run("train-x") is None
    with pytest.raises(CatalogNotFound, match="train-missing"):
        c.register_checkpoint("ck-x", "train-missing", 1, {}, "/x")
    assert c.get_checkpoint("ck-x") is None


# ------------------------------------------------------------------------------ removal


def test_remove_sequences(populated):
    c = populated
    before = raw_counts(c)
    c.register_dataset_version("dv-1", {}, {}, ["plasma/s1", "plasma/s2"])
    assert c.remove_sequences(["plasma/s1", "plasma/missing", "plasma/s1"]) == 1
    assert c.get_sequence("plasma/s1") is None
    assert "plasma/s1" not in c.sequence_keys() and c.count() == 4
    assert c.get_timesteps("plasma/s1") == [] and c.get_arrays("plasma/s1") == []
    assert "plasma/s1" not in keys(c.find_sequences(domains="plasma"))
    assert all(t.sequence_key != "plasma/s1" for t in c.find_timesteps())
    with pytest.raises(CatalogNotFound):
        c.lineage("plasma/s1/64/grad_x")
    after = raw_counts(c)
    assert after["Sequence"] == before["Sequence"] - 1
    assert after["TimeStep"] == before["TimeStep"] - 4 and after["Array"] == before["Array"] - 9
    # its own 22 edges and the dataset version's edge to it are gone; the other one stays
    assert after["edges"] == before["edges"] - 22 + 1
    lin = c.lineage("DatasetVersion:dv-1")
    assert {n.key for n in lin.of_kind("Sequence")} == {"plasma/s2"}
    # the rest is untouched and still complete
    assert len(c.get_arrays("plasma/s2")) == 9
    assert c.lineage("plasma/s2/64/grad_y").has_edge(
        "Array:plasma/s2/64/energy", "wasDerivedFrom", "Array:plasma/s2/256/energy")
    assert c.remove_sequences([]) == 0
    assert c.remove_sequences(["nope/nope"]) == 0
    assert c.remove_sequences(c.sequence_keys()) == 4
    assert c.count() == 0 and raw_counts(c)["Array"] == 0


# ------------------------------------------------------------------------------ hostile names


def test_hostile_names_round_trip_as_plain_data(catalog):
    c = catalog
    c.register_run(make_run("plain-run"))
    c.register_sequences(*batch(make_sequence("plain", "s1", "plain-run")))
    before = raw_counts(c)
    for i, name in enumerate(HOSTILE):
        run = make_run(f"run {name}", seed=i, code_version=f"code {name}", host=f"host {name}",
                       config={"note": name, name: [name, i], "nested": {"k": name}})
        c.register_run(run)
        assert c.get_run(run["run_id"]).to_dict() == run
        seq, steps, arrays = make_sequence(f"dom {name}", f"seq {name}", run["run_id"],
                                           perturbations=(name, "rotation"), pattern=f"pat {name}")
        c.register_sequences([seq], steps, arrays)
        c.register_sequences([seq], steps, arrays)  # idempotent with hostile keys too
        assert c.get_sequence(seq["key"]).to_dict() == seq
        assert [t.to_dict() for t in c.get_timesteps(seq["key"])] == steps
        assert keys(c.find_sequences(domains=seq["domain"])) == [seq["key"]]
        assert keys(c.find_sequences(perturbation=name)) == [seq["key"]]
        assert keys(c.find_sequences(run_id=run["run_id"])) == [seq["key"]]
        lin = c.lineage(f"{seq['key']}/64/grad_x")
        assert set(lin.nodes) >= {node_id("Sequence", seq["key"]),
                                  node_id("GenerationRun", run["run_id"]),
                                  node_id("Host", f"host {name}"),
                                  node_id("CodeVersion", f"code {name}")}
        assert lin.nodes[node_id("GenerationRun", run["run_id"])].properties["config"] == run["config"]
        assert [r.run_id for r in c.generation_runs_for(node_id("Sequence", seq["key"]))] == [run["run_id"]]
    dv = c.register_dataset_version(f"dv {HOSTILE[3]}", {"q": HOSTILE[5]}, {"s": HOSTILE[6]},
                                    [f"dom {n}/seq {n}" for n in HOSTILE])
    c.register_training_run(f"tr {HOSTILE[4]}", {"x": HOSTILE[0]}, dv.version_id,
                            host=HOSTILE[7], code_version=HOSTILE[1])
    c.register_checkpoint(f"ck {HOSTILE[2]}", f"tr {HOSTILE[4]}", 1, {HOSTILE[8]: 1.0}, HOSTILE[6])
    assert c.get_checkpoint(f"ck {HOSTILE[2]}").metrics == {HOSTILE[8]: 1.0}
    assert len(c.generation_runs_for(f"ck {HOSTILE[2]}")) == len(HOSTILE)
    # everything is still there: nothing was deleted or rewritten by the payloads
    n = len(HOSTILE)
    after = raw_counts(c)
    assert after["Sequence"] == before["Sequence"] + n == c.count()
    assert after["Array"] == before["Array"] + 9 * n
    assert after["TimeStep"] == before["TimeStep"] + 4 * n
    assert after["GenerationRun"] == before["GenerationRun"] + n
    assert c.get_sequence("plain/s1") is not None
    assert len(c.list_domains()) == n + 1
    assert sorted(c.sequence_keys()) == sorted(["plain/s1"] + [f"dom {x}/seq {x}" for x in HOSTILE])


# ------------------------------------------------------------------------------ lifecycle


def test_context_manager_and_close(catalog):
    with catalog as c:
        c.register_run(make_run("run-1"))
    with pytest.raises(CatalogError):
        catalog.count()
    catalog.close()  # idempotent


def test_data_persists_across_reopen(catalog, tmp_path):
    catalog.register_run(make_run("run-1"))
    catalog.register_sequences(*batch(make_sequence("plasma", "s1")))
    catalog.close()
    if catalog.backend == "sqlite":
        again = SQLiteCatalog(catalog.path)
    else:
        from atlasstore.catalog.neo4j import Neo4jCatalog
        from helpers.catalog_fixtures import neo4j_settings
        s = neo4j_settings()
        again = Neo4jCatalog(s["uri"], s["user"], s["password"])
    with again:
        assert again.sequence_keys() == ["plasma/s1"]
        assert len(again.get_arrays("plasma/s1")) == 9


# ---------------------------------------------------------------- open_catalog and SQLite specifics


def test_open_catalog_specs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open_catalog("sqlite:///rel.db") as c:
        assert isinstance(c, SQLiteCatalog) and c.path == "rel.db"
    assert (tmp_path / "rel.db").exists()
    with open_catalog(f"sqlite:///{tmp_path}/abs.db") as c:
        assert c.path == str(tmp_path / "abs.db")
    with open_catalog(str(tmp_path / "plain.db")) as c:
        assert isinstance(c, SQLiteCatalog)
    with open_catalog(tmp_path / "pathlike.db") as c:
        assert isinstance(c, SQLiteCatalog)
    with open_catalog("sqlite:///:memory:") as c:
        assert c.count() == 0
    with pytest.raises(CatalogError, match="unknown catalog scheme"):
        open_catalog("postgres://x/y")
    with pytest.raises(CatalogError, match="does not exist"):
        open_catalog(str(tmp_path / "no" / "such" / "dir" / "c.db"))


def test_unreachable_neo4j_spec_raises_quickly():
    t0 = time.monotonic()
    with pytest.raises(CatalogUnavailable) as err:
        open_catalog("bolt://127.0.0.1:1", user="neo4j", password="s3cret-pw-xyz",
                     connection_timeout=2)
    assert time.monotonic() - t0 < 15
    assert "bolt://127.0.0.1:1" in str(err.value) and "s3cret-pw-xyz" not in str(err.value)


def test_sqlite_pragmas_and_version(tmp_path):
    with SQLiteCatalog(tmp_path / "c.db") as c:
        assert c._q("PRAGMA journal_mode")[0][0] == "wal"
        assert c._q("PRAGMA foreign_keys")[0][0] == 1
        assert [r[0] for r in c._q("SELECT version FROM schema_version")] == [3]
        idx = {r[0] for r in c._q("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert {"sequences_domain_entropy", "sequences_run", "timesteps_entropy", "edges_dst"} <= idx
    c = SQLiteCatalog(tmp_path / "c.db")
    c._q("UPDATE schema_version SET version = 99")
    c.close()
    with pytest.raises(CatalogError, match="layout version 99"):
        SQLiteCatalog(tmp_path / "c.db")


def test_sqlite_refuses_a_file_that_is_not_a_catalog(tmp_path):
    bad = tmp_path / "bad.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(CatalogError, match="not a usable catalog"):
        SQLiteCatalog(bad)


def test_sqlite_shared_by_threads_and_processes(tmp_path):
    path = tmp_path / "c.db"
    c = SQLiteCatalog(path)
    c.register_run(make_run("run-1"))
    errors: list[BaseException] = []

    def writer(i: int) -> None:
        try:
            for j in range(5):
                c.register_sequences(*batch(make_sequence(f"d{i}", f"s{j}")))
                c.find_sequences(domains=f"d{i}")
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    other = SQLiteCatalog(path)  # a second connection, as another process would have
    other.register_sequences(*batch(make_sequence("other", "s0")))
    for t in threads:
        t.join()
    assert not errors
    assert c.count() == 21 and other.count() == 21
    c.close()
    other.close()


def test_fast_schema_precheck_is_sound():
    """The compiled pre-check never accepts what jsonschema rejects, and takes the fast path
    for ordinary records."""
    import copy
    import math as _math

    from atlasstore.catalog._fastcheck import checker
    from atlasstore.io.schemas import _validator

    seq, steps, arrays = make_sequence("plasma", "s1")
    docs = {"catalog-sequence": seq, "catalog-timestep": steps[1], "catalog-array": arrays[4],
            "catalog-generation-run": make_run("run-1")}
    bad_values = [None, True, -1, 1.5, _math.nan, "", "x", [], [1, 2], {}, {"a": 1}, 10**30]
    for name, doc in docs.items():
        check, full = checker(name), _validator(name)
        assert check(doc) and full.is_valid(doc)
        mutants = []
        for k in doc:
            mutants.append({kk: v for kk, v in doc.items() if kk != k})       # missing key
            for bad in bad_values:
                mutants.append({**doc, k: bad})                                # wrong value
            if isinstance(doc[k], dict):
                for kk in doc[k]:
                    for bad in bad_values:
                        mutants.append({**doc, k: {**doc[k], kk: bad}})
            if isinstance(doc[k], list) and doc[k]:
                for bad in bad_values:
                    mutants.append({**doc, k: [bad] + doc[k][1:]})
        mutants.append({**doc, "extra": 1})
        for m in mutants:
            m = copy.deepcopy(m)
            assert not check(m) or full.is_valid(m), (name, m)
