#!/usr/bin/env bash
# One benchmark on a lent device machine (docs/benchmarks.md, "The device machines"), run as
#
#   bash benchmarks/device.sh gpu_study [ARGS...]     # or gpu_check; carry ["dist/device-wheels"]
#
# Why a script: the box has its own torch and ~200 packages and no index, so the wheels of
# `make device-wheels` go, unresolved (--no-deps), into a fresh folder beside them. What could
# still go wrong is recorded before any device time is spent on training: the box's own package
# versions (device_freeze.txt, to pin tools/device_packages.txt), any version conflict with ours
# (pip_check.txt, informative: left-out packages show there too) and an import of what the
# benchmarks need, which fails in seconds. The project's code comes from src/, so an edit since
# the wheels were built still runs.
set -euo pipefail
cd "$(dirname "$0")/.."
what=${1:?"usage: bash benchmarks/device.sh gpu_study|gpu_check [ARGS...]"}
shift
out=${OUT:?"set OUT to the folder that comes back"}
wheels=${DEVICE_WHEELS:-dist/device-wheels}
site=${DEVICE_SITE:-/tmp/site}
case "$what" in
  gpu_study) target=(--out "$out/gpu_study.json") ;;
  gpu_check) target=(--out "$out/gpu_check") ;;
  *) echo "device.sh: '$what' is neither gpu_study nor gpu_check" >&2; exit 2 ;;
esac
compgen -G "$wheels/*.whl" > /dev/null || {
  echo "device.sh: no wheels in $wheels (make device-wheels here, then carry it)" >&2
  exit 2
}
mkdir -p "$out"
python3 -m pip list --format=freeze > "$out/device_freeze.txt" 2> /dev/null
rm -rf "$site"
python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl
export PYTHONPATH="$PWD/src:$site"
python3 -m pip check > "$out/pip_check.txt" 2>&1 \
  || echo "device.sh: pip check lists conflicts with the box's packages: pip_check.txt (going on)"
python3 -c "import kedro, kedro_mlflow, mlflow, nilearn, optuna, timm, pytorch_lightning
import idh_pseudocolor.cli, idh_pseudocolor.training, idh_pseudocolor.hooks"
exec timeout "${DEVICE_TIMEOUT:-540}" python3 "benchmarks/$what.py" "${target[@]}" "$@"
