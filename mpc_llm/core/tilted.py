"""The tilted model and the figures a weighted population estimates about it.

The KL-regularised optimum over responses is the tilted model ``pi(y) = p(y) exp(r(y) / beta) / Z``
(``r = -c``, the negated cost). Its KL to the base model is ``E_pi[r] / beta - log Z``. A sampler
that holds ``M`` samples with unnormalised log-weights ``log w_i`` such that ``mean_i w_i`` estimates
``Z`` (soft best-of-N: ``w_i = exp(r_i / beta)`` over base samples; AISP: times ``p(v) / q(v)``;
SMC: the product of its incremental weights) estimates

    log Z  ~  logsumexp(log w) - log M,        KL  ~  sum_i wbar_i r_i / beta - log Z,

with ``wbar`` the normalised weights. On one set of ``M`` base samples the KL figure equals
``sum_i wbar_i log(M wbar_i)``, the KL of the weights to the empirical sample, so it reads ``log M``
as ``beta -> 0``: it estimates the KL of the limit model, not of the finite-``M`` policy (whose KL is
at most ``log M`` for any rule that returns one of ``M`` base samples).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from mpc_llm.core.rollout import Rollout


@dataclass(frozen=True)
class TiltedEstimate:
    """What ``(B, M)`` log-weights estimate about the tilted model, per problem.

    Attributes:
        weights: ``(B, M)`` normalised weights (0 for invalid samples).
        log_z: ``(B,)`` estimate of ``log Z`` (``logsumexp(log w) - log M``).
        kl: ``(B,)`` estimate of ``KL(pi || p) = E_pi[r] / beta - log Z``.
        ess: ``(B,)`` effective sample size of the weights as a fraction of ``M``.
        beta: ``(B,)`` the temperature.
    """

    weights: Tensor
    log_z: Tensor
    kl: Tensor
    ess: Tensor
    beta: Tensor

    def figures(self, b: int) -> dict[str, float]:
        """Problem ``b``'s figures for a record: ``beta``, ``log_z``, ``kl_tilted``, ``ess``."""
        return {
            "beta": float(self.beta[b]),
            "log_z": float(self.log_z[b]),
            "kl_tilted": float(self.kl[b]),
            "ess": float(self.ess[b]),
        }


def tilted_estimate(log_weights: Tensor, costs: Tensor, beta: Tensor | float) -> TiltedEstimate:
    """Estimates from ``(B, M)`` unnormalised ``log_weights`` of samples with ``(B, M)`` ``costs``.

    Invalid samples (a NaN or infinite cost, or a log-weight of ``-inf``) get weight 0 but count in
    ``M`` (they were drawn). ``beta`` (a number or ``(B,)``) may be ``+inf``: then ``r / beta = 0``.

    Example:
        >>> costs = torch.tensor([[1.0, 1.0]])  # equal rewards: the tilted model is the base model
        >>> est = tilted_estimate(-costs / 1.0, costs, 1.0)
        >>> float(est.log_z[0]), float(est.kl[0]), float(est.ess[0])
        (-1.0, 0.0, 1.0)
    """
    lw = log_weights.to(torch.float64)
    c = costs.to(torch.float64)
    B, M = lw.shape
    beta_t = torch.as_tensor(beta, dtype=torch.float64).expand(B).clone()
    valid = torch.isfinite(c) & ~torch.isnan(lw) & (lw > -math.inf)
    lw = lw.masked_fill(~valid, -math.inf)
    log_z = torch.logsumexp(lw, dim=1) - math.log(M)
    weights = torch.softmax(lw, dim=1).nan_to_num(0.0)
    scaled = torch.where(valid, -c / beta_t.unsqueeze(1), torch.zeros_like(c))
    scaled = torch.where(torch.isinf(beta_t).unsqueeze(1), torch.zeros_like(c), scaled)
    kl = (weights * scaled).sum(dim=1) - log_z
    ess = 1.0 / weights.pow(2).sum(dim=1) / M
    return TiltedEstimate(weights=weights, log_z=log_z, kl=kl, ess=ess, beta=beta_t)


def draw_index(weights: Tensor, generators: Sequence[torch.Generator]) -> Tensor:
    """One index per problem drawn with probability ``weights[b]`` (``(B, M)``, each row summing to
    1), by inverse CDF with one uniform from ``generators[b]``: ``(B,)`` long."""
    out = []
    for b, g in enumerate(generators):
        u = torch.rand((), generator=g, device=g.device, dtype=torch.float64).to(weights.device)
        cdf = weights[b].to(torch.float64).cumsum(0)
        j = int(torch.searchsorted(cdf, u * cdf[-1], right=True))
        last = int(torch.nonzero(weights[b] > 0).max())  # rounding never picks a zero-weight tail
        out.append(min(j, last))
    return torch.tensor(out, dtype=torch.long)


@dataclass(frozen=True)
class Population:
    """A sampler's weighted population, beside the one response it returns.

    Attributes:
        rollout: ``(B, M)`` the samples.
        costs: ``(B, M)`` their costs.
        log_weights: ``(B, M)`` unnormalised log-weights whose mean estimates ``Z``.
        estimate: what they estimate (`TiltedEstimate`: ``log Z``, the KL of the tilted model, ESS).
    """

    rollout: Rollout
    costs: Tensor
    log_weights: Tensor
    estimate: TiltedEstimate
