#!/usr/bin/env bash
# Create the MONAI Label app's environment: a virtual environment with monailabel 0.8.5 and this project.
#
#   apps/monailabel/setup_env.sh            # -> apps/monailabel/.venv-label
#   apps/monailabel/setup_env.sh DIR        # -> DIR
#   PYTHON=python3.11 apps/monailabel/setup_env.sh
#
# Then: DIR/bin/monailabel start_server --app apps/monailabel --studies IMAGES --conf models NAME
# (see docs/monailabel.md). Only package registries are used; nothing else is downloaded.
set -euo pipefail

app="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$app/../.." && pwd)"
venv="${1:-$app/.venv-label}"

"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$app/requirements.txt" -e "$repo"
"$venv/bin/python" - <<'PY'
import monailabel, monai_cilmp, numpy, torch
print(f"monailabel {monailabel.__version__}, monai-cilmp {monai_cilmp.__version__}, numpy {numpy.__version__}, "
      f"torch {torch.__version__} (CUDA available: {torch.cuda.is_available()})")
PY
echo "MONAI Label environment ready: $venv (start the server with $venv/bin/monailabel start_server ...)"
