"""FSDP: the (data, fsdp) mesh, regex partition rules, a state born sharded, and a sharded step that equals
the replicated one on 8 fake devices."""

import jax
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from aigc_jax import families
from aigc_jax import sharding as sharding_lib
from aigc_jax import state as state_lib
from aigc_jax.config_checks import ConfigError
from tests import compiled_steps


def test_mesh_from_config():
  config = type('C', (), {})()
  for fsdp, shape in ((1, (8, 1)), (4, (2, 4)), (-1, (1, 8))):
    config.fsdp_devices = fsdp
    mesh = sharding_lib.mesh_from_config(config)
    assert mesh.axis_names == ('data', 'fsdp') and tuple(mesh.devices.shape) == shape
  assert sharding_lib.batch_sharding(mesh).spec == P(None, ('data', 'fsdp'))


def test_rules_first_match_wins_and_methods():
  mesh = sharding_lib.create_mesh(fsdp=4)
  rules = (('generator/params/Dense_0/kernel', ('fsdp', None)), ('.*/kernel', 'fsdp'), ('.*/bias', 'replicated'),
           ('.*/mu/.*', (None, ('data', 'fsdp'))))
  spec = lambda name, shape: sharding_lib.leaf_spec(name, shape, rules, mesh)
  assert spec('generator/params/Dense_0/kernel', (100, 32)) == P('fsdp', None)
  assert spec('generator/params/Dense_1/kernel', (32, 64)) == P(None, 'fsdp')  # the largest divisible dim
  assert spec('generator/params/Dense_2/kernel', (30, 6)) == P()  # nothing divides by 4: replicated
  assert spec('discriminator/opt_state/0/mu/Dense_0/bias', (16,)) == P()  # '.*/bias' came first
  assert spec('x/mu/y', (3, 16)) == P(None, ('data', 'fsdp'))
  assert spec('step', ()) == P()  # no rule: replicated
  with pytest.raises(sharding_lib.ShardingRuleError, match='splits a dim of 30'):
    spec('x/mu/y', (3, 30))
  with pytest.raises(sharding_lib.ShardingRuleError, match='has 2 entries'):
    spec('generator/params/Dense_0/kernel', (100,))


def _setup(config, mesh):
  return state_lib.initializer_from_config(config, mesh, families.create(config, (28, 28, 1)).init_state)


def test_a_rule_that_fits_no_leaf_is_one_config_error(tiny_config):
  tiny_config.fsdp_devices = 4
  tiny_config.param_sharding_rules = (('generator/params/Dense_0/kernel', ('fsdp', 'data', None)),)
  with pytest.raises(ConfigError, match=r'^config.param_sharding_rules: rule .* has 3 entries but '
                                        r'generator/params/Dense_0/kernel has shape \(100, 32\)'):
    _setup(tiny_config, sharding_lib.mesh_from_config(tiny_config))


def _sharded_run(config, batches):
  _, state, step, _ = compiled_steps.compiled_train_step(config, sharding_lib.mesh_from_config(config))
  born = state
  for batch in batches:
    state, metrics = step(state, batch, jax.random.key(7))
  return born, state, metrics


def test_fsdp_step_equals_the_replicated_step_and_really_shards(tiny_config):
  tiny_config.gan.ema_decay = 0.5  # the EMA copy is sharded like the params
  batches = compiled_steps.real_batches(tiny_config, 2)
  _, replicated, replicated_metrics = _sharded_run(tiny_config, batches)  # mesh 8 x 1, all replicated

  tiny_config.fsdp_devices, tiny_config.param_sharding = 4, 'fsdp'  # mesh 2 x 4, kernels split over fsdp
  born, sharded, sharded_metrics = _sharded_run(tiny_config, batches)
  for a, b in zip(jax.tree.leaves(jax.device_get(replicated)), jax.tree.leaves(jax.device_get(sharded))):
    np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
  for name in replicated_metrics:
    np.testing.assert_allclose(replicated_metrics[name], sharded_metrics[name], rtol=2e-4, atol=2e-5)

  # Born sharded, and still sharded after the steps: every kernel, its Adam moments and its EMA copy.
  for state in (born, sharded):
    kernels = [(jax.tree_util.keystr(path), leaf) for path, leaf in jax.tree_util.tree_leaves_with_path(state)
               if jax.tree_util.keystr(path).endswith("['kernel']")]
    assert len(kernels) == 4 * 4 + 3 * 3  # G's 4 kernels: params, mu, nu, EMA; D's 3: params, mu, nu
    for name, leaf in kernels:
      assert 'fsdp' in leaf.sharding.spec, name
      shard = leaf.addressable_shards[0].data.shape
      assert np.prod(shard) * 4 == np.prod(leaf.shape), name
  assert sharded.generator.params['Dense_0']['bias'].sharding.spec == P()
  assert jax.tree.leaves(replicated.generator.params)[1].sharding.spec == P()
