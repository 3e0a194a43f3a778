"""Every real `config:stage` builds, declares only base-config keys, and trains.

The NTU, NW-UCLA and UWA3DII records are not available here, so those configs
read in-memory splits with their real class counts (60, 10, 30) through a
patched `pipeline.load_source`; the demo config reads a tiny built
`synthetic_rgbd` through the real one. Everything else (mesh, model, stage
chaining, checkpoints, evaluation) is the trainer's own code path, shrunk by
the configs' own `:<stage>,tiny` switch (`config_lib.TINY`). The demo config's
`all` and `hoffman` are checked on the shared tiny demo run (`tiny_run`).

The protocol configs differ from one another only in dataset, protocol and
builder config (`config_lib.finalize` sets the stage the same way for all), and
the stages differ from one another in the trainer's code, not in the config, so
the product is representative rather than exhaustive (`TRAINED_STAGES`): every
stage trains once and every config trains once, every stage with a validation
split (the shared demo run's steps 1-4 and `hoffman`, `ntu_cs`'s `step1_rgb`,
`ntu_cv`'s `step1_depth`), and without one (nwucla, uwa3dii) the two ways a
stage keeps its final state: the joint step 1, which keeps each stream's own
(`Validation.best_state` with two selection groups), and a stage that starts
from such a step 1 (`hoffman`), besides a one-stream stage (`step1_rgb`).
"""

import ast
import importlib
import math
import os
import subprocess
import sys

from absl import flags
import numpy as np
import pytest

from conftest import NUM_CLASSES, REPO_ROOT, SPLIT_SIZES, cli_env, parse_config_flag, tiny_config
import tiny_run
from modistill_jax import checkpointing
from modistill_jax import config_lib
from modistill_jax import metrics as metrics_lib
from modistill_jax import runs
from modistill_jax import stages
from modistill_jax import trainer
from modistill_jax.data import protocols

pytestmark = pytest.mark.usefixtures('fast_compile')

CONFIGS = ('ntu_cs', 'ntu_cv', 'nwucla', 'uwa3dii', 'demo', 'reference')
# The reference config is ntu_cs with switches that tests/test_fidelity.py checks
# one by one; training all its stages here would add minutes to the suite.
TRAINED_CONFIGS = tuple(c for c in CONFIGS if c != 'reference')
STAGES = stages.STAGE_NAMES + (stages.ALL,)
# The stage arguments each config trains, in order, in one workdir (`hoffman` finds the
# `step1` before it). With the shared demo run's (`DEMO_RUN_STAGES`): every stage and every
# config at least once, and without a validation split the joint step 1, a stage started from
# it and a one-stream stage (`test_the_trained_stages_cover_every_stage_and_config`).
TRAINED_STAGES = {
    'ntu_cs': ('step1_rgb',),
    'ntu_cv': ('step1_depth',),
    'nwucla': ('step1', 'hoffman'),
    'uwa3dii': ('step1_rgb',),
}
# The demo config's stages are the shared tiny run's (`tiny_run`): trained once per pytest
# run, not once more here.
DEMO_RUN_STAGES = stages.ALL_STAGES + ('hoffman',)


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
  with pytest.raises(flags.IllegalFlagValueError, match=r"Unknown stage 'step9'.*'hoffman'"):
    parse_config_flag(f'{REPO_ROOT}/configs/demo.py:step9')


def test_tiny_switch_on_the_command_line():
  """`:step1,tiny` is the stage's config with exactly `config_lib.TINY` changed.

  The demo config reads its 32x32 `tiny` build too; other configs keep their data.
  """
  demo = parse_config_flag(f'{REPO_ROOT}/configs/demo.py:step1,tiny')
  assert config_lib.flatten(demo) == {
      **config_lib.flatten(get_config('demo', 'step1')),
      **config_lib.TINY,
      'builder_config': 'tiny',
  }
  ntu = parse_config_flag(f'{REPO_ROOT}/configs/ntu_cs.py:all,tiny')
  assert config_lib.flatten(ntu) == {
      **config_lib.flatten(get_config('ntu_cs', 'all')),
      **config_lib.TINY,
  }
  assert ntu.stage == 'all' and ntu.builder_config == 'res224'


def test_unknown_config_option_is_rejected():
  with pytest.raises(ValueError, match=r"Unknown config option\(s\) \['runlocal'\].*'tiny'"):
    get_config('ntu_cs', 'step1,runlocal')


def test_base_config_holds_the_reference_settings():
  """The authors' settings (shared/reference-notes.md; paper eq. 3-5), pinned in one place.

  Adam at 1e-3 (TF's default betas and epsilon), 5 clips of 5 frames per step,
  40 epochs, T = 10, lambda = alpha = 0.5, L_hall on block 4 weighted 0.01 and
  balanced at the reference's 5 clips, BatchNorm decay 0.997, ties to the later
  epoch, no weight decay in effect.
  """
  expected = {
      'optimizer.learning_rate': 1e-3,
      'optimizer.schedule': 'constant',
      'optimizer.warmup_steps': 0,
      'optimizer.b1': 0.9,
      'optimizer.b2': 0.999,
      'optimizer.eps': 1e-8,
      'optimizer.weight_decay': 0.0,
      'optimizer.grad_clip_norm': 0.0,
      'batch_size': 5,
      'num_epochs': 40,
      'eval_every_epochs': 1,
      'selection_ties': 'later',
      'input.num_frames': 5,
      'input.image_size': 224,
      'input.uniform_prob': 0.5,
      'input.flip': True,
      'input.rgb_mean': (123.68, 116.78, 103.94),
      'input.rgb_std': (1.0, 1.0, 1.0),
      'loss.kind': 'eq5',
      'loss.temperature': 10.0,
      'loss.lam': 0.5,
      'loss.alpha': 0.5,
      'loss.hall_endpoint': 'block4',
      'loss.hall_weight': 0.01,
      'loss.hall_reference_clips': 5,
      'model.units_per_block': (3, 4, 6, 3),
      'model.width': 64,
      'model.bn_momentum': 0.997,
      'model.bn_epsilon': 1e-5,
      'privileged': 'depth',
      'protocol': 'cross_subject',
  }
  flat = config_lib.flatten(get_config('ntu_cs', 'step3'))
  assert {key: flat[key] for key in expected} == expected


@pytest.mark.slow
def test_misspelled_override_fails_on_the_cli(tmp_path, compilation_cache_dir):
  """`python -m modistill_jax.train ... --config.batch_sise=4` exits with an error.

  A typo must not silently train with the default batch size; the error names
  the bad key, and nothing is written to the workdir.
  """
  workdir = tmp_path / 'w'
  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'modistill_jax.train',
          '--config=configs/demo.py:step1',
          f'--workdir={workdir}',
          '--config.batch_sise=4',
      ],
      cwd=REPO_ROOT,
      env=cli_env(compilation_cache_dir),
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert proc.returncode != 0
  assert 'batch_sise' in proc.stderr
  assert not workdir.exists()


def check_stage_outputs(workdir: str, stage_name: str, config, num_classes: int):
  """A finished stage of `config.num_train_steps` steps, each logged with a finite loss.

  Also its checkpoints, results and class count; evaluated on one batch
  (`max_eval_batches=1`, the tiny switch's) or on the whole tiny test split.
  """
  stage = stages.get_stage(stage_name)
  out_dir = runs.stage_dir(workdir, stage_name)
  steps = config.num_train_steps
  train_records = [r for r in metrics_lib.read_jsonl(out_dir.metrics_file) if r['split'] == 'train']
  assert [r['step'] for r in train_records] == list(range(1, steps + 1))
  assert all(math.isfinite(r['loss']) for r in train_records)
  results = runs.read_json(out_dir.results_file)
  assert results['best_step'] == steps and results['total_steps'] == steps
  has_validation = config.dataset in ('ntu_rgbd', 'synthetic_rgbd')
  assert (results['validation_accuracy'] is not None) == has_validation
  expected = set(stage.streams) | {'fused'}
  assert set(results['test']['accuracy']) == expected
  one_batch = config.max_eval_batches == 1
  assert results['test']['num_examples'] == (
      config.eval_batch_size if one_batch else SPLIT_SIZES['test']
  )
  assert results['test']['complete'] == (not one_batch)
  state = checkpointing.read_best_state(out_dir.best_dir)
  assert set(state['params']) == set(stage.trainable)
  assert set((state.get('frozen') or {}).get('params') or {}) == set(stage.frozen)
  for stream in stage.streams:
    kernel = checkpointing.stream_variables(state, stream)['params']['logits']['kernel']
    assert kernel.shape[-1] == num_classes
    assert np.all(np.isfinite(kernel))


def trained_stages() -> dict[str, tuple[str, ...]]:
  """The stages each config trains here or in the shared demo run, expanded (`all`: steps 1-4)."""
  trained = {'demo': DEMO_RUN_STAGES, **TRAINED_STAGES}
  return {name: sum((stages.expand(a) for a in args), ()) for name, args in trained.items()}


def test_the_trained_stages_cover_every_stage_and_config():
  """Every config trains; every stage trains with a validation split; without one, the joint
  step 1 (two selection groups), a stage started from it and a one-stream stage train."""
  assert sorted(trained_stages()) == sorted(TRAINED_CONFIGS)
  trained = {True: set(), False: set()}
  for name, stage_names in trained_stages().items():
    assert stage_names, name
    config = get_config(name, 'all')
    validated = bool(
        protocols.get_protocol(config.dataset, config.protocol).atomic_splits('validation')
    )
    trained[validated].update(stage_names)
  assert sorted(trained[True]) == sorted(stages.STAGE_NAMES)
  assert {'step1', 'hoffman', 'step1_rgb'} <= trained[False]
  assert all('step1' in source.from_stages for source in stages.get_stage('hoffman').init)


@pytest.mark.parametrize(
    'name',
    [  # several stages in a row are `slow` (docs/testing.md)
        pytest.param(n, marks=pytest.mark.slow) if len(TRAINED_STAGES[n]) > 1 else n
        for n in sorted(TRAINED_STAGES)
    ],
)
def test_every_stage_trains_one_step(name, tmp_path, fake_sources):
  """The config's `TRAINED_STAGES` run on the trainer path and write their outputs."""
  del fake_sources
  workdir = str(tmp_path)
  for stage_arg in TRAINED_STAGES[name]:
    config = tiny_config(name, stage_arg)
    results = trainer.train_and_evaluate(config, workdir, config_file=f'configs/{name}.py')
    assert tuple(results) == stages.expand(stage_arg)
    for stage_name in results:
      check_stage_outputs(workdir, stage_name, config, NUM_CLASSES[config.dataset])


def test_demo_config_stages_of_the_shared_run(tiny_trained_workdir, synthetic_data_dir):
  """The demo config's `all` (steps 1-4 in order) and `hoffman`, in the shared tiny run."""
  config = tiny_run.run_config(synthetic_data_dir)
  for stage_name in DEMO_RUN_STAGES:
    check_stage_outputs(tiny_trained_workdir, stage_name, config, NUM_CLASSES[config.dataset])


def test_printed_train_command_keeps_the_config_options():
  """A run started with `:<stage>,tiny` prints commands that are tiny too."""
  assert runs.train_command('configs/demo.py:tiny', 'step2', 'w', ('--config.seed=1',)) == (
      'python -m modistill_jax.train --config=configs/demo.py:step2,tiny --workdir=w '
      '--config.seed=1'
  )
  assert runs.train_command('configs/demo.py', 'step2', 'w') == (
      'python -m modistill_jax.train --config=configs/demo.py:step2 --workdir=w'
  )
