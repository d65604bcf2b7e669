"""Training a value on `ValueData`: Monte Carlo or temporal-difference targets, a held-out split by
prompt, early stopping on the held-out error.

Targets (``target``):

- ``"mc"`` (Monte Carlo): every state's target is its response's final reward ``r``;
- ``"td"`` (RE-Control's Bellman form, discount 1): the last state's target is ``r``, every other
  state's is the current network's value of the next state, held fixed (``V(s_{t+1}).detach()``).
  RE-Control's training code lets the gradient flow into ``V(s_{t+1})`` as well (a symmetric
  consistency loss; its evaluation code detaches it) and takes the terminal state as the *first*
  valid step (an argmax over the mask); here the target is held fixed and the terminal state is the
  last step, as the paper describes.

On a system whose responses are one step long the two are the same loss, so they train the same
network (tested). The early-stopping criterion and the reported error are the same for both: the
held-out mean squared error of ``V(s_t)`` against the final reward.
"""

from __future__ import annotations

import copy
import math
import time
from typing import Any, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor

from mpc_llm.values.data import ValueData
from mpc_llm.values.network import Activation, ValueMLP


class TrainConfig(BaseModel):
    """How a value is trained.

    The network is `ValueMLP` (``width``, ``depth``, ``activation``); ``target`` is ``"mc"`` or
    ``"td"`` (module docstring); training runs at most ``epochs`` passes over the training states in
    minibatches of ``batch_size`` (Adam with ``lr`` and ``weight_decay``) and stops after
    ``patience`` epochs without a lower held-out error (the best epoch's weights are kept);
    ``heldout_fraction`` of the prompts are held out (their states are never trained on); ``seed``
    fixes the split, the initial weights and the minibatch order.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    width: int = Field(256, ge=1)
    depth: int = Field(2, ge=0)
    activation: Activation = "relu"
    target: Literal["mc", "td"] = "mc"
    epochs: int = Field(50, ge=1)
    patience: int = Field(5, ge=1)
    batch_size: int = Field(512, ge=1)
    lr: float = Field(1e-3, gt=0, allow_inf_nan=False)
    weight_decay: float = Field(0.0, ge=0, allow_inf_nan=False)
    heldout_fraction: float = Field(0.2, gt=0, lt=1, allow_inf_nan=False)
    seed: int = 0


def split_by_prompt(data: ValueData, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """``(train rows, held-out rows)``: a seeded ``fraction`` of the distinct prompts (at least one,
    at most all but one) is held out with all their states.

    Raises:
        ValueError: fewer than two prompts.
    """
    prompts = torch.unique(data.prompt)
    if len(prompts) < 2:
        raise ValueError("a held-out split by prompt needs value data on at least 2 prompts")
    g = torch.Generator().manual_seed(seed)
    order = prompts[torch.randperm(len(prompts), generator=g)]
    k = min(len(prompts) - 1, max(1, round(fraction * len(prompts))))
    held = torch.isin(data.prompt, order[:k])
    return (~held).nonzero().flatten(), held.nonzero().flatten()


def spearman(x: Tensor, y: Tensor) -> float:
    """Spearman's rank correlation of two ``(M,)`` tensors (average ranks for ties; NaN if either
    is constant)."""
    rx, ry = _ranks(x.double()), _ranks(y.double())
    rx, ry = rx - rx.mean(), ry - ry.mean()
    den = float(rx.norm() * ry.norm())
    return float((rx * ry).sum()) / den if den > 0 else float("nan")


def _ranks(x: Tensor) -> Tensor:
    _, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    return (ends - (counts.double() - 1) / 2)[inverse]


def _targets(net: ValueMLP, data: ValueData, rows: Tensor, target: str) -> Tensor:
    reward = data.reward[rows].float()
    if target == "mc":
        return reward
    nxt = (rows + 1).clamp(max=len(data.reward) - 1)
    with torch.no_grad():
        following = net(data.states[nxt])
    return torch.where(data.last[rows], reward, following)


@torch.no_grad()
def evaluate(net: ValueMLP, data: ValueData, rows: Tensor, batch: int = 8192) -> dict[str, float]:
    """Held-out figures of ``net`` on ``rows``: ``mse`` and ``rmse`` against the final reward,
    ``spearman`` over states, the same at each response's first step (``spearman_first``), and
    ``baseline_mse`` (predicting the rows' mean reward)."""
    pred = torch.cat([net(data.states[rows[i : i + batch]]) for i in range(0, len(rows), batch)]).double()
    reward = data.reward[rows]
    mse = float((pred - reward).pow(2).mean())
    first = data.step[rows] == 0
    return {
        "mse": mse,
        "rmse": math.sqrt(mse),
        "baseline_mse": float((reward - reward.mean()).pow(2).mean()),
        "spearman": spearman(pred, reward),
        "spearman_first": spearman(pred[first], reward[first]),
        "states": len(rows),
        "responses": int(data.last[rows].sum()),
        "prompts": len(torch.unique(data.prompt[rows])),
    }


def train_value(
    data: ValueData, config: TrainConfig | None = None, *, progress: Any = None
) -> tuple[ValueMLP, dict[str, Any]]:
    """Train a `ValueMLP` on ``data``; returns it (the best held-out epoch's weights) and a report.

    Args:
        data: states and rewards (`collect` / `load_data`, or `ValueData.from_episodes`).
        config: the settings (`TrainConfig`).
        progress: called with each epoch's ``(epoch, train_loss, heldout_mse)`` (progress bars).

    Returns:
        The network in eval mode, and ``{"target", "epochs_run", "best_epoch", "train_loss" (per
        epoch), "heldout_mse" (per epoch), "train": {...}, "heldout": evaluate(...), "seconds"}``.
    """
    cfg = config or TrainConfig()
    tic = time.perf_counter()
    train_rows, held_rows = split_by_prompt(data, cfg.heldout_fraction, cfg.seed)
    torch.manual_seed(cfg.seed)  # nn.Linear's initialisation draws from the global generator
    net = ValueMLP(data.states.shape[1], cfg.width, cfg.depth, cfg.activation)
    net.standardize(data.states[train_rows])
    opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    best = (math.inf, 0, copy.deepcopy(net.state_dict()))
    train_losses: list[float] = []
    held_losses: list[float] = []
    for epoch in range(1, cfg.epochs + 1):
        net.train()
        order = train_rows[torch.randperm(len(train_rows), generator=g)]
        total = 0.0
        for i in range(0, len(order), cfg.batch_size):
            rows = order[i : i + cfg.batch_size]
            target = _targets(net, data, rows, cfg.target)
            loss = (net(data.states[rows]) - target).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(rows)
        net.eval()
        train_losses.append(total / len(order))
        held_losses.append(evaluate(net, data, held_rows)["mse"])
        if progress is not None:
            progress(epoch, train_losses[-1], held_losses[-1])
        if held_losses[-1] < best[0]:
            best = (held_losses[-1], epoch, copy.deepcopy(net.state_dict()))
        elif epoch - best[1] >= cfg.patience:
            break
    net.load_state_dict(best[2])
    net.eval()
    report = {
        "target": cfg.target,
        "epochs_run": len(train_losses),
        "best_epoch": best[1],
        "train_loss": train_losses,
        "heldout_mse": held_losses,
        "train": {
            "states": len(train_rows),
            "responses": int(data.last[train_rows].sum()),
            "prompts": len(torch.unique(data.prompt[train_rows])),
        },
        "heldout": evaluate(net, data, held_rows),
        "heldout_prompts": sorted(int(p) for p in torch.unique(data.prompt[held_rows])),
        "seconds": time.perf_counter() - tic,
    }
    return net, report
