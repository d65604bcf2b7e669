"""The response tokens a language model has committed in closed loop, one count per row.

`Committed` holds ``(B, M)`` token ids right-padded past each row's count (rows may have committed
different numbers of tokens: QAlign keeps a different prefix per chain), with their log-probs
under the controlled and the unperturbed model when the decodes kept them. `LMDynamics` keeps two:
the whole committed response (rollouts start with it) and the part not yet in the key/value cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class Committed:
    """Committed tokens of ``B`` rows.

    Attributes:
        tokens: ``(B, M)`` ids, ``pad`` past each row's count (``M`` the largest count).
        counts: ``(B,)`` long, on the CPU: tokens committed per row.
        logprobs: ``(B, M)`` float32 log-probs under the controlled and the unperturbed model (0 past
            each count), or None when some commit came without them.
        pad: the pad id.
    """

    tokens: Tensor
    counts: Tensor
    logprobs: tuple[Tensor, Tensor] | None
    pad: int

    @classmethod
    def empty(cls, rows: int, pad: int, device: torch.device | str = "cpu") -> Committed:
        """No token committed in any of ``rows`` rows (log-probs known: none)."""
        zeros = torch.zeros((rows, 0), dtype=torch.float32, device=device)
        return cls(
            tokens=torch.zeros((rows, 0), dtype=torch.long, device=device),
            counts=torch.zeros(rows, dtype=torch.long),
            logprobs=(zeros, zeros.clone()),
            pad=pad,
        )

    @property
    def width(self) -> int:
        """``M``, the most tokens any row has committed."""
        return int(self.tokens.shape[1])

    def rows(self) -> list[list[int]]:
        """Each row's committed tokens, as a list."""
        return [row[:n] for row, n in zip(self.tokens.tolist(), self.counts.tolist(), strict=True)]

    def append(self, tokens: Tensor, counts: Tensor, logprobs: tuple[Tensor, Tensor] | None) -> Committed:
        """These rows followed by the first ``counts[b]`` of ``tokens[b]`` ``(B, c)`` (and of their
        ``(B, c)`` log-probs; None: the result has none)."""
        counts = counts.to(torch.long).cpu()
        new = self.counts + counts
        width = int(new.max()) if len(new) else 0
        lp = None
        if logprobs is not None and self.logprobs is not None:
            lp = tuple(
                self._place(old, part, 1, 0.0, width, counts)
                for old, part in zip(self.logprobs, logprobs, strict=True)
            )
        out = self._place(self.tokens, tokens, 1, self.pad, width, counts)
        return Committed(out, new, lp, self.pad)  # type: ignore[arg-type]

    def select(self, index: Sequence[int]) -> Committed:
        """The rows ``index`` (repeats allowed), trimmed to their own widest count."""
        idx = torch.as_tensor(list(index), dtype=torch.long)
        counts = self.counts[idx]
        width = int(counts.max()) if len(counts) else 0
        on = idx.to(self.tokens.device)
        lp = None if self.logprobs is None else (self.logprobs[0][on, :width], self.logprobs[1][on, :width])
        return Committed(self.tokens[on, :width], counts, lp, self.pad)

    def prepend(self, new: Tensor, n: int, fill: float, width: int | None = None) -> Tensor:
        """``(B * n, M + T)`` rows of this history (row ``b`` repeated ``n`` times) each followed by
        its ``(B * n, T)`` ``new`` tokens, ``fill`` after the end (a rollout holds whole responses)."""
        return self._place(self.tokens, new, n, fill, width)

    def prepend_logprobs(self, new: tuple[Tensor, Tensor], n: int) -> tuple[Tensor, Tensor] | None:
        """`prepend` for the log-probs (None when the history has none)."""
        if self.logprobs is None:
            return None
        return (self._place(self.logprobs[0], new[0], n, 0.0), self._place(self.logprobs[1], new[1], n, 0.0))

    def _place(
        self,
        old: Tensor,
        new: Tensor,
        n: int,
        fill: float,
        width: int | None = None,
        take: Tensor | None = None,
    ) -> Tensor:
        """``old`` rows (repeated ``n`` times) with ``new`` written from each row's count on: all of
        ``new`` (``take`` None) or its first ``take[b]`` columns, ``width`` columns in all."""
        R, T = new.shape
        width = self.width + T if width is None else width
        out = new.new_full((R, width), fill)
        if self.width:
            out[:, : self.width] = old.repeat_interleave(n, dim=0).to(out.dtype)
        if T == 0 or width == 0:
            return out
        start = self.counts.to(new.device).repeat_interleave(n).unsqueeze(1)  # (R, 1)
        j = torch.arange(width, device=new.device).unsqueeze(0) - start  # column c holds new[:, c - start]
        end = T if take is None else take.to(new.device).repeat_interleave(n).unsqueeze(1)
        on = (j >= 0) & (j < end)
        return torch.where(on, new.gather(1, j.clamp(0, T - 1)).to(out.dtype), out)
