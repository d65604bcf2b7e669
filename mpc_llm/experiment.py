"""One validated description of an alignment run (model, decoding, reward, controller, seed).

The same pydantic model backs the Python API, YAML / JSON config files and the CLI flags, so a
config file and a command line mean the same thing.

Example (YAML):

    model: SmolLM2-135M-Instruct      # or an HF id, a local folder, a .gguf file
    device: cpu                       # or cuda, cuda:1, or cuda:0,cuda:1 (a model spread over two)
    lm: {max_new_tokens: 48, temperature: 0.7}
    reward: vader                     # or {name: hf, model: path/to/reward-model}, or a list to sum
    eval_reward: [judge]              # held-out rewards: scored on the answers, never optimised
    controller: {name: aisp, sigma_relative: 0.05, ess_target: 0.3, tau: 24, num_samples: 8}
    controllers:                      # for `mpc-llm compare`: label -> settings
      best_of_n: {name: best_of_n, num_samples: 16}
      aisp: {name: aisp, sigma: 0.5, lambda: 0.1, num_samples: 8, num_knots: 1}   # absolute units
    seed: 0
    prompts: sharegpt:test            # for `mpc-llm compare`: a prompt file, bundled, sharegpt:dev, ...
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from typing_extensions import Self

from mpc_llm.controllers import CONTROLLERS, BestOfN, Controller, RecedingHorizon, SequentialController
from mpc_llm.core import IterationRecord, OptimizeResult, read_mapping
from mpc_llm.dynamics import LMDynamics
from mpc_llm.evaluation.heldout import load_eval_rewards
from mpc_llm.lm import DEFAULT_MODEL, LMConfig, Prompt
from mpc_llm.lm.gguf import check_gguf_file
from mpc_llm.lm.loading import parse_devices
from mpc_llm.rewards import Reward, check_reward_spec, refuse_remote_code, reward_class_of, reward_from_spec

#: The project's AISP settings, scale-free so that they carry over to other models and rewards:
#: sigma as a fraction of the model's pre-logit RMS, and each iteration's temperature chosen for a
#: target ESS fraction (chosen with `benchmarks/sweep_aisp.py` on the embedded default; README).
DEFAULT_CONTROLLER: dict[str, Any] = {
    "name": "aisp",
    "sigma_relative": 0.05,
    "ess_target": 0.3,
    "alpha": 0.0,
    "num_samples": 8,
    "num_iterations": 4,
    "num_knots": 1,
}
#: Settings that name the same quantity two ways: a spec giving one drops the default of the other.
_EITHER: tuple[tuple[frozenset[str], frozenset[str]], ...] = (
    (frozenset({"sigma"}), frozenset({"sigma_relative"})),
    (frozenset({"lambda", "lambda_"}), frozenset({"ess_target"})),
)
DEFAULT_LM: dict[str, Any] = {"max_new_tokens": 48, "temperature": 0.7}
#: Receding-horizon AISP: plan 16 tokens, commit 8, re-plan (6 plans for a 48-token response).
DEFAULT_RECEDING_HORIZON: dict[str, Any] = {"horizon": 16, "commit": 8}


def controller_defaults(name: str) -> dict[str, Any]:
    """The project's defaults for controller ``name`` (AISP's chosen settings; the same relative
    sigma, knots and samples for CEM and random shooting; samples and iterations for best-of-N)."""
    if name == "receding_horizon":
        return dict(DEFAULT_RECEDING_HORIZON)
    keys = {
        "aisp": [k for k in DEFAULT_CONTROLLER if k != "name"],
        "cem": ["sigma_relative", "num_knots", "num_samples", "num_iterations"],
        "random_shooting": ["sigma_relative", "num_knots", "num_samples", "num_iterations"],
        "blockwise_best_of_n": ["num_samples"],
        "speculative_rejection": [],
        "args": [],
    }.get(name, ["num_samples", "num_iterations"])
    return {k: DEFAULT_CONTROLLER[k] for k in keys}


def override(spec: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` with ``changes`` over it; a change to one of two ways of giving a quantity drops the
    other (``--sigma`` over a file's ``sigma_relative``, ``--lambda`` over ``ess_target``).

    Example:
        >>> override({"sigma_relative": 0.23, "ess_target": 0.3}, {"sigma": 1.0})
        {'ess_target': 0.3, 'sigma': 1.0}
    """
    given = {key for key, value in changes.items() if value is not None}
    pairs = [*_EITHER, *((b, a) for a, b in _EITHER)]
    dropped = {key for a, b in pairs if a & given for key in b}
    return {**{k: v for k, v in spec.items() if k not in dropped - given}, **changes}


def with_defaults(spec: Mapping[str, Any]) -> dict[str, Any]:
    """``spec`` over `controller_defaults` of its ``name`` (default ``"aisp"``); a receding-horizon
    spec's ``inner`` controller gets its own defaults."""
    name = spec.get("name", "aisp")
    defaults = controller_defaults(name)
    out = {"name": name, **override(defaults, spec)}  # a spec's sigma replaces the default sigma_relative
    if name == "receding_horizon":
        inner = out.get("inner", {"name": "aisp"})
        out["inner"] = with_defaults(inner if isinstance(inner, Mapping) else {"name": inner})
    return out


def build_controller(spec: Mapping[str, Any]) -> Controller | SequentialController:
    """A controller from ``{"name": "aisp", **settings}``; unknown names list the valid ones.

    ``{"name": "receding_horizon", "inner": {"name": "aisp", ...}, "horizon": 16, "commit": 8}``
    wraps the inner controller in model predictive control.
    """
    options = dict(spec)
    name = options.pop("name", "aisp")
    if name not in CONTROLLERS:
        raise ValueError(f"unknown controller {name!r}; valid names: {', '.join(sorted(CONTROLLERS))}")
    if name == "receding_horizon":
        inner = build_controller(options.pop("inner", {"name": "aisp"}))
        if not isinstance(inner, Controller):
            raise ValueError("the inner controller of receding_horizon must plan open-loop (aisp, cem, ...)")
        return RecedingHorizon(inner, options)
    return CONTROLLERS[name](options)


def check_device(device: str) -> str:
    """Refuse a device this machine does not have, saying what to use instead (each of a list
    ``cuda:0,cuda:1``, over which the model is spread)."""
    for one in parse_devices(device):
        kind = torch.device(one).type
        if kind == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but torch sees no CUDA GPU here; use --device cpu")
        if kind == "mps" and not torch.backends.mps.is_available():
            raise ValueError(f"device {device!r} requested but MPS is not available here; use --device cpu")
    return device


class ExperimentConfig(BaseModel):
    """Everything one alignment run needs (see the module docstring for a YAML example)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = DEFAULT_MODEL
    device: str = "cpu"
    dtype: str | None = None
    lm: LMConfig = Field(default_factory=lambda: LMConfig(**DEFAULT_LM))
    reward: str | dict[str, Any] | list[str | dict[str, Any]] = "vader"
    controller: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_CONTROLLER))
    controllers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    eval_reward: list[str | dict[str, Any] | list[str | dict[str, Any]]] = Field(default_factory=list)
    seed: int = 0
    prompts: str = "bundled"  # for `mpc-llm compare`: a prompt file, bundled, sharegpt:dev, ...

    @field_validator("lm", mode="before")
    @classmethod
    def _lm_defaults(cls, value: Any) -> Any:
        """Settings not given take the project's defaults (`DEFAULT_LM`), not `LMConfig`'s."""
        return {**DEFAULT_LM, **value} if isinstance(value, Mapping) else value

    @field_validator("controller", mode="before")
    @classmethod
    def _controller_defaults(cls, value: Any) -> Any:
        return with_defaults(value) if isinstance(value, Mapping) else value

    @field_validator("controllers", mode="before")
    @classmethod
    def _controllers_defaults(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        return {
            label: with_defaults(spec) if isinstance(spec, Mapping) else spec for label, spec in value.items()
        }

    @field_validator("controller")
    @classmethod
    def _valid_controller(cls, value: dict[str, Any]) -> dict[str, Any]:
        build_controller(value)  # raises with the field's pydantic message
        return value

    @field_validator("controllers")
    @classmethod
    def _valid_controllers(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        for spec in value.values():
            build_controller(spec)
        return value

    @field_validator("model")
    @classmethod
    def _readable_gguf(cls, value: str) -> str:
        """A ``.gguf`` file that is missing, empty or truncated is refused before anything loads."""
        if Path(value).suffix == ".gguf":
            check_gguf_file(value)
        return value

    @field_validator("reward")
    @classmethod
    def _valid_reward(cls, value: Any) -> Any:
        check_reward_spec(value)  # names and settings, before anything loads
        return value

    @field_validator("eval_reward", mode="before")
    @classmethod
    def _eval_reward_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str | Mapping) else value

    @field_validator("eval_reward")
    @classmethod
    def _valid_eval_rewards(cls, value: list[Any]) -> list[Any]:
        for spec in value:
            try:
                check_reward_spec(spec)
            except ValueError as err:
                raise ValueError(f"eval reward {spec!r}: {err}") from None
        return value

    @model_validator(mode="after")
    def _controls_fit_the_response(self) -> Self:
        """``tau <= max_new_tokens`` and ``num_knots <= tau`` for every open-loop controller, checked
        here rather than after the model has loaded."""
        horizon = self.lm.max_new_tokens
        specs = {"controller": self.controller}
        specs.update({f"controllers.{label}": spec for label, spec in self.controllers.items()})
        for where, spec in specs.items():
            controller = build_controller(spec)
            if not isinstance(controller, Controller):  # sequential: their own check() covers them
                continue
            tau, knots = controller.config.tau, controller.config.num_knots
            if tau is not None and tau > horizon:
                raise ValueError(
                    f"{where}: tau={tau} exceeds lm.max_new_tokens={horizon} (a response has at most "
                    f"{horizon} tokens to control); lower tau or raise max_new_tokens"
                )
            if knots is not None and knots > (tau or horizon):
                bound = f"tau={tau}" if tau is not None else f"tau (unset: all lm.max_new_tokens={horizon})"
                raise ValueError(
                    f"{where}: num_knots={knots} exceeds {bound}: each knot holds at least one controlled "
                    "token; lower num_knots or raise tau / max_new_tokens"
                )
        return self

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        try:
            parse_devices(value) if "," in value else torch.device(value)
        except RuntimeError as err:
            raise ValueError(f"unknown device {value!r} (use cpu, cuda, cuda:1, mps, cuda:0,cuda:1)") from err
        return value

    @classmethod
    def from_file(cls, path: str | Path, *, trust_remote_code: bool = False, **overrides: Any) -> Self:
        """Load a YAML / JSON file; ``overrides`` (nested mappings merge) win over the file.

        A config file is code (a ``callable`` reward imports and runs the function it names), but a
        reward model's own code (``trust_remote_code: true``) runs only when the caller allows it:
        pass ``trust_remote_code=True`` (the CLI: ``--trust-remote-code``).

        Raises:
            ValueError: the file asks for ``trust_remote_code`` and the caller did not allow it.
        """
        data = read_mapping(path)
        if not trust_remote_code:
            refuse_remote_code(data.get("reward"), path, "pass from_file(..., trust_remote_code=True)")
        return cls.model_validate(merge(data, overrides))


def merge(base: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive dict merge: mappings merge, other values in ``overrides`` replace."""
    out = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


@dataclass(frozen=True)
class AlignOutcome:
    """The steered response beside best-of-N at the same budget (scored responses), each with its
    reward, held-out rewards and base log-likelihood: what the method buys, or that it buys nothing.

    Attributes:
        prompt: the prompt.
        response / reward: the best response the controller found and its reward.
        baseline_response / baseline_reward: best-of-N's, with ``N`` the samples the controller scored.
        held_out / baseline_held_out: label -> held-out reward (`ExperimentConfig.eval_reward`; NaN
            where it could not score).
        base_logp / baseline_base_logp: mean per-token log-likelihood under the base model at
            temperature 1 (`mpc_llm.core.Dynamics.closeness_to_base`); ``kl_estimate``: the steered
            response's steering log-ratio (an estimate; None for sequential controllers).
        result / baseline_result: the two `OptimizeResult`s (history, budget, state).
    """

    prompt: Prompt
    response: str
    reward: float
    baseline_response: str
    baseline_reward: float
    result: OptimizeResult
    baseline_result: OptimizeResult | None = None
    held_out: dict[str, float] = field(default_factory=dict)
    baseline_held_out: dict[str, float] = field(default_factory=dict)
    base_logp: float | None = None
    baseline_base_logp: float | None = None
    kl_estimate: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the fields the CLI's ``--json`` prints)."""
        budget = self.result.budget
        return {
            "prompt": self.prompt,
            "response": self.response,
            "reward": self.reward,
            "held_out": self.held_out,
            "base_logp_mean": self.base_logp,
            "kl_estimate": self.kl_estimate,
            "baseline": f"best_of_n ({budget.samples} samples)",
            "baseline_response": self.baseline_response,
            "baseline_reward": self.baseline_reward,
            "baseline_held_out": self.baseline_held_out,
            "baseline_base_logp_mean": self.baseline_base_logp,
            "budget": {
                "samples": budget.samples,
                "iterations": budget.iterations,
                "tokens": budget.tokens,
                "seconds": round(budget.seconds, 3),
            },
            "history": [
                {
                    "iteration": r.iteration,
                    "best_cost": float(r.best_cost[0]),
                    "best_reward": float(r.best_metrics["reward"][0]),
                    "mean_reward": float(
                        r.metrics["reward"][0][torch.isfinite(r.metrics["reward"][0])].mean()
                    ),
                }
                for r in self.result.history
            ],
        }


class Experiment:
    """A loaded model, reward and controller, ready to align prompts.

    Example:
        >>> exp = Experiment(ExperimentConfig())                           # doctest: +SKIP
        >>> outcome = exp.align("Describe your Monday morning.")           # doctest: +SKIP
        >>> outcome.reward, outcome.baseline_reward                        # doctest: +SKIP
    """

    def __init__(self, config: ExperimentConfig) -> None:
        self.config = config
        check_device(config.device)
        self.controller = build_controller(config.controller)
        if not isinstance(self.controller, Controller):  # bad settings fail before any model loads
            self.controller.check(config.lm.max_new_tokens, reward_class_of(config.reward))
        self.reward: Reward = reward_from_spec(config.reward)
        #: held-out rewards, label -> reward: scored on returned responses, never optimised
        self.eval_rewards: dict[str, Reward] = load_eval_rewards(config.eval_reward)
        self.lm = LMDynamics(config.model, device=config.device, dtype=config.dtype, config=config.lm)

    def dynamics(self, prompts: Sequence[Prompt]) -> LMDynamics:
        """The model bound to ``prompts`` (shares the loaded weights)."""
        return self.lm.with_prompts(list(prompts))

    def align(
        self, prompt: Prompt, callback: Callable[[IterationRecord], None] | None = None
    ) -> AlignOutcome:
        """Steer one response to ``prompt``; then run best-of-N on as many scored samples (same seed)."""
        if isinstance(prompt, str) and not prompt.strip():
            raise ValueError("the prompt is empty; give the text to respond to")
        system = self.dynamics([prompt])
        cost = self.reward.as_cost()
        result = self.controller.optimize(system, cost, seed=self.config.seed, callback=callback)
        if isinstance(self.controller, BestOfN):
            baseline = result
        else:
            samples = result.budget.samples
            baseline = BestOfN(num_samples=min(samples, self.controller.config.num_samples)
                               if isinstance(self.controller, Controller) else samples).optimize(
                system, cost, seed=self.config.seed, max_samples=samples)  # fmt: skip
        texts = [r.best_rollout.texts[0][0] for r in (result, baseline)]  # type: ignore[attr-defined]
        held = {k: reward.score([prompt, prompt], texts).tolist() for k, reward in self.eval_rewards.items()}
        steered = system.closeness_to_base(
            result.best_rollout,  # type: ignore[arg-type]
            result.best_rollout.controls if isinstance(self.controller, Controller) else None,
        )
        plain = system.closeness_to_base(baseline.best_rollout)  # type: ignore[arg-type]
        return AlignOutcome(
            prompt=prompt,
            response=texts[0],
            reward=float(result.best_metrics["reward"][0]),
            baseline_response=texts[1],
            baseline_reward=float(baseline.best_metrics["reward"][0]),
            result=result,
            baseline_result=baseline,
            held_out={k: v[0] for k, v in held.items()},
            baseline_held_out={k: v[1] for k, v in held.items()},
            base_logp=float(steered["base_logp_mean"][0, 0]),
            baseline_base_logp=float(plain["base_logp_mean"][0, 0]),
            kl_estimate=float(steered["kl_estimate"][0, 0]) if "kl_estimate" in steered else None,
        )
