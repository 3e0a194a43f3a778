"""The pretext pretraining (`modistill_jax.pretext`) and its `synthetic_rgbd/pretext` data.

The network is trained by the real trainer on conftest's tiny data (the pretext
data's rendering is tested on its own below), saved as a converted ImageNet
checkpoint, and loaded through `config.init.imagenet` by a step 1 of both streams
at learning rate 0, whose parameters are then the pretext network's, bit for bit,
but for the fresh classifier and temporal convolutions.
"""

import colorsys
import os

import numpy as np
import pytest

from conftest import tiny_config
from data_builders.synthetic_rgbd import Builder
from data_builders.synthetic_rgbd import renderer
from modistill_jax import checkpointing
from modistill_jax import finished_stage
from modistill_jax import param_merge
from modistill_jax import pretext
from modistill_jax import pretrained
from modistill_jax import trainer

pytestmark = pytest.mark.usefixtures('fast_compile')

CONFIGS = {config.name: config.spec for config in Builder.BUILDER_CONFIGS}


@pytest.fixture(scope='module')
def pretext_dir(tmp_path_factory, synthetic_data_dir):
  """`(config, checkpoint dir, metadata)` of the tiny pretext network."""
  config = tiny_config('pretext', 'step1_rgb', data_dir=synthetic_data_dir)
  out = str(tmp_path_factory.mktemp('pretext') / 'checkpoint')
  return config, out, pretext.pretrain(config, out)


@pytest.mark.slow
def test_pretext_is_saved_as_a_converted_imagenet_checkpoint(pretext_dir):
  """`pretrained.load` reads the best state of the pretext run's RGB stream, with metadata
  that says how the network ran and what it reached."""
  config, out, metadata = pretext_dir
  variables, loaded_metadata = pretrained.load(out)
  assert loaded_metadata == metadata
  stage = finished_stage.load(os.path.join(out, pretext.RUN_DIR), pretext.STAGE)
  best = checkpointing.stream_variables(stage.best_state(), 'rgb')
  flat, flat_best = param_merge.flatten(variables), param_merge.flatten(best)
  assert sorted(flat) == sorted(flat_best)
  for key in flat:
    np.testing.assert_array_equal(flat[key], flat_best[key], err_msg=key)
  assert metadata['stride_layout'] == config.model.stride_layout == 'slim'
  assert metadata['mean'] == list(config.input.rgb_mean)
  assert metadata['std'] == list(config.input.rgb_std)
  assert metadata['num_classes'] == 3  # conftest's tiny data
  assert metadata['test_accuracy'] == stage.results['test']['accuracy']['rgb']


def test_pretext_is_cached(pretext_dir, monkeypatch):
  """A second run finds the checkpoint and trains nothing."""
  config, out, metadata = pretext_dir

  def no_training(*args, **kwargs):
    raise AssertionError('trained again')

  monkeypatch.setattr(trainer, 'run_stage', no_training)
  assert pretext.pretrain(config, out) == metadata


def test_pretext_refuses_another_stage(tmp_path, synthetic_data_dir):
  config = tiny_config('pretext', 'step1', data_dir=synthetic_data_dir)
  with pytest.raises(pretext.NotPretextStageError, match=r"'step1_rgb' stage.*'step1'"):
    pretext.pretrain(config, str(tmp_path / 'out'))
  assert not os.path.exists(tmp_path / 'out')


@pytest.mark.slow
def test_both_step1_streams_start_from_the_pretext_network(pretext_dir, tmp_path):
  """`config.init.imagenet` loads it into the RGB and the depth stream, as on NTU both start
  from one ImageNet ResNet-50; the stage runs with the normalisation in its metadata."""
  config, out, metadata = pretext_dir
  step1 = tiny_config(
      'ntu_like',
      'step1',
      data_dir=config.data_dir,
      **{'init.imagenet': out, 'optimizer.learning_rate': 0.0},
  )
  workdir = str(tmp_path)
  trainer.run_stage(step1, workdir, 'step1')
  stage = finished_stage.load(workdir, 'step1')
  assert list(stage.config.input.depth_mean) == metadata['mean']
  source = param_merge.flatten(pretrained.load(out)[0]['params'])
  params = stage.best_state()['params']
  for stream in ('rgb', 'depth'):
    flat = param_merge.flatten(params[stream])
    loaded = [k for k in flat if not k.startswith('logits/') and '/temporal/' not in k]
    assert loaded and len(loaded) == len(
        [k for k in source if not k.startswith('logits/') and '/temporal/' not in k]
    )
    for key in loaded:
      np.testing.assert_array_equal(flat[key], source[key], err_msg=f'{stream}: {key}')


def test_pretext_label_is_the_shirt_hue_and_never_an_action():
  """Each pretext clip's actor is its own (not one of the action datasets' subjects), with a
  shirt whose hue lies inside the label's 45-degree bin; its rooms come from another seed."""
  spec = CONFIGS['pretext']
  assert spec.class_names == renderer.PRETEXT_CLASS_NAMES
  assert spec.seed not in {CONFIGS[name].seed for name in ('default', 'ntu_like', 'tiny')}
  for label in range(len(spec.class_names)):
    for index in range(5):
      rng = np.random.default_rng([spec.seed, 2, label, index])
      shirt = renderer._pretext_subject(label, rng).colours[1]  # pylint: disable=protected-access
      hue = colorsys.rgb_to_hsv(*shirt)[0] * len(spec.class_names)
      assert label < hue < label + 1, (label, index, hue)
  clip = renderer.render_clip(CONFIGS['pretext_tiny'], 3, 5)
  assert clip['rgb'].shape == (8, 32, 32, 3)
  np.testing.assert_array_equal(
      clip['rgb'], renderer.render_clip(CONFIGS['pretext_tiny'], 3, 5)['rgb']
  )
