"""A short fingerprint of a model, so that what was learned on one model refuses another."""

from __future__ import annotations

import hashlib

import torch


def head_fingerprint(head: torch.nn.Module, rows: int = 64) -> str:
    """16 hex digits: the SHA-256 of the LM head's weight shape and its first ``rows`` rows.

    The rows are rounded to bfloat16 first, so a float32 and a bfloat16 copy of one model agree;
    different models (or one model's differently seeded random copies) differ.
    """
    weight = head.weight.detach()
    part = weight[:rows].to("cpu", torch.bfloat16).view(torch.int16)
    digest = hashlib.sha256(str(tuple(weight.shape)).encode() + part.numpy().tobytes())
    return digest.hexdigest()[:16]
