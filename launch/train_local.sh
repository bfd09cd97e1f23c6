#!/usr/bin/env bash
# Train on this machine (all of its devices) and open TensorBoard on the workdir when asked.
#   launch/train_local.sh CONFIG WORKDIR [--config.key=value ...]
#   TENSORBOARD=1 launch/train_local.sh configs/dcgan_mnist.py /tmp/dcgan --config.batch_size=512
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 CONFIG WORKDIR [--config.key=value ...]" >&2
  exit 2
fi
config=$1 workdir=$2
shift 2
cd "$(dirname "$0")/.."
# XLA:CPU allocates a step's large buffers afresh each step; glibc's malloc then asks for transparent huge
# pages instead of faulting in 4 KiB pages (glibc >= 2.35; ignored elsewhere).
export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1"
if [[ "${TENSORBOARD:-0}" == 1 ]]; then
  mkdir -p "$workdir"
  tensorboard --logdir "$workdir" --port "${TENSORBOARD_PORT:-6006}" >/dev/null 2>&1 &
  trap 'kill %1 2>/dev/null || true' EXIT
fi
python3 -m aigc_jax.main --config="$config" --workdir="$workdir" "$@"
