"""The rollout: what a `Dynamics` returns for a batch of control sequences.

A rollout is a dataclass whose per-sample fields are indexed by ``(B, N, ...)``: ``B`` problems
(prompts, initial states) and ``N`` samples per problem. Tensors with that leading shape and nested
lists ``list[B][N]`` (e.g. decoded texts) are per-sample fields; anything else, and any field declared
with ``field(metadata={"shared": True})``, is shared metadata.
Subclasses add fields and get `take` / `cat` for free.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

R = TypeVar("R", bound="Rollout")


@dataclass(frozen=True)
class Rollout:
    """Base rollout.

    Attributes:
        controls: the control sequences that produced this rollout, ``(B, N, tau, d)``.
    """

    controls: Tensor

    def pad_value(self, name: str) -> float:
        """Value that right-pads tensor field ``name`` when rollouts of different lengths are concatenated."""
        return 0.0

    @property
    def batch_size(self) -> int:
        """``B``, the number of problems."""
        return int(self.controls.shape[0])

    @property
    def num_samples(self) -> int:
        """``N``, the number of samples per problem."""
        return int(self.controls.shape[1])

    def token_counts(self) -> Tensor:
        """``(B, N)`` tokens generated for each sample (zeros for systems that are not language models)."""
        return torch.zeros((self.batch_size, self.num_samples), dtype=torch.long)

    @property
    def tokens_generated(self) -> int:
        """Tokens generated to produce this rollout, over all problems and samples."""
        return int(self.token_counts().sum())

    def describe(self, b: int, n: int) -> dict[str, Any]:
        """JSON-ready fields that describe sample ``n`` of problem ``b`` in records (default: none).

        A language-model rollout gives its response text, length and KL estimate; comparisons
        write these beside the reward and the cost without knowing the rollout's type.
        """
        return {}

    def _is_per_sample(self, value: Any, field: dataclasses.Field | None = None) -> bool:
        """Whether a field's value is indexed ``(B, N, ...)`` (fields marked ``metadata={"shared": True}``
        never are, whatever their shape)."""
        if field is not None and field.metadata.get("shared", False):
            return False
        B, N = self.batch_size, self.num_samples
        if isinstance(value, Tensor):
            return value.dim() >= 2 and tuple(value.shape[:2]) == (B, N)
        return (
            isinstance(value, list)
            and len(value) == B
            and all(isinstance(row, list) and len(row) == N for row in value)
        )

    def take(self: R, index: Tensor) -> R:
        """Select samples per problem.

        Args:
            index: ``(B, K)`` sample indices into ``N``.

        Returns:
            A rollout of the same type with ``N = K``.
        """
        if index.dim() != 2 or index.shape[0] != self.batch_size:
            raise ValueError(f"index must have shape (B={self.batch_size}, K), got {tuple(index.shape)}")
        changes: dict[str, Any] = {}
        rows = index.tolist()
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not self._is_per_sample(value, field):
                continue
            if isinstance(value, Tensor):
                idx = index.to(value.device).view(*index.shape, *([1] * (value.dim() - 2)))
                changes[field.name] = torch.gather(value, 1, idx.expand(-1, -1, *value.shape[2:]))
            else:
                changes[field.name] = [[row[k] for k in ks] for row, ks in zip(value, rows, strict=True)]
        return dataclasses.replace(self, **changes)

    def problems(self: R, index: Sequence[int]) -> R:
        """The rollouts of problems ``index`` only (``B = len(index)``, in that order).

        Per-sample fields and shared lists with one entry per problem (e.g. prompts) are selected.
        """
        rows = list(index)
        idx = torch.as_tensor(rows, dtype=torch.long)
        changes: dict[str, Any] = {}
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if self._is_per_sample(value, field):
                changes[field.name] = (
                    value[idx.to(value.device)] if isinstance(value, Tensor) else [value[b] for b in rows]
                )
            elif isinstance(value, list) and len(value) == self.batch_size:
                changes[field.name] = [value[b] for b in rows]
        return dataclasses.replace(self, **changes)

    @classmethod
    def cat(cls: type[R], rollouts: Sequence[R]) -> R:
        """Concatenate rollouts of the same problems along the sample dimension ``N``.

        Tensor fields whose trailing sizes differ (e.g. token sequences of different length ``T``)
        are right-padded with the first rollout's `pad_value` of the field (default 0).
        """
        if not rollouts:
            raise ValueError("cat needs at least one rollout")
        first = rollouts[0]
        changes: dict[str, Any] = {}
        for field in dataclasses.fields(first):
            values = _field_values(rollouts, field.name)
            if not all(r._is_per_sample(v, field) for r, v in zip(rollouts, values, strict=True)):
                continue
            if isinstance(values[0], Tensor):
                changes[field.name] = _cat_padded(values, first.pad_value(field.name))
            else:
                changes[field.name] = [[x for v in values for x in v[b]] for b in range(first.batch_size)]
        return dataclasses.replace(first, **changes)


def stack_problems(rollouts: Sequence[R]) -> R:
    """Concatenate rollouts of different problems along ``B`` (the same ``N``; e.g. ``N = 1``).

    Per-sample tensors are right-padded to a common shape with the first rollout's `pad_value`;
    per-sample lists and shared lists with one entry per problem (e.g. prompts) are concatenated;
    other shared fields are taken from the first rollout.
    """
    if not rollouts:
        raise ValueError("stack_problems needs at least one rollout")
    first = rollouts[0]
    changes: dict[str, Any] = {}
    for field in dataclasses.fields(first):
        values = _field_values(rollouts, field.name)
        if all(r._is_per_sample(v, field) for r, v in zip(rollouts, values, strict=True)):
            if isinstance(values[0], Tensor):
                moved = [v.transpose(0, 1) for v in values]  # pad every dim after B and N alike
                changes[field.name] = _cat_padded(moved, first.pad_value(field.name)).transpose(0, 1)
            else:
                changes[field.name] = [row for v in values for row in v]
        elif isinstance(values[0], list) and all(
            isinstance(v, list) and len(v) == r.batch_size for r, v in zip(rollouts, values, strict=True)
        ):
            changes[field.name] = [x for v in values for x in v]
    return dataclasses.replace(first, **changes)


def _field_values(rollouts: Sequence[Rollout], name: str) -> list[Any]:
    """Field ``name`` of every rollout, refused when it is None in some and set in others.

    Joining such rollouts would silently keep the first one's value for all of them (e.g. a missing
    ``prefix_lengths`` miscounting the new tokens of every later sample).
    """
    values = [getattr(r, name) for r in rollouts]
    missing = [k for k, v in enumerate(values) if v is None]
    if missing and len(missing) < len(values):
        raise ValueError(
            f"field {name!r} is None in rollouts {missing} and set in the others; "
            "give every rollout the field (or none of them) before joining them"
        )
    return values


def _cat_padded(values: Sequence[Tensor], pad_value: float) -> Tensor:
    """Concatenate ``(B, N_i, *rest_i)`` tensors on dim 1, padding each ``rest`` dim to its max."""
    shape = [max(v.shape[k] for v in values) for k in range(values[0].dim())]
    padded = []
    for v in values:
        if list(v.shape[2:]) != shape[2:]:
            out = v.new_full((v.shape[0], v.shape[1], *shape[2:]), pad_value)
            out[(slice(None), slice(None), *(slice(0, s) for s in v.shape[2:]))] = v
            v = out
        padded.append(v)
    return torch.cat(padded, dim=1)
