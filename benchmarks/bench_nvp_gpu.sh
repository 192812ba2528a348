#!/usr/bin/env bash
# The NVP benchmark on one GPU: configs/nvp-gpu.json (predicts the 256 level with every stored
# level as input), the same held-out protocol and tables as benchmarks/bench_nvp.py, plus the
# training steps/s and the device idle share (the stream's input wait). Writes
# benchmarks/results/nvp-gpu.md and its figures (nvp-gpu_*.png).
#
#   benchmarks/bench_nvp_gpu.sh                    # venv ~/.cache/atlasstore/venv-gpu (or --venv,
#                                                  # $ATLAS_GPU_VENV) with jax[cuda12] from PyPI
#   benchmarks/bench_nvp_gpu.sh --wheelhouse DIR   # no network: install from downloaded wheels
#                                                  # (pip download -d DIR '.[bench]' 'jax[cuda12]==<pin>')
#   benchmarks/bench_nvp_gpu.sh --steps 3000       # a shorter run (train.max_steps)
#   benchmarks/bench_nvp_gpu.sh --dry-run          # on a CPU, with the existing .venv: checks the
#                                                  # config (traced at 256), the options and the
#                                                  # whole pipeline on tiny data; installs nothing
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0 WHEELS="" VENV="${ATLAS_GPU_VENV:-$HOME/.cache/atlasstore/venv-gpu}" STEPS=""
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --wheelhouse) WHEELS="${2:?--wheelhouse needs a directory}"; shift ;;
    --venv) VENV="${2:?--venv needs a directory}"; shift ;;
    --steps) STEPS="${2:?--steps needs a number}"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "bench_nvp_gpu.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
JAX_VERSION=$(sed -n 's/.*"jax==\([0-9.]*\)".*/\1/p' pyproject.toml)
[ -n "$JAX_VERSION" ] || { echo "no jax==X pin found in pyproject.toml" >&2; exit 2; }
ARGS=(--config configs/nvp-gpu.json --resolutions 256)
[ -n "$STEPS" ] && ARGS+=(--steps "$STEPS")

if [ "$DRY" = 1 ]; then
  PY=.venv/bin/python
  [ -x "$PY" ] || { echo "--dry-run uses the CPU venv: run scripts/setup first" >&2; exit 2; }
  echo "dry run: would install jax[cuda12]==$JAX_VERSION into $VENV" \
       "${WHEELS:+from $WHEELS }and run: benchmarks/bench_nvp.py ${ARGS[*]}"
  OUT=/tmp/atlas-bench-nvp-gpu-dry
  exec "$PY" benchmarks/bench_nvp.py --quick --config configs/nvp-gpu.json --resolutions 64 \
       --workdir "$OUT" --out "$OUT/nvp-gpu.md"
fi

PIP=(install -q)
[ -n "$WHEELS" ] && PIP+=(--no-index --find-links "$WHEELS")
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/pip" "${PIP[@]}" -e '.[bench]' "jax[cuda12]==$JAX_VERSION"
PY="$VENV/bin/python"
"$PY" - <<'PYEOF'
import sys
import jax
dev = jax.devices()[0]
if dev.platform != "gpu":
    sys.exit(f"no GPU visible to JAX (devices: {jax.devices()}); check the driver "
             "(nvidia-smi) and that jax[cuda12] installed its CUDA plugin")
print(f"GPU: {dev.device_kind} x {jax.device_count()}")
PYEOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
  --format=csv,noheader || true
"$PY" benchmarks/bench_nvp.py "${ARGS[@]}" --workdir /tmp/atlas-bench-nvp-gpu \
  --out benchmarks/results/nvp-gpu.md \
  --reproduce "benchmarks/bench_nvp_gpu.sh${WHEELS:+ --wheelhouse DIR}${STEPS:+ --steps $STEPS}"
