"""Tests of the multi-stream network (`modistill_jax/models/multistream.py`).

Tiny streams (2 units per block, width 4, 3 frames of 32x32) with variables
drawn from NumPy; the full-size model is only shape-checked with
`jax.eval_shape`.
"""

import functools

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TINY_STREAM, apply_tapped, fill_variables
from modistill_jax import config_lib
from modistill_jax import losses
from modistill_jax import stages
from modistill_jax.models import multistream
from modistill_jax.models import resnet

# Compiling dominates (jitted forward and gradient programs of the tiny stream).
pytestmark = pytest.mark.usefixtures('fast_compile')

NUM_CLASSES = 5
CLIPS, FRAMES, SIDE = 2, 3, 32
BLOCKS = (1, 2, 3, 4)


def _flat(tree):
  return flax.traverse_util.flatten_dict(tree, sep='/')


TINY_FACTORY = functools.partial(resnet.Stream, num_classes=NUM_CLASSES, **TINY_STREAM)


def _model(giver='depth', receiver='rgb', connections=True, giver_frozen=False):
  inputs = {'depth': 'depth', 'rgb': 'rgb', 'hall': 'rgb'}
  spec = stages.ModelSpec(
      receiver,
      inputs[receiver],
      giver,
      inputs.get(giver),
      connections=connections,
      giver_frozen=giver_frozen,
  )
  return multistream.MultiStream(spec, TINY_FACTORY)


def _clips(seed):
  keys = jax.random.split(jax.random.key(seed))
  shape = (CLIPS, FRAMES, SIDE, SIDE, 3)
  return {'rgb': jax.random.normal(keys[0], shape), 'depth': jax.random.normal(keys[1], shape)}


@functools.lru_cache(maxsize=None)
def _variables(giver='depth', receiver='rgb', seed=0):
  """Generic variables for a tiny model, drawn with NumPy (no compiled init).

  Kernels are He-normal, temporal kernels the centre-tap identity plus noise (so
  the temporal convs do something), BatchNorm parameters and statistics are
  perturbed away from their trivial values.
  """
  model = _model(giver, receiver)
  shapes = jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), _clips(0))
  return fill_variables(shapes, seed, temporal_noise=1.0)


def _assert_trees_equal(actual, expected):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected)):
    np.testing.assert_array_equal(a, b, err_msg=jax.tree_util.keystr(path))


def _max_abs_diff(a, b):
  return max(
      float(np.max(np.abs(np.asarray(x) - np.asarray(y))))
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
  )


def _zero_giver_unit0(variables, giver='depth'):
  """Variables where the giver's unit-0 outputs are exactly zero in every block.

  Unit 0 of every block has a projection shortcut, so zeroing the scale and bias
  of its last BatchNorm and of its shortcut's BatchNorm zeroes
  `relu(shortcut + residual)` whatever the input, in either BatchNorm mode.
  """
  params = _flat(variables['params'])
  for b in BLOCKS:
    for bn in ('bn3', 'shortcut_bn'):
      for name in ('scale', 'bias'):
        key = f'{giver}/block{b}_unit0/{bn}/{name}'
        params[key] = jnp.zeros_like(params[key])
  return {**variables, 'params': flax.traverse_util.unflatten_dict(params, sep='/')}


def test_full_size_variables_are_one_stream_per_name():
  """Each stream's variables sit under its name and are exactly one `Stream`'s.

  The trainer carries streams between stages by these names, and connections
  add no variables (they are a multiplication), so a two-stream model is two
  ResNet-50 streams and nothing else.
  """
  clips = {m: jax.ShapeDtypeStruct((1, 2, 224, 224, 3), jnp.float32) for m in ('rgb', 'depth')}
  stream = resnet.Stream(num_classes=60)
  stream_shapes = jax.eval_shape(
      lambda x: stream.init(jax.random.key(0), x, num_frames=2, train=False),
      jax.ShapeDtypeStruct((2, 224, 224, 3), jnp.float32),
  )
  stream_shapes = {k: v.shape for k, v in _flat(stream_shapes).items()}
  for connections in (True, False):
    model = multistream.MultiStream(
        stages.ModelSpec('rgb', 'rgb', 'depth', 'depth', connections=connections),
        functools.partial(resnet.Stream, num_classes=60),
    )
    shapes = jax.eval_shape(functools.partial(model.init, jax.random.key(0), train=False), clips)
    assert sorted(shapes['params']) == ['depth', 'rgb']
    for name in ('depth', 'rgb'):
      got = {k: v.shape for k, v in _flat({c: shapes[c][name] for c in shapes}).items()}
      assert got == stream_shapes, name
  single = multistream.MultiStream(
      stages.ModelSpec('rgb', 'rgb'), functools.partial(resnet.Stream, num_classes=60)
  )
  shapes = jax.eval_shape(lambda x: single.init(jax.random.key(0), x, train=False), clips)
  assert sorted(shapes['params']) == ['rgb']


def test_clip_logits_and_fusion():
  """Clip logits are the mean of frame logits; fused is the mean of the streams'.

  Also: each stream's frame logits are its `Stream` applied to the clips'
  frames laid out clip-major (clip 0's frames first), so frames are never
  mixed across clips or modalities, and a one-stream stage's fused logits are
  its own clip logits. The stage network (the joint step 1: the same two
  unconnected streams) gives its parts' outputs unchanged.
  """
  model = _model(connections=False)
  variables = _variables()
  clips = _clips(1)
  out = model.apply(variables, clips, train=False)
  assert sorted(out['logits']) == ['depth', 'rgb']
  stream = resnet.Stream(num_classes=NUM_CLASSES, **TINY_STREAM)
  for name in ('depth', 'rgb'):
    direct, _ = stream.apply(
        {c: variables[c][name] for c in variables},
        clips[name].reshape((CLIPS * FRAMES, SIDE, SIDE, 3)),
        num_frames=FRAMES,
        train=False,
    )
    np.testing.assert_allclose(
        out['logits'][name],
        np.asarray(direct).reshape(CLIPS, FRAMES, -1).mean(axis=1),
        rtol=1e-6,
        atol=1e-6,
    )
    assert out['endpoints'][name]['block4'].shape[0] == CLIPS * FRAMES
  network = multistream.StageNetwork(stages.get_stage('step1'), TINY_FACTORY)
  out_network = network.apply(variables, clips, train=False)
  _assert_trees_equal(out_network['logits'], out['logits'])
  np.testing.assert_allclose(
      out_network['fused'],
      (np.asarray(out['logits']['depth']) + np.asarray(out['logits']['rgb'])) / 2,
      rtol=1e-6,
      atol=1e-6,
  )

  single = multistream.StageNetwork(stages.get_stage('step1_rgb'), TINY_FACTORY)
  single_vars = {c: {'rgb': variables[c]['rgb']} for c in variables}
  out_single = single.apply(single_vars, {'rgb': clips['rgb']}, train=False)
  assert sorted(out_single['logits']) == ['rgb']
  np.testing.assert_array_equal(out_single['fused'], out_single['logits']['rgb'])
  np.testing.assert_allclose(
      out_single['logits']['rgb'], out['logits']['rgb'], rtol=1e-6, atol=1e-6
  )


def test_giver_and_receiver_must_differ():
  """A stream cannot give to itself: it would share one parameter tree twice."""
  model = _model(giver='rgb', receiver='rgb')
  with pytest.raises(ValueError, match='must differ'):
    jax.eval_shape(functools.partial(model.init, train=False), jax.random.key(0), _clips(0))


def test_zero_giver_unit0_gives_unconnected_receiver():
  """With the giver's unit-0 outputs all zero, the connected receiver is the plain one.

  `x + x_pre * 0 = x` at every injection point, so the receiver must equal the
  receiver of the `connections=False` model with the same variables, logits and
  every endpoint. With the giver's real unit-0 outputs it must differ.
  """
  clips = _clips(2)
  zeroed = _zero_giver_unit0(_variables())
  connected = _model(connections=True).apply(zeroed, clips, train=False)
  for b in BLOCKS:
    assert not np.any(connected['endpoints']['depth'][f'block{b}/unit0'])
  plain = _model(connections=False).apply(zeroed, clips, train=False)
  _assert_trees_equal(connected['endpoints']['rgb'], plain['endpoints']['rgb'])
  _assert_trees_equal(connected['logits']['rgb'], plain['logits']['rgb'])

  live = _model(connections=True).apply(_variables(), clips, train=False)
  live_plain = _model(connections=False).apply(_variables(), clips, train=False)
  assert _max_abs_diff(live['logits']['rgb'], live_plain['logits']['rgb']) > 1e-3


@pytest.mark.parametrize('train', [False, True])
def test_connections_inject_giver_unit0_at_unit1_only(train):
  """The receiver's residual input is `x + x_pre * m` at unit 1 of every block, else `x`.

  Checked by hand from the endpoints of the same run: `x`, `x_pre` are the
  receiver's unit-0 output after/before ReLU, `m` the giver's unit-0 output
  (after ReLU). Every other unit's first conv reads its plain input. Before the
  first injection point (the stem output entering block 1) the receiver is
  identical with and without connections, and the giver is never affected.
  """
  clips = _clips(3)
  variables = _variables()
  taps = [f'rgb/block{b}_unit{u}' for b in BLOCKS for u in (0, 1)]
  taps += [f'rgb/block{b}_unit{u}/conv1' for b in BLOCKS for u in (0, 1)]
  kwargs = dict(train=train, mutable=['batch_stats']) if train else dict(train=False)
  out, record = apply_tapped(_model(connections=True), variables, clips, taps=taps, **kwargs)
  plain, plain_record = apply_tapped(
      _model(connections=False), variables, clips, taps=taps, **kwargs
  )
  if train:
    out, plain = out[0], plain[0]
  receiver, giver = out['endpoints']['rgb'], out['endpoints']['depth']
  for b in BLOCKS:
    for u in (0, 1):
      (x, *_), _ = record[f'rgb/block{b}_unit{u}']
      (conv1_input,), _ = record[f'rgb/block{b}_unit{u}/conv1']
      if u == 0:
        np.testing.assert_array_equal(conv1_input, x)
      else:
        np.testing.assert_array_equal(x, receiver[f'block{b}/unit0'])
        expected = np.asarray(receiver[f'block{b}/unit0']) + np.asarray(
            receiver[f'block{b}/unit0_pre']
        ) * np.asarray(giver[f'block{b}/unit0'])
        np.testing.assert_allclose(conv1_input, expected, rtol=1e-6, atol=1e-6)
        assert np.max(np.abs(np.asarray(conv1_input) - np.asarray(x))) > 1e-2
  # Stem output: the input of block 1's unit 0.
  np.testing.assert_array_equal(
      record['rgb/block1_unit0'][0][0], plain_record['rgb/block1_unit0'][0][0]
  )
  np.testing.assert_array_equal(receiver['block1/unit0'], plain['endpoints']['rgb']['block1/unit0'])
  _assert_trees_equal(out['endpoints']['depth'], plain['endpoints']['depth'])
  _assert_trees_equal(out['logits']['depth'], plain['logits']['depth'])


def test_without_connections_streams_are_independent():
  """With `connections=False` the receiver does not depend on the giver's input.

  Changing the depth clips changes the depth stream but leaves every receiver
  output bit-identical; with connections on, the same change reaches the receiver.
  """
  clips = _clips(4)
  other = {
      **clips,
      'depth': clips['depth'] + jax.random.normal(jax.random.key(5), clips['depth'].shape),
  }
  variables = _variables()
  model = _model(connections=False)
  a, b = model.apply(variables, clips, train=False), model.apply(variables, other, train=False)
  _assert_trees_equal(a['endpoints']['rgb'], b['endpoints']['rgb'])
  _assert_trees_equal(a['logits']['rgb'], b['logits']['rgb'])
  assert _max_abs_diff(a['logits']['depth'], b['logits']['depth']) > 1e-3

  model = _model(connections=True)
  a, b = model.apply(variables, clips, train=False), model.apply(variables, other, train=False)
  assert _max_abs_diff(a['logits']['rgb'], b['logits']['rgb']) > 1e-3


def test_frozen_giver_batchnorm_runs_in_inference_mode():
  """A frozen giver uses and keeps its running statistics even when `train=True`.

  Applied with `mutable=['batch_stats']`, the giver's statistics come back
  unchanged and its outputs equal an inference-mode run, while the receiver's
  statistics are updated. Without `giver_frozen` both streams' statistics move
  (the contrast shows the check can fail).
  """
  clips = _clips(6)
  variables = _variables('depth', 'hall')
  frozen = _model('depth', 'hall', giver_frozen=True)
  out, updates = frozen.apply(variables, clips, train=True, mutable=['batch_stats'])
  _assert_trees_equal(updates['batch_stats']['depth'], variables['batch_stats']['depth'])
  for path, new in _flat(updates['batch_stats']['hall']).items():
    old = _flat(variables['batch_stats']['hall'])[path]
    assert np.max(np.abs(np.asarray(new) - np.asarray(old))) > 1e-6, path
  inference = frozen.apply(variables, clips, train=False)
  np.testing.assert_allclose(
      out['logits']['depth'], inference['logits']['depth'], rtol=1e-6, atol=1e-6
  )

  _, updates = _model('depth', 'hall', giver_frozen=False).apply(
      variables, clips, train=True, mutable=['batch_stats']
  )
  assert _max_abs_diff(updates['batch_stats']['depth'], variables['batch_stats']['depth']) > 1e-6


def _step3_loss(model, params, batch_stats, clips, labels):
  """The hallucination step's loss (eq. 5) on the model's outputs."""
  out, _ = model.apply(
      {'params': params, 'batch_stats': batch_stats}, clips, train=True, mutable=['batch_stats']
  )
  gd = losses.generalized_distillation_loss(out['logits']['hall'], out['logits']['depth'], labels)[
      'loss'
  ]
  hall = losses.hallucination_loss(
      out['endpoints']['depth']['block4'], out['endpoints']['hall']['block4']
  )
  return losses.total_loss(gd, hall)


def test_frozen_giver_gets_exactly_zero_gradient():
  """No gradient reaches a frozen giver through logits, endpoints or connections.

  Differentiating the full step-3 loss (distillation on the clip logits,
  hallucination loss on both streams' block-4 outputs, connections on) with
  respect to all parameters gives exact zeros for every giver leaf and non-zero
  gradients for the receiver. Without `giver_frozen` the giver gets gradients,
  which shows the check can fail.
  """
  clips = _clips(7)
  labels = jnp.array([1, 3])
  variables = _variables('depth', 'hall')
  for frozen in (True, False):
    model = _model('depth', 'hall', giver_frozen=frozen)
    grads = jax.jit(jax.grad(functools.partial(_step3_loss, model)))(
        variables['params'], variables['batch_stats'], clips, labels
    )
    giver_norms = {k: float(np.max(np.abs(v))) for k, v in _flat(grads['depth']).items()}
    receiver_norms = {k: float(np.max(np.abs(v))) for k, v in _flat(grads['hall']).items()}
    assert all(np.isfinite(list(giver_norms.values()) + list(receiver_norms.values())))
    assert receiver_norms['logits/kernel'] > 0
    assert receiver_norms['block1_unit1/temporal/kernel'] > 0
    assert sum(v > 0 for v in receiver_norms.values()) > 0.9 * len(receiver_norms)
    if frozen:
      assert giver_norms == {k: 0.0 for k in giver_norms}
    else:
      assert giver_norms['logits/kernel'] > 0
      assert giver_norms['block1_unit0/conv1/kernel'] > 0


def test_init_stream_by_stream_is_flax_init_of_the_whole_network():
  """Each stream from its part's key alone gives, bit for bit, what Flax's `init` of the part
  (its streams and connections) gives, here step 2's depth giver and RGB receiver. Several
  givers add only gates, which have no variables; several parts, their keys (next test)."""
  stage = stages.get_stage('step2')
  factory = resnet.StreamFactory(resnet.Stream, num_classes=NUM_CLASSES, **TINY_STREAM)
  model = multistream.StageNetwork(stage, factory)
  inputs = {m: clips[:1] for m, clips in _clips(0).items()}
  rng = jax.random.key(7)
  (spec,) = stage.models
  (part_key,) = jax.random.split(rng, 1)  # the stage's one part
  whole = jax.jit(functools.partial(multistream.MultiStream(spec, factory).init, train=False))
  _assert_trees_equal(model.init_variables(rng, inputs), dict(whole(part_key, inputs)))
  assert set(model.init_variables(rng, inputs, streams=('rgb',))['params']) == {'rgb'}


def test_each_stream_is_initialised_from_its_parts_key():
  """Hoffman et al.'s stage has a part per stream; each stream takes its part's split of the
  key, as Flax's `init` of that part would (the values then follow, as above)."""
  stage = stages.get_stage('hoffman')
  model = multistream.StageNetwork(stage, TINY_FACTORY)
  rng = jax.random.key(3)
  part_keys = jax.random.split(rng, len(stage.models))
  keys = model.stream_keys(rng)
  assert len(stage.models) == len(keys) == 3
  for spec, key in zip(stage.models, part_keys):
    stream_key, modality = keys[spec.receiver]
    assert modality == spec.receiver_input
    np.testing.assert_array_equal(jax.random.key_data(stream_key), jax.random.key_data(key))


def test_equal_stream_settings_make_equal_factories():
  """So a stream's jitted initialisation is traced once for every stage that builds it."""
  config = config_lib.base_config()
  assert resnet.stream_factory(config.model, 60) == resnet.stream_factory(config.model, 60)
  assert hash(resnet.stream_factory(config.model, 60)) == hash(
      resnet.stream_factory(config.model, 60)
  )
  assert resnet.stream_factory(config.model, 60) != resnet.stream_factory(config.model, 10)
