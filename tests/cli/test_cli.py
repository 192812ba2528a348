"""The `atlas` command, in-process via cli.main (plus one real subprocess)."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from atlasstore import cli
from atlasstore.cli import entry as cli_entry
from atlasstore.cli import parser as cli_parser
from atlasstore.runs.generate import sequence_seed
from atlasstore.store import AtlasStore
from helpers.cli_runner import run_captured as run
from helpers.store_fixtures import all_checksums, chunk_files, copy_store, flip_bytes, listing


def assert_user_error(code: int, err: str, *needles: str) -> None:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("atlas: error: ")
    assert "Traceback" not in err
    for n in needles:
        assert n in lines[0], (n, lines[0])


GEN_ARGS = ["--domains", "plasma_physics,fluid_dynamics", "--sequences", "1", "--steps", "3",
            "--scheduler", "serial", "--no-catalog", "--seed", "4"]


@pytest.fixture(scope="module")
def cli_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made by `atlas init` + `atlas generate` (256x256, 3 steps, 2 domains x 1 sequence)."""
    p = tmp_path_factory.mktemp("cli") / "atlas.zarr"
    assert cli.main(["init", "--store", str(p)]) == 0
    assert cli.main(["generate", "--store", str(p), *GEN_ARGS]) == 0
    return p


# --------------------------------------------------------------------------- subprocess


def test_atlas_help_subprocess() -> None:
    exe = Path(sys.executable).parent / "atlas"
    assert exe.exists(), exe
    r = subprocess.run([str(exe), "--help"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    for cmd in ("init", "generate", "ls", "query", "show", "audit", "stats"):
        assert cmd in r.stdout
    assert "Traceback" not in r.stderr


# --------------------------------------------------------------------------- commands


def test_init(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "new.zarr"
    code, out, _ = run(capsys, "init", "--store", str(p))
    assert code == 0 and "created atlas store" in out
    AtlasStore.open(p)
    code, _, err = run(capsys, "init", "--store", str(p))
    assert_user_error(code, err, "already exists")
    code, _, _ = run(capsys, "init", "--store", str(p), "--exist-ok")
    assert code == 0


def test_store_from_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "env.zarr"
    monkeypatch.setenv("ATLAS_STORE", str(p))
    code, _, _ = run(capsys, "init")
    assert code == 0 and (p / "zarr.json").exists()


def test_generate_output_and_rerun(tmp_path: Path, cli_store: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    store = AtlasStore.open(cli_store)
    assert store.domains() == ["fluid_dynamics", "plasma_physics"]
    info = store.sequence_info("plasma_physics", "seq-00000")
    assert info["n_steps"] == 3 and info["levels"] == [256, 128, 64]
    p = copy_store(cli_store, tmp_path / "copy.zarr")
    code, out, err = run(capsys, "generate", "--store", str(p), *GEN_ARGS)
    assert code == 0, err
    assert "0 sequences written, 2 already complete, 0 failed" in out
    assert not (tmp_path / "copy.catalog.sqlite").exists()


def test_generate_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = tmp_path / "x.zarr"
    base = ["generate", "--store", str(p), "--scheduler", "serial", "--no-catalog", "--steps", "2"]
    code, _, err = run(capsys, *base, "--domains", "no_such_domain")
    assert_user_error(code, err, "unknown domain 'no_such_domain'")
    code, _, err = run(capsys, *base, "--domains", "a/b")
    assert_user_error(code, err, "path separator")
    code, _, err = run(capsys, *base, "--domains", "plasma_physics", "--sequences", "0")
    assert_user_error(code, err, "sequences")
    code, _, err = run(capsys, *base, "--domains", "plasma_physics", "--scales", "128,64")
    assert_user_error(code, err, "full resolution")
    assert not p.exists()


def test_ls(cli_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "ls", "-l", "--store", str(cli_store))
    assert code == 0
    assert out.splitlines()[:2] == ["fluid_dynamics\t1 sequences\tenergy (extensive)\tgenerate (synthetic)",
                                    "plasma_physics\t1 sequences\tenergy (extensive)\tgenerate (synthetic)"]
    assert out.splitlines()[2].startswith("note: fluid_dynamics, plasma_physics: synthetic stand-ins")
    code, out, _ = run(capsys, "ls", "-l", "plasma_physics", "--store", str(cli_store))
    assert code == 0
    line = out.splitlines()[0]
    assert line.startswith("seq-00000\t3 steps\t256x256\tlevels 256,128,64\tenergy [energy / pixel] "
                           "(extensive)\tgenerate seed ")


def test_ls_lists_names_and_counts(tmp_path: Path, cli_store: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    """Without --long: domain names with their sequence counts, a domain's sequence names, from
    listings alone (a write in progress is listed too; --long tells it apart)."""
    code, out, _ = run(capsys, "ls", "--store", str(cli_store))
    assert code == 0
    assert out.splitlines() == ["fluid_dynamics\t1 sequences", "plasma_physics\t1 sequences"]
    code, out, _ = run(capsys, "ls", "plasma_physics", "--store", str(cli_store))
    assert code == 0 and out.splitlines() == ["seq-00000"]
    p = copy_store(cli_store, tmp_path / "c.zarr")
    AtlasStore.open(p, mode="r+").zarr_group["plasma_physics"].create_group(
        "seq-00009", attributes={"atlasstore_sequence": {"status": "writing"}})
    _, out, _ = run(capsys, "ls", "plasma_physics", "--store", str(p))
    assert out.splitlines() == ["seq-00000", "seq-00009"]
    _, out, _ = run(capsys, "ls", "--store", str(p))
    assert "plasma_physics\t2 sequences" in out.splitlines()


def test_ls_opens_no_sequence_document_without_long(cli_store: Path, monkeypatch: pytest.MonkeyPatch,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """`atlas ls` and `atlas ls DOMAIN` cost listings, not a read per sequence (they read every
    sequence document before); --long reads each one."""
    import zarr

    keys: list[str] = []
    orig = zarr.storage.LocalStore.get

    async def spy(self: object, key: str, *a: object, **k: object) -> object:
        keys.append(key)
        return await orig(self, key, *a, **k)  # type: ignore[arg-type]
    monkeypatch.setattr(zarr.storage.LocalStore, "get", spy)
    seq_docs = {"plasma_physics/seq-00000/zarr.json", "fluid_dynamics/seq-00000/zarr.json"}
    for argv in (["ls"], ["ls", "plasma_physics"]):
        keys.clear()
        assert run(capsys, *argv, "--store", str(cli_store))[0] == 0
        assert not seq_docs & set(keys), (argv, keys)
    keys.clear()
    assert run(capsys, "ls", "-l", "--store", str(cli_store))[0] == 0
    assert seq_docs <= set(keys)  # the spy sees them when they are read


def test_ls_shows_incomplete(tmp_path: Path, cli_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = copy_store(cli_store, tmp_path / "c.zarr")
    s = AtlasStore.open(p, mode="r+")
    s.zarr_group["plasma_physics"].create_group(
        "seq-00009", attributes={"atlasstore_sequence": {"status": "writing"}})
    code, out, _ = run(capsys, "ls", "-l", "plasma_physics", "--store", str(p))
    assert code == 0
    assert "seq-00009\t(incomplete: not visible to queries)" in out
    code, out, _ = run(capsys, "ls", "-l", "--store", str(p))
    assert "plasma_physics\t1 sequences" in out


def test_query_count_and_ids(cli_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "query", "--store", str(cli_store), "--window", "2", "--count")
    assert code == 0 and out.strip() == "4"
    code, out, _ = run(capsys, "query", "--store", str(cli_store), "--domains", "plasma_physics",
                       "--window", "2", "--stride", "1", "--scale", "64")
    assert code == 0
    assert out.split() == ["plasma_physics/seq-00000@0", "plasma_physics/seq-00000@1"]
    code, out, _ = run(capsys, "query", "--store", str(cli_store), "--time-range", "1:3", "--count")
    assert out.strip() == "4"


def test_query_out_npz(tmp_path: Path, cli_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out_file = tmp_path / "x.npz"
    code, out, err = run(capsys, "query", "--store", str(cli_store), "--domains", "fluid_dynamics",
                         "--scale", "128", "--window", "2", "--fields", "energy,grad_x",
                         "--region", "0:16,8:40", "--out", str(out_file))
    assert code == 0, err
    assert "2 windows ->" in out
    assert out_file.is_file()
    assert not list(tmp_path.glob("*.partial*"))
    store = AtlasStore.open(cli_store)
    with np.load(out_file) as z:
        assert sorted(z.files) == ["energy", "grad_x", "ids"]
        assert list(z["ids"]) == ["fluid_dynamics/seq-00000@0", "fluid_dynamics/seq-00000@1"]
        assert z["energy"].shape == (2, 2, 16, 32) and z["energy"].dtype == np.float32
        for i in range(2):
            for f in ("energy", "grad_x"):
                np.testing.assert_array_equal(
                    z[f][i], store.read("fluid_dynamics", "seq-00000", 128, f, t=slice(i, i + 2),
                                        y=slice(0, 16), x=slice(8, 40)))


def test_query_user_errors(cli_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    s = ["query", "--store", str(cli_store)]
    code, _, err = run(capsys, *s, "--limit", "2")
    assert_user_error(code, err, "more than --limit 2")
    code, _, err = run(capsys, *s, "--run", "run-nobody")
    assert_user_error(code, err, "no windows")
    code, _, err = run(capsys, *s, "--window", "0")
    assert_user_error(code, err, "window")
    code, _, err = run(capsys, *s, "--window", "9")
    assert_user_error(code, err, "longer than every")
    code, _, err = run(capsys, *s, "--domains", "nope")
    assert_user_error(code, err, "unknown domain", "nope")
    code, _, err = run(capsys, *s, "--domains", "a/b")
    assert_user_error(code, err, "path separator")
    code, _, err = run(capsys, *s, "--scale", "100")
    assert_user_error(code, err, "scale 100")
    code, _, err = run(capsys, *s, "--region", "0:300,0:10", "--scale", "64")
    assert_user_error(code, err, "exceeds")
    code, _, err = run(capsys, *s, "--fields", "pressure")
    assert_user_error(code, err, "pressure")
    code, _, err = run(capsys, *s, "--entropy", "5:1")
    assert_user_error(code, err, "entropy range")


@pytest.mark.parametrize("argv", [
    ["--region", "1:2"], ["--region", "a:b,c:d"], ["--region", "0:1,2"], ["--entropy", "1"],
    ["--time-range", "x:y"], ["--window", "two"],
])
def test_query_argparse_errors(cli_store: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["query", "--store", str(cli_store), *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


def test_show_writes_png(tmp_path: Path, cli_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    png = tmp_path / "q.png"
    code, out, err = run(capsys, "show", "plasma_physics", "seq-00000", "--t", "2", "--store", str(cli_store),
                         "--out", str(png))
    assert code == 0, err
    assert png.is_file() and png.stat().st_size > 1000
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    code, _, err = run(capsys, "show", "plasma_physics", "seq-00000", "--t", "3", "--store", str(cli_store),
                       "--out", str(tmp_path / "bad.png"))
    assert_user_error(code, err, "--t 3 outside 0..2")
    assert not (tmp_path / "bad.png").exists()
    code, _, err = run(capsys, "show", "plasma_physics", "seq-00042", "--store", str(cli_store),
                       "--out", str(tmp_path / "bad.png"))
    assert_user_error(code, err, "seq-00042")


def test_audit_ok_then_corrupt(tmp_path: Path, cli_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "audit", "--store", str(cli_store))
    assert code == 0, err
    assert "checked 18 arrays: OK" in out
    assert "plasma_physics" in out and "fluid_dynamics" in out
    p = copy_store(cli_store, tmp_path / "c.zarr")
    target = "plasma_physics/seq-00000/128/grad_y"
    flip_bytes(chunk_files(p, target)[0], 300)
    code, out, err = run(capsys, "audit", "--store", str(p))
    assert code == 1
    assert "1 problem(s)" in out
    assert f"CORRUPT {target}:" in err
    assert "Traceback" not in err
    code, out, _ = run(capsys, "audit", "--store", str(p), "--domains", "fluid_dynamics")
    assert code == 0
    code, out, _ = run(capsys, "audit", "--store", str(p), "--quick")
    assert code == 0 and "checked 0 arrays" in out


def test_stats(cli_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "stats", "--store", str(cli_store))
    assert code == 0
    assert out.startswith("fluid_dynamics: 1 sequences, 3 maps")
    assert "plasma_physics: 1 sequences, 3 maps" in out
    code, out, _ = run(capsys, "stats", "plasma_physics", "--json", "--store", str(cli_store))
    data = json.loads(out)
    assert len(data) == 1 and data[0]["domain"] == "plasma_physics" and data[0]["n_maps"] == 3
    assert data[0]["field"] == "energy" and data[0]["units"] == "energy / pixel"
    assert data[0]["mean"] == pytest.approx(1.0, rel=1e-3)  # patterns have mean energy 1
    code, _, err = run(capsys, "stats", "nope", "--store", str(cli_store))
    assert_user_error(code, err, "nope")


# --------------------------------------------------------------------------- user errors


@pytest.mark.parametrize("argv", [
    ["ls"], ["ls", "plasma_physics"], ["query", "--count"], ["audit"], ["stats"],
    ["show", "plasma_physics", "seq-00000"],
])
def test_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    missing = tmp_path / "missing.zarr"
    code, out, err = run(capsys, *argv, "--store", str(missing))
    assert_user_error(code, err, "does not exist")
    assert not missing.exists()


def test_not_a_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tmp_path / "plain"
    d.mkdir()
    code, _, err = run(capsys, "ls", "--store", str(d))
    assert_user_error(code, err, "not an atlas store")


def test_init_on_a_file_is_a_user_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    f = tmp_path / "afile"
    f.write_text("x")
    code, _, err = run(capsys, "init", "--store", str(f))
    assert_user_error(code, err)


@pytest.mark.parametrize("name,needle", [("a/b", "path separator"), ("..", "'..'"), ("a b", "whitespace")])
def test_bad_domain_name(cli_store: Path, capsys: pytest.CaptureFixture[str], name: str, needle: str) -> None:
    code, _, err = run(capsys, "ls", name, "--store", str(cli_store))
    assert_user_error(code, err, needle)


def test_unknown_domain(cli_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "ls", "nope", "--store", str(cli_store))
    assert_user_error(code, err, "unknown domain 'nope'")


def test_no_command_is_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main([])
    assert exc.value.code == 2


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(["--version"])
    assert exc.value.code == 0
    assert "atlasstore" in capsys.readouterr().out


# --------------------------------------------------------------------------- help, typos


def _actions_without_help(parser: argparse.ArgumentParser, path: str = "atlas") -> list[str]:
    out = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                out += _actions_without_help(sub, f"{path} {name}")
        elif not (action.help or "").strip():
            out.append(f"{path} {'/'.join(action.option_strings) or action.dest}")
    return out


def test_every_option_of_every_command_has_help() -> None:
    parser = cli.build_parser()
    commands = {a for act in parser._actions if isinstance(act, argparse._SubParsersAction)
                for a in act.choices}
    assert {"generate", "query", "show", "train", "evaluate"} <= commands
    assert _actions_without_help(parser) == []


@pytest.mark.parametrize("argv,message", [
    (["genrate"], "atlas: error: unknown command 'genrate'; did you mean 'generate'?"),
    (["qeury", "--count"], "atlas: error: unknown command 'qeury'; did you mean 'query'?"),
    (["catalog", "synk"], "atlas: error: unknown command 'catalog synk'; did you mean 'catalog sync'?"),
    (["frobnicate"], "atlas: error: unknown command 'frobnicate'; commands: init, generate, import, ls,"),
])
def test_mistyped_command_suggests_the_closest(capsys: pytest.CaptureFixture[str], argv: list[str],
                                               message: str) -> None:
    with pytest.raises(SystemExit) as exc:
        cli.main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and len(err.strip().splitlines()) == 1, err


# --------------------------------------------------------------------------- pipes


@pytest.mark.slow
@pytest.mark.parametrize("argv", [
    ["ls", "plasma_physics"], ["query", "--domains", "plasma_physics"], ["stats"],
    ["catalog", "lineage", "plasma_physics/seq-00000/64/grad_x", "--catalog", "CATALOG"],
])
def test_output_into_a_closed_pipe_stops_quietly(tmp_path: Path, cli_store: Path,
                                                 argv: list[str]) -> None:
    """`atlas ls plasma_physics | head -1` with head gone: no traceback, no 'internal error';
    exit status 141 (128 + SIGPIPE) as ls and git give in a pipefail shell."""
    catalog = tmp_path / "c.sqlite"
    if "CATALOG" in argv:
        assert cli.main(["catalog", "sync", "--store", str(cli_store), "--catalog", str(catalog)]) == 0
        argv = [str(catalog) if a == "CATALOG" else a for a in argv]
    r, w = os.pipe()
    os.close(r)  # the reader is gone before atlas writes its first byte
    try:
        proc = subprocess.run([sys.executable, "-m", "atlasstore.cli", *argv, "--store",
                               str(cli_store)], stdout=w, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    finally:
        os.close(w)
    assert proc.stderr == ""
    assert proc.returncode == 141


def test_a_broken_pipe_that_is_not_stdout_is_still_an_error(
        cli_store: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    def broken(args: argparse.Namespace) -> int:
        raise BrokenPipeError(32, "Broken pipe (a socket, say)")

    monkeypatch.setattr(cli_parser, "cmd_stats", broken)
    code, _, err = run(capsys, "stats", "--store", str(cli_store))
    assert code == 1 and err.startswith("atlas: internal error: BrokenPipeError"), err


# --------------------------------------------------------------------------- refusals write nothing


@pytest.mark.parametrize("case", ["folder", "workers", "scheduler", "root-list", "root-null",
                                  "root-attributes-list"])
def test_refused_generate_writes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                         case: str) -> None:
    """Not even the catalog file beside the target. The root-* cases (a root zarr.json that is
    valid JSON but not an atlas store's) also need AtlasStore.open to raise NotAnAtlasStore for
    them (the store helper's fix): without it the CLI reports an internal error - still
    without writing anything."""
    target = tmp_path / "target.zarr"
    extra: list[str] = []
    needle = "not an atlas store"
    if case == "folder":
        target.mkdir()
        (target / "precious.txt").write_text("keep me")
    elif case == "workers":
        extra, needle = ["--workers", "-2"], "workers must be an integer in [1, 1024], got -2"
    elif case == "scheduler":
        extra, needle = ["--scheduler", "nonsense"], "scheduler must be"
    else:
        target.mkdir()
        (target / "zarr.json").write_text({"root-list": "[]", "root-null": "null",
                                           "root-attributes-list": json.dumps(
                                               {"zarr_format": 3, "node_type": "group",
                                                "attributes": []})}[case])
    before = listing(tmp_path)
    code, out, err = run(capsys, "generate", "--store", str(target), "--domains", "plasma_physics",
                         "--sequences", "1", "--steps", "2", *extra)
    assert listing(tmp_path) == before, "a refused generate wrote something"
    assert not (tmp_path / "target.catalog.sqlite").exists()
    assert_user_error(code, err, needle)


@pytest.fixture(scope="module")
def main_job_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The main job's plan (5 sequences, seed 0) at 2 steps, with its default SQLite catalog."""
    p = tmp_path_factory.mktemp("mainjob") / "atlas.zarr"
    assert cli.main(["generate", "--store", str(p), "--domains", "plasma_physics,fluid_dynamics",
                     "--sequences", "5", "--steps", "2", "--seed", "0", "--scheduler", "serial",
                     "--quiet"]) == 0
    return p


def test_a_plan_clashing_with_stored_sequences_is_refused_in_one_line(
        tmp_path: Path, main_job_store: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The README tour's first command after the main job used to run every task into
    SequenceExists (retried, logged by Dask, exit 1). Now: refused before any work - one line
    naming the clash and the start index that appends - exit 2, nothing written."""
    store = copy_store(main_job_store, tmp_path / "atlas.zarr")
    shutil.copy(main_job_store.with_name("atlas.catalog.sqlite"), tmp_path)
    before = listing(tmp_path)
    code, out, err = run(capsys, "generate", "--store", str(store), "--domains",
                         "plasma_physics,fluid_dynamics", "--sequences", "20", "--steps", "3",
                         "--seed", "7")  # the default engine: no cluster may start
    assert_user_error(code, err, "plasma_physics/seq-00000..seq-00004, fluid_dynamics/"
                      "seq-00000..seq-00004 already hold other data than planned",
                      "steps 2 stored vs 3 planned", "--start-index 5", "nothing was written")
    assert out == ""
    assert listing(tmp_path) == before
    # what the message suggests works, and re-running it resumes the same run
    argv = ["generate", "--store", str(store), "--domains", "plasma_physics,fluid_dynamics",
            "--sequences", "2", "--steps", "3", "--seed", "7", "--start-index", "5",
            "--scheduler", "serial", "--quiet"]
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    assert "4 sequences written, 0 already complete, 0 failed" in out
    first = all_checksums(AtlasStore.open(store))
    code, out, err = run(capsys, *argv)
    assert code == 0 and "0 sequences written, 4 already complete, 0 failed" in out
    assert all_checksums(AtlasStore.open(store)) == first
    assert AtlasStore.open(store).sequences("plasma_physics")[-2:] == ["seq-00005", "seq-00006"]


# --------------------------------------------------------------------------- quiet failures

#: Loaded at start-up by every Python process that has this folder on PYTHONPATH - the
#: ``atlas`` driver and each Dask worker it spawns - to make tasks fail inside the workers:
#: ATLAS_TEST_FRAGILE's preset holds energy to 1e-300 (a deterministic ThermodynamicViolation),
#: ATLAS_TEST_BOOM's synthesis raises RuntimeError (an unexpected error, retried by Dask).
_FAILING_SITE = '''
import dataclasses, os
if os.environ.get("ATLAS_TEST_FRAGILE") or os.environ.get("ATLAS_TEST_BOOM"):
    from atlasstore.runs import generate as _g

    _preset = _g.Plan.preset
    def preset(self, domain):
        p = _preset(self, domain)
        if domain != os.environ.get("ATLAS_TEST_FRAGILE"):
            return p
        return dataclasses.replace(p, perturbations=dataclasses.replace(p.perturbations,
                                                                        tolerance=1e-300))
    _g.Plan.preset = preset
    _synthesize = _g.synth.synthesize
    def synthesize(preset, *a, **k):
        if preset.name == os.environ.get("ATLAS_TEST_BOOM"):
            raise RuntimeError("boom")
        return _synthesize(preset, *a, **k)
    _g.synth.synthesize = synthesize
'''


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_failing_tasks_are_reported_without_dask_logs(tmp_path: Path) -> None:
    """A real `atlas generate` on the default engine (LocalCluster, 2 workers) with failing
    tasks: stderr holds exactly one FAILED line per failed sequence - no "Compute Failed"
    blocks, no tracebacks, no "Port 8787 is already in use" warning (the port is taken here
    on purpose when it is free)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(_FAILING_SITE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get("PYTHONPATH", "")]),
           "ATLAS_TEST_FRAGILE": "fluid_dynamics", "ATLAS_TEST_BOOM": "astrophysics"}
    env.pop("ATLAS_CATALOG", None)
    blocker = socket.socket()
    try:
        blocker.bind(("127.0.0.1", 8787))
        blocker.listen()
    except OSError:
        pass  # already taken: just as good
    try:
        proc = subprocess.run([sys.executable, "-m", "atlasstore.cli", "generate", "--store",
                               str(tmp_path / "atlas.zarr"), "--domains",
                               "plasma_physics,fluid_dynamics,astrophysics", "--sequences", "2",
                               "--steps", "2", "--workers", "2", "--no-catalog", "--quiet"],
                              capture_output=True, text=True, timeout=240, env=env)
    finally:
        blocker.close()
    assert proc.returncode == 1, proc.stderr
    assert "2 sequences written, 0 already complete, 4 failed" in proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert all(line.startswith("FAILED ") for line in lines), proc.stderr[-3000:]
    assert sorted(line.split(":", 1)[0] for line in lines) == [
        f"FAILED {d}/seq-0000{i} seed={sequence_seed(0, d, i)}"
        for d in ("astrophysics", "fluid_dynamics") for i in (0, 1)]
    assert sum("ThermodynamicViolation: " in line for line in lines) == 2
    assert sum("RuntimeError: boom" in line for line in lines) == 2


# --------------------------------------------------------------------------- optional extras

WITHOUT = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # `import name` now raises ModuleNotFoundError, as when not installed
from atlasstore import cli
sys.exit(cli.main(sys.argv[2:]))
"""


def run_without(modules: str, *argv: str) -> tuple[int, str]:
    """`atlas ARGV` in a fresh interpreter where the given packages cannot be imported."""
    p = subprocess.run([sys.executable, "-c", WITHOUT, modules, *argv], capture_output=True,
                       text=True, timeout=300, env={**os.environ, "ATLAS_CATALOG": ""})
    return p.returncode, p.stderr


@pytest.mark.parametrize(("modules", "argv", "extra"), [
    ("matplotlib", ["show", "plasma_physics", "seq-00000", "--out", "{tmp}/q.png"], "plots"),
    ("neo4j", ["query", "--catalog", "bolt://127.0.0.1:9", "--count"], "neo4j"),
    ("flax", ["train", "--config", "configs/nvp-cpu-small.json", "--out", "{tmp}/run"], "nvp"),
    ("h5py", ["import", "well", "{tmp}/none.hdf5", "--field", "density"], "hdf5"),
])
def test_a_missing_extra_is_named_with_its_install_command(
        tmp_path: Path, cli_store: Path, modules: str, argv: list[str], extra: str) -> None:
    args = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    (tmp_path / "none.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n")
    code, err = run_without(modules, *args, "--store", str(cli_store))
    assert code == 2, err
    assert_user_error(code, err, f"`atlas {argv[0]}` needs {modules}",
                      f"pip install 'atlasstore[{extra}]'")
    assert not list(tmp_path.glob("q.png")) and not (tmp_path / "run").exists()


def test_show_names_a_bad_step_before_a_missing_plots_extra(cli_store: Path) -> None:
    code, err = run_without("matplotlib", "show", "plasma_physics", "seq-00000", "--t", "9",
                            "--store", str(cli_store))
    assert_user_error(code, err, "--t 9 outside 0..2")


def test_every_extra_named_exists_in_pyproject() -> None:
    import tomllib

    meta = tomllib.loads((Path(__file__).parents[2] / "pyproject.toml").read_text())
    extras = set(meta["project"]["optional-dependencies"])
    assert set(cli_entry.EXTRA_OF.values()) <= extras
