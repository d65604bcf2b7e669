"""The engine in both dtypes (bfloat16 where the CPU computes it natively) and per-row commits on a
language model (`LMDynamics.advance` with one count per row)."""

from __future__ import annotations

import copy

import pytest
import torch

from mpc_llm.controllers import QAlign
from mpc_llm.core import make_generators
from mpc_llm.dynamics import LMDynamics
from mpc_llm.lm.precision import native_bfloat16
from mpc_llm.rewards import KeywordReward

PROMPTS = ["Hello there! How are you today?", "A", "Optimal control steers"]
DTYPES = [
    torch.float32,
    pytest.param(
        torch.bfloat16,
        marks=pytest.mark.skipif(not native_bfloat16("cpu"), reason="this CPU has no native bfloat16"),
    ),
]


def lm_in(tiny_lm, arch: str, dtype: torch.dtype, prompts=PROMPTS, **options) -> LMDynamics:
    model, tok = tiny_lm(arch)
    options.setdefault("chat_template", False)
    return LMDynamics(copy.deepcopy(model), tok, prompts, dtype=dtype, **options)


# --------------------------------------------------------------------------- both dtypes
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("arch", ["llama", "gemma2"])
def test_zero_control_greedy_is_the_models_own_generate_in_its_dtype(tiny_lm, arch, dtype):
    lm = lm_in(tiny_lm, arch, dtype, prompts=[PROMPTS[0]], max_new_tokens=16, greedy=True)
    assert lm.model_dtype == dtype and lm.dtype == torch.float32  # controls stay float32
    ours = lm.rollout(torch.zeros(1, 1, 16, lm.control_dim), make_generators(0, 1))
    ids = torch.tensor([lm.encode_prompts()[0]])
    ref = lm.model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False,
        pad_token_id=lm.pad_token_id, eos_token_id=list(lm.eos_token_ids),
    )[0, ids.shape[1] :]  # fmt: skip
    n = int(ours.lengths[0, 0])
    assert ours.tokens[0, 0, :n].tolist() == ref[:n].tolist()


@pytest.mark.parametrize("dtype", DTYPES)
def test_teacher_forced_log_likelihood_equals_the_recorded_one_in_each_dtype(tiny_lm, dtype):
    """What the decode recorded (float32 from the logits sampled from) is what a teacher-forced pass
    over the same tokens gives, in the model's dtype: to rounding of the batch shapes only."""
    lm = lm_in(tiny_lm, "llama", dtype, max_new_tokens=8, temperature=1.0, return_logprobs=True)
    controls = 3.0 * torch.randn(3, 2, 5, lm.control_dim, generator=torch.Generator().manual_seed(0))
    rollout = lm.rollout(controls, make_generators(1, 3))
    assert rollout.logprobs.dtype == torch.float32
    got = lm.closeness_to_base(rollout, controls)
    want = rollout.base_logprobs.sum(-1).double() / rollout.lengths.double()
    tol = 2e-4 if dtype == torch.float32 else 3e-2
    torch.testing.assert_close(got["base_logp_mean"], want, atol=tol, rtol=tol)
    torch.testing.assert_close(got["kl_estimate"], rollout.kl_to_base().double(), atol=8 * tol, rtol=tol)
    assert float(rollout.kl_to_base().abs().sum()) > 1e-2  # the controls moved the distribution


@pytest.mark.skipif(not native_bfloat16("cpu"), reason="this CPU has no native bfloat16")
def test_a_control_is_added_in_float32_and_rounded_once():
    """A control below bfloat16's resolution of the pre-logit still moves it when added in float32
    and rounded once (adding a bfloat16-rounded copy would round it away or double-round it)."""
    from mpc_llm.lm.control import PreLogitControl

    z = torch.full((1, 1, 4), 256.0, dtype=torch.bfloat16)  # bfloat16 spacing at 256: 2
    hook = PreLogitControl()
    hook.control = torch.tensor([[1.5, 0.9, -1.5, 0.0]])
    (zv,) = hook(torch.nn.Identity(), (z,))
    assert zv.dtype == torch.bfloat16
    assert zv[0, 0].tolist() == [258.0, 256.0, 254.0, 256.0]  # round(256 + v) once, in float32


# --------------------------------------------------------------------------- per-row commits
def greedy_lm(tiny_lm, **options) -> LMDynamics:
    return lm_in(tiny_lm, "llama", torch.float32, max_new_tokens=12, greedy=True, **options)


def test_per_row_commits_give_the_tokens_of_committing_each_row_alone(tiny_lm):
    lm = greedy_lm(tiny_lm, return_logprobs=True)
    assert lm.commits_per_row
    first = lm.sample(1, make_generators(0, 3))
    counts = [3, 0, 7]
    later = lm.advance(first, counts)
    assert later.committed_counts.tolist() == counts and later.committed == 0 and later.horizon == 12
    torch.manual_seed(0)
    together = later.rollout(0.5 * torch.randn(3, 2, 4, lm.control_dim), make_generators(5, 3))
    assert together.prefix_lengths[:, 0].tolist() == counts
    for b, k in enumerate(counts):
        alone = lm.select([b])
        if k:
            alone = alone.advance(first.problems([b]), k)
        torch.manual_seed(0)
        controls = 0.5 * torch.randn(3, 2, 4, lm.control_dim)[b : b + 1]
        ref = alone.rollout(controls, [make_generators(5, 3)[b]])
        T = int(ref.lengths.max())
        assert together.tokens[b, :, :T].tolist() == ref.tokens[0, :, :T].tolist()
        assert together.lengths[b].tolist() == ref.lengths[0].tolist()
        assert together.texts[b] == ref.texts[0]
        # every row stops at max_new_tokens in all; the committed tokens come first, with their log-probs
        assert int(together.lengths[b].max()) <= 12
        assert together.tokens[b, 0, :k].tolist() == first.tokens[b, 0, :k].tolist()
        torch.testing.assert_close(together.logprobs[b, :, :k], first.logprobs[b, :, :k].expand(2, k))


def test_per_row_commits_accumulate_and_select_keeps_each_rows_history(tiny_lm):
    lm = greedy_lm(tiny_lm)
    first = lm.sample(1, make_generators(0, 3))
    once = lm.advance(first, [2, 1, 0])
    twice = once.advance(once.sample(1, make_generators(1, 3)), [1, 0, 4])
    assert twice.committed_counts.tolist() == [3, 1, 4]
    whole = lm.sample(1, make_generators(0, 3))  # greedy: the same responses
    ahead = twice.sample(1, make_generators(2, 3))
    assert ahead.tokens[:, 0, :3].tolist()[0] == whole.tokens[0, 0, :3].tolist()
    picked = twice.select([2, 0])
    assert picked.committed_counts.tolist() == [4, 3]
    again = picked.sample(1, make_generators(2, 2))
    assert again.tokens[:, 0].tolist() == [ahead.tokens[2, 0, : again.tokens.shape[-1]].tolist(),
                                           ahead.tokens[0, 0, : again.tokens.shape[-1]].tolist()]  # fmt: skip


def test_per_row_commit_counts_are_checked(tiny_lm):
    lm = greedy_lm(tiny_lm)
    first = lm.sample(1, make_generators(0, 3))
    with pytest.raises(ValueError, match="one count per row, each in"):
        lm.advance(first, [1, 2])
    with pytest.raises(ValueError, match="one count per row, each in"):
        lm.advance(first, [1, -1, 0])
    with pytest.raises(ValueError, match="one count per row, each in"):
        lm.advance(first, [13, 0, 0])
    with pytest.raises(ValueError, match=r"steps must be in \[1, 12\]"):
        lm.advance(first, 0)


def test_qalign_on_a_language_model_decodes_once_per_proposal_and_equals_the_grouped_path(tiny_lm):
    lm = lm_in(tiny_lm, "llama", torch.float32, max_new_tokens=10, temperature=1.0)
    cost = KeywordReward(["the", "a"]).as_cost()
    calls = []
    decode = lm.engine.decode

    def counting(*args, **kwargs):
        calls.append(1)
        return decode(*args, **kwargs)

    lm.engine.decode = counting  # type: ignore[method-assign]
    per_row = QAlign(beta=0.5, num_steps=6).optimize(lm, cost, seed=[3, 4, 5])  # chains draw apart
    assert len(calls) == 7  # the first response and one decode per proposal

    class Grouped(LMDynamics):
        commits_per_row = False  # QAlign falls back to one decode per kept-prefix length

    grouped_lm = copy.copy(lm)
    grouped_lm.__class__ = Grouped
    grouped = QAlign(beta=0.5, num_steps=6).optimize(grouped_lm, cost, seed=[3, 4, 5])
    assert len(calls) > 7 + 7
    assert per_row.best_rollout.texts == grouped.best_rollout.texts
    torch.testing.assert_close(per_row.best_cost, grouped.best_cost)


# --------------------------------------------------------------------------- bad input
NO_MODEL = "/nonexistent/model"  # an error about the model would mean the dtype was checked too late


def _no_native_bfloat16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)


@pytest.mark.parametrize(
    ("argv", "native", "message"),
    [
        (["align", "Hi", "--dtype", "int8"], True, "unknown dtype 'int8'; use auto, float32, bfloat16"),
        (["compare", "--dtype", "fp8", "--out", "{out}"], True, "unknown dtype 'fp8'"),
        (["align", "Hi", "--dtype", "bfloat16"], False,
         "--dtype bfloat16: this CPU has no AVX-512 BF16 or AMX, so bfloat16 would be emulated"),
        (["compare", "--dtype", "bf16", "--out", "{out}"], False, "--dtype bf16: this CPU has no AVX-512"),
        (["train-value", "--dtype", "bfloat16", "--out", "{out}"], False, "--dtype bfloat16: this CPU"),
    ],
)  # fmt: skip
def test_a_bad_dtype_is_one_line_before_any_model_loads(argv, native, message, tmp_path, monkeypatch, capsys):
    from mpc_llm.cli import main

    if not native:
        _no_native_bfloat16(monkeypatch)
    out = tmp_path / "run"
    code = main([a.replace("{out}", str(out)) for a in argv] + ["--model", NO_MODEL, "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("mpc-llm: error:"), err
    assert message in err[0] and NO_MODEL not in err[0]
    assert not out.exists()


def test_auto_picks_float32_on_a_cpu_without_native_bfloat16(tiny_model_dir, monkeypatch):
    _no_native_bfloat16(monkeypatch)
    lm = LMDynamics(str(tiny_model_dir("llama")), prompts=["Hi"], max_new_tokens=2, chat_template=False)
    assert lm.model_dtype == torch.float32


def test_grouped_attention_is_for_half_precision_on_cpu_and_restores_the_environment(monkeypatch):
    import os

    from mpc_llm.lm.attention import FLAG, grouped_attention, wants_grouped_attention

    cpu = torch.device("cpu")
    assert wants_grouped_attention(cpu, torch.bfloat16) and wants_grouped_attention(cpu, torch.float16)
    assert not wants_grouped_attention(cpu, torch.float32)  # float32 keeps the kernels (and tokens) it had
    assert not wants_grouped_attention(torch.device("cuda"), torch.bfloat16)
    monkeypatch.delenv(FLAG, raising=False)
    with grouped_attention(True):
        assert os.environ[FLAG] == "1"
    assert FLAG not in os.environ
    monkeypatch.setenv(FLAG, "0")
    with pytest.raises(RuntimeError), grouped_attention(True):
        raise RuntimeError
    assert os.environ[FLAG] == "0"
    with grouped_attention(False):
        assert os.environ[FLAG] == "0"


@pytest.mark.parametrize("dtype", DTYPES)
def test_records_and_settings_say_which_dtype_ran(tiny_model_dir, tmp_path, dtype):
    import json

    from mpc_llm.cli import main

    name = str(dtype).removeprefix("torch.")
    out = tmp_path / "run"
    argv = ["compare", "--model", str(tiny_model_dir("llama")), "--reward", "length", "--prompts", "bundled",
            "--num-prompts", "1", "--controllers", "best_of_n", "--budgets", "2", "-n", "2",
            "--max-new-tokens", "4", "--out", str(out), "--quiet"]  # fmt: skip
    assert main([*argv, "--dtype", name if dtype == torch.float32 else "auto"]) == 0
    assert json.loads((out / "settings.json").read_text())["dtype"] == name
    records = [json.loads(line) for line in (out / "records.jsonl").read_text().splitlines()]
    assert records and all(r["dtype"] == name for r in records)


@pytest.mark.parametrize(
    ("temperature", "top_k", "top_p"), [(0.7, None, None), (1.0, None, None), (0.9, 50, 0.9)]
)
def test_kept_work_tensors_choose_the_same_tokens(temperature, top_k, top_p):
    from mpc_llm.lm.sampling import Scratch, choose_tokens

    logits = 3.0 * torch.randn(6, 1000, generator=torch.Generator().manual_seed(1))
    scratch = Scratch()
    for step in range(3):  # the kept tensors are reused, and overwritten, step after step
        step_logits = logits.roll(step, dims=-1)
        options = {"greedy": False, "temperature": temperature, "top_k": top_k, "top_p": top_p}
        fresh = choose_tokens(step_logits, make_generators(step, 2), **options)
        kept = choose_tokens(step_logits, make_generators(step, 2), scratch=scratch, **options)
        assert torch.equal(fresh, kept)


@pytest.mark.skipif(not native_bfloat16("cpu"), reason="this CPU has no native bfloat16")
def test_a_float32_value_steers_a_bfloat16_model_and_closeness_follows_the_applied_controls(
    tiny_lm, tmp_path
):
    from mpc_llm.controllers import REControl
    from mpc_llm.rewards import CallableReward
    from mpc_llm.values import ValueMLP, save_value

    full = lm_in(tiny_lm, "llama", torch.float32, prompts=PROMPTS[:2], max_new_tokens=8, return_logprobs=True)
    half = lm_in(
        tiny_lm, "llama", torch.bfloat16, prompts=PROMPTS[:2], max_new_tokens=8, return_logprobs=True
    )
    assert half.model_fingerprint() == full.model_fingerprint()  # one model, whatever its dtype
    torch.manual_seed(0)
    save_value(ValueMLP(full.control_dim, width=16, depth=1),
               {"model": "tiny-llama", "model_fingerprint": full.model_fingerprint(), "dtype": "float32"},
               tmp_path / "v")  # fmt: skip
    cost = CallableReward(lambda p, r: r.count("a") / max(1, len(r))).as_cost()
    result = REControl(value=str(tmp_path / "v"), num_steps=3, step_size=50.0, num_samples=2).optimize(
        half, cost, seed=5, keep_rollouts=True
    )
    rollout = result.history[0].rollout
    assert rollout.controls.dtype == torch.float32 and float(rollout.controls.abs().max()) > 0
    kl = half.closeness_to_base(rollout, rollout.controls)["kl_estimate"]
    torch.testing.assert_close(kl.float(), rollout.kl_to_base(), atol=0.1, rtol=0.05)
