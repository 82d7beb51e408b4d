#!/usr/bin/env bash
# P13 (docs/performance.md): `midbench bench --workers 2` against the serial sweep, interleaved by
# the A/B timer (docs/performance.md; its path in $ABBENCH), on a small sweep of four runs (standard, PGD-AT, TRADES and MID, whose source is
# the standard run) evaluated white-box and under transfer; then checks that both leaderboards are identical.
#
#   bash benchmarks/parallel_sweep.sh [PAIRS] [THREADS]     # default 3 pairs; THREADS pins [sweep] threads
# Identical tables need pinned threads: a serial run otherwise uses torch's default thread count and each worker
# its share of the CPUs, and a different thread count may round floating-point sums differently.
set -euo pipefail
pairs=${1:-3}
threads=${2:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
here=$(cd "$(dirname "$0")/.." && pwd)
cat > "$work/sweep.toml" <<'TOML'
[sweep]
name = "p13"
dataset = "mnist5k"
seed = 0
device = "cpu"
protocols = ["whitebox", "transfer"]
transfer_source = "standard"
THREADS_LINE

[eval]
n_examples = 200
attacks = ["fgsm-linf", "pgd-linf", "pgd-l2"]

[train]
arch = "lenet"
batch_size = 64
n_train = 1000
val_size = 50
val_pgd_steps = 3
attack_steps = 3

[runs.standard]
epochs = 2

[runs.pgd-at]
epochs = 2

[runs.trades]
epochs = 2

[runs.mid]
epochs = 1
teacher_epochs = 1
first_order = true
TOML
if [ -n "$threads" ]; then
    sed -i "s/^THREADS_LINE$/threads = $threads/" "$work/sweep.toml"
else
    sed -i "/^THREADS_LINE$/d" "$work/sweep.toml"
fi
python3 "${ABBENCH:?set ABBENCH to the A/B timer (docs/performance.md)}" -n "$pairs" \
    -a "rm -rf $work/a && midbench bench --config $work/sweep.toml --out $work/a --quiet --workers 2 > /dev/null" \
    -b "rm -rf $work/b && midbench bench --config $work/sweep.toml --out $work/b --quiet > /dev/null"
if cmp -s "$work/a/results/leaderboard-p13.md" "$work/b/results/leaderboard-p13.md"; then
    echo "leaderboards identical: yes"
else
    echo "leaderboards identical: NO"; diff "$work/a/results/leaderboard-p13.md" "$work/b/results/leaderboard-p13.md" || true
fi
