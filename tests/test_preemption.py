"""A run stopped by SIGTERM and started again ends exactly where an uninterrupted run ends.

The train CLI runs step1_rgb of the demo config (shrunk by `config_lib.TINY`, as flags)
on conftest's tiny dataset, whose epoch is 2 steps, for `NUM_STEPS` steps.
One run is sent SIGTERM once `metrics.jsonl` shows a training record past step
`SIGNAL_AFTER_STEP`; the trainer saves `checkpoints/latest` (with the data
iterator's position) at the step it is on and exits 75 (stopped, rerun to
resume), and the same command resumes it. Periodic checkpoints are off
(`checkpoint_every_steps` > steps), so the resume can only come from the SIGTERM
save. Another run in another workdir goes through without interruption. The
resumed stage's `train_seconds` sums both runs, and counts one resume.

Same compiled steps, same batches and the saved state restored exactly make
the final params bit-identical; a wrong data position (batches repeated,
skipped, or an epoch reshuffled differently) or a lost optimizer or BatchNorm
state would not be.
"""

import json
import os
import re
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO_ROOT, cli_env, override_flags, read_latest_state
from modistill_jax import metrics as metrics_lib
from modistill_jax import trainer

NUM_STEPS = 12
SIGNAL_AFTER_STEP = 3
TIMEOUT_S = 420


def train_command(workdir: str, data_dir: str) -> list[str]:
  overrides = {
      'num_train_steps': NUM_STEPS,
      'log_every_steps': 1,
      'checkpoint_every_steps': 10_000,
      'data_dir': data_dir,
  }
  return [
      sys.executable,
      '-m',
      'modistill_jax.train',
      '--config=configs/demo.py:step1_rgb',
      f'--workdir={workdir}',
      *override_flags(overrides),
  ]


def train_records(stage_dir: str) -> list[dict]:
  path = os.path.join(stage_dir, 'metrics.jsonl')
  if not os.path.exists(path):
    return []
  return [r for r in metrics_lib.read_jsonl(path) if r['split'] == 'train']


def wait_for_train_step(proc: subprocess.Popen, stage_dir: str, step: int) -> None:
  """Polls `metrics.jsonl` until a training record after `step` appears."""
  deadline = time.monotonic() + TIMEOUT_S
  while time.monotonic() < deadline:
    try:
      if any(r['step'] > step for r in train_records(stage_dir)):
        return
    except json.JSONDecodeError:  # a line being written
      pass
    if proc.poll() is not None:
      pytest.fail(
          f'the run exited ({proc.returncode}) before logging step {step + 1}:\n'
          f'{proc.communicate()[0][-5000:]}'
      )
    time.sleep(0.02)
  proc.kill()
  pytest.fail(f'no training record after step {step} within {TIMEOUT_S}s')


def finish(proc: subprocess.Popen, what: str, status: int = 0) -> str:
  try:
    output = proc.communicate(timeout=TIMEOUT_S)[0]
  except subprocess.TimeoutExpired:
    proc.kill()
    pytest.fail(f'{what} timed out:\n{proc.communicate()[0][-5000:]}')
  assert proc.returncode == status, f'{what} ended with {proc.returncode}:\n{output[-5000:]}'
  return output


@pytest.mark.faults
@pytest.mark.slow
def test_sigterm_and_resume_match_uninterrupted_run(
    tmp_path, synthetic_data_dir, compilation_cache_dir
):
  """Final params, optimizer state, losses and test accuracy equal the uninterrupted run's."""
  resumed, reference = str(tmp_path / 'resumed'), str(tmp_path / 'reference')
  stage_dir = os.path.join(resumed, 'step1_rgb')
  popen = dict(
      cwd=REPO_ROOT,
      env=cli_env(compilation_cache_dir),
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )
  reference_proc = subprocess.Popen(train_command(reference, synthetic_data_dir), **popen)
  proc = subprocess.Popen(train_command(resumed, synthetic_data_dir), **popen)
  wait_for_train_step(proc, stage_dir, SIGNAL_AFTER_STEP)
  proc.send_signal(signal.SIGTERM)
  output = finish(proc, 'the run sent SIGTERM', status=trainer.PREEMPTED_EXIT_CODE)

  match = re.search(r'SIGTERM: saved step (\d+); rerun the same command to resume', output)
  if match is None:
    pytest.fail(
        f'the run finished all {NUM_STEPS} steps before SIGTERM reached it (nothing '
        f'was resumed; make NUM_STEPS larger):\n{output[-3000:]}'
    )
  stopped = int(match.group(1))
  assert SIGNAL_AFTER_STEP < stopped < NUM_STEPS
  assert not os.path.exists(os.path.join(stage_dir, 'results.json'))
  assert int(read_latest_state(stage_dir)['step']) == stopped
  first_run = json.load(open(os.path.join(stage_dir, 'train_time.json')))
  assert first_run['runs'] == 1 and first_run['seconds'] > 0

  output = finish(
      subprocess.Popen(train_command(resumed, synthetic_data_dir), **popen), 'the resumed run'
  )
  assert f'resumed at step {stopped}' in output
  finish(reference_proc, 'the uninterrupted run')

  state = read_latest_state(stage_dir)
  expected = read_latest_state(os.path.join(reference, 'step1_rgb'))
  assert int(state['step']) == int(expected['step']) == NUM_STEPS
  for part in ('params', 'batch_stats', 'opt_state'):
    leaves, leaves_expected = (
        jax.tree_util.tree_flatten_with_path(s[part])[0] for s in (state, expected)
    )
    assert [p for p, _ in leaves] == [p for p, _ in leaves_expected]
    for (path, x), (_, y) in zip(leaves, leaves_expected):
      assert np.array_equal(x, y), part + jax.tree_util.keystr(path)

  # Every step trained once, with the loss of the uninterrupted run.
  records = train_records(stage_dir)
  assert [r['step'] for r in records] == list(range(1, NUM_STEPS + 1))
  expected_records = train_records(os.path.join(reference, 'step1_rgb'))
  assert [r['loss'] for r in records] == [r['loss'] for r in expected_records]
  results, expected_results = (
      json.load(open(os.path.join(w, 'step1_rgb', 'results.json'))) for w in (resumed, reference)
  )
  assert results['best_step'] == expected_results['best_step']
  assert results['test'] == expected_results['test']
  # The time of both runs, each up to its last checkpoint, and one resume.
  assert (results['resumes'], expected_results['resumes']) == (1, 0)
  second_run = json.load(open(os.path.join(stage_dir, 'train_time.json')))
  assert second_run['runs'] == 2
  assert first_run['seconds'] < second_run['seconds'] <= results['train_seconds']
