#!/usr/bin/env bash
# Sweeps batch sizes, model widths and compute dtypes on whatever machine this runs on, appending one JSON
# line per run to benchmarks/results/<host>.jsonl, then writes the report next to it.
#
#   launch/benchmark_matrix.sh                       # defaults below
#   MODELS="dcgan" BATCHES="128 256 512" WIDTHS="0.5 1 2" DTYPES="float32 bfloat16" REPEATS=3 \
#     MODES="synthetic pipeline" launch/benchmark_matrix.sh [extra --config.* flags...]
set -euo pipefail

cd "$(dirname "$0")/.."
# XLA:CPU allocates a step's large buffers afresh each step; glibc's malloc then asks for transparent huge
# pages instead of faulting in 4 KiB pages (glibc >= 2.35; ignored elsewhere).
export GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}glibc.malloc.hugetlb=1"
MODELS=${MODELS:-"mlp dcgan"}
BATCHES=${BATCHES:-"64 128 256 512"}
WIDTHS=${WIDTHS:-"0.5 1"}
DTYPES=${DTYPES:-"float32 bfloat16"}
MODES=${MODES:-"synthetic"}
REPEATS=${REPEATS:-3}
RESULTS=${RESULTS:-"benchmarks/results/$(hostname).jsonl"}
mkdir -p "$(dirname "${RESULTS}")"

for model in ${MODELS}; do
  for batch in ${BATCHES}; do
    for width in ${WIDTHS}; do
      for dtype in ${DTYPES}; do
        for mode in ${MODES}; do
          for _ in $(seq "${REPEATS}"); do
            echo "== ${model} batch=${batch} width=${width} ${dtype} ${mode}" >&2
            python -m aigc_jax.benchmark --config=configs/benchmark.py --results="${RESULTS}" \
              --config.model.name="${model}" --config.batch_size="${batch}" --config.model.width_multiplier="${width}" \
              --config.compute_dtype="${dtype}" --config.benchmark.mode="${mode}" "$@" >/dev/null
          done
        done
      done
    done
  done
done
python -m aigc_jax.benchmark report "${RESULTS}" --out="${RESULTS%.jsonl}"
