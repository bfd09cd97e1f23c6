"""The same GANs written the usual PyTorch way (eager), timed on this machine: the issue's other baseline.

`python benchmarks/torch_reference.py --model=dcgan --batch_size=256 [--update=alternating|simultaneous]
    [--device=cpu|cuda]`

Needs torch, which is not a project dependency (`pip install torch --index-url
https://download.pytorch.org/whl/cpu` in a separate environment). Models as in `keras_reference.py`: the
TensorFlow DCGAN tutorial's networks (NCHW; 'same' padding written as torch padding, same shapes and
FLOPs) and the seeds' MLP GAN. Updates: `alternating` is the PyTorch DCGAN tutorial's step (D on real and
detached fake, then G through the updated D), `simultaneous` the TensorFlow tutorial's (one forward, two
backward passes). Adam, binary cross-entropy with logits. Prints one JSON line.
"""
import argparse
import json
import os
import statistics
import time

import torch
from torch import nn

LATENT_DIM = 100


def dcgan(channels=1):
  generator = nn.Sequential(
      nn.Linear(LATENT_DIM, 7 * 7 * 256, bias=False), nn.BatchNorm1d(7 * 7 * 256, momentum=0.01, eps=1e-3),
      nn.LeakyReLU(0.3), nn.Unflatten(1, (256, 7, 7)),
      nn.ConvTranspose2d(256, 128, 5, stride=1, padding=2, bias=False), nn.BatchNorm2d(128, momentum=0.01, eps=1e-3),
      nn.LeakyReLU(0.3),
      nn.ConvTranspose2d(128, 64, 5, stride=2, padding=2, output_padding=1, bias=False),
      nn.BatchNorm2d(64, momentum=0.01, eps=1e-3), nn.LeakyReLU(0.3),
      nn.ConvTranspose2d(64, channels, 5, stride=2, padding=2, output_padding=1, bias=False), nn.Tanh())
  discriminator = nn.Sequential(
      nn.Conv2d(channels, 64, 5, stride=2, padding=2), nn.LeakyReLU(0.3), nn.Dropout(0.3),
      nn.Conv2d(64, 128, 5, stride=2, padding=2), nn.LeakyReLU(0.3), nn.Dropout(0.3),
      nn.Flatten(), nn.Linear(7 * 7 * 128, 1))
  return generator, discriminator


def mlp(channels=1):
  pixels = 28 * 28 * channels
  generator = nn.Sequential(
      nn.Linear(LATENT_DIM, 256), nn.ReLU(), nn.Linear(256, 512), nn.ReLU(), nn.Linear(512, 1024), nn.ReLU(),
      nn.Linear(1024, pixels), nn.Tanh(), nn.Unflatten(1, (channels, 28, 28)))
  discriminator = nn.Sequential(
      nn.Flatten(), nn.Linear(pixels, 512), nn.ReLU(), nn.Linear(512, 256), nn.ReLU(), nn.Linear(256, 1))
  return generator, discriminator


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', choices=('dcgan', 'mlp'), default='dcgan')
  parser.add_argument('--batch_size', type=int, default=256)
  parser.add_argument('--update', choices=('alternating', 'simultaneous'), default='alternating')
  parser.add_argument('--steps', type=int, default=20)
  parser.add_argument('--warmup', type=int, default=3)
  parser.add_argument('--device', default='cpu', help='a torch device: cpu, cuda, cuda:1, ...')
  args = parser.parse_args()
  device = torch.device(args.device)
  torch.set_default_device(device)
  generator, discriminator = ((dcgan if args.model == 'dcgan' else mlp)())
  generator, discriminator = generator.to(device), discriminator.to(device)
  bce = nn.BCEWithLogitsLoss()
  g_opt = torch.optim.Adam(generator.parameters(), 2e-4, betas=(0.5, 0.999))
  d_opt = torch.optim.Adam(discriminator.parameters(), 2e-4, betas=(0.5, 0.999))
  batch = args.batch_size
  ones, zeros = torch.ones(batch, 1), torch.zeros(batch, 1)
  images = torch.rand(batch, 1, 28, 28) * 2 - 1

  def alternating_step():
    fake = generator(torch.randn(batch, LATENT_DIM))
    d_opt.zero_grad()
    d_loss = bce(discriminator(images), ones) + bce(discriminator(fake.detach()), zeros)
    d_loss.backward()
    d_opt.step()
    g_opt.zero_grad()
    g_loss = bce(discriminator(fake), ones)
    g_loss.backward()
    g_opt.step()
    return g_loss.item()  # on the host: the step has finished

  def simultaneous_step():
    fake = generator(torch.randn(batch, LATENT_DIM))
    real_out, fake_out = discriminator(images), discriminator(fake)
    g_loss = bce(fake_out, ones)
    d_loss = bce(real_out, ones) + bce(fake_out, zeros)
    g_grads = torch.autograd.grad(g_loss, list(generator.parameters()), retain_graph=True)
    d_grads = torch.autograd.grad(d_loss, list(discriminator.parameters()))
    for params, grads in ((generator.parameters(), g_grads), (discriminator.parameters(), d_grads)):
      for p, g in zip(params, grads):
        p.grad = g
    g_opt.step()
    d_opt.step()
    return g_loss.item()

  step = alternating_step if args.update == 'alternating' else simultaneous_step
  for _ in range(args.warmup):
    step()
  seconds = []
  for _ in range(args.steps):
    start = time.perf_counter()
    step()
    seconds.append(time.perf_counter() - start)
  step_s = statistics.median(seconds)
  print(json.dumps({'framework': f'pytorch {torch.__version__}', 'model': args.model, 'update': args.update,
                    'device': str(device) if device.type == 'cpu' else torch.cuda.get_device_name(device),
                    'batch_size': batch, 'step_ms': step_s * 1e3, 'step_ms_min': min(seconds) * 1e3,
                    'images_per_sec': batch / step_s, 'threads': torch.get_num_threads(),
                    'malloc_huge_pages': 'glibc.malloc.hugetlb=1' in os.environ.get('GLIBC_TUNABLES', '').split(':')}))


if __name__ == '__main__':
  main()
