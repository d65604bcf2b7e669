"""Closeness to the base model of the responses a comparison returns, and the selection bound.

Per returned response a record holds (docs/internals.md, "Closeness to the base model"):

- ``base_logp_mean``: the mean per-token log-likelihood of the response under the base model at
  temperature 1, and ``base_ppl = exp(-base_logp_mean)``: exact numbers, from one teacher-forced
  pass over the returned responses only (`mpc_llm.core.Dynamics.closeness_to_base`);
- ``kl_estimate``: the steering log-ratio ``sum_t log p_u(y_t) - log p_0(y_t)`` of the returned
  response under the controls that produced it: an *estimate* (one sample) of the KL of the steered
  sampling policy to the base, blind to selection; exactly 0 for best-of-N;
- ``selection_bound = log n - (n - 1) / n``: a *bound* on the KL that choosing the best of ``n``
  samples adds (Beirami et al., "Theoretical guarantees on the best-of-n alignment policy", 2024:
  the best-of-``n`` policy's KL to its proposal is at most this), with ``n`` the samples the
  response was chosen among (the samples within the budget). For best-of-N it bounds the whole KL
  (3.17 nats at ``n = 64``); for an adaptive controller it bounds only the last selection, its
  samples not being independent draws of one proposal. Sequential controllers select at every
  step; their records leave it null.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from mpc_llm.core import Dynamics, IterationRecord, Rollout


def selection_bound(n: int) -> float:
    """``log n - (n - 1) / n``: the bound on ``KL(best-of-n || proposal)``, 0 for ``n = 1``.

    Example:
        >>> round(selection_bound(64), 2), selection_bound(1)
        (3.17, 0.0)
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def chosen_rollout(history: Sequence[IterationRecord], picks: Sequence[Sequence[int]]) -> Rollout:
    """The ``(B, K)`` rollout of samples ``picks[b][k]`` (indices in draw order over the run)."""
    rollouts = [r.rollout for r in history]
    if any(r is None for r in rollouts):
        raise ValueError("closeness needs optimize(..., keep_rollouts=True)")
    everything = type(rollouts[0]).cat(rollouts)  # type: ignore[arg-type, union-attr]
    return everything.take(torch.tensor([list(row) for row in picks], dtype=torch.long))


def closeness_fields(
    dynamics: Dynamics, rollout: Rollout, with_controls: bool = True
) -> list[list[dict[str, Any]]]:
    """``[B][N]`` record fields of ``rollout``'s responses: ``base_logp_mean``, ``base_ppl`` and, with
    the controls, ``kl_estimate`` (nothing for systems without a base model)."""
    scores = dynamics.closeness_to_base(rollout, rollout.controls if with_controls else None)
    B, N = rollout.batch_size, rollout.num_samples
    out: list[list[dict[str, Any]]] = [[{} for _ in range(N)] for _ in range(B)]
    for b in range(B):
        for n in range(N):
            fields = out[b][n]
            if "base_logp_mean" in scores:
                mean = float(scores["base_logp_mean"][b, n])
                fields["base_logp_mean"] = mean
                fields["base_ppl"] = math.exp(-mean) if math.isfinite(mean) and -mean < 700 else None
            if "kl_estimate" in scores:
                fields["kl_estimate"] = float(scores["kl_estimate"][b, n])
    return out
