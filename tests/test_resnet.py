"""Tests of the ResNet-50 stream (`modistill_jax/models/resnet.py`).

Full-size checks run under `jax.eval_shape`, so no 224x224 ResNet-50 is ever
computed. Numeric checks use tiny streams of the same topology (2 units per
block, width 4, 64x64 frames) whose variables are filled from NumPy (cheap; the
model's own initialiser is used once, for the init-time properties).
"""

import functools

import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import TINY_STREAM, apply_tapped, fill_variables
from modistill_jax.models import resnet

# Compiling dominates (jitted forward and gradient programs of the tiny stream).
pytestmark = pytest.mark.usefixtures('fast_compile')

# ResNet-50's convolutional trunk (torchvision `resnet50` without its fc layer):
# conv kernels plus BatchNorm scale and bias, no conv biases.
RESNET50_TRUNK_PARAMS = 23_508_032
FULL_CHANNELS = (256, 512, 1024, 2048)
FULL_BLOCK_SIDES = {
    'slim': (28, 14, 7, 7),
    'keras': (56, 28, 14, 7),
    'torchvision': (56, 28, 14, 7),
}
# Unit 0 of every block sees the block's input resolution in slim (stride in the
# last unit) and already carries the stride in keras/torchvision (stride in the
# first unit); either way its output sides are the same.
FULL_UNIT0_SIDES = (56, 28, 14, 7)

NUM_CLASSES = 5
CLIPS, FRAMES, SIDE = 2, 3, 64


def _flat(tree):
  return flax.traverse_util.flatten_dict(tree, sep='/')


@functools.lru_cache(maxsize=None)
def _full_size_shapes(layout, num_classes=60, frames=2):
  """Output and variable shapes of a full-size stream on one 224x224 clip."""
  model = resnet.Stream(num_classes=num_classes, stride_layout=layout)
  images = jax.ShapeDtypeStruct((frames, 224, 224, 3), jnp.float32)
  (logits, endpoints), variables = jax.eval_shape(
      lambda x: model.init_with_output(jax.random.key(0), x, num_frames=frames, train=False), images
  )
  return logits, endpoints, variables


def _tiny_stream(layout='slim'):
  return resnet.Stream(num_classes=NUM_CLASSES, stride_layout=layout, **TINY_STREAM)


def _frames(seed, clips=CLIPS, frames=FRAMES):
  return jax.random.normal(jax.random.key(seed), (clips * frames, SIDE, SIDE, 3))


@functools.lru_cache(maxsize=None)
def _tiny_variables(layout='slim', seed=0, temporal_noise=0.0):
  model = _tiny_stream(layout)
  shapes = jax.eval_shape(
      functools.partial(model.init, num_frames=FRAMES, train=False), jax.random.key(0), _frames(0)
  )
  return fill_variables(shapes, seed, temporal_noise)


@functools.lru_cache(maxsize=None)
def _tiny_initialised():
  """The tiny stream's variables from its own initialiser (compiled once)."""
  init = jax.jit(functools.partial(_tiny_stream().init, num_frames=FRAMES, train=False))
  # The 'unsafe_rbg' key compiles in a fraction of threefry's time on CPU.
  return init(jax.random.key(0, impl='unsafe_rbg'), _frames(0))


def _assert_trees_close(actual, expected, **tolerance):
  assert jax.tree.structure(actual) == jax.tree.structure(expected)
  for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(actual), jax.tree.leaves(expected)):
    np.testing.assert_allclose(a, b, err_msg=jax.tree_util.keystr(path), **tolerance)


# --------------------------------------------------------------------------
# Full size, shapes only.


@pytest.mark.parametrize('layout', resnet.STRIDE_LAYOUTS)
def test_full_size_endpoint_shapes(layout):
  """At 224x224 every layout has ResNet-50's block shapes and the named endpoints.

  Block outputs are 28/14/7/7 in slim (stride in the last unit, none in block 4)
  and 56/28/14/7 in keras/torchvision; channels 256/512/1024/2048. The unit-0
  endpoints (what a giving stream sends) must exist before and after ReLU with
  the unit-0 resolution, since the receiving stream's unit 1 multiplies by them.
  """
  frames = 2
  logits, endpoints, _ = _full_size_shapes(layout, num_classes=60, frames=frames)
  assert logits.shape == (frames, 60)
  assert logits.dtype == jnp.float32
  expected = {'pooled': (frames, 2048)}
  for b, (side, unit0_side, channels) in enumerate(
      zip(FULL_BLOCK_SIDES[layout], FULL_UNIT0_SIDES, FULL_CHANNELS), start=1
  ):
    expected[f'block{b}'] = (frames, side, side, channels)
    expected[f'block{b}/unit0'] = (frames, unit0_side, unit0_side, channels)
    expected[f'block{b}/unit0_pre'] = (frames, unit0_side, unit0_side, channels)
  assert {k: v.shape for k, v in endpoints.items()} == expected


@pytest.mark.parametrize('num_classes', [60, 10])
def test_full_size_parameter_count(num_classes):
  """Parameters are ResNet-50's trunk plus only the temporal convs and classifier.

  The trunk (53 convs, each followed by a BatchNorm with scale and bias, no conv
  biases) has 23,508,032 parameters; the method adds one bias-free 3x1x1 CxC
  temporal kernel in unit 1 of each block (C = 64, 128, 256, 512) and a
  2048 x K dense classifier with bias. Anything else would mean the stream is
  not the paper's backbone, or an ImageNet checkpoint would not fit it.
  """
  _, _, variables = _full_size_shapes('slim', num_classes=num_classes)
  params = _flat(variables['params'])
  temporal = {k: v.shape for k, v in params.items() if '/temporal/' in k}
  assert temporal == {
      f'block{b}_unit1/temporal/kernel': (3, 1, 1, c, c)
      for b, c in enumerate((64, 128, 256, 512), start=1)
  }
  classifier = {k: v.shape for k, v in params.items() if k.startswith('logits/')}
  assert classifier == {'logits/kernel': (2048, num_classes), 'logits/bias': (num_classes,)}
  trunk = {k: v for k, v in params.items() if k not in temporal and k not in classifier}
  assert sum(int(np.prod(v.shape)) for v in trunk.values()) == RESNET50_TRUNK_PARAMS
  kernels = [k for k in trunk if k.endswith('/kernel')]
  assert len(kernels) == 53
  assert len([k for k in trunk if k.endswith('/scale')]) == 53
  assert len([k for k in trunk if k.endswith('/bias')]) == 53
  total = sum(int(np.prod(v.shape)) for v in params.values())
  assert total == (
      RESNET50_TRUNK_PARAMS
      + sum(3 * c * c for c in (64, 128, 256, 512))
      + 2048 * num_classes
      + num_classes
  )
  # Every BatchNorm has running statistics of its scale's shape, and nothing else
  # is in `batch_stats`.
  stats = _flat(variables['batch_stats'])
  expected_stats = {}
  for k, v in trunk.items():
    if k.endswith('/scale'):
      expected_stats[k[: -len('scale')] + 'mean'] = v.shape
      expected_stats[k[: -len('scale')] + 'var'] = v.shape
  assert {k: v.shape for k, v in stats.items()} == expected_stats


def test_layouts_have_identical_variable_shapes():
  """The three stride layouts differ in computation only, never in variables.

  This is what lets an ImageNet checkpoint of any layout load into the stream;
  their outputs differ (see `test_full_size_endpoint_shapes`).
  """
  shapes = {}
  for layout in resnet.STRIDE_LAYOUTS:
    _, _, variables = _full_size_shapes(layout)
    shapes[layout] = {k: (v.shape, v.dtype) for k, v in _flat(variables).items()}
  assert shapes['slim'] == shapes['keras'] == shapes['torchvision']


def test_rejects_bad_arguments():
  """Fewer than 2 units per block, incomplete clips or an unknown layout are errors.

  Unit index 1 holds the temporal conv and the connection, so it must exist; a
  batch that is not whole clips would silently mix frames of different clips.
  """
  images = jax.ShapeDtypeStruct((6, 32, 32, 3), jnp.float32)

  def init(model, num_frames):
    return jax.eval_shape(
        lambda x: model.init(jax.random.key(0), x, num_frames=num_frames, train=False), images
    )

  with pytest.raises(ValueError, match='at least 2 units'):
    init(resnet.Stream(num_classes=3, units_per_block=(2, 1, 2, 2), width=4), 3)
  with pytest.raises(ValueError, match='not whole clips'):
    init(resnet.Stream(num_classes=3, **TINY_STREAM), 4)
  with pytest.raises(ValueError, match='stride_layout'):
    init(resnet.Stream(num_classes=3, stride_layout='caffe', **TINY_STREAM), 3)


# --------------------------------------------------------------------------
# Temporal convolutions.


def test_temporal_kernels_start_as_centre_tap_identity():
  """The model's initialiser sets every temporal kernel to [0, I, 0] over time.

  In the default linear form this is what makes the temporal convs a no-op at
  the start of training and
  lets ImageNet weights (which have no temporal kernels) be used unchanged.
  """
  params = _flat(_tiny_initialised()['params'])
  temporal = {k: v for k, v in params.items() if '/temporal/' in k}
  assert sorted(temporal) == [f'block{b}_unit1/temporal/kernel' for b in range(1, 5)]
  for key, kernel in temporal.items():
    c = kernel.shape[-1]
    expected = np.zeros((3, 1, 1, c, c), np.float32)
    expected[1, 0, 0] = np.eye(c)
    np.testing.assert_array_equal(kernel, expected, err_msg=key)


def test_single_frame_clip_sees_only_centre_tap():
  """A clip of 1 frame is unaffected by the off-centre taps of the temporal kernels.

  With 'SAME' padding in time the off-centre taps of a 1-frame clip multiply the
  zero padding. This validates the reference used by
  `test_temporal_convs_are_noop_at_init`: running each frame as its own clip
  with a centre tap equal to the identity is the 2-D ResNet with the temporal
  convs removed.
  """
  model = _tiny_stream()
  variables = _tiny_variables(temporal_noise=1.0)
  other = jax.tree.map(lambda x: x, variables)
  params = _flat(other['params'])
  for key in [k for k in params if '/temporal/' in k]:
    params[key] = params[key].at[0].mul(-3.0).at[2].set(0.5)
  other = {**other, 'params': flax.traverse_util.unflatten_dict(params, sep='/')}
  frames = _frames(1)
  single = model.apply(variables, frames, num_frames=1, train=False)
  single_other = model.apply(other, frames, num_frames=1, train=False)
  _assert_trees_close(single_other, single, rtol=1e-6, atol=1e-6)
  # With the clip's 3 frames together the same change of the taps matters.
  clip = model.apply(variables, frames, num_frames=FRAMES, train=False)
  clip_other = model.apply(other, frames, num_frames=FRAMES, train=False)
  assert np.max(np.abs(clip[0] - clip_other[0])) > 1e-2


@pytest.mark.parametrize('train', [False, True])
def test_temporal_convs_are_noop_at_init(train):
  """With the initialiser's variables, the stream computes the 2-D ResNet per frame.

  Reference: the same variables with every frame run as its own 1-frame clip,
  where only the centre tap (the identity at init) is seen, i.e. the temporal
  convs are removed (see `test_single_frame_clip_sees_only_centre_tap`). Every
  endpoint and the logits must agree. In training mode BatchNorm's batch
  statistics cover the same frames in both runs, so they agree too.
  """
  model = _tiny_stream()
  variables = _tiny_initialised()
  frames = _frames(2)
  kwargs = dict(train=train, mutable=['batch_stats']) if train else dict(train=False)
  clip = model.apply(variables, frames, num_frames=FRAMES, **kwargs)
  per_frame = model.apply(variables, frames, num_frames=1, **kwargs)
  _assert_trees_close(clip, per_frame, rtol=1e-5, atol=1e-5)


def test_temporal_conv_mixes_neighbouring_frames():
  """Once the temporal kernels are not the identity, frame t sees frame t + 1.

  Changing frame t + 1 of clip 0 changes frame t's logits, but never any frame
  of another clip (frames travel clip-major in the batch and are regrouped per
  clip only around the temporal conv). With identity kernels (inference-mode
  BatchNorm) frame t is unaffected: the contrast shows this test can fail.
  """
  model = _tiny_stream()
  frames = _frames(3)
  changed = frames.at[1].add(jax.random.normal(jax.random.key(4), frames.shape[1:]))
  for noise, should_mix in ((1.0, True), (0.0, False)):
    variables = _tiny_variables(temporal_noise=noise)
    logits, _ = model.apply(variables, frames, num_frames=FRAMES, train=False)
    logits_changed, _ = model.apply(variables, changed, num_frames=FRAMES, train=False)
    frame0_change = np.max(np.abs(logits_changed[0] - logits[0]))
    if should_mix:
      assert frame0_change > 1e-3
    else:
      assert frame0_change < 1e-6
    np.testing.assert_array_equal(logits_changed[FRAMES:], logits[FRAMES:])


def test_temporal_conv_matches_hand_computation():
  """The temporal conv computes `y_t = sum_k x_{t+k-1} W_k`, zero-padded in time.

  Checked on unit 1 of block 2 against NumPy, from the conv's own input: tap 0
  looks one frame back, tap 2 one frame ahead, and frames beyond the clip are
  zeros ('SAME' padding), within each clip separately.
  """
  model = _tiny_stream()
  variables = _tiny_variables(temporal_noise=1.0)
  _, record = apply_tapped(
      model, variables, _frames(5), num_frames=FRAMES, train=False, taps=['block2_unit1/temporal']
  )
  (inputs,), outputs = record['block2_unit1/temporal']
  inputs, outputs = np.asarray(inputs, np.float64), np.asarray(outputs)
  assert inputs.shape[:2] == (CLIPS, FRAMES) and inputs.ndim == 5
  kernel = np.asarray(variables['params']['block2_unit1']['temporal']['kernel'], np.float64)
  padded = np.pad(inputs, ((0, 0), (1, 1), (0, 0), (0, 0), (0, 0)))
  expected = sum(padded[:, k : k + FRAMES] @ kernel[k, 0, 0] for k in range(3))
  np.testing.assert_allclose(outputs, expected, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------
# The receiving side of the cross-stream connections.


def _gates_like(endpoints, seed, blocks=(1, 2, 3, 4)):
  """Non-negative (post-ReLU-like) gates of the unit-0 endpoint shapes."""
  keys = jax.random.split(jax.random.key(seed), 4)
  return {
      b: jax.random.uniform(keys[b - 1], endpoints[f'block{b}/unit0'].shape, maxval=2.0)
      for b in blocks
  }


def test_zero_gates_equal_no_gates():
  """Gates of zeros make the stream compute exactly the unconnected stream.

  `x + x_pre * 0` is `x`, so a giving stream whose unit-0 outputs are zero
  changes nothing.
  """
  model = _tiny_stream()
  variables = _tiny_variables(temporal_noise=1.0)
  frames = _frames(6)
  plain = model.apply(variables, frames, num_frames=FRAMES, train=False)
  zeros = {b: jnp.zeros_like(plain[1][f'block{b}/unit0']) for b in range(1, 5)}
  gated = model.apply(variables, frames, num_frames=FRAMES, train=False, gates=zeros)
  _assert_trees_close(gated, plain, rtol=0, atol=0)


@pytest.mark.parametrize('layout', ['slim', 'keras'])
def test_gate_enters_residual_branch_of_unit1_only(layout):
  """At each block's unit 1 the residual branch reads `x + x_pre * m`, the shortcut `x`.

  Checked by hand at all four injection points, from the endpoints of the same
  run: the first conv of unit 1 receives `x + x_pre * m` (x, x_pre the unit-0
  output after and before ReLU, m the gate), while `pre - bn3` (the shortcut
  term of the unit's pre-ReLU output) is the plain `x`, subsampled where the
  unit is strided (slim's last unit of blocks 1-3). In slim and keras the
  stride sits in different units, so both are checked.
  """
  model = _tiny_stream(layout)
  variables = _tiny_variables(layout, temporal_noise=1.0)
  frames = _frames(7)
  _, plain_endpoints = model.apply(variables, frames, num_frames=FRAMES, train=False)
  gates = _gates_like(plain_endpoints, seed=8)
  taps = []
  for b in range(1, 5):
    taps += [f'block{b}_unit1', f'block{b}_unit1/conv1', f'block{b}_unit1/bn3']
  (_, endpoints), record = apply_tapped(
      model, variables, frames, num_frames=FRAMES, train=False, gates=gates, taps=taps
  )
  strides = resnet.block_strides(layout)
  for b in range(1, 5):
    x = np.asarray(endpoints[f'block{b}/unit0'])
    x_pre = np.asarray(endpoints[f'block{b}/unit0_pre'])
    m = np.asarray(gates[b])
    unit_args, (_, pre) = record[f'block{b}_unit1']
    np.testing.assert_array_equal(unit_args[0], x)
    (conv1_input,), _ = record[f'block{b}_unit1/conv1']
    np.testing.assert_allclose(conv1_input, x + x_pre * m, rtol=1e-6, atol=1e-6)
    assert np.max(np.abs(conv1_input - x)) > 1e-2
    _, bn3 = record[f'block{b}_unit1/bn3']
    stride = resnet.unit_stride(layout, strides[b - 1], 1, 2)
    # `pre = shortcut + bn3` in float32: rebuilding it from plain `x` must be
    # exact, and from the gated residual it must not be.
    np.testing.assert_allclose(pre, x[:, ::stride, ::stride] + bn3, rtol=1e-6, atol=1e-6)
    gated = (x + x_pre * m)[:, ::stride, ::stride]
    assert np.max(np.abs(np.asarray(pre) - (gated + bn3))) > 1e-2
    # Before the injection point nothing changed: gates only act inside unit 1.
    if b == 1:
      np.testing.assert_array_equal(x, plain_endpoints['block1/unit0'])


@pytest.mark.parametrize('block', [1, 2, 3, 4])
def test_single_gate_changes_stream_from_its_block_on(block):
  """A gate at block b leaves everything before unit 1 of block b unchanged.

  Endpoints of earlier blocks and block b's unit 0 are identical to the
  ungated stream; block b's output and the logits differ.
  """
  model = _tiny_stream()
  variables = _tiny_variables(temporal_noise=1.0)
  frames = _frames(9)
  plain_logits, plain = model.apply(variables, frames, num_frames=FRAMES, train=False)
  gates = _gates_like(plain, seed=10, blocks=(block,))
  logits, gated = model.apply(variables, frames, num_frames=FRAMES, train=False, gates=gates)
  for b in range(1, block):
    for key in (f'block{b}/unit0_pre', f'block{b}/unit0', f'block{b}'):
      np.testing.assert_array_equal(gated[key], plain[key], err_msg=key)
  np.testing.assert_array_equal(gated[f'block{block}/unit0'], plain[f'block{block}/unit0'])
  assert np.max(np.abs(gated[f'block{block}'] - plain[f'block{block}'])) > 1e-3
  assert np.max(np.abs(logits - plain_logits)) > 1e-3
