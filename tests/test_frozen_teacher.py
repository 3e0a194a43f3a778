"""Step 3's teacher is frozen: a train step leaves it bit-identical and gives it no optimizer state.

The step-3 state is built exactly as the trainer builds it (`init_model_variables`,
`make_state_fn`, `make_train_fn`, on the 4-device mesh) for the demo config
shrunk by `conftest.tiny_config`, and one jitted (donating) step runs on a batch of
conftest's tiny training split.
"""

import jax
import numpy as np
import optax
import pytest

from conftest import make_split, tiny_config
from modistill_jax import initialization
from modistill_jax import optim
from modistill_jax import sharding
from modistill_jax import stages
from modistill_jax import trainer
from modistill_jax.data import pipeline
from modistill_jax.models import stage_network

pytestmark = pytest.mark.usefixtures('fast_compile')


def copy_tree(tree):
  """Host copies (the step donates its input state, so no views of device buffers)."""
  return jax.tree.map(lambda x: np.array(x, copy=True), tree)


def dict_keys(path) -> set[str]:
  return {k.key for k in path if isinstance(k, jax.tree_util.DictKey)}


def test_step3_update_leaves_teacher_untouched():
  """Teacher params and BatchNorm statistics are bit-identical after a step-3 update.

  The teacher ('depth') enters the step-3 loss through `TrainState.frozen`: it
  must not be differentiated, updated, or given Adam moments, and its
  BatchNorm must not update its statistics (it runs in inference mode). The
  student ('hall') must change, params and BatchNorm statistics both, so the
  step did train; otherwise an unchanged teacher would prove nothing.
  """
  config = tiny_config('demo', 'step3')
  stage = stages.get_stage('step3')
  assert stage.frozen == ('depth',) and stage.trainable == ('hall',)
  model = stage_network(stage, config.model, num_classes=3)
  variables = copy_tree(initialization.init_model_variables(model, config))
  mesh = sharding.make_mesh()
  tx, schedule = optim.make_optimizer(config.optimizer, config.num_train_steps)
  state = trainer.make_state_fn(stage, tx, mesh)(variables)
  iterator = pipeline.train_iterator(
      make_split('train', 3),
      global_batch_size=config.batch_size,
      num_frames=config.input.num_frames,
      image_size=(config.input.image_size,) * 2,
      seed=config.seed,
      process_index=0,
      process_count=1,
  )
  batch = sharding.to_global(next(iterator), mesh)
  iterator.close()

  train_fn = trainer.make_train_fn(model, config, tx, schedule, mesh)
  new_state, metrics = train_fn(state, batch)
  new_state = jax.device_get(new_state)
  assert np.isfinite(float(metrics['loss']))

  # The teacher: exactly its initial variables, leaf by leaf, bit for bit.
  teacher_before = {c: {'depth': variables[c]['depth']} for c in ('params', 'batch_stats')}
  before = jax.tree_util.tree_flatten_with_path(teacher_before)[0]
  after = jax.tree_util.tree_flatten_with_path(new_state.frozen)[0]
  assert [p for p, _ in after] == [p for p, _ in before]
  assert any(p[0].key == 'batch_stats' for p, _ in before)  # BatchNorm statistics are compared
  for (path, x), (_, y) in zip(before, after):
    assert x.dtype == y.dtype and np.array_equal(x, y), jax.tree_util.keystr(path)

  # The optimizer knows only the student: no teacher key anywhere in its
  # state, and Adam's moments have exactly the student's param tree.
  assert set(new_state.params) == set(new_state.batch_stats) == {'hall'}
  for path, _ in jax.tree_util.tree_flatten_with_path(new_state.opt_state)[0]:
    assert 'depth' not in dict_keys(path), jax.tree_util.keystr(path)
  adam = [
      s
      for s in jax.tree.leaves(
          new_state.opt_state, is_leaf=lambda x: isinstance(x, optax.ScaleByAdamState)
      )
      if isinstance(s, optax.ScaleByAdamState)
  ]
  assert len(adam) == 1
  for moment in (adam[0].mu, adam[0].nu):
    assert jax.tree.structure(moment) == jax.tree.structure(new_state.params)
    assert jax.tree.map(np.shape, moment) == jax.tree.map(np.shape, new_state.params)
  param_like = [x for x in jax.tree.leaves(new_state.opt_state) if np.ndim(x) > 0]
  assert len(param_like) == 2 * len(jax.tree.leaves(new_state.params))

  # The student trained: every param moved, and its BatchNorm statistics too.
  for path, x in jax.tree_util.tree_flatten_with_path(new_state.params['hall'])[0]:
    y = variables['params']['hall']
    for k in path:
      y = y[k.key]
    assert not np.array_equal(x, y), f'hall{jax.tree_util.keystr(path)} did not change'
  assert any(
      not np.array_equal(x, y)
      for x, y in zip(
          jax.tree.leaves(new_state.batch_stats['hall']),
          jax.tree.leaves(variables['batch_stats']['hall']),
      )
  )
