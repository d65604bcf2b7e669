"""RE-Control: gradient ascent on a learned value of the pre-logit, at every decoding step.

Kong et al., "Aligning Large Language Models with Representation Editing: A Control Perspective"
(NeurIPS 2024; code: github.com/Lingkai-Kong/RE-Control). A value ``V(z)`` trained on base-model
rollouts (`mpc_llm.values`) predicts the final reward from the pre-logit ``z_t``. At each step
``t < tau`` the decode hands ``z_t`` to a state-feedback policy that takes ``num_steps`` gradient-
ascent steps on ``V`` (`mpc_llm.values.GradientAscentPolicy`), and the head sees the edited state.

Where this departs from the public code, and why:

- The edit enters through the project's head hook, as every controller's control does, so the
  applied edit ``v_t`` is recorded and closeness (steering log-ratio, base perplexity) is measured
  as for AISP. The public code edits the final norm's output inside a patched Llama forward; for a
  decode that is the same state (the head's input), and it also edits prompt positions, which only
  changes logits nobody reads.
- Several responses may be sampled (``num_samples`` per iteration) and the best by reward is
  returned, so RE-Control sits at equal scored-sample budgets beside best-of-N and AISP; with one
  sample it is the published method.
- Plain gradient steps ``x += step_size * grad V`` (their SGD, without momentum), in float32 (their
  value runs in float16), with an optional trust region ``||v_t|| <= max_norm`` (theirs: none).
- The value is one network definition, rebuilt from its card (their inference script defines a
  smaller network than training saves); its training follows the paper (`mpc_llm.values.train`).

It knows only `mpc_llm.core` and `mpc_llm.values`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from pydantic import Field, field_validator

from mpc_llm.controllers.base import Controller
from mpc_llm.controllers.state import ControllerConfig, PlannerState
from mpc_llm.core import Dynamics, Policy
from mpc_llm.values import GradientAscentPolicy, ValuePath, ValueRef

#: The most gradient steps per token: each is a forward and a backward pass of the value for every
#: token of every sample (the paper: 30), so a larger count runs for hours and is a typo.
MAX_STEPS = 1000


class REControlConfig(ControllerConfig):
    """RE-Control's settings.

    Attributes:
        value: the value folder (`mpc-llm train-value --out ...`) or its ``.safetensors`` file.
        num_steps: gradient steps per token (0: the base model exactly), at most `MAX_STEPS`.
            Paper: 30.
        step_size: ``> 0``, the ascent's step in pre-logit units per unit of value gradient.
            Paper: 0.5 to 1.0, chosen on held-out training prompts.
        max_norm: optional trust region on each token's edit ``||v_t||`` (None: unbounded).
        num_samples: responses per iteration (the best by reward is returned).
        num_iterations: iterations when run without a budget.
    """

    value: ValuePath
    num_steps: int = Field(30, ge=0)
    step_size: float = Field(0.5, gt=0, allow_inf_nan=False)
    max_norm: float | None = Field(None, gt=0, allow_inf_nan=False)
    num_samples: int = Field(1, ge=1)
    num_iterations: int = Field(1, ge=1)

    @field_validator("num_steps")
    @classmethod
    def _bounded_steps(cls, value: int) -> int:
        if value > MAX_STEPS:
            raise ValueError(
                f"num_steps={value} gradient steps per token is more than {MAX_STEPS}: each is a forward and "
                "a backward pass of the value for every token of every sample (the paper uses 30); lower it"
            )
        return value


class REControl(Controller[REControlConfig, PlannerState]):
    """Value-gradient state feedback on the pre-logit (module docstring).

    Its records say ``grad_steps_per_token`` and ``value_evals_per_token`` (each ``num_steps`` per
    controlled token): the test-time compute a scored sample hides.
    """

    config_class = REControlConfig

    def __init__(self, config: Any = None, **overrides: object) -> None:
        super().__init__(config, **overrides)
        self.value = ValueRef(self.config.value)

    def check(self, episode: int, cost: Any = None, *, episode_name: str = "the episode length") -> None:
        """The value file exists and is one (before any model loads), and the usual checks."""
        super().check(episode, cost, episode_name=episode_name)
        self.value.check()

    def check_system(self, system: Any) -> None:
        """The value's card against the model and the run (`ValueRef.check_for`: another ``d`` is
        refused; another reward, the run's own prompts or another dtype warn), before the weights load."""
        super().check_system(system)
        self.value.check_for(system)

    def value_params(self) -> int:
        """The value network's parameters (from its card)."""
        return self.value.params()

    def spec(self) -> dict[str, Any]:
        """Class and config, and what the value cost to learn (from its card)."""
        return {**super().spec(), "value_learning": self.value.learning()}

    def init_state(self, dynamics: Dynamics, mean: torch.Tensor | None = None) -> PlannerState:
        """Load the value (refused unless trained on this model and ``d``); the stats give the
        gradient steps per controlled token."""
        self.value.for_system(dynamics)
        steps = torch.full((dynamics.batch_size,), float(self.config.num_steps))
        return PlannerState(stats={"grad_steps_per_token": steps, "value_evals_per_token": steps.clone()})

    def sample(self, state: PlannerState, num_samples: int, generators: Sequence[torch.Generator]) -> Policy:
        """The gradient-ascent policy (no random draw: the system's sampling is the only randomness)."""
        cfg = self.config
        return GradientAscentPolicy(self.value.loaded, cfg.num_steps, cfg.step_size, cfg.max_norm)
