"""Learning a value for a model and a reward: collect, train, save (what ``mpc-llm train-value`` runs).

`train_value_function` samples ``samples_per_prompt`` responses per prompt from the base model
(``prompts``: a training split such as ``sharegpt:train``, never the prompts results are reported
on), records the pre-logit at every step and the reward of each finished response
(`mpc_llm.values.collect`, resumable: ``OUT/data`` keeps finished chunks), trains a value with a
held-out split by prompt (`mpc_llm.values.train_value`) and writes ``OUT/value.safetensors`` and
``OUT/card.json``. The card says what the value cost to learn (responses sampled and scored, tokens,
seconds), to be reported beside any test-time budget that uses it. Nothing is written to
``OUT/value.safetensors`` unless training finished.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mpc_llm.core import validated
from mpc_llm.dynamics import LMDynamics
from mpc_llm.evaluation.prompts import load_prompt_set
from mpc_llm.lm import DEFAULT_MODEL, LMConfig
from mpc_llm.lm.precision import check_dtype, dtype_name
from mpc_llm.rewards import reward_from_spec
from mpc_llm.values import TrainConfig, collect, load_data, save_value, train_value


def train_value_function(
    out: str | os.PathLike[str],
    *,
    model: Any = None,
    tokenizer: Any = None,
    reward: Any = "vader",
    prompts: str | os.PathLike[str] = "sharegpt:train",
    num_prompts: int | None = None,
    samples_per_prompt: int = 8,
    lm: LMConfig | Mapping[str, Any] | None = None,
    device: str | None = None,
    dtype: str | None = "auto",
    seed: int = 0,
    chunk_size: int = 8,
    train: TrainConfig | Mapping[str, Any] | None = None,
    quiet: bool = True,
) -> dict[str, Any]:
    """Collect, train and save a value; returns its card.

    Args:
        out: the value folder (``value.safetensors``, ``card.json``, ``data/``).
        model: a model id, folder, ``.gguf`` file or loaded model (default: the embedded SmolLM2);
            ``tokenizer`` with a loaded model.
        reward: a reward spec (`mpc_llm.rewards.reward_from_spec`).
        prompts: a prompt source (`mpc_llm.evaluation.prompts.load_prompt_set`); ``num_prompts``: the
            first that many.
        samples_per_prompt: responses sampled per prompt.
        dtype: the model's dtype while collecting (``"auto"``: bfloat16 where ``device`` computes it
            natively, `mpc_llm.lm.precision`); the card records it. A value is float32 and reads
            states in either dtype.
        lm: decoding settings (`LMConfig`; default ``max_new_tokens=48, temperature=0.7``, the
            command line's).
        seed: the collection's seed (prompt ``i`` draws from ``seed * 1_000_003 + i``).
        chunk_size: prompts per collected chunk (the unit of resume).
        train: `TrainConfig` settings.
        quiet: no progress bars.

    Raises:
        ValueError: bad settings, prompts or reward; a data folder holding another collection; a
            chunk whose every reward is NaN.
    """
    lm_config = validated(LMConfig, lm if lm is not None else {"max_new_tokens": 48, "temperature": 0.7}, {})
    train_config = validated(TrainConfig, train, {})
    if samples_per_prompt < 1:
        raise ValueError(f"samples_per_prompt must be >= 1, got {samples_per_prompt}")
    check_dtype(dtype, device)  # before the model loads
    chosen = load_prompt_set(prompts, num_prompts).prompts
    scorer = reward_from_spec(reward)
    system = LMDynamics(model if model is not None else DEFAULT_MODEL, tokenizer, device=device, dtype=dtype,
                        config=lm_config)  # fmt: skip
    model_name = _model_name(model, system)
    settings = {
        "model": model_name,
        "model_fingerprint": system.model_fingerprint(),
        "d": system.control_dim,
        "dtype": dtype_name(system.model_dtype),  # the model's while collecting
        "reward": reward,
        "prompts": str(prompts),
        "lm": lm_config.model_dump(mode="json"),
    }
    root = Path(out)
    with tqdm(total=len(chosen), desc="collect", unit="prompt", disable=quiet) as bar:
        counts = collect(
            system.with_prompts, chosen, scorer.as_cost(), root / "data",
            samples_per_prompt=samples_per_prompt, seed=seed, chunk_size=chunk_size, settings=settings,
            progress=bar.update,
        )  # fmt: skip
    data = load_data(root / "data")
    with tqdm(total=train_config.epochs, desc="train", unit="epoch", disable=quiet) as bar:

        def step(epoch: int, train_loss: float, heldout: float) -> None:
            bar.set_postfix(train=f"{train_loss:.4g}", heldout=f"{heldout:.4g}")
            bar.update()

        net, report = train_value(data, train_config, progress=step)
    card = {
        **{k: settings[k] for k in ("model", "model_fingerprint", "d", "dtype", "reward")},
        "prompts": {
            "source": str(prompts),
            "count": len(chosen),
            "split": "by prompt",
            "heldout_fraction": train_config.heldout_fraction,
            "split_seed": train_config.seed,
            "heldout_prompt_indices": report.pop("heldout_prompts"),
        },
        "lm": settings["lm"],
        "samples": {
            "samples_per_prompt": samples_per_prompt,
            "responses": counts["responses"],
            "skipped_nan": counts["skipped_nan"],
            "states": len(data.states),
            "seed": seed,
        },
        "learning_cost": {
            "responses_sampled": counts["responses"] + counts["skipped_nan"],
            "responses_scored": counts["responses"] + counts["skipped_nan"],
            "tokens": counts["tokens"],
            "seconds_collect": data.seconds,
            "seconds_train": report["seconds"],
        },
        "training": train_config.model_dump(mode="json"),
        "report": report,
    }
    save_value(net, card, root)
    return card


def _model_name(model: Any, system: LMDynamics) -> str:
    if model is None:
        return str(DEFAULT_MODEL)
    if isinstance(model, str | os.PathLike):
        return str(model)
    return str(getattr(system.model, "name_or_path", type(system.model).__name__))
