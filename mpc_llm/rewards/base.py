"""The `Reward` interface, weighted sums of rewards, and `RewardCost` (a reward as a cost function).

A reward scores ``M`` (prompt, response) pairs, higher is better, in chunks of its own
``batch_size`` and on its own device, and returns a float32 CPU tensor of shape ``(M,)``.

Rewards form a vector space of their own: ``r1 + r2``, ``r1 - r2``, ``2.0 * r``, ``r / 2`` and ``-r``
are rewards (`RewardSum`). A reward is *not* a cost function: controllers minimise costs, so a reward
becomes one explicitly with ``reward.as_cost()`` (cost ``= -reward``) or ``RewardCost(reward, scale)``,
and that cost composes with the other cost functions (`ControlCost`, `KLCost`). Adding a reward to a
cost function, or handing a reward to a controller as its cost, raises a `TypeError` rather than
guessing the sign.

Invalid scores: a reward may return NaN for a sample (e.g. a user function that cannot score it). NaN
passes through `score` and `RewardCost` unchanged; the controller then gives that sample zero weight,
excludes it from the best, and warns (`mpc_llm.controllers.base.Controller`), and it raises if every
sample of a problem is invalid. Errors inside a reward are raised, never turned into numbers.

Example:
    >>> from mpc_llm.rewards import KeywordReward, LengthReward
    >>> polite = KeywordReward(["please", "thanks"])
    >>> short = LengthReward(unit="words", target=3)
    >>> reward = polite + 0.5 * short
    >>> reward.score(["hi"], ["thanks a lot"]).tolist()
    [0.5]
    >>> cost = reward.as_cost()      # a CostFunction on LMRollout: -reward, (B, N)
"""

from __future__ import annotations

import numbers
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
from torch import Tensor

from mpc_llm.core import CostFunction, Metrics, Rollout, WeightedTerms, check_weight
from mpc_llm.lm.prompts import Prompt, is_messages

__all__ = ["Reward", "RewardCost", "RewardError", "RewardSum"]


class RewardError(RuntimeError):
    """A reward failed on a given input; the message names the reward and the input's index."""


def _as_scores(value: object, expected: int, reward: Reward) -> Tensor:
    """Check that a chunk of scores is ``(expected,)`` numbers and return it as float32 on the CPU."""
    try:
        scores = torch.as_tensor(value.detach() if isinstance(value, Tensor) else value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise TypeError(f"reward {reward.name!r} returned {type(value).__name__}, not numbers") from exc
    if scores.is_complex():
        raise TypeError(f"reward {reward.name!r} returned complex scores ({scores.dtype}), not real numbers")
    if tuple(scores.shape) != (expected,):
        raise ValueError(
            f"reward {reward.name!r} returned scores of shape {tuple(scores.shape)} for {expected} "
            f"inputs; expected ({expected},): one score per (prompt, response)"
        )
    return scores.to(device="cpu", dtype=torch.float32)


_NOT_A_COST = (
    "{reward!r} is a reward (higher is better), not a cost function (lower is better); "
    "convert it explicitly with reward.as_cost() (cost = -reward) or RewardCost(reward, scale)"
)


# --------------------------------------------------------------------------- the interface
class Reward(ABC):
    """Scores (prompt, response) pairs; higher is better.

    Subclasses implement `score_batch` for one chunk of at most ``batch_size`` pairs; `score` does
    the input checks, chunking and output checks. A reward that batches its own forward passes
    (by length, sharing prefixes) sets `batches_itself`: `score` then hands it every pair at once.

    Args:
        batch_size: pairs per call to `score_batch` (None: all at once).
        device: where the reward's model runs (informational for rewards without one).
        name: a name for messages and reprs (default: the class name).
    """

    def __init__(
        self,
        *,
        batch_size: int | None = 32,
        device: str | torch.device | None = None,
        name: str | None = None,
    ) -> None:
        if batch_size is not None and (isinstance(batch_size, bool) or int(batch_size) < 1):
            raise ValueError(f"batch_size must be a positive integer or None, got {batch_size!r}")
        self.batch_size = None if batch_size is None else int(batch_size)
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.name = name or type(self).__name__

    #: Whether `score_batch` takes any number of pairs and batches its own work by ``batch_size``
    #: (model rewards that sort by length or share prompt prefixes); `score` then does not chunk.
    batches_itself: bool = False

    @abstractmethod
    def score_batch(self, prompts: list[Prompt], responses: list[str]) -> Tensor | Sequence[float]:
        """Score one chunk: ``m`` prompts and ``m`` responses -> ``(m,)`` scores."""

    def score(self, prompts: Sequence[Prompt] | Prompt, responses: Sequence[str] | str) -> Tensor:
        """Score ``M`` (prompt, response) pairs.

        Args:
            prompts: ``M`` prompts (strings or chat message lists), or one prompt for all responses.
            responses: ``M`` responses (or one string).

        Returns:
            ``(M,)`` float32 CPU tensor of rewards (NaN where the reward could not score a pair).

        Raises:
            ValueError: if the numbers of prompts and responses differ, or a chunk of scores has
                the wrong shape.
            RewardError: if the reward failed on an input (for user functions).
        """
        if isinstance(responses, str):
            responses = [responses]
        responses = list(responses)
        if not all(isinstance(r, str) for r in responses):
            bad = next(type(r).__name__ for r in responses if not isinstance(r, str))
            raise TypeError(f"responses must be strings, got a {bad}")
        if isinstance(prompts, str) or is_messages(prompts):
            prompts = [prompts] * len(responses)  # type: ignore[list-item]
        prompts = list(prompts)  # type: ignore[arg-type]
        if len(prompts) != len(responses):
            raise ValueError(f"got {len(prompts)} prompts but {len(responses)} responses; they must pair up")
        if not responses:
            return torch.empty(0, dtype=torch.float32)
        step = len(responses) if self.batches_itself else (self.batch_size or len(responses))
        chunks = []
        for i in range(0, len(responses), step):
            p, r = prompts[i : i + step], responses[i : i + step]
            chunks.append(_as_scores(self._score_chunk(p, r, i), len(r), self))
        return torch.cat(chunks)

    def _score_chunk(self, prompts: list[Prompt], responses: list[str], start: int) -> object:
        """Score the chunk that starts at input ``start`` (subclasses use ``start`` in messages)."""
        return self.score_batch(prompts, responses)

    #: Whether the reward can score unfinished responses (receding-horizon control that scores
    #: a plan's partial text). True for lexicon and rule rewards; False for reward models and
    #: judges trained on complete answers (set it on an instance to override).
    accepts_partial: bool = True

    def score_rollout(self, rollout: Rollout) -> Tensor:
        """Rewards of every response of an `LMRollout`: ``(B, N)`` float32 CPU.

        Identical responses to the same prompt are scored once (rewards are taken to be
        deterministic functions of the pair).
        """
        texts = getattr(rollout, "texts", None)
        prompts = getattr(rollout, "prompts", None)
        if texts is None or prompts is None:
            raise TypeError(
                f"reward {self.name!r} scores text: it needs an LMRollout (with texts and prompts), "
                f"got {type(rollout).__name__}"
            )
        B = len(texts)
        if len(prompts) != B:
            raise ValueError(f"the rollout has {len(prompts)} prompts but {B} rows of texts")
        N = len(texts[0]) if B else 0
        position: dict[tuple[int, str], int] = {}
        flat_prompts: list[Prompt] = []
        flat_responses: list[str] = []
        index: list[int] = []
        for b in range(B):
            if len(texts[b]) != N:
                raise ValueError(f"texts must be (B, N); row {b} has {len(texts[b])} responses, not {N}")
            for text in texts[b]:
                key = (b, text)
                if key not in position:
                    position[key] = len(flat_responses)
                    flat_prompts.append(prompts[b])
                    flat_responses.append(text)
                index.append(position[key])
        scores = self.score(flat_prompts, flat_responses)
        return scores[torch.tensor(index, dtype=torch.long)].view(B, N)

    def as_cost(self, scale: float = 1.0) -> RewardCost:
        """The cost function ``-scale * reward`` on `LMRollout` (``(B, N)``, lower is better)."""
        return RewardCost(self, scale)

    def __call__(self, *args: object, **kwargs: object) -> Tensor:
        """Not a cost function: raises a `TypeError` saying to use `as_cost` (or `score`)."""
        raise TypeError(
            _NOT_A_COST.format(reward=self) + "; to get the rewards use reward.score(prompts, responses) "
            "or reward.score_rollout(rollout)"
        )

    # ------------------------------------------------------------------- algebra
    def __add__(self, other: object) -> Reward:
        if isinstance(other, Reward):
            return RewardSum([(1.0, self), (1.0, other)])
        if isinstance(other, CostFunction):
            raise TypeError(_NOT_A_COST.format(reward=self) + " before adding it to a cost function")
        return NotImplemented

    def __radd__(self, other: object) -> Reward:
        if isinstance(other, numbers.Number) and other == 0:  # sum([r1, r2, ...]) starts from 0
            return self
        if isinstance(other, CostFunction):
            raise TypeError(_NOT_A_COST.format(reward=self) + " before adding it to a cost function")
        return NotImplemented

    def __sub__(self, other: object) -> Reward:
        if isinstance(other, Reward):
            return RewardSum([(1.0, self), (-1.0, other)])
        if isinstance(other, CostFunction):
            raise TypeError(_NOT_A_COST.format(reward=self) + " before combining it with a cost function")
        return NotImplemented

    def __rsub__(self, other: object) -> Reward:
        if isinstance(other, CostFunction):
            raise TypeError(_NOT_A_COST.format(reward=self) + " before combining it with a cost function")
        return NotImplemented

    def __mul__(self, weight: object) -> Reward:
        if isinstance(weight, (Reward, CostFunction)):
            return NotImplemented
        return RewardSum([(check_weight(weight), self)])

    __rmul__ = __mul__

    def __truediv__(self, divisor: object) -> Reward:
        d = check_weight(divisor)
        if d == 0:
            raise ZeroDivisionError("cannot divide a reward by zero")
        return RewardSum([(1.0 / d, self)])

    def __neg__(self) -> Reward:
        return RewardSum([(-1.0, self)])

    def __repr__(self) -> str:
        return self.name if self.name != type(self).__name__ else f"{type(self).__name__}()"


class RewardSum(WeightedTerms[Reward], Reward):
    """A weighted sum ``sum_k w_k r_k`` of rewards (nested sums are flattened).

    Each term scores the pairs with its own batch size and device; the sum is taken in float64.

    Args:
        terms: ``(weight, reward)`` pairs.
    """

    def __init__(self, terms: Sequence[tuple[float, Reward]], name: str | None = None) -> None:
        WeightedTerms.__init__(self, terms, Reward)
        Reward.__init__(self, batch_size=None, name=name)

    @property  # type: ignore[override]
    def accepts_partial(self) -> bool:
        return all(term.accepts_partial for _, term in self.terms)

    def score_batch(self, prompts: list[Prompt], responses: list[str]) -> Tensor:
        total = self.weighted_sum(lambda term: term.score(prompts, responses).to(torch.float64))
        return total.to(torch.float32)

    __repr__ = WeightedTerms.__repr__


class RewardCost(CostFunction):
    """The cost ``-scale * reward`` of each response of an `LMRollout`.

    Args:
        reward: the reward.
        scale: a positive factor (the reward's weight against other cost terms).

    Returns (when called on a rollout):
        ``(B, N)`` float32 costs on the device of ``rollout.controls``; NaN where the reward is NaN
        (the controller gives those samples zero weight, with a warning). `evaluate` also reports
        the reward itself as ``"reward"``, so that results record it beside the cost.
    """

    def __init__(self, reward: Reward, scale: float = 1.0) -> None:
        if not isinstance(reward, Reward):
            raise TypeError(f"RewardCost needs a Reward, got {type(reward).__name__}")
        self.reward = reward
        self.scale = check_weight(scale)
        if self.scale <= 0:
            raise ValueError(
                f"RewardCost scale must be > 0, got {scale}: a non-positive scale would minimise the reward; "
                "to penalise a quantity, build a reward with a negative weight (e.g. -0.1 * LengthReward())"
            )

    @property
    def accepts_partial(self) -> bool:
        return self.reward.accepts_partial

    def __call__(self, rollout: Rollout) -> Tensor:
        return self.evaluate(rollout)[0]

    def evaluate(self, rollout: Rollout) -> tuple[Tensor, Metrics]:
        rewards = self.reward.score_rollout(rollout).to(rollout.controls.device)
        return -self.scale * rewards, {"reward": rewards}

    def __repr__(self) -> str:
        scale = "" if self.scale == 1.0 else f"{self.scale:g}*"
        return f"-{scale}({self.reward!r})"
