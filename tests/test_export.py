"""The exported SavedModel and StableHLO artefact compute what the JAX model computes."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

from modistill_jax import export
from modistill_jax import predict
from modistill_jax.config_lib import TINY
from modistill_jax.config_lib import VGG_MEAN

pytestmark = pytest.mark.usefixtures('fast_compile')


@pytest.fixture(scope='module')
def workdir(tiny_trained_workdir):
  return tiny_trained_workdir


@pytest.fixture(scope='module')
def exported(workdir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('export'))
  export.export(workdir, 'step4', out, fmt='both')
  return out


@pytest.fixture(scope='module')
def predictor(workdir):
  return predict.Predictor(workdir, 'step4')


@pytest.fixture(scope='module')
def frames():
  """Noise around the normalisation mean (see `tiny_run.synthetic_frames` for why)."""
  shape = (3, TINY['input.num_frames'], TINY['input.image_size'], TINY['input.image_size'], 3)
  noise = np.random.default_rng(0).integers(-2, 3, shape)
  return np.rint(np.asarray(VGG_MEAN) + noise).astype(np.uint8)


@pytest.fixture(scope='module')
def jax_probabilities(predictor, frames):
  """The reference, per clip: the first `n` rows are also what a batch of `n` clips gives."""
  probabilities = predictor(frames)
  assert probabilities.max() < 0.99  # not saturated: the comparisons can fail
  return probabilities


def test_metadata_describes_the_serving_input(workdir, exported):
  with open(os.path.join(exported, export.METADATA_FILE)) as f:
    meta = json.load(f)
  with open(os.path.join(workdir, 'step4', 'dataset.json')) as f:
    assert meta['class_names'] == json.load(f)['class_names']
  assert meta['input']['shape'] == [
      None,
      TINY['input.num_frames'],
      TINY['input.image_size'],
      TINY['input.image_size'],
      3,
  ]
  assert meta['input']['dtype'] == 'uint8'
  assert meta['normalization']['mean'] == pytest.approx([123.68, 116.78, 103.94])
  assert meta['files'] == {'saved_model': 'saved_model', 'stablehlo': 'model.stablehlo'}


def test_saved_model_matches_jax_for_any_number_of_clips(exported, frames, jax_probabilities):
  serve = tf.saved_model.load(os.path.join(exported, export.SAVED_MODEL_DIR)).signatures[
      'serving_default'
  ]
  for batch in (1, 3):
    served = serve(frames=tf.constant(frames[:batch]))['probabilities'].numpy()
    assert served.dtype == np.float32 and served.shape == (batch, jax_probabilities.shape[1])
    assert np.abs(served - jax_probabilities[:batch]).max() <= 1e-4


def test_stablehlo_matches_jax(exported, frames, jax_probabilities):
  artefact = export.load_stablehlo(os.path.join(exported, export.STABLEHLO_FILE))
  assert [str(d) for d in artefact.in_avals[0].shape] == ['clips', '3', '16', '16', '3']
  served = np.asarray(artefact.call(frames[:2]))
  assert served.dtype == np.float32
  assert np.abs(served - jax_probabilities[:2]).max() <= 1e-5


def test_stages_reading_depth_are_refused(workdir, tmp_path):
  with pytest.raises(predict.StageError, match='reads depth'):
    export.export(workdir, 'step2', str(tmp_path), fmt='stablehlo')
  assert not os.listdir(tmp_path)
