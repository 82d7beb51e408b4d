#!/usr/bin/env bash
# The Slurm executor's overhead (docs/performance.md, "Slurm executor"): a tiny sweep (two runs, four
# evaluations; tests/test_slurm.py's) through `--executor slurm` on a one-node cluster against the same sweep with
# `--workers 2` on this machine, interleaved by the A/B timer (its path in $ABBENCH). Each run starts from an
# empty sweep folder. Needs a cluster: eval "$(bash .ci/slurm-up DIR)".
#
#   bash benchmarks/slurm_overhead.sh [PAIRS]
set -euo pipefail
pairs=${1:-3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
abbench="${ABBENCH:?set ABBENCH to the A/B timer (docs/performance.md)}"
here=$(cd "$(dirname "$0")/.." && pwd)
python3 - "$here/tests/test_slurm.py" "$work/sweep.toml" <<'PY'
import ast, sys
tree = ast.parse(open(sys.argv[1], encoding="utf-8").read())
text = next(node.value.value for node in tree.body if isinstance(node, ast.Assign)
            and getattr(node.targets[0], "id", "") == "SWEEP")
open(sys.argv[2], "w", encoding="utf-8").write(text)
PY
bench="midbench bench --config $work/sweep.toml --quiet"
python3 "$abbench" -n "$pairs" \
    -a "rm -rf $work/a && $bench --out $work/a --executor slurm > /dev/null" \
    -b "rm -rf $work/b && $bench --out $work/b --workers 2 > /dev/null"
cmp "$work/a/results/leaderboard-tiny-slurm.md" "$work/b/results/leaderboard-tiny-slurm.md" \
    && echo "leaderboards identical"
