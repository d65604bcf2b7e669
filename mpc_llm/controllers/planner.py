"""The one interface every controller offers: what comparisons, experiments and the CLI call.

Open-loop controllers (`mpc_llm.controllers.Controller`: AISP, CEM, random shooting, best-of-N)
and sequential ones (`mpc_llm.controllers.SequentialController`: receding horizon, blockwise
best-of-N, speculative rejection, ARGS) are both `Planner`s. A caller never asks which kind it
holds: it calls `check`, `check_budget` and `check_system` before any model work, `optimize` to
run, `spec` to record what ran, and reads what the planner declares about itself: whether one run
serves every budget (``anytime``), how its answer at a budget is read (``answer``), the rounds a
run makes (``iterations``, ``samples_per_round``) and whether its answer is one open-loop control
sequence (``open_loop``). Which controller is the baseline is the registry's to say
(`mpc_llm.controllers.registry.BASELINE`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, Generic, Literal, TypeVar

from typing_extensions import Self

from mpc_llm.controllers.state import PlannerState, Settings
from mpc_llm.core import BudgetUnit, CostFunction, Dynamics, IterationRecord, OptimizeResult, validated

C = TypeVar("C", bound=Settings)


class Planner(ABC, Generic[C]):
    """A controller: settings (``config``, an instance of ``config_class``) and `optimize`.

    Attributes:
        config_class: the pydantic model of its settings (class-level).
        anytime: whether the best of a run's first ``k`` samples is its answer at budget ``k``, so
            that one run serves every budget of a comparison (open-loop controllers); otherwise a
            comparison runs it once per budget (sequential controllers).
        answer: how an ``anytime`` run's answer at budget ``k`` is read: ``"best"``, the lowest cost
            among its first ``k`` samples, or ``"draw"``, a weighted draw among them (samplers,
            `mpc_llm.controllers.Controller.choose`).
        open_loop: whether its answer is one rollout of one control sequence, so that the controls
            that made the whole response are the answer's own (a sequential controller's answer is
            made of several plans).
        preset: the project's settings for it when it is built by name from a config file or the
            command line (`mpc_llm.controllers.registry.with_preset`); settings given there win.
        wraps: for a wrapper (e.g. receding horizon), the kind of controller its ``inner`` setting
            must build; None for controllers that wrap nothing.
        config: its validated settings.
    """

    config_class: ClassVar[type[Settings]] = Settings
    anytime: ClassVar[bool] = False
    answer: ClassVar[Literal["best", "draw"]] = "best"
    open_loop: ClassVar[bool] = False
    preset: ClassVar[Mapping[str, Any]] = {}
    wraps: ClassVar[type[Planner] | None] = None

    def __init__(self, config: C | Mapping[str, object] | None = None, **overrides: object) -> None:
        self.config: C = validated(self.config_class, config, overrides)  # type: ignore[assignment]

    def spec(self) -> dict[str, Any]:
        """What identifies this controller in a comparison's settings: its class and config."""
        return {"class": type(self).__name__, "config": self.config.model_dump(mode="json")}

    @property
    def iterations(self) -> int | None:
        """The rounds of sampling a run makes when no budget bounds it (a progress bar's length);
        None: not known before the run (sequential controllers)."""
        return None

    @property
    def samples_per_round(self) -> int | None:
        """The samples one round scores together (None: no fixed round), so that a baseline given
        the same budget can draw in batches of the same size."""
        return None

    def with_config(self, **changes: object) -> Self:
        """A controller of the same class with some settings changed (validated)."""
        return type(self)(self.config, **changes)

    def check(self, episode: int, cost: Any = None, *, episode_name: str = "the episode length") -> None:
        """Refuse settings that cannot run an ``episode``-step episode with ``cost`` (a cost function
        or any object with ``accepts_partial``, e.g. a reward's traits), before any model work.

        Args:
            episode: steps in an episode (for a language model, ``max_new_tokens``).
            cost: the objective or its traits; None skips the checks that need it.
            episode_name: how messages name the episode length (e.g. ``"lm.max_new_tokens"``).

        Raises:
            ValueError: what is wrong and what to change.
        """

    def check_budget(self, episode: int | None, budget: int, unit: BudgetUnit = "samples") -> None:
        """Refuse a budget per problem (in ``unit``) that this controller cannot keep on an
        ``episode``-step episode, before any model work (``episode`` None: not known yet, so the
        checks that need it wait for the run).

        Raises:
            ValueError: the budget and the least this controller needs.
        """

    def check_system(self, system: Any) -> None:
        """Refuse settings the system cannot run, before any model work: ``system`` is what is known
        of it (for a language model `mpc_llm.lm.facts.ModelFacts`, read from its config and
        tokenizer before the weights load, then from the loaded model; any object: a controller
        reads the attributes it needs, e.g. ``vocab_size`` or ``largest_sigma``, and skips a check
        whose attribute is missing or None).

        Raises:
            SettingError: a setting's value the system cannot carry (the message starts with the
                setting's name, so that a caller can put its own path in front).
            ValueError: the setting, the system's limit and what to change.
        """

    def value_params(self) -> int | None:
        """Parameters of the learned value the controller evaluates (its records convert the value's
        evaluations and gradient steps into model-token equivalents by it); None: no value."""
        return None

    @abstractmethod
    def optimize(
        self,
        dynamics: Dynamics,
        cost: CostFunction,
        *,
        seed: int | Sequence[int] | None = None,
        max_samples: int | None = None,
        max_tokens: int | None = None,
        state: PlannerState | None = None,
        callback: Callable[[IterationRecord], None] | None = None,
        keep_rollouts: bool = False,
    ) -> OptimizeResult:
        """Run on ``dynamics``' ``B`` problems and return each one's answer (``best_rollout``), the
        history and the budget spent (``budget.samples_per_problem``, ``tokens_per_problem``)."""
