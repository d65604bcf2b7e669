"""What a controller is set up with (its config) and what it carries between iterations (its state).

Configs are frozen pydantic models: `Settings` (the base of every controller's settings),
`ControllerConfig` (what the sample -> rollout -> cost -> update loop reads) and `GaussianConfig`
(a Gaussian proposal, ``sigma`` or ``sigma_relative``). A config may name a quantity two ways
(``alternatives``): one validator refuses both, and `override` lets one replace the other.

States are frozen dataclasses: `PlannerState` (iteration, random streams, diagnostics) is what
every controller carries; `GaussianState` adds the Gaussian proposal (mean ``U`` and ``sigma``).
The best sample so far is the loop's business, not the state's (`mpc_llm.controllers.base`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel, ConfigDict, Field, model_validator
from torch import Tensor
from typing_extensions import Self

from mpc_llm.core import ZeroOrderHold, read_mapping

#: Two ways of giving one quantity: ``(names of the first, names of the second, default of the
#: first, what the first is, what the second is)``; names list a field and its aliases.
Alternative = tuple[tuple[str, ...], tuple[str, ...], float, str, str]


class SettingError(ValueError):
    """A setting's value refused: the message starts with the setting's path (``sigma=...``,
    ``inner.sigma=...``), so that a caller puts the controller's own path in front with a dot
    (``controllers.aisp.sigma=...``)."""


class Settings(BaseModel):
    """Base of every controller's settings: frozen, unknown keys refused, loadable from a file.

    Attributes:
        alternatives: pairs of settings that give the same quantity two ways (class-level); exactly
            one of each pair may be given, and neither gives the first its default.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, validate_by_name=True)
    alternatives: ClassVar[tuple[Alternative, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _one_of_each_alternative(cls, data: object) -> object:
        for first, second, default, what, other in cls.alternatives:
            data = one_of(data, first, second, default, what, other)
        return data

    @classmethod
    def from_file(cls, path: str | Path) -> Self:
        """Load and validate settings from a YAML or JSON file (e.g. ``{sigma: 0.5, lambda: 0.1}``)."""
        return cls.model_validate(read_mapping(path))

    @classmethod
    def field_names(cls) -> set[str]:
        """The settings this config accepts, by name and alias."""
        return {key for name, info in cls.model_fields.items() for key in (name, info.alias or name)}


class ControllerConfig(Settings):
    """Settings of the sample -> rollout -> cost -> update loop (`Controller`).

    Attributes:
        num_samples: samples per iteration and problem.
        num_iterations: iterations when `Controller.optimize` is given no budget.
        tau: controlled steps (default: the dynamics' whole horizon); later steps get no control.
            For a language model, the first ``tau`` response tokens.
        num_knots: knots ``K`` held over equal chunks of ``tau`` (default: one per step).
    """

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

    alternatives: ClassVar[tuple[Alternative, ...]] = (
        (("sigma",), ("sigma_relative",), 1.0, "sigma (absolute control units)",
         "sigma_relative (a fraction of the model's pre-logit RMS)"),
    )  # fmt: skip

    sigma: float | None = Field(None, ge=0.0, allow_inf_nan=False)
    sigma_relative: float | None = Field(None, gt=0.0, allow_inf_nan=False)


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


def override(
    spec: Mapping[str, Any], changes: Mapping[str, Any], config_class: type[Settings] | None = None
) -> dict[str, Any]:
    """``spec`` with ``changes`` over it; a change to one of two ways of giving a quantity (the
    ``alternatives`` of ``config_class``) drops the other (``--sigma`` over a file's
    ``sigma_relative``, ``--lambda`` over ``ess_target``).

    Example:
        >>> from mpc_llm.controllers import AISPConfig
        >>> override({"sigma_relative": 0.23, "ess_target": 0.3}, {"sigma": 1.0}, AISPConfig)
        {'ess_target': 0.3, 'sigma': 1.0}
    """
    given = {key for key, value in changes.items() if value is not None}
    pairs = [] if config_class is None else [(set(a), set(b)) for a, b, *_ in config_class.alternatives]
    dropped = {key for a, b in [*pairs, *((b, a) for a, b in pairs)] if a & given for key in b}
    return {**{k: v for k, v in spec.items() if k not in dropped - given}, **changes}


@dataclass(frozen=True)
class PlannerState:
    """What every controller carries between iterations; `Controller.update` returns a new one.

    Attributes:
        iteration: iterations done.
        stats: diagnostics of the last update, each ``(B,)``, e.g. ``{"ess": ..., "lambda": ...}``.
        rng: each problem's random-generator state after the last draw (``torch.Generator.get_state``),
            so that a warm-started `Controller.optimize` continues the streams instead of replaying
            them, and a saved state resumes a run bit for bit. None before the first call.
    """

    iteration: int = 0
    stats: Mapping[str, Tensor] = field(default_factory=dict)
    rng: tuple[Tensor, ...] | None = None

    def replace(self, **changes: object) -> Self:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def select(self, index: Sequence[int]) -> Self:
        """The state of problems ``index`` only, in that order (repeats allowed: resampling), with no
        diagnostics. Subclasses select their per-problem tensors too."""
        rng = None if self.rng is None else tuple(self.rng[i] for i in index)
        return self.replace(rng=rng, stats={})

    def shift(self, hold: ZeroOrderHold, steps: int, fill: str, to: ZeroOrderHold) -> Self:
        """The state for a plan ``steps`` steps later (receding horizon). A state with no time
        structure carries over as it is; `GaussianState` moves its proposal."""
        return self


@dataclass(frozen=True, kw_only=True)
class GaussianState(PlannerState):
    """The state of a Gaussian controller: the proposal ``N(U, sigma^2 I)`` over the knots.

    Attributes:
        mean: ``(B, K, d)`` control mean ``U``.
        sigma: ``(B, K, d)`` standard deviation of the proposal.
        control_scale: ``(B,)`` the measured scale ``sigma_relative`` is a fraction of (a language
            model's pre-logit RMS per prompt), None when sigma was given in absolute units.
    """

    mean: Tensor
    sigma: Tensor
    control_scale: Tensor | None = None

    def select(self, index: Sequence[int]) -> Self:
        """The proposal of problems ``index`` only (repeats allowed), random streams kept."""
        idx = torch.as_tensor(list(index), dtype=torch.long)
        scale = self.control_scale
        return (
            super()
            .select(index)
            .replace(
                mean=self.mean[idx.to(self.mean.device)],
                sigma=self.sigma[idx.to(self.sigma.device)],
                control_scale=None if scale is None else scale[idx.to(scale.device)],
            )
        )

    def shift(self, hold: ZeroOrderHold, steps: int, fill: str, to: ZeroOrderHold) -> Self:
        """The proposal moved ``steps`` steps forward (receding horizon): the mean's tail filled by
        ``fill`` (``"zeros"`` or ``"last"``), sigma's by its last value, both on the knots of ``to``."""
        return self.replace(
            mean=hold.shift(self.mean, steps, fill, to=to), sigma=hold.shift(self.sigma, steps, "last", to=to)
        )


#: The name of `GaussianState` before controller states were split into a generic and a Gaussian part.
ControllerState = GaussianState
