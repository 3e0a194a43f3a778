"""Every real `config:stage` builds, declares only base-config keys, and trains.

The NTU, NW-UCLA and UWA3DII records are not available here, so those configs
read in-memory splits with their real class counts (60, 10, 30) through a
patched `pipeline.load_source`; the demo config reads a tiny built
`synthetic_rgbd` through the real one. Everything else (mesh, model, stage
chaining, checkpoints, evaluation) is the trainer's own code path, shrunk by
test-only overrides (`conftest.SHRINK`).
"""

import ast
import importlib
import json
import math
import os
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import numpy as np
import pytest

from conftest import NUM_CLASSES, REPO_ROOT, cli_env, shrink
from modistill_jax import checkpointing
from modistill_jax import config_lib
from modistill_jax import metrics as metrics_lib
from modistill_jax import runs
from modistill_jax import stages
from modistill_jax import trainer

pytestmark = pytest.mark.usefixtures('fast_compile')

CONFIGS = ('ntu_cs', 'ntu_cv', 'nwucla', 'uwa3dii', 'demo', 'reference')
# The reference config is ntu_cs with switches that tests/test_fidelity.py checks
# one by one; training all its stages here would add minutes to the suite.
TRAINED_CONFIGS = tuple(c for c in CONFIGS if c != 'reference')
STAGES = stages.STAGE_NAMES + (stages.ALL,)
# `all` first, then the stages it does not include, in the same workdir: every
# stage of every config trains one step, and the later ones find step 1.
RUN_ORDER = (stages.ALL, 'step1_rgb', 'step1_depth', 'hoffman')


def get_config(name: str, stage: str):
  return importlib.import_module(f'configs.{name}').get_config(stage)


def flat_keys(config) -> set[str]:
  keys = set()
  for key, value in config.items():
    if hasattr(value, 'items'):
      keys |= {f'{key}.{k}' for k in flat_keys(value)}
    else:
      keys.add(key)
  return keys


def assigned_keys(path: str) -> set[str]:
  """The dotted `config.x.y` fields a config file assigns, read from its source."""
  keys = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Assign):
      for target in node.targets:
        parts = []
        while isinstance(target, ast.Attribute):
          parts.append(target.attr)
          target = target.value
        if isinstance(target, ast.Name) and target.id == 'config' and parts:
          keys.add('.'.join(reversed(parts)))
  return keys


@pytest.mark.parametrize('name', CONFIGS)
def test_config_sets_only_base_config_keys(name):
  """Every key a config file sets, for every stage, exists in `base_config()`.

  The CLI's locked config rejects misspelled overrides, but `get_config` itself
  starts from an unlocked base config, where a typo would silently add a field
  the trainer never reads.
  """
  base = flat_keys(config_lib.base_config())
  path = os.path.join(REPO_ROOT, 'configs', f'{name}.py')
  assigned = assigned_keys(path)
  assert assigned, f'{path} assigns no config field?'
  assert assigned <= base, f'{path} sets fields missing from base_config: {assigned - base}'
  for stage in STAGES:
    config = get_config(name, stage)
    assert flat_keys(config) == base, (stage, flat_keys(config) ^ base)
    assert config.stage == stage


@pytest.mark.parametrize('name', CONFIGS)
def test_unknown_stage_is_rejected(name):
  """`configs/<name>.py:step9` fails at config time with the list of stages."""
  with pytest.raises(ValueError, match=r"Unknown stage 'step9'.*step1_rgb"):
    get_config(name, 'step9')


def test_unknown_stage_from_the_command_line():
  """`--config=configs/demo.py:step9`, parsed as the CLI parses it, fails and names the stages."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=flag_values, lock_config=True)
  with pytest.raises(flags.IllegalFlagValueError, match=r"Unknown stage 'step9'.*'hoffman'"):
    flag_values(['prog', f'--config={REPO_ROOT}/configs/demo.py:step9'])


def test_misspelled_override_fails_on_the_cli(tmp_path, compilation_cache_dir):
  """`python -m modistill_jax.train ... --config.batch_sise=4` exits with an error.

  A typo must not silently train with the default batch size; the error names
  the bad key, and nothing is written to the workdir.
  """
  workdir = tmp_path / 'w'
  proc = subprocess.run(
      [sys.executable, '-m', 'modistill_jax.train', '--config=configs/demo.py:step1',
       f'--workdir={workdir}', '--config.batch_sise=4'],
      cwd=REPO_ROOT, env=cli_env(compilation_cache_dir), capture_output=True, text=True,
      timeout=300, check=False)
  assert proc.returncode != 0
  assert 'batch_sise' in proc.stderr
  assert not workdir.exists()


def check_stage_outputs(workdir: str, stage_name: str, config, num_classes: int):
  """A finished one-step stage: finite logged loss, checkpoints, results, class count."""
  stage = stages.get_stage(stage_name)
  out_dir = runs.stage_dir(workdir, stage_name)
  train_records = [r for r in metrics_lib.read_jsonl(out_dir.metrics_file)
                   if r['split'] == 'train']
  assert [r['step'] for r in train_records] == [1]
  assert math.isfinite(train_records[0]['loss'])
  results = runs.read_json(out_dir.results_file)
  assert results['best_step'] == 1 and results['total_steps'] == 1
  has_validation = config.dataset in ('ntu_rgbd', 'synthetic_rgbd')
  assert (results['validation_accuracy'] is not None) == has_validation
  expected = set(stage.streams) | {'fused'}
  assert set(results['test']['accuracy']) == expected
  assert results['test']['num_examples'] == config.eval_batch_size
  assert not results['test']['complete']  # max_eval_batches=1 says so
  state = checkpointing.read_best_state(out_dir.best_dir)
  assert set(state['params']) == set(stage.trainable)
  assert set((state.get('frozen') or {}).get('params') or {}) == set(stage.frozen)
  for stream in stage.streams:
    kernel = checkpointing.stream_variables(state, stream)['params']['logits']['kernel']
    assert kernel.shape[-1] == num_classes
    assert np.all(np.isfinite(kernel))


@pytest.mark.parametrize('name', TRAINED_CONFIGS)
def test_every_stage_trains_one_step(name, tmp_path, request, synthetic_data_dir):
  """Each stage of each real config runs on the trainer path and writes its outputs.

  `all` runs steps 1-4 in order (each loading the previous ones), then
  step1_rgb, step1_depth and hoffman in the same workdir. The demo config reads
  the built tiny dataset with the real `load_source`.
  """
  if name != 'demo':
    request.getfixturevalue('fake_sources')
  workdir = str(tmp_path)
  ran = []
  for stage_arg in RUN_ORDER:
    config = shrink(get_config(name, stage_arg))
    if name == 'demo':
      config.data_dir = synthetic_data_dir
    results = trainer.train_and_evaluate(config, workdir, config_file=f'configs/{name}.py')
    assert tuple(results) == stages.expand(stage_arg)
    for stage_name in results:
      check_stage_outputs(workdir, stage_name, config, NUM_CLASSES[config.dataset])
    ran += list(results)
  assert sorted(ran) == sorted(stages.STAGE_NAMES)
