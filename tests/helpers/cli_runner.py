"""Run ``atlas`` in this process and capture what it prints (for tests of the command line)."""

from __future__ import annotations

import contextlib
import io

import pytest

from atlasstore import cli


def run_cli(*argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``atlas ARGV``."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = cli.main(list(argv))
    return rc, out.getvalue(), err.getvalue()


def run_captured(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``atlas ARGV``, read through pytest's ``capsys``."""
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err
