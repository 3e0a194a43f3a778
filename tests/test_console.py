"""What a person sees while a stage trains and when it ends (issue 20).

The unit tests drive `metrics.Progress` with given times, so every number of a
line is checked against arithmetic done by hand. The subprocess test trains
step1_rgb of the demo config (shrunk by `config_lib.TINY`, as flags) on conftest's tiny
dataset through the train CLI, as a user would, and reads its console.
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys

import pytest

from configs import demo as demo_config
from conftest import REPO_ROOT, cli_env, override_flags
from modistill_jax import cli
from modistill_jax import evaluate
from modistill_jax import finished_stage
from modistill_jax import initialization
from modistill_jax import metrics
from modistill_jax import pretrained
from modistill_jax import runs

START = 1000.0  # a stage's start, as `time.time()` would give it


def test_format_duration():
  assert metrics.format_duration(0.4) == '0:00'
  assert metrics.format_duration(59.6) == '1:00'
  assert metrics.format_duration(754) == '12:34'
  assert metrics.format_duration(3725) == '1:02:05'


def test_progress_lines_show_place_times_left_rate_and_best_validation():
  clock = metrics.RunClock(4)
  clock.finished.append(metrics.StageTime('step1', 'run/step1', 100.0))
  progress = metrics.Progress(100, 'step2', clips_per_step=4, clock=clock, started=START)
  # First line: 10 steps in 30 s, at the trainer's 2 clips/s = 0.5 steps/s, so 90 steps take
  # 180 s. The run: this stage is projected at 30 + 180 = 210 s; the 2 stages after it at the
  # mean of 100 s and 210 s each: 180 + 2 * 155 = 490 s.
  first = progress.line(
      10,
      {'loss': 1.25, 'accuracy/fused': 0.5, 'clips_per_s': 2.0, 'learning_rate': 0.1},
      None,
      now=START + 30,
  )
  assert first == (
      '[step2 2/4] step 10/100 (10%)  elapsed 0:30  left 3:00 (run 8:10)  '
      '2.0 clips/s  loss=1.25 accuracy/fused=0.5'
  )
  # Later lines go by the mean pace since the first line (20 steps in 20 s): 70 s for 70 steps,
  # whatever the last interval's rate. The run: 70 + 2 * mean(100, 50 + 70) = 290 s.
  second = progress.line(30, {'loss': 1.0, 'clips_per_s': 8.0}, 0.625, now=START + 50)
  assert second == (
      '[step2 2/4] step 30/100 (30%)  elapsed 0:50  left 1:10 (run 4:50)  '
      '8.0 clips/s  best val 0.6250  loss=1'
  )


def test_a_single_stage_shows_no_run_estimate():
  progress = metrics.Progress(20, 'step1_rgb', clips_per_step=4, started=START)
  line = progress.line(5, {'clips_per_s': 4.0}, None, now=START + 12)
  assert line == '[step1_rgb] step 5/20 (25%)  elapsed 0:12  left 0:15  4.0 clips/s'


def test_a_log_gets_one_line_per_update_a_terminal_one_rewritten_line(capsys):
  progress = metrics.Progress(10, 'step1', clips_per_step=4)
  progress.update(5, {'clips_per_s': 4.0})
  progress.update(10, {'clips_per_s': 4.0})
  lines = capsys.readouterr().out.split('\n')
  assert len(lines) == 3 and lines[2] == ''
  assert lines[0].startswith('[step1] step 5/10') and lines[1].startswith('[step1] step 10/10')

  progress.tty = True
  progress.update(5, {'clips_per_s': 4.0})
  progress.update(10, {'clips_per_s': 4.0})
  progress.message('done')
  out = capsys.readouterr().out
  assert out.count('\r[step1] step') == 2
  # The message starts a line of its own below the progress line.
  assert out.count('\n') == 2 and out.endswith('\n[step1] done\n')


def test_finish_says_what_was_made_where_and_the_run_sums_it_up(capsys):
  clock = metrics.RunClock(2)
  for name, seconds in (('step1', 65.0), ('step2', 3600.0)):
    progress = metrics.Progress(
        10, name, clips_per_step=4, clock=clock, started=metrics.time.time() - seconds
    )
    done = progress.finish(f'run/{name}', f'run/{name}/results.json')
    assert done.name == name and done.seconds == pytest.approx(seconds, abs=1)
  out = capsys.readouterr().out
  assert '[step2] finished in 1:00:00: run/step2' in out
  assert '[step2]   results: run/step2/results.json' in out
  assert '[step2]   curves:  tensorboard --logdir run/step2' in out
  assert clock.summary().split('\n') == [
      '  step1    run/step1      1:05',
      '  step2    run/step2   1:00:00',
      '  total                1:01:05',
  ]


@pytest.mark.slow
def test_a_dataset_build_says_what_it_built_instead_of_tfds_download_notice(
    tmp_path, capsys, caplog
):
  config = demo_config.get_config('step1')
  config.builder_config, config.data_dir = 'tiny', str(tmp_path)
  cli.build_dataset(config)
  # Asking TFDS whether a folder that does not exist yet is prepared logs a warning.
  assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text
  out = capsys.readouterr().out
  built_in = tmp_path / 'synthetic_rgbd' / 'tiny' / '2.0.0'
  assert re.fullmatch(
      rf'Built synthetic_rgbd in {re.escape(str(built_in))} in \d+:\d\d '
      r'\(nothing downloaded\)\.\n',
      out,
  ), out
  cli.build_dataset(config)  # already built: nothing to say
  assert capsys.readouterr().out == ''


@pytest.mark.slow
def test_training_console_has_real_numbers_time_left_and_no_warnings(
    tmp_path, synthetic_data_dir, compilation_cache_dir
):
  workdir = tmp_path / 'run'
  overrides = {'num_train_steps': 4, 'log_every_steps': 2, 'data_dir': synthetic_data_dir}
  done = subprocess.run(
      [
          sys.executable,
          '-m',
          'modistill_jax.train',
          '--config=configs/demo.py:step1_rgb',
          f'--workdir={workdir}',
          *override_flags(overrides),
      ],
      cwd=REPO_ROOT,
      env=cli_env(compilation_cache_dir),
      capture_output=True,
      text=True,
      timeout=420,
      check=False,
  )
  output = done.stdout + done.stderr
  assert done.returncode == 0, output[-5000:]
  assert not re.search(r'\bnan\b', output, re.IGNORECASE), output
  assert 'warning' not in output.lower(), output
  progress = re.findall(
      r'^\[step1_rgb\] step (\d+)/4 .* left \d+:\d\d .* clips/s', output, re.MULTILINE
  )
  assert progress == ['2', '4'], output
  stage_dir = os.path.join(workdir, 'step1_rgb')
  assert re.search(
      rf'^\[step1_rgb\] finished in \d+:\d\d: {re.escape(stage_dir)}$', output, re.MULTILINE
  ), output
  assert f'results: {os.path.join(stage_dir, "results.json")}' in output
  assert f'tensorboard --logdir {stage_dir}' in output
  # The command ends as `make demo` does: Table 1 of the folder and the stages' wall times.
  with open(os.path.join(stage_dir, 'results.json')) as f:
    test = json.load(f)['test']  # one evaluation batch of the tiny config: partial
  assert (
      f"| 2 | step 1, RGB stream | RGB | x-entr | {100 * test['accuracy']['rgb']:.2f}%"
      f"{'' if test['complete'] else ' (partial)'} |\n" in done.stdout
  ), done.stdout
  assert re.search(
      rf'^Stages \(folder, wall time\):\n  step1_rgb {re.escape(stage_dir)}  +\d+:\d\d\n'
      r'  total +\d+:\d\d$',
      done.stdout,
      re.MULTILINE,
  ), done.stdout
  assert done.stdout.rstrip().endswith(f'Curves of every stage: tensorboard --logdir {workdir}')
  assert "{'" not in done.stdout  # no raw dict


def run_command(module: str, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, '-m', module, *args],
      cwd=REPO_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=420,
      check=False,
  )


@pytest.mark.slow
def test_a_missing_prerequisite_is_one_message_with_the_command_no_traceback(
    tmp_path, synthetic_data_dir, compilation_cache_dir
):
  env = cli_env(compilation_cache_dir)
  workdir = tmp_path / 'run'
  done = run_command('modistill_jax.evaluate', f'--workdir={workdir}', '--stage=step2', env=env)
  assert done.returncode == 1 and 'Traceback' not in done.stderr, done.stderr
  assert done.stderr == (
      f'error: Stage step2 has not finished in {workdir}/step2. Produce it with:\n'
      f'  python -m modistill_jax.train --config=<config.py>:step2 --workdir={workdir}\n'
  )
  done = run_command(
      'modistill_jax.train',
      '--config=configs/demo.py:step2,tiny',
      f'--workdir={workdir}',
      f'--config.data_dir={synthetic_data_dir}',
      env=env,
  )
  assert done.returncode == 1 and 'Traceback' not in done.stderr, done.stderr
  assert done.stderr.endswith(
      f'error: Stage step1 has not finished in {workdir}/step1 or {workdir}/step1_depth. '
      'Produce it with:\n  python -m modistill_jax.train --config=configs/demo.py:step1,tiny '
      f'--workdir={workdir} --config.data_dir={synthetic_data_dir}\n'
  ), done.stderr


@pytest.mark.slow
@pytest.mark.parametrize(
    'module, stage_args',
    [
        ('modistill_jax.train', ('--config=configs/demo.py:step1_rgb,tiny',)),
        ('modistill_jax.claims', ('--config=configs/demo.py:all,tiny', '--seeds=1')),
        (
            'modistill_jax.teachers',
            ('--config=configs/demo.py:all,tiny', '--seeds=1', '--teachers=depth'),
        ),
    ],
)
def test_a_missing_pretrained_checkpoint_is_one_line_before_anything_is_made(
    module, stage_args, tmp_path, synthetic_data_dir, compilation_cache_dir
):
  """`--config.init.imagenet` naming a folder without a converted checkpoint: `train` and
  the commands over seeds say so in one line."""
  workdir, missing = tmp_path / 'run', tmp_path / 'no_checkpoint'
  data = (
      f'--config.data_dir={synthetic_data_dir}'
      if module.endswith('train')
      else f'--data_dir={synthetic_data_dir}'
  )
  done = run_command(
      module,
      *stage_args,
      f'--workdir={workdir}',
      data,
      f'--config.init.imagenet={missing}',
      env=cli_env(compilation_cache_dir),
  )
  assert done.returncode == 1 and 'Traceback' not in done.stderr, done.stderr
  assert done.stderr.strip().splitlines()[-1] == (
      f'error: config.init.imagenet={missing}: no converted checkpoint there '
      f'({missing}/metadata.json is missing). Convert ImageNet weights with `python -m '
      "modistill_jax.pretrained` (README, ImageNet weights), or make the synthetic miniature's "
      'stand-in with `make pretext`.'
  )
  assert not list(workdir.glob('**/step1*')), list(workdir.glob('**/*'))


def imagenet_run(workdir) -> finished_stage.FinishedStage:
  """A step-4 folder as `configs/demo.py:step4,tiny` with torchvision ImageNet weights leaves it.

  Only what an evaluation reads before any data or weights: its config (the
  checkpoint's normalisation in it, as `initialization.effective_config` sets it)
  and results.
  """
  config = demo_config.get_config('step4,tiny')
  config.init.imagenet = '/somewhere/imagenet/torchvision'
  for key in initialization.IMAGENET_NORMALISATION_KEYS:
    config.input[key] = tuple(pretrained.NORMALISATION['torchvision'][key.split('_')[1]])
  directory = runs.stage_dir(workdir, 'step4')
  directory.path.mkdir(parents=True)
  runs.write_json(directory.config_file, config.to_dict())
  runs.write_json(directory.dataset_file, {'class_names': ['a', 'b']})
  runs.write_json(directory.results_file, {})
  return finished_stage.load(workdir, 'step4')


def test_evaluate_takes_the_normalisation_of_the_runs_imagenet_weights(tmp_path):
  """The train command's config without `--config.init.imagenet` is no disagreement."""
  run = imagenet_run(tmp_path)
  given = demo_config.get_config('step4,tiny')
  given.eval.split = 'validation'
  config = evaluate.evaluation_config(run, given)
  assert config.input.rgb_mean == run.config.input.rgb_mean != given.input.rgb_mean
  assert config.eval.split == 'validation'
  given.model.width = 8  # the network is still checked
  refusal = r'config:\n  model.width: run has 4, given 8\nEvaluate'
  with pytest.raises(evaluate.ConflictingConfigError, match=refusal):
    evaluate.evaluation_config(run, given)


@pytest.mark.slow
def test_a_config_refused_by_evaluate_is_one_message_with_the_command(
    tmp_path, compilation_cache_dir
):
  run = imagenet_run(tmp_path)
  done = run_command(
      'modistill_jax.evaluate',
      '--config=configs/demo.py:step4,tiny',
      f'--workdir={tmp_path}',
      '--config.model.width=8',
      env=cli_env(compilation_cache_dir),
  )
  assert done.returncode == 1 and 'Traceback' not in done.stderr, done.stderr
  assert done.stderr == (
      f'error: {run.dir.path} was trained with other settings than the given config:\n'
      '  model.width: run has 4, given 8\n'
      'Evaluate the run as trained: drop --config '
      f'(python -m modistill_jax.evaluate --workdir={tmp_path} --stage=step4), '
      'or make these values agree.\n'
  )
