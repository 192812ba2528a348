"""What a failed Neo4j call tells the caller."""

from __future__ import annotations


class _VersionMoved(Exception):
    """Another process committed a sync first (commit_sync's compare-and-swap failed)."""


def _one_line(exc: BaseException) -> str:
    """The driver's message on one line (it never contains credentials)."""
    msg = str(getattr(exc, "message", None) or exc).strip()
    return " ".join(msg.split()) if msg else type(exc).__name__
