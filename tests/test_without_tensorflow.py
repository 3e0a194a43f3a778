"""Training, evaluation and prediction need no TensorFlow; the environment has exactly one.

TensorFlow is needed to export (jax2tf) and to read TF-slim checkpoints
(`pretrained --format=slim`); TFDS writes and reads (`tfds.data_source`, through
Grain) ArrayRecord without it. The subprocesses here make `import tensorflow`
(and every submodule) fail the way it fails where TensorFlow is not installed,
then import `modistill_jax.train`, `evaluate` and `predict`, train the demo
config's RGB stream (`step1_rgb`) one tiny step on conftest's dataset (the real
`tfds.data_source` reading path) and evaluate it.

TensorFlow is hidden by wrapping every import finder so that none finds a
`tensorflow` module: `import tensorflow` then fails and
`importlib.util.find_spec('tensorflow')` is None, exactly as where it is not
installed (etils checks the latter before using TensorFlow's file system).
`sys.modules['tensorflow'] = None` would not do: etils and TFDS read
"'tensorflow' in sys.modules" as "TensorFlow is already imported" and then use
it, which breaks `import tensorflow_datasets` in a way no real environment does.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, cli_env, override_flags
from modistill_jax.config_lib import TINY

TIMEOUT_S = 420

# Runs `python -m <module> <args>` with TensorFlow hidden, after importing `imports`.
_WITHOUT_TENSORFLOW = """
import runpy
import sys


class HideTensorFlow:
  def __init__(self, finder):
    self._finder = finder

  def find_spec(self, name, path=None, target=None):
    if name.partition('.')[0] == 'tensorflow':
      return None
    return self._finder.find_spec(name, path, target)

  def __getattr__(self, name):
    return getattr(self._finder, name)


sys.meta_path[:] = [HideTensorFlow(finder) for finder in sys.meta_path]
module, imports = sys.argv[1], sys.argv[2]
for name in filter(None, imports.split(',')):
  __import__(name)
sys.argv = [module] + sys.argv[3:]
runpy.run_module(module, run_name='__main__', alter_sys=True)
"""


def run_without_tensorflow(
    module: str, imports: tuple[str, ...], args: list[str], env: dict[str, str]
) -> str:
  proc = subprocess.run(
      [sys.executable, '-c', _WITHOUT_TENSORFLOW, module, ','.join(imports), *args],
      cwd=REPO_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=TIMEOUT_S,
      check=False,
  )
  assert proc.returncode == 0, f'{module} failed ({proc.returncode}):\n{proc.stderr[-5000:]}'
  return proc.stdout


@pytest.mark.slow
def test_blocked_tensorflow_fails_to_import():
  """The hiding works: the same script around a bare `import tensorflow` fails."""
  proc = subprocess.run(
      [sys.executable, '-c', _WITHOUT_TENSORFLOW, 'tensorflow', 'tensorflow'],
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=TIMEOUT_S,
      check=False,
  )
  assert proc.returncode != 0
  assert "ModuleNotFoundError: No module named 'tensorflow'" in proc.stderr


@pytest.mark.slow
def test_train_and_evaluate_without_tensorflow(tmp_path, synthetic_data_dir, compilation_cache_dir):
  env = cli_env(compilation_cache_dir)
  workdir = str(tmp_path / 'run')
  flags = [
      '--config=configs/demo.py:step1_rgb',
      f'--workdir={workdir}',
      *override_flags({'data_dir': synthetic_data_dir}),
  ]
  run_without_tensorflow(
      'modistill_jax.train', ('modistill_jax.evaluate', 'modistill_jax.predict'), flags, env
  )
  with open(os.path.join(workdir, 'step1_rgb', 'metrics.jsonl')) as f:
    records = [json.loads(line) for line in f]
  assert [r['step'] for r in records if r['split'] == 'train'] == [1]
  output = run_without_tensorflow('modistill_jax.evaluate', (), flags, env)
  line = next(t for t in output.splitlines() if t.startswith('step1_rgb '))
  result = json.loads(line.split(': ', 1)[1])
  assert result['num_examples'] == TINY['eval_batch_size']  # one batch (tiny)
  assert set(result['accuracy']) == {'rgb', 'fused'}


def test_environment_has_one_tensorflow_distribution():
  """Only one installed distribution may own the `tensorflow/` package folder.

  `tensorflow` and `tensorflow-cpu` (or `tf-nightly`) install the same files;
  with two, uninstalling either breaks the other.
  """
  owners = sorted(
      {
          dist.metadata['Name']
          for dist in importlib.metadata.distributions()
          if any(f.parts[0] == 'tensorflow' for f in dist.files or ())
      }
  )
  assert owners == ['tensorflow'], (
      f'{owners} own tensorflow/; a venv made before the switch from tensorflow-cpu keeps it: '
      '`make clean` and install again'
  )
