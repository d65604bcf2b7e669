"""Token choice for the decode engine: temperature, top-k, top-p, per-problem sampling, stop strings.

Everything works on the flattened batch of ``B * N`` rows, row ``b * N + n`` being sample ``n`` of
problem ``b``. Randomness for problem ``b`` comes only from its own generator, with draws of a fixed
shape at every step, so a problem samples the same tokens alone or inside a batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Set the logits outside the top-k / nucleus (top-p) set to ``-inf``.

    Args:
        logits: ``(R, V)`` logits (already divided by the temperature).
        top_k: keep the ``k`` largest (None: all).
        top_p: keep the smallest set of largest-probability tokens whose mass reaches ``p``
            (None or 1: all). The most likely token is always kept.

    Returns:
        ``(R, V)`` filtered logits (a new tensor when anything was filtered).
    """
    vocab = logits.shape[-1]
    if top_k is not None and 0 < top_k < vocab:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # mass of strictly more likely tokens
        remove_sorted = mass_before > top_p
        remove_sorted[..., 0] = False
        remove = torch.zeros_like(remove_sorted).scatter(-1, order, remove_sorted)
        logits = logits.masked_fill(remove, float("-inf"))
    return logits


class Scratch:
    """Work tensors that one decode reuses at every step, by name.

    A step's token choice makes a few ``(R, V)`` float32 tensors (160 x 49152 is 31 MB each); taking
    fresh ones every step costs the allocator's page faults as much as the arithmetic. The values
    are exactly those of the allocating path: the same operations write into kept tensors.
    """

    def __init__(self) -> None:
        self._tensors: dict[str, Tensor] = {}

    def get(self, name: str, shape: Sequence[int], like: Tensor) -> Tensor:
        """The tensor ``name`` of ``shape`` with ``like``'s dtype and device (made when it changes)."""
        kept = self._tensors.get(name)
        if (
            kept is None
            or tuple(kept.shape) != tuple(shape)
            or kept.dtype != like.dtype
            or kept.device != like.device
        ):
            kept = self._tensors[name] = torch.empty(tuple(shape), dtype=like.dtype, device=like.device)
        return kept


def sample_per_problem(
    weights: Tensor, generators: Sequence[torch.Generator], scratch: Scratch | None = None
) -> Tensor:
    """One token per row by inverse-CDF sampling, problem ``b``'s ``N`` rows drawn from ``generators[b]``.

    Each step draws exactly ``N`` uniforms per problem (a fixed shape, whatever else is in the batch),
    which is also far cheaper than `torch.multinomial` over a large vocabulary (one exponential per
    vocabulary entry).

    Args:
        weights: ``(B * N, V)`` non-negative, unnormalised probabilities (e.g. ``exp(logits - max)``).
        generators: ``B`` generators on ``weights.device``.

    Returns:
        ``(B * N,)`` token ids; a token of zero weight is never chosen.
    """
    B = len(generators)
    uniforms = torch.cat(
        [
            torch.rand(weights.shape[0] // B, generator=g, device=weights.device, dtype=weights.dtype)
            for g in generators
        ]
    )
    cdf = (
        weights.cumsum(dim=-1)
        if scratch is None
        else torch.cumsum(weights, -1, out=scratch.get("cdf", weights.shape, weights))
    )
    total = cdf[:, -1:]
    # strictly below the total, so the search lands on a token of positive weight
    target = torch.minimum(uniforms.unsqueeze(-1) * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cdf, target, right=True).squeeze(-1)


def choose_tokens(
    logits: Tensor,
    generators: Sequence[torch.Generator],
    *,
    greedy: bool,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    scratch: Scratch | None = None,
) -> Tensor:
    """The next token of every row: argmax (greedy) or a sample of the filtered softmax.

    Args:
        logits: ``(B * N, V)`` float logits.
        generators: one per problem (unused when greedy).
        scratch: work tensors kept between the steps of a decode (`Scratch`); the tokens are the same.

    Returns:
        ``(B * N,)`` token ids.
    """
    if greedy:
        return logits.argmax(dim=-1)
    if scratch is None:
        scaled = logits / temperature if temperature != 1.0 else logits
        scaled = filter_logits(scaled, top_k, top_p)
        weights = (scaled - scaled.amax(dim=-1, keepdim=True)).exp_()
        return sample_per_problem(weights, generators)
    scaled = logits
    if temperature != 1.0:
        scaled = torch.div(logits, temperature, out=scratch.get("scaled", logits.shape, logits))
    scaled = filter_logits(scaled, top_k, top_p)
    peak = scaled.amax(dim=-1, keepdim=True)
    weights = torch.sub(scaled, peak, out=scratch.get("weights", scaled.shape, scaled)).exp_()
    return sample_per_problem(weights, generators, scratch)


def token_logprobs(logits: Tensor, tokens: Tensor, temperature: float) -> Tensor:
    """``(R,)`` log-prob of ``tokens`` ``(R,)`` under ``softmax(logits / temperature)``, logits ``(R, V)``."""
    scaled = logits / temperature if temperature != 1.0 else logits
    return scaled.log_softmax(dim=-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)


class StopStrings:
    """Detects stop strings in the responses as they grow, and cuts them out of the final texts.

    Detection decodes, for each live row, only the last few tokens (enough to hold the longest stop
    string), so a step costs ``O(rows)`` short decodes and one device-to-host copy of those tokens.

    Args:
        tokenizer: decodes token ids.
        stop_strings: strings that end a response (the response text is cut before the first one).
    """

    def __init__(self, tokenizer: Any, stop_strings: Sequence[str]) -> None:
        self.tokenizer = tokenizer
        self.stop_strings = [s for s in stop_strings if s]
        # every token decodes to at least one character, so this many tokens hold any stop string
        self.window = max((len(s) for s in self.stop_strings), default=0) + 1

    def __bool__(self) -> bool:
        return bool(self.stop_strings)

    def tails(self, history: Sequence[Sequence[int]]) -> tuple[list[list[int]], list[bool]]:
        """The last tokens of each row's ``history`` (the response before this decode, one token list
        per row) that a stop string ending in the new tokens can start in, and whether each row's
        tail already holds one."""
        keep = max(1, self.window - 1)
        tails = [list(row)[-keep:] for row in history]
        texts = self.tokenizer.batch_decode(tails, skip_special_tokens=True)
        return tails, [any(s in text for s in self.stop_strings) for text in texts]

    def check(
        self,
        tokens: Tensor,
        step: int,
        done: Tensor,
        before: tuple[list[list[int]], list[bool]] | None = None,
    ) -> Tensor:
        """Rows whose response now contains a stop string.

        Args:
            tokens: ``(R, T)`` generated tokens, valid up to column ``step`` (inclusive).
            step: the step just taken.
            done: ``(R,)`` rows already finished (not checked).
            before: `tails` of the response tokens that came before ``tokens`` (committed ones), so
                that a stop string spanning the boundary is found; one already in a tail is not.

        Returns:
            ``(R,)`` bool on ``tokens.device``: live rows that hit a stop string.
        """
        start = max(0, step + 1 - self.window)
        window = tokens[:, start : step + 1].tolist()
        live = (~done).tolist()
        old = [False] * len(window)
        if before is not None and step + 1 < self.window:
            keep = self.window - step - 1  # >= 1 here
            window = [tail[-keep:] + w for tail, w in zip(before[0], window, strict=True)]
            old = before[1]
        texts = self.tokenizer.batch_decode(
            [w if alive else [] for w, alive in zip(window, live, strict=True)], skip_special_tokens=True
        )
        hits = [
            alive and not seen and any(s in text for s in self.stop_strings)
            for text, alive, seen in zip(texts, live, old, strict=True)
        ]
        return torch.tensor(hits, dtype=torch.bool, device=tokens.device)

    def truncate(self, text: str) -> str:
        """``text`` cut before the first stop string it contains (unchanged if none)."""
        cut = min((i for s in self.stop_strings if (i := text.find(s)) >= 0), default=-1)
        return text if cut < 0 else text[:cut]
