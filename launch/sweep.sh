#!/usr/bin/env bash
# Expand a sweep (configs/sweeps/*.py) into training runs, one workdir each under ROOT, and run them in turn.
#   launch/sweep.sh SWEEP ROOT [--dry_run] [--platform=cpu|gpu] [-- --config.key=value ...]
#   launch/sweep.sh configs/sweeps/mlp_scaling.py /tmp/mlp_scaling --dry_run    # print the commands only
# On CPU each run sees `devices` fake devices; on GPU the first `devices` GPUs (--platform=gpu).
set -euo pipefail
if [[ $# -lt 2 ]]; then
  echo "usage: $0 SWEEP ROOT [--dry_run] [--platform=cpu|gpu] [-- --config.key=value ...]" >&2
  exit 2
fi
sweep=$1 root=$2
shift 2
cd "$(dirname "$0")/.."
exec python3 -m aigc_jax.sweep --sweep="$sweep" --root="$root" "$@"
