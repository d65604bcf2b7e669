"""Next-token logits of many token sequences, computing each shared prefix once.

A judge reads ``N`` inputs per prompt that are identical up to the response (the rubric's head, the
prompt, the chat template's head). `next_token_logits` runs that common prefix through the model
once per group into a key/value cache, copies the cache out to a batch of rows
(`mpc_llm.lm.cache.expand_cache`) and runs only each row's own suffix (response, rubric tail,
template tail), in batches sorted by length so that little padding is computed.

**Exactness.** The prefix is the longest common *token* prefix of the group's rows, as they are
tokenised (the caller tokenises each whole input, so a merge across the response boundary is never
assumed away), capped one token short of the shortest row so that every row has a suffix. Suffixes
are right-padded: a real token at suffix position ``j`` gets position id ``P + j`` and attends to
the ``P`` prefix keys and its own suffix tokens ``<= j`` (the causal mask; pads come after every
real token and are masked), the same keys, values and positions as in the whole sequence. The
logits are read at each row's last real token (a forward pre-hook on the LM head keeps only that
position, so the head computes one vocabulary row per input). The result equals a forward over the
whole sequence up to floating-point reduction order (about 1e-6 in float32). Sliding-window layers
stay exact too, since real suffix tokens are contiguous after the prefix.

Rows that share nothing (a group of one, or a common prefix of nothing) take the plain path: whole
inputs left-padded with explicit position ids, sorted by length when asked, the last column read.
"""

from __future__ import annotations

import contextlib
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from mpc_llm.lm.adapters import ModelAdapter
from mpc_llm.lm.cache import expand_cache

__all__ = ["common_prefix_length", "left_pad", "next_token_logits"]


def common_prefix_length(rows: Sequence[Sequence[int]]) -> int:
    """The number of leading tokens all ``rows`` share (0 for no rows).

    Example:
        >>> common_prefix_length([[1, 2, 3, 4], [1, 2, 5], [1, 2, 3]])
        2
    """
    if not rows:
        return 0
    first = rows[0]
    length = min(len(r) for r in rows)
    for row in rows[1:]:
        k = 0
        while k < length and row[k] == first[k]:
            k += 1
        length = k
    return length


def left_pad(rows: Sequence[Sequence[int]], pad_token_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """``input_ids``, ``attention_mask`` and ``position_ids``, each ``(m, L)``, left-padded.

    Position ids count real tokens only, so a row gets the same positions alone or in a batch.
    """
    L = max((len(r) for r in rows), default=0)
    input_ids = torch.full((len(rows), L), pad_token_id, dtype=torch.long)
    mask = torch.zeros((len(rows), L), dtype=torch.long)
    for i, ids in enumerate(rows):
        if len(ids):
            input_ids[i, L - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
            mask[i, L - len(ids) :] = 1
    positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
    return input_ids, mask, positions


def _batches(order: list[int], size: int | None) -> Iterator[list[int]]:
    step = size or max(len(order), 1)
    for i in range(0, len(order), step):
        yield order[i : i + step]


@contextlib.contextmanager
def _head_reads(head: torch.nn.Module, last: Tensor) -> Iterator[list[bool]]:
    """While active, the LM head sees only position ``last[r]`` of row ``r``: its input ``(m, S, d)``
    becomes ``(m, 1, d)``. Yields a flag list that records whether the hook ran."""
    ran: list[bool] = []

    def hook(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
        z = args[0]
        ran.append(True)
        rows = torch.arange(z.shape[0], device=z.device)
        return (z[rows, last.to(z.device)].unsqueeze(1), *args[1:])

    handle = head.register_forward_pre_hook(hook)
    try:
        yield ran
    finally:
        handle.remove()


def _plain(adapter: ModelAdapter, rows: Sequence[Sequence[int]], pad_token_id: int, device: Any) -> Tensor:
    """Last-position logits ``(m, V)`` of whole rows, left-padded, no cache."""
    ids, mask, positions = (t.to(device) for t in left_pad(rows, pad_token_id))
    out = adapter.forward(ids, mask, positions, use_cache=False)
    return out.logits[:, -1]


def _shared(
    adapter: ModelAdapter,
    prefix_cache: Any,
    prefix_length: int,
    suffixes: Sequence[Sequence[int]],
    pad_token_id: int,
    device: Any,
) -> Tensor:
    """Logits ``(m, V)`` after each ``prefix + suffix``, from the prefix's one-row cache."""
    m, P = len(suffixes), prefix_length
    S = max(len(s) for s in suffixes)
    ids = torch.full((m, S), pad_token_id, dtype=torch.long)
    mask = torch.zeros((m, P + S), dtype=torch.long)
    mask[:, :P] = 1
    for i, s in enumerate(suffixes):
        ids[i, : len(s)] = torch.tensor(list(s), dtype=torch.long)
        mask[i, P : P + len(s)] = 1
    positions = (P + torch.arange(S)).repeat(m, 1)
    last = torch.tensor([len(s) - 1 for s in suffixes], dtype=torch.long)
    cache = expand_cache(prefix_cache, m, S)
    kwargs = {"use_cache": True, adapter.cache_keyword: cache}
    with _head_reads(adapter.head, last) as ran:
        out = adapter.model(
            input_ids=ids.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            **kwargs,
        )
    logits = out.logits
    if not ran or logits.shape[1] != 1:  # the model computed its logits without calling its head module
        return logits[torch.arange(m, device=logits.device), last.to(logits.device)]
    return logits[:, 0]


@torch.inference_mode()
def next_token_logits(
    adapter: ModelAdapter,
    rows: Sequence[Sequence[int]],
    *,
    groups: Sequence[Hashable] | None = None,
    columns: Sequence[int] | None = None,
    batch_size: int | None = None,
    pad_token_id: int = 0,
    share_prefix: bool = True,
    sort_by_length: bool = True,
) -> Tensor:
    """The model's next-token logits after each of ``R`` token sequences.

    Args:
        adapter: the causal LM.
        rows: ``R`` token-id sequences (each non-empty for a meaningful result).
        groups: a key per row; rows with equal keys are searched for a common prefix, computed once
            (None: all rows form one group). Keys only decide what is tried: the prefix is always
            the rows' actual common tokens, so any grouping gives the same logits.
        columns: vocabulary ids to return (None: the whole vocabulary).
        batch_size: rows per forward pass (None: a group's rows, or all plain rows, at once).
        pad_token_id: the id put in padding positions (masked; its value does not matter).
        share_prefix: compute each group's common prefix once (False: every row whole, the plain
            path).
        sort_by_length: batch rows of similar lengths together (False: in the given order).

    Returns:
        ``(R, C)`` float32 logits on the model's device (``C`` = ``len(columns)`` or the vocabulary).
    """
    device = adapter.device
    select = None if columns is None else torch.tensor(list(columns), dtype=torch.long, device=device)

    def keep(logits: Tensor) -> Tensor:
        logits = logits.float()
        return logits if select is None else logits.index_select(-1, select)

    R = len(rows)
    keys: Sequence[Hashable] = groups if groups is not None else [0] * R
    if len(keys) != R:
        raise ValueError(f"got {len(keys)} group keys for {R} rows")
    members: dict[Hashable, list[int]] = {}
    for i, key in enumerate(keys):
        members.setdefault(key, []).append(i)
    plain: list[int] = []
    shared: list[tuple[list[int], int]] = []
    for idx in members.values():
        group_rows = [rows[i] for i in idx]
        P = min(common_prefix_length(group_rows), min(len(r) for r in group_rows) - 1)
        if share_prefix and len(idx) > 1 and P > 0:
            shared.append((idx, P))
        else:
            plain.extend(idx)

    def ordered(idx: list[int]) -> list[int]:
        return sorted(idx, key=lambda i: len(rows[i])) if sort_by_length else sorted(idx)

    pieces: list[tuple[list[int], Tensor]] = []
    for chunk in _batches(ordered(plain), batch_size):
        pieces.append((chunk, keep(_plain(adapter, [rows[i] for i in chunk], pad_token_id, device))))
    for idx, P in shared:
        prefix = torch.tensor([list(rows[idx[0]][:P])], dtype=torch.long, device=device)
        ones = torch.ones_like(prefix)
        out = adapter.forward(prefix, ones, torch.arange(P, device=device).unsqueeze(0), use_cache=True)
        cache = ModelAdapter.output_cache(out)
        for chunk in _batches(ordered(idx), batch_size):
            logits = _shared(adapter, cache, P, [rows[i][P:] for i in chunk], pad_token_id, device)
            pieces.append((chunk, keep(logits)))
    if not pieces:
        width = len(select) if select is not None else 0
        return torch.empty((0, width), dtype=torch.float32, device=device)
    result = torch.empty((R, pieces[0][1].shape[-1]), dtype=torch.float32, device=device)
    for chunk, logits in pieces:
        result[torch.tensor(chunk, dtype=torch.long, device=device)] = logits
    return result
