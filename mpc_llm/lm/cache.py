"""Key/value caches for the decode engine: expand a prompt cache to ``N`` samples, and grow it in place.

The prompts' cache is computed once (``B`` rows) and kept; each rollout works on an expanded
``B * N``-row copy (row ``b * N + n``), so the kept one is never modified. Full-attention layers
of the copy are preallocated for the whole response: a decoding step then writes one position
instead of concatenating the whole cache (``O(T^2)`` copying per rollout with `DynamicLayer`).

Two kinds of preallocated layer:

- growing (default): keys / values are views of the first ``length`` positions of the buffer, so
  attention covers only the tokens so far (the cheapest in eager mode);
- static (``static=True``, the `torch.compile` path): `transformers`' ``StaticLayer``, whose keys /
  values are the whole buffer, the positions not yet written masked out by causality; every step
  then has the same shapes, which a compiled step (and CUDA graphs) needs.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

from torch import Tensor


def expand_cache(cache: Any, n: int, extra: int, static: bool = False, into: Any = None) -> Any:
    """A ``B * n``-row copy of a ``B``-row cache, with room for ``extra`` more tokens.

    Args:
        cache: a `transformers` cache of ``B`` rows (or None).
        n: copies of each row (consecutive: row ``b`` becomes rows ``b * n .. b * n + n - 1``).
        extra: tokens the copy will receive (its full-attention layers are preallocated for them).
        static: make full-attention layers static (fixed shapes, for a compiled step) instead of
            growing; a static layer holds exactly ``length + extra`` positions.
        into: a previous static copy whose layers are refilled in place where shapes agree.

    Returns:
        The new cache (None if ``cache`` is None); ``cache`` itself is left untouched. Plain dynamic
        (and growing) layers become growing layers (see `growing_layer_class`) or static ones; other
        kinds (sliding windows...) are repeated as they are.
    """
    if cache is None:
        return None
    if not hasattr(cache, "layers"):
        new = copy.deepcopy(cache)
        new.batch_repeat_interleave(n)
        return new
    from transformers.cache_utils import DynamicLayer

    new = copy.copy(cache)
    layers = []
    previous = list(getattr(into, "layers", [])) + [None] * len(cache.layers)
    for i, layer in enumerate(cache.layers):
        if type(layer) in (DynamicLayer, growing_layer_class()) and layer.get_seq_length() > 0:
            if static:
                layers.append(static_layer(layer, n, extra, into=previous[i]))
            else:
                layers.append(growing_layer_class().from_prefix(layer, n, extra))
        else:
            layer = copy.copy(layer)
            layer.batch_repeat_interleave(n)  # rebinds the copy's tensors to new, repeated ones
            layers.append(layer)
    new.layers = layers
    return new


def static_layer(layer: Any, n: int, extra: int, into: Any = None) -> Any:
    """A `transformers` ``StaticLayer`` of ``B * n`` rows and ``length + extra`` positions, holding ``layer``.

    ``layer``'s keys / values ``(B, H, length, hd)`` are copied into the first ``length`` positions
    (each row ``n`` times); the layer's write position starts after them. ``into``, a static layer
    of the same shape, is refilled in place instead of allocating a new one, so its tensors keep
    their addresses (what CUDA graphs replay on); positions past ``length`` keep stale values, which
    causal masking hides until they are written.
    """
    from transformers.cache_utils import StaticLayer

    B, H, L, _ = layer.keys.shape
    shape = (B * n, H, L + extra, layer.keys.shape[-1])
    reusable = (
        type(into) is StaticLayer
        and getattr(into, "is_initialized", False)
        and tuple(into.keys.shape) == shape
        and into.values.shape[-1] == layer.values.shape[-1]
        and into.keys.dtype == layer.keys.dtype
        and into.keys.device == layer.keys.device
    )
    new = into if reusable else StaticLayer(max_cache_len=L + extra)
    if not reusable:
        new.lazy_initialization(
            layer.keys.new_empty((B * n, H, 0, layer.keys.shape[-1])),
            layer.values.new_empty((B * n, H, 0, layer.values.shape[-1])),
        )
    for buf, src in ((new.keys, layer.keys), (new.values, layer.values)):
        buf[:, :, :L].view(B, n, H, L, -1).copy_(src.unsqueeze(1))
    new.cumulative_length.fill_(L)
    return new


@functools.cache
def growing_layer_class() -> Any:
    """The growing cache layer class (defined lazily: importing this module must not import transformers)."""
    from transformers.cache_utils import DynamicLayer

    class GrowingLayer(DynamicLayer):
        """A `DynamicLayer` whose keys / values ``(R, H, length, hd)`` are views of a preallocated buffer.

        ``update`` copies the new tokens into the buffer (``O(new tokens)``) instead of concatenating
        the whole cache (``O(length)`` per step); ``self.keys`` stays a view of the first ``length``
        positions, so every inherited method (mask sizes, sequence length, crop) works unchanged. If
        another method replaced the keys, or the buffer is full, the buffer is rebuilt.
        """

        @classmethod
        def from_prefix(cls, layer: Any, n: int, extra: int) -> Any:
            """``layer`` (``B`` rows) repeated to ``B * n`` rows, with room for ``extra`` more tokens."""
            new = cls.__new__(cls)
            new.__dict__.update(layer.__dict__)
            B, H, L, _ = layer.keys.shape
            new._kbuf = layer.keys.new_empty((B * n, H, L + extra, layer.keys.shape[-1]))
            new._vbuf = layer.values.new_empty((B * n, H, L + extra, layer.values.shape[-1]))
            for buf, src in ((new._kbuf, layer.keys), (new._vbuf, layer.values)):
                buf[:, :, :L].view(B, n, H, L, -1).copy_(src.unsqueeze(1))
            new.keys, new.values = new._kbuf[:, :, :L], new._vbuf[:, :, :L]
            return new

        def _is_view(self) -> bool:
            return (
                self.keys.data_ptr() == self._kbuf.data_ptr()
                and self.values.data_ptr() == self._vbuf.data_ptr()
                and self.keys.shape[:2] == self._kbuf.shape[:2]
            )

        def update(
            self, key_states: Tensor, value_states: Tensor, *args: Any, **kwargs: Any
        ) -> tuple[Tensor, Tensor]:
            length, new = self.keys.shape[-2], key_states.shape[-2]
            if not self._is_view() or length + new > self._kbuf.shape[-2]:
                capacity = max(2 * (length + new), self._kbuf.shape[-2])
                shape = (*self.keys.shape[:2], capacity)
                self._kbuf = self.keys.new_empty((*shape, self.keys.shape[-1]))
                self._vbuf = self.values.new_empty((*shape, self.values.shape[-1]))
                self._kbuf[:, :, :length].copy_(self.keys)
                self._vbuf[:, :, :length].copy_(self.values)
            self._kbuf[:, :, length : length + new].copy_(key_states)
            self._vbuf[:, :, length : length + new].copy_(value_states)
            self.keys = self._kbuf[:, :, : length + new]
            self.values = self._vbuf[:, :, : length + new]
            return self.keys, self.values

    return GrowingLayer


def static_copy(prefix_cache: Any, n: int, rows: int, width: int, model_config: Any, old: Any = None) -> Any:
    """A static ``rows = B * n``-row copy of ``prefix_cache`` holding ``width`` positions (prefix
    included), for compiled decoding.

    ``old`` (the previous decode's static cache) is refilled in place when its shapes agree (its
    tensors keep their addresses, which CUDA graphs need); one-token prompts (no prefix cache) get an
    empty `transformers` ``StaticCache``.
    """
    if prefix_cache is not None:
        length = prefix_cache.get_seq_length()
        return expand_cache(prefix_cache, n, width - length, static=True, into=old)
    from transformers import StaticCache

    if isinstance(old, StaticCache) and all(
        layer.max_cache_len == width and getattr(layer, "batch_size", rows) == rows for layer in old.layers
    ):
        for layer in old.layers:
            if layer.is_initialized:
                layer.cumulative_length.zero_()
        return old
    return StaticCache(config=model_config, max_cache_len=width)
