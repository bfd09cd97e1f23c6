"""Optax optimisers for the generator and the discriminator, built from the config."""
import ml_collections
import optax

LR_SCHEDULES = ('constant', 'cosine', 'linear')


def learning_rate_schedule(peak: float, *, kind: str, warmup_steps: int, total_steps: int) -> optax.Schedule:
  """Linear warm-up to `peak`, then constant, cosine or linear decay to zero at `total_steps`."""
  if kind == 'constant':
    decay = optax.constant_schedule(peak)
  elif kind == 'cosine':
    decay = optax.cosine_decay_schedule(peak, max(1, total_steps - warmup_steps))
  elif kind == 'linear':
    decay = optax.linear_schedule(peak, 0.0, max(1, total_steps - warmup_steps))
  else:
    raise ValueError(f'unknown lr_schedule {kind!r}; allowed: {", ".join(LR_SCHEDULES)}')
  if warmup_steps <= 0:
    return decay
  return optax.join_schedules([optax.linear_schedule(0.0, peak, warmup_steps), decay], [warmup_steps])


def _schedule(config: ml_collections.ConfigDict, network: str) -> tuple[optax.Schedule, int]:
  """`network`'s schedule over its own updates, and its updates per training step."""
  optimizer = config.optimizer
  own_rate = {'generator': optimizer.g_learning_rate, 'discriminator': optimizer.d_learning_rate}.get(network)
  peak = own_rate if own_rate is not None else optimizer.learning_rate
  updates_per_step = config.gan.n_critic if network == 'discriminator' else 1
  schedule = learning_rate_schedule(peak, kind=config.optimizer.lr_schedule,
                                    warmup_steps=config.optimizer.warmup_steps * updates_per_step,
                                    total_steps=config.num_train_steps * updates_per_step)
  return schedule, updates_per_step


def learning_rates(config: ml_collections.ConfigDict, networks: tuple[str, ...], step: int) -> dict[str, float]:
  """`{'lr_<network>': rate}`: the rate each network's last update of training step `step` used."""
  rates = {}
  for network in networks:
    schedule, updates_per_step = _schedule(config, network)
    rates[f'lr_{network}'] = float(schedule(max(step * updates_per_step - 1, 0)))
  return rates


def create_optimizer(config: ml_collections.ConfigDict, network: str) -> optax.GradientTransformation:
  """Adam for `network` ('generator', 'discriminator' or 'vae') with its own learning rate and step count.

  The discriminator takes `gan.n_critic` updates per training step, so its schedule spans
  `num_train_steps * gan.n_critic` of its own updates. A VAE uses `optimizer.learning_rate`, one update per step.
  """
  schedule, _ = _schedule(config, network)
  adam = optax.adam(schedule, b1=config.optimizer.adam_b1, b2=config.optimizer.adam_b2, eps=config.optimizer.adam_eps)
  if config.optimizer.grad_clip_norm:
    return optax.chain(optax.clip_by_global_norm(config.optimizer.grad_clip_norm), adam)
  return adam
