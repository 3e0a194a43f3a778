"""Tests of checked parameter loading (`modistill_jax/param_merge.py`)."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from modistill_jax import param_merge
from modistill_jax import stages
from modistill_jax.models import multistream
from modistill_jax.models import resnet


def _tree(seed, dtype=np.float32, classes=5):
  """A small parameter-like tree with the key layout of a stream."""
  rng = np.random.default_rng(seed)

  def leaf(*shape):
    return rng.normal(size=shape).astype(dtype)

  return {
      'rgb': {
          'conv1': {'kernel': leaf(7, 7, 3, 4)},
          'bn1': {'scale': leaf(4), 'bias': leaf(4)},
          'block1_unit1': {
              'temporal': {'kernel': leaf(3, 1, 1, 4, 4)},
              'conv1': {'kernel': leaf(1, 1, 16, 4)},
          },
          'logits': {'kernel': leaf(16, classes), 'bias': leaf(classes)},
      },
  }


def _flat(tree):
  return param_merge.flatten(tree)


def test_merge_fills_every_leaf_from_source():
  """Every target leaf takes the source's value; structure and inputs are unchanged.

  A merge that silently kept some initial values would train from a wrong start.
  """
  target, source = _tree(0), _tree(1)
  target_copy = jax.tree.map(np.copy, target)
  merged = param_merge.merge(target, source)
  assert jax.tree.structure(merged) == jax.tree.structure(target)
  for key, value in _flat(merged).items():
    np.testing.assert_array_equal(value, _flat(source)[key], err_msg=key)
    assert not np.array_equal(value, _flat(target)[key]), key
  for a, b in zip(jax.tree.leaves(target), jax.tree.leaves(target_copy)):
    np.testing.assert_array_equal(a, b)


def test_fresh_keys_keep_target_initialisation():
  """`fresh` keys keep the target's value whether the source lacks, has or mis-shapes them.

  This is the ImageNet case: the checkpoint has no temporal kernels and a
  1000-class classifier, both of which must start from the model's own init.
  """
  target = _tree(0, classes=5)
  imagenet = _tree(1, classes=1000)
  del imagenet['rgb']['block1_unit1']['temporal']
  merged = param_merge.merge(target, imagenet, fresh=[r'.*/temporal/.*', r'.*/logits/.*'])
  flat, flat_target, flat_source = _flat(merged), _flat(target), _flat(imagenet)
  fresh = {'rgb/block1_unit1/temporal/kernel', 'rgb/logits/kernel', 'rgb/logits/bias'}
  for key, value in flat.items():
    expected = flat_target[key] if key in fresh else flat_source[key]
    np.testing.assert_array_equal(value, expected, err_msg=key)
  # A fresh key the source has with the right shape is still not taken.
  merged = param_merge.merge(target, _tree(2), fresh=[r'rgb/logits/bias'])
  np.testing.assert_array_equal(merged['rgb']['logits']['bias'], target['rgb']['logits']['bias'])
  np.testing.assert_array_equal(
      merged['rgb']['logits']['kernel'], _tree(2)['rgb']['logits']['kernel']
  )


def test_all_mismatches_reported_in_one_error():
  """Missing, unexpected and mis-shaped keys are listed together, each by name.

  One message with every problem (and the offending shapes) lets a user fix a
  checkpoint mapping in one go instead of one key per run.
  """
  target = _tree(0)
  source = _tree(1, classes=7)  # logits kernel and bias mis-shaped
  del source['rgb']['bn1']  # two keys missing
  source['rgb']['extra'] = {'kernel': np.zeros(3), 'bias': np.zeros(3)}  # two unexpected
  with pytest.raises(param_merge.MergeError) as info:
    param_merge.merge(target, source, what='imagenet.npz')
  message = str(info.value)
  assert isinstance(info.value, ValueError)
  assert 'imagenet.npz does not fit the model' in message
  assert 'missing from imagenet.npz (2):' in message
  assert 'unexpected in imagenet.npz (2):' in message
  assert 'shape mismatch (2):' in message
  for key in ('rgb/bn1/scale', 'rgb/bn1/bias', 'rgb/extra/kernel', 'rgb/extra/bias'):
    assert f'    {key}\n' in message + '\n', key
  assert 'rgb/logits/kernel: imagenet.npz (16, 7) vs model (16, 5)' in message
  assert 'rgb/logits/bias: imagenet.npz (7,) vs model (5,)' in message
  # Keys that fit are not listed.
  assert 'conv1' not in message and 'temporal' not in message


def test_ignore_drops_source_keys():
  """Source keys matching `ignore` are dropped without error; others still fail.

  E.g. an optimizer slot or a classifier of a stream the model does not have.
  """
  target = _tree(0)
  source = _tree(1)
  source['rgb']['aux_head'] = {'kernel': np.ones((2, 2))}
  source['momentum'] = {'w': np.ones(3)}
  merged = param_merge.merge(target, source, ignore=[r'rgb/aux_head/.*', r'momentum/.*'])
  assert _flat(merged).keys() == _flat(target).keys()
  with pytest.raises(param_merge.MergeError) as info:
    param_merge.merge(target, source, ignore=[r'momentum/.*'])
  assert 'unexpected in checkpoint (1):' in str(info.value)
  assert 'rgb/aux_head/kernel' in str(info.value)


def test_patterns_match_the_whole_path():
  """Patterns are full matches: 'logits' alone does not cover 'rgb/logits/bias'.

  A partial match would let a short pattern silently keep unrelated keys fresh.
  """
  target, source = _tree(0), _tree(1)
  del source['rgb']['logits']
  with pytest.raises(param_merge.MergeError, match='missing from checkpoint'):
    param_merge.merge(target, source, fresh=['logits'])
  merged = param_merge.merge(target, source, fresh=['rgb/logits/.*'])
  np.testing.assert_array_equal(merged['rgb']['logits']['bias'], target['rgb']['logits']['bias'])


@pytest.mark.parametrize(
    'target_dtype,source_dtype',
    [
        (np.float32, np.float64),
        (np.float32, np.float16),
        (jnp.bfloat16, np.float32),
        (np.int32, np.int64),
    ],
)
def test_dtype_follows_target(target_dtype, source_dtype):
  """Merged leaves have the target's dtype, not the checkpoint's.

  A float64 NumPy checkpoint must not turn the model's float32 parameters into
  float64 (slow, and a changed jit signature), nor a float32 one bfloat16 ones.
  """
  target = {'a': {'w': np.zeros((2, 3), target_dtype)}, 'b': jnp.zeros((4,), target_dtype)}
  source = {
      'a': {'w': np.arange(6).reshape(2, 3).astype(source_dtype)},
      'b': np.arange(4).astype(source_dtype),
  }
  merged = param_merge.merge(target, source)
  for key, value in _flat(merged).items():
    assert value.dtype == np.dtype(target_dtype), key
  np.testing.assert_array_equal(
      np.asarray(merged['a']['w'], np.float64), np.arange(6).reshape(2, 3)
  )


@functools.lru_cache(maxsize=None)
def _model_shapes(giver, receiver):
  inputs = {'depth': 'depth', 'rgb': 'rgb', 'hall': 'rgb'}
  model = multistream.MultiStream(
      stages.ModelSpec(receiver, inputs[receiver], giver, inputs[giver], connections=True),
      functools.partial(resnet.Stream, num_classes=4, units_per_block=(2, 2, 2, 2), width=4),
  )
  clips = {m: jax.ShapeDtypeStruct((1, 2, 32, 32, 3), jnp.float32) for m in ('rgb', 'depth')}
  return jax.eval_shape(lambda x: model.init(jax.random.key(0), x, train=False), clips)


def _filled(shapes, seed):
  rng = np.random.default_rng(seed)
  return jax.tree.map(lambda s: rng.normal(size=s.shape).astype(s.dtype), shapes)


def test_stage_transfer_of_a_stream():
  """Step 3 starts its hallucination stream as a copy of step 2's depth stream.

  From a step-2 tree of the real model's keys, the merge fills both step-3
  streams from step 2's depth stream, and names the missing stream's keys when
  it is not given.
  """
  step2 = {c: _filled(v, seed) for seed, (c, v) in enumerate(_model_shapes('depth', 'rgb').items())}
  step3_target = {
      c: _filled(v, 10 + seed) for seed, (c, v) in enumerate(_model_shapes('depth', 'hall').items())
  }
  for collection in ('params', 'batch_stats'):
    depth = step2[collection]['depth']
    merged = param_merge.merge(
        step3_target[collection], {'depth': depth, 'hall': depth}, what='step 2'
    )
    for key, value in _flat(merged).items():
      np.testing.assert_array_equal(value, _flat(depth)[key.split('/', 1)[1]], err_msg=key)
  # Without the copy the missing stream is reported by its keys.
  with pytest.raises(param_merge.MergeError, match=r'hall/block1_unit1/temporal/kernel'):
    param_merge.merge(step3_target['params'], {'depth': step2['params']['depth']})
