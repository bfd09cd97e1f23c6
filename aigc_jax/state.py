"""The train-state pytree and its sharded initialisation.

Flax Linen modules are pure descriptions; their variables live here as explicit pytrees, which is exactly
what a pure, jit-compiled step over sharded arrays wants (no module graph to split and merge per call).
"""
import functools
from typing import Any, Callable, Sequence

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from aigc_jax import sharding as sharding_lib
from aigc_jax.config_errors import ConfigError
from aigc_jax.models import Gan


@flax.struct.dataclass
class NetworkState:
  """One network: trainable params, its other variable collections (e.g. batch_stats), optimiser state."""
  params: Any
  variables: Any
  opt_state: Any


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # completed training steps (generator updates), skipped ones included
  generator: NetworkState
  discriminator: NetworkState
  skipped_steps: jax.Array  # steps whose loss or gradients were not finite, so nothing was applied
  consecutive_skipped: jax.Array  # the current run of such steps (0 after a good step)
  # The generator's exponential moving average (params, and batch statistics of its own; opt_state None),
  # or None when `gan.ema_decay` is 0. See `ema.py`.
  generator_ema: NetworkState | None = None


def _init_network(module, tx: optax.GradientTransformation, rng: jax.Array, example: jax.Array,
                  **inputs) -> NetworkState:
  params_rng, dropout_rng = jax.random.split(rng)
  variables = dict(module.init({'params': params_rng, 'dropout': dropout_rng}, example, train=False, **inputs))
  params = variables.pop('params')
  return NetworkState(params=params, variables=variables, opt_state=tx.init(params))


def init_train_state(rng: jax.Array, *, gan: Gan, g_tx: optax.GradientTransformation,
                     d_tx: optax.GradientTransformation, image_shape: tuple[int, int, int],
                     latent_dim: int, ema: bool = False) -> TrainState:
  """A fresh train state (pure: use under `jax.eval_shape` or a sharded `jax.jit`); with `ema`, the
  generator's EMA starts as a copy of its params and variables."""
  g_rng, d_rng = jax.random.split(rng)
  labels = {'labels': jnp.zeros((1,), jnp.int32)} if gan.conditional else {}
  generator = _init_network(gan.generator, g_tx, g_rng, jnp.zeros((1, latent_dim), jnp.float32), **labels)
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      generator=generator,
      discriminator=_init_network(gan.discriminator, d_tx, d_rng, jnp.zeros((1,) + image_shape, jnp.float32),
                                  **labels),
      skipped_steps=jnp.zeros((), jnp.int32),
      consecutive_skipped=jnp.zeros((), jnp.int32),
      generator_ema=NetworkState(generator.params, generator.variables, None) if ema else None,
  )


@flax.struct.dataclass
class VaeState:
  """A VAE's train state: one network (encoder and decoder together) and the same counters as TrainState."""
  step: jax.Array  # completed training steps, skipped ones included
  vae: NetworkState
  skipped_steps: jax.Array
  consecutive_skipped: jax.Array


def init_vae_state(rng: jax.Array, *, vae, tx: optax.GradientTransformation, image_shape: tuple[int, int, int],
                   latent_dim: int) -> VaeState:
  """A fresh VAE state (pure: use under `jax.eval_shape` or a sharded `jax.jit`)."""
  variables = dict(vae.init(rng, jnp.zeros((1,) + tuple(image_shape), jnp.float32),
                            jnp.zeros((1, latent_dim), jnp.float32)))
  params = variables.pop('params')
  zero = jnp.zeros((), jnp.int32)
  return VaeState(step=zero, vae=NetworkState(params=params, variables=variables, opt_state=tx.init(params)),
                  skipped_steps=zero, consecutive_skipped=zero)


def sharded_initializer(mesh: Mesh, init: Callable[[jax.Array], Any] | None = None, *,
                        rules: Sequence[tuple[str, Any]] = (),
                        **init_kwargs) -> tuple[Callable[[jax.Array], Any], Any]:
  """`(init, abstract)`: a jitted `init(rng)` whose state is born sharded over `mesh`, and the state's
  abstract form (shape, dtype and sharding per leaf), the target a checkpoint is restored into.

  `init` is any pure state initialiser (e.g. a model family's); without it, `init_train_state(**init_kwargs)`.
  Nothing is materialised whole on one device: `jax.eval_shape` finds the shapes, and the jitted
  initialiser writes each shard where it lives. Leaves are laid out by the partition `rules` (see
  `sharding.py`; none: replicated).
  """
  init = init or functools.partial(init_train_state, **init_kwargs)
  shapes = jax.eval_shape(init, jax.random.key(0))
  shardings = sharding_lib.state_sharding(shapes, mesh, rules)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)
  return jax.jit(init, out_shardings=shardings), abstract


def initializer_from_config(config, mesh: Mesh, init: Callable[[jax.Array], Any]) -> tuple[Callable[[jax.Array], Any],
                                                                                          Any]:
  """`sharded_initializer` of a model family's pure `init` with the config's partition rules; a rule that
  cannot lay out some leaf of the state raises a one-line `ConfigError`."""
  try:
    return sharded_initializer(mesh, init, rules=sharding_lib.rules_from_config(config))
  except sharding_lib.ShardingRuleError as e:
    raise ConfigError(f'config.param_sharding_rules: {e}') from None


def shardings_of(abstract: Any) -> Any:
  """The sharding pytree of an abstract state (for `jax.jit` in/out shardings)."""
  return jax.tree.map(lambda x: x.sharding, abstract)
