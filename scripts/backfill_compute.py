"""Add the compute fields to a finished run's records made before they were recorded.

Records made before ``prefill_tokens`` / ``forward_tokens`` / ``grad_steps`` / ``value_evals`` existed
hold what is needed to compute them exactly as `mpc_llm.evaluation.compare.records.compute_fields`
does for an open-loop controller: the prompt's tokens (re-encoded with the run's model, chat
template and prompt source), the ``tokens`` generated and the per-token ``grad_steps_per_token`` /
``value_evals_per_token``, and their ``value_tokens`` (the value's parameters from its card over
the model's). For a sequential controller the committed tokens it read again are
estimated by the response's ``length`` (a run today counts every row that went on, resampled
copies and QAlign's kept prefixes included, so this is low for SMC and QAlign), and its value
evaluations are not known. Each filled record says so (``"compute_from": "backfill"``); records
that already have the fields are left as they are, so running it twice changes nothing. The
summary is rewritten from the filled records.

    python scripts/backfill_compute.py docs/results/sharegpt_protocol/vader64 [more runs]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mpc_llm.controllers import CONTROLLERS
from mpc_llm.evaluation.compare import run_settings
from mpc_llm.evaluation.compare.records import add_value_tokens, compute_fields
from mpc_llm.evaluation.compare.records_file import read_records, write_records
from mpc_llm.evaluation.prompts import load_prompt_set
from mpc_llm.evaluation.summary import amortised_learning, summarize, write_summary
from mpc_llm.values import ValueRef


def anytime_classes() -> dict[str, bool]:
    """Controller class name -> whether one run serves every budget (its records re-read nothing)."""
    return {cls.__name__: bool(cls.anytime) for cls in CONTROLLERS.values()}


def context_tokens(settings: dict[str, Any]) -> tuple[list[int], int]:
    """The prompt tokens of each of the run's prompts, as its model and chat template read them, and
    the model's parameter count."""
    from mpc_llm.dynamics import LMDynamics
    from mpc_llm.lm.loading import load_default_model

    if settings.get("model") not in (None, "SmolLM2-135M-Instruct"):
        raise SystemExit(f"this script re-encodes with the embedded model; the run used {settings['model']}")
    prompts = load_prompt_set(settings["prompts"], limit=settings["num_prompts"]).prompts
    digest = run_settings(prompts, {}, [], [], {})["prompts_sha256"]
    if settings.get("prompts_sha256") not in (None, digest):  # merged runs record no digest
        raise SystemExit(f"the prompts of {settings['prompts']} are not the run's any more (sha256 differs)")
    model, tokenizer = load_default_model()
    lm = LMDynamics(model, tokenizer, prompts, **(settings.get("lm") or {}))
    return lm.context_tokens().tolist(), lm.model_params


def value_ratio(spec: dict[str, Any], model_params: int) -> float | None:
    """A controller's value parameters over the model's (None: no value, or its file is gone)."""
    path = (spec.get("config") or {}).get("value")
    if not path or not Path(path).exists():
        return None
    return ValueRef(path).params() / model_params


def _needs_value_tokens(record: dict[str, Any]) -> bool:
    return ("grad_steps" in record or "grad_steps_per_token" in record) and "value_tokens" not in record


def backfill(folder: Path) -> int:
    """Fill the run's records in place and rewrite its summary; returns the records filled."""
    settings = json.loads((folder / "settings.json").read_text())
    records = read_records(folder / "records.jsonl", repair=False)
    todo = [r for r in records if "forward_tokens" not in r or _needs_value_tokens(r)]
    if not todo:
        return 0
    context, model_params = context_tokens(settings)
    anytime = anytime_classes()
    specs = settings["controllers"]
    for r in todo:
        sequential = not anytime.get(specs[r["controller"]]["class"], True)
        rereads = int(r.get("length") or 0) if sequential and not r.get("invalid") else 0
        stats = {k: [r[k]] for k in ("grad_steps_per_token", "value_evals_per_token") if k in r}
        spent = compute_fields(r["samples"], r["tokens"], r["seconds"], context[r["prompt_index"]], stats, 0,
                               rereads)  # fmt: skip
        r.update(spent, compute_from="backfill")
        add_value_tokens([r], value_ratio(specs[r["controller"]], model_params))
    write_records(folder / "records.jsonl", records)
    names = list(specs)
    ordered = sorted(records, key=lambda r: names.index(r["controller"]))
    baseline = "best_of_n" if "best_of_n" in specs else None
    rows = summarize(ordered, baseline=baseline, learning=amortised_learning(settings))
    write_summary(rows, folder, settings, baseline)
    return len(todo)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", type=Path, help="finished run folders")
    for folder in parser.parse_args().runs:
        print(f"{folder}: {backfill(folder)} records filled")


if __name__ == "__main__":
    main()
