"""The trainer's guard rails: each misuse fails early with a message that says the fix.

All runs use the demo config on the tiny built `synthetic_rgbd`, shrunk by
`conftest.tiny_config`, in-process on 4 fake CPU devices.
"""

import dataclasses
import os

import jax
import numpy as np
import pytest

from conftest import make_split, read_latest_state, tiny_config
from modistill_jax import initialization
from modistill_jax import iterators
from modistill_jax import optim
from modistill_jax import runs
from modistill_jax import sharding
from modistill_jax import stages
from modistill_jax import trainer
from modistill_jax.config_lib import TINY
from modistill_jax.data import pipeline
from modistill_jax.models import stage_network

pytestmark = pytest.mark.usefixtures('fast_compile')


def demo_config(stage: str, data_dir: str, **overrides):
  config = tiny_config('demo', stage, **overrides)
  config.data_dir = data_dir
  return config


@pytest.mark.parametrize('field', ['batch_size', 'eval_batch_size'])
def test_batch_not_divisible_by_devices(field, tmp_path, synthetic_data_dir):
  """A global batch of 6 clips cannot split over 4 devices; the error gives both numbers."""
  config = demo_config('step1', synthetic_data_dir, **{field: 6})
  with pytest.raises(
      ValueError, match=rf'config\.{field}=6 clips must divide over 4 devices.*' r'multiple of 4'
  ):
    trainer.run_stage(config, str(tmp_path), 'step1')
  assert not os.path.exists(tmp_path / 'step1' / 'checkpoints')


def test_missing_previous_stage(tmp_path, synthetic_data_dir):
  """Step 2 without step 1 names the checkpoint path it expected and the command to make it."""
  workdir = str(tmp_path)
  config = demo_config('step2', synthetic_data_dir)
  with pytest.raises(runs.StageNotFinishedError) as error:
    trainer.run_stage(config, workdir, 'step2', config_file='configs/demo.py')
  message = str(error.value)
  assert str(runs.stage_dir(workdir, 'step1').path) in message
  assert str(runs.stage_dir(workdir, 'step1_depth').path) in message
  assert (
      f'python -m modistill_jax.train --config=configs/demo.py:step1 --workdir={workdir}' in message
  )
  assert not runs.stage_dir(workdir, 'step2').path.exists()


def test_divergence_with_a_finite_loss_stops_and_keeps_last_good_checkpoint(
    tmp_path, synthetic_data_dir
):
  """A learning rate of 1e6 keeps the loss finite while gradients and weights turn NaN.

  The stage must stop with an error naming the step and the quantity, keep the
  last good checkpoint, and leave no best state and no results for a later
  stage to start from.
  """
  workdir = str(tmp_path)
  config = demo_config(
      'step1_rgb',
      synthetic_data_dir,
      num_train_steps=6,
      checkpoint_every_steps=1,
      **{'optimizer.learning_rate': 1e6},
  )
  with pytest.raises(
      FloatingPointError,
      match=r'step1_rgb diverged: (grad_norm|param_norm|'
      r'batch_stats_norm|loss) = (nan|inf) at step (\d).*',
  ) as error:
    trainer.run_stage(config, workdir, 'step1_rgb')
  bad_step = int(error.value.args[0].split(' at step ')[1].split(';')[0])
  directory = runs.stage_dir(workdir, 'step1_rgb')
  if bad_step > 1:
    saved = read_latest_state(str(directory.path))
    assert int(saved['step']) == bad_step - 1
    leaves = jax.tree.leaves(saved['params'])
    assert leaves and all(np.all(np.isfinite(x)) for x in leaves)
  assert not directory.finished()
  assert not any(p.name.isdigit() for p in directory.best_dir.iterdir())


class _UndecodableDepth:
  """A split whose depth frames are not images: reading one raises."""

  def __init__(self, records):
    self._records = records

  def __len__(self):
    return len(self._records)

  def __getitem__(self, index):
    record = self._records[index]
    return {**record, 'depth': [b'not an image'] * len(record['depth'])}


def test_a_stage_decodes_only_the_modalities_it_reads(tmp_path, synthetic_data_dir, monkeypatch):
  """step1_rgb trains and tests without touching depth; step1_depth trips over it."""
  real_load_source = pipeline.load_source

  def load_source(*args, **kwargs):
    source = real_load_source(*args, **kwargs)
    return source and dataclasses.replace(source, records=_UndecodableDepth(source.records))

  monkeypatch.setattr(pipeline, 'load_source', load_source)
  results = trainer.run_stage(
      demo_config('step1_rgb', synthetic_data_dir), str(tmp_path), 'step1_rgb'
  )
  assert results['test']['num_examples'] == TINY['eval_batch_size']  # one batch (tiny)
  with pytest.raises(ValueError, match='Cannot decode a 12-byte frame'):
    trainer.run_stage(demo_config('step1_depth', synthetic_data_dir), str(tmp_path), 'step1_depth')


def tiny_stage(stage_name: str):
  """The tiny demo config's stage, network, mesh, optimizer and state maker, as the trainer's."""
  config = tiny_config('demo', stage_name)
  stage = stages.get_stage(stage_name)
  model = stage_network(stage, config.model, num_classes=3)
  mesh = sharding.make_mesh()
  tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps)
  return config, stage, model, mesh, tx, schedule, trainer.make_state_fn(stage, tx, mesh)


def test_a_train_step_makes_no_implicit_transfer():
  """The loop's step (`guarded_step`) runs with state and batch on the devices, copying nothing.

  The same step given the batch as host arrays is refused: the guard is on, so
  the passing step above it did no implicit host-device transfer.
  """
  config, stage, model, mesh, tx, schedule, make_state = tiny_stage('step1_rgb')
  state = make_state(initialization.init_model_variables(model, config))
  iterator = iterators.train_iterator(config, make_split('train', 3), stage.inputs)
  host_batch = next(iterator)
  iterator.close()
  train_fn = trainer.make_train_fn(model, config, tx, schedule, mesh)
  state, metrics = trainer.guarded_step(train_fn, state, sharding.to_global(host_batch, mesh))
  assert int(state.step) == 1 and np.isfinite(float(metrics['loss']))
  with pytest.raises(Exception, match='Disallowed host-to-device transfer'):
    trainer.guarded_step(train_fn, state, host_batch)


def test_parameter_overview_counts_each_stream_trained_or_frozen():
  """Step 3's table: the student's params trained, the teacher's frozen, each count exact."""
  config, _, model, mesh, _, _, make_state = tiny_stage('step3')
  state = trainer.abstract_state(model, config, make_state, mesh)
  rows = [line.split('  ') for line in trainer.parameter_overview(state).splitlines()]
  rows = [[cell.strip() for cell in row if cell.strip()] for row in rows]
  assert rows[0] == ['stream', 'collection', 'variables', 'trained']

  def count(tree) -> str:
    return f'{sum(x.size for x in jax.tree.leaves(tree)):,}'

  assert rows[1:] == [
      ['hall', 'params', count(state.params['hall']), 'yes'],
      ['hall', 'batch_stats', count(state.batch_stats['hall']), 'no (running)'],
      ['depth', 'params', count(state.frozen['params']['depth']), 'no (frozen)'],
      ['depth', 'batch_stats', count(state.frozen['batch_stats']['depth']), 'no (frozen)'],
  ]
