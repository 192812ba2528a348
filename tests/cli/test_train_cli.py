"""``atlas train`` and ``atlas evaluate`` on imported data with no hand-written config: defaults
from the data (level, field, batch size), the resolved config in the run folder, the held-out
check by content, and Ctrl-C through a real process.

The data: NetCDF ensembles of 64x96 maps (one stored level, 64: the shipped config's 128 does
not exist there), imported with ``atlas import xarray``.
"""

from __future__ import annotations

import contextlib
import io
import json
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from atlasstore import cli
from atlasstore.nvp.checkpoint import checkpoint_steps

REPO = Path(__file__).resolve().parents[2]
ATLAS = [sys.executable, "-m", "atlasstore.cli"]

#: a small model and a short loop, for the tests that need a config file anyway
SMALL: dict[str, Any] = {
    "name": "small",
    "data": {"prefetch": 1, "workers": 1},
    "model": {"width": 4, "max_width": 8, "depth": 1, "blocks": 1, "groups": 2,
              "prior_fit_windows": 8},
    "train": {"max_steps": 100000, "log_every": 1, "eval_every": 1000, "checkpoint_every": 1,
              "patience": None},
    "eval": {"mc_samples": 1, "rollout_steps": 1, "n_plots": 1, "batch_size": 2,
             "fit_windows": 4},
}


def ensemble(path: Path, members: int, steps: int, seed: int) -> None:
    import xarray as xr

    rng = np.random.default_rng(seed)
    e = rng.gamma(2.0, 1.0, (members, 64, 96))
    out = []
    for _ in range(steps):
        e = 0.5 * e + 0.125 * sum(np.roll(e, s, a) for s in (1, -1) for a in (1, 2))
        out.append(e + 0.05 * rng.gamma(2.0, 1.0, e.shape))
    data = np.stack(out, axis=1).astype(np.float32)
    xr.Dataset({"energy": (("member", "time", "y", "x"), data)}).to_netcdf(path,
                                                                           engine="h5netcdf")


def atlas(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = cli.main([str(a) for a in argv])
    return code, out.getvalue(), err.getvalue()


def import_file(nc: Path, store: Path) -> None:
    code, _, err = atlas("import", "xarray", nc, "--var", "energy", "--sequence-dim", "member",
                         "--domain", "lab", "--store", store, "--scheduler", "serial",
                         "--no-catalog", "--quiet")
    assert code == 0, err


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("lab")
    ensemble(root / "train.nc", members=3, steps=4, seed=0)
    ensemble(root / "other.nc", members=2, steps=4, seed=1)
    import_file(root / "train.nc", root / "train.zarr")
    import_file(root / "train.nc", root / "again.zarr")     # the same file, imported again
    import_file(root / "other.nc", root / "heldout.zarr")  # other runs
    return {"root": root, "train": root / "train.zarr", "again": root / "again.zarr",
            "heldout": root / "heldout.zarr"}


@pytest.fixture(scope="module")
def run(lab: dict[str, Path]) -> dict[str, Any]:
    """``atlas train --store`` with no config: the run every test here evaluates."""
    out = lab["root"] / "run"
    code, stdout, err = atlas("train", "--store", lab["train"], "--out", out, "--max-steps", "1",
                              "--no-catalog", "--quiet")
    assert code == 0, err
    return {"out": out, "stdout": stdout}


def test_shipped_config_names_the_missing_level(lab: dict[str, Path], tmp_path: Path) -> None:
    code, _, err = atlas("train", "--config", REPO / "configs" / "nvp-cpu-small.json", "--store",
                         lab["train"], "--out", tmp_path / "r", "--no-catalog")
    assert code == 2
    assert "data.resolution 128 is not stored" in err and "--scale" in err, err


def test_train_without_a_config_takes_its_defaults_from_the_data(run: dict[str, Any]) -> None:
    # 2 train sequences x 3 windows: the default batch of 8 is cut to 6; the level is the
    # data's only one (64); the field its primary one
    assert "windows of energy, resolution 64, levels [64], batch 6" in run["stdout"]
    resolved = json.loads((run["out"] / "config.resolved.json").read_text())
    assert resolved["data"]["resolution"] == 64 and resolved["data"]["batch_size"] == 6
    assert resolved["name"] == "nvp-cpu-small" and resolved["train"]["max_steps"] == 1
    record = json.loads((run["out"] / "run.json").read_text())
    assert record["config"] == resolved and record["query"]["levels"] == [64]
    assert checkpoint_steps(run["out"] / "checkpoints" / "latest") == [1]


def test_the_resolved_config_is_a_config(run: dict[str, Any], lab: dict[str, Path],
                                         tmp_path: Path) -> None:
    """The written config starts the same run again (same split, same data version)."""
    code, _, err = atlas("train", "--config", run["out"] / "config.resolved.json", "--out",
                         tmp_path / "again", "--max-steps", "1", "--no-catalog", "--quiet")
    assert code == 0, err
    a = json.loads((run["out"] / "run.json").read_text())
    b = json.loads((tmp_path / "again" / "run.json").read_text())
    assert a["dataset_version_id"] == b["dataset_version_id"] and a["split"] == b["split"]


def test_train_refuses_a_field_other_than_the_primary(lab: dict[str, Path],
                                                      tmp_path: Path) -> None:
    code, _, err = atlas("train", "--store", lab["train"], "--field", "grad_x", "--out",
                         tmp_path / "r", "--no-catalog")
    assert code == 2 and "primary field, 'energy', not 'grad_x'" in err, err


def evaluate(run: dict[str, Any], store: Path, out: Path) -> dict[str, Any]:
    code, _, err = atlas("evaluate", run["out"], "--store", store, "--out", out, "--plots", "0",
                         "--max-windows", "2", "--mc-samples", "1", "--rollout-steps", "1",
                         "--quiet")
    assert code == 0, err
    return json.loads((out / "report.json").read_text())["data"]


def test_a_second_import_of_the_training_file_is_not_held_out(run: dict[str, Any],
                                                              lab: dict[str, Path],
                                                              tmp_path: Path) -> None:
    """Imported sequences have no generation seed: their content (source SHA-256, array
    checksums) tells that they are the training data."""
    data = evaluate(run, lab["again"], tmp_path / "ev")
    assert data["held_out"] is False
    assert data["held_out_note"].startswith("NOT a held-out evaluation: 3 of the 3 evaluated "
                                            "sequences have the content of sequences the run "
                                            "trained or validated on"), data["held_out_note"]


def test_another_file_is_held_out(run: dict[str, Any], lab: dict[str, Path],
                                  tmp_path: Path) -> None:
    data = evaluate(run, lab["heldout"], tmp_path / "ev")
    assert data["held_out"] is True, data["held_out_note"]
    assert data["held_out_note"].startswith("held-out evaluation: 2 sequences")


@pytest.mark.slow
def test_ctrl_c_says_where_the_run_stopped_and_how_to_resume(lab: dict[str, Path],
                                                             tmp_path: Path) -> None:
    """A real ``atlas train`` process gets SIGINT once its first checkpoint is on disk; it exits
    130 naming the step, the checkpoint and the command that resumes, and that command does."""
    cfg = tmp_path / "small.json"
    cfg.write_text(json.dumps(SMALL))
    out = tmp_path / "run"
    cmd = [*ATLAS, "train", "--config", str(cfg), "--store", str(lab["train"]), "--out", str(out),
           "--no-catalog", "--quiet"]
    err_path = tmp_path / "stderr"
    with err_path.open("wb") as err_file:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file)
        try:
            while not checkpoint_steps(out / "checkpoints" / "latest"):
                assert proc.poll() is None, err_path.read_text()
                time.sleep(0.2)
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    err = err_path.read_text()
    assert code == 130, err
    line = next(ln for ln in err.splitlines() if ln.startswith("atlas: interrupted:"))
    assert "stopped at step" in line and "last checkpoint: step" in line, err
    latest = max(checkpoint_steps(out / "checkpoints" / "latest"))
    assert f"at {out / 'checkpoints' / 'latest' / str(latest)}" in line, err
    again = shlex.split(err.split("resume with:\n", 1)[1].strip().splitlines()[0])
    assert again[:2] == ["atlas", "train"] and again[-1] == "--resume", again
    resumed = subprocess.run([*ATLAS, *again[1:], "--max-steps", str(latest + 1)],
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming at step {latest}" in resumed.stdout
    assert f"stopped at step {latest + 1} (max_steps)" in resumed.stdout
