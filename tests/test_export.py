"""The exported SavedModel and StableHLO artefact compute what the JAX model computes."""

import json
import os

import numpy as np
import pytest
import tensorflow as tf

import tiny_run
from modistill_jax import export
from modistill_jax import predict


@pytest.fixture(scope='module')
def workdir(tmp_path_factory):
  return tiny_run.trained_workdir(tmp_path_factory)


@pytest.fixture(scope='module')
def exported(workdir, tmp_path_factory):
  out = str(tmp_path_factory.mktemp('export'))
  export.export(workdir, 'step4', out, fmt='both')
  return out


@pytest.fixture(scope='module')
def predictor(workdir):
  return predict.Predictor(workdir, 'step4')


def clips(batch: int, seed: int) -> np.ndarray:
  shape = (batch, tiny_run.NUM_FRAMES, tiny_run.IMAGE_SIZE, tiny_run.IMAGE_SIZE, 3)
  return np.random.default_rng(seed).integers(0, 256, shape, np.uint8)


def test_metadata_describes_the_serving_input(exported):
  with open(os.path.join(exported, export.METADATA_FILE)) as f:
    meta = json.load(f)
  assert meta['class_names'] == list(tiny_run.CLASS_NAMES)
  assert meta['input']['shape'] == [None, tiny_run.NUM_FRAMES, tiny_run.IMAGE_SIZE,
                                    tiny_run.IMAGE_SIZE, 3]
  assert meta['input']['dtype'] == 'uint8'
  assert meta['normalization']['mean'] == pytest.approx([123.68, 116.78, 103.94])
  assert meta['files'] == {'saved_model': 'saved_model', 'stablehlo': 'model.stablehlo'}


@pytest.mark.parametrize('batch', [1, 3])
def test_saved_model_matches_jax(exported, predictor, batch):
  serve = tf.saved_model.load(os.path.join(exported, export.SAVED_MODEL_DIR)).signatures[
      'serving_default']
  frames = clips(batch, seed=batch)
  served = serve(frames=tf.constant(frames))['probabilities'].numpy()
  assert served.dtype == np.float32 and served.shape == (batch, len(tiny_run.CLASS_NAMES))
  assert np.abs(served - predictor(frames)).max() <= 1e-4


@pytest.mark.parametrize('batch', [1, 2])
def test_stablehlo_matches_jax(exported, predictor, batch):
  artefact = export.load_stablehlo(os.path.join(exported, export.STABLEHLO_FILE))
  assert [str(d) for d in artefact.in_avals[0].shape] == ['clips', '3', '16', '16', '3']
  frames = clips(batch, seed=10 + batch)
  served = np.asarray(artefact.call(frames))
  assert np.abs(served - predictor(frames)).max() <= 1e-5


def test_stages_reading_depth_are_refused(workdir, tmp_path):
  with pytest.raises(predict.StageError, match='reads depth'):
    export.export(workdir, 'step2', str(tmp_path), fmt='stablehlo')
  assert not os.listdir(tmp_path)
