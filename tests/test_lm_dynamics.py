"""LMDynamics: the pre-logit-controlled, batched, KV-cached rollout engine.

Tiny random models of five architectures (GPT-2, Llama, Qwen2, Gemma-2 with soft-capping and a
sliding window, Phi with a head bias) are saved to disk and loaded back (fixtures in conftest.py).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from mpc_llm.dynamics import LMConfig, LMDynamics, LMRollout, make_generators
from mpc_llm.lm.sampling import filter_logits, sample_per_problem
from mpc_llm.lm.testing import TINY_ARCHITECTURES

PROMPTS = ["Hello there! How are you today?", "A", "Optimal control steers"]


def lm_for(tiny_lm, arch: str, prompts=PROMPTS, tau: int | None = None, **options) -> LMDynamics:
    """The tiny model as dynamics; ``lm.tau`` (a test attribute) is the controlled tokens of
    `random_controls` (default: the whole horizon)."""
    model, tok = tiny_lm(arch)
    options.setdefault("chat_template", False)
    lm = LMDynamics(model, tok, prompts, **options)
    lm.tau = tau or lm.horizon
    return lm


def random_controls(lm: LMDynamics, n: int, scale: float = 1.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tau = getattr(lm, "tau", lm.horizon)
    return scale * torch.randn(lm.batch_size, n, tau, lm.control_dim, generator=g)


def teacher_forced_prelogits(lm: LMDynamics, b: int, response: torch.Tensor) -> torch.Tensor:
    """``(T, d)`` pre-logits that produced each token of ``response``, from one uncached forward."""
    prompt = lm.encode_prompts()[b]
    ids = torch.tensor([prompt + response.tolist()])
    seen: list[torch.Tensor] = []
    handle = lm.model.get_output_embeddings().register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    try:
        with torch.no_grad():
            lm.model(input_ids=ids)
    finally:
        handle.remove()
    return seen[0][0, len(prompt) - 1 : len(prompt) - 1 + len(response)]


@torch.no_grad()
def head_by_hand(lm: LMDynamics, z: torch.Tensor, softcap: bool = True) -> torch.Tensor:
    """``F.linear(z, W, bias)`` then the final-logit soft-capping of the config, if any."""
    head = lm.model.get_output_embeddings()
    logits = F.linear(z, head.weight, head.bias)
    cap = getattr(lm.model.config, "final_logit_softcapping", None)
    if softcap and cap:
        logits = cap * torch.tanh(logits / cap)
    return logits


# --------------------------------------------------------------------------- equivalence
@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_zero_control_greedy_matches_generate(tiny_lm, arch):
    model, tok = tiny_lm(arch)
    lm = lm_for(tiny_lm, arch, prompts=[PROMPTS[0]], max_new_tokens=24, tau=8, greedy=True)
    ours = lm.rollout(torch.zeros(1, 1, 8, lm.control_dim), make_generators(0, 1))
    ids = torch.tensor([lm.encode_prompts()[0]])
    ref = model.generate(
        input_ids=ids,
        attention_mask=torch.ones_like(ids),
        max_new_tokens=24,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=list(lm.eos_token_ids),
    )[0, ids.shape[1] :]
    assert len(set(ref.tolist())) > 5, "the tiny model should not repeat one token"
    n = int(ours.lengths[0, 0])
    assert ours.tokens[0, 0, :n].tolist() == ref[:n].tolist()
    assert n == len(ref) or (n < len(ref) and ref[n - 1].item() in lm.eos_token_ids)


@pytest.mark.parametrize("arch", ["gpt2", "gemma2"])
def test_batched_greedy_matches_generate_with_left_padding(tiny_lm, arch):
    model, tok = tiny_lm(arch)
    lm = lm_for(tiny_lm, arch, prompts=PROMPTS, max_new_tokens=20, greedy=True)
    ours = lm.sample(1, make_generators(0, 3))
    encoded = lm.encode_prompts()
    width = max(map(len, encoded))
    ids = torch.tensor([[tok.pad_token_id] * (width - len(e)) + e for e in encoded])
    mask = torch.tensor([[0] * (width - len(e)) + [1] * len(e) for e in encoded])
    ref = model.generate(
        input_ids=ids,
        attention_mask=mask,
        max_new_tokens=20,
        do_sample=False,
        pad_token_id=tok.pad_token_id,
        eos_token_id=list(lm.eos_token_ids),
    )[:, width:]
    T = ours.tokens.shape[-1]
    assert ours.tokens[:, 0].tolist() == ref[:, :T].tolist()
    assert (ref[:, T:] == tok.pad_token_id).all()


@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_batched_equals_one_prompt_at_a_time(tiny_lm, arch):
    lm = lm_for(tiny_lm, arch, max_new_tokens=16, tau=5, temperature=0.9, top_k=100, top_p=0.95)
    controls = random_controls(lm, 4)
    seeds = [11, 22, 33]
    batched = lm.rollout(controls, make_generators(seeds, 3))
    assert batched.tokens.shape[:2] == (3, 4)
    for b, prompt in enumerate(PROMPTS):
        alone = lm.with_prompts([prompt]).rollout(controls[b : b + 1], make_generators([seeds[b]], 1))
        T = alone.tokens.shape[-1]
        assert torch.equal(alone.tokens[0], batched.tokens[b, :, :T])
        assert torch.equal(alone.lengths[0], batched.lengths[b])
        assert alone.texts[0] == batched.texts[b]


def test_same_seed_same_rollout_and_prefill_is_reused(tiny_lm):
    lm = lm_for(tiny_lm, "llama", max_new_tokens=10, tau=4)
    controls = random_controls(lm, 3)
    first = lm.rollout(controls, make_generators(5, 3))
    prefix = lm.prefill()
    second = lm.rollout(controls, make_generators(5, 3))
    assert lm.prefill() is prefix  # the prompts were prefilled once
    assert torch.equal(first.tokens, second.tokens)
    other = lm.rollout(controls, make_generators(6, 3))
    assert not torch.equal(first.tokens, other.tokens)
    # binding other prompts prefills again; the model is shared
    rebound = lm.with_prompts(["Another prompt"])
    assert rebound.model is lm.model and rebound.batch_size == 1 and lm.batch_size == 3


# --------------------------------------------------------------------------- the control
@pytest.mark.parametrize("arch", TINY_ARCHITECTURES)
def test_controlled_logits_are_the_head_applied_to_prelogit_plus_control(tiny_lm, arch):
    lm = lm_for(tiny_lm, arch, prompts=PROMPTS[:2], max_new_tokens=8, tau=4, return_logprobs=True)
    controls = random_controls(lm, 2, scale=2.0)
    rollout = lm.rollout(controls, make_generators(3, 2))
    T = rollout.tokens.shape[-1]
    for b in range(2):
        for n in range(2):
            length = int(rollout.lengths[b, n])
            response = rollout.tokens[b, n, :length]
            z = teacher_forced_prelogits(lm, b, response)
            v = torch.zeros_like(z)
            tau = min(lm.tau, length)
            v[:tau] = controls[b, n, :tau]
            want = head_by_hand(lm, z + v).log_softmax(-1).gather(-1, response[:, None])[:, 0]
            want_base = head_by_hand(lm, z).log_softmax(-1).gather(-1, response[:, None])[:, 0]
            torch.testing.assert_close(rollout.logprobs[b, n, :length], want, atol=2e-4, rtol=1e-4)
            torch.testing.assert_close(rollout.base_logprobs[b, n, :length], want_base, atol=2e-4, rtol=1e-4)
            assert (rollout.logprobs[b, n, length:T] == 0).all()
            if getattr(lm.model.config, "final_logit_softcapping", None):
                uncapped = head_by_hand(lm, z + v, softcap=False).log_softmax(-1)
                assert not torch.allclose(uncapped.gather(-1, response[:, None])[:, 0], want, atol=1e-3)
    # the control moved the controlled steps only
    lp, base = rollout.logprobs, rollout.base_logprobs
    assert not torch.allclose(lp[..., : lm.tau], base[..., : lm.tau])
    assert torch.equal(lp[..., lm.tau :], base[..., lm.tau :])


@pytest.mark.parametrize("arch", ["llama", "gemma2", "phi"])
def test_zero_control_leaves_logprobs_identical(tiny_lm, arch):
    lm = lm_for(tiny_lm, arch, max_new_tokens=8, tau=4, return_logprobs=True)
    plain = lm.sample(3, make_generators(1, 3))
    zero = lm.rollout(torch.zeros(3, 3, 4, lm.control_dim), make_generators(1, 3))
    assert torch.equal(plain.tokens, zero.tokens)
    assert torch.equal(zero.logprobs, zero.base_logprobs)
    assert torch.equal(zero.logprobs, plain.logprobs)  # all-zero controls skip the hook: bit for bit
    assert torch.equal(zero.kl_to_base(), torch.zeros(3, 3))
    assert bool((zero.controls == 0).all()) and zero.controls.shape == (3, 3, 4, lm.control_dim)
    # and they are the model's own log-probs (one uncached forward over prompt + response)
    response = zero.tokens[0, 0, : int(zero.lengths[0, 0])]
    z = teacher_forced_prelogits(lm, 0, response)
    own = head_by_hand(lm, z).log_softmax(-1).gather(-1, response[:, None])[:, 0]
    torch.testing.assert_close(zero.logprobs[0, 0, : len(response)], own, atol=2e-5, rtol=1e-5)


def test_a_large_control_steers_greedy_decoding_to_a_token(tiny_lm):
    lm = lm_for(
        tiny_lm, "llama", prompts=[PROMPTS[0]], max_new_tokens=6, tau=3, greedy=True, stop_at_eos=False
    )
    target = 200
    direction = lm.model.get_output_embeddings().weight[target].detach()
    controls = torch.zeros(1, 1, 3, lm.control_dim)
    controls[0, 0] = 50 * direction / direction.norm()
    rollout = lm.rollout(controls, make_generators(0, 1))
    assert rollout.tokens[0, 0, :3].tolist() == [target] * 3
    free = lm.sample(1, make_generators(0, 1))
    assert free.tokens[0, 0, :3].tolist() != [target] * 3


# --------------------------------------------------------------------------- stopping
def test_eos_ends_responses_masks_them_and_ends_the_loop(tiny_lm):
    _, tok = tiny_lm("qwen2")
    probe = lm_for(tiny_lm, "qwen2", prompts=[PROMPTS[0]], max_new_tokens=12, greedy=True, stop_at_eos=False)
    free = probe.sample(1, make_generators(0, 1)).tokens[0, 0].tolist()
    eos = free[4]
    k = free.index(eos)
    lm = probe.with_options(eos_token_id=eos, stop_at_eos=True)
    rollout = lm.rollout(torch.zeros(1, 2, lm.horizon, lm.control_dim), make_generators(0, 1))
    assert rollout.lengths.tolist() == [[k + 1, k + 1]]  # the EOS counts
    assert rollout.tokens.shape[-1] == k + 1  # the loop stopped when all were done
    assert rollout.tokens[0, 0].tolist() == free[: k + 1]
    assert rollout.tokens_generated == 2 * (k + 1)
    assert rollout.texts[0][0] == tok.decode(free[:k], skip_special_tokens=True) + tok.decode(
        [eos], skip_special_tokens=True
    )


def test_finished_rows_are_padded_while_others_continue(tiny_lm):
    lm = lm_for(tiny_lm, "gpt2", max_new_tokens=16, temperature=1.5)
    probe = lm.with_options(stop_at_eos=False).sample(4, make_generators(0, 3))
    eos = int(probe.tokens[0, 0, 2])  # a token that ends sample (0, 0) early
    stopped = lm.with_options(eos_token_id=eos).sample(4, make_generators(0, 3))
    lengths = stopped.lengths
    assert int(lengths[0, 0]) <= 3
    T = stopped.tokens.shape[-1]
    past_end = torch.arange(T) >= lengths.unsqueeze(-1)
    assert (stopped.tokens[past_end] == lm.pad_token_id).all()
    assert (stopped.tokens[~past_end] == probe.tokens[..., :T][~past_end]).all()
    assert int(lengths.max()) == T


def test_stop_strings_end_the_response_and_are_cut_from_the_text(tiny_lm):
    _, tok = tiny_lm("llama")
    lm = lm_for(tiny_lm, "llama", prompts=[PROMPTS[0]], max_new_tokens=20, greedy=True, stop_at_eos=False)
    free = lm.sample(1, make_generators(0, 1))
    text = free.texts[0][0]
    tokens = free.tokens[0, 0].tolist()
    # a stop string made of the text of tokens 5 and 6
    stop = tok.decode(tokens[5:7])
    assert stop and stop in text
    stopped = lm.with_options(stop_strings=[stop]).sample(1, make_generators(0, 1))
    n = int(stopped.lengths[0, 0])
    assert n <= 7 and stop in tok.decode(tokens[:n])
    assert stopped.texts[0][0] == text[: text.index(stop)]
    assert stopped.tokens.shape[-1] == n


# --------------------------------------------------------------------------- sampling helpers
def test_filter_logits_top_k_and_top_p():
    logits = torch.tensor([[3.0, 1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 5.0]])
    top2 = filter_logits(logits, top_k=2)
    assert torch.isfinite(top2[0]).tolist() == [True, False, True, False]
    assert torch.equal(top2[0, [0, 2]], logits[0, [0, 2]])
    probs = logits.softmax(-1)
    nucleus = filter_logits(logits, top_p=0.7)
    kept = torch.isfinite(nucleus)
    assert kept[0].tolist() == [True, False, True, False]  # 0.66 + 0.24 >= 0.7
    assert kept[1].tolist() == [False, False, False, True]  # 0.98 alone
    assert probs[0, kept[0]].sum() >= 0.7
    assert torch.equal(filter_logits(logits, top_p=1e-9).argmax(-1), logits.argmax(-1))


def test_inverse_cdf_sampling_has_the_right_distribution_and_skips_zero_weights():
    weights = torch.tensor([0.0, 1.0, 0.0, 3.0, 6.0, 0.0])
    rows = weights.repeat(20000, 1)
    draws = sample_per_problem(rows, make_generators(0, 1))
    freq = torch.bincount(draws, minlength=6).float() / len(draws)
    torch.testing.assert_close(freq, weights / weights.sum(), atol=0.01, rtol=0)
    assert freq[[0, 2, 5]].sum() == 0
    # problem b's draws come from generators[b] only
    two = sample_per_problem(weights.repeat(8, 1), make_generators([1, 2], 2))
    alone = sample_per_problem(weights.repeat(4, 1), make_generators([2], 1))
    assert torch.equal(two[4:], alone)


def test_top_k_one_is_greedy(tiny_lm):
    lm = lm_for(tiny_lm, "llama", max_new_tokens=8)
    greedy = lm.with_options(greedy=True).sample(1, make_generators(0, 3))
    top1 = lm.with_options(top_k=1).sample(2, make_generators(0, 3))
    assert torch.equal(top1.tokens[:, 0], greedy.tokens[:, 0])
    assert torch.equal(top1.tokens[:, 1], greedy.tokens[:, 0])


# --------------------------------------------------------------------------- prompts
def test_chat_messages_and_strings_with_the_chat_template(tiny_lm):
    model, tok = tiny_lm("llama")
    as_string = LMDynamics(model, tok, ["Hi there"], max_new_tokens=4)
    as_messages = LMDynamics(model, tok, [[{"role": "user", "content": "Hi there"}]], max_new_tokens=4)
    assert as_string.encode_prompts() == as_messages.encode_prompts()
    text = tok.decode(as_string.encode_prompts()[0])
    assert text.startswith("<|im_start|>user\nHi there") and text.endswith("<|im_start|>assistant\n")
    plain = LMDynamics(model, tok, ["Hi there"], max_new_tokens=4, chat_template=False)
    assert plain.encode_prompts() == [tok("Hi there")["input_ids"]]
    with pytest.raises(ValueError, match="chat messages but chat templates are off"):
        LMDynamics(model, tok, [[{"role": "user", "content": "Hi"}]], chat_template=False).encode_prompts()
    # a single prompt (string or conversation) is a batch of one
    assert LMDynamics(model, tok, "Hi", max_new_tokens=4).batch_size == 1
    assert LMDynamics(model, tok, [{"role": "user", "content": "Hi"}], max_new_tokens=4).batch_size == 1


def test_no_chat_template_is_a_clear_error(tiny_lm):
    model, tok = tiny_lm("gpt2")
    tok2 = copy.deepcopy(tok)
    tok2.chat_template = None
    lm = LMDynamics(model, tok2, ["Hi"], chat_template=True)
    with pytest.raises(ValueError, match="no chat template"):
        lm.encode_prompts()
    assert LMDynamics(model, tok2, ["Hi"]).encode_prompts() == [tok2("Hi")["input_ids"]]  # auto: plain


# --------------------------------------------------------------------------- shapes, dtypes, errors
def test_rollout_fields_and_shapes(tiny_lm):
    lm = lm_for(tiny_lm, "llama", max_new_tokens=6, tau=4, return_logprobs=True)
    assert (lm.batch_size, lm.horizon, lm.tau, lm.control_dim) == (3, 6, 4, 64)
    assert lm.device == torch.device("cpu") and lm.dtype == torch.float32
    controls = random_controls(lm, 5)
    r = lm.rollout(controls, make_generators(0, 3))
    assert isinstance(r, LMRollout) and r.controls is controls
    T = r.tokens.shape[-1]
    assert r.tokens.shape == (3, 5, T) and r.lengths.shape == (3, 5) and T <= 6
    assert r.logprobs.shape == r.base_logprobs.shape == (3, 5, T)
    assert len(r.texts) == 3 and all(len(row) == 5 for row in r.texts)
    assert r.prompts == PROMPTS and r.pad_token_id == lm.pad_token_id
    assert r.tokens_generated == int(r.lengths.sum())
    best = r.take(torch.tensor([[1], [0], [4]]))
    assert best.tokens.shape == (3, 1, T) and best.texts[2] == [r.texts[2][4]]


def test_cat_pads_tokens_with_the_pad_id(tiny_lm):
    lm = lm_for(tiny_lm, "llama", prompts=[PROMPTS[0]], max_new_tokens=6, greedy=True, stop_at_eos=False)
    long = lm.sample(1, make_generators(0, 1))
    short = lm.with_options(max_new_tokens=3).sample(1, make_generators(0, 1))
    short = LMRollout(**{**short.__dict__, "controls": torch.zeros(1, 1, 6, lm.control_dim)})
    both = LMRollout.cat([short, long])
    assert both.tokens.shape == (1, 2, 6)
    assert both.tokens[0, 0, 3:].tolist() == [lm.pad_token_id] * 3
    assert both.lengths.tolist() == [[3, 6]]


def test_bfloat16_model_takes_float32_controls(tiny_lm):
    model, tok = tiny_lm("llama")
    lm = LMDynamics(
        copy.deepcopy(model), tok, PROMPTS[:2], dtype="bfloat16", max_new_tokens=4, return_logprobs=True
    )
    assert lm.model_dtype == torch.bfloat16 and lm.dtype == torch.float32
    r = lm.rollout(random_controls(lm, 2), make_generators(0, 2))
    assert torch.isfinite(r.logprobs).all() and r.logprobs.dtype == torch.float32


def test_wrong_control_shape_says_what_was_expected(tiny_lm):
    lm = lm_for(tiny_lm, "llama", max_new_tokens=6, tau=4)
    with pytest.raises(ValueError, match=r"\(B, N, tau, d\) = \(3, 'N', 'tau<=6', 64\)"):
        lm.rollout(torch.zeros(3, 2, 7, 64), make_generators(0, 3))
    with pytest.raises(ValueError, match=r"\(B, N, tau, d\)"):
        lm.rollout(torch.zeros(2, 2, 4, 64), make_generators(0, 2))
    with pytest.raises(ValueError, match="3 generators"):
        lm.rollout(torch.zeros(3, 2, 4, 64), make_generators(0, 2))


def test_prompt_longer_than_the_context_is_a_clear_error(tiny_lm):
    model, tok = tiny_lm("gpt2")  # n_positions = 256
    long_prompt = "Hello there! " * 200
    lm = LMDynamics(model, tok, [long_prompt], max_new_tokens=8, chat_template=False)
    with pytest.raises(ValueError, match=r"prompt 0 has \d+ tokens, longer than the model's context of 256"):
        lm.rollout(torch.zeros(1, 1, 8, lm.control_dim), make_generators(0, 1))
    fits = LMDynamics(model, tok, ["Hello"], max_new_tokens=300, chat_template=False)
    with pytest.raises(ValueError, match="lower max_new_tokens"):
        fits.sample(1, make_generators(0, 1))


def test_bad_options_are_rejected_with_the_field_name():
    with pytest.raises(ValueError, match=r"tau .* is a controller setting"):
        LMConfig(max_new_tokens=8, tau=9)
    with pytest.raises(ValueError, match="temperature"):
        LMConfig(temperature=0)
    with pytest.raises(ValueError, match="top_p"):
        LMConfig(top_p=1.5)
    with pytest.raises(ValueError, match="max_new_token"):
        LMConfig(max_new_token=3)  # a typo is not silently ignored


def test_unbound_dynamics_says_how_to_bind(tiny_lm):
    model, tok = tiny_lm("llama")
    lm = LMDynamics(model, tok)
    with pytest.raises(ValueError, match="with_prompts"):
        _ = lm.batch_size
    assert lm.with_prompts(["Hi"]).batch_size == 1
    with pytest.raises(ValueError, match="tokenizer"):
        LMDynamics(model)


def test_a_model_that_bypasses_its_head_module_is_refused(tiny_lm):
    lm = lm_for(tiny_lm, "llama", max_new_tokens=3)
    lm.engine.adapter.head = torch.nn.Linear(64, 320, bias=False)  # a module the model never calls
    with pytest.raises(RuntimeError, match="without calling its output embedding"):
        lm.rollout(torch.zeros(3, 1, 3, 64), make_generators(0, 3))


def test_a_controller_runs_on_the_lm(tiny_lm):
    from mpc_llm.controllers import AISP
    from mpc_llm.core import CostFunction

    class TokenCount(CostFunction):
        """Cost: minus the number of times token 200 appears."""

        def __call__(self, rollout):
            return -(rollout.tokens == 200).sum(-1).double()

    lm = lm_for(tiny_lm, "llama", prompts=PROMPTS[:2], max_new_tokens=6, tau=6)
    result = AISP(sigma=2.0, lambda_=0.5, num_samples=4, num_iterations=2).optimize(lm, TokenCount(), seed=0)
    assert result.best_rollout.tokens.shape[:2] == (2, 1)
    assert result.budget.samples == 8 and result.budget.tokens > 0


def test_expanded_cache_grows_in_place_and_leaves_the_prompt_cache_alone():
    from transformers import DynamicCache

    from mpc_llm.lm.cache import expand_cache

    g = torch.Generator().manual_seed(0)
    prompt = DynamicCache()
    prompt.update(torch.randn(2, 3, 5, 4, generator=g), torch.randn(2, 3, 5, 4, generator=g), 0)
    keys0 = prompt.layers[0].keys.clone()
    reference = DynamicCache()
    reference.update(keys0.repeat_interleave(3, 0), prompt.layers[0].values.repeat_interleave(3, 0), 0)
    grown = expand_cache(prompt, 3, extra=2)
    for step in range(4):  # two past the preallocated room: the buffer is rebuilt
        k, v = torch.randn(6, 3, 1, 4, generator=g), torch.randn(6, 3, 1, 4, generator=g)
        got, want = grown.update(k, v, 0), reference.update(k, v, 0)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
        assert grown.get_seq_length() == 6 + step
    grown.crop(-2)
    reference.crop(-2)
    k, v = torch.randn(6, 3, 1, 4, generator=g), torch.randn(6, 3, 1, 4, generator=g)
    assert torch.equal(grown.update(k, v, 0)[0], reference.update(k, v, 0)[0])
    assert torch.equal(prompt.layers[0].keys, keys0) and prompt.get_seq_length() == 5
