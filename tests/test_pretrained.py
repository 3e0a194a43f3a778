"""ImageNet checkpoint conversion, checked against the source frameworks.

Each source network gets random weights (BatchNorm statistics and Keras' conv
biases included, so the folding is exercised), is saved in its framework's own
file format, converted, and the converted Stream's logits are compared with the
framework's on the same RGB images, each side fed its own preprocessing.
torchvision itself has no CPU build here, so its state dict is written with
torchvision's key names and shapes, and its forward pass is a numpy transcription
of torchvision's `resnet50` (NCHW, PyTorch padding), independent of the Stream.
"""

import functools
import importlib
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from modistill_jax import param_merge
from modistill_jax import pretrained
from modistill_jax.models import resnet

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')

# Keras' set_weights hands numpy an object without the `copy` keyword, once per array.
pytestmark = pytest.mark.filterwarnings('ignore:__array__ implementation:DeprecationWarning')

TOLERANCE = 1e-4
NUM_IMAGES = 2
SLIM_MEAN = np.array([123.68, 116.78, 103.94], np.float32)
CAFFE_BGR_MEAN = np.array([103.939, 116.779, 123.68], np.float32)
TORCH_MEAN = np.array([0.485, 0.456, 0.406]) * 255
TORCH_STD = np.array([0.229, 0.224, 0.225]) * 255


@pytest.fixture(scope='module')
def images():
  """RGB photos-to-be: integer values in 0..255, as decoded JPEGs would be."""
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (NUM_IMAGES, 224, 224, 3)).astype(np.float32)


def _random_value(kind, shape, rng):
  """Random weights that keep a 50-layer network's activations moderate."""
  if kind == 'kernel':
    fan_in = int(np.prod(shape[:-1]))
    return rng.normal(0.0, np.sqrt(2.0 / fan_in), shape)
  if kind == 'gamma':
    return rng.uniform(0.2, 0.8, shape)
  if kind == 'var':
    return rng.uniform(0.5, 2.0, shape)
  return rng.normal(0.0, 0.2, shape)  # beta, moving mean, biases.


def _max_diff(a, b):
  a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
  assert a.shape == b.shape, (a.shape, b.shape)
  return float(np.max(np.abs(a - b)))


# ---------------------------------------------------------------------------
# TF-slim.


def _import_tf_slim():
  """tf_slim's batch norm imports `tf_keras.legacy_tf_layers`, which tf_keras 2.21
  keeps under `tf_keras.src`; alias it before tf_slim builds a layer."""
  for name in ('legacy_tf_layers', 'legacy_tf_layers.normalization'):
    sys.modules.setdefault(f'tf_keras.{name}', importlib.import_module(f'tf_keras.src.{name}'))
  import tf_slim  # pylint: disable=g-import-not-at-top
  from tf_slim.nets import resnet_v1  # pylint: disable=g-import-not-at-top

  return tf_slim, resnet_v1


def _slim_kind(name):
  for suffix, kind in (('weights', 'kernel'), ('gamma', 'gamma'), ('moving_variance', 'var')):
    if name.endswith(suffix):
      return kind
  return 'other'


@pytest.fixture(scope='module')
def slim_case(tmp_path_factory, images):
  """A random `resnet_v1_50` saved as a V1 checkpoint (the model zoo's format),
  its logits on the images, and its variables."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  tf1 = tf.compat.v1
  slim, resnet_v1 = _import_tf_slim()
  path = str(tmp_path_factory.mktemp('slim') / 'resnet_v1_50.ckpt')
  rng = np.random.default_rng(1)
  with tf.Graph().as_default():
    inputs = tf1.placeholder(tf.float32, (None, 224, 224, 3))
    with slim.arg_scope(resnet_v1.resnet_arg_scope()):
      logits, _ = resnet_v1.resnet_v1_50(inputs, num_classes=1000, is_training=False)
    variables = tf1.global_variables()
    with tf1.Session() as sess:
      values = {}
      for v in variables:
        values[v.op.name] = _random_value(_slim_kind(v.op.name), v.shape.as_list(), rng).astype(
            np.float32
        )
        v.load(values[v.op.name], sess)
      tf1.train.Saver(variables, write_version=tf1.train.SaverDef.V1).save(
          sess, path, write_meta_graph=False
      )
      expected = sess.run(logits, {inputs: images - SLIM_MEAN})[:, 0, 0, :]
  return path, expected, values


@pytest.mark.slow
def test_slim_conversion_matches_tf_slim(slim_case, images, tmp_path):
  path, expected, _ = slim_case
  metadata = pretrained.convert('slim', path, str(tmp_path))
  assert metadata['stride_layout'] == 'slim'
  assert metadata['num_classes'] == 1000 and not metadata['background_class']
  assert metadata['mean'] == [123.68, 116.78, 103.94] and metadata['std'] == [1, 1, 1]
  logits = pretrained.imagenet_classifier(str(tmp_path))(images)
  assert np.abs(expected).max() > 1.0  # A comparison that could fail.
  diff = _max_diff(logits, expected)
  print(f'slim: max abs difference {diff:.3g}, max |logit| {np.abs(expected).max():.3g}')
  assert diff <= TOLERANCE


@pytest.mark.slow
def test_slim_background_class_is_kept(slim_case, tmp_path):
  """A 1001-way slim classifier (index 0: background) stays 1001-way; a V2
  checkpoint with a `global_step` converts too."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top

  _, _, values = slim_case
  rng = np.random.default_rng(2)
  values = dict(values)
  values['resnet_v1_50/logits/weights'] = rng.normal(size=(1, 1, 2048, 1001)).astype(np.float32)
  values['resnet_v1_50/logits/biases'] = rng.normal(size=(1001,)).astype(np.float32)
  values['global_step'] = np.array(100, np.int64)  # Training bookkeeping, ignored.
  path = str(tmp_path / 'model.ckpt')  # A V2 checkpoint this time.
  tf.raw_ops.SaveV2(
      prefix=path,
      tensor_names=list(values),
      shape_and_slices=[''] * len(values),
      tensors=list(values.values()),
  )
  metadata = pretrained.convert('slim', path, str(tmp_path / 'out'))
  assert metadata['num_classes'] == 1001 and metadata['background_class']
  loaded, _ = pretrained.load(str(tmp_path / 'out'))
  np.testing.assert_array_equal(
      loaded['params']['logits']['kernel'], values['resnet_v1_50/logits/weights'][0, 0]
  )


# ---------------------------------------------------------------------------
# Keras.


_KERAS_KINDS = {'kernel': 'kernel', 'gamma': 'gamma', 'moving_variance': 'var'}


@pytest.fixture(scope='module')
def keras_case(tmp_path_factory, images):
  """A random Keras 3 `ResNet50` saved as Keras 3 `.weights.h5`, as a legacy
  Keras 3 `.h5` and (through tf_keras) as a Keras 2 `.h5` like the downloadable
  file; its logits on the images."""
  import keras  # pylint: disable=g-import-not-at-top
  import tf_keras  # pylint: disable=g-import-not-at-top

  directory = tmp_path_factory.mktemp('keras')
  rng = np.random.default_rng(3)
  model = keras.applications.ResNet50(weights=None, classifier_activation=None)
  for layer in model.layers:
    if layer.weights:
      layer.set_weights(
          [
              _random_value(_KERAS_KINDS.get(w.name, 'other'), tuple(w.shape), rng).astype(
                  np.float32
              )
              for w in layer.weights
          ]
      )
  bgr = images[..., ::-1] - CAFFE_BGR_MEAN
  expected = np.asarray(model(bgr, training=False))
  paths = {
      'keras3': str(directory / 'resnet50.weights.h5'),
      'keras3_legacy': str(directory / 'resnet50_keras3.h5'),
      'keras2': str(directory / 'resnet50_weights_tf_dim_ordering_tf_kernels.h5'),
  }
  model.save_weights(paths['keras3'])
  model.save(paths['keras3_legacy'])
  model2 = tf_keras.applications.ResNet50(weights=None, classifier_activation=None)
  for layer in model2.layers:
    if layer.weights:
      layer.set_weights(model.get_layer(layer.name).get_weights())
  model2.save_weights(paths['keras2'])
  return paths, expected


@pytest.mark.slow
def test_keras_conversion_matches_keras(keras_case, images, tmp_path):
  paths, expected = keras_case
  metadata = pretrained.convert('keras', paths['keras2'], str(tmp_path))
  assert metadata['stride_layout'] == 'keras' and metadata['num_classes'] == 1000
  assert metadata['mean'] == [123.68, 116.779, 103.939] and metadata['channel_order'] == 'RGB'
  logits = pretrained.imagenet_classifier(str(tmp_path))(images)
  assert np.abs(expected).max() > 1.0
  diff = _max_diff(logits, expected)
  print(f'keras: max abs difference {diff:.3g}, max |logit| {np.abs(expected).max():.3g}')
  assert diff <= TOLERANCE


@pytest.mark.slow
def test_keras_file_layouts_convert_alike(keras_case):
  paths, _ = keras_case
  converted = {
      name: pretrained.convert_arrays('keras', pretrained.read_keras(path))
      for name, path in paths.items()
  }
  reference, num_classes = converted.pop('keras2')
  assert num_classes == 1000
  for name, (variables, _) in converted.items():
    flat, flat_ref = param_merge.flatten(variables), param_merge.flatten(reference)
    assert flat.keys() == flat_ref.keys(), name
    for key in flat_ref:
      np.testing.assert_array_equal(flat[key], flat_ref[key], err_msg=f'{name} {key}')


# ---------------------------------------------------------------------------
# torchvision.


def _torchvision_state_dict(rng, num_classes=1000):
  """Random `torchvision.models.resnet50()` state dict: its key names and shapes."""
  state = {}

  def conv(name, c_out, c_in, k):
    kernel = _random_value('kernel', (k, k, c_in, c_out), rng)
    state[f'{name}.weight'] = kernel.transpose(3, 2, 0, 1)

  def bn(name, c):
    state[f'{name}.weight'] = _random_value('gamma', (c,), rng)
    state[f'{name}.bias'] = _random_value('other', (c,), rng)
    state[f'{name}.running_mean'] = _random_value('other', (c,), rng)
    state[f'{name}.running_var'] = _random_value('var', (c,), rng)
    state[f'{name}.num_batches_tracked'] = np.array(1000, np.int64)

  conv('conv1', 64, 3, 7)
  bn('bn1', 64)
  c_in = 64
  for layer, blocks in enumerate((3, 4, 6, 3), start=1):
    width = 64 * 2 ** (layer - 1)
    for i in range(blocks):
      p = f'layer{layer}.{i}'
      conv(f'{p}.conv1', width, c_in, 1)
      bn(f'{p}.bn1', width)
      conv(f'{p}.conv2', width, width, 3)
      bn(f'{p}.bn2', width)
      conv(f'{p}.conv3', 4 * width, width, 1)
      bn(f'{p}.bn3', 4 * width)
      if i == 0:
        conv(f'{p}.downsample.0', 4 * width, c_in, 1)
        bn(f'{p}.downsample.1', 4 * width)
      c_in = 4 * width
  state['fc.weight'] = rng.normal(0.0, 0.05, (num_classes, 2048))
  state['fc.bias'] = rng.normal(0.0, 0.1, (num_classes,))
  # Contiguous, as PyTorch saves them (safetensors' numpy API writes other
  # arrays in their memory order).
  return {
      k: v if v.dtype == np.int64 else np.ascontiguousarray(v, np.float32) for k, v in state.items()
  }


def _torch_conv(x, w, stride=1, padding=0):
  """`nn.Conv2d(bias=False)` on NCHW with OIHW weights, in float64."""
  x = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
  windows = np.lib.stride_tricks.sliding_window_view(x, w.shape[2:], axis=(2, 3))
  windows = windows[:, :, ::stride, ::stride]
  return np.einsum('nchwij,ocij->nohw', windows, w, optimize=True)


def _torch_bn(x, state, name):
  shape = (1, -1, 1, 1)
  var = state[f'{name}.running_var'].astype(np.float64)
  scale = state[f'{name}.weight'] / np.sqrt(var + 1e-5)
  return (x - state[f'{name}.running_mean'].reshape(shape)) * scale.reshape(shape) + state[
      f'{name}.bias'
  ].reshape(shape)


def _torchvision_forward(state, images):
  """torchvision `resnet50` ("v1.5": stride on the 3x3) in numpy, NCHW."""
  relu = functools.partial(np.maximum, 0.0)
  x = ((images - TORCH_MEAN) / TORCH_STD).transpose(0, 3, 1, 2).astype(np.float64)
  x = relu(_torch_bn(_torch_conv(x, state['conv1.weight'], 2, 3), state, 'bn1'))
  x = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
  x = np.lib.stride_tricks.sliding_window_view(x, (3, 3), axis=(2, 3))
  x = x[:, :, ::2, ::2].max((-2, -1))
  for layer, blocks in enumerate((3, 4, 6, 3), start=1):
    for i in range(blocks):
      p = f'layer{layer}.{i}'
      stride = 2 if layer > 1 and i == 0 else 1
      out = relu(_torch_bn(_torch_conv(x, state[f'{p}.conv1.weight']), state, f'{p}.bn1'))
      out = relu(
          _torch_bn(_torch_conv(out, state[f'{p}.conv2.weight'], stride, 1), state, f'{p}.bn2')
      )
      out = _torch_bn(_torch_conv(out, state[f'{p}.conv3.weight']), state, f'{p}.bn3')
      if i == 0:
        x = _torch_bn(
            _torch_conv(x, state[f'{p}.downsample.0.weight'], stride), state, f'{p}.downsample.1'
        )
      x = relu(out + x)
  return x.mean((2, 3)) @ state['fc.weight'].T + state['fc.bias']


@pytest.fixture(scope='module')
def torchvision_case(tmp_path_factory):
  import safetensors.numpy  # pylint: disable=g-import-not-at-top

  state = _torchvision_state_dict(np.random.default_rng(4))
  path = str(tmp_path_factory.mktemp('torchvision') / 'resnet50-0676ba61.safetensors')
  safetensors.numpy.save_file(state, path)
  return path, state


@pytest.mark.slow
def test_torchvision_conversion_matches_reference(torchvision_case, images, tmp_path):
  path, state = torchvision_case
  metadata = pretrained.convert('torchvision', path, str(tmp_path))
  assert metadata['stride_layout'] == 'torchvision' and metadata['num_classes'] == 1000
  np.testing.assert_allclose(metadata['mean'], TORCH_MEAN)
  np.testing.assert_allclose(metadata['std'], TORCH_STD)
  expected = _torchvision_forward(state, images)
  logits = pretrained.imagenet_classifier(str(tmp_path))(images)
  assert np.abs(expected).max() > 1.0
  diff = _max_diff(logits, expected)
  print(f'torchvision: max abs difference {diff:.3g}, max |logit| {np.abs(expected).max():.3g}')
  assert diff <= TOLERANCE


def test_torchvision_every_entry_is_used(torchvision_case):
  """Conversion is strict: every key but `num_batches_tracked` fills one parameter
  (a stray key would raise), and every Stream parameter comes from the file."""
  _, state = torchvision_case
  variables, _ = pretrained.convert_arrays('torchvision', state)
  flat = param_merge.flatten(variables)
  non_temporal = [k for k in flat if '/temporal/' not in k]
  tracked = [k for k in state if k.endswith('num_batches_tracked')]
  # Each conv + BN pair is 5 source entries and 5 Stream entries; fc is 2 and 2.
  assert len(non_temporal) == len(state) - len(tracked)
  np.testing.assert_array_equal(
      flat['params/block2_unit0/shortcut/kernel'],
      state['layer2.0.downsample.0.weight'].transpose(2, 3, 1, 0),
  )
  np.testing.assert_array_equal(
      flat['batch_stats/block4_unit2/bn3/var'], state['layer4.2.bn3.running_var']
  )
  np.testing.assert_array_equal(flat['params/logits/kernel'], state['fc.weight'].T)
  for b, c in zip(range(1, 5), (64, 128, 256, 512)):
    kernel = flat[f'params/block{b}_unit1/temporal/kernel']
    np.testing.assert_array_equal(kernel[1, 0, 0], np.eye(c))
    assert not kernel[0].any() and not kernel[2].any()


def test_misfit_checkpoint_lists_every_problem(torchvision_case):
  _, state = torchvision_case
  state = dict(state)
  del state['layer3.1.bn2.running_var']
  state['layer2.0.conv2.weight'] = state['layer2.0.conv2.weight'][:, :, :1, :1]
  state['layer5.0.conv1.weight'] = np.zeros((1, 1, 1, 1), np.float32)
  with pytest.raises(param_merge.MergeError) as error:
    pretrained.convert_arrays('torchvision', state, what='resnet50.pth')
  message = str(error.value)
  assert 'resnet50.pth does not fit the model' in message
  assert 'source entries missing (1):\n    layer3.1.bn2.running_var' in message
  assert 'source entries not used (1):\n    layer5.0.conv1.weight' in message
  assert (
      'params/block2_unit0/conv2/kernel: resnet50.pth (1, 1, 128, 128) ' 'vs model (3, 3, 128, 128)'
  ) in message


def test_converted_checkpoint_starts_a_60_class_stream(torchvision_case, tmp_path):
  path, _ = torchvision_case
  pretrained.convert('torchvision', path, str(tmp_path))
  loaded, metadata = pretrained.load(str(tmp_path))
  model = resnet.Stream(num_classes=60, **pretrained.stream_kwargs(metadata))
  init = jax.eval_shape(
      functools.partial(model.init, num_frames=1, train=False),
      jax.random.key(0),
      jnp.zeros((1, 224, 224, 3)),
  )
  init = jax.tree.map(lambda s: np.full(s.shape, 7.0, s.dtype), dict(init))
  merged = param_merge.merge(init, loaded, fresh=pretrained.FRESH_PATTERNS)
  assert merged['params']['logits']['kernel'].shape == (2048, 60)
  assert (merged['params']['logits']['kernel'] == 7.0).all()
  assert (merged['params']['block3_unit1']['temporal']['kernel'] == 7.0).all()
  np.testing.assert_array_equal(
      merged['params']['block3_unit1']['conv2']['kernel'],
      loaded['params']['block3_unit1']['conv2']['kernel'],
  )
  # Per collection, the unprefixed patterns work too.
  params = param_merge.merge(
      init['params'], loaded['params'], fresh=[r'logits/.*', r'.*temporal/.*']
  )
  assert params['logits']['bias'].shape == (60,)
  with pytest.raises(param_merge.MergeError, match='logits'):
    param_merge.merge(init, loaded, fresh=[r'.*temporal/.*'])


@pytest.mark.slow
def test_cli_converts_a_file(torchvision_case, tmp_path):
  path, state = torchvision_case
  out = tmp_path / 'imagenet'
  result = subprocess.run(
      [
          sys.executable,
          '-m',
          'modistill_jax.pretrained',
          '--format=torchvision',
          f'--src={path}',
          f'--out={out}',
      ],
      capture_output=True,
      text=True,
      check=False,
      env={**os.environ, 'JAX_PLATFORMS': 'cpu'},
      timeout=120,
  )
  assert result.returncode == 0, result.stderr
  with open(out / 'metadata.json') as f:
    metadata = json.load(f)
  assert metadata['source_file'] == os.path.basename(path)
  assert metadata['source_format'] == metadata['stride_layout'] == 'torchvision'
  loaded, _ = pretrained.load(str(out))
  np.testing.assert_array_equal(
      loaded['params']['conv1']['kernel'], state['conv1.weight'].transpose(2, 3, 1, 0)
  )
  np.testing.assert_array_equal(loaded['batch_stats']['bn1']['mean'], state['bn1.running_mean'])


def test_pth_without_torch_says_what_to_do(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'torch', None)  # `import torch` fails.
  path = tmp_path / 'resnet50-0676ba61.pth'
  path.write_bytes(b'')
  with pytest.raises(ImportError, match='needs PyTorch.*safetensors'):
    pretrained.read_torchvision(str(path))


@pytest.mark.slow
def test_cli_converts_slim_without_tensorflow_start_up_noise(slim_case, tmp_path):
  """Run as a user would (no TF_CPP_MIN_LOG_LEVEL): stderr holds nothing, `--help` its flags."""
  path, _, _ = slim_case
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  command = [sys.executable, '-m', 'modistill_jax.pretrained']
  result = subprocess.run(
      [*command, '--format=slim', f'--src={path}', f'--out={tmp_path / "slim"}'],
      capture_output=True,
      text=True,
      check=False,
      env={**env, 'JAX_PLATFORMS': 'cpu'},
      timeout=300,
  )
  assert result.returncode == 0, result.stderr
  assert result.stderr == ''  # TensorFlow alone writes 6 lines, cuInit's error among them
  assert json.loads(result.stdout)['source_format'] == 'slim'
  usage = subprocess.run(
      [*command, '--help'], capture_output=True, text=True, check=False, env=env, timeout=120
  )
  assert 'Traceback' not in usage.stderr
  for flag in ('--format: <slim|keras|torchvision>', '--src', '--out', '--ignore'):
    assert flag in usage.stdout, usage.stdout
