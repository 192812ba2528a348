"""Running documentation as written: the simple commands of a shell block, and a command
with some of its options set to test-sized values."""

from __future__ import annotations

import shlex


def bash_commands(text: str) -> list[list[str]]:
    """Simple commands of a shell snippet: continuation lines joined, comments dropped."""
    out = []
    for line in text.replace("\\\n", " ").splitlines():
        words = shlex.split(line, comments=True)
        if words:
            out.append(words)
    return out


def with_options(argv: list[str], options: dict[str, str]) -> list[str]:
    """``argv`` with the given options' values replaced (or appended)."""
    out = list(argv)
    for opt, value in options.items():
        if opt in out:
            out[out.index(opt) + 1] = value
        else:
            out += [opt, value]
    return out
