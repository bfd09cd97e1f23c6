"""The one-line errors: `ConfigError` for input a run cannot use, and `one_line` for showing any other error
in one line. It imports nothing, so any module can use it."""


class ConfigError(ValueError):
  """A config value, workdir or device layout the run cannot use; the message is one line."""


def one_line(error: BaseException) -> str:
  """`error` as `Type: message` on one line of at most about 300 characters: its start and its end, where
  storage errors put the cause (e.g. `No space left on device`) after long paths."""
  text = ' '.join(str(error).split())
  if len(text) > 300:
    text = f'{text[:150]} ... {text[-150:]}'
  return f'{type(error).__name__}: {text}' if text else type(error).__name__
