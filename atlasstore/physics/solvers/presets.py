"""Solver domain presets: which PDE, with which parameters, initial condition and checks.

A preset is a JSON document (``schemas/presets/solvers/<name>.json``, validated against
``solver-preset.schema.json`` through ``preset.schema.json``), so a domain group records it
like a synthetic preset. Each equation maps to one exponax stepper; the keyword arguments a
preset may give it are listed here (:data:`EQUATIONS`) and any other is refused.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atlasstore.errors import SchemaError
from atlasstore.io.schemas import named_document, schema_dir, validate


@dataclass(frozen=True)
class Equation:
    """One PDE: its exponax stepper (by name, under ``exponax.stepper``), the keyword arguments
    a preset may set, the ones fixed here, the state it evolves and the energy stored."""

    stepper: str
    parameters: frozenset[str]
    state: str
    energy: str
    fixed: Mapping[str, Any] = field(default_factory=dict)


EQUATIONS: dict[str, Equation] = {
    "kolmogorov_flow": Equation(
        "KolmogorovFlowVorticity",
        frozenset({"diffusivity", "drag", "injection_mode", "injection_scale",
                   "convection_scale"}),
        "vorticity w",
        "kinetic energy per pixel 0.5 |u|^2 dx^2, u = (d_y psi, -d_x psi), Laplacian psi = w "
        "(spectral; u is divergence-free)"),
    "kuramoto_sivashinsky": Equation(
        "KuramotoSivashinsky",
        frozenset({"gradient_norm_scale", "second_order_scale", "fourth_order_scale"}),
        "front height u (combustion form)",
        "slope energy per pixel 0.5 |grad u|^2 dx^2 (spectral gradient; independent of the "
        "drifting mean of u)"),
    "swift_hohenberg": Equation(
        "reaction.SwiftHohenberg",
        frozenset({"reactivity", "critical_number"}),
        "order parameter u",
        "pattern energy per pixel 0.5 u^2 dx^2",
        fixed={"polynomial_coefficients": (0.0, 0.0, 1.0, -1.0)}),
}


@dataclass(frozen=True)
class SolverPreset:
    """A solver domain: shape (N, N), stored steps, and the ``solver`` document (equation,
    domain extent, dt, substeps, warm-up steps, ETDRK order, stepper parameters, initial
    condition, checks)."""

    name: str
    shape: tuple[int, int]
    n_steps: int
    solver: Mapping[str, Any]
    description: str = ""

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> SolverPreset:
        what = f"preset {doc.get('name', '?')!r}" if isinstance(doc, Mapping) else None
        validate(doc, "solver-preset", what=what)
        shape = (int(doc["shape"][0]), int(doc["shape"][1]))
        if shape[0] != shape[1]:
            raise SchemaError(f"{what} is invalid at shape: the solvers' grids are square, "
                              f"got {list(shape)}")
        solver = json.loads(json.dumps(doc["solver"]))  # a private copy
        eq = EQUATIONS[solver["equation"]]
        unknown = sorted(set(solver["parameters"]) - eq.parameters)
        if unknown:
            raise SchemaError(f"{what} is invalid at solver/parameters: {unknown} not among "
                              f"{sorted(eq.parameters)} ({solver['equation']})")
        return cls(doc["name"], shape, int(doc["n_steps"]), solver, doc.get("description", ""))

    def __hash__(self) -> int:  # ``solver`` is a dict: hash the document (a Plan is hashable)
        return hash(json.dumps(self.to_dict(), sort_keys=True))

    @property
    def equation(self) -> Equation:
        return EQUATIONS[self.solver["equation"]]

    @property
    def pattern(self) -> str:
        """What the catalog's ``pattern`` column holds for this domain: the equation."""
        return str(self.solver["equation"])

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "description": self.description, "shape": list(self.shape),
                "n_steps": self.n_steps, "solver": json.loads(json.dumps(self.solver))}


def solver_preset_dir() -> Path:
    return schema_dir() / "presets" / "solvers"


def list_solver_presets() -> list[str]:
    """Names of the shipped solver presets."""
    return sorted(p.stem for p in solver_preset_dir().glob("*.json"))


def load_solver_preset(name_or_path: str | Path | Mapping[str, Any]) -> SolverPreset:
    """A shipped solver preset by name, a preset JSON file, or a preset dict; validated."""
    return SolverPreset.from_dict(named_document(name_or_path, solver_preset_dir(),
                                                 "solver-preset", "solver preset"))
