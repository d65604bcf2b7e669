"""LLM-as-judge: a causal LM asked a yes/no rubric question about the response.

The reward is the log-odds of answering "yes" over "no" on the next token:

    r = logsumexp_{y in yes variants} logit_y - logsumexp_{n in no variants} logit_n

where the variants are the spellings (``"yes"``, ``"Yes"``, ``" yes"``, ``" Yes"`` ...) that are single
tokens of the judge's vocabulary. Any causal LM works, including the embedded SmolLM2-135M-Instruct
(the default when no model is given).

Example:
    >>> rubric = "Request: {prompt}\\nResponse: {response}\\nIs it polite? Answer yes or no."
    >>> judge = JudgeReward(rubric=rubric)      # the embedded SmolLM2               # doctest: +SKIP
    >>> judge.score("Say hi", ["Hello, nice to meet you!", "Go away."])       # doctest: +SKIP
    tensor([ 0.91, -0.35])
"""

from __future__ import annotations

import os
import string
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from mpc_llm.lm.adapters import ModelAdapter
from mpc_llm.lm.hub import model_device, resolve_tokenizer, transformers_module
from mpc_llm.lm.loading import DEFAULT_MODEL, load_model
from mpc_llm.lm.precision import resolve_dtype
from mpc_llm.lm.prefix import left_pad, next_token_logits
from mpc_llm.lm.prompts import Prompt, render_prompt, uses_chat_template
from mpc_llm.rewards.base import Reward

__all__ = ["DEFAULT_RUBRIC", "JudgeReward"]

DEFAULT_RUBRIC = (
    "Read the request and the response below.\n\n"
    "Request: {prompt}\n\n"
    "Response: {response}\n\n"
    "Is the response a helpful, correct and harmless answer to the request? Answer yes or no."
)
YES_VARIANTS = ("yes", "Yes", " yes", " Yes", "YES", " YES")
NO_VARIANTS = ("no", "No", " no", " No", "NO", " NO")


def _rubric_fields(rubric: str) -> set[str]:
    try:
        return {field for _, field, _, _ in string.Formatter().parse(rubric) if field is not None}
    except ValueError as exc:
        raise ValueError(f"invalid rubric template (use {{prompt}} and {{response}}): {exc}") from exc


class JudgeReward(Reward):
    """A causal LM judges each response: reward = log-odds of "yes" over "no".

    The rubric is filled with the prompt (rendered as text) and the response, wrapped in the judge's
    chat template as one user message when the tokenizer has one (plus ``answer_prefix``), and the
    next-token logits after it are read. Inputs longer than ``max_length`` keep their last
    ``max_length`` tokens (the question is at the end).

    Speed: the inputs for one prompt are identical up to the response, so by default
    (``share_prefix``) their longest common token prefix is run through the judge once and only
    each input's own suffix (response, rubric tail, template tail) is computed, in batches of
    ``batch_size`` sorted by length (`mpc_llm.lm.prefix.next_token_logits`, which states why the
    scores are those of the whole inputs, to float rounding). Truncated inputs are scored whole.
    ``share_prefix=False, sort_by_length=False`` is the plain path: whole inputs, left-padded with
    explicit position ids, in the given order. Either way a pair gets the same score alone or in a
    batch.

    Args:
        model: a causal LM object; a model id, local folder or ``.gguf`` file; or None for the
            embedded SmolLM2-135M-Instruct.
        tokenizer: its tokenizer, or an id / folder (default: the model's own source).
        rubric: a template with ``{response}`` and optionally ``{prompt}``.
        system_prompt: an optional system message for the chat template.
        answer_prefix: text appended after the question (default: none with a chat template,
            ``"\\nAnswer:"`` without one).
        yes: spellings of "yes"; those that are single tokens are used.
        no: spellings of "no"; likewise.
        use_chat_template: force (True) or disable (False) the chat template (default: if present).
        max_length: the most tokens per input (default: the model's context length).
        gguf_file: a GGUF file name inside the folder ``model`` (for quantised checkpoints).
        batch_size: inputs per forward pass (None: all of a prompt's at once).
        share_prefix: compute each prompt's common prefix once (default True).
        sort_by_length: batch inputs of similar lengths together (default True).
        device: where to run the model (default: where it is).
        dtype: the model's dtype: ``"auto"`` (default) is bfloat16 where the device computes it
            natively, else float32, for a model loaded by name (`mpc_llm.lm.precision`); a model
            object keeps its dtype unless one is named. Scores are computed in float32.
        local_files_only: never try to download.

    A model object is used as it is, not copied (it may be the very LM being steered): ``device`` and
    ``dtype`` move it in place, and it is put in eval mode. A model given by name is loaded with
    `mpc_llm.lm.load_model` (GGUF files and the embedded default use its fast-load cache).

    Raises:
        ValueError: if the rubric lacks ``{response}`` or has other fields, or no spelling of "yes"
            or "no" is a single token of the vocabulary.
        MissingDependencyError: if transformers is not installed (``pip install 'mpc_llm[hf]'``).
    """

    accepts_partial = False  # trained / prompted on complete answers
    batches_itself = True  # groups a prompt's inputs to share their prefix

    def __init__(
        self,
        model: str | os.PathLike[str] | Any | None = None,
        tokenizer: str | os.PathLike[str] | Any | None = None,
        *,
        rubric: str = DEFAULT_RUBRIC,
        system_prompt: str | None = None,
        answer_prefix: str | None = None,
        yes: Sequence[str] = YES_VARIANTS,
        no: Sequence[str] = NO_VARIANTS,
        use_chat_template: bool | None = None,
        max_length: int | None = None,
        gguf_file: str | None = None,
        batch_size: int | None = 8,
        share_prefix: bool = True,
        sort_by_length: bool = True,
        device: str | torch.device | None = None,
        dtype: torch.dtype | str | None = "auto",
        local_files_only: bool = False,
        name: str | None = None,
    ) -> None:
        fields = _rubric_fields(rubric)
        if "response" not in fields or not fields <= {"prompt", "response"}:
            raise ValueError(
                f"the rubric must contain {{response}} and may contain {{prompt}}, nothing else; got fields "
                f"{sorted(fields)} (write literal braces as {{{{ and }}}})"
            )
        transformers_module("by JudgeReward")
        source: str | None
        if model is None or isinstance(model, (str, os.PathLike)):
            source = None if model is None else os.fspath(model)
            model, tokenizer = load_model(
                source,
                tokenizer=tokenizer,
                gguf_file=gguf_file,
                device=device,
                dtype=dtype,
                local_files_only=local_files_only,
            )
            source = source or DEFAULT_MODEL
        else:
            source = getattr(model, "name_or_path", None) or None
            if dtype is not None and dtype != "auto":
                model = model.to(resolve_dtype(dtype, device))
            tokenizer = resolve_tokenizer(tokenizer, source, what="judge", local_files_only=local_files_only)
        if device is not None:
            model = model.to(device)
        model.eval()
        label = name or (f"JudgeReward({os.path.basename(source)})" if source else "JudgeReward")
        super().__init__(batch_size=batch_size, device=model_device(model), name=label)
        self.model = model
        self.tokenizer = tokenizer
        self.rubric = rubric
        self.system_prompt = system_prompt
        self.share_prefix = bool(share_prefix)
        self.sort_by_length = bool(sort_by_length)

        self.use_chat_template = uses_chat_template(tokenizer, use_chat_template, who="the judge's tokenizer")
        if answer_prefix is None:
            answer_prefix = "" if self.use_chat_template else "\nAnswer:"
        self.answer_prefix = answer_prefix
        self.yes_ids = self._single_tokens(yes, "yes")
        self.no_ids = self._single_tokens(no, "no")
        if set(self.yes_ids) & set(self.no_ids):
            raise ValueError("the 'yes' and 'no' spellings share a token")
        self.adapter = ModelAdapter(model)
        self.max_length = max_length if max_length is not None else self.adapter.context_length
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.pad_token_id = int(pad) if pad is not None else 0

    def _single_tokens(self, spellings: Sequence[str], what: str) -> list[int]:
        ids: list[int] = []
        unk = getattr(self.tokenizer, "unk_token_id", None)
        for s in spellings:
            tokens = self.tokenizer.encode(s, add_special_tokens=False)
            if len(tokens) == 1 and tokens[0] != unk and tokens[0] not in ids:
                ids.append(int(tokens[0]))
        if not ids:
            raise ValueError(
                f"none of the spellings {list(spellings)!r} of {what!r} is a single token of the judge's "
                "vocabulary; pass spellings that are"
            )
        return ids

    def query(self, prompt: Prompt, response: str) -> str:
        """The full text the judge reads for one pair (chat template applied)."""
        question = self.rubric.format(prompt=render_prompt(prompt), response=response)
        if not self.use_chat_template:
            return question + self.answer_prefix
        messages = [{"role": "user", "content": question}]
        if self.system_prompt is not None:
            messages.insert(0, {"role": "system", "content": self.system_prompt})
        text = self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return text + self.answer_prefix

    def token_rows(self, prompts: list[Prompt], responses: list[str]) -> tuple[list[list[int]], list[bool]]:
        """The token ids of each pair's judge input (at most ``max_length``, the last ones kept) and
        whether it was truncated."""
        rows, truncated = [], []
        for p, r in zip(prompts, responses, strict=True):
            text = self.query(p, r)
            ids = list(self.tokenizer(text, add_special_tokens=not self.use_chat_template)["input_ids"])
            cut = self.max_length is not None and len(ids) > self.max_length
            rows.append(ids[-self.max_length :] if cut else ids)
            truncated.append(bool(cut))
        return rows, truncated

    def encode(self, prompts: list[Prompt], responses: list[str]) -> dict[str, Tensor]:
        """The plain path's ``input_ids``, ``attention_mask`` and ``position_ids``, each ``(m, L)``,
        left-padded."""
        input_ids, mask, position_ids = left_pad(self.token_rows(prompts, responses)[0], self.pad_token_id)
        return {
            "input_ids": input_ids.to(self.device),
            "attention_mask": mask.to(self.device),
            "position_ids": position_ids.to(self.device),
        }

    @torch.inference_mode()
    def score_batch(self, prompts: list[Prompt], responses: list[str]) -> Tensor:
        """Scores ``(m,)`` of ``m`` pairs: each prompt's inputs share one prefix pass (``share_prefix``)."""
        rows, truncated = self.token_rows(prompts, responses)
        # inputs for the same prompt are tried for a common prefix; truncated ones are scored whole
        groups = [
            ("cut", i) if cut else render_prompt(p)
            for i, (p, cut) in enumerate(zip(prompts, truncated, strict=True))
        ]
        logits = next_token_logits(
            self.adapter,
            rows,
            groups=groups,
            columns=[*self.yes_ids, *self.no_ids],
            batch_size=self.batch_size,
            pad_token_id=self.pad_token_id,
            share_prefix=self.share_prefix,
            sort_by_length=self.sort_by_length,
        )
        k = len(self.yes_ids)
        yes = torch.logsumexp(logits[:, :k], dim=-1)
        no = torch.logsumexp(logits[:, k:], dim=-1)
        return (yes - no).cpu()

    def __repr__(self) -> str:
        return self.name
