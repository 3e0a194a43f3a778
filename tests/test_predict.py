"""`predict` on real video files gives what the library's evaluation gives on the same frames."""

import functools
import io
import json
import subprocess
import sys

from conftest import REPO_ROOT, cli_env
import jax
import numpy as np
from PIL import Image
import pytest

import tiny_run
from modistill_jax import finished_stage
from modistill_jax import predict
from modistill_jax import stages
from modistill_jax import steps
from modistill_jax.data import pipeline
from modistill_jax.models import resnet
from modistill_jax.models import stage_network

pytestmark = pytest.mark.usefixtures('fast_compile')


@pytest.fixture(scope='module')
def workdir(tiny_trained_workdir):
  return tiny_trained_workdir


@pytest.fixture(scope='module')
def predictor(workdir):
  return predict.Predictor(workdir, 'step4')


@pytest.fixture(scope='module')
def videos(tmp_path_factory):
  folder = tmp_path_factory.mktemp('videos')
  return {
      'mp4': tiny_run.write_video(
          str(folder / 'long.mp4'), tiny_run.synthetic_frames(11), 'libx264'
      ),
      'avi': tiny_run.write_video(
          str(folder / 'clip.avi'), tiny_run.synthetic_frames(7, seed=1), 'mpeg4'
      ),
      'short': tiny_run.write_video(
          str(folder / 'short.mp4'), tiny_run.synthetic_frames(2, seed=2), 'libx264'
      ),
  }


def png(image: Image.Image) -> bytes:
  buffer = io.BytesIO()
  image.save(buffer, format='PNG')
  return buffer.getvalue()


def _library_outputs(batch, *, state, model, config):
  """Probabilities from the stage network, and the prediction `steps.eval_step` reports."""
  inputs = steps.model_inputs(
      batch, config.input, model.stage.inputs, resnet.compute_dtype(config.model)
  )
  outputs = model.apply(state.variables(), inputs, train=False)
  prediction = steps.eval_step(state, batch, jax.random.key(0), model=model, config=config)
  return jax.nn.softmax(outputs['fused'], axis=-1), prediction['pred/fused']


@pytest.fixture(scope='module')
def library_evaluation(workdir):
  """A video's frames through the evaluation pipeline and the stage model, without `predict`.

  The decoded frames are stored losslessly as a record and read back by
  `pipeline.eval_iterator`; the best step-4 state comes straight from its
  checkpoint.
  """
  run = finished_stage.load(workdir, 'step4')
  config, num_classes = run.config, len(run.class_names)
  stage = stages.for_config('step4', config)
  saved = run.best_state()
  state = steps.TrainState(
      step=saved['step'],
      params=saved['params'],
      batch_stats=saved['batch_stats'],
      opt_state=None,
      frozen={},
  )
  model = stage_network(stage, config.model, num_classes)
  outputs = jax.jit(functools.partial(_library_outputs, model=model, config=config))

  def evaluate(path):
    frames = [png(frame.to_image()) for frame in predict.iter_frames(path)]
    record = {
        'rgb': frames,
        'depth': frames,
        # A record names the modalities it stores by their raw frame counts.
        'rgb_frames_raw': len(frames),
        'depth_frames_raw': len(frames),
        'label': 0,
        'sample_id': path,
    }
    batch = next(
        iter(
            pipeline.eval_iterator(
                [record],
                global_batch_size=1,
                num_frames=config.input.num_frames,
                image_size=(config.input.image_size,) * 2,
                process_index=0,
                process_count=1,
                modalities=stage.inputs,
            )
        )
    )
    probabilities, prediction = outputs(batch, state=state)
    return batch['rgb'], np.asarray(probabilities), int(prediction[0])

  return evaluate


@pytest.mark.parametrize('kind', ['mp4', 'avi'])
def test_predict_equals_library_evaluation(predictor, videos, library_evaluation, kind):
  clips, indices, num_available = predict.sample_clips(
      videos[kind], num_frames=predictor.num_frames, image_size=predictor.image_size
  )
  eval_clips, eval_probabilities, eval_prediction = library_evaluation(videos[kind])
  np.testing.assert_array_equal(clips, eval_clips)
  np.testing.assert_array_equal(indices, [np.rint(np.linspace(0, num_available - 1, 3))])
  assert eval_probabilities.max() < 0.99  # not saturated: the comparison can fail
  probabilities = predictor(clips)
  assert np.abs(probabilities - eval_probabilities).max() <= 1e-5
  assert int(np.argmax(probabilities[0])) == eval_prediction


def test_printed_result_lists_the_top_classes_under_the_video():
  """What `predict` prints without `--output`: the video, its frames and windows, then one
  line per class, names aligned, probabilities to 4 places."""
  top = [{'class': 'walk towards', 'probability': 0.61234}, {'class': 'bow', 'probability': 0.2}]
  result = {'video': 'a.mp4', 'num_frames': 40, 'top_k': top, 'windows': [{}, {}]}
  assert predict.format_result(result) == (
      'a.mp4 (40 frames, 2 windows):\n  walk towards  0.6123\n  bow           0.2000'
  )
  assert predict.format_result({**result, 'windows': [{}]}).splitlines()[0] == 'a.mp4 (40 frames):'


def test_predictor_refuses_clips_of_another_type(predictor, videos):
  clips, _, _ = predict.sample_clips(
      videos['mp4'], num_frames=predictor.num_frames, image_size=predictor.image_size
  )
  with pytest.raises(ValueError, match='Expected uint8 clips'):
    predictor(clips.astype(np.float32))


def test_frames_repeat_when_the_video_is_short(predictor, videos):
  clips, indices, num_available = predict.sample_clips(
      videos['short'], num_frames=3, image_size=predictor.image_size
  )
  assert num_available == 2
  np.testing.assert_array_equal(indices, [[0, 0, 1]])
  np.testing.assert_array_equal(clips[0, 0], clips[0, 1])
  assert not np.array_equal(clips[0, 1], clips[0, 2])
  result = predict.predict_video(predictor, videos['short'], k=3)
  assert sum(c['probability'] for c in result['top_k']) == pytest.approx(1.0, abs=1e-5)


def test_windows_are_sampled_like_clips_and_averaged(predictor, videos):
  np.testing.assert_array_equal(predict.window_indices(11, 3, 1), [[0, 5, 10]])
  np.testing.assert_array_equal(predict.window_indices(11, 3, 2), [[0, 2, 4], [5, 7, 10]])
  with pytest.raises(ValueError, match='cannot fill 3 windows'):
    predict.window_indices(2, 3, 3)
  result = predict.predict_video(predictor, videos['mp4'], windows=2, k=3)
  assert [w['frame_indices'] for w in result['windows']] == [[0, 2, 4], [5, 7, 10]]
  clips, _, _ = predict.sample_clips(
      videos['mp4'], num_frames=3, image_size=predictor.image_size, windows=2
  )
  mean = predictor(clips).mean(axis=0)
  for entry in result['top_k']:
    assert entry['probability'] == pytest.approx(
        mean[predictor.class_names.index(entry['class'])], abs=1e-6
    )


def test_stages_reading_depth_are_refused(workdir):
  with pytest.raises(predict.StageError, match='step2 reads depth and rgb'):
    predict.Predictor(workdir, 'step2')


def test_cli_reports_bad_files_and_goes_on(
    workdir, predictor, videos, tmp_path, compilation_cache_dir
):
  corrupt = tmp_path / 'corrupt.mp4'
  corrupt.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, np.uint8).tobytes())
  empty = tmp_path / 'empty.mp4'
  empty.touch()
  output = tmp_path / 'out.jsonl'
  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'modistill_jax.predict',
          f'--workdir={workdir}',
          '--top_k=3',
          f'--output={output}',
          videos['mp4'],
          str(corrupt),
          str(empty),
          videos['avi'],
      ],
      # One device: the checkpoint, saved by a 4-device job, must open on fewer.
      cwd=REPO_ROOT,
      env=cli_env(compilation_cache_dir, device_count=1),
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert proc.returncode == 1, proc.stderr
  errors = [line for line in proc.stderr.splitlines() if line.startswith('error:')]
  assert len(errors) == 2, proc.stderr
  assert str(corrupt) in errors[0] and str(empty) in errors[1]
  results = [json.loads(line) for line in output.read_text().splitlines()]
  assert [r['video'] for r in results] == [videos['mp4'], videos['avi']]
  for result in results:
    result_probabilities = {c['class']: c['probability'] for c in result['top_k']}
    library = predict.predict_video(predictor, result['video'], k=3)
    for entry in library['top_k']:
      assert abs(result_probabilities[entry['class']] - entry['probability']) <= 1e-5
