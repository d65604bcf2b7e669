"""What a controller is set up with (`ControllerConfig`) and what it carries (`ControllerState`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor
from typing_extensions import Self

from mpc_llm.core import Rollout, read_mapping


class ControllerConfig(BaseModel):
    """Settings every controller has.

    Attributes:
        num_samples: samples per iteration and problem.
        num_iterations: iterations when `Controller.optimize` is given no budget.
        tau: controlled steps (default: the dynamics' whole horizon); later steps get no control.
            For a language model, the first ``tau`` response tokens.
        num_knots: knots ``K`` held over equal chunks of ``tau`` (default: one per step).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True)

    num_samples: int = Field(16, ge=1)
    num_iterations: int = Field(4, ge=1)
    tau: int | None = Field(None, ge=1)
    num_knots: int | None = Field(None, ge=1)

    @model_validator(mode="after")
    def _knots_fit_in_tau(self) -> Self:
        if self.tau is not None and self.num_knots is not None and self.num_knots > self.tau:
            raise ValueError(
                f"num_knots={self.num_knots} exceeds tau={self.tau}: each knot holds at least one controlled "
                "step; lower num_knots or raise tau"
            )
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        """Load and validate settings from a YAML or JSON file (e.g. ``{sigma: 0.5, lambda: 0.1}``)."""
        return cls.model_validate(read_mapping(path))

    def initial_sigma(self) -> float:
        """The proposal's standard deviation in the initial state (0: no perturbation)."""
        return 0.0


class GaussianConfig(ControllerConfig):
    """A controller that samples ``V = U + sigma * eps``, ``eps ~ N(0, I)``.

    Attributes:
        sigma: the proposal's standard deviation in absolute control units (for a language model,
            pre-logit units, whose scale differs between models by an order of magnitude).
        sigma_relative: instead of ``sigma``, a fraction of the dynamics' natural control scale
            (`mpc_llm.core.Dynamics.control_scale`: a language model's pre-logit RMS on each prompt,
            measured once when a run starts); the absolute sigma used is reported in the result
            (``OptimizeResult.settings["sigma"]``). Give one of the two (neither: ``sigma = 1``).
    """

    sigma: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    sigma_relative: float | None = Field(None, gt=0.0, allow_inf_nan=False)

    @model_validator(mode="before")
    @classmethod
    def _sigma_or_relative(cls, data: object) -> object:
        return one_of(data, ("sigma",), ("sigma_relative",), 1.0, "sigma (absolute control units)",
                      "sigma_relative (a fraction of the model's pre-logit RMS)")  # fmt: skip

    def initial_sigma(self) -> float:
        """The absolute sigma (``sigma_relative`` is resolved by `Controller.init_state`)."""
        return 0.0 if self.sigma is None else self.sigma


def one_of(
    data: object, first: tuple[str, ...], second: tuple[str, ...], default: float, what: str, other: str
) -> object:
    """Settings with exactly one of two alternatives given (keys ``first`` or ``second``, names and
    aliases; None counts as not given): both is an error; neither gives ``first`` its ``default``."""
    if not isinstance(data, Mapping):
        return data
    a = next((data[k] for k in first if data.get(k) is not None), None)
    b = next((data[k] for k in second if data.get(k) is not None), None)
    if a is not None and b is not None:
        raise ValueError(f"give either {what} or {other}, not both (got {first[0]}={a}, {second[0]}={b})")
    if a is None and b is None:
        return {**{k: v for k, v in data.items() if k not in first}, first[0]: default}
    return data


@dataclass(frozen=True)
class ControllerState:
    """Everything a controller carries between iterations; `update` returns a new one.

    Attributes:
        mean: ``(B, K, d)`` control mean ``U``.
        sigma: ``(B, K, d)`` standard deviation of the proposal.
        iteration: iterations done.
        best_cost: ``(B,)`` lowest cost seen (``+inf`` before the first sample).
        best_controls: ``(B, tau, d)`` controls of the best sample.
        best_rollout: the best sample per problem (``N = 1``), or None before the first.
        best_metrics: what the cost function scored for the best sample (e.g. ``"reward"``), ``(B,)``.
        stats: diagnostics of the last update, e.g. ``{"ess": (B,)}``.
        rng: each problem's random-generator state after the last draw (``torch.Generator.get_state``),
            so that a warm-started `Controller.optimize` continues the streams instead of replaying
            them, and a saved state resumes a run bit for bit. None before the first call.

    The best-so-far fields describe one call of `Controller.optimize`: a warm-started call starts
    them afresh (its problems may have moved on, e.g. in receding-horizon control).
    """

    mean: Tensor
    sigma: Tensor
    iteration: int = 0
    best_cost: Tensor | None = None
    best_controls: Tensor | None = None
    best_rollout: Rollout | None = None
    best_metrics: Mapping[str, Tensor] = field(default_factory=dict)
    stats: Mapping[str, Tensor] = field(default_factory=dict)
    rng: tuple[Tensor, ...] | None = None

    def replace(self, **changes: object) -> ControllerState:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def restart(self) -> ControllerState:
        """The proposal and random streams of this state, with no best sample yet (a warm start)."""
        return self.replace(best_cost=None, best_controls=None, best_rollout=None, best_metrics={})

    def select(self, index: Sequence[int]) -> ControllerState:
        """The state of problems ``index`` only (e.g. those whose episode goes on); no best sample."""
        idx = torch.as_tensor(list(index), dtype=torch.long)
        rng = None if self.rng is None else tuple(self.rng[i] for i in idx.tolist())
        mean, sigma = self.mean[idx.to(self.mean.device)], self.sigma[idx.to(self.sigma.device)]
        return ControllerState(mean=mean, sigma=sigma, iteration=self.iteration, rng=rng)
