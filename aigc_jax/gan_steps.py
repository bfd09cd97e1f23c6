"""Pure GAN training steps: `(state, batch, rng) -> (state, metrics)`.

`discriminator_step` and `generator_step` are the two GAN updates; `train_step` is one generator update
preceded by `n_critic` discriminator updates, compiled as one program (the VAE's step is in `vae_steps.py`).
Everything model- or
objective-specific is bound with `functools.partial` before `jax.jit`, so the compiled functions take only
arrays. Randomness is a pure function of the base key and `state.step`, which makes resume exact.

A training step any of whose updates has a non-finite loss (penalties included) or gradient is not
applied at all: both networks keep their params, variables and optimiser states (and the EMA generator
its own), and the step is counted in `skipped_steps` / `consecutive_skipped`. The last good state is
therefore always the current one.

The GAN techniques (`Techniques`, from the config) live inside the same step: R1 (lazy, every `r1_every`
discriminator updates) and WGAN-GP penalties, DiffAugment of every D input, and the generator EMA. All off,
the step is the plain one, bit for bit: their random keys are `fold_in`s of the update's key, never a
change to the keys the plain step draws.

Class-conditional GANs (`gan.conditional`): D sees each real image with its dataset label and each fake
with the label G made it for; G's labels are drawn uniformly over `gan.num_classes` (`sample_labels`).

Spectral normalisation's power-iteration state (`u`, `sigma` in `batch_stats`) belongs to the network it
normalises, like batch-norm statistics: D's is advanced by the discriminator step only. The generator step
runs D in training mode (one power-iteration step from D's stored `u`, as D's own forward pass does) and
discards D's updated variables; PyTorch's `spectral_norm` (Mimicry, BigGAN-PyTorch) would also store that
extra step's `u` -- an estimate of the same singular vector, a difference only in how fast it converges.
"""
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from aigc_jax import augment as augment_lib
from aigc_jax import ema as ema_lib
from aigc_jax import losses
from aigc_jax import sharding as sharding_lib
from aigc_jax.losses import GanLoss
from aigc_jax.models import Gan
from aigc_jax.state import NetworkState, TrainState

Metrics = dict[str, jax.Array]
# Tags folded into an update's key for the techniques' randomness (the plain step's keys stay untouched).
_AUGMENT_TAG, _PENALTY_TAG, _EMA_TAG = 0xA06, 0x9E7, 0xE3A


class Techniques(NamedTuple):
  """The GAN techniques the step applies (static; all off by default). See the config reference."""
  r1_gamma: float = 0.0       # R1 weight gamma: adds gamma / 2 * E||grad D(real)||^2 to D's loss
  r1_every: int = 1           # lazy R1: every k-th discriminator update, weighted by k
  gp_weight: float = 0.0      # WGAN-GP weight
  augment_p: float = 0.0      # DiffAugment probability per operation and image (0: off)
  augment_policy: str = 'color,translation,cutout'
  ema_decay: float = 0.0      # generator EMA decay (0: no EMA)
  ema_start_step: int = 0     # the EMA copies the params before this (1-based) step
  g_ortho_reg: float = 0.0    # BigGAN's orthogonal regularisation of G's weights (0: off)


def techniques_from_config(config: ml_collections.ConfigDict) -> Techniques:
  """The techniques that the run's `config.gan` group turns on."""
  gan = config.gan
  return Techniques(r1_gamma=float(gan.r1_gamma), r1_every=int(gan.r1_every), gp_weight=float(gan.gp_weight),
                    augment_p=float(gan.augment_p), augment_policy=gan.augment_policy,
                    ema_decay=float(gan.ema_decay), ema_start_step=int(gan.ema_start_step),
                    g_ortho_reg=float(gan.g_ortho_reg))


def _augment(images: jax.Array, rng: jax.Array, techniques: Techniques) -> jax.Array:
  """D's view of `images`: DiffAugment with a key of its own derived from `rng` (identity when off)."""
  if not techniques.augment_p:
    return images
  return augment_lib.augment(images, jax.random.fold_in(rng, _AUGMENT_TAG), policy=techniques.augment_policy,
                             p=techniques.augment_p)


def apply_network(module, net: NetworkState, x: jax.Array, *, train: bool, rng: jax.Array | None = None,
                  params: Any = None, labels: jax.Array | None = None) -> tuple[jax.Array, Any]:
  """Runs `module` on `x` (and `labels`, for a class-conditional network); returns its output and its
  (in training, updated) non-param variables."""
  variables = {'params': net.params if params is None else params, **net.variables}
  rngs = {'dropout': rng} if rng is not None else None
  inputs = {} if labels is None else {'labels': labels}
  if train and net.variables:
    return module.apply(variables, x, train=True, rngs=rngs, mutable=list(net.variables), **inputs)
  return module.apply(variables, x, train=train, rngs=rngs, **inputs), net.variables


def couples_samples(net: NetworkState) -> bool:
  """Whether a network's output for one sample depends on the others in its batch: batch norm's `mean` and
  `var` in `batch_stats`. (Spectral norm keeps its power iteration's `u` and `sigma` there too; those depend
  on the weights alone.)"""
  leaves = jax.tree_util.tree_flatten_with_path(net.variables.get('batch_stats', {}))[0]
  return any(getattr(path[-1], 'key', None) in ('mean', 'var') for path, _ in leaves)


def _discriminator_halves(gan: Gan, d: NetworkState, d_rng: jax.Array, labels: jax.Array | None):
  """D on the real half and D on the fake half, each `(params, images) -> (outputs, variables)` with its
  own dropout key (from `d_rng`) and labels, for a D that sees the halves in two calls."""
  real_labels, fake_labels = (None, None) if labels is None else jnp.split(labels, 2)
  real_rng, fake_rng = jax.random.split(d_rng)
  half = lambda rng, half_labels: lambda params, images: apply_network(
      gan.discriminator, d, images, train=True, rng=rng, params=params, labels=half_labels)
  return half(real_rng, real_labels), half(fake_rng, fake_labels)


def discriminate(gan: Gan, d: NetworkState, inputs: tuple[jax.Array, jax.Array], d_rng: jax.Array, *,
                 params: Any, labels: jax.Array | None) -> tuple[jax.Array, jax.Array, Any]:
  """D's outputs on `inputs`, the real and the fake batch (both already augmented), and D's updated
  variables: one call on both when D couples samples (batch statistics), else one call per half
  (`_discriminator_halves`, which `simultaneous_update` differentiates apart)."""
  real_in, fake_in = inputs
  if couples_samples(d):
    outputs, variables = apply_network(gan.discriminator, d, jnp.concatenate([real_in, fake_in]), train=True,
                                       rng=d_rng, params=params, labels=labels)
    return (*jnp.split(outputs, 2), variables)
  d_real, d_fake = _discriminator_halves(gan, d, d_rng, labels)
  # D's mutable state (spectral norm's power iteration) depends on its weights only: both calls update it
  # alike, and the fake half's is kept.
  real_out, _ = d_real(params, real_in)
  fake_out, variables = d_fake(params, fake_in)
  return real_out, fake_out, variables


def _latents(rng: jax.Array, batch_size: int, latent_dim: int) -> jax.Array:
  return sharding_lib.constrain_to_batch(jax.random.normal(rng, (batch_size, latent_dim), jnp.float32))


def sample_labels(rng: jax.Array, batch_size: int, num_classes: int) -> jax.Array:
  """Class labels drawn uniformly from [0, num_classes), int32 `[batch_size]`."""
  return sharding_lib.constrain_to_batch(jax.random.randint(rng, (batch_size,), 0, num_classes, jnp.int32))


def _split(rng: jax.Array, gan: Gan):
  """`(z_rng, g_rng, d_rng, label_rng)`; unconditional GANs split as they always have (label_rng None)."""
  if gan.conditional:
    return tuple(jax.random.split(rng, 4))
  return (*jax.random.split(rng, 3), None)


def _fake_labels(rng: jax.Array | None, batch_size: int, gan: Gan) -> jax.Array | None:
  return sample_labels(rng, batch_size, gan.num_classes) if gan.conditional else None


def _penalties(params: Any, d: NetworkState, real: jax.Array, fake: jax.Array, rng: jax.Array,
               d_update: jax.Array, *, gan: Gan, techniques: Techniques,
               labels: jax.Array | None = None) -> tuple[jax.Array, Metrics]:
  """The weighted penalty terms of D's loss at `params`, and their unweighted values for the metrics.

  A class-conditional D is evaluated with the real images' `labels` (for WGAN-GP's interpolates too).

  They differentiate D (through the augmentation, as StyleGAN2-ADA does) with respect to its input, with
  dropout and augmentation keys of their own; D's variable updates from these passes are dropped.
  """
  rng = jax.random.fold_in(rng, _PENALTY_TAG)
  r1_rng, gp_rng, eps_rng = jax.random.split(rng, 3)

  def d_fn(key):
    aug_rng, dropout_rng = jax.random.split(key)
    return lambda x: apply_network(gan.discriminator, d, _augment(x, aug_rng, techniques), train=True,
                                   rng=dropout_rng, params=params, labels=labels)[0]

  total, values = jnp.zeros((), jnp.float32), {}
  if techniques.r1_gamma:
    r1 = lambda: losses.r1_penalty(d_fn(r1_rng), real)
    if techniques.r1_every > 1:
      # Lazy regularisation (StyleGAN2): every k-th D update, weighted by k. `lax.cond` skips the double
      # backward pass on the other updates. The penalty joins the same Adam update as the loss, so no
      # StyleGAN2-style rescaling of Adam's betas is needed (that one takes a separate optimiser step).
      applied = d_update % techniques.r1_every == 0
      r1 = jax.lax.cond(applied, r1, lambda: jnp.zeros((), jnp.float32))
    else:
      applied, r1 = jnp.ones((), jnp.bool_), r1()
    total += 0.5 * techniques.r1_gamma * techniques.r1_every * r1
    values.update(d_r1=r1, d_r1_applied=applied)
  if techniques.gp_weight:
    gp = losses.gradient_penalty(d_fn(gp_rng), real, fake, eps_rng)
    total += techniques.gp_weight * gp
    values['d_gp'] = gp
  return total, values


def _augment_pair(real: jax.Array, fake: jax.Array, rng: jax.Array,
                  techniques: Techniques) -> tuple[jax.Array, jax.Array]:
  """D's views of the real and the fake batch, augmented together with one key. Without augmentation the
  two stay apart: joined end to end, batch-split arrays are gathered across the devices to be split again
  (at 256 devices, every image of the global batch on every device)."""
  if not techniques.augment_p:
    return real, fake
  return tuple(jnp.split(_augment(jnp.concatenate([real, fake]), rng, techniques), 2))


def discriminator_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *, gan: Gan,
                       loss: GanLoss, d_tx: optax.GradientTransformation, latent_dim: int,
                       techniques: Techniques = Techniques(),
                       d_update: jax.Array | int = 0) -> tuple[TrainState, Metrics]:
  """One discriminator update on a real batch and as many fresh fakes.

  `d_update` counts the discriminator's updates over the run (it times lazy R1).
  """
  real = batch['image']
  z_rng, g_rng, d_rng, label_rng = _split(rng, gan)
  fake_labels = _fake_labels(label_rng, real.shape[0], gan)
  # The generator's batch-norm statistics are updated by the generator step only.
  fake, _ = apply_network(gan.generator, state.generator, _latents(z_rng, real.shape[0], latent_dim),
                          train=True, rng=g_rng, labels=fake_labels)
  fake = jax.lax.stop_gradient(fake)
  d = state.discriminator
  with_penalties = bool(techniques.r1_gamma or techniques.gp_weight)
  # Real images with their own labels, fakes with the labels they were generated for.
  labels = None if fake_labels is None else jnp.concatenate([batch['label'], fake_labels])

  def loss_fn(params):
    inputs = _augment_pair(real, fake, rng, techniques)
    real_out, fake_out, variables = discriminate(gan, d, inputs, d_rng, params=params, labels=labels)
    d_loss = loss.discriminator(real_out, fake_out)
    if not with_penalties:
      return d_loss, (d_loss, real_out, fake_out, variables, {})
    penalty, values = _penalties(params, d, real, fake, rng, d_update, gan=gan, techniques=techniques,
                                 labels=batch['label'] if gan.conditional else None)
    return d_loss + penalty, (d_loss, real_out, fake_out, variables, values)

  (total_loss, (d_loss, real_out, fake_out, variables, penalties)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(d.params)
  updates, opt_state = d_tx.update(grads, d.opt_state, d.params)
  grad_norm = optax.tree.norm(grads)
  # The norm is finite iff every gradient is; the total loss is, iff the loss and each penalty are.
  finite = jnp.isfinite(total_loss) & jnp.isfinite(grad_norm)
  discriminator = NetworkState(optax.apply_updates(d.params, updates), variables, opt_state)
  metrics = {'d_loss': d_loss, 'd_real': jnp.mean(real_out), 'd_fake': jnp.mean(fake_out),
             'd_grad_norm': grad_norm, 'd_finite': finite, **penalties,
             **losses.discriminator_accuracy(loss, real_out, fake_out)}
  if loss.logistic:
    metrics.update(d_real_prob=jnp.mean(jax.nn.sigmoid(real_out)),
                   d_fake_prob=jnp.mean(jax.nn.sigmoid(fake_out)))
  return state.replace(discriminator=discriminator), metrics


def generator_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *, gan: Gan,
                   loss: GanLoss, g_tx: optax.GradientTransformation, latent_dim: int,
                   techniques: Techniques = Techniques()) -> tuple[TrainState, Metrics]:
  """One generator update through the current discriminator (and D's input augmentation, if any);
  `batch` sets the batch size. `techniques.g_ortho_reg` > 0 adds BigGAN's off-diagonal orthogonal
  regularisation of G's weights to its loss."""
  z_rng, g_rng, d_rng, label_rng = _split(rng, gan)
  z = _latents(z_rng, batch['image'].shape[0], latent_dim)
  labels = _fake_labels(label_rng, batch['image'].shape[0], gan)
  g = state.generator

  def loss_fn(params):
    fake, variables = apply_network(gan.generator, g, z, train=True, rng=g_rng, params=params, labels=labels)
    # D's updated variables (its spectral-norm state) are discarded: the discriminator step owns them.
    fake_out, _ = apply_network(gan.discriminator, state.discriminator, _augment(fake, rng, techniques),
                                train=True, rng=d_rng, labels=labels)
    adversarial = loss.generator(fake_out)
    if not techniques.g_ortho_reg:
      return adversarial, (variables, {})
    ortho = losses.orthogonal_regularization(params)
    return adversarial + techniques.g_ortho_reg * ortho, (variables, {'g_ortho': ortho})

  (g_loss, (variables, extra)), grads = jax.value_and_grad(loss_fn, has_aux=True)(g.params)
  updates, opt_state = g_tx.update(grads, g.opt_state, g.params)
  grad_norm = optax.tree.norm(grads)
  finite = jnp.isfinite(g_loss) & jnp.isfinite(grad_norm)
  generator = NetworkState(optax.apply_updates(g.params, updates), variables, opt_state)
  return state.replace(generator=generator), {'g_loss': g_loss, 'g_grad_norm': grad_norm,
                                              'g_finite': finite, **extra}


def simultaneous_update(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *, gan: Gan,
                        loss: GanLoss, g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
                        latent_dim: int, techniques: Techniques = Techniques(),
                        d_update: jax.Array | int = 0) -> tuple[TrainState, Metrics, Metrics]:
  """Both networks updated from one forward pass (the TensorFlow DCGAN tutorial's step, two tapes).

  G makes B fakes once; D sees the real and fake batch together once; D's gradient is that of its loss,
  G's that of its loss through the same D outputs (D's parameters before this step's update). Two
  backward passes through D share the one forward: D's loss to D's weights, G's loss to the fakes. It skips
  the alternating step's second G forward and second D forward (see `flops.py`); what changes is that G
  steps against the D of the start of the step, not the one just updated. Returns the updated state and
  the D and G metrics, named as `discriminator_step` and `generator_step` name them.
  """
  real = batch['image']
  z_rng, g_rng, d_rng, label_rng = _split(rng, gan)
  fake_labels = _fake_labels(label_rng, real.shape[0], gan)
  g, d = state.generator, state.discriminator
  z = _latents(z_rng, real.shape[0], latent_dim)
  fake, g_vjp, g_variables = jax.vjp(
      lambda params: apply_network(gan.generator, g, z, train=True, rng=g_rng, params=params, labels=fake_labels),
      g.params, has_aux=True)
  labels = None if fake_labels is None else jnp.concatenate([batch['label'], fake_labels])

  augment_both = lambda fake: _augment_pair(real, fake, rng, techniques)
  # D's outputs, then two pullbacks: D's loss cotangents (real, fake) to D's weights, and G's cotangent on
  # the fake outputs to the fakes.
  if couples_samples(d):
    def d_outputs(params, fake):
      return apply_network(gan.discriminator, d, jnp.concatenate(augment_both(fake)), train=True, rng=d_rng,
                           params=params, labels=labels)

    outputs, d_vjp, d_variables = jax.vjp(d_outputs, d.params, fake, has_aux=True)
    real_out, fake_out = jnp.split(outputs, 2)
    to_d_weights = lambda real_ct, fake_ct: d_vjp(jnp.concatenate([real_ct, fake_ct]))[0]
    to_fakes = lambda fake_ct: d_vjp(jnp.concatenate([jnp.zeros_like(fake_ct), fake_ct]))[1]
  else:
    # D's halves as `discriminate` makes them, differentiated apart: G's backward pass then covers the
    # fakes only, where one call on both carried G's zero cotangent through D for the real half too
    # (see benchmarks/RESULTS.md for what that cost).
    (real_in, fake_in), augment_vjp = jax.vjp(augment_both, fake)
    d_real, d_fake = _discriminator_halves(gan, d, d_rng, labels)
    real_out, real_vjp, _ = jax.vjp(lambda params: d_real(params, real_in), d.params, has_aux=True)
    fake_out, fake_vjp, d_variables = jax.vjp(d_fake, d.params, fake_in, has_aux=True)
    to_d_weights = lambda real_ct, fake_ct: jax.tree.map(jnp.add, real_vjp(real_ct)[0], fake_vjp(fake_ct)[0])
    to_fakes = lambda fake_ct: augment_vjp((jnp.zeros_like(real_in), fake_vjp(fake_ct)[1]))[0]
  d_loss, d_cotangents = jax.value_and_grad(loss.discriminator, argnums=(0, 1))(real_out, fake_out)
  g_loss, g_cotangent = jax.value_and_grad(loss.generator)(fake_out)
  d_grads = to_d_weights(*d_cotangents)
  g_grads = g_vjp(to_fakes(g_cotangent))[0]

  total_d_loss, penalties = d_loss, {}
  if techniques.r1_gamma or techniques.gp_weight:
    (penalty, penalties), penalty_grads = jax.value_and_grad(
        lambda params: _penalties(params, d, real, jax.lax.stop_gradient(fake), rng, d_update, gan=gan,
                                  techniques=techniques, labels=batch['label'] if gan.conditional else None),
        has_aux=True)(d.params)
    d_grads = jax.tree.map(jnp.add, d_grads, penalty_grads)
    total_d_loss = d_loss + penalty
  total_g_loss, g_extra = g_loss, {}
  if techniques.g_ortho_reg:
    ortho, ortho_grads = jax.value_and_grad(losses.orthogonal_regularization)(g.params)
    g_grads = jax.tree.map(lambda a, b: a + techniques.g_ortho_reg * b, g_grads, ortho_grads)
    total_g_loss, g_extra = g_loss + techniques.g_ortho_reg * ortho, {'g_ortho': ortho}

  d_updates, d_opt_state = d_tx.update(d_grads, d.opt_state, d.params)
  g_updates, g_opt_state = g_tx.update(g_grads, g.opt_state, g.params)
  d_grad_norm, g_grad_norm = optax.tree.norm(d_grads), optax.tree.norm(g_grads)
  state = state.replace(
      discriminator=NetworkState(optax.apply_updates(d.params, d_updates), d_variables, d_opt_state),
      generator=NetworkState(optax.apply_updates(g.params, g_updates), g_variables, g_opt_state))
  d_metrics = {'d_loss': d_loss, 'd_real': jnp.mean(real_out), 'd_fake': jnp.mean(fake_out),
               'd_grad_norm': d_grad_norm,
               'd_finite': jnp.isfinite(total_d_loss) & jnp.isfinite(d_grad_norm), **penalties,
               **losses.discriminator_accuracy(loss, real_out, fake_out)}
  if loss.logistic:
    d_metrics.update(d_real_prob=jnp.mean(jax.nn.sigmoid(real_out)),
                     d_fake_prob=jnp.mean(jax.nn.sigmoid(fake_out)))
  g_metrics = {'g_loss': total_g_loss, 'g_grad_norm': g_grad_norm,
               'g_finite': jnp.isfinite(total_g_loss) & jnp.isfinite(g_grad_norm), **g_extra}
  return state, d_metrics, g_metrics


def update_ema(state: TrainState, rng: jax.Array, batch_size: int, *, gan: Gan, latent_dim: int,
               techniques: Techniques) -> TrainState:
  """The EMA generator after this step's generator update (see `ema.py`): params averaged in float32,
  variables (batch statistics) recomputed by a training-mode pass of the EMA params, or copied from the
  generator while the EMA copies its params (before `ema_start_step`)."""
  g, old = state.generator, state.generator_ema
  decay = ema_lib.ema_decay_at(state.step + 1, decay=techniques.ema_decay, start_step=techniques.ema_start_step)
  params = ema_lib.update(old.params, g.params, decay)
  variables = g.variables
  if g.variables:
    z_rng, dropout_rng, label_rng = jax.random.split(jax.random.fold_in(rng, _EMA_TAG), 3)
    _, own = apply_network(gan.generator, old, _latents(z_rng, batch_size, latent_dim), train=True,
                           rng=dropout_rng, params=params, labels=_fake_labels(label_rng, batch_size, gan))
    variables = jax.tree.map(lambda copied, recomputed: jnp.where(decay == 0, copied, recomputed),
                             g.variables, own)
  return state.replace(generator_ema=NetworkState(params, variables, None))


def train_step(state: TrainState, batch: dict[str, jax.Array], rng: jax.Array, *, gan: Gan, loss: GanLoss,
               g_tx: optax.GradientTransformation, d_tx: optax.GradientTransformation,
               latent_dim: int, techniques: Techniques = Techniques(),
               update: str = 'alternating') -> tuple[TrainState, Metrics]:
  """`n_critic` discriminator updates (one per leading slice of `batch`), then one generator update, then
  the generator EMA's update when the run has one. With `update='simultaneous'` (n_critic 1) both
  networks are updated from one forward pass instead (`simultaneous_update`).

  `rng` is the run's base key; this step's randomness is `fold_in(rng, state.step)`.
  """
  if update not in losses.GAN_UPDATES:
    raise ValueError(f'unknown GAN update {update!r}; allowed: {", ".join(losses.GAN_UPDATES)}')
  n_critic = batch['image'].shape[0]
  rngs = jax.random.split(jax.random.fold_in(rng, state.step), n_critic + 1)
  d_updates = state.step * n_critic + jnp.arange(n_critic, dtype=state.step.dtype)
  last_batch = jax.tree.map(lambda x: x[-1], batch)

  if update == 'simultaneous':
    if n_critic != 1:
      raise ValueError(f'the simultaneous update takes one batch per step, got n_critic={n_critic}')
    updated, d_metrics, g_metrics = simultaneous_update(
        state, last_batch, rngs[0], gan=gan, loss=loss, g_tx=g_tx, d_tx=d_tx, latent_dim=latent_dim,
        techniques=techniques, d_update=d_updates[0])
    d_metrics = jax.tree.map(lambda x: x[None], d_metrics)  # as the critic scan stacks them
  else:
    def critic_update(carry, inputs):
      critic_batch, critic_rng, d_update = inputs
      return discriminator_step(carry, critic_batch, critic_rng, gan=gan, loss=loss, d_tx=d_tx,
                                latent_dim=latent_dim, techniques=techniques, d_update=d_update)

    # A Python loop, not `lax.scan(..., unroll=True)`: the scan leaves XLA a while loop (trip count
    # n_critic, even 1), inside which XLA:CPU did not canonicalise D's strided weight-gradient convolution
    # for its Eigen kernels and loop-emitted it instead, many times slower (benchmarks/RESULTS.md).
    updated, per_update = state, []
    for i in range(n_critic):
      updated, metrics_i = critic_update(updated, jax.tree.map(lambda x: x[i], (batch, rngs[:-1], d_updates)))
      per_update.append(metrics_i)
    d_metrics = jax.tree.map(lambda *values: jnp.stack(values), *per_update)
    updated, g_metrics = generator_step(updated, last_batch, rngs[-1], gan=gan, loss=loss, g_tx=g_tx,
                                        latent_dim=latent_dim, techniques=techniques)
  if techniques.ema_decay:
    updated = update_ema(updated, rngs[-1], last_batch['image'].shape[0], gan=gan, latent_dim=latent_dim,
                         techniques=techniques)
  if 'd_r1' in d_metrics:
    # The mean over the updates that applied R1 (NaN when none did: the logged window mean skips it).
    applied = d_metrics.pop('d_r1_applied')
    d_metrics['d_r1'] = jnp.sum(jnp.where(applied, d_metrics['d_r1'], 0.0)) / jnp.sum(applied)
  finite = jnp.all(d_metrics.pop('d_finite')) & g_metrics.pop('g_finite')
  state = jax.tree.map(lambda new, old: jnp.where(finite, new, old), updated, state)
  skipped = jnp.logical_not(finite).astype(jnp.int32)
  state = state.replace(step=state.step + 1, skipped_steps=state.skipped_steps + skipped,
                        consecutive_skipped=(state.consecutive_skipped + skipped) * skipped)
  metrics = {**jax.tree.map(jnp.mean, d_metrics), **g_metrics, 'skipped': skipped,
             'skipped_steps': state.skipped_steps, 'consecutive_skipped': state.consecutive_skipped}
  return state, metrics


def generate(state: TrainState, z: jax.Array, labels: jax.Array | None = None, *, gan: Gan,
             use_ema: bool = False) -> jax.Array:
  """Images from latents `z` (and, for a class-conditional GAN, int32 `labels` [B]) with the generator in
  inference mode (batch-norm running statistics, spectral-norm state read only); with `use_ema`, the EMA
  generator's."""
  if (labels is None) == gan.conditional:
    raise ValueError(f'generate takes labels iff the GAN is class-conditional (num_classes={gan.num_classes})')
  images, _ = apply_network(gan.generator, state.generator_ema if use_ema else state.generator, z, train=False,
                            labels=labels)
  return images

