#!/usr/bin/env bash
# Mutation testing of the paths every result flows through (not part of CI: it is slow).
#
#   bash scripts/mutation.sh                       # every configured module (an hour or more on 2 cores)
#   bash scripts/mutation.sh core/importance.py evaluation/records.py   # some of them
#
# Configuration: [tool.mutmut] in pyproject.toml (the modules, the targeted test selection); mutmut 3
# runs, for each mutant, only the selected tests that reach the mutated function. Needs the
# `mutation` extra (pip install -e ".[mutation]"). Runs at the lowest CPU priority, one worker per
# core unless MUTMUT_CHILDREN says otherwise. Prints the kill rate per module; docs/mutation.md
# lists the surviving mutants that are equivalent (no test can tell them from the original), with
# the reason. Results stay in mutants/ (git-ignored): `mutmut show NAME` prints one mutant's diff.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}"
MUTMUT="$(dirname "$PY")/mutmut"
[ -x "$MUTMUT" ] || MUTMUT=mutmut

modules=("$@")
if [ ${#modules[@]} -eq 0 ]; then
    modules=(core/importance.py controllers evaluation/records.py evaluation/summary.py dynamics/lm_closeness.py)
fi
patterns=()
for m in "${modules[@]}"; do
    m="${m#mpc_llm/}"
    m="${m%.py}"
    patterns+=("mpc_llm.${m//\//.}.*")
done

export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
start=$(date +%s)
nice -n 19 "$MUTMUT" run --max-children "${MUTMUT_CHILDREN:-$(nproc)}" "${patterns[@]}"
echo "mutmut took $(( $(date +%s) - start )) s"

# kill rate per module, from `mutmut results --all true` ("    name: status")
"$MUTMUT" results --all true | "$PY" -c '
import collections, fnmatch, sys
patterns = sys.argv[1:]
counts = collections.defaultdict(collections.Counter)
for line in sys.stdin:
    name, _, status = line.strip().rpartition(": ")
    if "__mutmut_" not in name:
        continue
    module = name.split(".x")[0].split(".x\u01c1")[0]
    module = ".".join(p for p in name.split("__mutmut_")[0].split(".") if not p.startswith(("x_", "x\u01c1")))
    if any(fnmatch.fnmatch(name, p) for p in patterns):
        counts[module][status] += 1
print(f"{\"module\":44} {\"killed\":>7} {\"survived\":>8} {\"other\":>6} {\"rate\":>6}")
for module, c in sorted(counts.items()):
    total = sum(c.values())
    killed = c["killed"] + c["timeout"] + c["caught by type check"]
    survived = c["survived"]
    other = total - killed - survived
    print(f"{module:44} {killed:7d} {survived:8d} {other:6d} {killed / total:6.1%}")
' "${patterns[@]}"
