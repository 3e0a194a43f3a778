"""A whole run on `gs://`: train `:all`, then evaluate and predict from the bucket.

The work folder is `gs://<bucket>/run` on a local GCS emulator (see
`gcs_emulator.py`); every file a stage writes (configs, metrics, TensorBoard
events, Orbax checkpoints with the data iterator, predictions, results, the
lock) must land in the bucket, and nothing under the working directory.
"""

import json
import os
import subprocess
import sys
import urllib.request

import numpy as np

from conftest import REPO_ROOT, cli_env, override_flags
import tiny_run
from modistill_jax import finished_stage
from modistill_jax import runs
from modistill_jax import stages

TIMEOUT_S = 900


def object_names(emulator, bucket: str) -> list[str]:
  name = bucket.removeprefix('gs://')
  with urllib.request.urlopen(f'{emulator.url}/storage/v1/b/{name}/o') as response:
    return sorted(item['name'] for item in json.load(response).get('items', []))


def run(args, env, cwd) -> subprocess.CompletedProcess:
  proc = subprocess.run(
      [sys.executable, '-m', *args],
      cwd=cwd,
      env=env,
      capture_output=True,
      text=True,
      timeout=TIMEOUT_S,
  )
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  return proc


def test_all_stages_evaluate_and_predict_on_gs(
    gcs_emulator, gcs_bucket, tmp_path, synthetic_data_dir, compilation_cache_dir
):
  env = {**cli_env(compilation_cache_dir), **gcs_emulator.env}
  cwd = tmp_path / 'cwd'  # a run that wrote locally by mistake would leave `gs:` here
  cwd.mkdir()
  env['PYTHONPATH'] = REPO_ROOT + os.pathsep + env.get('PYTHONPATH', '')
  workdir = f'{gcs_bucket}/run'
  config = os.path.join(REPO_ROOT, 'configs', 'demo.py')
  overrides = override_flags({'data_dir': synthetic_data_dir, 'num_train_steps': 2})
  run(
      ['modistill_jax.train', f'--config={config}:all', f'--workdir={workdir}', *overrides],
      env,
      cwd,
  )
  names = object_names(gcs_emulator, gcs_bucket)
  for stage in stages.ALL_STAGES:
    for name in (
        runs.CONFIG_FILE,
        runs.DATASET_FILE,
        runs.METRICS_FILE,
        runs.RESULTS_FILE,
        'predictions_test.npz',
    ):
      assert f'run/{stage}/{name}' in names, (stage, name)
    assert any(n.startswith(f'run/{stage}/checkpoints/best/2/') for n in names), stage
    assert any(n.startswith(f'run/{stage}/checkpoints/latest/2/data/') for n in names), stage
    assert any(n.startswith(f'run/{stage}/events/') for n in names), stage
    assert f'run/{stage}/{runs.LOCK_FILE}' not in names  # released
  assert os.listdir(cwd) == []

  # Read back through the library as a notebook would (gcs_bucket pointed this
  # process at the emulator), and through the commands.
  step2 = finished_stage.load(workdir, 'step2')
  proc = run(['modistill_jax.evaluate', f'--workdir={workdir}', '--stage=step2'], env, cwd)
  for stream, accuracy in step2.results['test']['accuracy'].items():
    assert f'"{stream}": {accuracy}' in proc.stdout
  video = tiny_run.write_video(str(tmp_path / 'clip.avi'), tiny_run.synthetic_frames(6), 'mpeg4')
  output = f'{workdir}/predictions.jsonl'
  run(
      [
          'modistill_jax.predict',
          f'--workdir={workdir}',
          '--stage=step4',
          f'--output={output}',
          video,
      ],
      env,
      cwd,
  )
  lines = runs.as_path(output).read_text().splitlines()
  assert len(lines) == 1 and json.loads(lines[0])['video'] == video
  step4 = finished_stage.load(workdir, 'step4')
  with step4.dir.predictions_file('test').open('rb') as f:
    assert {'label', 'pred/fused'} <= set(np.load(f))
  assert os.listdir(cwd) == []
