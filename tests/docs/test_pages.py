"""Every ``bash`` and ``python`` block of the docs runs, page by page, top to bottom.

A page's blocks run in order in a fresh folder (``configs/`` linked from the repository), as a
reader would run them: ``atlas`` lines through ``atlasstore.cli.main``, ``scripts/...`` lines as
subprocesses, Python blocks exec'd in one namespace per page. The only changes are the smallest
honest ones, the same as ``tests/docs/test_tour.py``'s: bulk writes run serially (the engine does not
change the data) and ``atlas train`` stops after 2 steps. Pages that take more than a few
seconds are marked slow. Blocks not meant to run (sample output, file layouts, commands that
need a cluster or run this suite) are fenced ``text``.

Two pages run elsewhere, not twice: the getting-started page's runnable blocks must be the
README's (checked here), which ``tests/docs/test_tour.py`` runs; the object-storage page needs the S3
test server and runs in ``tests/docs/test_s3_readme.py``.
"""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from atlasstore.cli import main as atlas_main
from atlasstore.store import AtlasStore
from helpers.doc_blocks import bash_commands, with_options

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```$", re.S | re.M)
#: fence languages a page may use: run (bash, python) or shown only (text)
LANGUAGES = {"bash", "python", "text"}
#: pages whose blocks run in another test module
RUN_ELSEWHERE = {"getting-started.md": "tests/docs/test_tour.py (the README's tour)",
                 "object-storage.md": "tests/docs/test_s3_readme.py (needs the S3 test server)"}
#: option overrides per atlas command: serial engines, a short training
OVERRIDES = {"generate": {"--scheduler": "serial"}, "import": {"--scheduler": "serial"},
             "train": {"--max-steps": "2"}}


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def blocks(path: Path) -> list[tuple[str, str]]:
    """The fenced blocks of a page: (language, code), in order."""
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text())]


def runnable(path: Path) -> list[tuple[str, str]]:
    return [(lang, code) for lang, code in blocks(path) if lang in ("bash", "python")]


def run_page(page: Path, capsys: pytest.CaptureFixture[str]) -> list[tuple[list[str], str]]:
    """Run the page's blocks in the current folder; returns each atlas command and its stdout."""
    outputs: list[tuple[list[str], str]] = []
    namespace: dict[str, object] = {"__name__": "__docs__"}
    for i, (lang, code) in enumerate(runnable(page)):
        if lang == "python":
            exec(compile(code, f"{page.name} (block {i})", "exec"), namespace)
            continue
        for argv in bash_commands(code):
            if argv[0].startswith("scripts/"):
                subprocess.run([str(REPO / argv[0]), *argv[1:]], check=True, timeout=600)
                continue
            assert argv[0] == "atlas", f"{page.name}: no rule to run `{shlex.join(argv)}`"
            argv = with_options(argv, OVERRIDES.get(argv[1], {}))
            code_ = atlas_main(argv[1:])
            out, err = capsys.readouterr()
            assert code_ == 0, f"`{shlex.join(argv)}` exited {code_}:\n{out[-2000:]}\n{err[-2000:]}"
            outputs.append((argv, out))
    return outputs


def counts(outputs: list[tuple[list[str], str]]) -> list[int]:
    return [int(out.strip()) for argv, out in outputs if "--count" in argv]


def check_byod(outputs: list[tuple[list[str], str]]) -> None:
    # 3 members x (6 - 4 + 1) windows; the predecessor's thermal_blur steps exist and are found
    found = counts(outputs)
    assert found[0] == 9 and found[1] > 0, found
    info = AtlasStore.open("imported.zarr").sequence_info("lab", "run0")
    assert info["field"]["kind"] == "intensive"


def check_catalog(outputs: list[tuple[list[str], str]]) -> None:
    assert counts(outputs) == [13, 13]  # 16 steps, windows of 4: with the catalog and without
    lineage = outputs[-1][1]
    assert "Sequence:mylab/run0" in lineage and "kind=api" in lineage, lineage


def check_train(outputs: list[tuple[list[str], str]]) -> None:
    audit = outputs[-1][1]
    assert "8 sequences match, 0 changed, 0 missing" in audit, audit
    assert (Path("runs/nvp-cpu-small/eval/report.json")).is_file()


def check_streaming(outputs: list[tuple[list[str], str]]) -> None:
    assert [argv[1] for argv, _ in outputs] == ["generate"]


#: what each page's commands must have produced, beyond exiting 0
CHECKS: dict[str, Callable[[list[tuple[list[str], str]]], None]] = {
    "bring-your-own-data.md": check_byod, "catalog.md": check_catalog, "streaming.md": check_streaming,
    "train.md": check_train}


def test_every_block_says_whether_it_runs() -> None:
    for page in [REPO / "README.md", *pages()]:
        langs = {lang for lang, _ in blocks(page)}
        assert langs <= LANGUAGES, f"{page.name}: fence languages {sorted(langs - LANGUAGES)} " \
                                   f"(use bash/python to run, text to show)"


def test_readme_is_short_and_its_tour_is_the_getting_started_page() -> None:
    readme = REPO / "README.md"
    assert len(readme.read_text().splitlines()) <= 200
    assert runnable(readme) == runnable(DOCS / "getting-started.md")


def test_readme_links_resolve() -> None:
    text = (REPO / "README.md").read_text()
    links = re.findall(r"\]\(([^)#]+)", text)
    assert links
    for link in links:
        assert (REPO / link).exists(), link


def test_cli_reference_covers_every_command() -> None:
    """The hook that writes the CLI reference walks every subcommand of ``build_parser()``."""
    spec = importlib.util.spec_from_file_location("cli_reference", DOCS / "hooks" / "cli_reference.py")
    assert spec and spec.loader
    hook = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(hook)
    page = hook.cli_reference()
    for command in ("atlas generate", "atlas catalog lineage", "atlas import xarray",
                    "atlas train", "atlas evaluate"):
        assert f"## `{command}`" in page, command
    assert "usage: atlas import well" in page


def test_pages_that_run_are_checked() -> None:
    """A page with runnable blocks runs here or elsewhere, and what it claims is checked."""
    with_code = {p.name for p in pages() if runnable(p)}
    assert with_code - set(RUN_ELSEWHERE) == set(CHECKS), with_code


#: pages quick enough for the quick run (a few seconds, no subprocess, no JAX)
QUICK = {"catalog.md"}


@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", [n if n in QUICK else pytest.param(n, marks=pytest.mark.slow)
                                  for n in sorted(CHECKS)])
def test_page_runs(name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                   capsys: pytest.CaptureFixture[str]) -> None:
    for var in ("ATLAS_STORE", "ATLAS_CATALOG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    outputs = run_page(DOCS / name, capsys)
    CHECKS[name](outputs)
