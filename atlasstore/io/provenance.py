"""Who, when and which code: the facts every record (store, run, catalog, checkpoint) carries.

One copy of each, so that a generation run, a training run and a catalog node written in the
same process agree on the code version and the host, and timestamps share one format.
"""

from __future__ import annotations

import datetime as _dt
import socket
import subprocess
from functools import lru_cache
from pathlib import Path

from atlasstore._version import __version__


def utc_now() -> str:
    """ISO 8601 UTC timestamp to the second (the format of every ``created``/``started`` field)."""
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


@lru_cache(maxsize=1)
def code_version() -> str:
    """Package version plus the git commit when running from a checkout (``0.1.0+g<sha12>``)."""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    return f"{__version__}+g{sha}" if sha else __version__


def host() -> str:
    """This machine's name as recorded in run records and lineage (``Host`` nodes)."""
    return socket.gethostname()
