"""The goals of the NVP (issue 12), checked per domain on an evaluation report, and the tables
that ``atlas evaluate`` prints, the benchmark writes and docs/nvp.md shows.

Goals (each per domain unless said otherwise; "by how much" is relative for VRMSE, absolute for
coverage and NLL):

* ``vs_persistence``: one-step VRMSE below persistence;
* ``vs_diffusion``: one-step VRMSE below the per-domain fitted diffusion baseline;
* ``mean_reduction`` (overall): the mean over domains of the one-step VRMSE at least 30 % below
  persistence's (every domain weighs alike);
* ``rollout``: rollout VRMSE below diffusion's at every lead up to the horizon (5 by default);
* ``coverage_90``: 90 % interval coverage within 85-95 %;
* ``nll``: NLL below a persistence-centred Gaussian with the training residual variance.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["COVERAGE_RANGE", "MEAN_REDUCTION", "evaluate_goals", "headline", "markdown_tables"]

MEAN_REDUCTION = 0.30
COVERAGE_RANGE = (0.85, 0.95)
_PRED = (("model", "NVP"), ("persistence", "persistence"), ("diffusion", "diffusion"),
         ("linear_ar", "linear AR"))


def _below(value: float, ref: float) -> tuple[bool, float]:
    """(value < ref, the relative margin 1 - value / ref: > 0 below, < 0 above)."""
    return value < ref, (1.0 - value / ref) if ref > 0 else 0.0


def _pct(x: float) -> str:
    return f"{100 * abs(x):.1f} %"


def _goal(goal: str, domain: str, met: bool, value: float, target: str, margin: float,
          text: str) -> dict[str, Any]:
    return {"goal": goal, "domain": domain, "met": bool(met), "value": float(value),
            "target": target, "margin": float(margin), "text": text}


def evaluate_goals(report: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every goal, per domain where it is per domain, met or missed and by how much."""
    per = report["one_step"]["per_domain"]
    ro = (report.get("rollout") or {}).get("per_domain", {})
    out = []
    for d, b in per.items():
        m = b["model"]
        for name, goal in (("persistence", "vs_persistence"), ("diffusion", "vs_diffusion")):
            ok, mg = _below(m["vrmse"], b[name]["vrmse"])
            out.append(_goal(goal, d, ok, m["vrmse"], f"< {name} {b[name]['vrmse']:.4g}", mg,
                             f"{_pct(mg)} {'below' if ok else 'ABOVE'} {name}"))
        if d in ro:
            rat = [_below(x, y) for x, y in zip(ro[d]["model"], ro[d]["diffusion"], strict=True)]
            worst = int(np.argmin([r[1] for r in rat]))
            ok = all(r[0] for r in rat)
            out.append(_goal("rollout", d, ok, ro[d]["model"][worst],
                             f"< diffusion at leads 1-{len(rat)}", rat[worst][1],
                             f"every lead below diffusion (closest: lead {worst + 1}, "
                             f"{_pct(rat[worst][1])} below)" if ok else
                             f"lead {worst + 1} {_pct(rat[worst][1])} ABOVE diffusion "
                             f"({sum(not r[0] for r in rat)} of {len(rat)} leads above)"))
        cov = m["coverage_90"]
        lo, hi = COVERAGE_RANGE
        gap = lo - cov if cov < lo else cov - hi if cov > hi else 0.0
        out.append(_goal("coverage_90", d, gap == 0.0, cov, "85-95 %", -gap,
                         f"{100 * cov:.1f} %" + (" (within 85-95 %)" if gap == 0 else
                                                 f" (missed by {100 * gap:.1f} points)")))
        pn = b["persistence"]["nll"]
        out.append(_goal("nll", d, m["nll"] < pn, m["nll"], f"< {pn:.3f}", pn - m["nll"],
                         f"{m['nll']:.3f} vs persistence {pn:.3f} ("
                         f"{abs(pn - m['nll']):.3f} nats {'below' if m['nll'] < pn else 'ABOVE'})"))
    mv = float(np.mean([b["model"]["vrmse"] for b in per.values()]))
    pv = float(np.mean([b["persistence"]["vrmse"] for b in per.values()]))
    red = 1 - mv / pv if pv > 0 else 0.0
    out.append(_goal("mean_reduction", "all", red >= MEAN_REDUCTION, red, ">= 30 % below",
                     red - MEAN_REDUCTION,
                     f"mean over domains {mv:.4f} vs persistence {pv:.4f}: {_pct(red)} "
                     f"{'below' if red >= 0 else 'above'}" + (
                         "" if red >= MEAN_REDUCTION else
                         f" (missed by {100 * (MEAN_REDUCTION - red):.1f} points)")))
    return out


def headline(report: Mapping[str, Any]) -> dict[str, Any]:
    """The mean over domains of every predictor's one-step VRMSE, the worst domain (the one where
    the NVP is furthest from the best baseline) and the goal count."""
    per = report["one_step"]["per_domain"]
    means = {k: float(np.mean([b[k]["vrmse"] for b in per.values()])) for k, _ in _PRED}
    ratio = {d: b["model"]["vrmse"] / min(b[k]["vrmse"] for k, _ in _PRED[1:])
             for d, b in per.items()}
    worst = max(ratio, key=ratio.__getitem__)
    goals = report.get("goals") or []
    return {"mean_vrmse": means, "worst_domain": worst,
            "worst_vrmse": per[worst]["model"]["vrmse"],
            "worst_vs_best_baseline": ratio[worst] - 1.0,
            "goals_met": sum(g["met"] for g in goals), "goals": len(goals),
            "held_out": bool(report["data"].get("held_out")),
            "note": report["data"].get("held_out_note", "")}


def _f(x: Any, nd: int = 4) -> str:
    if x is None:
        return "n/a"
    if isinstance(x, float) and x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e4):
        return f"{x:.2e}"
    return f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return (["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            + ["| " + " | ".join(r) + " |" for r in rows])


def markdown_tables(report: Mapping[str, Any]) -> str:
    """The headline, the per-domain tables (one-step VRMSE; uncertainty and physics; rollout)
    and the goals, as Markdown (also readable as plain text)."""
    h = report.get("headline") or headline(report)
    per = report["one_step"]["per_domain"]
    lines = [f"**{h['note']}**", ""]
    mv = h["mean_vrmse"]
    lines.append(f"One-step VRMSE, mean over {len(per)} domains: NVP {mv['model']:.4f}, "
                 f"persistence {mv['persistence']:.4f}, diffusion {mv['diffusion']:.4f}, linear "
                 f"AR {mv['linear_ar']:.4f}. Worst domain (NVP furthest from the best baseline): "
                 f"{h['worst_domain']} (VRMSE {h['worst_vrmse']:.4f}, "
                 f"{_pct(h['worst_vs_best_baseline'])} "
                 f"{'above' if h['worst_vs_best_baseline'] > 0 else 'below'} the best baseline). "
                 f"Goals met: {h['goals_met']} of {h['goals']}.")
    lines += ["", "One-step VRMSE per domain:", ""]
    rows = []
    for d, b in [*per.items(), ("overall (all windows)", report["one_step"]["overall"])]:
        rows.append([d, str(b["windows"])] + [_f(b[k]["vrmse"]) for k, _ in _PRED]
                    + [_pct(1 - b["model"]["vrmse"] / b["diffusion"]["vrmse"])
                       + (" below" if b["model"]["vrmse"] < b["diffusion"]["vrmse"] else " ABOVE")])
    lines += _table(["domain", "windows", *(lab for _, lab in _PRED), "NVP vs diffusion"], rows)
    lines += ["", ("Uncertainty and physics per domain (NVP; NLL and CRPS also for persistence "
                   "with its training residual variance):"), ""]
    rows = []
    for d, b in [*per.items(), ("overall", report["one_step"]["overall"])]:
        m, p = b["model"], b["persistence"]
        rows.append([d, _f(m["coverage_50"], 3), _f(m["coverage_90"], 3), _f(m["nll"], 3),
                     _f(p["nll"], 3), _f(m["crps"]), _f(p["crps"]), _f(m["conservation_error"]),
                     _f(m["entropy_violations"]["rate"], 3)])
    lines += _table(["domain", "cov 50 %", "cov 90 %", "NLL", "NLL persistence", "CRPS",
                     "CRPS persistence", "cons. err", "entropy viol."], rows)
    ro = report.get("rollout") or {}
    if ro:
        n = sum(r["rollouts"] for r in ro["per_domain"].values())
        lines += ["", (f"Rollout VRMSE by lead (NVP / diffusion / persistence), {n} rollouts, "
                       "from every start that leaves the horizon:"), ""]
        rows = [[d] + [f"{a:.3f} / {b:.3f} / {c:.3f}" for a, b, c in
                       zip(r["model"], r["diffusion"], r["persistence"], strict=True)]
                for d, r in ro["per_domain"].items()]
        lines += _table(["domain", *(f"lead {k}" for k in ro["lead"])], rows)
    lines += ["", "Goals:", ""]
    rows = [[g["goal"], g["domain"], "met" if g["met"] else "**missed**", g["text"]]
            for g in report.get("goals") or []]
    lines += _table(["goal", "domain", "", "measured"], rows)
    return "\n".join(lines) + "\n"
