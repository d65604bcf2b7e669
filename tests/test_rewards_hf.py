"""Model-based rewards on tiny random models saved to disk: HF reward models, LLM-as-judge, embeddings.

The real embedded SmolLM2 judge test is marked ``smollm`` (slow: GGUF de-quantisation).
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")
from tokenizers import Tokenizer, models, pre_tokenizers, processors  # noqa: E402
from transformers import (  # noqa: E402
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    PreTrainedTokenizerFast,
)

from mpc_llm.lm.precision import auto_dtype  # noqa: E402
from mpc_llm.rewards import (  # noqa: E402
    EmbeddingSimilarityReward,
    HFRewardModel,
    JudgeReward,
    MissingDependencyError,
    make_reward,
)

WORDS = [
    "the",
    "a",
    "good",
    "bad",
    "movie",
    "film",
    "is",
    "was",
    "great",
    "awful",
    "terrible",
    "yes",
    "no",
    "Yes",
    "No",
    "?",
    ".",
    "!",
    ",",
    ":",
    "hello",
    "world",
    "what",
    "how",
    "are",
    "you",
    "i",
    "love",
    "hate",
    "this",
    "it",
    "request",
    "response",
    "answer",
    "read",
    "below",
    "helpful",
    "polite",
]

PROMPTS = ["what is the film ?", "hello", "how are you ?", [{"role": "user", "content": "i love this"}], "a"]
RESPONSES = ["it was great !", "hello world", "bad", "the movie was a good film , i love it", ""]

CHAT_TEMPLATE = (
    "{{ '<s>' }}{% for m in messages %}{{ '<|' + m['role'] + '|> ' + m['content'] + ' </s> ' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}"
)


def make_tokenizer(folder: Path, kind: str) -> None:
    """A tiny WordLevel tokenizer: an encoder one (CLS/SEP pairs) or a decoder one (BOS/EOS, chat)."""
    if kind == "encoder":
        special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]"]
    else:
        special = ["<unk>", "<s>", "</s>", "<|user|>", "<|assistant|>", "<|system|>"]
    vocab = {w: i for i, w in enumerate(special + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token=special[1] if kind == "encoder" else "<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    if kind == "encoder":
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]",
            pair="[CLS] $A [SEP] $B:1 [SEP]:1",
            special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            unk_token="[UNK]",
            pad_token="[PAD]",
            cls_token="[CLS]",
            sep_token="[SEP]",
            model_max_length=64,
            model_input_names=["input_ids", "token_type_ids", "attention_mask"],
        )
    else:  # no pad token: the reward must fall back to EOS
        tok.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
        )
        fast = PreTrainedTokenizerFast(
            tokenizer_object=tok,
            unk_token="<unk>",
            bos_token="<s>",
            eos_token="</s>",
            additional_special_tokens=["<|user|>", "<|assistant|>", "<|system|>"],
        )
    fast.save_pretrained(folder)


def make_config(arch: str, vocab_size: int, num_labels: int = 1) -> transformers.PretrainedConfig:
    small = {"num_labels": num_labels, "initializer_range": 0.3}
    if arch == "bert":
        return transformers.BertConfig(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, max_position_embeddings=64, pad_token_id=0, **small,
        )  # fmt: skip
    if arch == "deberta-v2":
        return transformers.DebertaV2Config(
            vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=48, max_position_embeddings=64, pad_token_id=0, type_vocab_size=0,
            relative_attention=True, position_biased_input=False, pos_att_type=["p2c", "c2p"],
            position_buckets=16, max_relative_positions=-1, **small,
        )  # fmt: skip
    if arch == "llama":
        return transformers.LlamaConfig(
            vocab_size=vocab_size, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            bos_token_id=1, eos_token_id=2, pad_token_id=None, **small,
        )  # fmt: skip
    if arch == "gpt2":
        return transformers.GPT2Config(
            vocab_size=vocab_size, n_embd=32, n_layer=2, n_head=4, n_positions=128,
            bos_token_id=1, eos_token_id=2, pad_token_id=None, **small,
        )  # fmt: skip
    raise ValueError(arch)


ENCODERS = ["bert", "deberta-v2"]
DECODERS = ["llama", "gpt2"]


def save_classifier(folder: Path, arch: str, num_labels: int = 1) -> Path:
    make_tokenizer(folder, "encoder" if arch in ENCODERS else "decoder")
    if arch == "llama":  # the Llama-style reward model reads a chat; the GPT-2 one reads text pairs
        tok = AutoTokenizer.from_pretrained(folder)
        tok.chat_template = CHAT_TEMPLATE
        tok.save_pretrained(folder)
    vocab_size = len(AutoTokenizer.from_pretrained(folder))
    torch.manual_seed(0)
    model = AutoModelForSequenceClassification.from_config(make_config(arch, vocab_size, num_labels))
    model.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=ENCODERS + DECODERS)
def classifier_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_classifier(tmp_path_factory.mktemp(request.param), request.param)


def direct_scores(folder: Path, prompts: list, responses: list[str], index: int = 0) -> torch.Tensor:
    """Each pair through a freshly loaded model, alone and unpadded, the way its model card does it."""
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    if model.config.pad_token_id is None:  # pad = EOS: the last non-pad token is read (HF convention)
        model.config.pad_token_id = tok.eos_token_id
    out = []
    for p, r in zip(prompts, responses, strict=True):
        if tok.chat_template is not None:
            msgs = p if isinstance(p, list) else [{"role": "user", "content": p}]
            text = tok.apply_chat_template([*msgs, {"role": "assistant", "content": r}], tokenize=False)
            enc = tok(text, add_special_tokens=False, return_tensors="pt")
        else:
            p = p if isinstance(p, str) else p[-1]["content"]
            enc = tok([p], [r], return_tensors="pt")  # (a lone pair with an empty second text drops it)
        with torch.no_grad():
            out.append(model(**enc).logits[0, index])
    return torch.stack(out)


# --------------------------------------------------------------------------- HF reward models
def test_hf_reward_batched_equals_single_equals_direct(classifier_dir: Path) -> None:
    batched = HFRewardModel(classifier_dir, batch_size=4)
    single = HFRewardModel(classifier_dir, batch_size=1)
    a = batched.score(PROMPTS, RESPONSES)
    b = single.score(PROMPTS, RESPONSES)
    expected = direct_scores(classifier_dir, PROMPTS, RESPONSES)
    assert a.shape == (len(RESPONSES),) and a.dtype == torch.float32
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(a, expected, atol=1e-5, rtol=1e-4)
    assert a.std() > 1e-4  # the tiny model does distinguish inputs


def test_hf_reward_uses_chat_template_and_pad_fallback(tmp_path: Path) -> None:
    folder = save_classifier(tmp_path, "llama")
    reward = HFRewardModel(folder)
    assert reward.use_chat_template
    assert reward.tokenizer.pad_token == "</s>" and reward.model.config.pad_token_id == 2
    enc = reward.encode(["hello"], ["good"])
    text = reward.tokenizer.decode(enc["input_ids"][0])
    assert "<|user|>" in text and "<|assistant|>" in text
    # chat prompts keep their messages
    chat = [{"role": "system", "content": "be polite"}, {"role": "user", "content": "hello"}]
    assert "<|system|>" in reward.tokenizer.decode(reward.encode([chat], ["good"])["input_ids"][0])
    off = HFRewardModel(folder, use_chat_template=False)
    assert "<|user|>" not in off.tokenizer.decode(off.encode(["hello"], ["good"])["input_ids"][0])


def test_hf_reward_truncates_to_max_length(tmp_path: Path) -> None:
    folder = save_classifier(tmp_path, "bert")
    reward = HFRewardModel(folder, max_length=8)
    long = " ".join(["good"] * 100)
    assert reward.encode(["hello"], [long])["input_ids"].shape[1] == 8
    assert torch.isfinite(reward.score("hello", [long, "bad"])).all()
    default = HFRewardModel(folder)
    assert default.max_length == 64  # the tokenizer's model_max_length
    assert default.encode(["hello"], [" ".join(["good"] * 200)])["input_ids"].shape[1] == 64


def test_hf_reward_several_labels_needs_output_index(tmp_path: Path) -> None:
    folder = save_classifier(tmp_path, "bert", num_labels=3)
    with pytest.raises(ValueError, match=r"num_labels=3.*output_index"):
        HFRewardModel(folder)
    with pytest.raises(ValueError, match="out of range"):
        HFRewardModel(folder, output_index=3)
    reward = HFRewardModel(folder, output_index=2, batch_size=2)
    torch.testing.assert_close(
        reward.score(PROMPTS, RESPONSES),
        direct_scores(folder, PROMPTS, RESPONSES, index=2),
        atol=1e-5,
        rtol=1e-4,
    )


def test_hf_reward_from_loaded_objects_and_registry(tmp_path: Path) -> None:
    folder = save_classifier(tmp_path, "gpt2")
    model = AutoModelForSequenceClassification.from_pretrained(folder)
    tok = AutoTokenizer.from_pretrained(folder)
    from_objects = HFRewardModel(model, tok, batch_size=2)
    by_name = make_reward("hf", model=str(folder))
    torch.testing.assert_close(from_objects.score(PROMPTS, RESPONSES), by_name.score(PROMPTS, RESPONSES))


def test_hf_reward_missing_model_says_so(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(OSError, match=r"not a local folder.*local_files_only=True.*path of a folder"):
        HFRewardModel("no-such-org/no-such-reward-model", local_files_only=True)
    huggingface_hub = pytest.importorskip("huggingface_hub")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # as on a machine with no hub
    with pytest.raises(OSError, match=r"no model hub may be reachable.*pass the local path"):
        HFRewardModel("no-such-org/no-such-reward-model")
    with pytest.raises(OSError, match=r"no-such-judge.*(hub|local)"):
        JudgeReward("no-such-org/no-such-judge")


def test_hf_reward_without_transformers_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(MissingDependencyError, match=r"mpc_llm\[hf\]"):
        HFRewardModel("anything")
    with pytest.raises(MissingDependencyError, match=r"mpc_llm\[hf\]"):
        JudgeReward("anything")


# --------------------------------------------------------------------------- LLM-as-judge
def save_causal_lm(folder: Path, arch: str) -> Path:
    make_tokenizer(folder, "decoder")
    if arch == "llama":
        tok = AutoTokenizer.from_pretrained(folder)
        tok.chat_template = CHAT_TEMPLATE
        tok.save_pretrained(folder)
    vocab_size = len(AutoTokenizer.from_pretrained(folder))
    torch.manual_seed(1)
    AutoModelForCausalLM.from_config(make_config(arch, vocab_size)).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=DECODERS)
def judge_dir(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return save_causal_lm(tmp_path_factory.mktemp("judge-" + request.param), request.param)


def test_judge_batched_equals_single_equals_direct(judge_dir: Path) -> None:
    batched = JudgeReward(judge_dir, batch_size=5, dtype="float32")
    single = JudgeReward(judge_dir, batch_size=1, dtype="float32")
    a, b = batched.score(PROMPTS, RESPONSES), single.score(PROMPTS, RESPONSES)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    # direct: each query alone, unpadded, log-odds of the yes / no spellings in the vocabulary
    tok = AutoTokenizer.from_pretrained(judge_dir)
    model = AutoModelForCausalLM.from_pretrained(judge_dir).eval()
    yes, no = (
        [tok.convert_tokens_to_ids(w) for w in ("yes", "Yes")],
        [tok.convert_tokens_to_ids(w) for w in ("no", "No")],
    )
    assert sorted(batched.yes_ids) == sorted(yes) and sorted(batched.no_ids) == sorted(no)
    expected = []
    for p, r in zip(PROMPTS, RESPONSES, strict=True):
        ids = tok(batched.query(p, r), add_special_tokens=not batched.use_chat_template, return_tensors="pt")
        with torch.no_grad():
            logits = model(**ids).logits[0, -1]
        expected.append(torch.logsumexp(logits[yes], 0) - torch.logsumexp(logits[no], 0))
    torch.testing.assert_close(a, torch.stack(expected), atol=1e-5, rtol=1e-4)
    assert a.std() > 1e-4


def test_judge_runs_in_the_auto_dtype_and_scores_in_float32(judge_dir: Path) -> None:
    judge = JudgeReward(judge_dir, batch_size=5)  # dtype "auto": bfloat16 where the CPU has it
    assert judge.model.dtype == auto_dtype("cpu")
    scores = judge.score(PROMPTS, RESPONSES)
    assert scores.dtype == torch.float32 and bool(torch.isfinite(scores).all())
    exact = JudgeReward(judge_dir, batch_size=5, dtype="float32").score(PROMPTS, RESPONSES)
    torch.testing.assert_close(scores, exact, atol=0.1, rtol=0.05)  # bfloat16 rounding only


def test_judge_query_uses_rubric_and_template(judge_dir: Path) -> None:
    judge = JudgeReward(
        judge_dir, rubric="request : {prompt} response : {response} polite ?", system_prompt="read"
    )
    q = judge.query([{"role": "user", "content": "hello"}], "good")
    assert "request : hello response : good polite ?" in q
    if judge.use_chat_template:
        assert q.startswith("<s><|system|> read") and q.endswith("<|assistant|>")
    else:
        assert q.endswith("\nAnswer:")


def test_judge_rejects_bad_rubric_and_vocabulary(judge_dir: Path) -> None:
    with pytest.raises(ValueError, match=r"\{response\}"):
        JudgeReward(judge_dir, rubric="Is {prompt} answered?")
    with pytest.raises(ValueError, match=r"\{response\}"):
        JudgeReward(judge_dir, rubric="{response} {score}")
    with pytest.raises(ValueError, match="single token"):
        JudgeReward(judge_dir, yes=["absolutely"])


@pytest.mark.smollm
def test_judge_on_embedded_smollm2(smollm: tuple[object, object]) -> None:
    model, tok = smollm
    prompts = ["What is the capital of France?"] * 3 + [[{"role": "user", "content": "Say something kind."}]]
    responses = ["The capital of France is Paris.", "Bananas are yellow.", "", "You are wonderful!"]
    batched = JudgeReward(model, tok, batch_size=4)
    assert batched.use_chat_template and len(batched.yes_ids) >= 2 and len(batched.no_ids) >= 2
    a = batched.score(prompts, responses)
    b = JudgeReward(model, tok, batch_size=1).score(prompts, responses)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, atol=2e-3, rtol=1e-3)


# --------------------------------------------------------------------------- embeddings
def test_embedding_missing_dependency_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(MissingDependencyError, match=r"sentence-transformers.*mpc_llm\[embed\]"):
        EmbeddingSimilarityReward(["good"])
    with pytest.raises(MissingDependencyError):
        make_reward("embedding", targets=["good"])


@pytest.mark.skipif(
    importlib.util.find_spec("sentence_transformers") is None, reason="optional extra 'embed'"
)
def test_embedding_similarity_matches_cosine(tmp_path: Path) -> None:
    from sentence_transformers import SentenceTransformer

    try:
        from sentence_transformers.sentence_transformer.modules import Pooling, Transformer
    except ImportError:  # sentence-transformers < 6
        from sentence_transformers.models import Pooling, Transformer

    folder = tmp_path / "bert"
    make_tokenizer(folder, "encoder")
    torch.manual_seed(0)
    transformers.BertModel(make_config("bert", len(AutoTokenizer.from_pretrained(folder)))).save_pretrained(
        folder
    )
    encoder = Transformer(str(folder))
    st_model = SentenceTransformer(modules=[encoder, Pooling(encoder.get_embedding_dimension(), "mean")])
    st_model.save(str(tmp_path / "st"))

    targets = ["i love this film", "great movie"]
    reward = EmbeddingSimilarityReward(targets, model=str(tmp_path / "st"), batch_size=2)
    single = EmbeddingSimilarityReward(targets, model=reward.model, batch_size=1, aggregate="max")
    mean = EmbeddingSimilarityReward(targets, model=reward.model, aggregate="mean")
    s = reward.score(PROMPTS, RESPONSES)
    torch.testing.assert_close(s, single.score(PROMPTS, RESPONSES), atol=1e-5, rtol=1e-4)
    emb = torch.nn.functional.normalize(torch.as_tensor(st_model.encode(RESPONSES)), dim=-1)
    tgt = torch.nn.functional.normalize(torch.as_tensor(st_model.encode(targets)), dim=-1)
    torch.testing.assert_close(s, (emb @ tgt.T).amax(dim=1), atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        mean.score(PROMPTS, RESPONSES), (emb @ tgt.T).mean(dim=1), atol=1e-5, rtol=1e-4
    )
    assert reward.score("x", ["great movie"]).item() == pytest.approx(1.0, abs=1e-5)
