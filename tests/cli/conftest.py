"""Every command-line test starts from an environment that names no store and no catalog, so a
developer's ATLAS_STORE or ATLAS_CATALOG never decides what a test runs against."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ATLAS_CATALOG", raising=False)
    monkeypatch.delenv("ATLAS_STORE", raising=False)
