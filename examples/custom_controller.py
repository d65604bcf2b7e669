"""A new controller in a dozen lines: move the mean to the average of the k best samples.

python examples/custom_controller.py
"""

from __future__ import annotations

import torch
from pydantic import Field

from mpc_llm.controllers import GaussianConfig, GaussianController, GaussianState
from mpc_llm.dynamics import LMDynamics
from mpc_llm.rewards import VaderReward


class TopKConfig(GaussianConfig):
    k: int = Field(2, ge=1)


class TopKMean(GaussianController[TopKConfig]):
    """Gaussian samples around the mean; the new mean is the average of the ``k`` lowest costs."""

    config_class = TopKConfig

    def sample(self, state: GaussianState, num_samples: int, generators) -> torch.Tensor:
        return self.gaussian(state, num_samples, generators)  # (B, N, K, d)

    def update(self, state: GaussianState, knots: torch.Tensor, costs: torch.Tensor) -> GaussianState:
        best = costs.topk(min(self.config.k, costs.shape[1]), dim=1, largest=False).indices  # (B, k)
        elites = knots[torch.arange(knots.shape[0])[:, None], best]  # (B, k, K, d)
        return state.replace(mean=elites.mean(dim=1))


if __name__ == "__main__":
    lm = LMDynamics("SmolLM2-135M-Instruct", prompts=["Describe a rainy afternoon."], max_new_tokens=32)
    controller = TopKMean(sigma=0.5, k=2, num_samples=8, num_iterations=3, num_knots=1)
    result = controller.optimize(lm, VaderReward().as_cost(), seed=0)
    print(f"reward {-result.best_cost.item():+.3f}: {result.best_rollout.texts[0][0]}")
