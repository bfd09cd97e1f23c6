"""The generator's exponential moving average (EMA): its update arithmetic and who samples from it.

After every training step `t` (1-based), `ema <- decay * ema + (1 - decay) * params`, except before
`ema_start_step` where the EMA copies the params (BigGAN-PyTorch's `ema.update(itr)` with `start_itr`).
The arithmetic is float32 whatever the compute dtype: params are float32 and so is the EMA.

Batch statistics (and any other non-param variables of the generator, e.g. spectral-norm vectors) are
not averaged: the EMA generator keeps its own, computed by running the EMA params in training mode on a
batch of latents each step (the layers' usual momentum then averages them). Statistics averaged from the
live generator (BigGAN-PyTorch) or copied from it (StyleGAN2-ADA) describe the activations of other
params than the EMA's, which can shift every sample's colour and contrast at inference; recomputing them
for the EMA params ("standing statistics") removes that mismatch for one forward pass of the generator per
step, and only for generators that have such variables (none for `mlp`). Before the start step the EMA
copies the generator's variables along with its params.
"""
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import ml_collections

from aigc_jax.config_errors import ConfigError


def ema_decay_at(step: jax.Array, *, decay: float, start_step: int) -> jax.Array:
  """The decay applied after 1-based training step `step`: 0 (copy) before `start_step`, else `decay`."""
  return jnp.where(step < start_step, jnp.float32(0.0), jnp.float32(decay))


def update(ema_params: Any, params: Any, decay: jax.Array) -> Any:
  """`decay * ema + (1 - decay) * params`, leaf by leaf in float32; decay 0 copies `params` exactly."""
  def one(ema, param):
    mixed = decay * ema.astype(jnp.float32) + (1.0 - decay) * param.astype(jnp.float32)
    return jnp.where(decay == 0, param, mixed.astype(param.dtype))
  return jax.tree.map(one, ema_params, params)


def enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether the run keeps an EMA generator in its train state."""
  return config.gan.ema_decay > 0


def samples_from_ema(config: ml_collections.ConfigDict) -> bool:
  """Whether sample grids, evaluation and the sample/evaluate tools use the EMA generator (the default
  when the run has one; `--config.gan.sample_with_ema=False` asks for the raw generator)."""
  return enabled(config) and config.gan.sample_with_ema


def check_matches_checkpoint(config: ml_collections.ConfigDict, saved: Mapping[str, Any], where: str,
                             otherwise: str) -> None:
  """A one-line ConfigError when `config` turns the EMA on or off against the checkpoint's saved config
  (its train state has, or lacks, the EMA generator: no config change can add or remove it); the error
  allows the saved choice, or `otherwise`."""
  saved_decay = saved.get('gan', {}).get('ema_decay', 0)
  if (saved_decay > 0) != enabled(config):
    raise ConfigError(f'config.gan.ema_decay={config.gan.ema_decay!r} turns the generator EMA '
                      f'{"on" if enabled(config) else "off"}, but the checkpoint in {where} was trained with '
                      f'ema_decay={saved_decay!r}; allowed: ema_decay {"> 0" if saved_decay > 0 else "0"}, '
                      f'or {otherwise}')
