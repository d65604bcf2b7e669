"""Drive a point mass to a goal with every controller at the same budget; print the best costs.

python examples/point_mass.py
"""

from __future__ import annotations

from mpc_llm.controllers import AISP, CEM, BestOfN, RandomShooting
from mpc_llm.dynamics import GoalCost, PointMass

BUDGET = 1024  # scored trajectories per controller

system = PointMass(horizon=20, dt=0.1, x0=[[0.0, 0.0, 0.0, 0.0], [2.0, -1.0, 0.0, 1.0]])  # B = 2
cost = GoalCost(goal=[1.0, 1.0])
controllers = {
    "aisp": AISP(sigma=2.0, lambda_=1.0, num_samples=128),
    "mppi (alpha=1)": AISP(sigma=2.0, lambda_=1.0, alpha=1.0, num_samples=128),
    "cem": CEM(sigma=2.0, elite_fraction=0.1, refit_sigma=True, num_samples=128),
    "random shooting": RandomShooting(sigma=2.0, num_samples=128),
    "best-of-n (zero control)": BestOfN(num_samples=128),
}
for name, controller in controllers.items():
    result = controller.optimize(system, cost, seed=0, max_samples=BUDGET)
    costs = ", ".join(f"{c:8.3f}" for c in result.best_cost.tolist())
    print(f"{name:26s} best cost per problem: {costs}   ({result.budget.seconds:.2f} s)")
