"""The engine is chosen by the number of tasks to run (issue 18: 12-24 maps took 19-29 s on
the process cluster, 3.4 s serially) unless a scheduler is given, and the run says which
scheduler ran and why (summary line, report, run record)."""

from __future__ import annotations

from pathlib import Path

from atlasstore.runs.generate import Plan, generate
from atlasstore.runs.scheduling import SERIAL_MAX_TASKS, SERIAL_MAX_VALUES, choose_scheduler
from atlasstore.store import AtlasStore, RunLog
from helpers.cli_runner import run_cli


def test_the_scheduler_is_chosen_by_the_number_of_tasks_unless_given() -> None:
    assert choose_scheduler(None, 1)[0] == "serial"
    assert choose_scheduler(None, SERIAL_MAX_TASKS)[0] == "serial"
    assert choose_scheduler(None, SERIAL_MAX_TASKS + 1)[0] == "processes"
    assert choose_scheduler(None, 2, SERIAL_MAX_VALUES)[0] == "serial"
    assert choose_scheduler(None, 2, SERIAL_MAX_VALUES + 1)[0] == "processes"  # long sequences
    assert choose_scheduler(None, 1, 100 * SERIAL_MAX_VALUES)[0] == "serial"  # nothing to share
    assert choose_scheduler("processes", 1) == ("processes", "as given")
    assert choose_scheduler("threads", 1000) == ("threads", "as given")


def test_a_small_plan_runs_in_process_and_says_so(tmp_path: Path) -> None:
    plan = Plan(domains=("plasma_physics",), sequences=2, steps=2, shape=(64, 64))
    report = generate(tmp_path / "a.zarr", plan)
    assert report.ok and report.engine == "serial"
    assert report.engine_reason.startswith("chosen for 2 tasks to run (16,384 map values): up to")
    (rec,) = RunLog(AtlasStore.open(tmp_path / "a.zarr")).list()
    assert rec["attempts"][0]["scheduler"] == "serial"
    assert rec["attempts"][0]["scheduler_reason"] == report.engine_reason
    rc, out, _ = run_cli("generate", "--store", str(tmp_path / "b.zarr"), "--domains",
                         "plasma_physics", "--sequences", "2", "--steps", "2", "--no-catalog")
    assert rc == 0 and "(serial, chosen for 2 tasks to run (262,144 map values): up to" in out
    rc, out, _ = run_cli("generate", "--store", str(tmp_path / "c.zarr"), "--domains",
                         "plasma_physics", "--sequences", "2", "--steps", "2", "--no-catalog",
                         "--scheduler", "threads", "--workers", "1")
    assert rc == 0 and "(threads, as given)" in out


def test_an_import_counts_its_source_values(tmp_path: Path) -> None:
    import numpy as np

    from atlasstore.runs.ingest import import_npy

    for s in range(2):
        for t in range(3):
            (tmp_path / "src" / "d").mkdir(parents=True, exist_ok=True)
            np.save(tmp_path / "src" / "d" / f"s{s}_t{t}.npy", np.ones((64, 64), np.float32))
    report = import_npy(tmp_path / "a.zarr", tmp_path / "src", sidecars=False)
    assert report.ok and report.engine == "serial"
    # 6 files of 64x64 float32 values and their 128-byte .npy headers
    assert report.engine_reason.startswith(f"chosen for 2 tasks to run ({6 * (64 * 64 + 32):,} map")
