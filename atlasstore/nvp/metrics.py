"""Training metrics: ``metrics.jsonl`` and TensorBoard scalars, and early stopping on them."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["EarlyStopping", "MetricsLog", "read_metrics"]


class MetricsLog:
    """``metrics.jsonl`` (append, one JSON object per line) plus TensorBoard scalars.

    A new run starts both afresh; a resumed run (``resume_step``) keeps the records up to that
    step and drops later ones, so every step appears once even after a crash.
    """

    def __init__(self, out_dir: Path, resume_step: int | None) -> None:
        self.path = out_dir / "metrics.jsonl"
        if resume_step is not None and self.path.exists():
            keep = []
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                if int(rec.get("step", 0)) <= resume_step:
                    keep.append(line)
            self.path.write_text("".join(k + "\n" for k in keep))
        elif resume_step is None and self.path.exists():
            self.path.unlink()
        self._fh = self.path.open("a")
        from tensorboardX import SummaryWriter

        self.tb = SummaryWriter(logdir=str(out_dir / "tb"),
                                purge_step=None if resume_step is None else resume_step + 1)

    def write(self, split: str, step: int, values: Mapping[str, Any]) -> None:
        rec = {"split": split, "step": int(step), "time": time.time(), **values}
        self._fh.write(json.dumps(rec, default=float) + "\n")
        self._fh.flush()
        for k, v in values.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
                self.tb.add_scalar(f"{split}/{k}", v, step)

    def close(self) -> None:
        self._fh.close()
        self.tb.flush()
        self.tb.close()


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Records of a ``metrics.jsonl`` file (a run directory or the file itself)."""
    p = Path(path)
    if p.is_dir():
        p = p / "metrics.jsonl"
    if not p.exists():
        return []
    out = []
    for line in p.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


@dataclass
class EarlyStopping:
    """Track the best value of a lower-is-better metric; ``should_stop`` after ``patience``
    evaluations without an improvement larger than ``min_delta`` (never when patience is None)."""

    patience: int | None = 10
    min_delta: float = 0.0
    best: float = math.inf
    best_step: int = -1
    bad_evals: int = 0

    def update(self, value: float, step: int) -> bool:
        """Record a value; True when it is a new best."""
        if not math.isfinite(value):
            self.bad_evals += 1
            return False
        if value < self.best - self.min_delta:
            self.best, self.best_step, self.bad_evals = float(value), int(step), 0
            return True
        self.bad_evals += 1
        return False

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience

    def to_dict(self) -> dict[str, Any]:
        return {"patience": self.patience, "min_delta": self.min_delta,
                "best": self.best if math.isfinite(self.best) else None,
                "best_step": self.best_step, "bad_evals": self.bad_evals}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> EarlyStopping:
        best = d.get("best")
        return cls(d.get("patience"), float(d.get("min_delta", 0.0)),
                   math.inf if best is None else float(best), int(d.get("best_step", -1)),
                   int(d.get("bad_evals", 0)))
