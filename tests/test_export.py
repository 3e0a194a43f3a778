"""The exported SavedModel and StableHLO artefact compute what the JAX model computes."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf

from conftest import REPO_ROOT
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


def test_command_exports_without_tensorflow_start_up_noise(workdir, tmp_path):
  """Run as a user would (no TF_CPP_MIN_LOG_LEVEL): stderr holds nothing.

  TensorFlow loaded plainly writes six lines there on a machine without CUDA,
  'E0000 ... failed call to cuInit' among them.
  """
  env = {k: v for k, v in os.environ.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  out = tmp_path / 'export'
  result = subprocess.run(
      [
          sys.executable,
          '-m',
          'modistill_jax.export',
          f'--workdir={workdir}',
          f'--out={out}',
          '--format=saved_model',
      ],
      capture_output=True,
      text=True,
      check=False,
      env={**env, 'JAX_PLATFORMS': 'cpu', 'PYTHONPATH': REPO_ROOT},
      cwd=REPO_ROOT,
      timeout=600,
  )
  assert result.returncode == 0, result.stderr
  assert result.stderr == ''
  assert result.stdout.startswith(f'step4 (step 2) for cpu: {out / "saved_model"}, ')
