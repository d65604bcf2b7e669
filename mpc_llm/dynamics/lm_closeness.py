"""How far a language model's responses are from the model itself: a teacher-forced scoring pass.

Two figures per response ``y`` (``L`` tokens) of prompt ``x``:

- ``base_logp_mean = (1 / L) sum_t log p_0(y_t | x, y_<t)``: the mean per-token log-likelihood under
  the *base* model at temperature 1 (no control, no truncation); ``base_ppl = exp(-base_logp_mean)``.
  Exact, whatever temperature the response was sampled at. It measures how typical the response is
  for the model, for every controller alike (best-of-N included).
- ``kl_estimate = sum_t log p_u(y_t) - log p_0(y_t)``: the steering log-ratio of the controls that
  produced the response, both at the sampling temperature (the untruncated softmax, as
  `LMRollout.kl_to_base`): a one-sample estimate of ``KL(controlled || base)``, zero without control.

Only the responses asked for are scored (a comparison's returned ones), in batches of left-padded
``prompt + response`` token sequences, one forward each; the head's input ``z`` is captured by a
forward pre-hook so that the controlled log-probs are ``head(z + v_t)``'s, computed as the decode
computes them. `prelogit_rms` measures the pre-logit scale ``sigma_relative`` is a fraction of.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mpc_llm.lm.engine import DecodeEngine, Prefix
from mpc_llm.lm.prefix import left_pad
from mpc_llm.lm.sampling import token_logprobs

#: Most logits (rows x positions x vocabulary) one scoring forward holds at once.
MAX_LOGITS = 2**25


class _Capture:
    """Forward pre-hook on the head that keeps its input ``z`` (and changes nothing)."""

    def __init__(self) -> None:
        self.z: Tensor | None = None

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...]) -> None:
        self.z = args[0]


@torch.no_grad()
def prelogit_rms(engine: DecodeEngine, prefix: Prefix) -> Tensor:
    """``(B,)`` float64 RMS over ``d`` of each prompt's pre-logit at the first response position
    (the head's input when the prompt's last token is fed: what a control at step 0 is added to)."""
    capture = _Capture()
    handle = engine.adapter.head.register_forward_pre_hook(capture)
    try:
        engine.next_logits(prefix)
    finally:
        handle.remove()
    assert capture.z is not None, "the model computed its logits without calling its head"
    z = capture.z[:, -1].to(torch.float64)  # (B, d)
    return z.pow(2).mean(dim=-1).sqrt().cpu()


@torch.no_grad()
def closeness(
    engine: DecodeEngine,
    prompt_ids: Sequence[Sequence[int]],
    tokens: Tensor,
    lengths: Tensor,
    controls: Tensor | None = None,
) -> dict[str, Tensor]:
    """Teacher-forced closeness of ``R`` responses to the base model.

    Args:
        engine: the decode engine (model, adapter, config: the sampling temperature).
        prompt_ids: ``R`` prompts' token ids, as fed to the model.
        tokens: ``(R, T)`` response token ids (the first ``lengths[r]`` count).
        lengths: ``(R,)`` response lengths.
        controls: ``(R, tau, d)`` the controls that produced each response (None: no
            ``kl_estimate``).

    Returns:
        ``base_logp_mean`` ``(R,)`` (NaN for an empty response) and, with controls, ``kl_estimate``
        ``(R,)``, float64 on the CPU.
    """
    R = len(prompt_ids)
    lengths = lengths.detach().cpu().long()
    longest = max(1, int(lengths.max())) if R else 1
    rows = max(1, MAX_LOGITS // ((longest + 1) * engine.vocab_size))
    parts: list[dict[str, Tensor]] = []
    for start in range(0, R, rows):
        part = slice(start, min(R, start + rows))
        chunk = None if controls is None else controls[part]
        parts.append(_score_chunk(engine, prompt_ids[part], tokens[part], lengths[part], chunk))
    if not parts:
        return {"base_logp_mean": torch.empty(0, dtype=torch.float64)}
    return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}


def _score_chunk(
    engine: DecodeEngine,
    prompt_ids: Sequence[Sequence[int]],
    tokens: Tensor,
    lengths: Tensor,
    controls: Tensor | None,
) -> dict[str, Tensor]:
    adapter, device = engine.adapter, engine.adapter.device
    R = len(prompt_ids)
    M = max(1, int(lengths.max()))  # the response positions every row is right-aligned to
    seqs = [list(p) + tokens[r, : int(lengths[r])].tolist() for r, p in enumerate(prompt_ids)]
    ids, mask, positions = (x.to(device) for x in left_pad(seqs, engine.pad_token_id))
    targets = torch.full((R, M), engine.pad_token_id, dtype=torch.long)
    on = torch.zeros((R, M), dtype=torch.bool)  # response token t of row r sits at M - len_r + t
    for r in range(R):
        n = int(lengths[r])
        if n:
            targets[r, M - n :] = tokens[r, :n].cpu()
            on[r, M - n :] = True
    capture = _Capture()
    handle = adapter.head.register_forward_pre_hook(capture)
    try:
        kwargs: dict[str, Any] = {"use_cache": False}
        if adapter.keeps_last_logits:
            kwargs["logits_to_keep"] = M + 1
        out = engine.model(input_ids=ids, attention_mask=mask, position_ids=positions, **kwargs)
    finally:
        handle.remove()
    # the logit at column c predicts the token at c + 1: response positions are the last M + 1 but one
    logits = out.logits[:, -(M + 1) : -1].float()  # (R, M, V)
    targets_d, on_d = targets.to(device), on.to(device)
    base = token_logprobs(logits, targets_d, 1.0)  # (R, M)
    counts = on_d.sum(dim=1)
    mean = (base * on_d).sum(dim=1) / counts.clamp_min(1)
    mean = torch.where(counts > 0, mean, torch.full_like(mean, float("nan")))
    result = {"base_logp_mean": mean.double().cpu()}
    if controls is not None:
        assert capture.z is not None, "the model computed its logits without calling its head"
        z = capture.z[:, -(M + 1) : -1]  # (R, M, d)
        wide = torch.promote_types(z.dtype, torch.float32)  # added as the decode's hook adds it
        v = torch.zeros(z.shape, dtype=wide, device=device)
        tau = controls.shape[1]
        for r in range(R):  # control t of row r is at its response position t
            n = int(lengths[r])
            k = min(tau, n)
            if k:
                v[r, M - n : M - n + k] = controls[r, :k].to(device=device, dtype=wide)
        temperature = engine.config.temperature
        lp_u = token_logprobs(adapter.logits((z.to(wide) + v).to(z.dtype)).float(), targets_d, temperature)
        # computed as steered's is, so uncontrolled steps give exactly 0
        lp_0 = token_logprobs(adapter.logits(z).float(), targets_d, temperature)
        result["kl_estimate"] = ((lp_u - lp_0) * on_d).sum(dim=1).double().cpu()
    return result
