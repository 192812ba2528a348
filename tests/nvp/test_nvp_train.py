"""NVP trainer: split by sequence, config, schedules, early stopping, checkpoints and exact resume,
metrics files, lineage from a checkpoint to the generation runs (SQLite; Neo4j when reachable),
and the ``atlas train`` / ``atlas evaluate`` commands.

One tiny store (2 domains x 3 sequences x 4 steps at 128x128, levels 128 and 64) and one tiny
model (width 4, depth 1) serve every test; the training step compiles once per session.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atlasstore import cli
from atlasstore.catalog import SQLiteCatalog
from atlasstore.errors import SchemaError, TrainError
from atlasstore.io.locations import default_catalog_location
from atlasstore.nvp.checkpoint import load_checkpoint, record_checkpoint
from atlasstore.nvp.config import OptimConfig, TrainConfig
from atlasstore.nvp.input_pipeline import build_query, split_by_sequence
from atlasstore.nvp.lineage import generation_lineage, register_lineage
from atlasstore.nvp.metrics import EarlyStopping, read_metrics
from atlasstore.nvp.train import make_schedule, train
from atlasstore.nvp.train_steps import validate_model
from atlasstore.runs.generate import Plan, generate, sequence_seed
from atlasstore.store import AtlasStore
from helpers.catalog_fixtures import open_neo4j_or_skip

REPO = Path(__file__).resolve().parents[2]

TINY: dict[str, Any] = {
    "name": "tiny",
    "seed": 0,
    "data": {"batch_size": 2, "val_fraction": 0.2, "prefetch": 1, "workers": 1},
    "model": {"width": 4, "max_width": 8, "depth": 1, "blocks": 1, "groups": 2, "dropout": 0.1},
    "optim": {"learning_rate": 1e-3, "schedule": "warmup_cosine", "warmup_steps": 2},
    "train": {"max_steps": 6, "log_every": 1, "eval_every": 3, "patience": 5,
              "keep_checkpoints": 2},
    "eval": {"mc_samples": 2, "rollout_steps": 2, "n_plots": 1, "batch_size": 2,
             "fit_windows": 4},
}


def plan() -> Plan:
    return Plan(domains=("plasma_physics", "fluid_dynamics"), sequences=3, steps=4,
                shape=(128, 128), seed=3)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The store (with its SQLite catalog) and run A, trained through ``atlas train``."""
    root = tmp_path_factory.mktemp("nvp")
    store = root / "atlas.zarr"
    with SQLiteCatalog(default_catalog_location(store)) as cat:
        rep = generate(store, plan(), scheduler="serial", catalog=cat)
    assert rep.ok and rep.written == 6
    cfg_path = root / "tiny.json"
    cfg_path.write_text(json.dumps(TINY))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        rc = cli.main(["train", "--config", str(cfg_path), "--store", str(store),
                       "--out", str(root / "runA")])
    return {"root": root, "store": store, "cfg_path": cfg_path, "run": root / "runA",
            "rc": rc, "stdout": out.getvalue()}


# ------------------------------------------------------------------------------------ split


def test_split_by_sequence_properties() -> None:
    keys = [f"d{i % 3}/seq-{i:05d}" for i in range(40)]
    tr, va = split_by_sequence(keys, 0.05, seed=7)
    assert len(va) == 3 and len(tr) == 37  # one per domain (14, 13, 13 sequences)
    assert sorted(k.split("/")[0] for k in va) == ["d0", "d1", "d2"]
    assert not set(tr) & set(va) and sorted(tr + va) == sorted(keys)
    assert split_by_sequence(list(reversed(keys)), 0.05, seed=7) == (tr, va)  # order-free
    assert split_by_sequence(keys, 0.05, seed=8) != (tr, va)  # the seed matters
    _, va2 = split_by_sequence(keys, 0.25, seed=7)  # round(0.25 n_d) per domain
    assert [sum(k.startswith(f"d{d}/") for k in va2) for d in range(3)] == [4, 3, 3]
    # three domains of one sequence each: none can give one, so one is held out overall
    assert len(split_by_sequence(keys[:3], 0.05, 0)[1]) == 1
    assert len(split_by_sequence(keys[:3], 0.0, 0)[1]) == 1
    assert split_by_sequence(keys[:2], 0.9, 0)[0] in ([keys[0]], [keys[1]])  # one to train on
    one_each = ["a/s1", "b/s1", "b/s2"]  # a domain with one sequence trains on it
    assert split_by_sequence(one_each, 0.5, 0) in ((["a/s1", "b/s1"], ["b/s2"]),
                                                    (["a/s1", "b/s2"], ["b/s1"]))
    with pytest.raises(TrainError, match="at least 2"):
        split_by_sequence(keys[:1])


def test_run_split_keeps_every_sequence_on_one_side(world: dict[str, Any]) -> None:
    run = json.loads((world["run"] / "run.json").read_text())
    tr, va = run["split"]["train"], run["split"]["val"]
    st = AtlasStore.open(world["store"])
    cfg = TrainConfig.from_dict(TINY)
    assert (tr, va) == split_by_sequence(tr + va, 0.2, seed=0)
    assert len(va) == 2 and len(tr) == 4  # one validation sequence per domain

    def seq_of(w: Any) -> str:
        return f"{w.domain}/{w.sequence_id}"

    train_seqs = {seq_of(w) for w in build_query(st, cfg.data, 128, tr).windows()}
    val_seqs = {seq_of(w) for w in build_query(st, cfg.data, 128, va).windows()}
    assert train_seqs == set(tr) and val_seqs == set(va) and not train_seqs & val_seqs


# ------------------------------------------------------------------------------------ config


def test_shipped_configs_validate() -> None:
    for name in ("nvp-cpu-small.json", "nvp-gpu.json"):
        cfg = TrainConfig.load(REPO / "configs" / name)
        assert cfg.loss.lambda_conservation == 0.1 and cfg.loss.lambda_entropy == 0.05
    assert TrainConfig.from_dict({}).optim.learning_rate == 1e-4  # the predecessor's default


def test_the_default_config_is_the_shipped_cpu_config_with_the_data_left_open() -> None:
    """``atlas train`` without --config runs configs/nvp-cpu-small.json's settings, except the
    level, which it takes from the data (the file names 128, for the 256x256 synthetic data)."""
    shipped = TrainConfig.load(REPO / "configs" / "nvp-cpu-small.json").to_dict()
    default = TrainConfig.default().to_dict()
    assert default["data"]["resolution"] is None and shipped["data"]["resolution"] == 128
    for doc in (shipped, default):
        doc["data"]["resolution"] = None
        doc["description"] = ""
    assert default == shipped


@pytest.mark.parametrize("bad", [{"optim": {"schedule": "linear"}},
                                 {"optim": {"learning_rate": -1}},
                                 {"model": {"widht": 4}}, {"bogus": 1},
                                 {"data": {"val_fraction": 1.0}}, {"train": {"monitor": "acc"}}])
def test_bad_configs_are_refused(bad: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(SchemaError):
        TrainConfig.from_dict(bad)
    p = tmp_path / "c.json"
    p.write_text(json.dumps(bad))
    with pytest.raises(SchemaError, match=str(p)):
        TrainConfig.load(p)


def test_with_overrides() -> None:
    c = TrainConfig.from_dict(TINY).with_overrides(train_max_steps=9, seed=4,
                                                   optim_learning_rate=0.5)
    assert (c.train.max_steps, c.seed, c.optim.learning_rate) == (9, 4, 0.5)
    assert c.train.eval_every == 3
    assert c.with_overrides(loss=c.loss) == c  # a whole section
    assert TrainConfig.from_dict(c.to_dict()) == c  # every config round-trips through its doc


@pytest.mark.parametrize("change,where", [({"train_max_steps": 0}, "train/max_steps"),
                                          ({"seed": -1}, "seed"),
                                          ({"optim_learning_rate": -1.0}, "optim/learning_rate"),
                                          ({"train_monitor": "acc"}, "train/monitor"),
                                          ({"bogus": 1}, "<root>")])
def test_overrides_are_validated_like_a_loaded_config(change: dict[str, Any], where: str) -> None:
    with pytest.raises(SchemaError, match=f"overrides .*invalid at {where}"):
        TrainConfig.from_dict(TINY).with_overrides(**change)


def test_atlas_train_refuses_max_steps_0(world: dict[str, Any], tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run0"
    rc = cli.main(["train", "--config", str(world["cfg_path"]), "--store", str(world["store"]),
                   "--out", str(out), "--max-steps", "0"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "train_max_steps=0" in err and "train/max_steps" in err and "minimum of 1" in err
    assert not out.exists()  # nothing written


def test_schedules() -> None:
    lr = 1e-3
    const = make_schedule(OptimConfig(learning_rate=lr), 100)
    assert float(const(0)) == float(const(99)) == pytest.approx(lr)
    cos = make_schedule(OptimConfig(learning_rate=lr, schedule="cosine", end_lr_factor=0.1), 100)
    assert float(cos(0)) == pytest.approx(lr) and float(cos(100)) == pytest.approx(0.1 * lr)
    assert float(cos(50)) == pytest.approx(lr * (0.1 + 0.9 * 0.5), rel=1e-4)
    wc = make_schedule(OptimConfig(learning_rate=lr, schedule="warmup_cosine", warmup_steps=10),
                       100)
    assert float(wc(0)) == 0.0 and float(wc(5)) == pytest.approx(lr / 2)
    assert float(wc(10)) == pytest.approx(lr) and float(wc(100)) == pytest.approx(0.0, abs=1e-9)


def test_early_stopping_unit() -> None:
    es = EarlyStopping(patience=2, min_delta=0.1)
    assert es.update(1.0, 10) and es.best_step == 10
    assert not es.update(0.95, 20)  # not better by min_delta
    assert not es.should_stop
    assert not es.update(float("nan"), 30)
    assert es.should_stop
    es2 = EarlyStopping.from_dict(es.to_dict())
    assert (es2.best, es2.best_step, es2.bad_evals) == (1.0, 10, 2)
    assert not EarlyStopping(patience=None).should_stop


# ------------------------------------------------------------------------------------ training


def test_atlas_train_writes_metrics_checkpoints_and_events(world: dict[str, Any]) -> None:
    assert world["rc"] == 0, world["stdout"]
    assert "best checkpoint:" in world["stdout"] and "val @ 3" in world["stdout"]
    run = world["run"]
    recs = read_metrics(run)
    tr = [r for r in recs if r["split"] == "train"]
    va = [r for r in recs if r["split"] == "val"]
    assert [r["step"] for r in tr] == [1, 2, 3, 4, 5, 6]
    for r in tr:  # every loss term logged separately, and the input wait
        assert {"loss", "mse", "conservation", "entropy", "nll", "lr", "wait_s",
                "wait_fraction", "steps_per_s", "grad_norm"} <= set(r)
        assert all(math.isfinite(r[k]) for k in ("loss", "mse", "nll", "wait_s"))
    assert [r["step"] for r in va] == [3, 6]
    assert all({"energy_fidelity", "vrmse", "conservation", "persistence_vrmse"} <= set(r)
               for r in va)
    assert list((run / "tb").glob("events.out.tfevents.*"))
    latest = sorted(int(p.name) for p in (run / "checkpoints" / "latest").iterdir()
                    if p.name.isdigit())
    best = [int(p.name) for p in (run / "checkpoints" / "best").iterdir() if p.name.isdigit()]
    assert latest == [3, 6] and len(best) == 1
    # the best checkpoint is the step with the lowest validation energy fidelity
    assert best[0] == min(va, key=lambda r: r["energy_fidelity"])["step"]


def test_best_checkpoint_restores_the_validated_model(world: dict[str, Any]) -> None:
    from atlasstore.training.windows import WindowSource

    ck = load_checkpoint(world["run"])
    assert ck.meta["kind"] == "best"
    va = {r["step"]: r for r in read_metrics(world["run"]) if r["split"] == "val"}
    st = AtlasStore.open(world["store"])
    cfg = ck.config
    src = WindowSource(build_query(st, cfg.data, 128, ck.meta["split"]["val"]), 1, 1)
    vm, var_scale = validate_model(ck.model, src, cfg.loss, 1, cfg.data.batch_size)
    assert vm["energy_fidelity"] == pytest.approx(va[ck.step]["energy_fidelity"], rel=1e-5)
    # the checkpoint holds the variance calibration of that validation
    np.testing.assert_allclose(np.asarray(ck.model.var_scale[...]), var_scale, rtol=1e-5)


def test_resume_continues_with_identical_losses(world: dict[str, Any]) -> None:
    cfg = TrainConfig.from_dict(TINY)
    out = world["root"] / "runB"
    first = train(cfg, store=world["store"], out_dir=out, stop_at=3)
    assert first.stopped == "stop_at" and first.step == 3
    with pytest.raises(TrainError, match="resume"):
        train(cfg, store=world["store"], out_dir=out)  # would clobber the run
    second = train(cfg, store=world["store"], out_dir=out, resume=True)
    assert second.resumed_from == 3 and second.step == 6 and second.stopped == "max_steps"
    assert second.run_id == first.run_id
    ref = {r["step"]: r for r in read_metrics(world["run"]) if r["split"] == "train"}
    got = {r["step"]: r for r in first.losses + second.losses}
    for step in range(1, 7):
        for k in ("loss", "mse", "conservation", "entropy", "nll"):
            assert got[step][k] == ref[step][k], (step, k)
    # the metrics file holds every step once
    steps = [r["step"] for r in read_metrics(out) if r["split"] == "train"]
    assert steps == [1, 2, 3, 4, 5, 6]
    with pytest.raises(TrainError, match="nothing to resume"):
        train(cfg, store=world["store"], out_dir=world["root"] / "runC", resume=True)


def test_run_record_survives_a_write_cut_short(world: dict[str, Any], tmp_path: Path) -> None:
    """run.json is replaced, never rewritten in place: a write that stops half way (here: the
    kernel's file-size limit, as a full disk or a kill would stop it) leaves the old record, and
    the run still resumes."""
    import resource

    out = tmp_path / "runA"
    shutil.copytree(world["run"], out)
    before = (out / "run.json").read_text()
    info = {"ckpt_id": "x/latest/7", "step": 7, "path": str(out / "nowhere"), "kind": "latest",
            "metrics": {"train": {"loss": 1.0}}, "created": "2025-01-01T00:00:00+00:00"}
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (len(before) // 2, hard))
    try:
        with pytest.raises(OSError):  # EFBIG half way through the new record
            record_checkpoint(out, info)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert (out / "run.json").read_text() == before
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in world["run"].iterdir())
    res = train(TrainConfig.from_dict(TINY), store=world["store"], out_dir=out, resume=True,
                catalog=False)
    assert res.resumed_from == 6 and res.step == 6 and res.stopped == "max_steps"


def _open_files_under(prefix: Path) -> list[str]:
    fd_dir = Path("/proc/self/fd")
    if not fd_dir.is_dir():
        pytest.skip("needs /proc/self/fd to list open files")
    links = []
    for fd in fd_dir.iterdir():
        with contextlib.suppress(OSError):
            links.append(os.readlink(fd))
    return [p for p in links if p.startswith(str(prefix))]


def test_a_failing_run_closes_the_catalog_it_opened(world: dict[str, Any], tmp_path: Path) -> None:
    class Interrupted(Exception):
        pass

    def progress(e: dict[str, Any]) -> None:
        assert _open_files_under(cat_path), "the run should hold its catalog open while it runs"
        if e["event"] == "log":
            raise Interrupted

    cat_path = tmp_path / "lineage.catalog.sqlite"
    with pytest.raises(Interrupted) as failed:  # keeps the run's frames (and objects) alive
        train(TrainConfig.from_dict(TINY), store=world["store"], out_dir=tmp_path / "run",
              catalog=str(cat_path), progress=progress)
    assert failed.traceback
    assert _open_files_under(cat_path) == []


def test_a_start_that_failed_does_not_block_the_same_command(world: dict[str, Any],
                                                             tmp_path: Path) -> None:
    """A start that fails before its first checkpoint leaves a run record (and a best checkpoint
    of step 0) behind; running the same thing again starts afresh instead of being refused.
    A run with a checkpoint to resume still is refused."""
    class Failed(Exception):
        pass

    def fail_at_start(e: dict[str, Any]) -> None:
        if e["event"] == "checkpoint":  # the best checkpoint of step 0, before any step
            raise Failed

    cfg = TrainConfig.from_dict(TINY).with_overrides(train_eval_at_start=True, train_max_steps=1)
    out = tmp_path / "run"
    with pytest.raises(Failed):
        train(cfg, store=world["store"], out_dir=out, catalog=False, progress=fail_at_start)
    assert (out / "run.json").is_file() and (out / "checkpoints" / "best" / "0").is_dir()
    result = train(cfg, store=world["store"], out_dir=out, catalog=False)
    assert result.step == 1 and result.resumed_from is None
    assert json.loads((out / "run.json").read_text())["run_id"] == result.run_id
    with pytest.raises(TrainError, match="already holds a training run"):
        train(cfg, store=world["store"], out_dir=out, catalog=False)


def test_early_stopping_stops_the_run(world: dict[str, Any]) -> None:
    cfg = TrainConfig.from_dict(TINY).with_overrides(
        train_eval_every=1, train_patience=1, train_min_delta=1e9)  # same max_steps: no recompile
    res = train(cfg, store=world["store"], out_dir=world["root"] / "runES", catalog=False)
    assert res.stopped == "early_stopping" and res.step == 2
    assert res.best is not None and res.best["step"] == 1


def test_time_limit_stops_after_a_final_evaluation(world: dict[str, Any]) -> None:
    cfg = TrainConfig.from_dict(TINY).with_overrides(train_max_minutes=1e-9)
    res = train(cfg, store=world["store"], out_dir=world["root"] / "runTL", catalog=False)
    assert res.stopped == "time_limit" and res.step == 1
    assert res.best is not None and res.best["step"] == 1 and res.latest["step"] == 1


# ------------------------------------------------------------------------------------ lineage


def _check_lineage(cat: Any, ckpt_id: str) -> None:
    runs = cat.generation_runs_for(f"Checkpoint:{ckpt_id}")
    p = plan()
    assert [r.run_id for r in runs] == [p.run_id()]
    assert runs[0].seed == 3 and runs[0].config["domains"] == list(p.domains)
    assert runs[0].config == json.loads(json.dumps(p.to_dict()))
    lin = generation_lineage(cat, ckpt_id)
    assert lin["generation_runs"][0]["seed"] == 3
    seeds = {s["key"]: s["seed"] for s in lin["sequences"]}
    assert len(seeds) == 6  # train and validation sequences: the dataset version holds both
    for key, seed in seeds.items():
        dom, sid = key.split("/")
        assert seed == sequence_seed(3, dom, int(sid.split("-")[1]))
    assert len(lin["training_runs"]) == 1 and len(lin["dataset_versions"]) == 1


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("neo4j", marks=pytest.mark.neo4j)])
def test_lineage_from_checkpoint_to_generation_runs(world: dict[str, Any], backend: str) -> None:
    run = json.loads((world["run"] / "run.json").read_text())
    best = [c for c in run["checkpoints"] if c["kind"] == "best"][-1]
    if backend == "sqlite":  # registered by the training run itself, in the default catalog
        with SQLiteCatalog(default_catalog_location(world["store"])) as cat:
            assert cat.get_checkpoint(best["ckpt_id"]).path == best["path"]
            tr = cat.get_training_run(run["run_id"])
            assert tr.finished is not None and tr.dataset_version_id == run["dataset_version_id"]
            dv = cat.get_dataset_version(run["dataset_version_id"])
            assert dv.split["val"] == run["split"]["val"] and dv.query["resolution"] == 128
            _check_lineage(cat, best["ckpt_id"])
        return
    cat = open_neo4j_or_skip()
    try:  # the same run registered in Neo4j afterwards (sequences synced from the store)
        register_lineage(cat, run, AtlasStore.open(world["store"]), run["checkpoints"])
        _check_lineage(cat, best["ckpt_id"])
    finally:
        cat.close()


def test_lineage_pins_the_store_as_it_is_not_a_stale_catalog(tmp_path: Path) -> None:
    """A sequence rewritten after the catalog last saw it: the dataset version pins the data in
    the store (the catalog catches up from the change log first), not the catalog's old record."""
    from atlasstore.catalog.sync import dataset_checksums, sync_catalog
    from helpers.store_fixtures import energy_sequence

    st = AtlasStore.create(tmp_path / "s.zarr")
    st.create_domain("d")
    for i in range(2):
        st.write_sequence("d", f"seq-{i}", energy_sequence(seed=i))
    keys = ["d/seq-0", "d/seq-1"]
    run = {"run_id": "r1", "dataset_version_id": "dv-test", "query": {"resolution": 64},
           "split": {"train": keys[:1], "val": keys[1:]}, "config": {}, "started": None}
    with SQLiteCatalog(tmp_path / "c.sqlite") as cat:
        sync_catalog(st, cat)
        old = cat.get_sequence("d/seq-0")
        st.write_sequence("d", "seq-0", energy_sequence(seed=7), overwrite=True)
        pins = dataset_checksums(st, keys)
        register_lineage(cat, run, st)
        dv = cat.get_dataset_version("dv-test")
        assert dv.checksums == pins
        assert cat.get_sequence("d/seq-0") != old  # the catalog caught up too


# ------------------------------------------------------------------------------------ evaluate


def test_atlas_evaluate_writes_report_and_figures(world: dict[str, Any], tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "eval"
    rc = cli.main(["evaluate", str(world["run"]), "--out", str(out)])
    text = capsys.readouterr().out
    assert rc == 0, text
    # on its own store the default is the validation split, and the output says what that is
    assert "NOT a held-out evaluation: validation split of the training store" in text
    assert "One-step VRMSE per domain" in text and "Goals:" in text
    rep = json.loads((out / "report.json").read_text())
    assert rep["data"]["split"] == "val" and rep["data"]["windows"] == 6
    assert rep["data"]["held_out"] is False
    doms = ["fluid_dynamics", "plasma_physics"]
    assert sorted(rep["one_step"]["per_domain"]) == doms
    for block in [rep["one_step"]["overall"], *rep["one_step"]["per_domain"].values()]:
        for name in ("model", "persistence", "diffusion", "linear_ar"):
            for k in ("vrmse", "conservation_error", "nll", "crps", "coverage_50", "coverage_90",
                      "spread_skill"):
                assert math.isfinite(block[name][k]), (name, k)
        assert block["model"]["min_prediction"] >= 0.0
        assert block["persistence"]["conservation_error"] < 1e-6
    fit = rep["baselines"]["fit_on"]
    assert fit["store"] == str(world["store"])
    assert fit["windows"] == {d: 4 for d in doms}  # eval.fit_windows per domain
    ro = rep["rollout"]
    assert ro["steps"] == 2 and sorted(ro["per_domain"]) == doms
    assert all(len(ro["per_domain"][d]["model"]) == 2 for d in doms)
    goals = {(g["goal"], g["domain"]) for g in rep["goals"]}
    for d in doms:
        for g in ("vs_persistence", "vs_diffusion", "rollout", "coverage_90", "nll"):
            assert (g, d) in goals
    assert ("mean_reduction", "all") in goals
    assert rep["headline"]["worst_domain"] in doms
    for fig in ("sample_0.png", "training_curves.png", "rollout.png", "domains.png",
                "spread_skill.png"):
        assert fig in rep["figures"] and (out / fig).stat().st_size > 1000


def _write_other_dynamics(path: Path) -> None:
    """A store with the world's domains and map size but other physics: a strong blur (8 px at
    128) and no noise, generated here rather than by the presets."""
    from scipy import ndimage

    st = AtlasStore.create(path)
    rng = np.random.default_rng(9)
    for dom in ("fluid_dynamics", "plasma_physics"):
        st.create_domain(dom)
        for i in range(2):
            e = [rng.gamma(2.0, 1.0, size=(128, 128))]
            for _ in range(3):
                e.append(ndimage.gaussian_filter(e[-1], 8.0, mode="wrap"))
            st.write_sequence(dom, f"seq-{i:05d}", np.stack(e).astype(np.float32))


def test_baselines_are_fitted_on_the_training_split_only(world: dict[str, Any],
                                                         tmp_path: Path) -> None:
    """Evaluated on data with other dynamics, the diffusion baseline keeps the sigma fitted on the
    checkpoint's training sequences (the presets' 2-3 px), not the evaluation data's 8 px."""
    from atlasstore.errors import EvalError
    from atlasstore.nvp.evaluate import evaluate_checkpoint

    other = tmp_path / "other.zarr"
    _write_other_dynamics(other)
    own = evaluate_checkpoint(world["run"], out_dir=tmp_path / "own", plots=False)
    rep = evaluate_checkpoint(world["run"], store=str(other), out_dir=tmp_path / "ev",
                              plots=False)
    assert rep["data"]["split"] == "all" and rep["data"]["held_out"] is True
    assert rep["data"]["held_out_note"].startswith("held-out evaluation")
    for d, b in rep["baselines"]["per_domain"].items():
        assert b["diffusion_sigma"] == own["baselines"]["per_domain"][d]["diffusion_sigma"]
        assert b["diffusion_sigma"] <= 3.0  # the presets' 2 and 3 px, the data here has 8
    assert rep["baselines"]["fit_on"]["store"] == str(world["store"])
    # without the training store the evaluation refuses rather than fit on what it evaluates
    with pytest.raises(EvalError, match="training split only"):
        evaluate_checkpoint(world["run"], store=str(other), train_store=str(tmp_path / "gone"),
                            out_dir=tmp_path / "ev2", plots=False)


def test_a_regenerated_copy_of_the_training_data_is_not_held_out(world: dict[str, Any],
                                                                 tmp_path: Path) -> None:
    from atlasstore.nvp.evaluate import evaluate_checkpoint

    copy = tmp_path / "copy.zarr"
    assert generate(copy, plan(), scheduler="serial").ok  # same run seed: same sequences
    rep = evaluate_checkpoint(world["run"], store=str(copy), out_dir=tmp_path / "ev",
                              plots=False, rollout_steps=0)
    assert rep["data"]["held_out"] is False
    assert rep["data"]["held_out_note"].startswith(
        "NOT a held-out evaluation: 6 of the 6 evaluated sequences have the content of "
        "sequences the run trained or validated on")
