"""Grouped-query attention without copying the key/value cache, while decoding in half precision on CPU.

With an attention mask (always there for a left-padded batch), `transformers`' SDPA path repeats
each key/value head for the query heads that share it (``repeat_kv``) before calling
``scaled_dot_product_attention``: at every decoding step every layer copies its whole cache, and
the kernel reads it ``heads / kv_heads`` times over. torch's CPU kernels take grouped heads as they
are (``enable_gqa=True``), which `transformers` uses when ``TRANSFORMERS_SDPA_FORCE_GQA=1``.
SmolLM2-135M (9 query heads, 3 key/value heads), 160 rows x 200 positions, one thread: 41 ms per
layer and step with the copy, 3.4 ms without, in bfloat16 (`benchmarks/study_speed.py` measures
the whole decode).

`grouped_attention` turns it on for the decodes of a bfloat16 or float16 model on CPU only: a
float32 decode keeps the kernels of earlier releases, so its responses stay the same token for
token (the grouped kernel sums in another order); on CUDA, ``enable_gqa`` with a mask can fall back
to the slow math kernel.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import torch

FLAG = "TRANSFORMERS_SDPA_FORCE_GQA"


def wants_grouped_attention(device: torch.device, dtype: torch.dtype) -> bool:
    """Whether a decode of a ``dtype`` model on ``device`` uses grouped attention (half types on CPU)."""
    return device.type == "cpu" and dtype in (torch.bfloat16, torch.float16)


@contextlib.contextmanager
def grouped_attention(enabled: bool) -> Iterator[None]:
    """Within the block, SDPA attention of `transformers` models takes grouped key/value heads as they
    are (when ``enabled``); the environment is restored afterwards."""
    if not enabled:
        yield
        return
    before = os.environ.get(FLAG)
    os.environ[FLAG] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(FLAG, None)
        else:
            os.environ[FLAG] = before
