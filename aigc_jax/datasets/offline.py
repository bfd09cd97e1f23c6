"""The base of our builders, which build from local files: no download, so nothing of TFDS's download talk."""
from absl import logging
import tensorflow_datasets as tfds


class OfflineBuilder(tfds.core.GeneratorBasedBuilder):
  """A TFDS builder that announces its one-time preparation in one log line of ours, where TFDS prints two
  bold lines about download sizes to stdout whatever the console's verbosity."""

  def _log_download_bytes(self) -> None:
    logging.info('preparing dataset %s in %s (once for this data_dir)', self.name, self.data_dir)

  def _log_download_done(self) -> None:
    pass
