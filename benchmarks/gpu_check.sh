#!/usr/bin/env bash
# The GPU path, checked in one call (issue 16): run it on a machine with a CUDA device, from the repository root,
# with midbench and its test extras installed; it prints one summary table at the end and exits 1 when a check
# fails. Each part has a time limit, and the limits add up to 8 minutes (a part that runs out is a failed row);
# expected about 5 minutes on one H200 (not yet measured). `--cpu-only` runs every part on the CPU at small sizes (a few minutes on
# 2 cores), which is how the tests exercise it.
#
#   bash benchmarks/gpu_check.sh [--cpu-only] [--out DIR]
#
# Parts (their figures: benchmarks/gpu_check.py's docstring):
#   cuda tests      pytest -m cuda (skipped without a GPU)
#   precision       a PGD-AT and a MID step on ResNet-18 at 32×32 (--cpu-only: tiny ResNets of the same layout):
#                   bf16 autocast + channels_last against fp32
#                   (same-run speed ratio; first-step losses within 2%)
#   pgd             native PGD-10 against torchattacks' PGD on the device (same-run ratio)
#   autoattack      AutoAttack through midbench equal to the reference, example by example, on the device
#   profile         the unknown-attack profile on the device against the CPU's, entry by entry (on the CPU
#                   alone: two CPU runs, which must be equal)
#   torchrun        an evaluation sharded by torchrun over the GPUs present (NCCL; on the CPU: 2 processes,
#                   gloo) equal to one process
set -uo pipefail

mode=gpu
out=""
while [ $# -gt 0 ]; do
    case "$1" in
        --cpu-only) mode=cpu ;;
        --out) out="$2"; shift ;;
        *) echo "usage: bash benchmarks/gpu_check.sh [--cpu-only] [--out DIR]" >&2; exit 2 ;;
    esac
    shift
done
cd "$(dirname "$0")/.."
out=${out:-$(mktemp -d -t midbench-gpu-check-XXXX)}
mkdir -p "$out"
results="$out/results.jsonl"
: > "$results"

if [ "$mode" = gpu ]; then
    gpus=$(python -c "import torch; print(torch.cuda.device_count())")
    if [ "$gpus" -lt 1 ]; then
        echo "gpu_check: no CUDA device here; run with --cpu-only to check everything but the GPU" >&2
        exit 2
    fi
    dev=cuda; nproc=$gpus; slack=1
    precision_args=(--batch 128 --pairs 7 --attack-steps 10); mid_args=(--batch 64 --pairs 5)
    pgd_args=(--n 2048 --batch 512 --pairs 7 --attack-steps 10)
    train_args=(--n-train 4000 --attack-steps 5); aa_n=500; profile_n=128; shard_n=512; profile_only=()
else
    # a CPU run shares its cores (CI runs it beside another test worker, and bf16 on a CPU without bf16 units is
    # some 20 times slower than fp32): limits five times as long; they only bound a part that hangs
    dev=cpu; nproc=2; slack=5
    # bf16 on a CPU without bf16 units is emulated, some ten times slower than fp32 (a ResNet-18 MID step at batch
    # 2: 3.4 s in fp32, 37 s in bf16): the tiny networks of the same layouts, the smallest steps that exercise
    # the code path
    precision_args=(--small --batch 2 --pairs 1 --attack-steps 1); mid_args=(--small --batch 2 --pairs 1)
    pgd_args=(--n 16 --batch 16 --pairs 1 --attack-steps 3)
    # the profile twice, on three threat models of its three kinds (Lp APGD, a corruption, a grid search)
    train_args=(--n-train 500 --attack-steps 2); aa_n=4; profile_n=2; shard_n=16
    profile_only=(--threat-models linf,elastic,rot-trans)
fi
echo "gpu_check: mode $mode, device $dev, work folder $out"
started=$SECONDS

# run_part NAME SECONDS COMMAND...: the command's RESULT lines go to the summary; no RESULT line (a crash, a
# timeout) becomes a failed row pointing at the part's log
run_part() {  # run_part NAME SECONDS COMMAND...: the limit (times $slack) only bounds a part that hangs
    local name=$1 limit=$(( $2 * slack ))
    shift 2
    echo "--- $name"
    timeout "$limit" "$@" > "$out/$name.log" 2>&1
    local code=$?
    grep '^RESULT ' "$out/$name.log" | sed 's/^RESULT //' >> "$results"
    if ! grep -q '^RESULT ' "$out/$name.log"; then
        python - "$name" "$dev" "$code" "$out/$name.log" >> "$results" <<'PY'
import json, sys
name, device, code, log = sys.argv[1:]
reason = "timed out" if code in ("124", "137") else f"exit code {code}"
print(json.dumps({"check": name, "device": device, "ok": False, "error": f"{reason}; log: {log}"}))
PY
    fi
}

# cuda tests: the summary line of pytest says how many ran
run_part cuda-tests 75 bash -c '
    # -n0: no workers for a few tests; only the files that hold cuda tests (collecting all would import every file)
    summary=$(python -m pytest -q -n0 -p no:cacheprovider -m cuda $(grep -l "mark.cuda" tests/test_*.py) 2>&1 | tail -n 1)
    code=${PIPESTATUS[0]}
    echo "$summary"
    python - "$code" "$0" "$summary" <<"PY"
import json, re, sys
code, device, summary = sys.argv[1:]
counts = {word: int(number) for number, word in re.findall(r"(\d+) (passed|failed|skipped|error)", summary)}
ran = counts.get("passed", 0) + counts.get("failed", 0) + counts.get("error", 0)
ok = None if ran == 0 else code == "0"
print("RESULT " + json.dumps({"check": "cuda tests", "device": device, "ok": ok, **counts,
                              **({"note": "no GPU: every cuda test skipped"} if ran == 0 else {})}))
PY
' "$dev"
run_part precision-pgd-at 45 python benchmarks/gpu_check.py precision --method pgd-at --device "$dev" \
    "${precision_args[@]}"
run_part precision-mid 60 python benchmarks/gpu_check.py precision --method mid --device "$dev" "${mid_args[@]}"
run_part pgd 45 python benchmarks/gpu_check.py pgd --device "$dev" "${pgd_args[@]}"

# a briefly PGD-trained LeNet on mnist5k: robust enough that AutoAttack's later components and the profile's
# strengths have work to do
timeout $(( 45 * slack )) midbench train --method pgd-at --epochs 1 "${train_args[@]}" --val-size 50 --device "$dev" --quiet \
    --out "$out/model" > "$out/train.log" 2>&1 || echo "gpu_check: training the check's model failed ($out/train.log)"
checkpoint="$out/model/model.safetensors"

run_part autoattack 60 python benchmarks/gpu_check.py autoattack "$checkpoint" --device "$dev" --n "$aa_n" \
    --batch 250

profile() {  # profile DEVICE FOLDER
    midbench eval "$checkpoint" --unknown-attacks ${profile_options} --n-examples "$profile_n" --batch-size 100 \
        --device "$1" --name profile --results-dir "$2" --quiet > /dev/null
}
sharded() {  # sharded NPROC FOLDER (NPROC 0: one process, no torchrun)
    local launch=()
    [ "$1" -gt 0 ] && launch=(--nproc "$1")
    midbench eval "$checkpoint" --attacks pgd-linf,fgsm-linf,pgd-l2 --n-examples "$shard_n" --batch-size 64 \
        --device "$dev" --name sharded --results-dir "$2" --quiet "${launch[@]}" > /dev/null
}
export -f profile sharded
profile_options="${profile_only[*]}"  # a string: bash exports no arrays to the functions' shells
export checkpoint profile_n shard_n dev out nproc profile_options

if [ "$mode" = gpu ]; then
    run_part profile 90 bash -c 'profile cpu "$out/profile-cpu" && profile cuda "$out/profile-cuda" &&
        python benchmarks/gpu_check.py compare-matrices --label "profile GPU vs CPU" "$out/profile-cpu" \
            "$out/profile-cuda"'
else
    run_part profile 90 bash -c 'profile cpu "$out/profile-cpu" && profile cpu "$out/profile-cpu-again" &&
        python benchmarks/gpu_check.py compare-matrices --expect-equal --label "profile CPU twice" \
            "$out/profile-cpu" "$out/profile-cpu-again"'
fi
run_part torchrun 60 bash -c 'sharded 0 "$out/single" && sharded "$nproc" "$out/sharded" &&
    python benchmarks/gpu_check.py compare-matrices --expect-equal --label "torchrun $nproc process(es) vs one" \
        "$out/single" "$out/sharded"'

python - "$results" "$((SECONDS - started))" <<'PY'
import json, sys

from tabulate import tabulate

rows, failed = [], 0
for line in open(sys.argv[1], encoding="utf-8"):
    record = json.loads(line)
    check, device, ok = record.pop("check"), record.pop("device"), record.pop("ok")
    status = {True: "ok", False: "FAIL", None: "measured"}[ok]
    failed += ok is False
    figures = ", ".join(f"{key}={value}" for key, value in record.items())
    rows.append([check, device, status, figures])
print()
print(tabulate(rows, headers=["check", "device", "result", "figures"], tablefmt="github"))
print(f"\n{len(rows)} checks, {failed} failed, {sys.argv[2]} s in all")
sys.exit(1 if failed else 0)
PY
