"""The pod-scale plan: collective traffic read off the compiled program against cases whose answer is known,
the train step's plan through the command line, and one-line errors."""
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from aigc_jax import sharding
from aigc_jax.benchmark import plan
from tests.conftest import REPO_ROOT, env_with_devices

_W = (64, 32)
_W_BYTES = 64 * 32 * 4


def _grad_program(mesh, w_spec):
  """The gradient of a batch-split loss in a weight laid out as `w_spec`, compiled for `mesh`."""
  loss = lambda w, x: jnp.sum(jnp.tanh(x @ w))
  w = jax.ShapeDtypeStruct(_W, jnp.float32, sharding=NamedSharding(mesh, w_spec))
  x = jax.ShapeDtypeStruct((128, 64), jnp.float32, sharding=NamedSharding(mesh, P(sharding.BATCH_AXES)))
  return jax.jit(jax.grad(loss), out_shardings=NamedSharding(mesh, w_spec)).lower(w, x).compile().as_text()


def test_data_parallel_gradient_is_one_all_reduce_of_the_weight():
  found = plan.collectives_of(_grad_program(sharding.create_mesh(), P()), 8)
  assert found['all-reduce'].count == 1 and found['all-reduce'].payload_bytes == _W_BYTES
  assert found['all-reduce'].sent_bytes == pytest.approx(2 * 7 / 8 * _W_BYTES)   # a ring all-reduce
  assert sum(c.count for kind, c in found.items() if kind != 'all-reduce') == 0


def test_fsdp_gathers_the_weight_and_reduces_its_gradient():
  found = plan.collectives_of(_grad_program(sharding.create_mesh(fsdp=8), P('fsdp', None)), 8)
  # The forward needs the whole weight on every device: one gather of all of it.
  assert found['all-gather'].payload_bytes == _W_BYTES
  assert found['all-gather'].sent_bytes == pytest.approx(7 / 8 * _W_BYTES)
  # The gradient is summed over the batch and kept as shards: reduce-scatter, or all-reduce then slice.
  reduced = found['reduce-scatter'].payload_bytes * 8 + found['all-reduce'].payload_bytes
  assert reduced == _W_BYTES


def _run(*args):
  return subprocess.run([sys.executable, '-m', 'aigc_jax.benchmark', 'plan', *args], cwd=REPO_ROOT,
                        env=env_with_devices(None),
                        capture_output=True, text=True, timeout=600)


def _mlp_parameter_bytes():
  g = [100, 256, 512, 1024, 784]
  d = [784, 512, 256, 1]
  count = lambda w: sum(a * b + b for a, b in zip(w, w[1:]))
  return 4 * count(g), 4 * count(d)


def test_plan_of_the_data_parallel_train_step(tmp_path):
  out = tmp_path / 'plan.jsonl'
  result = _run('--config=configs/mlp_gan_mnist.py', '--devices=8', '--chip=h100', '--config.batch_size=64',
                f'--plan_json={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'fits' in result.stdout and 'all-reduce' in result.stdout and 'MFU estimate' in result.stdout
  record = json.loads(out.read_text())
  assert record['devices'] == 8 and record['mesh'] == {'data': 8, 'fsdp': 1} and record['fits']
  # Data parallelism moves the gradients, once per update: G's, and D's (its real and fake halves are
  # reduced apart), plus a few scalars (losses, counters).
  g_bytes, d_bytes = _mlp_parameter_bytes()
  payload = record['collectives']['all-reduce']['payload_bytes']
  assert g_bytes + d_bytes <= payload <= g_bytes + 2 * d_bytes + 1024
  assert set(record['collectives']) == {'all-reduce'}
  # Each device runs an eighth of the step: the compiled FLOPs are near the model's share, not 8x it.
  assert record['xla_flops_per_device'] < 2 * record['model_flops_per_device']
  assert record['step_s'] == max(record['compute_s'], record['memory_s'], record['network_s'])


def test_plan_says_when_the_state_does_not_fit_and_which_sharding_would(tmp_path):
  out = tmp_path / 'plan.jsonl'
  # A wide dcgan without EMA (0.28 GiB of state with Adam, 0.55 GiB in all a device) on a chip cut to 0.35 GiB.
  common = ('--config=configs/dcgan_mnist.py', '--devices=8', '--chip=h100', '--config.batch_size=64',
            '--config.model.width_multiplier=4', '--config.gan.ema_decay=0.0', '--hbm_gib=0.35',
            f'--plan_json={out}')
  result = _run(*common)
  assert result.returncode == 0, result.stderr[-3000:]
  record = json.loads(out.read_text())
  assert not record['fits'] and 'DOES NOT FIT' in result.stdout
  # Splitting the state over 4 devices is the smallest FSDP layout whose estimate fits...
  assert record['suggestion'].startswith('--config.fsdp_devices=4 --config.param_sharding=fsdp')
  assert f"to fit: {record['suggestion']}" in result.stdout
  # ...and compiled that way, the step does fit, with a quarter of the state a device.
  out.unlink()
  result = _run(*common, '--config.fsdp_devices=4', '--config.param_sharding=fsdp')
  assert result.returncode == 0, result.stderr[-3000:]
  sharded = json.loads(out.read_text())
  assert sharded['fits'] and sharded['suggestion'] is None and sharded['mesh'] == {'data': 2, 'fsdp': 4}
  assert sharded['state_bytes_per_device'] < 0.3 * record['state_bytes_per_device']


@pytest.mark.parametrize('args,message', [
    (['--devices=3'], '--devices=3 cannot split config.batch_size=128; allowed: a divisor of 128'),
    (['--devices=8', '--chip=tpu_v9'], "unknown --chip 'tpu_v9'; allowed: tpu_v5e, tpu_v5p, tpu_v6e, h100"),
    ([], 'plan needs --devices=N'),
    (['--devices=8', '--image_shape=28,28'], '--image_shape=28,28 is not allowed; allowed: HEIGHT,WIDTH,CHANNELS'),
])
def test_bad_input_is_one_clear_line(args, message):
  result = _run('--config=configs/mlp_gan_mnist.py', *args)
  assert result.returncode == 2 and 'Traceback' not in result.stderr, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines() if line.startswith('error: ')]
  assert len(errors) == 1 and message in errors[0], result.stderr[-3000:]
