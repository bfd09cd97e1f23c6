"""Throughput benchmark: the training config plus a `benchmark` block (see `aigc_jax/benchmark.py`).

`python -m aigc_jax.benchmark --config=configs/benchmark.py --results=results.jsonl
    [--config.model=mlp --config.batch_size=128 --config.compute_dtype=bfloat16
     --config.benchmark.mode=pipeline ...]`
"""
import ml_collections

from configs import default


def get_config() -> ml_collections.ConfigDict:
  config = default.get_config()
  config.model = 'dcgan'
  config.batch_size = 256
  config.benchmark = ml_collections.ConfigDict()
  config.benchmark.mode = 'synthetic'          # synthetic (the step alone) | pipeline (end to end)
  config.benchmark.warmup_steps = 3            # untimed steps after compiling
  config.benchmark.timed_steps = 20            # timed alone (synchronised after each), then as many in one window
  config.benchmark.pipeline_batches = 50       # batches timed when measuring the input pipeline alone
  config.benchmark.peak_tflops_per_device = 0.0  # 0 = the peak table, or on CPU a GEMM measured at start
  config.benchmark.gemm_size = 2048            # side of the square matmul that measures the CPU peak
  config.benchmark.label = ''                  # free text stored with the result (e.g. the machine)
  return config
