"""The README's tour runs top to bottom right after the main job.

(docs/getting-started.md holds the same blocks, which ``tests/docs/test_pages.py`` checks; the
other pages of the docs, "Bring your own data" included, run there.)

The commands are read from README.md ("A tour": the bash block, then the Python block) and
from ``scripts/main`` (its ``atlas generate``), and run in that order through
``atlasstore.cli.main`` in a fresh folder, as a user would after ``scripts/main``: the store is
``./atlas.zarr``, the catalog the SQLite file beside it, ``configs/`` the repository's.

Kept small, without changing what the tour tests: every ``atlas generate`` runs serially (the
engine does not change the data), the tour's own generate keeps its domains, seed and start
index but makes 3 sequences of 8 steps instead of 20 of 32 (a clash depends on the sequence ids
and on seed and length differing, not on how many), and ``atlas train`` stops after 2 steps.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from atlasstore import cli
from helpers.doc_blocks import bash_commands, with_options

REPO = Path(__file__).resolve().parents[2]

#: the tour's generate, small: option -> value
SMALL_TOUR_GENERATE = {"--sequences": "3", "--steps": "8"}


def readme_section(title: str) -> tuple[list[list[str]], str]:
    """The bash commands and the Python of the README section ``title``."""
    readme = (REPO / "README.md").read_text()
    section = readme.split(f"\n## {title}\n", 1)[1].split("\n## ", 1)[0]
    bash = re.search(r"```bash\n(.*?)```", section, re.S)
    python = re.search(r"```python\n(.*?)```", section, re.S)
    assert bash and python, f"README's {title} lost its bash or Python block"
    return bash_commands(bash.group(1)), python.group(1)


def main_job_generate() -> list[str]:
    cmds = [c for c in bash_commands((REPO / "scripts" / "main").read_text())
            if c[:2] == ["atlas", "generate"]]
    assert len(cmds) == 1, cmds
    return cmds[0]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_readme_tour_runs_after_the_main_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    for var in ("ATLAS_STORE", "ATLAS_CATALOG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    commands, python = readme_section("A tour")
    assert commands[0][:2] == ["atlas", "generate"], commands[0]
    assert [c[1] for c in commands] == ["generate", "ls", "query", "show", "audit", "stats",
                                        "catalog", "train"], "the tour changed: update this test's notes"

    steps = [with_options(main_job_generate(), {"--scheduler": "serial"})]
    steps.append(with_options(commands[0], {**SMALL_TOUR_GENERATE, "--scheduler": "serial"}))
    steps += [c if c[1] != "train" else with_options(c, {"--max-steps": "2"})
              for c in commands[1:]]
    for argv in steps:
        assert argv[0] == "atlas"
        code = cli.main(argv[1:])
        out, err = capsys.readouterr()
        assert code == 0, f"`{shlex.join(argv)}` exited {code}:\n{out[-2000:]}\n{err[-2000:]}"
        print(f"$ {shlex.join(argv)}\n{out[-400:]}")

    assert (tmp_path / "windows.npz").is_file() and (tmp_path / "quicklook.png").is_file()
    exec(compile(python, "README.md (A tour, Python)", "exec"), {"__name__": "__tour__"})

