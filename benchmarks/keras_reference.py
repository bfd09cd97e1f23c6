"""The same GANs written the usual TensorFlow way, timed on this machine: the baseline `aigc_jax.benchmark`
is compared with (issue 3's targets name TF/Keras with a `tf.function` train step).

`python benchmarks/keras_reference.py --model=dcgan --batch_size=256 [--steps=20 --warmup=3]`

Models: `dcgan` is the TensorFlow DCGAN tutorial's generator and discriminator, layer for layer (our
`models/dcgan.py` is the same network); `mlp` is the seed documents' Keras MLP GAN (our `models/mlp.py`).
The train step is the tutorial's: one `tf.function` that runs G once, D on the real and the fake batch,
and applies both Adam updates from two tapes (simultaneous updates). Prints one JSON line.
"""
import argparse
import json
import os
import statistics
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
import tensorflow as tf  # noqa: E402

LATENT_DIM = 100


def dcgan(image_shape):
  height, width, channels = image_shape
  generator = tf.keras.Sequential([
      tf.keras.Input((LATENT_DIM,)),
      tf.keras.layers.Dense((height // 4) * (width // 4) * 256, use_bias=False),
      tf.keras.layers.BatchNormalization(), tf.keras.layers.LeakyReLU(0.3),
      tf.keras.layers.Reshape((height // 4, width // 4, 256)),
      tf.keras.layers.Conv2DTranspose(128, 5, strides=1, padding='same', use_bias=False),
      tf.keras.layers.BatchNormalization(), tf.keras.layers.LeakyReLU(0.3),
      tf.keras.layers.Conv2DTranspose(64, 5, strides=2, padding='same', use_bias=False),
      tf.keras.layers.BatchNormalization(), tf.keras.layers.LeakyReLU(0.3),
      tf.keras.layers.Conv2DTranspose(channels, 5, strides=2, padding='same', use_bias=False,
                                      activation='tanh')])
  discriminator = tf.keras.Sequential([
      tf.keras.Input(image_shape),
      tf.keras.layers.Conv2D(64, 5, strides=2, padding='same'), tf.keras.layers.LeakyReLU(0.3),
      tf.keras.layers.Dropout(0.3),
      tf.keras.layers.Conv2D(128, 5, strides=2, padding='same'), tf.keras.layers.LeakyReLU(0.3),
      tf.keras.layers.Dropout(0.3),
      tf.keras.layers.Flatten(), tf.keras.layers.Dense(1)])
  return generator, discriminator


def mlp(image_shape):
  pixels = image_shape[0] * image_shape[1] * image_shape[2]
  generator = tf.keras.Sequential([
      tf.keras.Input((LATENT_DIM,)),
      tf.keras.layers.Dense(256, activation='relu'), tf.keras.layers.Dense(512, activation='relu'),
      tf.keras.layers.Dense(1024, activation='relu'), tf.keras.layers.Dense(pixels, activation='tanh'),
      tf.keras.layers.Reshape(image_shape)])
  discriminator = tf.keras.Sequential([
      tf.keras.Input(image_shape), tf.keras.layers.Flatten(),
      tf.keras.layers.Dense(512, activation='relu'), tf.keras.layers.Dense(256, activation='relu'),
      tf.keras.layers.Dense(1)])
  return generator, discriminator


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', choices=('dcgan', 'mlp'), default='dcgan')
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--warmup', type=int, default=3)
  args = parser.parse_args()
  image_shape = (28, 28, 1)
  generator, discriminator = (dcgan if args.model == 'dcgan' else mlp)(image_shape)
  bce = tf.keras.losses.BinaryCrossentropy(from_logits=True)
  g_opt, d_opt = tf.keras.optimizers.Adam(1e-4), tf.keras.optimizers.Adam(1e-4)

  @tf.function
  def train_step(images):
    noise = tf.random.normal([args.batch_size, LATENT_DIM])
    with tf.GradientTape() as g_tape, tf.GradientTape() as d_tape:
      fake = generator(noise, training=True)
      real_out = discriminator(images, training=True)
      fake_out = discriminator(fake, training=True)
      g_loss = bce(tf.ones_like(fake_out), fake_out)
      d_loss = bce(tf.ones_like(real_out), real_out) + bce(tf.zeros_like(fake_out), fake_out)
    g_opt.apply_gradients(zip(g_tape.gradient(g_loss, generator.trainable_variables),
                              generator.trainable_variables))
    d_opt.apply_gradients(zip(d_tape.gradient(d_loss, discriminator.trainable_variables),
                              discriminator.trainable_variables))
    return g_loss, d_loss

  images = tf.random.uniform((args.batch_size,) + image_shape, -1.0, 1.0)
  for _ in range(args.warmup):
    train_step(images)[0].numpy()
  seconds = []
  for _ in range(args.steps):
    start = time.perf_counter()
    train_step(images)[0].numpy()  # the step's losses on the host: the step has finished
    seconds.append(time.perf_counter() - start)
  step_s = statistics.median(seconds)
  print(json.dumps({'framework': f'tensorflow {tf.__version__}', 'model': args.model,
                    'batch_size': args.batch_size, 'step_ms': step_s * 1e3, 'step_ms_min': min(seconds) * 1e3,
                    'images_per_sec': args.batch_size / step_s, 'threads': tf.config.threading.get_intra_op_parallelism_threads(),
                    # As launch/ scripts set it; run with and without to compare.
                    'malloc_huge_pages': 'glibc.malloc.hugetlb=1' in os.environ.get('GLIBC_TUNABLES', '').split(':')}))


if __name__ == '__main__':
  main()
