"""The layer classes a model builds its convolutions and dropout from.

flax's own by default. The CPU fast path (`aigc_jax.cpu`) hands in equivalents with the same names,
parameters and function; a model file only ever writes `self.layers.conv(...)`, as flax's ImageNet example
writes `self.conv(...)`.
"""
from typing import NamedTuple

import flax.linen as nn


class Layers(NamedTuple):
  conv: type[nn.Module] = nn.Conv
  conv_transpose: type[nn.Module] = nn.ConvTranspose
  dropout: type[nn.Module] = nn.Dropout
