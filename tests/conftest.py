"""Shared test set-up."""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# Two profiles, chosen by HYPOTHESIS_PROFILE (default "mpc_llm"):
# - "mpc_llm" (CI): derandomised, property tests draw the same examples on every run, so CI is never
#   flaky;
# - "thorough": random examples on every run and ten times as many (each test's own max_examples is
#   scaled too), for a hunt before a release: HYPOTHESIS_PROFILE=thorough pytest tests/.
# No deadline: the first call of a torch function can be slow on a loaded 2-core machine.
settings.register_profile("mpc_llm", derandomize=True, deadline=None, print_blob=True)
settings.register_profile(
    "thorough", derandomize=False, deadline=None, print_blob=True, max_examples=1000,
    suppress_health_check=[HealthCheck.too_slow],
)  # fmt: skip
PROFILE = os.environ.get("HYPOTHESIS_PROFILE", "mpc_llm")
settings.load_profile(PROFILE)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under the thorough profile, a test's own ``@settings(max_examples=n)`` becomes ``10 n``."""
    if PROFILE != "thorough":
        return
    for test in {id(f): f for f in (getattr(item, "obj", None) for item in items)}.values():
        own = getattr(test, "_hypothesis_internal_use_settings", None)
        if own is not None and own.max_examples < 1000:
            test._hypothesis_internal_use_settings = settings(own, max_examples=10 * own.max_examples)


# --------------------------------------------------------------------------- language models
# Tiny randomly initialised causal LMs (hidden size 64, 2 layers) and a byte-level BPE tokenizer,
# saved to a temporary folder once per session and loaded back through mpc_llm.lm.load_model,
# so the real loading path is what the tests use.


@pytest.fixture(scope="session")
def tiny_tokenizer():
    """A 320-token byte-level BPE tokenizer with EOS (id 0), pad (id 1) and a ChatML template."""
    from mpc_llm.lm.testing import tiny_tokenizer as make

    return make()


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory, tiny_tokenizer):
    """``tiny_model_dir(arch)`` -> a folder holding a saved tiny ``arch`` model and the tokenizer."""
    from mpc_llm.lm.testing import random_model, tiny_config

    root = tmp_path_factory.mktemp("tiny_models")
    made: dict[str, object] = {}

    def folder(arch: str):
        if arch not in made:
            path = root / arch
            random_model(tiny_config(arch, len(tiny_tokenizer))).save_pretrained(path)
            tiny_tokenizer.save_pretrained(path)
            made[arch] = path
        return made[arch]

    return folder


@pytest.fixture(scope="session")
def tiny_lm(tiny_model_dir):
    """``tiny_lm(arch)`` -> ``(model, tokenizer)`` loaded from disk by `mpc_llm.lm.load_model`."""
    from mpc_llm.lm.loading import load_model

    loaded: dict[str, tuple] = {}

    def load(arch: str):
        if arch not in loaded:
            loaded[arch] = load_model(tiny_model_dir(arch), dtype="float32")
        return loaded[arch]

    return load


@pytest.fixture(scope="session")
def smollm():
    """The embedded SmolLM2-135M-Instruct and its tokenizer (the first load fills the fast-load cache)."""
    from mpc_llm.lm.loading import load_default_model

    return load_default_model(dtype="float32")
