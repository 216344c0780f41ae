#!/usr/bin/env bash
# Issue 17's GPU measurement in one prepared command: the bench at the issue's setting with and without each speed
# lever, the phases, the engine on in-memory tensors, inference at batch 256 and memory at C=4 and C=8; a summary of
# the ratios the issue's targets ask for is printed last (scripts/gpu_speed_summary.py) and every JSON lands in $OUT.
#
# On a lent GPU machine (see the device tool's README: one command, 15 minutes of device time in all) the machine
# lacks monai, open_clip_torch, pytorch-ignite, ftfy and wcwidth: fetch their wheels here first, once, into .whl
# (ignored by git; name it in the run's `carry`):
#     scripts/gpu_speed.sh prepare
# then run, on the device (the four runs are capped at 560 s together: give timeout_s 600):
#     scripts/gpu_speed.sh
# A dry run of the same logic on the CPU with a tiny backbone (seconds):
#     DEVICE=cpu BACKBONE=CILMP-Tiny DTYPE=fp32 B=2 B_INFER=4 STEPS=2 D=16 scripts/gpu_speed.sh
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "prepare" ]]; then
    grep -qx '/.whl/' "$(git rev-parse --git-common-dir)/info/exclude" 2>/dev/null ||
        echo '/.whl/' >>"$(git rev-parse --git-common-dir)/info/exclude"
    mkdir -p .whl
    for pkg in monai==1.6.1 open_clip_torch==3.3.0 pytorch-ignite==0.5.5 ftfy==6.3.1 wcwidth==0.9.4; do
        python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
            --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            -d .whl "$pkg" || exit 1
    done
    exit 0
fi

DEVICE=${DEVICE:-cuda}
BACKBONE=${BACKBONE:-ViT-B-16}
DTYPE=${DTYPE:-bf16}
B=${B:-64}
B_INFER=${B_INFER:-256}
C=${C:-4}
L=${L:-16}
D=${D:-4096}
STEPS=${STEPS:-10}
WORKERS=${WORKERS:-4}
OUT=${OUT:-gpu_speed_out}
PY=${PY:-python3}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1

if ! "$PY" -c "import monai, open_clip, ignite" 2>/dev/null; then
    [[ -d .whl ]] || { echo "monai/open_clip/ignite are missing and there is no .whl folder: run '$0 prepare' here first and carry .whl." >&2; exit 1; }
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
    export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
[[ "$DEVICE" == cuda* ]] && nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.max.sm --format=csv | tee "$OUT/gpu.txt"

common=(--backbone "$BACKBONE" --device "$DEVICE" --dtype "$DTYPE" -C "$C" -L "$L" -D "$D")
bench() {  # name, timeout seconds, bench options...
    local name=$1 limit=$2
    shift 2
    echo "== $name: $*"
    timeout "$limit" "$PY" -m monai_cilmp bench "${common[@]}" "$@" --out "$OUT/$name.json" >"$OUT/$name.log" 2>&1 ||
        { echo "   $name failed or ran out of time (see $OUT/$name.log)"; tail -3 "$OUT/$name.log"; }
}

# 1. eager, every lever on, each ablated, phases, full context, and the engine on in-memory tensors
bench levers 170 -B "$B" --steps "$STEPS" --frozen-in-compute-dtype --ablate shared_prefix compute_dtype \
    --full-context --phases --engine --engine-workers "$WORKERS"
# 2. torch.compile on top (the compiled network against the same eager one)
bench compiled 250 -B "$B" --steps "$STEPS" --frozen-in-compute-dtype --compile --ablate compile
# 3. inference (and training) at batch 256
bench batch256 70 -B "$B_INFER" --steps "$((STEPS / 2 > 1 ? STEPS / 2 : 2))" --frozen-in-compute-dtype
# 4. memory at twice the classes
bench classes8 70 -B "$B" -C "$((C * 2))" --steps 3 --frozen-in-compute-dtype

"$PY" scripts/gpu_speed_summary.py "$OUT"
