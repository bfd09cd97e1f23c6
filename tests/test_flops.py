"""The analytic FLOP formula against hand counts, against XLA's valid-tap convolutions, and against XLA."""
import functools

import jax
import jax.numpy as jnp
import pytest

from aigc_jax import flops, gan_steps, losses, models, optimizers
from aigc_jax import state as state_lib
from configs import base


def _config(model, width_multiplier, batch_size):
  config = base.get_config()
  config.model.name, config.model.width_multiplier, config.batch_size = model, width_multiplier, batch_size
  return config


def test_mlp_train_step_flops_match_a_hand_count():
  # Widths / 256 -> G: 100 -> 1 -> 2 -> 4 -> 4 pixels; D: 4 -> 2 -> 1 -> 1.
  g_macs = 100 * 1 + 1 * 2 + 2 * 4 + 4 * 4          # 126 per example
  d_macs = 4 * 2 + 2 * 1 + 1 * 1                    # 11; its first layer 8
  batch = 2
  critic = (batch * 2 * g_macs                      # G forward makes the fakes
            + 2 * batch * 2 * d_macs                # D forward on real + fake
            + 2 * batch * (2 * d_macs + 2 * (d_macs - 8)))  # D weight grads + input grads but the first
  generator = (batch * 2 * g_macs + batch * 2 * d_macs   # G forward, D forward
               + batch * 2 * d_macs                       # D input grads, all layers
               + batch * (2 * g_macs + 2 * (g_macs - 100)))  # G weight grads + input grads but the first
  assert critic + generator == 1904
  assert flops.train_step_flops(_config('mlp', 1 / 256, batch), (2, 2, 1)) == 1904
  # The simultaneous step (the DCGAN tutorial's): the generator update reuses the critic's forward pass, so
  # it adds only D's input gradients on the fakes (all layers) and G's backward.
  simultaneous = critic + batch * 2 * d_macs + batch * (2 * g_macs + 2 * (g_macs - 100))
  assert simultaneous == 1904 - batch * 2 * (g_macs + d_macs)
  config = _config('mlp', 1 / 256, batch)
  config.gan.update_scheme = 'simultaneous'
  assert flops.train_step_flops(config, (2, 2, 1)) == simultaneous


def test_dcgan_layer_macs_match_a_hand_count():
  # 8x8x1 images, widths / 64 -> G 4, 2, 1 and D 1, 2. Valid taps per axis counted by hand: the stride-1
  # transposed conv on 2 pixels reads 2 + 2; the stride-2 ones on 2 and 4 pixels 7 and 17 (phases 3 + 4,
  # 7 + 10); D's stride-2 convs on 8 and 4 pixels 4 + 5 + 5 + 3 = 17 and 4 + 3 = 7.
  generator, discriminator = flops.dcgan_layers(_config('dcgan', 1 / 64, 2), (8, 8, 1))
  assert [layer.macs for layer in generator] == [100 * 2 * 2 * 4, 4 * 4 * 4 * 2, 7 * 7 * 2 * 1, 17 * 17 * 1 * 1]
  assert [layer.macs for layer in discriminator] == [17 * 17 * 1 * 1, 7 * 7 * 1 * 2, 2 * 2 * 2]
  g, d, d_first, g_first, batch = 2115, 395, 289, 1600, 2
  critic = batch * 2 * g + 2 * batch * 2 * d + 2 * batch * (2 * d + 2 * (d - d_first))
  generator_update = batch * 2 * g + 2 * batch * 2 * d + batch * (2 * g + 2 * (g - g_first))
  assert flops.train_step_flops(_config('dcgan', 1 / 64, batch), (8, 8, 1)) == critic + generator_update


@pytest.mark.parametrize('size,kernel,stride', [(7, 5, 1), (7, 5, 2), (14, 5, 2), (28, 5, 2), (8, 4, 2), (5, 3, 3)])
def test_valid_taps_count_what_the_convolutions_read(size, kernel, stride):
  # With ones in and ones as the kernel, each output sums the taps that read real pixels, not padding.
  ones = jnp.ones((1, size, size, 1))
  weights = jnp.ones((kernel, kernel, 1, 1))
  dims = ('NHWC', 'HWIO', 'NHWC')
  if stride > 1:
    conv = jax.lax.conv_general_dilated(ones, weights, (stride, stride), 'SAME', dimension_numbers=dims)
    assert int(jnp.sum(conv)) == flops._conv_taps(size, kernel, stride) ** 2
  transposed = jax.lax.conv_transpose(ones, weights, (stride, stride), 'SAME', dimension_numbers=dims)
  assert int(jnp.sum(transposed)) == flops._conv_transpose_taps(size, kernel, stride) ** 2


def test_mlp_formula_is_close_to_xla_cost_analysis():
  # Dense layers have no padding taps, so XLA's count differs only by the elementwise ops it adds (the
  # activations, Adam over 1.5M parameters), which at batch 128 are a few per cent.
  config = _config('mlp', 1.0, 128)
  image_shape = (28, 28, 1)
  gan = models.create_gan(config, image_shape)
  g_tx, d_tx = optimizers.create_optimizer(config, 'generator'), optimizers.create_optimizer(config, 'discriminator')
  state = jax.eval_shape(functools.partial(state_lib.init_train_state, gan=gan, g_tx=g_tx, d_tx=d_tx,
                                           image_shape=image_shape, latent_dim=config.model.latent_dim),
                         jax.random.key(0))
  step = functools.partial(gan_steps.train_step, gan=gan, loss=losses.get_gan_loss(config.gan.loss), g_tx=g_tx,
                           d_tx=d_tx, latent_dim=config.model.latent_dim)
  batch = {'image': jax.ShapeDtypeStruct((1, 128) + image_shape, jnp.float32),
           'label': jax.ShapeDtypeStruct((1, 128), jnp.int32)}
  compiled = jax.jit(step).lower(state, batch, jax.random.key(1)).compile()
  xla = compiled.cost_analysis()['flops']
  analytic = flops.train_step_flops(config, image_shape)
  assert 0.98 < xla / analytic < 1.06, (xla, analytic)
