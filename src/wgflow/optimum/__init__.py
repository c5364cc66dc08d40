"""Certified global minimum of a two-layer ReLU network with weight decay (Pilanci & Ergen 2020).

The loss ``L(W, α) = Σ_j (Σ_i α_i relu(w_i·x_j) − y_j)² + λ Σ_i (|w_i|² + α_i²)``
is, after balancing each neuron (ReLU is 1-homogeneous: λ(|w|² + α²) ≥ 2λ|w||α|,
equality when |w| = |α|) and merging the neurons of one activation pattern and
sign, the convex program of Pilanci & Ergen (2020)

    P* = min ‖Σ_D D X (u_D − v_D) − y‖² + β Σ_D (‖u_D‖ + ‖v_D‖)
         s.t. (2D − I) X u_D ≥ 0,  (2D − I) X v_D ≥ 0,

over the patterns D = diag(1[X g ≥ 0]), with β = 2λ and the ℓ2 norm for the
parameterisations ``lifted``, ``signed``, ``split``, ``sphere``, and β = λ with the
ℓ1 norm for ``signed_square`` (Chizat & Bach's 2-homogeneous unit, V = |p|²).

**F* = P*.** A wgflow measure with masses 1/m and ``lifted`` positions √m (w, α)
has exactly the loss L (mean-field scaling), and every measure's F is at least
P* (group its neurons by pattern cone and sign; triangle inequality), so the
global minimum of an :class:`~wgflow.objective.Objective` over measures of any
width is P*, attained by a finite network. With ``reduction="mean"`` the value is
(1/n)·P*(λ → nλ).

Exact for rank(X) ≤ 3 (inputs in R^2 with a bias are rank 3): the patterns are
enumerated exactly (:func:`enumerate_patterns`), the program is solved with
cvxpy + Clarabel, and the value is certified by ``lower_bound ≤ P* ≤ upper_bound``:
the dual bound from the residual (docs/optimum.md §3) and the loss of an
explicit network evaluated by wgflow's own Objective.

Public API::

    global_minimum(X, y, lam, *, norm="l2", reduction="sum", solver=ConvexSolver()) -> GlobalOptimum
    global_minimum_for(objective, solver=ConvexSolver()) -> GlobalOptimum
    excess(objective_value, optimum) -> (F − F*, (F − F*)/F*)
    dual_bound(X, y, lam, residual, *, norm, reduction, activation, method) -> DualBound
    dual_bound_for(objective, mu) -> DualBound
    enumerate_patterns(X) -> Patterns
    optimum_command(data, lam, bias, json_output) -> int      (the CLI ``wgflow optimum``)
"""

from wgflow.optimum.api import dual_bound, dual_bound_for, global_minimum, global_minimum_for, optimum_command, problem_of
from wgflow.optimum.dual import DualBound, best_scaled_dual, exact_dual_norm, pattern_dual_norms, sampled_dual_norm
from wgflow.optimum.patterns import (
    Patterns,
    chamber_adjacency,
    effective_rank,
    enumerate_patterns,
    regions_in_general_position,
    sample_patterns,
)
from wgflow.optimum.program import (
    FORMULATIONS,
    ConvexProblem,
    ConvexSolver,
    GlobalOptimum,
    excess,
    make_problem,
    network_from_solution,
    network_loss,
    solve,
)

__all__ = [
    "FORMULATIONS",
    "ConvexProblem",
    "ConvexSolver",
    "DualBound",
    "GlobalOptimum",
    "Patterns",
    "best_scaled_dual",
    "chamber_adjacency",
    "dual_bound",
    "dual_bound_for",
    "effective_rank",
    "enumerate_patterns",
    "exact_dual_norm",
    "excess",
    "global_minimum",
    "global_minimum_for",
    "make_problem",
    "network_from_solution",
    "network_loss",
    "optimum_command",
    "pattern_dual_norms",
    "problem_of",
    "regions_in_general_position",
    "sample_patterns",
    "sampled_dual_norm",
    "solve",
]
