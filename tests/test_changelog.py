"""CHANGELOG.md tells the truth about imports and versions.

Every row of its upgrade table is checked: the new import works and the old one raises
`ImportError`, and a *gone* row's old module does not exist in the package (no alias modules are
left). The version is the same in pyproject.toml,
``mpc_llm.__version__`` and the CHANGELOG's newest release.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

import mpc_llm

ROOT = Path(__file__).resolve().parents[1]
CHANGELOG = ROOT / "CHANGELOG.md"
IMPORT = re.compile(r"`from ([\w.]+) import ([\w, ]+)`")


@dataclass(frozen=True)
class Row:
    old_module: str
    old_names: tuple[str, ...]
    new_module: str
    new_names: tuple[str, ...]
    outcome: str  # "gone" or "fails"

    @property
    def old(self) -> str:
        return f"from {self.old_module} import {', '.join(self.old_names)}"

    @property
    def new(self) -> str:
        return f"from {self.new_module} import {', '.join(self.new_names)}"


def rows() -> list[Row]:
    """The upgrade table: ``| `from old import ...` | `from new import ...` ... | gone/fails |``."""
    found = []
    for line in CHANGELOG.read_text(encoding="utf-8").splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) != 3 or cells[2] not in {"gone", "fails"}:
            continue
        old, new = IMPORT.search(cells[0]), IMPORT.search(cells[1])
        assert old and new, f"CHANGELOG.md: a table row without two imports: {line}"
        names = [tuple(n.strip() for n in m.group(2).split(",")) for m in (old, new)]
        found.append(Row(old.group(1), names[0], new.group(1), names[1], cells[2]))
    return found


ROWS = rows()


def run(code: str) -> dict[str, object]:
    namespace: dict[str, object] = {}
    exec(compile(code, "user_code.py", "exec"), namespace)
    return namespace


def test_the_table_is_there() -> None:
    assert len(ROWS) >= 20
    assert {r.old_module for r in ROWS} >= {
        "mpc_llm.cost",
        "mpc_llm.result",
        "mpc_llm.rollout",
        "mpc_llm.importance",
        "mpc_llm.parameterization",
        "mpc_llm.config",
        "mpc_llm.models",
        "mpc_llm.testing",
        "mpc_llm.dynamics.base",
        "mpc_llm.dynamics.lm_rollout",
        "mpc_llm.dynamics.lm_sampling",
        "mpc_llm.dynamics.lm_cache",
    }


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.old)
def test_every_new_import_works(row: Row) -> None:
    run(row.new)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.old)
def test_every_old_import_fails(row: Row) -> None:
    sys.modules.pop(row.old_module, None)
    with pytest.raises(ImportError):
        run(row.old)


def test_no_alias_module_is_left() -> None:
    package = ROOT / "mpc_llm"
    modules = {
        ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        for p in package.rglob("*.py")
    }
    assert not {r.old_module for r in ROWS if r.outcome == "gone"} & modules
    assert "mpc_llm._moved" not in modules


def test_one_version_everywhere() -> None:
    project = (ROOT / "pyproject.toml").read_text(encoding="utf-8")
    pyproject = re.search(r'^version = "([^"]+)"', project, re.M)
    newest = re.search(r"^## \[(\d+\.\d+\.\d+)\]", CHANGELOG.read_text(encoding="utf-8"), re.M)
    assert pyproject is not None and newest is not None
    assert pyproject.group(1) == mpc_llm.__version__ == newest.group(1)


def test_the_changelogs_links_resolve() -> None:
    text = CHANGELOG.read_text(encoding="utf-8")
    for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
        if not re.match(r"[a-z]+://", target):
            assert (ROOT / target).exists(), f"CHANGELOG.md links to a missing file: {target}"
