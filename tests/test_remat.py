"""Tests of `model.remat` (`Stream(remat=True)`: every bottleneck unit rematerialised).

Remat must change what the backward pass stores, never what the model is: the
same variable tree (so checkpoints load either way), the same outputs and the
same gradients. Checked on a tiny step-3 model (frozen depth teacher, RGB
hallucination student, connections on) with its real loss, on variables drawn
with NumPy (no compiled init); the full-size tree is only shape-checked with
`jax.eval_shape`.
"""

import functools

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TINY_STREAM
from modistill_jax import config_lib
from modistill_jax import stages
from modistill_jax import steps
from modistill_jax.models import resnet
from modistill_jax.models import stage_network

# Compiling dominates (jitted forward and gradient programs of the tiny stream).
pytestmark = pytest.mark.usefixtures('fast_compile')

NUM_CLASSES = 5
CLIPS, FRAMES, SIDE = 2, 3, 32


def _shapes(tree):
  return {path: leaf.shape for path, leaf in flax.traverse_util.flatten_dict(tree, sep='/').items()}


def _step3_model(remat):
  config = config_lib.base_config().model
  config.update(dict(remat=remat, **TINY_STREAM))
  return stage_network(stages.get_stage('step3'), config, NUM_CLASSES)


def _clips():
  keys = jax.random.split(jax.random.key(1))
  shape = (CLIPS, FRAMES, SIDE, SIDE, 3)
  return {'rgb': jax.random.normal(keys[0], shape), 'depth': jax.random.normal(keys[1], shape)}


@functools.cache
def _variables():
  """Step-3 variables of the tiny model, random but not trivial (BatchNorm perturbed)."""
  shapes = jax.eval_shape(_step3_model(False).init_variables, jax.random.key(0), _clips())
  rng = np.random.default_rng(0)
  filled = {}
  for path, leaf in flax.traverse_util.flatten_dict(shapes, sep='/').items():
    name, shape = path.rsplit('/', 1)[-1], leaf.shape
    if name == 'kernel':
      value = rng.normal(size=shape) * np.sqrt(2.0 / np.prod(shape[:-1]))
    elif name == 'var':
      value = rng.uniform(0.5, 1.5, size=shape)
    else:
      value = (name == 'scale') + 0.1 * rng.normal(size=shape)
    filled[path] = jnp.asarray(value, jnp.float32)
  return flax.traverse_util.unflatten_dict(filled, sep='/')


def _outputs_fn(remat, variables, inputs):
  """Params -> (outputs, new batch stats) of the tiny step-3 model in training mode."""
  model = _step3_model(remat)
  return lambda params: steps.forward(model, {**variables, 'params': params}, inputs, train=True)


def test_full_size_variable_tree_is_the_same_with_remat():
  """Same paths and shapes at ResNet-50 size, so checkpoints are interchangeable."""
  frames = jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32)
  shapes = {}
  for remat in (False, True):
    stream = resnet.Stream(num_classes=60, remat=remat)
    shapes[remat] = _shapes(
        jax.eval_shape(
            lambda x, s=stream: s.init(jax.random.key(0), x, num_frames=2, train=False), frames
        )
    )
  assert shapes[True] == shapes[False]
  assert 'params/block4_unit2/conv3/kernel' in shapes[True]


def test_tiny_step3_outputs_and_gradients_are_the_same_with_remat():
  """Remat on and off: equal outputs, batch stats and step-3 loss gradients (float32)."""
  variables, inputs = _variables(), _clips()
  labels = jnp.arange(CLIPS) % NUM_CLASSES
  loss_config = config_lib.base_config().loss
  stage = stages.get_stage('step3')
  results = {}
  for remat in (False, True):
    outputs_fn = _outputs_fn(remat, variables, inputs)

    def loss_fn(params, outputs_fn=outputs_fn):
      outputs, new_stats = outputs_fn(params)
      return steps.stage_loss(stage, loss_config, outputs, labels)[0], (outputs, new_stats)

    results[remat] = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(variables['params'])
  (loss, aux), grads = results[False]
  (r_loss, r_aux), r_grads = results[True]
  np.testing.assert_allclose(r_loss, loss, rtol=1e-6)
  jax.tree.map(functools.partial(np.testing.assert_allclose, rtol=1e-6, atol=1e-6), r_aux, aux)
  assert jax.tree.structure(r_grads) == jax.tree.structure(grads)
  for path, r_grad, grad in zip(_shapes(grads), jax.tree.leaves(r_grads), jax.tree.leaves(grads)):
    # Recomputation fuses differently, so float32 sums reassociate: differences
    # are about 1e-6 of a leaf's largest gradient, not bit-exact.
    scale = max(1.0, float(jnp.max(jnp.abs(grad))))
    np.testing.assert_allclose(r_grad, grad, rtol=0, atol=2e-6 * scale, err_msg=path)
  # The student learns, through the connections too; the frozen teacher gets nothing.
  assert float(jnp.max(jnp.abs(grads['hall']['block1_unit1']['conv1']['kernel']))) > 0
  assert all(float(jnp.max(jnp.abs(g))) == 0 for g in jax.tree.leaves(grads['depth']))


def test_remat_stores_fewer_residuals():
  """The backward pass keeps fewer bytes from the forward pass with remat on.

  The residuals are the arrays the VJP closes over: with remat, each unit's
  inputs instead of all its internal activations. Shapes only, nothing runs.
  """
  variables, inputs = _variables(), _clips()
  residual_bytes = {}
  for remat in (False, True):
    outputs_fn = _outputs_fn(remat, variables, inputs)
    vjp_fn = jax.eval_shape(lambda p, f=outputs_fn: jax.vjp(f, p)[1], variables['params'])
    residual_bytes[remat] = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(vjp_fn))
  assert residual_bytes[True] < 0.7 * residual_bytes[False], residual_bytes  # 0.58 measured
