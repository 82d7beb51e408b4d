#!/usr/bin/env bash
# Data-parallel training (docs/performance.md): the same training run over 2 processes × 1 thread (`--nproc 2`,
# torchrun, gloo) against 1 process × 2 threads, interleaved by the A/B timer (docs/performance.md; its path in $ABBENCH); then the largest
# difference between the two models' parameters (they differ only in the order of floating-point sums).
#
#   bash benchmarks/ddp_train.sh [METHOD] [N_TRAIN] [PAIRS] [EXTRA TRAIN OPTIONS]
#   defaults: pgd-at, 1024 examples, 3 pairs; e.g. bash benchmarks/ddp_train.sh mid 512 3 "--source-epochs 1 --teacher-epochs 1"
set -euo pipefail
method=${1:-pgd-at}
n=${2:-1024}
pairs=${3:-3}
extra=${4:-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
here=$(cd "$(dirname "$0")/.." && pwd)
abbench="${ABBENCH:?set ABBENCH to the A/B timer (docs/performance.md)}"

training="midbench train --method $method --epochs 1 --n-train $n --batch-size 128 --val-size 0 --attack-steps 10 \
--device cpu --quiet $extra"
python3 "$abbench" -n "$pairs" \
    -a "rm -rf $work/a && OMP_NUM_THREADS=1 $training --out $work/a --nproc 2 > /dev/null" \
    -b "rm -rf $work/b && OMP_NUM_THREADS=2 $training --out $work/b > /dev/null"
python3 - "$work" <<'PY'
import sys
from pathlib import Path

from safetensors.torch import load_file

work = Path(sys.argv[1])
a, b = load_file(work / "a" / "model.safetensors"), load_file(work / "b" / "model.safetensors")
print(f"largest parameter difference, 2 processes vs 1: {max(float((a[k] - b[k]).abs().max()) for k in b):.3g}")
PY
