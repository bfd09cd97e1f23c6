"""Throughput benchmark: a training config plus a `benchmark` block (see `aigc_jax/benchmark/`).

`python -m aigc_jax.benchmark --config=configs/benchmark.py --results=results.jsonl
    [--config.model.name=mlp --config.batch_size=128 --config.compute_dtype=bfloat16
     --config.benchmark.mode=pipeline ...]`

The training config is `configs/base.py`'s, or another recipe's named after the colon:
`--config=configs/benchmark.py:biggan_imagenet128` benchmarks `configs/biggan_imagenet128.py`.
"""
import importlib

import ml_collections


def get_config(recipe: str | None = None) -> ml_collections.ConfigDict:
  if recipe:
    config = importlib.import_module(f'configs.{recipe}').get_config()
  else:
    config = importlib.import_module('configs.base').get_config()
    config.model.name = 'dcgan'
    config.batch_size = 256
  config.benchmark = ml_collections.ConfigDict()
  config.benchmark.mode = 'synthetic'          # synthetic (the step alone) | pipeline (end to end)
  config.benchmark.warmup_steps = 3            # untimed steps after compiling
  config.benchmark.timed_steps = 20            # timed alone (synchronised after each), then as many in one window
  config.benchmark.pipeline_batches = 50       # batches timed when measuring the input pipeline alone
  config.benchmark.peak_tflops_per_device = 0.0  # 0 = the peak table, or on CPU a GEMM measured at start
  config.benchmark.gemm_size = 2048            # side of the square matmul that measures the CPU peak
  config.benchmark.label = ''                  # free text stored with the result (e.g. the machine)
  # Synthetic mode: the images' (height, width, channels); () = the dataset's, read from its TFDS metadata.
  # Given, the benchmark never touches the dataset, so it runs without TensorFlow and TFDS.
  config.benchmark.image_shape = ()
  config.benchmark.num_classes = 0             # with image_shape: classes of a conditional model
  return config
