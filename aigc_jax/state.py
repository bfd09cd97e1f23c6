"""The train-state pytree and its sharded initialisation.

Flax Linen modules are pure descriptions; their variables live here as explicit pytrees, which is exactly
what a pure, jit-compiled step over sharded arrays wants (no module graph to split and merge per call).
"""
import functools
from typing import Any, Callable

import flax
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh

from aigc_jax import sharding as sharding_lib
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


def _init_network(module, tx: optax.GradientTransformation, rng: jax.Array, example: jax.Array,
                  **inputs) -> NetworkState:
  params_rng, dropout_rng = jax.random.split(rng)
  variables = dict(module.init({'params': params_rng, 'dropout': dropout_rng}, example, train=False, **inputs))
  params = variables.pop('params')
  return NetworkState(params=params, variables=variables, opt_state=tx.init(params))


def init_train_state(rng: jax.Array, *, gan: Gan, g_tx: optax.GradientTransformation,
                     d_tx: optax.GradientTransformation, image_shape: tuple[int, int, int],
                     latent_dim: int) -> TrainState:
  """A fresh train state (pure: use under `jax.eval_shape` or a sharded `jax.jit`)."""
  g_rng, d_rng = jax.random.split(rng)
  labels = {'labels': jnp.zeros((1,), jnp.int32)} if gan.conditional else {}
  return TrainState(
      step=jnp.zeros((), jnp.int32),
      generator=_init_network(gan.generator, g_tx, g_rng, jnp.zeros((1, latent_dim), jnp.float32), **labels),
      discriminator=_init_network(gan.discriminator, d_tx, d_rng, jnp.zeros((1,) + image_shape, jnp.float32),
                                  **labels),
      skipped_steps=jnp.zeros((), jnp.int32),
      consecutive_skipped=jnp.zeros((), jnp.int32),
  )


def sharded_initializer(mesh: Mesh, **init_kwargs) -> tuple[Callable[[jax.Array], TrainState], TrainState]:
  """`(init, abstract)`: a jitted `init(rng)` whose state is born sharded over `mesh`, and the state's
  abstract form (shape, dtype and sharding per leaf), the target a checkpoint is restored into.

  Nothing is materialised whole on one device: `jax.eval_shape` finds the shapes, and the jitted
  initialiser writes each shard where it lives.
  """
  init = functools.partial(init_train_state, **init_kwargs)
  shapes = jax.eval_shape(init, jax.random.key(0))
  shardings = sharding_lib.state_sharding(shapes, mesh)
  abstract = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), shapes, shardings)
  return jax.jit(init, out_shardings=shardings), abstract


def shardings_of(abstract: Any) -> Any:
  """The sharding pytree of an abstract state (for `jax.jit` in/out shardings)."""
  return jax.tree.map(lambda x: x.sharding, abstract)
