"""JAX's persistent compilation cache, as every command turns it on (`cli.use_compilation_cache`).

Where it goes is decided in-process (flag, then JAX's own settings, then the
default: beside a `gs://` run, else the user's cache folder). That a second
identical `train` compiles nothing is read from JAX's own compile log of two
real `train` commands; that JAX keeps the cache on `gs://` (through
`etils.epath` and gcsfs) is checked against the local GCS server.
"""

import os
import re
import subprocess
import sys

from absl import app
from absl.testing import flagsaver
from etils import epath
import jax
import pytest

from conftest import REPO_ROOT, cli_env, override_flags
from modistill_jax import cli
from modistill_jax import runs

# What JAX logs with `JAX_LOG_COMPILES=1` for every program it builds (compiled or
# read from the persistent cache), and for each one it read from the cache.
BUILT = re.compile(r'Finished XLA compilation of (\S+) in')
CACHE_HIT = re.compile(r"Persistent compilation cache hit for '([^']+)'")


@pytest.fixture
def jax_cache_settings():
  """JAX's cache settings as a plain process has them, restored after the test."""
  names = (
      'jax_enable_compilation_cache',
      'jax_compilation_cache_dir',
      'jax_persistent_cache_min_compile_time_secs',
  )
  previous = {name: jax.config.values[name] for name in names}
  jax.config.update('jax_enable_compilation_cache', True)
  jax.config.update('jax_compilation_cache_dir', None)
  yield
  for name, value in previous.items():
    jax.config.update(name, value)


def test_default_is_the_user_cache_folder(jax_cache_settings, monkeypatch, tmp_path):
  del jax_cache_settings
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  expected = os.path.join(tmp_path, 'modistill_jax', 'jax_cache')
  assert cli.compilation_cache_dir(None) == expected
  assert cli.compilation_cache_dir(str(tmp_path / 'run')) == expected
  monkeypatch.delenv('XDG_CACHE_HOME')
  assert cli.compilation_cache_dir(None) == os.path.expanduser('~/.cache/modistill_jax/jax_cache')


def test_a_gs_run_keeps_its_cache_beside_it(jax_cache_settings):
  del jax_cache_settings
  assert cli.compilation_cache_dir('gs://bucket/runs/a') == 'gs://bucket/runs/a/jax_cache'


def test_jax_settings_win_over_the_default(jax_cache_settings, tmp_path):
  del jax_cache_settings
  jax.config.update('jax_compilation_cache_dir', str(tmp_path))
  assert cli.compilation_cache_dir('gs://bucket/run') == str(tmp_path)
  jax.config.update('jax_enable_compilation_cache', False)
  assert cli.compilation_cache_dir('gs://bucket/run') is None


def test_the_flag_wins_over_jax_settings(jax_cache_settings, tmp_path):
  del jax_cache_settings
  jax.config.update('jax_compilation_cache_dir', str(tmp_path / 'jax'))
  with flagsaver.as_parsed(compilation_cache=str(tmp_path / 'flag')):
    assert cli.compilation_cache_dir(None) == str(tmp_path / 'flag')
  with flagsaver.as_parsed(compilation_cache='off'):
    assert cli.use_compilation_cache(None) is None
    assert not jax.config.values['jax_enable_compilation_cache']
  with flagsaver.as_parsed(compilation_cache=''):
    with pytest.raises(app.UsageError, match="--compilation_cache needs a folder or 'off'"):
      cli.compilation_cache_dir(None)


def test_every_program_is_kept_unless_jax_is_told_otherwise(
    jax_cache_settings, monkeypatch, tmp_path
):
  del jax_cache_settings
  monkeypatch.delenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', raising=False)
  monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path))
  path = cli.use_compilation_cache(None)
  assert path == jax.config.values['jax_compilation_cache_dir']
  assert jax.config.values['jax_enable_compilation_cache']
  assert jax.config.values['jax_persistent_cache_min_compile_time_secs'] == 0.0
  jax.config.update('jax_persistent_cache_min_compile_time_secs', 1.0)
  monkeypatch.setenv('JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS', '1.0')
  cli.use_compilation_cache(None)
  assert jax.config.values['jax_persistent_cache_min_compile_time_secs'] == 1.0


def train(workdir, env, data_dir) -> subprocess.CompletedProcess:
  """`train` of the demo's RGB stream at its tiny size (two steps), JAX logging every compile.

  One stream rather than `step1`'s two: what the cache keeps does not depend on
  the network, and the two runs cost half as much.
  """
  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'modistill_jax.train',
          '--config=configs/demo.py:step1_rgb',
          f'--workdir={workdir}',
          *override_flags({'data_dir': data_dir, 'num_train_steps': 2}),
      ],
      cwd=REPO_ROOT,
      env={**env, 'JAX_LOG_COMPILES': '1'},
      capture_output=True,
      text=True,
      timeout=900,
  )
  assert proc.returncode == 0, proc.stderr[-5000:]
  return proc


@pytest.mark.slow
def test_a_second_identical_train_compiles_nothing(tmp_path, synthetic_data_dir):
  """With the defaults (no JAX cache settings), the second run reads every program from the cache.

  The first run fills the user's cache folder (`XDG_CACHE_HOME` here).
  """
  env = cli_env('', device_count=1)  # what the cache keeps does not depend on the devices
  for name in ('JAX_COMPILATION_CACHE_DIR', 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'):
    env.pop(name)
  env['XDG_CACHE_HOME'] = str(tmp_path / 'xdg')
  first = train(tmp_path / 'first', env, synthetic_data_dir)
  # The first run compiles; a program it builds twice (the same evaluation step
  # for validation and for the test split) it reads back the second time.
  assert len(BUILT.findall(first.stderr)) > len(CACHE_HIT.findall(first.stderr))
  assert os.listdir(tmp_path / 'xdg' / 'modistill_jax' / 'jax_cache')

  second = train(tmp_path / 'second', env, synthetic_data_dir)
  built, read = BUILT.findall(second.stderr), CACHE_HIT.findall(second.stderr)
  assert built, 'JAX logged no compile: the count below would mean nothing'
  assert len(read) == len(built), sorted(set(built) - set(read))
  assert runs.read_json(runs.stage_dir(tmp_path / 'second', 'step1_rgb').results_file)


def test_jax_keeps_the_cache_on_gs(gcs_emulator, gcs_bucket, tmp_path):
  """A program compiled with the cache on `gs://` is written there; the next process reads it.

  Through `etils.epath` with gcsfs (`EPATH_USE_TF=false`, which `cli` sets), the
  client the run folders on `gs://` use.
  """
  cache = f'{gcs_bucket}/run/{cli.CACHE_FOLDER}'
  program = (
      'import jax, jax.numpy as jnp\n'
      'from modistill_jax import cli\n'
      f'cli.use_compilation_cache({gcs_bucket + "/run"!r})\n'
      'print(jax.jit(lambda x: jnp.sin(x) * 2)(jnp.arange(3.0)))\n'
  )
  env = {**cli_env(''), **gcs_emulator.env, 'JAX_LOG_COMPILES': '1'}
  for name in ('JAX_COMPILATION_CACHE_DIR', 'JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'):
    env.pop(name)
  procs = []
  for _ in range(2):
    procs.append(
        subprocess.run(
            [sys.executable, '-c', program],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
    )
    assert procs[-1].returncode == 0, procs[-1].stderr[-5000:]
  assert not CACHE_HIT.findall(procs[0].stderr)
  assert any(path.name.endswith('-cache') for path in epath.Path(cache).iterdir())
  assert CACHE_HIT.findall(procs[1].stderr)
