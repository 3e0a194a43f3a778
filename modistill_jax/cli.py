"""What every command-line entry point does before its work."""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import functools
import io
import os
import sys
import time

from absl import flags
from absl import logging
import ml_collections
import tensorflow_datasets as tfds

from modistill_jax import metrics
from modistill_jax.data import feeding

# `gs://` work folders and data dirs go through gcsfs, the client the tests run against a
# GCS server (tests/test_gcs_run.py), and not TensorFlow's file system, which etils.epath
# would otherwise pick because TensorFlow is installed. Read when the first `gs://` path
# is opened, so setting it as the commands start is in time; a user's own value wins.
os.environ.setdefault('EPATH_USE_TF', 'false')


def quiet_logging() -> None:
  """Orbax logs every save at INFO; show warnings unless `--verbosity` is given."""
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)


def with_refusals(main: Callable[[list[str]], object], *refusals: type[Exception]):
  """`main` ending on any of `refusals` as one message on stderr and exit status 1.

  A refusal (a config that disagrees with the run, a stage that is not trained
  yet, a stage folder another job holds) is the user's to act on, and its message
  says what to type instead; a traceback would only bury it. Every other error
  keeps its traceback.
  """

  @functools.wraps(main)
  def main_refusing(argv):
    try:
      return main(argv)
    except refusals as e:
      raise SystemExit(f'error: {e}') from None

  return main_refusing


def build_dataset(config: ml_collections.ConfigDict) -> None:
  """Builds a download-free dataset (`config.build_if_missing`) before the first stage.

  TFDS announces a build with `print`, not through logging, and for a builder
  with nothing to download the notice reads 'Downloading and preparing dataset
  Unknown size (download: Unknown size, ...)'; here one line says instead what
  was built, where, in how long. TFDS's progress bars stay on a terminal; in a
  log file they would be hundreds of carriage-return updates.
  """
  if not sys.stderr.isatty():
    tfds.disable_progress_bar()
  start = time.monotonic()
  with contextlib.redirect_stdout(io.StringIO()):
    built_in = feeding.ensure_dataset(config)
  if built_in:
    print(
        f'Built {config.dataset} in {built_in} in '
        f'{metrics.format_duration(time.monotonic() - start)} (nothing downloaded).',
        flush=True,
    )
