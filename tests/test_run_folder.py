"""A run folder that cannot lie: kills, reruns, other command lines, two jobs, bad disks.

Each test is one way a user can make a run folder report numbers that are not
true (issue: kill during the best save, evaluate from another command line,
resume with other flags, divergence, two jobs, unwritable or corrupted
checkpoints, missing prerequisites, reruns of finished stages), and checks the
run folder's answer: the uninterrupted run's numbers, or a clear refusal.

The subprocess runs train step1_rgb of the demo config on conftest's tiny
dataset (2 steps per epoch) for `NUM_STEPS` steps, validating every epoch, on
one CPU device (`env`): what these tests check is the run folder's
bookkeeping, which is the same on any number of devices, and a stage on one
device costs a fraction of one on four (Orbax saves each array from every
device's replica; see `env`). Stopping and resuming on several devices is
checked bit for bit by tests/test_preemption.py (SIGTERM, four devices) and
tests/test_multiprocess.py (two processes).
"""

import ast
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from conftest import REPO_ROOT, assert_trees_close, cli_env, once_per_run, override_flags
from conftest import tiny_config
import tiny_run
from modistill_jax import checkpointing
from modistill_jax import evaluate
from modistill_jax import evaluators
from modistill_jax import finished_stage
from modistill_jax import metrics as metrics_lib
from modistill_jax import predict
from modistill_jax import runs
from modistill_jax import trainer

pytestmark = pytest.mark.usefixtures('fast_compile')

NUM_STEPS = 6
STAGE = 'step1_rgb'
TIMEOUT_S = 420


def train_args(workdir, data_dir, **overrides) -> list[str]:
  values = {
      'num_train_steps': NUM_STEPS,
      'checkpoint_every_steps': 2,
      'data_dir': data_dir,
      'max_eval_batches': -1,
      **overrides,
  }
  return [f'--config=configs/demo.py:{STAGE}', f'--workdir={workdir}', *override_flags(values)]


def run_cli(args, env, *, driver_point=None, check=True) -> subprocess.CompletedProcess:
  program = (
      [os.path.join(REPO_ROOT, 'tests', 'crash_driver.py'), driver_point]
      if driver_point
      else ['-m', 'modistill_jax.train']
  )
  proc = subprocess.run(
      [sys.executable, *program, *args],
      cwd=REPO_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=TIMEOUT_S,
  )
  if check:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
  return proc


def demo_config(stage, data_dir, **overrides):
  return tiny_config('demo', stage, data_dir=data_dir, **overrides)


def outcome(workdir: str) -> dict:
  """What a finished stage reports: results, best weights, and its metric records."""
  directory = runs.stage_dir(workdir, STAGE)
  results = runs.read_json(directory.results_file)
  records = metrics_lib.read_jsonl(directory.metrics_file)
  return {
      'results': {k: results[k] for k in ('best_step', 'selected_on', 'test')},
      'best': checkpointing.read_best_state(directory.best_dir),
      'records': {
          split: [
              (r['step'], r.get('loss'), r.get('accuracy/rgb'))
              for r in records
              if r['split'] == split
          ]
          for split in ('train', 'validation', 'test')
      },
  }


def assert_same_outcome(actual: dict, expected: dict) -> None:
  assert actual['results'] == expected['results']
  assert_trees_close(actual['best'], expected['best'])
  assert actual['records'] == expected['records']


@pytest.fixture(scope='session')
def env(compilation_cache_dir):
  """The training subprocesses' environment: one CPU device (see the module docstring).

  A 6-step stage with its checkpoints took 10 s of CPU on one device and 13-17 s
  on four (warm compilation cache, the shared 2-core machine under load).
  """
  return cli_env(compilation_cache_dir, device_count=1)


@pytest.fixture(scope='session')
def uninterrupted(tmp_path_factory, synthetic_data_dir, env):
  """The uninterrupted command's run and outcome, made once per pytest run (`once_per_run`), so
  the crash tests that compare with it spread over the xdist workers."""
  workdir = once_per_run(
      tmp_path_factory,
      'run_folder_uninterrupted',
      lambda workdir: run_cli(train_args(workdir, synthetic_data_dir), env),
  )
  return workdir, outcome(workdir)


@pytest.mark.slow
def test_uninterrupted_run_records_each_step_once(uninterrupted):
  _, expected = uninterrupted
  assert [s for s, _, _ in expected['records']['train']] == list(range(1, NUM_STEPS + 1))
  assert [s for s, _, _ in expected['records']['validation']] == [2, 4, 6]
  assert len(expected['records']['test']) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    'point',
    ['best_save_started:2', 'best_save_committed:2', 'latest_save_started:2', 'before_results'],
)
@pytest.mark.faults
def test_sigkill_then_same_command_gives_uninterrupted_results(
    point, tmp_path, uninterrupted, synthetic_data_dir, env
):
  """SIGKILL at the moments the bookkeeping could disagree with the checkpoints, then rerun.

  `best_save_*:2` is the second best save (validation at step 4 ties or beats
  step 2's, which `selection_ties='later'` keeps), so an earlier best exists,
  the case where a stale record once pointed at a step the checkpoint lacked.
  """
  _, expected = uninterrupted
  accuracies = [acc for _, _, acc in expected['records']['validation']]
  best_saves = sum(acc >= max(accuracies[: i + 1]) for i, acc in enumerate(accuracies))
  if point.endswith(':2') and best_saves < 2:
    point = point.replace(':2', ':1')  # this data's validation never ties or improves again
  workdir = str(tmp_path)
  crashed = run_cli(train_args(workdir, synthetic_data_dir), env, driver_point=point, check=False)
  assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-3000:]
  directory = runs.stage_dir(workdir, STAGE)
  assert not directory.finished()
  checkpointed = any(p.name.isdigit() for p in directory.latest_dir.iterdir())
  rerun = run_cli(train_args(workdir, synthetic_data_dir), env)
  assert ('resumed at step' in rerun.stdout) == checkpointed
  assert_same_outcome(outcome(workdir), expected)


@pytest.mark.faults
@pytest.mark.slow
def test_external_kill_just_after_a_new_best_validation(
    tmp_path, uninterrupted, synthetic_data_dir, env
):
  """kill -9 from outside the moment the second validation line is printed."""
  _, expected = uninterrupted
  workdir = str(tmp_path)
  proc = subprocess.Popen(
      [sys.executable, '-m', 'modistill_jax.train', *train_args(workdir, synthetic_data_dir)],
      cwd=REPO_ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.DEVNULL,
      text=True,
  )
  validations = 0
  for line in proc.stdout:
    if 'validation accuracy' in line:
      validations += 1
      if validations == 2:
        proc.kill()
        break
  proc.wait(timeout=TIMEOUT_S)
  assert validations == 2 and proc.returncode == -signal.SIGKILL
  run_cli(train_args(workdir, synthetic_data_dir), env)
  assert_same_outcome(outcome(workdir), expected)


def test_all_rerun_after_completion_does_nothing_and_says_so(
    tiny_trained_workdir, synthetic_data_dir, capsys
):
  config = tiny_run.run_config(synthetic_data_dir)
  before = {
      s: runs.stage_dir(tiny_trained_workdir, s).results_file.stat().mtime
      for s in ('step1', 'step2', 'step3', 'step4')
  }
  results = trainer.train_and_evaluate(config, tiny_trained_workdir)
  assert all(r['skipped'] for r in results.values())
  assert capsys.readouterr().out.count('nothing to do') == 4
  after = {s: runs.stage_dir(tiny_trained_workdir, s).results_file.stat().mtime for s in before}
  assert after == before


def test_evaluate_takes_the_network_from_the_run(
    tiny_trained_workdir, synthetic_data_dir, compilation_cache_dir
):
  """A command line whose network differs from the run's is refused; no config uses the run's."""
  run = finished_stage.load(tiny_trained_workdir, 'step2')
  given = tiny_run.run_config(synthetic_data_dir)
  given.model.connections = False
  with pytest.raises(
      evaluate.ConflictingConfigError, match=r'model.connections: run has True, given False'
  ):
    evaluate.evaluation_config(run, given)
  given.model.connections = True
  given.eval.split = 'validation'
  given.optimizer.learning_rate = 123.0  # training-only: ignored
  config = evaluate.evaluation_config(run, given)
  assert config.eval.split == 'validation'
  assert config.optimizer.learning_rate == run.config.optimizer.learning_rate
  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'modistill_jax.evaluate',
          f'--workdir={tiny_trained_workdir}',
          '--stage=step2',
      ],
      cwd=REPO_ROOT,
      env=cli_env(compilation_cache_dir),  # the devices of the run it evaluates
      capture_output=True,
      text=True,
      timeout=TIMEOUT_S,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  for stream, accuracy in run.results['test']['accuracy'].items():
    assert f'"{stream}": {accuracy}' in proc.stdout


def test_resume_with_other_settings_is_refused(tmp_path, synthetic_data_dir):
  workdir = str(tmp_path)
  config = demo_config(STAGE, synthetic_data_dir, num_train_steps=2, checkpoint_every_steps=2)
  trainer.run_stage(config, workdir, STAGE)
  directory = runs.stage_dir(workdir, STAGE)
  directory.results_file.unlink()  # as if killed before the end
  saved_config = directory.config_file.read_text()
  changed = demo_config(
      STAGE,
      synthetic_data_dir,
      num_train_steps=2,
      checkpoint_every_steps=2,
      batch_size=8,
      **{'optimizer.learning_rate': 0.5},
  )
  with pytest.raises(trainer.ConfigMismatchError) as error:
    trainer.run_stage(changed, workdir, STAGE)
  message = str(error.value)
  assert 'optimizer.learning_rate: run has 0.001, given 0.5' in message
  assert 'batch_size: run has 4, given 8' in message
  assert '--config.optimizer.learning_rate=0.001' in message
  assert '--config.batch_size=4' in message
  assert directory.config_file.read_text() == saved_config
  # Cadence and worker settings may change.
  relaxed = demo_config(
      STAGE, synthetic_data_dir, num_train_steps=2, checkpoint_every_steps=5, log_every_steps=2
  )
  assert trainer.run_stage(relaxed, workdir, STAGE)['best_step'] == 2
  # Finished: the same settings find its results; others are refused, not answered with them,
  # except evaluation settings, which are for evaluating it again (`train --reevaluate`).
  assert trainer.run_stage(relaxed, workdir, STAGE)['skipped']
  evaluation = {'eval.split': 'validation', 'eval.depth_noise_std': 0.1, 'eval_batch_size': 3}
  other_evaluation = demo_config(STAGE, synthetic_data_dir, num_train_steps=2, **evaluation)
  assert trainer.run_stage(other_evaluation, workdir, STAGE)['skipped']
  with pytest.raises(trainer.ConfigMismatchError, match='batch_size: run has 4, given 8'):
    trainer.run_stage(changed, workdir, STAGE)


def test_second_job_on_a_stage_folder_is_refused(tmp_path, synthetic_data_dir):
  workdir = str(tmp_path)
  directory = runs.stage_dir(workdir, STAGE)
  directory.path.mkdir(parents=True)
  holder = subprocess.Popen(['sleep', '60'])
  try:
    runs.write_json(
        directory.lock_file,
        {'host': socket.gethostname(), 'pid': holder.pid, 'heartbeat': time.time()},
    )
    config = demo_config(STAGE, synthetic_data_dir)
    with pytest.raises(
        runs.StageLockedError,
        match=rf'in use by pid {holder.pid} on '
        rf'{socket.gethostname()}.*rm {directory.lock_file}',
    ):
      trainer.run_stage(config, workdir, STAGE)
    runs.write_json(
        directory.lock_file, {'host': 'another-host', 'pid': 1, 'heartbeat': time.time()}
    )
    with pytest.raises(runs.StageLockedError, match='another-host'):
      trainer.run_stage(config, workdir, STAGE)
  finally:
    holder.kill()
    holder.wait()
  # A holder that is gone (killed on this host) leaves a stale lock: taken over.
  runs.write_json(
      directory.lock_file,
      {'host': socket.gethostname(), 'pid': holder.pid, 'heartbeat': time.time()},
  )
  assert trainer.run_stage(config, workdir, STAGE)['best_step'] == 1
  assert not directory.lock_file.exists()


def _immutable(path) -> bool:
  return (
      shutil.which('chattr') is not None
      and subprocess.run(['chattr', '+i', str(path)], capture_output=True).returncode == 0
  )


def test_unwritable_checkpoint_folder_fails_at_once(tmp_path, synthetic_data_dir):
  """Even root cannot write into an immutable folder; the job stops with the path and error."""
  workdir = str(tmp_path)
  latest = runs.stage_dir(workdir, STAGE).latest_dir
  latest.mkdir(parents=True)
  if not _immutable(latest):
    pytest.skip('chattr +i is not available on this filesystem')
  try:
    start = time.time()
    with pytest.raises(
        checkpointing.CheckpointError,
        match=rf'Cannot write checkpoints to ' rf'{latest}: .*Operation not permitted',
    ):
      trainer.run_stage(demo_config(STAGE, synthetic_data_dir), workdir, STAGE)
    assert time.time() - start < 60
  finally:
    subprocess.run(['chattr', '-i', str(latest)], check=True)


@pytest.mark.faults
def test_checkpoint_folder_turning_unwritable_mid_run_ends_the_job(
    tmp_path, synthetic_data_dir, env
):
  workdir = str(tmp_path)
  latest = runs.stage_dir(workdir, STAGE).latest_dir
  proc = subprocess.Popen(
      [
          sys.executable,
          '-m',
          'modistill_jax.train',
          *train_args(workdir, synthetic_data_dir, num_train_steps=40, checkpoint_every_steps=1),
      ],
      cwd=REPO_ROOT,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )
  made_immutable = False
  try:
    for line in proc.stdout:
      if 'step 3/40' in line:
        made_immutable = _immutable(latest)
        break
    if not made_immutable:
      proc.kill()
      pytest.skip('chattr +i is not available on this filesystem')
    output = proc.communicate(timeout=120)[0]
  finally:
    subprocess.run(['chattr', '-i', str(latest)], check=False)
    if proc.poll() is None:
      proc.kill()
  assert proc.returncode not in (0, None)
  assert f'Checkpoint save to {latest} failed' in output or 'CheckpointError' in output
  assert not runs.stage_dir(workdir, STAGE).finished()


def _corrupt(checkpoint_dir) -> None:
  """Overwrites every data file of a checkpoint with garbage of the same size."""
  for root, _, files in os.walk(str(checkpoint_dir)):
    for name in files:
      path = os.path.join(root, name)
      size = os.path.getsize(path)
      with open(path, 'wb') as f:
        f.write(b'\x07' * max(size, 16))


@pytest.mark.faults
def test_unreadable_newest_checkpoint_falls_back_to_the_previous(
    tmp_path, uninterrupted, synthetic_data_dir, env
):
  _, expected = uninterrupted
  workdir = str(tmp_path)
  run_cli(
      train_args(workdir, synthetic_data_dir, num_train_steps=4),
      env,
      driver_point='before_results',
      check=False,
  )
  directory = runs.stage_dir(workdir, STAGE)
  assert sorted(int(p.name) for p in directory.latest_dir.iterdir() if p.name.isdigit()) == [2, 4]
  _corrupt(directory.latest_dir / '4' / 'state')
  rerun = run_cli(train_args(workdir, synthetic_data_dir), env, check=False)
  assert rerun.returncode != 0  # num_train_steps differs: the saved config says 4
  rerun = run_cli(train_args(workdir, synthetic_data_dir, num_train_steps=4), env)
  assert 'resumed at step 2' in rerun.stdout
  # Said once, whole: the error's reason to its end, then what was done about it.
  (note,) = [line for line in rerun.stdout.splitlines() if 'is unreadable' in line]
  assert note.endswith('removed it, using an older one'), note
  assert runs.read_json(directory.results_file)['best_step'] in (2, 4)
  train_steps = [
      r['step'] for r in metrics_lib.read_jsonl(directory.metrics_file) if r['split'] == 'train'
  ]
  assert train_steps == [1, 2, 3, 4]
  np.testing.assert_array_equal(
      [r[1] for r in outcome(workdir)['records']['train']],
      [r[1] for r in expected['records']['train'][:4]],
  )


@pytest.mark.slow
def test_corrupted_best_checkpoint_names_the_file_and_the_way_out(tmp_path, uninterrupted):
  source, _ = uninterrupted
  workdir = str(tmp_path / 'copy')
  shutil.copytree(source, workdir)
  directory = runs.stage_dir(workdir, STAGE)
  step = next(p.name for p in directory.best_dir.iterdir() if p.name.isdigit())
  _corrupt(directory.best_dir / step / 'state')
  with pytest.raises(
      checkpointing.CheckpointError,
      match=rf'best checkpoint {directory.best_dir / step} is unreadable.*'
      rf'Remove the stage folder {directory.path}',
  ):
    finished_stage.load(workdir, STAGE).best_state()


def test_predict_needs_no_optimizer_state_nor_latest_checkpoints(tmp_path, tiny_trained_workdir):
  workdir = str(tmp_path / 'copy')
  shutil.copytree(tiny_trained_workdir, workdir)
  shutil.rmtree(runs.stage_dir(workdir, 'step4').latest_dir)
  predictor = predict.Predictor(workdir, 'step4')
  assert (
      predictor.step == runs.read_json(runs.stage_dir(workdir, 'step4').results_file)['best_step']
  )
  saved = finished_stage.load(workdir, 'step4').best_state()
  assert set(saved) == set(checkpointing.BEST_KEYS)


@pytest.mark.slow
def test_missing_prerequisite_hint_runs_as_printed(tmp_path, synthetic_data_dir, env):
  workdir = str(tmp_path)
  args = train_args(workdir, synthetic_data_dir, num_train_steps=1)
  args[0] = '--config=configs/demo.py:step3'
  proc = run_cli(args, env, check=False)
  assert proc.returncode != 0
  hint = next(
      line.strip()
      for line in proc.stderr.splitlines()
      if line.strip().startswith('python -m modistill_jax.train')
  )
  assert hint.startswith(
      f'python -m modistill_jax.train --config=configs/demo.py:step2 '
      f'--workdir={workdir} --config.'
  )
  assert not runs.stage_dir(workdir, 'step3').path.exists()
  assert hint.split()[5:] == [a for a in args[1:] if a.startswith('--config.')]


def _code_strings(path: str) -> list[str]:
  """The string constants of a Python file's code (docstrings left out: they may name files)."""
  tree = ast.parse(open(path).read())
  docstrings = {
      id(node.body[0].value)
      for node in ast.walk(tree)
      if isinstance(node, (ast.Module, ast.FunctionDef, ast.ClassDef))
      and node.body
      and isinstance(node.body[0], ast.Expr)
      and isinstance(node.body[0].value, ast.Constant)
  }
  return [
      node.value
      for node in ast.walk(tree)
      if isinstance(node, ast.Constant)
      and isinstance(node.value, str)
      and id(node) not in docstrings
  ]


def test_no_module_but_runs_builds_a_run_folder_path():
  """Every run-folder name lives in `runs.py`; other modules and the notebook ask it for paths."""
  files_named = (
      runs.CONFIG_FILE,
      runs.DATASET_FILE,
      runs.LOCK_FILE,
      runs.METRICS_FILE,
      runs.RESULTS_FILE,
      runs.NOISE_SWEEP_FILE,
      runs.REPORT_FILE,
      'predictions_',
      'best.json',
  )
  folders = (
      runs.CHECKPOINTS_DIR,
      runs.EVENTS_DIR,
      runs.ABLATION_DIR,
      runs.LATEST_DIR,
      runs.BEST_DIR,
  )
  files = [
      os.path.join(root, name)
      for root, _, names_ in os.walk(os.path.join(REPO_ROOT, 'modistill_jax'))
      for name in names_
      if name.endswith('.py') and name != 'runs.py'
  ]
  files.append(os.path.join(REPO_ROOT, 'notebooks', 'results.py'))
  offenders = [
      f'{path}: {text!r}'
      for path in files
      for text in _code_strings(path)
      if any(n in text for n in files_named)
      or any(part in folders for part in text.split('/') if part != text)
      or text in folders
  ]
  assert not offenders


def test_joint_step1_selects_each_stream_on_its_own_accuracy(
    tmp_path, synthetic_data_dir, monkeypatch
):
  """Crafted validation accuracies: depth is best at step 4, RGB at step 6.

  The best checkpoint must hold the depth stream of step 4 and the RGB stream
  of step 6 (compared with the latest checkpoints of those steps), and the
  results must say which step each came from.
  """
  crafted = {
      2: {'depth': 0.5, 'rgb': 0.5},
      4: {'depth': 0.7, 'rgb': 0.4},
      6: {'depth': 0.6, 'rgb': 0.8},
  }
  real_evaluate = evaluators.evaluate_split

  def crafted_evaluate(state, source, **kwargs):
    result = real_evaluate(state, source, **kwargs)
    if source.name.endswith('validation'):
      result['accuracy'].update(crafted[int(state.step)])
    return result

  monkeypatch.setattr(evaluators, 'evaluate_split', crafted_evaluate)
  workdir = str(tmp_path)
  config = demo_config(
      'step1', synthetic_data_dir, num_train_steps=6, checkpoint_every_steps=2, keep_checkpoints=3
  )
  results = trainer.run_stage(config, workdir, 'step1')
  assert results['selected_on'] == {
      'depth': {'step': 4, 'validation_accuracy': 0.7},
      'rgb': {'step': 6, 'validation_accuracy': 0.8},
  }
  directory = runs.stage_dir(workdir, 'step1')
  best = checkpointing.read_best_state(directory.best_dir)
  for stream, step in (('depth', 4), ('rgb', 6)):
    latest = read_latest_state_at(directory, step)
    assert_trees_close(best['params'][stream], latest['params'][stream])
    assert_trees_close(best['batch_stats'][stream], latest['batch_stats'][stream])
  other = read_latest_state_at(directory, 6)
  with pytest.raises(AssertionError):  # the depth stream did move after step 4
    assert_trees_close(best['params']['depth'], other['params']['depth'])


def read_latest_state_at(directory: runs.StageDir, step: int) -> dict:
  """The train state of the latest checkpoint of `step` (kept: `keep_checkpoints`)."""
  with ocp.CheckpointManager(
      directory.latest_dir,
      item_names=('state', 'data'),
      options=ocp.CheckpointManagerOptions(create=False),
  ) as mgr:
    restored = mgr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
  return jax.device_get(restored['state'])


def test_a_shared_stage_is_found_through_a_relative_link_that_survives_a_move(tmp_path):
  """`runs.share_stage` (demo ablation, claims variants): one training, found from both folders."""
  run = tmp_path / 'run'
  stage = runs.stage_dir(run, 'step1')
  runs.write_json(stage.results_file, {'test': {'accuracy': {'fused': 0.5}}})
  variant = runs.ablation_workdir(run)
  runs.share_stage(variant, 'step1', run)
  runs.share_stage(variant, 'step1', run)  # a resumed run shares again: nothing changes
  assert runs.stage_dir(variant, 'step1').finished()
  assert not os.path.isabs(os.readlink(runs.stage_dir(variant, 'step1').path))

  moved = shutil.copytree(run, tmp_path / 'moved', symlinks=True)
  shutil.rmtree(run)
  assert runs.read_json(runs.stage_dir(runs.ablation_workdir(moved), 'step1').results_file) == {
      'test': {'accuracy': {'fused': 0.5}}
  }

  other = tmp_path / 'other'
  runs.stage_dir(other, 'step1').path.mkdir(parents=True)
  with pytest.raises(FileExistsError, match=r'other.*step1.*trained there'):
    runs.share_stage(other, 'step1', moved)
  with pytest.raises(ValueError, match='gs://bucket/run: a stage can be shared only between local'):
    runs.share_stage('gs://bucket/run', 'step1', moved)
