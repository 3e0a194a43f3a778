"""Which of the paper's published numbers stand beside ours, and run folders side by side."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from modistill_jax import report
from modistill_jax import runs

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ROWS = {r.number: r for r in report.TABLE1_ROWS}


def test_paper_numbers_only_for_ntu_protocols():
  """The synthetic demo shares the protocol name 'cross_view' but not the paper's numbers."""
  assert report.paper_number(ROWS['15'], 'x-entr', 'ntu_rgbd', 'cross_subject') == 73.42
  assert report.paper_number(ROWS['15'], 'x-entr', 'ntu_rgbd', 'cross_view') == 77.21
  assert report.paper_number(ROWS['15'], 'x-entr', 'synthetic_rgbd', 'cross_view') is None
  assert report.paper_number(ROWS['15'], 'x-entr', 'nw_ucla', 'views12_3') is None


def test_loss_dependent_rows_pick_the_paper_row_of_that_loss():
  """Hoffman (rows 3-5) and step 3 (rows 10-14) are published per loss."""
  assert report.paper_number(ROWS['3-5'], 'eq1', 'ntu_rgbd', 'cross_subject') == 64.64
  assert report.paper_number(ROWS['3-5'], 'eq5', 'ntu_rgbd', 'cross_subject') == 70.70
  assert report.paper_number(ROWS['13'], 'eq3', 'ntu_rgbd', 'cross_subject') == 71.52
  assert report.paper_number(ROWS['14'], 'eq1', 'ntu_rgbd', 'cross_view') == 70.64
  assert report.paper_number(ROWS['14'], 'eq3', 'ntu_rgbd', 'cross_subject') is None


def _finished_stage(workdir, stage, accuracy, *, loss='xent_each', seed=0, **settings):
  """A stage folder as the trainer leaves it, as far as the report reads it."""
  directory = runs.stage_dir(workdir, stage)
  runs.write_json(
      directory.config_file,
      {
          'dataset': 'ntu_rgbd',
          'builder_config': 'res112',
          'protocol': 'cross_subject',
          'seed': seed,
          'privileged': 'depth',
          'stage': stage,
          **settings,
      },
  )
  runs.write_json(
      directory.results_file,
      {
          'stage': stage,
          'dataset': 'ntu_rgbd',
          'protocol': 'cross_subject',
          'loss': loss,
          'test': {'accuracy': accuracy, 'num_examples': 100, 'complete': True},
      },
  )


def test_compare_puts_run_folders_side_by_side(tmp_path):
  """Two seeds of one NTU run, each with Hoffman et al. under another loss; a folder's
  missing row is None, and the loss picks the paper's row number."""
  first, second = str(tmp_path / 'seed0'), str(tmp_path / 'seed1')
  _finished_stage(first, 'step1', {'depth': 0.70, 'rgb': 0.66, 'fused': 0.72})
  _finished_stage(second, 'step1', {'depth': 0.71, 'rgb': 0.64, 'fused': 0.73}, seed=1)
  _finished_stage(first, 'hoffman', {'fused': 0.65}, loss='eq1')
  _finished_stage(second, 'hoffman', {'fused': 0.69}, loss='eq5', seed=1)
  runs.write_json(
      runs.stage_dir(second, 'step2').noise_sweep_file,
      [
          {'sigma2': 'no noise', 'accuracy': {'fused': 0.8}},
          {'sigma2': 'void', 'accuracy': {'fused': 0.1}},
      ],
  )
  comparison = report.compare([first, second])
  rows = {(r['row'], r['method'], r['loss']): r['accuracy'] for r in comparison['rows']}
  assert rows[('1', 'step 1, depth stream', 'x-entr')] == pytest.approx([70.0, 71.0])
  assert rows[('2', 'step 1, RGB stream', 'x-entr')] == pytest.approx([66.0, 64.0])
  assert rows[('3', 'Hoffman et al. w/o connections', 'eq1')] == pytest.approx([65.0, None])
  assert rows[('5', 'Hoffman et al. w/o connections', 'eq5')] == pytest.approx([None, 69.0])
  assert rows[('T2', 'step 2, depth sigma^2 = void', 'x-entr')] == pytest.approx([None, 10.0])
  assert [r['seed'] for r in comparison['runs']] == [0, 1]
  text = report.compare_markdown(comparison)
  assert f'| # | method | test modality | loss | {first} | {second} |' in text
  assert '| 3 | Hoffman et al. w/o connections | RGB | eq1 | 65.00% | - |' in text
  assert '| | dataset | | | ntu_rgbd/res112 | ntu_rgbd/res112 |' in text


def test_compare_orders_rows_of_one_number_and_loss_by_modality(tmp_path):
  """A Table 4 folder (RGB privileged) beside a Table 1 one: row 14 twice, in a fixed order."""
  folders = [str(tmp_path / 'rgb'), str(tmp_path / 'depth')]
  for workdir, privileged in zip(folders, ('rgb', 'depth')):
    ablation = runs.ablation_workdir(workdir)
    _finished_stage(ablation, 'step3', {'hall': 0.5}, loss='eq5', privileged=privileged)
    results = runs.read_json(runs.stage_dir(ablation, 'step3').results_file)
    results.update(connections=False, privileged=privileged)
    runs.write_json(runs.stage_dir(ablation, 'step3').results_file, results)
  rows = report.compare(folders)['rows']
  assert [(r['row'], r['test_modality']) for r in rows] == [
      ('14', 'Depth (hall)'),
      ('14', 'RGB (hall)'),
  ]


def test_compare_shows_every_setting_the_runs_differ_on(tmp_path):
  """Frame size and steps differ (rows, in key order); the data folder and cadence do not count."""
  first, second = str(tmp_path / 'small'), str(tmp_path / 'large')
  common = {'model': {'width': 64}, 'optimizer': {'learning_rate': 0.01}}
  _finished_stage(
      first,
      'step1',
      {'fused': 0.5},
      input={'image_size': 112, 'num_frames': 5},
      num_train_steps=100,
      data_dir='/a',
      log_every_steps=10,
      **common,
  )
  _finished_stage(
      second,
      'step1',
      {'fused': 0.6},
      input={'image_size': 224, 'num_frames': 5},
      num_train_steps=2000,
      data_dir='/b',
      log_every_steps=50,
      **common,
  )
  comparison = report.compare([first, second])
  assert comparison['differing'] == ['input.image_size', 'num_train_steps']
  text = report.compare_markdown(comparison)
  assert '| | privileged | | | depth | depth |\n| | input.image_size | | | 112 | 224 |\n' in text
  assert '| | num_train_steps | | | 100 | 2000 |' in text.splitlines()
  assert 'data_dir' not in text and 'log_every_steps' not in text and 'width' not in text


def test_compare_names_a_missing_folder(tmp_path):
  with pytest.raises(FileNotFoundError, match='nope'):
    report.compare([str(tmp_path / 'nope')])


@pytest.mark.slow
def test_compare_command_prints_and_writes_the_table(tmp_path):
  workdir = str(tmp_path / 'run')
  _finished_stage(workdir, 'step1', {'depth': 0.5, 'rgb': 0.25, 'fused': 0.5})
  output = tmp_path / 'compare.md'
  done = subprocess.run(
      [sys.executable, '-m', 'modistill_jax.report', '--compare', f'--output={output}', workdir],
      capture_output=True,
      text=True,
      check=False,
      cwd=REPO_ROOT,
      env={**os.environ, 'PYTHONPATH': REPO_ROOT, 'JAX_PLATFORMS': 'cpu'},
  )
  assert done.returncode == 0, done.stderr
  assert '| 1 | step 1, depth stream | Depth | x-entr | 50.00% |' in done.stdout
  assert output.read_text() in done.stdout + '\n'


def _finished_run_stage(workdir, stage, accuracy, **record):
  """`_finished_stage` whose results record the run's modalities as the trainer writes them."""
  _finished_stage(workdir, stage, accuracy, loss=record.pop('loss', 'xent_each'))
  path = runs.stage_dir(workdir, stage).results_file
  runs.write_json(path, {**runs.read_json(path), **record})


def _rows(workdir):
  return [
      (r['row'], r['method'], r['test_modality'], round(r['accuracy']), r['paper'])
      for r in report.table1(workdir)
  ]


def test_rows_name_the_runs_own_modalities_and_leave_the_paper_out(tmp_path):
  """Depth and infrared privileged: a row per privileged stream, their names, no paper figure."""
  workdir = str(tmp_path / 'run')
  both = {'privileged': 'depth+ir', 'deployed': 'rgb'}
  _finished_run_stage(workdir, 'step1', {'depth': 0.6, 'ir': 0.5, 'rgb': 0.2, 'fused': 0.6}, **both)
  _finished_run_stage(workdir, 'step2', {'depth': 0.7, 'ir': 0.4, 'rgb': 0.3, 'fused': 0.8}, **both)
  _finished_run_stage(workdir, 'step3', {'hall': 0.45, 'fused': 0.7}, loss='eq5', **both)
  _finished_run_stage(workdir, 'step4', {'hall': 0.4, 'rgb': 0.3, 'fused': 0.5}, **both)
  assert _rows(workdir) == [
      ('1', 'step 1, depth stream', 'Depth', 60, None),
      ('1', 'step 1, infrared stream', 'Infrared', 50, None),
      ('2', 'step 1, RGB stream', 'RGB', 20, None),
      ('6', 'step 2, depth stream', 'Depth', 70, None),
      ('6', 'step 2, infrared stream', 'Infrared', 40, None),
      ('7', 'step 2, RGB stream', 'RGB', 30, None),
      ('8', 'step 2', 'RGB & Depth & Infrared', 80, None),
      ('13', 'step 3 w/ connections', 'RGB (hall) + depth & infrared via connections', 45, None),
      ('15', 'step 4', 'RGB', 50, None),
  ]
  assert ' paper |' not in report.table1_markdown(report.table1(workdir))


def test_rows_of_another_deployed_modality_from_separate_step1_jobs(tmp_path):
  """Infrared deployed, depth and skeleton privileged, step 1 as one job per stream."""
  workdir = str(tmp_path / 'run')
  roles = {'privileged': 'depth+skeleton', 'deployed': 'ir'}
  for stream, accuracy in (('ir', 0.25), ('depth', 0.75), ('skeleton', 0.5)):
    _finished_run_stage(workdir, f'step1_{stream}', {stream: accuracy, 'fused': accuracy}, **roles)
  _finished_run_stage(workdir, 'step4', {'hall': 0.4, 'ir': 0.3, 'fused': 0.35}, **roles)
  assert _rows(workdir) == [
      ('1', 'step 1, depth stream', 'Depth', 75, None),
      ('1', 'step 1, skeleton stream', 'Skeleton', 50, None),
      ('2', 'step 1, infrared stream', 'Infrared', 25, None),
      ('15', 'step 4', 'Infrared', 35, None),
  ]


def test_the_papers_modalities_keep_the_papers_figures(tmp_path):
  """Depth privileged, recorded or (results written before the record) by default."""
  for record in ({'privileged': 'depth', 'deployed': 'rgb'}, {'privileged': 'depth'}, {}):
    workdir = str(tmp_path / str(len(record)))
    _finished_run_stage(workdir, 'step4', {'hall': 0.4, 'rgb': 0.3, 'fused': 0.5}, **record)
    assert _rows(workdir) == [('15', 'step 4', 'RGB', 50, 73.42)]


def test_rows_follow_how_the_run_was_set_up():
  """An unconnected folder's step 2 / step 3 are rows 9 / 14; RGB privileged gives Table 4."""
  unconnected = {'connections': False, 'privileged': 'depth'}
  assert report.row_of_run(ROWS['8'], unconnected).number == '9'
  assert report.row_of_run(ROWS['13'], unconnected).number == '14'
  assert report.row_of_run(ROWS['6'], unconnected) == ROWS['6']
  assert report.row_of_run(ROWS['8'], {'connections': True}) == ROWS['8']
  inverted = report.row_of_run(ROWS['15'], {'connections': True, 'privileged': 'rgb'})
  assert (inverted.number, inverted.test_modality) == ('15a', 'Depth')
  hall = report.row_of_run(ROWS['13'], {'connections': True, 'privileged': 'rgb'})
  assert hall.test_modality == 'Depth (hall) + RGB via connections'
  assert report.paper_number(inverted, 'x-entr', 'ntu_rgbd', 'cross_view') == 76.41
  assert report.paper_number(inverted, 'x-entr', 'ntu_rgbd', 'cross_subject') is None
