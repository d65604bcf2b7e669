"""Shared test set-up."""

from __future__ import annotations

from hypothesis import settings

# Derandomised: property tests draw the same examples on every run, so CI is never flaky.
# No deadline: the first call of a torch function can be slow on a loaded 2-core machine.
settings.register_profile("mpc_llm", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("mpc_llm")
