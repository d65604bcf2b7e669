"""The fast decoding paths (static key/value cache, `torch.compile`) give the tokens of the default path.

The static cache attends over the whole preallocated buffer (positions not yet written are masked),
so its floating-point reductions run over more (zero-weight) terms: tokens are the same, log-probs
agree to rounding. The compiled path is checked with the "eager" backend (dynamo's tracing, the
static cache and the persistent head hook, without inductor's fused kernels, whose rounding differs;
`benchmarks/rollout_speed.py --compile` reports inductor's token agreement).
"""

from __future__ import annotations

import pytest
import torch

from mpc_llm.dynamics import LMConfig, LMDynamics, make_generators
from mpc_llm.lm.testing import TINY_ARCHITECTURES

PROMPTS = ["Hello there! How are you today?", "A", "Optimal control steers"]


def lm_for(tiny_lm, arch: str, prompts=PROMPTS, **options) -> LMDynamics:
    model, tok = tiny_lm(arch)
    return LMDynamics(model, tok, prompts, chat_template=False, max_new_tokens=12, **options)


def controls_for(lm: LMDynamics, n: int = 4, tau: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return 2.0 * torch.randn(lm.batch_size, n, tau, lm.control_dim, generator=g)


def assert_same_rollout(ref, other) -> None:
    assert torch.equal(ref.tokens, other.tokens)
    assert torch.equal(ref.lengths, other.lengths)
    assert ref.texts == other.texts
    torch.testing.assert_close(other.logprobs, ref.logprobs, atol=5e-5, rtol=1e-5)
    torch.testing.assert_close(other.base_logprobs, ref.base_logprobs, atol=5e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_static_cache_gives_the_tokens_of_the_growing_cache(tiny_lm, arch):
    lm = lm_for(tiny_lm, arch, return_logprobs=True, temperature=0.9)
    c = controls_for(lm)
    ref = lm.rollout(c, make_generators([3, 4, 5], 3))
    static = lm.with_options(static_cache=True)
    assert_same_rollout(ref, static.rollout(c, make_generators([3, 4, 5], 3)))

    # the next decode refills the same buffers in place (fixed addresses, for CUDA graphs); the
    # previous decode's values past the prompt stay hidden until overwritten
    def pointers() -> list[int]:
        layers = static.engine._static.layers
        return [layer.keys.data_ptr() for layer in layers if hasattr(layer, "max_cache_len")]

    before = pointers()
    c2 = controls_for(lm, seed=1)
    assert_same_rollout(lm.rollout(c2, make_generators(8, 3)), static.rollout(c2, make_generators(8, 3)))
    assert before and pointers() == before


@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_static_cache_with_one_token_prompts_starts_an_empty_static_cache(tiny_lm, arch):
    lm = lm_for(tiny_lm, arch, prompts=["A", "B"], return_logprobs=True)
    c = controls_for(lm, n=3)
    ref = lm.rollout(c, make_generators(7, 2))
    assert_same_rollout(ref, lm.with_options(static_cache=True).rollout(c, make_generators(7, 2)))


@pytest.mark.parametrize("arch", ["llama", "gemma2"])  # plain; sliding window + soft-capping
def test_compiled_step_gives_the_tokens_of_the_eager_step(tiny_lm, arch):
    lm = lm_for(tiny_lm, arch, return_logprobs=True)
    fast = lm.with_options(compile=True, compile_backend="eager")
    before = lm.rollout(controls_for(lm, seed=5), make_generators(5, 3))
    for seed in (0, 1):  # a second decode (new controls, new draws) reuses the compiled step
        c = controls_for(lm, seed=seed)
        ref, got = lm.rollout(c, make_generators(seed, 3)), fast.rollout(c, make_generators(seed, 3))
        assert_same_rollout(ref, got)
    # uncontrolled sampling through the compiled model; the eager path is unchanged by its hook
    plain, compiled = lm.sample(4, make_generators(9, 3)), fast.sample(4, make_generators(9, 3))
    assert torch.equal(plain.tokens, compiled.tokens)
    after = lm.rollout(controls_for(lm, seed=5), make_generators(5, 3))
    assert torch.equal(before.tokens, after.tokens) and torch.equal(before.logprobs, after.logprobs)


def test_the_compiled_step_is_traced_once_per_shape(tiny_lm):
    from torch._dynamo.utils import counters

    lm = lm_for(tiny_lm, "llama", prompts=PROMPTS[:2], compile=True, compile_backend="eager")
    lm.rollout(controls_for(lm, seed=0), make_generators(0, 2))  # traces: controlled, then free steps
    graphs = counters["stats"]["unique_graphs"]
    for seed in (1, 2):
        lm.rollout(controls_for(lm, seed=seed), make_generators(seed, 2))
    lm.with_options(max_new_tokens=12).rollout(controls_for(lm, seed=3), make_generators(3, 2))
    assert counters["stats"]["unique_graphs"] == graphs


def test_static_cache_copy_leaves_the_prompt_cache_alone_and_writes_in_place():
    from transformers import DynamicCache

    from mpc_llm.lm.cache import expand_cache

    g = torch.Generator().manual_seed(0)
    prompt = DynamicCache()
    prompt.update(torch.randn(2, 3, 5, 4, generator=g), torch.randn(2, 3, 5, 4, generator=g), 0)
    keys0 = prompt.layers[0].keys.clone()
    static = expand_cache(prompt, 3, extra=2, static=True)
    layer = static.layers[0]
    assert layer.keys.shape == (6, 3, 7, 4) and int(static.get_seq_length()) == 5
    assert torch.equal(layer.keys[:, :, :5], keys0.repeat_interleave(3, 0))
    k, v = torch.randn(6, 3, 1, 4, generator=g), torch.randn(6, 3, 1, 4, generator=g)
    keys, _ = static.update(k, v, 0)
    assert keys.data_ptr() == layer.keys.data_ptr() and torch.equal(keys[:, :, 5:6], k)
    assert int(static.get_seq_length()) == 6
    assert torch.equal(prompt.layers[0].keys, keys0) and prompt.get_seq_length() == 5


def test_compile_without_the_static_cache_is_refused():
    with pytest.raises(ValueError, match="compile=True needs the static cache"):
        LMConfig(compile=True, static_cache=False)
    assert LMConfig(compile=True).uses_static_cache and not LMConfig().uses_static_cache
