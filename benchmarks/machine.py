"""The machine a benchmark ran on, written the same way into every results file.

A number means little without the machine, how busy it was and the versions behind it. Each
benchmark calls :func:`start` first (before it pins itself to a core or loads the machine) and
puts :func:`describe` into its report, so results files can be compared line by line.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata as md
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Start:
    """What can only be known at the start of a run: when, how busy, how many cores it may use."""

    when: dt.datetime
    load: tuple[float, float, float] | None
    usable_cores: int


def start() -> Start:
    return Start(dt.datetime.now(dt.UTC), load_average(), usable_cores())


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20
    except (OSError, ValueError, IndexError):
        pass
    return None


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask), which can be fewer than the machine's."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except (AttributeError, OSError):
        return None


def versions(packages: Sequence[str] = (), extra: Mapping[str, str] | None = None) -> str:
    """Python, the atlasstore commit, then each installed distribution of ``packages``."""
    from atlasstore.io.provenance import code_version

    out = [f"Python {platform.python_version()}", f"atlasstore {code_version()}"]
    for name in packages:
        try:
            out.append(f"{name} {md.version(name)}")
        except md.PackageNotFoundError:
            out.append(f"{name} (not installed)")
    out += [f"{k} {v}" for k, v in (extra or {}).items()]
    return ", ".join(out)


def jax_backend() -> str:
    """The JAX platform and device count, for benchmarks that run JAX."""
    import jax

    return f"{jax.default_backend()} ({len(jax.devices())} device(s))"


def _load(load: tuple[float, float, float] | None) -> str:
    return "n/a" if load is None else " ".join(f"{x:.2f}" for x in load)


def describe(run: Start, packages: Sequence[str] = (), extra: Mapping[str, str] | None = None) -> list[str]:
    """The Markdown bullets: date, machine, load average at start and now, versions.

    A 1-minute load at start of half the usable cores or more is flagged: something else was
    running, and wall-clock timings of that run are noisy.
    """
    mem = memory_gib()
    busy = run.load is not None and run.load[0] >= run.usable_cores / 2
    return [
        f"- date: {run.when.strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {cpu_model()}, {os.cpu_count()} logical cores ({run.usable_cores} usable), "
        + (f"{mem:.1f} GiB RAM" if mem is not None else "RAM unknown")
        + f"; {platform.system()} {platform.release()}",
        f"- load average (1/5/15 min) at start: {_load(run.load)}; at end: {_load(load_average())} "
        "(the end includes this run's own load)"
        + ("  **(busy at start, other work shared the machine: timings are noisy)**" if busy else ""),
        f"- versions: {versions(packages, extra)}",
    ]
