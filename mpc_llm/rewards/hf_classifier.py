"""Any Hugging Face sequence-classification reward model, by id or local path.

Examples of such models: the DeBERTa-based ``OpenAssistant/reward-model-deberta-v3-large-v2`` (scores
a (question, answer) text pair) and Llama-based ones such as ``Skywork/Skywork-Reward-Llama-3.1-8B``
(scores a chat rendered with its own chat template). The reward model has its own tokenizer,
independent of the language model being steered.

Example (offline, with a folder that holds a reward model and its tokenizer):

    >>> reward = HFRewardModel("path/to/reward-model", batch_size=8)      # doctest: +SKIP
    >>> reward.score("What is 2+2?", ["4", "5"])                          # doctest: +SKIP
    tensor([ 1.73, -0.52])
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from mpc_llm.lm.hub import load_pretrained, model_device, resolve_tokenizer, transformers_module
from mpc_llm.lm.prompts import Prompt, render_prompt, to_messages, uses_chat_template
from mpc_llm.rewards.base import Reward

__all__ = ["HFRewardModel"]

#: tokenizers without a real limit report a huge ``model_max_length``.
_NO_LIMIT = 10**8


class HFRewardModel(Reward):
    """A reward from ``AutoModelForSequenceClassification``: one logit per (prompt, response).

    Input: when the reward model's tokenizer has a chat template (and ``use_chat_template`` is not
    False), the pair is rendered as the conversation ``[user: prompt, assistant: response]`` (a chat
    prompt keeps its own messages) with that template; otherwise it is encoded as the text pair
    ``(prompt, response)``. Inputs are truncated to ``max_length`` tokens (the tokenizer's
    ``truncation_side``, usually the end) and right-padded; decoder models read the last non-pad token.
    By default (``sort_by_length``) the pairs are tokenised once to count their tokens and scored in
    batches of ``batch_size`` inputs of similar lengths (then put back in order), so little padding
    is computed; a pair's score does not depend on its batch.

    Output: ``logits[:, 0]`` when the model has one label, else ``logits[:, output_index]``.

    Args:
        model: a model id, a local folder, or a loaded sequence-classification model.
        tokenizer: its tokenizer, an id or folder (default: the model's own source).
        output_index: which logit is the score, required when the model has several labels.
        max_length: maximum tokens per input (default: the tokenizer's ``model_max_length``, else the
            model's ``max_position_embeddings``).
        use_chat_template: force (True) or disable (False) the chat template (default: use it when
            the tokenizer has one).
        batch_size: pairs per forward pass (None: all at once).
        sort_by_length: batch pairs of similar token counts together (False: in the given order).
        device: where to run the model (default: where it is; loaded models start on the CPU).
        dtype: the model's dtype (e.g. ``torch.bfloat16``); default: as loaded.
        local_files_only: never try to download.
        trust_remote_code: passed to ``from_pretrained``: lets the model run the Python code it ships.
            The CLI and `ExperimentConfig.from_file` refuse it from a config file unless the caller
            allows it (``--trust-remote-code``, ``from_file(..., trust_remote_code=True)``).

    Raises:
        ValueError: if the model has several labels and no valid ``output_index`` is given, or the
            tokenizer has neither a pad nor an EOS token.
        OSError: if the model cannot be loaded (the message says whether the hub was needed).
        MissingDependencyError: if transformers is not installed (``pip install 'mpc_llm[hf]'``).

    Note:
        A tokenizer without a pad token gets its EOS token as pad token, and the model config's
        ``pad_token_id`` is set to match (decoder models use it to find the last token). A model
        object is used as it is, not copied: ``device`` and ``dtype`` move it in place, and it is
        put in eval mode.
    """

    accepts_partial = False  # trained / prompted on complete answers
    batches_itself = True  # sorts all pairs by length before batching

    def __init__(
        self,
        model: str | os.PathLike[str] | Any,
        tokenizer: str | os.PathLike[str] | Any | None = None,
        *,
        output_index: int | None = None,
        max_length: int | None = None,
        use_chat_template: bool | None = None,
        batch_size: int | None = 8,
        sort_by_length: bool = True,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        local_files_only: bool = False,
        trust_remote_code: bool = False,
        name: str | None = None,
    ) -> None:
        tf = transformers_module("by HFRewardModel")
        load_kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
        if isinstance(model, (str, os.PathLike)):
            source: str | None = os.fspath(model)
            extra = {"dtype": dtype} if dtype is not None else {}
            model = load_pretrained(
                tf.AutoModelForSequenceClassification,
                source,
                what="reward model",
                local_files_only=local_files_only,
                **load_kwargs,
                **extra,
            )
        else:
            source = getattr(model, "name_or_path", None) or None
            if dtype is not None:
                model = model.to(dtype)
        tokenizer = resolve_tokenizer(
            tokenizer, source, what="reward model", local_files_only=local_files_only, **load_kwargs
        )
        if device is not None:
            model = model.to(device)
        model.eval()
        super().__init__(
            batch_size=batch_size, device=model_device(model), name=name or source or "HFRewardModel"
        )
        self.model = model
        self.tokenizer = tokenizer
        self.sort_by_length = bool(sort_by_length)

        num_labels = int(getattr(model.config, "num_labels", 1))
        if num_labels != 1 and output_index is None:
            raise ValueError(
                f"reward model {self.name!r} has num_labels={num_labels} outputs, not a single score; "
                f"pass output_index=k (0 <= k < {num_labels}) to say which logit is the reward"
            )
        if output_index is not None and not -num_labels <= output_index < num_labels:
            raise ValueError(f"output_index={output_index} is out of range for num_labels={num_labels}")
        self.num_labels = num_labels
        self.output_index = 0 if output_index is None else int(output_index)

        if tokenizer.pad_token is None:
            if tokenizer.eos_token is None:
                raise ValueError(f"the tokenizer of {self.name!r} has neither a pad nor an EOS token")
            tokenizer.pad_token = tokenizer.eos_token
        if getattr(model.config, "pad_token_id", None) is None:
            model.config.pad_token_id = tokenizer.pad_token_id

        if max_length is None:
            limits = [int(tokenizer.model_max_length)] if tokenizer.model_max_length < _NO_LIMIT else []
            if getattr(model.config, "max_position_embeddings", None):
                limits.append(int(model.config.max_position_embeddings))
            max_length = min(limits) if limits else None
        self.max_length = max_length
        self.use_chat_template = uses_chat_template(
            tokenizer, use_chat_template, who=f"the tokenizer of {self.name!r}"
        )

    def _tokenize(self, prompts: list[Prompt], responses: list[str], **options: Any) -> Any:
        """The tokenizer's output for ``m`` pairs (chat template or text pairs), truncated."""
        common: dict[str, Any] = {"truncation": self.max_length is not None, "max_length": self.max_length}
        tok = self.tokenizer
        if self.use_chat_template:
            texts = [
                tok.apply_chat_template(to_messages(p, r), tokenize=False)
                for p, r in zip(prompts, responses, strict=True)
            ]
            return tok(texts, add_special_tokens=False, **common, **options)
        return tok([render_prompt(p) for p in prompts], responses, **common, **options)

    def encode(self, prompts: list[Prompt], responses: list[str]) -> dict[str, Tensor]:
        """Tokenize ``m`` pairs: ``input_ids`` and ``attention_mask`` ``(m, L)``, right-padded."""
        enc = self._tokenize(prompts, responses, padding=True, padding_side="right", return_tensors="pt")
        return {k: v.to(self.device) for k, v in enc.items()}

    @torch.inference_mode()
    def score_batch(self, prompts: list[Prompt], responses: list[str]) -> Tensor:
        """Scores ``(m,)`` from forward passes of ``batch_size`` pairs.

        With ``sort_by_length`` the pairs are tokenised once, sorted by token count, padded per
        batch and their scores put back in order; otherwise each batch of consecutive pairs is
        encoded on its own (`encode`).
        """
        m = len(responses)
        step = self.batch_size or max(m, 1)
        scores = torch.empty(m, dtype=torch.float32)
        if not self.sort_by_length:
            for start in range(0, m, step):
                enc = self.encode(prompts[start : start + step], responses[start : start + step])
                scores[start : start + step] = self._forward(enc, min(step, m - start))
            return scores
        tokens = self._tokenize(prompts, responses)
        order = sorted(range(m), key=lambda i: len(tokens["input_ids"][i]))
        for start in range(0, m, step):
            chunk = order[start : start + step]
            rows = {key: [tokens[key][i] for i in chunk] for key in tokens}
            enc = self.tokenizer.pad(rows, padding=True, padding_side="right", return_tensors="pt")
            scores[chunk] = self._forward({k: v.to(self.device) for k, v in enc.items()}, len(chunk))
        return scores

    def _forward(self, enc: dict[str, Tensor], m: int) -> Tensor:
        """One forward pass over encoded inputs ``(m, L)``: ``(m,)`` float32 CPU scores."""
        logits = self.model(**enc).logits
        if logits.dim() != 2 or logits.shape[0] != m:
            raise ValueError(
                f"reward model {self.name!r} returned logits of shape {tuple(logits.shape)} for "
                f"{m} inputs; expected ({m}, num_labels)"
            )
        if not -logits.shape[1] <= self.output_index < logits.shape[1]:
            raise ValueError(
                f"output_index={self.output_index} is out of range for logits with {logits.shape[1]} columns"
            )
        return logits[:, self.output_index].float().cpu()

    def __repr__(self) -> str:
        return f"HFRewardModel({self.name!r})"
