#!/usr/bin/env bash
# Train on a Cloud TPU pod slice: create the TPU VM, install this checkout on every worker, run the
# trainer on all workers at once (one process per worker) with the workdir in a bucket, stream the logs,
# and delete the TPU VM on exit (success, failure or Ctrl-C).
#   launch/tpu_pod.sh NAME ZONE ACCELERATOR_TYPE RUNTIME_VERSION gs://BUCKET/RUN [main flags ...]
#   launch/tpu_pod.sh aigc-v4 us-central2-b v4-32 tpu-ubuntu2204-base gs://my-bucket/dcgan \
#       --config=configs/dcgan_mnist.py --config.batch_size=1024
# Environment:
#   PROJECT   gcloud project (default: gcloud's configured one)
#   SPOT=1    create a Spot TPU (preemptible: the run saves on SIGTERM and resumes when relaunched)
#   KEEP=1    keep the TPU VM after the run (to relaunch quickly; delete it yourself)
#   PYTHON    interpreter on the workers (default python3)
# The trainer runs with --distributed=on: JAX finds the coordinator and every worker's process id from
# the TPU metadata. Resuming is re-running the same command with the same bucket workdir.
set -euo pipefail
if [[ $# -lt 5 || "$5" != gs://* ]]; then
  echo "usage: $0 NAME ZONE ACCELERATOR_TYPE RUNTIME_VERSION gs://BUCKET/RUN [main flags ...]" >&2
  exit 2
fi
name=$1 zone=$2 accelerator=$3 runtime=$4 workdir=$5
shift 5
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
gcloud_args=(--zone="$zone")
if [[ -n "${PROJECT:-}" ]]; then
  gcloud_args+=(--project="$PROJECT")
fi
create_args=(--accelerator-type="$accelerator" --version="$runtime")
if [[ "${SPOT:-0}" == 1 ]]; then
  create_args+=(--spot)
fi

cleanup() {
  if [[ "${KEEP:-0}" == 1 ]]; then
    echo "keeping TPU VM $name (KEEP=1); delete it with: gcloud compute tpus tpu-vm delete $name --zone=$zone" >&2
  else
    echo "deleting TPU VM $name" >&2
    gcloud compute tpus tpu-vm delete "$name" "${gcloud_args[@]}" --quiet || true
  fi
}

trap cleanup EXIT  # also after a failed or interrupted create, which can leave a VM behind
if ! gcloud compute tpus tpu-vm describe "$name" "${gcloud_args[@]}" >/dev/null 2>&1; then
  echo "creating TPU VM $name ($accelerator, $runtime) in $zone" >&2
  gcloud compute tpus tpu-vm create "$name" "${gcloud_args[@]}" "${create_args[@]}"
fi

# The checkout as it is here (tracked and new files, not ignored ones), on every worker.
bundle=$(mktemp -t aigc_jax.XXXXXX.tar.gz)
git ls-files -z --cached --others --exclude-standard | tar -czf "$bundle" --null -T -
gcloud compute tpus tpu-vm scp "$bundle" "$name:aigc_jax.tar.gz" "${gcloud_args[@]}" --worker=all
rm -f "$bundle"
gcloud compute tpus tpu-vm ssh "$name" "${gcloud_args[@]}" --worker=all --command \
  "rm -rf aigc_jax && mkdir aigc_jax && tar -xzf aigc_jax.tar.gz -C aigc_jax && cd aigc_jax && \
   $python -m pip install -q -r requirements.txt 'jax[tpu]==0.10.2'"

# One process per worker; ssh streams every worker's output here (process 0 logs the metrics).
flags=""
for arg in "$@"; do
  flags+=" $(printf '%q' "$arg")"
done
gcloud compute tpus tpu-vm ssh "$name" "${gcloud_args[@]}" --worker=all --command \
  "cd aigc_jax && $python -m aigc_jax.main --distributed=on --workdir=$(printf '%q' "$workdir")$flags"
