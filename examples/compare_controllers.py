"""Compare AISP, CEM, random shooting and best-of-N on a few bundled prompts at equal budgets.

    python examples/compare_controllers.py runs/example

Writes records.jsonl (resumable: run again with the same folder and it continues), summary.md and
reward_vs_samples.png into the folder.
"""

from __future__ import annotations

import sys

from mpc_llm.controllers import AISP, CEM, BestOfN, RandomShooting
from mpc_llm.dynamics import LMDynamics
from mpc_llm.evaluation.compare import compare
from mpc_llm.evaluation.prompts import load_prompts
from mpc_llm.evaluation.summary import markdown_table
from mpc_llm.rewards import VaderReward

out = sys.argv[1] if len(sys.argv) > 1 else "runs/example"
prompts = load_prompts("bundled", limit=4)
lm = LMDynamics("SmolLM2-135M-Instruct", max_new_tokens=32, temperature=0.7)
controllers = {
    "best_of_n": BestOfN(num_samples=8),
    "aisp": AISP(sigma=0.5, lambda_=0.1, num_samples=8, num_knots=1),
    "cem": CEM(sigma=0.5, elite_fraction=0.25, num_samples=8, num_knots=1),
    "random_shooting": RandomShooting(sigma=0.5, num_samples=8, num_knots=1),
}
rows = compare(
    prompts, controllers, lm.with_prompts, VaderReward().as_cost(), budgets=[8, 16], seeds=[0],
    out_dir=out, resume=True, settings={"model": "SmolLM2-135M-Instruct", "reward": "vader"},
)  # fmt: skip
print(markdown_table(rows))
