"""The Python API in a script without ``if __name__ == "__main__":`` (issue 18): Dask starts
worker processes by spawn, which runs the main script again in each of them. A plan big enough
for the process cluster then runs on threads with a one-line warning (the engine chose
processes itself) or is refused with the cause and the fix (processes were asked for); with the
guard the process cluster runs. Real subprocesses running real scripts."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import atlasstore
from atlasstore.runs.scheduling import SERIAL_MAX_TASKS

REPO = Path(atlasstore.__file__).resolve().parents[1]
N = SERIAL_MAX_TASKS + 1  # more tasks than run in process: the engine would pick processes

UNGUARDED = """\
import sys
import atlasstore

plan = atlasstore.Plan(domains=("plasma_physics",), sequences={n}, steps=2, shape=(64, 64))
report = atlasstore.generate(sys.argv[1], plan, workers=2{extra})
print(report.engine, report.ok, report.written)
"""

GUARDED = """\
import sys
import atlasstore


def main():
    plan = atlasstore.Plan(domains=("plasma_physics",), sequences={n}, steps=2, shape=(64, 64))
    report = atlasstore.generate(sys.argv[1], plan, workers=2{extra})
    print(report.engine, report.ok, report.written)


if __name__ == "__main__":
    main()
"""


def _run(tmp_path: Path, source: str, extra: str = "") -> subprocess.CompletedProcess[str]:
    script = tmp_path / "make_data.py"
    script.write_text(source.format(n=N, extra=extra))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    return subprocess.run([sys.executable, str(script), str(tmp_path / "s.zarr")],
                          capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)


@pytest.mark.slow
def test_an_unguarded_script_runs_on_threads_with_one_warning(tmp_path: Path) -> None:
    r = _run(tmp_path, UNGUARDED)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["threads", "True", str(N)]
    (line,) = r.stderr.splitlines()
    assert "make_data.py line 5" in line and 'if __name__ == "__main__":' in line, line


@pytest.mark.slow
def test_an_unguarded_script_asking_for_processes_gets_the_cause_and_the_fix(
        tmp_path: Path) -> None:
    r = _run(tmp_path, UNGUARDED, extra=', scheduler="processes"')
    assert r.returncode == 1
    last = r.stderr.splitlines()[-1]
    assert last.startswith("atlasstore.errors.") and "make_data.py line 5" in last, r.stderr
    assert 'put that code under `if __name__ == "__main__":`' in last
    assert "Nanny" not in r.stderr and "StoreLocked" not in r.stderr
    assert not (tmp_path / "s.zarr").exists()  # refused before anything was written


@pytest.mark.slow
def test_a_guarded_script_runs_on_the_process_cluster(tmp_path: Path) -> None:
    r = _run(tmp_path, GUARDED)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["processes", "True", str(N)]
    assert r.stderr == ""
