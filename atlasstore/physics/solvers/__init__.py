"""Solver-backed domains: nonlinear 2D PDEs integrated by exponax (JAX spectral ETDRK).

``presets`` holds the preset documents (equation, parameters, initial condition, checks);
``simulate`` runs one sequence from a seed and derives the stored energy per pixel. See the
docs page ``solvers.md``.
"""

from atlasstore.physics.solvers.presets import (
    EQUATIONS,
    Equation,
    SolverPreset,
    list_solver_presets,
    load_solver_preset,
    solver_preset_dir,
)
from atlasstore.physics.solvers.simulate import SolverRun, check_run, energy_density, lineage, simulate

__all__ = ["EQUATIONS", "Equation", "SolverPreset", "SolverRun", "check_run", "energy_density",
           "lineage", "list_solver_presets", "load_solver_preset", "simulate", "solver_preset_dir"]
