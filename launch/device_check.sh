#!/usr/bin/env bash
# One prepared check of an accelerator machine (one GPU), in a few minutes: versions, the benchmark matrix
# in float32 and bfloat16, and the PyTorch eager reference on the same device. Needs only jax, flax, optax,
# numpy, absl and ml_collections (plus torch for the reference): no TensorFlow, TFDS, CLU or Orbax.
#
#   launch/device_check.sh --out DIR [--wheels DIR] [--smoke]
#
#   --out DIR     where the results go: results.jsonl (one line per benchmark run), torch.jsonl, errors.txt
#                 (one line per row that failed) and report.md (the table, with the PyTorch comparison);
#                 a check replaces what an earlier one left there
#   --wheels DIR  install these wheels first (pip --no-index --no-deps into a private folder), for packages
#                 the machine lacks; make them with `pip download` (README, "Benchmark")
#   --smoke       the same rows on the CPU at tiny sizes (a few minutes on 2 cores); CI runs this
#
# A row that fails (out of memory, a missing package) is written to errors.txt and the check goes on; the
# script exits 0 once every row has run, 2 on bad arguments or when no GPU is there without --smoke.
# Time: each row gets at most ROW_TIMEOUT seconds (default 150) and the rows together CHECK_SECONDS
# (default 420 on a GPU, 900 with --smoke); rows left when that runs out are recorded as skipped.
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2

out='' wheels='' smoke=0
while [[ $# -gt 0 ]]; do
  case "$1" in
    --out) out=${2:-}; shift 2 ;;
    --out=*) out=${1#--out=}; shift ;;
    --wheels) wheels=${2:-}; shift 2 ;;
    --wheels=*) wheels=${1#--wheels=}; shift ;;
    --smoke) smoke=1; shift ;;
    *) echo "error: unknown argument '$1'; allowed: --out DIR, --wheels DIR, --smoke" >&2; exit 2 ;;
  esac
done
if [[ -z "$out" ]]; then
  echo "error: --out DIR is required (where results.jsonl and report.md go)" >&2
  exit 2
fi
if [[ -n "$wheels" ]]; then
  if ! compgen -G "$wheels/*.whl" >/dev/null; then
    echo "error: --wheels $wheels holds no .whl files" >&2
    exit 2
  fi
  site=$(mktemp -d -t aigc_wheels.XXXXXX)
  python3 -m pip install -q --no-index --no-deps --no-compile --target "$site" "$wheels"/*.whl || exit 2
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi

if [[ $smoke == 1 ]]; then
  export JAX_PLATFORMS=cpu
  torch_device=cpu
else
  backend=$(python3 -c 'import jax; print(jax.default_backend())' 2>/dev/null || echo 'none (jax does not import)')
  if [[ "$backend" != gpu ]]; then
    echo "error: no GPU here (jax backend: $backend); run with --smoke for the CPU check" >&2
    exit 2
  fi
  torch_device=cuda
fi

mkdir -p "$out"
results="$out/results.jsonl" torch_results="$out/torch.jsonl" errors="$out/errors.txt"
: >"$results"
: >"$torch_results"
: >"$errors"

echo "== machine"
python3 - <<'EOF'
import importlib, platform
import jax
print(f'python {platform.python_version()}, {jax.device_count()} x {jax.devices()[0].device_kind} ({jax.default_backend()})')
for name in ('jax', 'jaxlib', 'flax', 'optax', 'numpy', 'ml_collections', 'torch'):
  try:
    print(f'{name} {importlib.import_module(name).__version__}')
  except Exception as e:  # pylint: disable=broad-except
    print(f'{name} not available ({type(e).__name__})')
EOF
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader

# Rows: model, image shape, classes, batch, extra flags ('-': none). Synthetic data of that shape: the step alone.
if [[ $smoke == 1 ]]; then
  # BigGAN with one D step per G step: compiling the recipe's two is half a CPU smoke row, and proves nothing more.
  sizes='--config.model.width_multiplier=0.125 --config.benchmark.warmup_steps=1 --config.benchmark.timed_steps=2 --config.benchmark.gemm_size=512'
  rows=(
    "mlp (28,28,1) 10 16 -"
    "dcgan (28,28,1) 10 16 -"
    "sngan_resnet (32,32,3) 10 16 -"
    "biggan (32,32,3) 10 16 --config.model.attention_resolution=16 --config.gan.n_critic=1"
  )
else
  sizes='--config.benchmark.warmup_steps=3 --config.benchmark.timed_steps=20'
  rows=(
    "mlp (28,28,1) 10 4096 -"
    "dcgan (28,28,1) 10 1024 -"
    "sngan_resnet (32,32,3) 10 256 -"
    "biggan (128,128,3) 1000 128 -"
  )
fi
failed=0
budget=${CHECK_SECONDS:-$([[ $smoke == 1 ]] && echo 900 || echo 420)}
started=$SECONDS
row_seconds() {  # the time the next row may take, 0 when the check's budget is spent
  local left=$((budget - (SECONDS - started)))
  local row=${ROW_TIMEOUT:-150}
  ((left < 15)) && { echo 0; return; }
  echo $((left < row ? left : row))
}
run_row() {  # what, command...: runs one row, records a failure and carries on
  local what=$1
  shift
  echo "== $what"
  local seconds log
  seconds=$(row_seconds)
  if ((seconds == 0)); then
    echo "$what: skipped, the check's $budget s are spent" | tee -a "$errors"
    failed=$((failed + 1))
    return
  fi
  log=$(mktemp)
  if timeout "$seconds" "$@" >"$log" 2>&1; then
    tail -n 1 "$log" | cut -c1-300
  else
    local status=$?
    echo "$what: exit $status: $(grep -E 'error|Error' "$log" | tail -n 1 | cut -c1-300)" | tee -a "$errors"
    failed=$((failed + 1))
  fi
  rm -f "$log"
}
for row in "${rows[@]}"; do
  read -r model shape classes batch extra <<<"$row"
  [[ $extra == - ]] && extra=''

  config=configs/benchmark.py
  # BigGAN: the published ImageNet recipe (conditional, 2 D steps per G step) with the benchmark block.
  [[ $model == biggan ]] && config=configs/benchmark.py:biggan_imagenet128
  for dtype in float32 bfloat16; do
    # shellcheck disable=SC2086
    run_row "$model $shape b$batch $dtype" python3 -m aigc_jax.benchmark --config="$config" \
      --results="$results" --config.model.name="$model" --config.batch_size="$batch" \
      --config.compute_dtype="$dtype" --config.benchmark.image_shape="$shape" \
      --config.benchmark.num_classes="$classes" --config.benchmark.pipeline_batches=0 \
      --config.benchmark.label=device-check $sizes $extra
  done
done
for model in mlp dcgan; do
  if [[ $smoke == 1 ]]; then batch=16; elif [[ $model == mlp ]]; then batch=4096; else batch=1024; fi
  steps=$([[ $smoke == 1 ]] && echo 2 || echo 20)
  log=$(mktemp)
  echo "== pytorch $model b$batch ($torch_device)"
  seconds=$(row_seconds)
  ((seconds == 0)) && seconds=1   # out of time: the row fails at once and is recorded
  if timeout "$seconds" python3 benchmarks/torch_reference.py --model="$model" --batch_size="$batch" \
      --steps="$steps" --device="$torch_device" >"$log" 2>&1; then
    tail -n 1 "$log" | tee -a "$torch_results"
  else
    echo "pytorch $model: $(tail -n 1 "$log" | cut -c1-300)" | tee -a "$errors"
    failed=$((failed + 1))
  fi
  rm -f "$log"
done

echo "== report"
if [[ -s "$results" ]]; then
  python3 -m aigc_jax.benchmark report "$results" --out="$out/report" --torch="$torch_results" >/dev/null \
    || echo "report: failed" | tee -a "$errors"
  cat "$out/report.md" 2>/dev/null
fi
echo "== done: $(wc -l <"$results" 2>/dev/null || echo 0) benchmark rows, $(wc -l <"$torch_results" 2>/dev/null || echo 0) PyTorch rows, $failed failed (see $errors)"
