"""Run mutmut's mutants of one module in one Python process (`scripts/mutation.py --in-process`).

    cd .mutation/<module>/mutants && python ../../../scripts/mutation_driver.py NAME [NAME ...]
    ... mutation_driver.py --tests tests/test_samplers.py tests/test_curve.py -- NAME [NAME ...]

mutmut 3 starts a fresh pytest session per mutant, which on this project costs seconds of imports
and collection (torch, transformers) for tests that run in a fraction of one. This driver runs in
the ``mutants/`` folder mutmut generated: for each mutant it sets ``MUTANT_UNDER_TEST`` (which
mutmut's trampolines read at every call, so the mutated function is swapped in without
re-importing) and runs, with ``pytest -x``, the tests that mutmut's stats
(``mutmut-stats.json``) found reaching the mutated function. Exit code 0 is a survivor; a failing
test kills it; a mutant still running after ``10 s + 10 x`` its tests' measured time is stopped (an
alarm raises in the running test) and counted as a timeout, which kills it as mutmut counts it.
``--tests``: run these tests for every mutant instead (e.g. the survivors of the targeted
selection against more of the suite; 600 s each). Prints one ``MUTANT NAME: verdict`` line per
mutant (killed, survived, timeout, no tests, error) among pytest's own output. First it checks
that the trampolines are reached: every mutated function raises under ``MUTANT_UNDER_TEST=fail``
(mutmut's forced-fail test), so the first mutant's tests must fail then.

Hypothesis runs the suite's profile without its shrink phase (a failure kills a mutant either way,
and shrinking one took minutes); the profile is derandomized, so no example database carries one
mutant's failing example over to the next.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from pathlib import Path
from types import FrameType

import pytest

ARGS = ["-x", "-q", "--no-header", "-p", "no:cacheprovider", "-W", "ignore"]


class MutantTimeout(Exception):
    """Raised in the running test when a mutant's time is up."""


class Clock:
    """The alarm of one mutant: ``fired`` says whether its time ran out."""

    fired = False

    @classmethod
    def ring(cls, signum: int, frame: FrameType | None) -> None:
        cls.fired = True
        raise MutantTimeout


class NoShrink:
    """A pytest plugin that drops Hypothesis' shrink phase from the profile the suite's conftest
    loaded (``pytest_configure`` runs after the initial conftests, before any test module is
    imported, so every test's own ``@settings`` inherits it)."""

    def pytest_configure(self, config: pytest.Config) -> None:
        from hypothesis import Phase, settings

        phases = tuple(p for p in settings.default.phases if p is not Phase.shrink)
        settings.register_profile("mutation-driver", parent=settings.default, phases=phases)
        settings.load_profile("mutation-driver")


def function_of(mutant: str) -> str:
    """The mangled function a mutant belongs to (its key in mutmut's stats).

    Example:
        >>> function_of("mpc_llm.core.tilted.x_draw_index__mutmut_12")
        'mpc_llm.core.tilted.x_draw_index'
    """
    return re.sub(r"__mutmut_\d+$", "", mutant)


def verdict(mutant: str, tests: list[str], seconds: float) -> str:
    """Run ``tests`` under ``mutant`` for at most ``seconds`` and say what happened to it."""
    if not tests:
        return "no tests"
    os.environ["MUTANT_UNDER_TEST"] = mutant
    Clock.fired = False
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        code = pytest.main([*tests, *ARGS], plugins=[NoShrink()])
    except MutantTimeout:  # the alarm rang between two tests
        code = pytest.ExitCode.TESTS_FAILED
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        os.environ["MUTANT_UNDER_TEST"] = ""
    if code == pytest.ExitCode.OK:
        return "survived"
    if code == pytest.ExitCode.TESTS_FAILED:
        return "timeout" if Clock.fired else "killed"
    return "error"


def main(args: list[str]) -> None:
    stats = json.loads(Path("mutmut-stats.json").read_text())
    tests_of, durations = stats["tests_by_mangled_function_name"], stats["duration_by_test"]
    names, given = args, None
    if args[:1] == ["--tests"]:
        given, names = args[1 : args.index("--")], args[args.index("--") + 1 :]
        tests_of = {function_of(n): given for n in names}
    signal.signal(signal.SIGALRM, Clock.ring)
    probe = next((n for n in names if tests_of.get(function_of(n))), None)
    if probe is not None and verdict("fail", sorted(tests_of[function_of(probe)]), 600.0) != "killed":
        raise SystemExit(f"the tests of {probe} pass with every mutated function failing: run from mutants/")
    for name in names:
        tests = sorted(tests_of.get(function_of(name), []))
        limit = 10.0 + 10.0 * sum(durations.get(t, 1.0) for t in tests) if given is None else 600.0
        print(f"MUTANT {name}: {verdict(name, tests, limit)}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
