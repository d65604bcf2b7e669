"""Prompts: plain strings or chat conversations, their text form, and their encoding for a model.

The one place that decides what a conversation is, whether a tokenizer's chat template is used,
and how a prompt becomes token ids; the decode engine, the judge and the reward-model loader all
use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

#: A prompt as the user gives it: a plain string, or chat messages ``[{"role", "content"}, ...]``.
Prompt = str | list[dict[str, Any]]


def is_messages(value: object) -> bool:
    """Whether ``value`` is a chat conversation: a non-empty list of ``{"role", "content"}`` dicts.

    Example:
        >>> is_messages([{"role": "user", "content": "Hi"}]), is_messages("Hi"), is_messages([])
        (True, False, False)
    """
    return (
        isinstance(value, list)
        and len(value) > 0
        and all(isinstance(m, dict) and "role" in m and "content" in m for m in value)
    )


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be encoded as UTF-8 (a lone surrogate), or None when it can.

    Python keeps bytes that are not UTF-8 (e.g. in command-line arguments) as lone surrogates
    ``U+DC80``..``U+DCFF``; a tokenizer cannot encode them.

    Example:
        >>> text_problem("caf\\udce9"), text_problem("café")
        ('byte 0xe9 at character 4', None)
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as err:
        char = ord(text[err.start])
        what = f"byte 0x{char - 0xDC00:02x}" if 0xDC80 <= char <= 0xDCFF else f"lone surrogate U+{char:04X}"
        return f"{what} at character {err.start + 1}"
    return None


def check_prompt_text(prompt: Prompt, index: int = 0, *, where: str | None = None) -> None:
    """Refuse a prompt whose text (or any message's content) is not valid Unicode text.

    Raises:
        ValueError: naming the prompt (``where``, default ``"prompt {index}"``), where the bad
            character is, and what to do.
    """
    texts = [prompt] if isinstance(prompt, str) else [m.get("content") for m in prompt]
    for text in texts:
        if isinstance(text, str) and (problem := text_problem(text)) is not None:
            raise ValueError(
                f"{where or f'prompt {index}'} is not valid UTF-8 text ({problem}); re-encode it as UTF-8 "
                "(e.g. `iconv -f LATIN1 -t UTF-8`)"
            )


def as_prompt_list(prompts: Sequence[Prompt] | Prompt) -> list[Prompt]:
    """``B`` prompts from one prompt (a string or one conversation) or a sequence of them.

    Raises:
        ValueError: if there are no prompts, or a prompt is not valid UTF-8 text.
        TypeError: if a prompt is neither a string nor a conversation (the message shows the shape).
    """
    if isinstance(prompts, str) or is_messages(prompts):
        prompts = [prompts]  # type: ignore[list-item]
    prompts = list(prompts)  # type: ignore[arg-type]
    if not prompts:
        raise ValueError("give at least one prompt")
    for b, p in enumerate(prompts):
        if not isinstance(p, str) and not is_messages(p):
            raise TypeError(
                f"prompt {b} must be a string or a list of chat messages "
                f"[{{'role': ..., 'content': ...}}], got {type(p).__name__}"
            )
        check_prompt_text(p, b)
    return prompts  # type: ignore[return-value]


def render_prompt(prompt: Prompt) -> str:
    """A prompt as plain text, for rewards that read text rather than messages.

    A string is returned as is. A conversation with a single user message (and any system messages)
    gives that message's content; any other conversation gives ``"role: content"`` lines separated
    by blank lines.

    Example:
        >>> render_prompt([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}])
        'Hi'
    """
    if isinstance(prompt, str):
        return prompt
    if not is_messages(prompt):
        raise TypeError(f"a prompt must be a string or a list of chat messages (dicts), got {type(prompt)}")
    turns = [m for m in prompt if m.get("role") != "system"]
    if len(turns) == 1 and turns[0].get("role") == "user":
        return str(turns[0].get("content", ""))
    return "\n\n".join(f"{m.get('role', 'user')}: {m.get('content', '')}" for m in prompt)


def to_messages(prompt: Prompt, response: str | None = None) -> list[dict[str, Any]]:
    """The conversation ``prompt`` (a string becomes one user message) followed by the response.

    Example:
        >>> to_messages("Hi", "Hello!")
        [{'role': 'user', 'content': 'Hi'}, {'role': 'assistant', 'content': 'Hello!'}]
    """
    if isinstance(prompt, str):
        messages: list[dict[str, Any]] = [{"role": "user", "content": prompt}]
    elif is_messages(prompt):
        messages = [dict(m) for m in prompt]
    else:
        raise TypeError(f"a prompt must be a string or a list of chat messages (dicts), got {type(prompt)}")
    if response is not None:
        messages.append({"role": "assistant", "content": response})
    return messages


def uses_chat_template(tokenizer: Any, setting: bool | None, who: str = "the tokenizer") -> bool:
    """Whether to format with ``tokenizer``'s chat template: ``setting``, or (None) when it has one.

    Raises:
        ValueError: if ``setting`` is True and the tokenizer has no chat template.
    """
    has_template = getattr(tokenizer, "chat_template", None) is not None
    if setting and not has_template:
        raise ValueError(
            f"chat_template=True but {who} has no chat template; set tokenizer.chat_template, or turn "
            "chat templates off (plain-string prompts)"
        )
    return has_template if setting is None else bool(setting)


def encode_prompt(tokenizer: Any, prompt: Prompt, *, chat_template: bool, index: int = 0) -> list[int]:
    """The token ids of one prompt as a causal LM reads it before answering.

    With ``chat_template``, the conversation (a string is one user message) is rendered with the
    tokenizer's template and the generation prompt; otherwise a plain string is tokenised with the
    tokenizer's special tokens.

    Raises:
        ValueError: a conversation without a chat template, a prompt that is not valid UTF-8 text, or
            a prompt with no tokens (the message names prompt ``index``).
    """
    if isinstance(prompt, str) or is_messages(prompt):
        check_prompt_text(prompt, index)
    if chat_template:
        text = tokenizer.apply_chat_template(to_messages(prompt), add_generation_prompt=True, tokenize=False)
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    elif isinstance(prompt, str):
        ids = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    else:
        raise ValueError(
            f"prompt {index} is a list of chat messages but chat templates are off; pass plain strings "
            "or set chat_template=True (the tokenizer needs a chat template)"
        )
    if not ids:
        raise ValueError(f"prompt {index} is empty after tokenisation; give it at least one token")
    return list(ids)
