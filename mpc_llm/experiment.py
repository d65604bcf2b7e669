"""One validated description of an alignment run (model, decoding, reward, controller, seed).

The same pydantic model backs the Python API, YAML / JSON config files and the CLI flags, so a
config file and a command line mean the same thing.

Example (YAML)::

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
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)
from typing_extensions import Self

from mpc_llm.controllers import (
    BASELINE,
    DEFAULT_NAME,
    Planner,
    SettingError,
    baseline,
    build,
    is_baseline,
    with_preset,
)
from mpc_llm.core import IterationRecord, OptimizeResult, read_mapping
from mpc_llm.dynamics import LMDynamics
from mpc_llm.evaluation.compare.heldout import load_eval_rewards
from mpc_llm.lm import DEFAULT_MODEL, LMConfig, Prompt
from mpc_llm.lm.facts import ModelFacts, model_facts
from mpc_llm.lm.gguf import check_gguf_file
from mpc_llm.lm.loading import parse_devices
from mpc_llm.lm.precision import check_dtype, resolve_dtype
from mpc_llm.rewards import Reward, check_reward_spec, refuse_remote_code, reward_class_of, reward_from_spec
from mpc_llm.rewards.registry import spec_items

#: The controller an experiment runs when none is given: the registry's default (AISP) with its
#: project preset (scale-free, chosen with `benchmarks/sweep_aisp.py` on the embedded default; README).
DEFAULT_CONTROLLER: dict[str, Any] = with_preset(DEFAULT_NAME)
DEFAULT_LM: dict[str, Any] = {"max_new_tokens": 48, "temperature": 0.7}


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


@dataclass(frozen=True)
class RunFacts:
    """What a controller's `Planner.check_system` is shown before the weights load: the model's facts
    (`ModelFacts`: its attributes are read through), the run's reward spec and prompt source, which
    a learned value's card is checked against (`mpc_llm.values.ValueRef.check_for`), and the
    decoding options."""

    facts: ModelFacts
    reward: Any = None
    prompt_source: str | None = None
    #: the decoding options (`LMConfig`), as `LMDynamics.config`: what a controller needs of the
    #: decode (log-probs for a steered proposal's weights, states for a value of them)
    config: Any = None

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.facts, name)


def preflight(
    config: ExperimentConfig,
    prompts: Sequence[Prompt] = (),
    planners: Mapping[str, Planner] | None = None,
    prompt_source: str | None = None,
) -> ModelFacts | None:
    """The checks that need the model's config and tokenizer but not its weights, run before it
    loads: the device, each controller against what they say of the model and of the run
    (`Planner.check_system`: a sigma against the dtype, ARGS' candidates against the vocabulary, a
    learned value's ``d``, reward and training prompts against the run's), each of ``prompts``
    against the context length.

    Args:
        config: the run.
        prompts: the prompts it will answer.
        planners: the controllers it runs, by the name messages give them (default: ``config``'s,
            `ExperimentConfig.planners_by_path`).
        prompt_source: where ``prompts`` come from (``compare --prompts``), if a named source.

    Returns:
        The facts read (None when they cannot be read without loading the model: its load checks).

    Raises:
        ValueError: naming the setting or prompt and what to change.
    """
    check_device(config.device)
    dtype = check_dtype(config.dtype, config.device)
    planners = config.planners_by_path if planners is None else planners
    facts = model_facts(config.model, dtype)
    known = ModelFacts.of(dtype) if facts is None else facts
    check_systems(planners, RunFacts(known, config.reward, prompt_source, config.lm))
    if facts is not None and prompts:
        facts.check_prompts(prompts, config.lm.max_new_tokens, config.lm.chat_template)
    return facts


def check_systems(planners: Mapping[str, Planner], system: Any) -> None:
    """Every controller's `Planner.check_system` against ``system`` (facts or dynamics), the error
    naming the controller's field path (``controllers.aisp.sigma=...``, ``controller: ...``)."""
    for where, planner in planners.items():
        try:
            planner.check_system(system)
        except SettingError as err:
            raise ValueError(f"{where}.{err}") from None
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None


def _built(field: str, spec: Any) -> Planner:
    """``build(spec)``, its errors located at ``field`` (as pydantic locates a field's own)."""
    try:
        return build(spec)
    except ValidationError as err:
        details = [{**e, "loc": (field, *e["loc"])} for e in err.errors()]
        raise ValidationError.from_exception_data("ExperimentConfig", details) from None  # type: ignore[arg-type]
    except ValueError as err:
        line = {"type": "value_error", "loc": (field,), "input": spec, "ctx": {"error": err}}
        raise ValidationError.from_exception_data("ExperimentConfig", [line]) from None  # type: ignore[list-item]


def _terms(spec: Any) -> list[tuple[str, dict[str, Any]]]:
    """A reward spec's terms, each ``(name, settings)`` without its weight (for comparisons)."""
    try:
        return [(name, {k: v for k, v in o.items() if k != "weight"}) for name, o in spec_items(spec)]
    except ValueError:
        return []


class ExperimentConfig(BaseModel):
    """Everything one alignment run needs (see the module docstring for a YAML example)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: str = DEFAULT_MODEL
    device: str = "cpu"
    dtype: str | None = "auto"  # bfloat16 where the device computes it natively, else float32
    lm: LMConfig = Field(default_factory=lambda: LMConfig(**DEFAULT_LM))
    reward: str | dict[str, Any] | list[str | dict[str, Any]] = "vader"
    controller: dict[str, Any] = Field(default_factory=lambda: dict(DEFAULT_CONTROLLER))
    controllers: dict[str, dict[str, Any]] = Field(default_factory=dict)
    eval_reward: list[str | dict[str, Any] | list[str | dict[str, Any]]] = Field(default_factory=list)
    seed: int = 0
    prompts: str = "bundled"  # for `mpc-llm compare`: a prompt file, bundled, sharegpt:dev, ...
    #: the controllers, built once when the config is validated, by field path
    _planners: dict[str, Planner] = PrivateAttr(default_factory=dict)

    @property
    def planner(self) -> Planner:
        """The controller ``controller`` specifies, built when the config was validated."""
        return self._planners["controller"]

    @property
    def planners(self) -> dict[str, Planner]:
        """The labelled controllers of ``controllers`` (for ``compare``), built when the config was
        validated; label -> controller."""
        return {label: self._planners[f"controllers.{label}"] for label in self.controllers}

    @property
    def planners_by_path(self) -> dict[str, Planner]:
        """Every controller by its field path (``controller``, ``controllers.LABEL``), as messages
        name them."""
        return dict(self._planners)

    @field_validator("lm", mode="before")
    @classmethod
    def _lm_defaults(cls, value: Any) -> Any:
        """Settings not given take the project's defaults (`DEFAULT_LM`), not `LMConfig`'s."""
        return {**DEFAULT_LM, **value} if isinstance(value, Mapping) else value

    @field_validator("controller", mode="before")
    @classmethod
    def _controller_preset(cls, value: Any) -> Any:
        return with_preset(value) if isinstance(value, Mapping) else value

    @field_validator("controllers", mode="before")
    @classmethod
    def _controllers_preset(cls, value: Any) -> Any:
        if not isinstance(value, Mapping):
            return value
        return {
            label: with_preset(spec) if isinstance(spec, Mapping) else spec for label, spec in value.items()
        }

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
    def _build_controllers(self) -> Self:
        """Build every controller once, here (a bad name or setting fails with the field's pydantic
        message); the objects are what runs (`planner`, `planners`), the specs what a run records."""
        planners = {"controller": _built("controller", self.controller)}
        for label, spec in self.controllers.items():
            planners[f"controllers.{label}"] = _built("controllers", spec)
        self._planners = planners
        return self

    @model_validator(mode="after")
    def _held_out_is_not_optimised(self) -> Self:
        """A held-out reward the controllers optimise (the reward itself or one of its terms) holds
        nothing out: refused, naming both."""
        optimised = _terms(self.reward)
        for spec in self.eval_reward:
            terms = _terms(spec)
            if terms and all(t in optimised for t in terms):
                raise ValueError(
                    f"eval_reward {spec!r} is the reward being optimised (reward {self.reward!r}), so it "
                    "holds nothing out; drop it from --eval-reward or choose one the controllers never see"
                )
        return self

    @model_validator(mode="after")
    def _controllers_fit_the_run(self) -> Self:
        """Every controller's own checks (`Planner.check`: for open-loop ones ``tau <=
        max_new_tokens`` and ``num_knots <= tau``; for sequential ones their horizon and whether the
        reward can score partial text), here rather than after the model has loaded."""
        traits = reward_class_of(self.reward)
        for where, planner in self._planners.items():
            try:
                planner.check(self.lm.max_new_tokens, traits, episode_name="lm.max_new_tokens")
            except ValueError as err:
                raise ValueError(f"{where}: {err}") from None
        return self

    @field_validator("dtype")
    @classmethod
    def _known_dtype(cls, value: str | None) -> str | None:
        resolve_dtype(value)  # an unknown name says which are accepted
        return value

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
        result / baseline_result: the two `OptimizeResult` values (history, budget, state).
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
            "baseline": f"{BASELINE} ({budget.samples} samples)",
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
            "history": [_history_row(r) for r in self.result.history],
        }


def _history_row(record: IterationRecord) -> dict[str, Any]:
    """One iteration of ``align --json``'s history: the best cost, and the best and mean reward where
    the iteration scored rewards (None where it did not: value-guided blockwise decoding scores its
    blocks by a learned value, not by the reward)."""
    best = record.best_metrics.get("reward")
    rewards = record.metrics.get("reward")
    finite = None if rewards is None else rewards[0][torch.isfinite(rewards[0])]
    return {
        "iteration": record.iteration,
        "best_cost": float(record.best_cost[0]),
        "best_reward": None if best is None else float(best[0]),
        "mean_reward": None if finite is None or not len(finite) else float(finite.mean()),
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
        check_systems(config.planners_by_path, ModelFacts.of(check_dtype(config.dtype, config.device)))
        self.controller = config.planner  # built, and checked, when the config was validated
        self.reward: Reward = reward_from_spec(config.reward)
        #: held-out rewards, label -> reward: scored on returned responses, never optimised
        self.eval_rewards: dict[str, Reward] = load_eval_rewards(config.eval_reward)
        self.lm = LMDynamics(config.model, device=config.device, dtype=config.dtype, config=config.lm)
        # what the preflight read from the config, now from the model itself (a Python caller may
        # have skipped the preflight)
        loaded = ModelFacts.of(self.lm.model_dtype, self.lm.control_dim, self.lm.engine.vocab_size)
        check_systems(config.planners_by_path, loaded)

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
        if is_baseline(self.controller):
            base_run = result
        else:  # as many scored samples, drawn in batches of the controller's own size when it has one
            samples = result.budget.samples
            per_round = self.controller.samples_per_round
            batch = samples if per_round is None else min(samples, per_round)
            base_run = baseline(batch).optimize(system, cost, seed=self.config.seed, max_samples=samples)
        texts = [r.best_rollout.texts[0][0] for r in (result, base_run)]  # type: ignore[attr-defined]
        held = {k: reward.score([prompt, prompt], texts).tolist() for k, reward in self.eval_rewards.items()}
        # the steering log-ratio needs the controls that made the whole response: an open-loop
        # controller's answer has them; a sequential one's is made of several plans
        controls = result.best_rollout.controls if self.controller.open_loop else None
        steered = system.closeness_to_base(result.best_rollout, controls)  # type: ignore[arg-type]
        plain = system.closeness_to_base(base_run.best_rollout)  # type: ignore[arg-type]
        return AlignOutcome(
            prompt=prompt,
            response=texts[0],
            reward=float(result.best_metrics["reward"][0]),
            baseline_response=texts[1],
            baseline_reward=float(base_run.best_metrics["reward"][0]),
            result=result,
            baseline_result=base_run,
            held_out={k: v[0] for k, v in held.items()},
            baseline_held_out={k: v[1] for k, v in held.items()},
            base_logp=float(steered["base_logp_mean"][0, 0]),
            baseline_base_logp=float(plain["base_logp_mean"][0, 0]),
            kl_estimate=float(steered["kl_estimate"][0, 0]) if "kl_estimate" in steered else None,
        )
