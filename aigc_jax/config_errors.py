"""`ConfigError`: the one exception for input a run cannot use. It imports nothing, so any module can raise it."""


class ConfigError(ValueError):
  """A config value, workdir or device layout the run cannot use; the message is one line."""
