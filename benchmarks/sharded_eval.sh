#!/usr/bin/env bash
# P12 (docs/performance.md): the same evaluation sharded over 2 processes × 1 thread (`--nproc 2`, torchrun,
# gloo) against 1 process × 2 threads, interleaved by the A/B timer (docs/performance.md; its path in $ABBENCH); then checks that the two
# per-example matrices (attacks and profile curves) are identical.
#
#   bash benchmarks/sharded_eval.sh [N_EXAMPLES] [PAIRS] [ATTACK OPTIONS]
#   defaults: 800 examples, 5 pairs, "--unknown-attacks" (the profile); e.g. "--attacks pgd-linf,pgd-l2,mim-linf"
set -euo pipefail
n=${1:-800}
pairs=${2:-5}
attacks=${3:---unknown-attacks}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
here=$(cd "$(dirname "$0")/.." && pwd)
abbench="${ABBENCH:?set ABBENCH to the A/B timer (docs/performance.md)}"

midbench train --method pgd-at --epochs 1 --n-train 512 --val-size 32 --attack-steps 3 --device cpu --quiet \
    --out "$work/model" > /dev/null
evaluation="midbench eval $work/model/model.safetensors $attacks --n-examples $n --batch-size 50 \
--device cpu --name m --quiet"
python3 "$abbench" -n "$pairs" \
    -a "rm -rf $work/a && OMP_NUM_THREADS=1 $evaluation --results-dir $work/a --nproc 2 > /dev/null" \
    -b "rm -rf $work/b && OMP_NUM_THREADS=2 $evaluation --results-dir $work/b > /dev/null"
python3 - "$work" <<'PY'
import sys
from pathlib import Path

import numpy as np

work = Path(sys.argv[1])
(a,), (b,) = (list((work / side / "runs" / "mnist5k").glob("*.npz")) for side in ("a", "b"))
with np.load(a) as sharded, np.load(b) as single:
    same = sorted(sharded.files) == sorted(single.files) and all(
        np.array_equal(sharded[key], single[key]) for key in single.files)
print(f"per-example matrices identical ({', '.join(sorted(single.files))}): {same}")
PY
