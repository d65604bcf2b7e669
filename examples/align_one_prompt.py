"""Steer one response of the embedded SmolLM2 toward positive sentiment (VADER), from Python.

python examples/align_one_prompt.py "Describe your Monday morning."
"""

from __future__ import annotations

import sys

from mpc_llm.controllers import AISP
from mpc_llm.dynamics import LMDynamics, make_generators
from mpc_llm.rewards import VaderReward

prompt = sys.argv[1] if len(sys.argv) > 1 else "Describe your Monday morning."
lm = LMDynamics("SmolLM2-135M-Instruct", prompts=[prompt], max_new_tokens=48, temperature=0.7)
reward = VaderReward()

aisp = AISP(sigma=0.5, lambda_=0.1, num_samples=8, num_iterations=4, num_knots=1)
result = aisp.optimize(lm, reward.as_cost(), seed=0)

unsteered = lm.sample(1, make_generators(1, 1))
print(f"steered   ({-result.best_cost.item():+.3f}): {result.best_rollout.texts[0][0]}")
print(f"unsteered ({reward.score(prompt, unsteered.texts[0]).item():+.3f}): {unsteered.texts[0][0]}")
budget = result.budget
print(f"{budget.samples} responses scored, {budget.tokens} tokens, {budget.seconds:.1f} s")
