"""RunOptions: the run settings as one object; keywords still work and mean the same."""

from __future__ import annotations

from pathlib import Path

import pytest

from atlasstore.runs.generate import Plan, generate
from atlasstore.runs.options import RunOptions
from atlasstore.store import AtlasStore


def test_keywords_override_an_object_and_unknown_ones_are_named() -> None:
    base = RunOptions(workers=2, scheduler="serial")
    assert RunOptions.of(base, workers=1) == RunOptions(workers=1, scheduler="serial")
    assert RunOptions.of(None) == RunOptions()
    with pytest.raises(TypeError, match="unknown run option.*workrs"):
        RunOptions.of(base, workrs=1)


def test_generate_takes_the_object_or_its_keywords_alike(tmp_path: Path) -> None:
    plan = Plan(domains=("plasma_physics",), sequences=1, steps=2)
    seen: list[str] = []
    by_object = generate(tmp_path / "a.zarr", plan,
                         RunOptions(scheduler="serial", progress=lambda r: seen.append("a")))
    by_keywords = generate(tmp_path / "b.zarr", plan, scheduler="serial",
                           progress=lambda r: seen.append("b"))
    assert seen == ["a", "b"] and by_object.written == by_keywords.written == 1
    a, b = (AtlasStore.open(tmp_path / f"{n}.zarr") for n in "ab")
    assert a.sequence_info("plasma_physics", "seq-00000")["arrays"] == \
        b.sequence_info("plasma_physics", "seq-00000")["arrays"]
    with pytest.raises(TypeError, match="unknown run option"):
        generate(tmp_path / "c.zarr", plan, schedular="serial")
