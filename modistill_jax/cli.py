"""What every command-line entry point does before its work."""

from __future__ import annotations

from collections.abc import Callable
import contextlib
import functools
import io
import os
import sys
import time

from absl import app
from absl import flags
from absl import logging
from etils import epath
import jax
import ml_collections
import tensorflow_datasets as tfds

from modistill_jax import metrics
from modistill_jax import runs
from modistill_jax.data import feeding

# `gs://` work folders and data dirs go through gcsfs, the client the tests run against a
# GCS server (tests/test_gcs_run.py), and not TensorFlow's file system, which etils.epath
# would otherwise pick because TensorFlow is installed. Read when the first `gs://` path
# is opened, so setting it as the commands start is in time; a user's own value wins.
os.environ.setdefault('EPATH_USE_TF', 'false')


# MARK: JAX's persistent compilation cache

CACHE_OFF = 'off'
# The cache's folder under the user's cache folder, and beside a `gs://` run.
CACHE_FOLDER = 'jax_cache'
_MIN_COMPILE_TIME_ENV = 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'

flags.DEFINE_string(
    'compilation_cache',
    None,
    "Folder of JAX's persistent compilation cache (local or gs://), or 'off'. Default: "
    'JAX_COMPILATION_CACHE_DIR when set (JAX_ENABLE_COMPILATION_CACHE=false: off), else '
    f'WORKDIR/{CACHE_FOLDER} for a gs:// run folder, else '
    f'$XDG_CACHE_HOME/modistill_jax/{CACHE_FOLDER} (~/.cache without XDG_CACHE_HOME).',
)


def user_cache_dir() -> epath.Path:
  """The compilation cache's folder in the user's cache folder (the XDG convention)."""
  home = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return epath.Path(home) / 'modistill_jax' / CACHE_FOLDER


def compilation_cache_dir(workdir: str | None) -> str | None:
  """Where this command keeps its compiled programs, or None for no persistent cache.

  First the `--compilation_cache` flag, then JAX's own settings (env vars or
  `jax.config`, so tests and users of JAX keep theirs), then the default: for a
  run folder on `gs://`, `WORKDIR/jax_cache`, where a preempted pod job finds
  its programs again on any host; otherwise the user's cache folder, shared by
  every run on the machine (a program's key holds its HLO, devices, XLA flags and
  JAX version, so runs never read each other's programs by mistake).
  """
  flag = flags.FLAGS['compilation_cache']
  if flag.present:
    value = flag.value
    if not value:
      raise app.UsageError(f"--compilation_cache needs a folder or '{CACHE_OFF}', got ''.")
    return None if value == CACHE_OFF else value
  if not jax.config.jax_enable_compilation_cache:
    return None
  if jax.config.jax_compilation_cache_dir:
    return jax.config.jax_compilation_cache_dir
  if workdir and runs.is_remote(workdir):
    return os.fspath(runs.as_path(workdir) / CACHE_FOLDER)
  return os.fspath(user_cache_dir())


def use_compilation_cache(workdir: str | None = None) -> str | None:
  """Turns JAX's persistent compilation cache on (or off) for this command; returns its folder.

  Call before anything compiles. Every program is kept, however fast it
  compiled (JAX's default keeps only those over 1 s), so that a second identical
  run compiles nothing; `JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS` still
  chooses another threshold.
  """
  path = compilation_cache_dir(workdir)
  if path is None:
    jax.config.update('jax_enable_compilation_cache', False)
    return None
  jax.config.update('jax_enable_compilation_cache', True)
  jax.config.update('jax_compilation_cache_dir', path)
  if _MIN_COMPILE_TIME_ENV not in os.environ:
    jax.config.update('jax_persistent_cache_min_compile_time_secs', 0.0)
  return path


# MARK: logging and data


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
