#!/usr/bin/env bash
# The GPU check of issue 12: tests/test_gpu.py on CUDA with mixed precision (and its CPU cases), in one go.
#
# Two steps, because the lent GPU machine has no package registry:
#   1. here (with pip and the registry):   scripts/gpu_check.sh prepare
#      downloads the wheels the GPU machine lacks into .whl/ (ignored by git; about 10 MB)
#   2. on the GPU machine (the `device` tool's run, carrying .whl):
#      run(command="scripts/gpu_check.sh run", carry=[".whl"], timeout_s=420)
#      installs those wheels into /tmp/site and runs the gpu tests; the log and the JUnit XML land in $OUT.
# The machine's image already has torch, torchvision, timm, transformers, safetensors, scikit-learn, matplotlib,
# tensorboard, pillow, tqdm, regex, huggingface-hub and pytest (/work/.library/device/KINDS.md).
set -euo pipefail
cd "$(dirname "$0")/.."

# the packages missing on the GPU machine, at the versions of the development environment
WHEELS=(
    "monai==1.6.1"
    "open_clip_torch==3.3.0"
    "pytorch-ignite==0.5.5"
    "ftfy==6.3.1"
    "wcwidth==0.9.4"
    "nibabel==5.4.2"
    "pydicom==3.0.2"
    "fire==0.7.1"
    "termcolor==3.3.0"
)

case "${1:-}" in
prepare)
    mkdir -p .whl
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d .whl "${WHEELS[@]}"
    ls -la .whl
    ;;
run)
    OUT="${OUT:-/tmp/gpu_check_out}"
    mkdir -p "$OUT"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$OUT/gpu.txt" || true
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1 CUBLAS_WORKSPACE_CONFIG=:4096:8
    python3 -c "import torch, monai, open_clip, ignite; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
'monai', monai.__version__, 'open_clip', open_clip.__version__, 'ignite', ignite.__version__)" | tee -a "$OUT/gpu.txt"
    set -o pipefail
    # -p no:cacheprovider: the working tree there is a copy; -rA: every outcome named in the log
    python3 -m pytest -p no:cacheprovider -rA -q -m gpu tests/test_gpu.py \
        --junitxml "$OUT/gpu_tests.xml" 2>&1 | tee "$OUT/gpu_tests.log"
    ;;
*)
    echo "usage: scripts/gpu_check.sh prepare|run (see the comments at the top)" >&2
    exit 2
    ;;
esac
