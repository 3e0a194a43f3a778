"""Data parallelism does not change the mathematics of a training step.

The trainer's own jitted functions (`trainer.make_state_fn`,
`trainer.make_train_fn`, `evaluators.make_eval_fn`) run over a one-axis mesh with a
replicated state and a batch sharded along its first axis. On 4 fake CPU
devices (one clip each) a step must give the 1-device result for the same
global batch: the loss is a mean over the global batch and, under jit,
BatchNorm statistics are too (a per-device BatchNorm would see one clip and
differ); evaluation must predict the same classes.
"""

import jax
from jax.sharding import AxisType, Mesh
import numpy as np
import pytest

from conftest import assert_trees_close, make_split, tiny_config
from modistill_jax import evaluators
from modistill_jax import initialization
from modistill_jax import optim
from modistill_jax import sharding
from modistill_jax import stages
from modistill_jax import trainer
from modistill_jax.data import pipeline
from modistill_jax.models import stage_network

pytestmark = pytest.mark.usefixtures('fast_compile')

NUM_STEPS = 1
# A well-conditioned step, so that 1e-5 (float32) compares the mathematics and
# not the rounding of one summation order against another:
# * Adam's first update is `lr * g / (|g| + eps)`, i.e. `lr * sign(g)` when
#   `|g| >> eps`: with the default eps=1e-8 a gradient that is 0 in exact
#   arithmetic (a channel no clip activates) but +-1e-12 after one reduction
#   order moves a weight by a whole `lr`, in either direction. eps=1e-3 keeps
#   the update proportional to such gradients, so comparing params to 1e-5
#   compares the gradients themselves.
# * Inputs divided by the pixel std (the configs' unit std leaves them at
#   +-128) and 64x64 frames: at 16x16 or 32x32 the deepest BatchNorm layers
#   normalise over a few values per channel (4 clips x 2 frames x 1-2 pixels),
#   the gradient norm is in the hundreds at initialisation and float32 rounding
#   of the loss, statistics and updates differs by up to ~1e-4 with the device
#   count; at 64x64 it stays below ~4e-6.
WELL_CONDITIONED = {
    'optimizer.eps': 1e-3,
    'input.image_size': 64,
    'input.rgb_std': (58.0, 57.0, 57.0),
    'input.depth_std': (58.0, 57.0, 57.0),
}


def run_steps(mesh: Mesh, variables, batches, eval_batch, *, stage, model, config, tx, schedule):
  """`NUM_STEPS` steps of the trainer's jitted step on `mesh`, then its eval step."""
  state = trainer.make_state_fn(stage, tx, mesh)(variables)
  train_fn = trainer.make_train_fn(model, config, tx, schedule, mesh)
  losses, grad_norms = [], []
  for batch in batches:
    state, metrics = train_fn(state, sharding.to_global(batch, mesh))
    losses.append(float(metrics['loss']))
    grad_norms.append(float(metrics['grad_norm']))
  eval_fn = evaluators.make_eval_fn(model, config, mesh)
  predictions = sharding.fetch(
      eval_fn(state, sharding.to_global(eval_batch, mesh), jax.random.key(0))
  )
  return jax.device_get(state), losses, grad_norms, predictions


# `slow`: two compiles of step 2 and a 64x64 step, half a minute of `make test-fast`'s three for a
# check of the data-parallel sharding rather than of the model or its losses.
@pytest.mark.slow
def test_four_devices_match_one_device():
  """Loss, gradient norm, BatchNorm statistics, params and Adam moments agree to 1e-5.

  Step 2 is used: two streams with cross-stream connections and BatchNorm in
  both, the fused loss, from the same initial variables and global batches.
  Per-device BatchNorm or a missing gradient reduction would differ by O(1) in
  the statistics and by O(lr) = 1e-3 in the params.
  """
  assert jax.device_count() >= 4, 'run with XLA_FLAGS=--xla_force_host_platform_device_count=4'
  config = tiny_config('demo', 'step2', **WELL_CONDITIONED)
  size = config.input.image_size
  stage = stages.get_stage('step2')
  model = stage_network(stage, config.model, num_classes=3)
  tx, schedule = optim.make_optimizer(config.optimizer, NUM_STEPS)
  variables = jax.device_get(initialization.init_model_variables(model, config))
  iterator = pipeline.train_iterator(
      make_split('train', 3),
      global_batch_size=config.batch_size,
      num_frames=config.input.num_frames,
      image_size=(size, size),
      seed=0,
      process_index=0,
      process_count=1,
  )
  batches = [next(iterator) for _ in range(NUM_STEPS)]
  iterator.close()
  eval_batch = next(
      iter(
          pipeline.eval_iterator(
              make_split('test', 3),
              global_batch_size=config.eval_batch_size,
              num_frames=config.input.num_frames,
              image_size=(size, size),
          )
      )
  )
  kwargs = dict(stage=stage, model=model, config=config, tx=tx, schedule=schedule)
  one = Mesh(np.array(jax.devices()[:1]), (sharding.DATA_AXIS,), axis_types=(AxisType.Auto,))
  four = Mesh(np.array(jax.devices()[:4]), (sharding.DATA_AXIS,), axis_types=(AxisType.Auto,))
  state_1, losses_1, grad_norms_1, preds_1 = run_steps(
      one, variables, batches, eval_batch, **kwargs
  )
  state_4, losses_4, grad_norms_4, preds_4 = run_steps(
      four, variables, batches, eval_batch, **kwargs
  )

  np.testing.assert_allclose(losses_4, losses_1, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(grad_norms_4, grad_norms_1, rtol=1e-5)
  assert_trees_close(state_4.batch_stats, state_1.batch_stats, rtol=1e-5, atol=1e-5)
  assert_trees_close(state_4.params, state_1.params, rtol=1e-5, atol=1e-5)
  assert_trees_close(state_4.opt_state, state_1.opt_state, rtol=1e-5, atol=1e-5)
  assert_trees_close(preds_4, preds_1)
  np.testing.assert_array_equal(preds_1['label'], eval_batch['label'])
  # The steps did something: params moved and BatchNorm statistics were updated.
  moved = jax.tree.map(
      lambda a, b: not np.array_equal(a, b),
      state_1.params,
      {s: variables['params'][s] for s in stage.trainable},
  )
  assert all(jax.tree.leaves(moved['rgb']['logits']))
  stats_before = variables['batch_stats']['depth']
  assert any(
      not np.array_equal(a, b)
      for a, b in zip(jax.tree.leaves(state_1.batch_stats['depth']), jax.tree.leaves(stats_before))
  )
