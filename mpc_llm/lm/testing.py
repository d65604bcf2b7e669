"""Tiny tokenizers and randomly initialised models for tests and speed measurements.

Nothing here downloads anything: the tokenizer is a byte-level BPE trained in milliseconds on a few
built-in sentences, and models are built from `transformers` configs with random weights. Tests save
both to a temporary folder and load them back through the real loading path (`mpc_llm.lm.load_model`).
"""

from __future__ import annotations

from typing import Any

import torch

#: Architectures `tiny_config` knows, each a small but faithful instance of its family.
TINY_ARCHITECTURES = ("gpt2", "llama", "qwen2", "gemma2", "phi")

EOS_TOKEN = "<|endoftext|>"
PAD_TOKEN = "<pad>"
CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "A happy little model writes a short and kind reply.",
    "Hello there! How are you today? I am fine, thank you.",
    "Optimal control steers a system toward a goal at low cost.",
    "Sampling many responses and keeping the best one is a strong baseline.",
    "Numbers like 0 1 2 3 4 5 6 7 8 9 and symbols like , . ; : ! ? ( ) are common.",
]


def tiny_tokenizer(vocab_size: int = 320) -> Any:
    """A byte-level BPE tokenizer (any text encodes) with EOS, pad and ChatML special tokens.

    Returns:
        A `transformers.PreTrainedTokenizerFast` of at most ``vocab_size`` tokens, with a chat
        template, ``eos_token = "<|endoftext|>"`` and ``pad_token = "<pad>"``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [EOS_TOKEN, PAD_TOKEN, "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_CORPUS * 4, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        chat_template=CHAT_TEMPLATE,
    )


def tiny_config(
    arch: str, vocab_size: int, *, hidden_size: int = 64, num_layers: int = 2, **overrides: Any
) -> Any:
    """A small config of one of `TINY_ARCHITECTURES` (2 layers, hidden size 64 by default).

    Gemma-2 gets final-logit soft-capping and a sliding window of 16 tokens so that both paths are
    exercised; Phi has a bias in its LM head; GPT-2 and Llama tie the head to the embeddings. The
    initialisation is wider than the default so that greedy decoding does not repeat one token.
    """
    import transformers

    common: dict[str, Any] = {
        "vocab_size": vocab_size,
        "eos_token_id": 0,
        "pad_token_id": 1,
        "bos_token_id": 0,
        "initializer_range": {"phi": 0.5}.get(arch, 0.3),
    }
    if arch == "gpt2":
        cfg = transformers.GPT2Config(
            n_embd=hidden_size, n_layer=num_layers, n_head=4, n_positions=256, **common
        )
    else:
        decoders: dict[str, tuple[Any, dict[str, Any]]] = {
            "llama": (transformers.LlamaConfig, {"num_key_value_heads": 2, "tie_word_embeddings": True}),
            "qwen2": (transformers.Qwen2Config, {"num_key_value_heads": 2, "tie_word_embeddings": False}),
            "gemma2": (
                transformers.Gemma2Config,
                {
                    "num_key_value_heads": 2,
                    "head_dim": hidden_size // 4,
                    "sliding_window": 16,
                    "final_logit_softcapping": 3.0,
                    "attn_logit_softcapping": 50.0,
                    "tie_word_embeddings": False,
                },
            ),
            "phi": (transformers.PhiConfig, {}),
        }
        if arch not in decoders:
            raise ValueError(f"unknown tiny architecture {arch!r}; choose one of {TINY_ARCHITECTURES}")
        config_class, specific = decoders[arch]
        cfg = config_class(
            hidden_size=hidden_size,
            intermediate_size=2 * hidden_size,
            num_hidden_layers=num_layers,
            num_attention_heads=4,
            max_position_embeddings=256,
            **specific,
            **common,
        )
    for key, value in overrides.items():
        setattr(cfg, key, value)
    return cfg


def random_model(config: Any, *, seed: int = 0, dtype: torch.dtype = torch.float32) -> Any:
    """A randomly initialised causal LM for ``config`` (seeded), in eval mode."""
    from transformers import AutoModelForCausalLM

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    return model.eval()


def random_llama_1b_config(vocab_size: int = 49152) -> Any:
    """A Llama-3.2-1B-shaped config (16 layers, hidden 2048, GQA 32/8 heads), for speed measurements."""
    import transformers

    return transformers.LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=2048,
        intermediate_size=8192,
        num_hidden_layers=16,
        num_attention_heads=32,
        num_key_value_heads=8,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        rope_theta=500000.0,
        eos_token_id=2,
        pad_token_id=2,
        bos_token_id=1,
    )
