"""Step 1 with `init.imagenet` starts from the converted ImageNet weights.

A full-size torchvision `resnet50` state dict of random values (its key names
and shapes, saved as `.safetensors`) is converted with `pretrained.convert`,
then the real trainer runs `configs/demo.py:step1_rgb` with
`init.imagenet=<converted dir>` for one step on the tiny built `synthetic_rgbd`.
The learning rate is 0, so the parameters in the stage's best checkpoint are
still the initial ones and can be compared exactly with the source; BatchNorm
statistics move in training mode, so only parameters are compared.
"""

import os

import numpy as np
import pytest

from conftest import tiny_config
from modistill_jax import checkpointing
from modistill_jax import runs
from modistill_jax import param_merge
from modistill_jax import pretrained
from modistill_jax import trainer

pytestmark = pytest.mark.usefixtures('fast_compile')

STAGE = 'step1_rgb'
SOURCE_CLASSES = 1000
# torchvision's ImageNet normalisation, in 0..255 units (its transforms use 0..1).
TORCH_MEAN = np.array([0.485, 0.456, 0.406]) * 255
TORCH_STD = np.array([0.229, 0.224, 0.225]) * 255
# The full ResNet-50 topology (the converted weights only fit it) on 32x32
# frames, one step at learning rate 0; the rest is the tiny config's.
FULL_SIZE = {
    'model.units_per_block': (3, 4, 6, 3),
    'model.width': 64,
    'input.image_size': 32,
    'optimizer.learning_rate': 0.0,
}


def torchvision_resnet50_state(rng: np.random.Generator) -> dict[str, np.ndarray]:
  """A random `torchvision.models.resnet50()` state dict: its key names and shapes."""
  state = {}

  def conv_bn(conv: str, bn: str, c_out: int, c_in: int, k: int) -> None:
    state[f'{conv}.weight'] = rng.normal(0.0, np.sqrt(2.0 / (k * k * c_in)), (c_out, c_in, k, k))
    state[f'{bn}.weight'] = rng.uniform(0.2, 0.8, c_out)
    state[f'{bn}.bias'] = rng.normal(0.0, 0.2, c_out)
    state[f'{bn}.running_mean'] = rng.normal(0.0, 0.2, c_out)
    state[f'{bn}.running_var'] = rng.uniform(0.5, 2.0, c_out)
    state[f'{bn}.num_batches_tracked'] = np.array(1000, np.int64)

  conv_bn('conv1', 'bn1', 64, 3, 7)
  c_in = 64
  for layer, units in enumerate((3, 4, 6, 3), start=1):
    width = 64 * 2 ** (layer - 1)
    for u in range(units):
      p = f'layer{layer}.{u}'
      conv_bn(f'{p}.conv1', f'{p}.bn1', width, c_in, 1)
      conv_bn(f'{p}.conv2', f'{p}.bn2', width, width, 3)
      conv_bn(f'{p}.conv3', f'{p}.bn3', 4 * width, width, 1)
      if u == 0:
        conv_bn(f'{p}.downsample.0', f'{p}.downsample.1', 4 * width, c_in, 1)
      c_in = 4 * width
  state['fc.weight'] = rng.normal(0.0, 0.05, (SOURCE_CLASSES, 2048))
  state['fc.bias'] = rng.normal(0.0, 0.1, SOURCE_CLASSES)
  return {
      k: v if v.dtype == np.int64 else np.ascontiguousarray(v, np.float32) for k, v in state.items()
  }


@pytest.fixture(scope='module')
def converted(tmp_path_factory):
  """`(source state dict, converted checkpoint dir)` of a random torchvision ResNet-50."""
  import safetensors.numpy  # pylint: disable=g-import-not-at-top

  root = tmp_path_factory.mktemp('imagenet')
  state = torchvision_resnet50_state(np.random.default_rng(0))
  src = str(root / 'resnet50.safetensors')
  safetensors.numpy.save_file(state, src)
  out = str(root / 'converted')
  pretrained.convert('torchvision', src, out)
  return state, out


def imagenet_config(data_dir: str, imagenet_dir: str, stride_layout: str):
  return tiny_config(
      'demo',
      STAGE,
      data_dir=data_dir,
      **FULL_SIZE,
      **{'init.imagenet': imagenet_dir, 'model.stride_layout': stride_layout},
  )


def test_layout_mismatch_names_the_fix(converted, tmp_path, synthetic_data_dir):
  """torchvision-layout weights in a slim-layout model would run with the wrong
  strides; the run refuses before it reads data, compiles or writes anything, and
  the message gives the flag that fixes it."""
  _, out = converted
  config = imagenet_config(synthetic_data_dir, out, 'slim')
  with pytest.raises(
      ValueError, match=r"'torchvision'-layout weights.*--config\.model\.stride_layout=torchvision"
  ):
    trainer.run_stage(config, str(tmp_path), STAGE)
  assert not os.path.exists(os.path.join(tmp_path, STAGE))


@pytest.mark.slow
def test_step1_starts_from_imagenet_weights(converted, tmp_path, synthetic_data_dir):
  """After one step at learning rate 0 the rgb stream's parameters are the
  converted ones, bit for bit (and those are the source's tensors, transposed to
  HWIO); the classifier is a fresh one for the dataset's classes, the temporal
  convs are at their identity init, and the stage records torchvision's input
  normalisation for both modalities, as the weights expect."""
  state, out = converted
  config = imagenet_config(synthetic_data_dir, out, 'torchvision')
  workdir = str(tmp_path)
  trainer.run_stage(config, workdir, STAGE)
  stage_dir = runs.stage_dir(workdir, STAGE)
  params = checkpointing.read_best_state(stage_dir.best_dir)['params']['rgb']
  source, metadata = pretrained.load(out)
  num_classes = len(runs.read_json(stage_dir.dataset_file)['class_names'])
  assert num_classes == 3

  # Named tensors, against the converted checkpoint and the source file.
  np.testing.assert_array_equal(params['conv1']['kernel'], source['params']['conv1']['kernel'])
  np.testing.assert_array_equal(
      params['conv1']['kernel'], state['conv1.weight'].transpose(2, 3, 1, 0)
  )
  np.testing.assert_array_equal(
      params['block2_unit1']['conv2']['kernel'], source['params']['block2_unit1']['conv2']['kernel']
  )
  np.testing.assert_array_equal(
      params['block2_unit1']['conv2']['kernel'],
      state['layer2.1.conv2.weight'].transpose(2, 3, 1, 0),
  )
  np.testing.assert_array_equal(
      params['block4_unit2']['bn3']['scale'], state['layer4.2.bn3.weight']
  )

  # Every parameter but the fresh ones (classifier, temporal convs) is loaded.
  flat = param_merge.flatten(params)
  flat_source = param_merge.flatten(source['params'])
  loaded = [k for k in flat if not k.startswith('logits/') and '/temporal/' not in k]
  assert sorted(loaded) == sorted(
      k for k in flat_source if not k.startswith('logits/') and '/temporal/' not in k
  )
  assert len(loaded) == 53 * 3  # 53 conv + BN pairs: kernel, scale, bias.
  for key in loaded:
    np.testing.assert_array_equal(flat[key], flat_source[key], err_msg=key)

  # The classifier is a fresh one for this dataset, not the 1000-way source one.
  assert source['params']['logits']['kernel'].shape == (2048, SOURCE_CLASSES)
  assert params['logits']['kernel'].shape == (2048, num_classes)
  assert params['logits']['bias'].shape == (num_classes,)
  assert not np.allclose(
      params['logits']['kernel'], source['params']['logits']['kernel'][:, :num_classes]
  )

  # Temporal convs at identity: [0, I, 0] over time.
  temporal = [k for k in flat if k.endswith('/temporal/kernel')]
  assert sorted(temporal) == [f'block{b}_unit1/temporal/kernel' for b in range(1, 5)]
  for key, channels in zip(sorted(temporal), (64, 128, 256, 512)):
    expected = np.zeros((3, 1, 1, channels, channels), np.float32)
    expected[1, 0, 0] = np.eye(channels)
    np.testing.assert_array_equal(flat[key], expected, err_msg=key)

  # Input normalisation of both modalities: the checkpoint's, i.e. torchvision's.
  np.testing.assert_allclose(metadata['mean'], TORCH_MEAN)
  np.testing.assert_allclose(metadata['std'], TORCH_STD)
  recorded = runs.read_json(stage_dir.config_file)['input']
  for modality in ('rgb', 'depth'):
    assert recorded[f'{modality}_mean'] == metadata['mean'], modality
    assert recorded[f'{modality}_std'] == metadata['std'], modality
