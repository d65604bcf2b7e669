"""Learning a value for a model and a reward: collect, train, save (what ``mpc-llm train-value`` runs).

`train_value_function` samples ``samples_per_prompt`` responses per prompt from the base model
(``prompts``: a training split such as ``sharegpt:train``, never the prompts results are reported
on), records the pre-logit at every step and the reward of each finished response
(`mpc_llm.values.collect`, resumable: ``OUT/data`` keeps finished chunks), trains a value with a
held-out split by prompt (`mpc_llm.values.train_value`) and writes ``OUT/value.safetensors`` and
``OUT/card.json``. The card says what the value cost to learn (responses sampled and scored, tokens,
seconds), to be reported beside any test-time budget that uses it. Nothing is written to
``OUT/value.safetensors`` unless training finished.

Every check that needs no weights runs before the model loads (`check_training`): the settings, the
prompts (as many as asked, at least two for the held-out split, not a split results are reported on
unless ``allow_test_split``), the reward's spec, the dtype, the prompts against the model's context,
and the folder (`mpc_llm.values.folder.check_value_folder`: a finished value or another collection
is replaced only with ``overwrite``, and a folder holding files this command does not write never).
``overwrite`` deletes this command's own files only once the reward and the model have loaded.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from mpc_llm.core import validated
from mpc_llm.dynamics import LMDynamics
from mpc_llm.evaluation.prompts import DATASETS, load_prompt_set
from mpc_llm.evaluation.prompts import sharegpt as sharegpt_source
from mpc_llm.lm import DEFAULT_MODEL, LMConfig, Prompt
from mpc_llm.lm.facts import model_facts
from mpc_llm.lm.precision import check_dtype, dtype_name
from mpc_llm.rewards import check_reward_spec, reward_from_spec
from mpc_llm.values import TrainConfig, collect, load_data, save_value, train_value
from mpc_llm.values.folder import FolderState, check_value_folder, clear_value_folder
from mpc_llm.values.io import finite


@dataclass(frozen=True)
class TrainingPlan:
    """What `check_training` found, before any model loads: the settings, the prompts, what the
    folder holds (`FolderState`) and the collection's settings known without the weights."""

    lm: LMConfig
    train: TrainConfig
    prompts: list[Prompt]
    folder: FolderState
    known: dict[str, Any]


def reported_split(source: str | os.PathLike[str]) -> str | None:
    """The split of a prompt source that results are reported on, if it is one: ``"test"`` for
    ``sharegpt:test`` and for ``hh-rlhf`` / ``shp`` (their test splits); else None."""
    name = str(source)
    if sharegpt_source.parse_spec(name) == "test" or name in DATASETS:
        return "test"
    return None


def check_training(
    out: str | os.PathLike[str],
    *,
    model: Any = None,
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
    overwrite: bool = False,
    allow_test_split: bool = False,
) -> TrainingPlan:
    """Every check of `train_value_function` that needs no weights, writing and deleting nothing.

    Raises:
        ValueError: naming the setting, prompt source or folder, and what to do instead.
    """
    lm_config = validated(LMConfig, lm if lm is not None else {"max_new_tokens": 48, "temperature": 0.7}, {})
    train_config = validated(TrainConfig, train, {})
    for name, value in (("samples_per_prompt", samples_per_prompt), ("chunk_size", chunk_size),
                        ("num_prompts", 1 if num_prompts is None else num_prompts)):  # fmt: skip
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    resolved = check_dtype(dtype, device)  # before the model loads
    if reported_split(prompts) and not allow_test_split:
        raise ValueError(
            f"--prompts {prompts} is a split results are reported on (test): a value trained on it has seen "
            "the prompts it would be judged on; train on sharegpt:train, or pass --allow-test-split if you "
            "mean it (the card records the source)"
        )
    chosen = load_prompt_set(prompts, num_prompts, exact=True).prompts
    if len(chosen) < 2:
        raise ValueError(
            f"{len(chosen)} prompt: the held-out split by prompt needs at least 2 (some to train on, some "
            "held out); give more prompts (--num-prompts 2 or more)"
        )
    check_reward_spec(reward)
    known: dict[str, Any] = {
        "reward": reward, "prompts": str(prompts), "lm": lm_config.model_dump(mode="json"),
        "samples_per_prompt": samples_per_prompt, "seed": seed, "chunk_size": chunk_size,
        "num_prompts": len(chosen),
    }  # fmt: skip
    if model is None or isinstance(model, str | os.PathLike):
        name = str(DEFAULT_MODEL if model is None else model)
        facts = model_facts(name, resolved)
        if facts is not None:
            facts.check_prompts(chosen, lm_config.max_new_tokens, lm_config.chat_template)
            known.update({"model": name, "dtype": dtype_name(facts.dtype)})
    state = check_value_folder(out, known, overwrite=overwrite)
    return TrainingPlan(lm_config, train_config, list(chosen), state, known)


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
    overwrite: bool = False,
    allow_test_split: bool = False,
) -> dict[str, Any]:
    """Collect, train and save a value; returns its card.

    Args:
        out: the value folder (``value.safetensors``, ``card.json``, ``data/``).
        model: a model id, folder, ``.gguf`` file or loaded model (default: the embedded SmolLM2);
            ``tokenizer`` with a loaded model.
        reward: a reward spec (`mpc_llm.rewards.reward_from_spec`).
        prompts: a prompt source (`mpc_llm.evaluation.prompts.load_prompt_set`); ``num_prompts``: the
            first that many (a source holding fewer is refused).
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
        overwrite: replace a finished value or another collection in ``out`` (this command's files
            only, deleted once the model has loaded).
        allow_test_split: train on a split results are reported on (`reported_split`).

    Raises:
        ValueError: bad settings, prompts, reward or folder (`check_training`, before any model
            loads); a chunk whose every reward is NaN.
    """
    plan = check_training(
        out, model=model, reward=reward, prompts=prompts, num_prompts=num_prompts,
        samples_per_prompt=samples_per_prompt, lm=lm, device=device, dtype=dtype, seed=seed,
        chunk_size=chunk_size, train=train, overwrite=overwrite, allow_test_split=allow_test_split,
    )  # fmt: skip
    scorer = reward_from_spec(reward)
    system = LMDynamics(model if model is not None else DEFAULT_MODEL, tokenizer, device=device, dtype=dtype,
                        config=plan.lm)  # fmt: skip
    settings = {
        "model": _model_name(model, system),
        "model_fingerprint": system.model_fingerprint(),
        "d": system.control_dim,
        "dtype": dtype_name(system.model_dtype),  # the model's while collecting
        "reward": reward,
        "prompts": str(prompts),
        "lm": plan.lm.model_dump(mode="json"),
    }
    root = Path(out)
    if plan.folder == "replace":  # every check has passed and the model is loaded
        clear_value_folder(root)
    with tqdm(total=len(plan.prompts), desc="collect", unit="prompt", disable=quiet) as bar:
        counts = collect(
            system.with_prompts, plan.prompts, scorer.as_cost(), root / "data",
            samples_per_prompt=samples_per_prompt, seed=seed, chunk_size=chunk_size, settings=settings,
            progress=bar.update,
        )  # fmt: skip
    net, report = _train(root, plan.train, quiet)
    card = _card(settings, plan, prompts, counts, report, samples_per_prompt, seed)
    save_value(net, card, root)
    return finite(card)


def _train(root: Path, config: TrainConfig, quiet: bool) -> tuple[Any, dict[str, Any]]:
    data = load_data(root / "data")
    with tqdm(total=config.epochs, desc="train", unit="epoch", disable=quiet) as bar:

        def step(epoch: int, train_loss: float, heldout: float) -> None:
            bar.set_postfix(train=f"{train_loss:.4g}", heldout=f"{heldout:.4g}")
            bar.update()

        net, report = train_value(data, config, progress=step)
    report["states"] = len(data.states)
    report["seconds_collect"] = data.seconds
    return net, report


def _card(
    settings: Mapping[str, Any],
    plan: TrainingPlan,
    prompts: str | os.PathLike[str],
    counts: Mapping[str, int],
    report: dict[str, Any],
    samples_per_prompt: int,
    seed: int,
) -> dict[str, Any]:
    """The value's card: what it was trained on and for, and what it cost to learn."""
    states, seconds_collect = report.pop("states"), report.pop("seconds_collect")
    return {
        **{k: settings[k] for k in ("model", "model_fingerprint", "d", "dtype", "reward")},
        "prompts": {
            "source": str(prompts),
            "source_split": _split_of(prompts),
            "count": len(plan.prompts),
            "split": "by prompt",
            "heldout_fraction": plan.train.heldout_fraction,
            "split_seed": plan.train.seed,
            "heldout_prompt_indices": report.pop("heldout_prompts"),
        },
        "lm": settings["lm"],
        "samples": {
            "samples_per_prompt": samples_per_prompt,
            "responses": counts["responses"],
            "skipped_nan": counts["skipped_nan"],
            "states": states,
            "seed": seed,
        },
        "learning_cost": {
            "responses_sampled": counts["responses"] + counts["skipped_nan"],
            "responses_scored": counts["responses"] + counts["skipped_nan"],
            "tokens": counts["tokens"],
            "seconds_collect": seconds_collect,
            "seconds_train": report["seconds"],
        },
        "training": plan.train.model_dump(mode="json"),
        "report": report,
    }


def _split_of(source: str | os.PathLike[str]) -> str | None:
    """The ShareGPT split a source names (``train``, ``dev``, ``test``), ``test`` for the datasets'
    test splits, None for a prompt file or the bundled set."""
    return sharegpt_source.parse_spec(str(source)) or reported_split(source)


def _model_name(model: Any, system: LMDynamics) -> str:
    if model is None:
        return str(DEFAULT_MODEL)
    if isinstance(model, str | os.PathLike):
        return str(model)
    return str(getattr(system.model, "name_or_path", type(system.model).__name__))
