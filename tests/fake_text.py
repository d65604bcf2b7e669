"""A text system without a model, for testing comparisons: the control picks words.

Step ``t`` of sample ``n`` says ``WORDS[argmax(v_t + gumbel)]``, the Gumbel noise drawn from the
problem's generator, so best-of-N has randomness of its own and a control can tilt it. The reward
counts "good". Run as a script, it runs a slow comparison (for the interruption test).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Sequence

import torch

from mpc_llm import CostFunction, Dynamics
from mpc_llm.controllers import AISP, BestOfN, RandomShooting
from mpc_llm.evaluation.compare import compare
from mpc_llm.lm import LMRollout

WORDS = ["good", "bad", "fine", "meh"]
PROMPTS = [f"prompt {i}" for i in range(5)]


class FakeText(Dynamics):
    def __init__(self, prompts: list, horizon: int = 6, delay: float = 0.0) -> None:
        self.prompts, self._horizon, self.delay = list(prompts), horizon, delay

    batch_size = property(lambda self: len(self.prompts))
    horizon = property(lambda self: self._horizon)
    control_dim = property(lambda self: len(WORDS))

    def rollout(self, controls: torch.Tensor, generators: Sequence[torch.Generator]) -> LMRollout:
        time.sleep(self.delay)
        B, N, T, d = controls.shape
        u = torch.stack([torch.rand((N, T, d), generator=g) for g in generators]).clamp_min(1e-9)
        tokens = (controls - torch.log(-torch.log(u))).argmax(-1)  # (B, N, T)
        texts = [[" ".join(WORDS[i] for i in tokens[b, n].tolist()) for n in range(N)] for b in range(B)]
        logp = torch.full((B, N, T), -1.0)
        return LMRollout(
            controls=controls, tokens=tokens, lengths=torch.full((B, N), T), texts=texts,
            prompts=list(self.prompts), logprobs=logp, base_logprobs=logp - 0.1 * controls.pow(2).sum(-1),
        )  # fmt: skip


def count_good(rollout: LMRollout) -> torch.Tensor:
    counts = [[t.split().count("good") for t in row] for row in rollout.texts]
    return -torch.tensor(counts, dtype=torch.float32)


COST = CostFunction.from_fn(count_good, "count_good")


def controllers() -> dict:
    return {
        "best_of_n": BestOfN(num_samples=8),
        "random_shooting": RandomShooting(sigma=1.0, num_samples=4),
        "aisp": AISP(sigma=1.0, lambda_=0.5, num_samples=4),
    }


def run(out_dir: str, *, resume: bool = False, delay: float = 0.0, prompts_per_batch: int = 2, world=None):
    return compare(
        PROMPTS,
        controllers(),
        lambda prompts: FakeText(prompts, delay=delay),
        COST,
        budgets=[4, 8, 12],
        seeds=[0, 1],
        out_dir=out_dir,
        resume=resume,
        prompts_per_batch=prompts_per_batch,
        settings={"system": "fake"},
        progress=False,
        world=world,
    )


if __name__ == "__main__":  # python fake_text.py OUT DELAY [resume]; under torchrun: one rank each
    from mpc_llm.evaluation.compare.distributed import launch

    with launch() as world:
        run(sys.argv[1], delay=float(sys.argv[2]), resume=sys.argv[3:] == ["resume"], world=world)
