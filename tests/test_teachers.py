"""`python -m modistill_jax.teachers` (issue 27): which privileged modality teaches best.

The command line is run as a user would try it, on the tiny synthetic build that stores
infrared and skeletons (`configs/demo.py:all,tiny` reads `tiny`, which the command switches
to `tiny_ir_skeleton`, built on first use in 5 s), one seed and one teacher set (infrared):
4 tiny stages, then the same command again, which must train nothing. The report over two
seeds is then written from those folders in-process, seed 1's being seed 0's copied (as
`test_claims` does; the command itself refuses such a copy, whose settings name seed 0).
The plan with several sets and seeds (which stage trains where, with which settings and
seed, that step 1 trains once per seed for all of them) and the verdicts, against depth
too, are checked in-process on known numbers, with `trainer.run_stage` replaced by a
stand-in that writes results: each set's steps 2-4 compile programs of their own, so a
second set on the command line would double the test's cost for what the stand-in checks.
The bad inputs fail before anything is made.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

from conftest import REPO_ROOT, cli_env
from modistill_jax import claims
from modistill_jax import runs
from modistill_jax import teachers
from modistill_jax import trainer

import configs.demo

HOLDS, CONTRADICTED, INCONCLUSIVE = claims.HOLDS, claims.CONTRADICTED, claims.INCONCLUSIVE
TEACHERS = 'ir'
SEEDS = 2


def _command(workdir: str, data_dir: str, teacher_sets: str = TEACHERS) -> list[str]:
  return [
      sys.executable,
      '-m',
      'modistill_jax.teachers',
      '--config=configs/demo.py:all,tiny',
      '--seeds=1',
      f'--teachers={teacher_sets}',
      f'--workdir={workdir}',
      f'--data_dir={data_dir}',
  ]


def _run(command: list[str], compilation_cache_dir: str) -> subprocess.CompletedProcess:
  # The RBG PRNG's initialisers compile several times faster (the weights do not matter here).
  env = {**cli_env(compilation_cache_dir), 'JAX_DEFAULT_PRNG_IMPL': 'unsafe_rbg'}
  return subprocess.run(
      command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=900, check=False
  )


@pytest.fixture(scope='module')
def command_line_run(tmp_path_factory, compilation_cache_dir):
  """The command with 1 seed (step 1 + steps 2-4 of the one set), run twice in one folder;
  then the report over seeds 0 and 1 written in-process, seed 1's folder seed 0's copied.

  Returns the workdir, each run's process, teachers.json and teachers.md, and the two
  seeds' summary and report text.
  """
  root = tmp_path_factory.mktemp('teachers')
  workdir, data_dir = str(root / 'run'), str(root / 'tfds')
  runs_ = []
  for _ in range(2):
    done = _run(_command(workdir, data_dir), compilation_cache_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = runs.read_json(os.path.join(workdir, 'teachers.json'))
    runs_.append((done, summary, open(os.path.join(workdir, 'teachers.md')).read()))
  (first, first_json, first_md), (second, second_json, second_md) = runs_
  # Stages share through relative links, which the copy keeps.
  shutil.copytree(claims.seed_dir(workdir, 0), claims.seed_dir(workdir, 1), symlinks=True)
  two_seeds = {**second_json, **teachers.summarize(workdir, [0, 1], (('ir',),), 'rgb')}
  teachers.write_report(workdir, two_seeds)
  text = open(os.path.join(workdir, 'teachers.md')).read()
  return workdir, first, first_json, first_md, second, second_json, second_md, two_seeds, text


@pytest.mark.slow
def test_command_line_writes_the_table_over_seeds(command_line_run):
  workdir, first, one_seed, one_seed_md, *_, summary, text = command_line_run
  assert one_seed['seeds'] == [0]
  assert one_seed['stages'] == {'trained': 4, 'skipped': 0}
  assert '4 stages trained, 0 found finished; wall time' in one_seed_md
  assert f'Report: {workdir}/teachers.md' in first.stdout
  assert one_seed['teacher_sets'] == ['ir']
  assert one_seed['settings']['builder_config'] == 'tiny_ir_skeleton'
  assert one_seed['settings']['modalities'] == 'rgb,ir'
  assert one_seed['settings']['epochs_per_stage'] == 1
  assert 'Dataset synthetic_rgbd/tiny_ir_skeleton (cross_view), seeds 0, 1 epoch(s)' in one_seed_md
  assert summary['seeds'] == [0, 1]
  assert 'Dataset synthetic_rgbd/tiny_ir_skeleton (cross_view), seeds 0, 1, 1 epoch(s)' in text
  assert [r['row'] for r in summary['rows']] == ['step 1, RGB stream alone', 'step 4, taught by ir']
  assert [r['row'] for r in summary['teacher_streams']] == ['step 1, infrared stream']
  assert 'Dataset synthetic_rgbd/tiny_ir_skeleton (cross_view), seeds 0, 1, 1 epoch(s)' in text
  for row in summary['rows'] + summary['teacher_streams']:
    assert len(row['per_seed']) == SEEDS and None not in row['per_seed'], row['row']
    assert all(0 <= v <= 100 for v in row['per_seed']), row['row']
    assert row['low'] <= row['mean'] <= row['high'], row['row']
    per_seed = ', '.join(f'{v:.2f}' for v in row['per_seed'])
    assert (
        f"| {row['row']} | {row['mean']:.2f} | [{row['low']:.2f}, {row['high']:.2f}] | "
        f'{per_seed} |'
    ) in text
  # The set against step 1's RGB stream (without depth, nothing is compared with it).
  assert [(v['kind'], v['teachers'], v['versus']) for v in summary['verdicts']] == [
      ('helps', 'ir', None)
  ]
  per_seed = {r['teachers']: r['per_seed'] for r in summary['rows']}  # step 1: None
  for verdict in summary['verdicts']:
    assert verdict['verdict'] in (HOLDS, CONTRADICTED, INCONCLUSIVE)
    assert verdict['differences'] == claims.paired(
        per_seed[verdict['teachers']], per_seed[verdict['versus']]
    )
    assert verdict['half_width'] == pytest.approx((verdict['high'] - verdict['low']) / 2)
    assert (
        f"| {verdict['comparison']} | {verdict['mean']:.2f} | [{verdict['low']:.2f}, "
        f"{verdict['high']:.2f}] | {verdict['half_width']:.2f} | **{verdict['verdict']}** |"
    ) in text
  assert 'smallest detectable difference (+-points)' in text


@pytest.mark.slow
def test_step1_trains_once_and_the_set_links_it(command_line_run):
  workdir, *_ = command_line_run
  root = claims.seed_dir(workdir, 0)
  trained = sorted(
      str(p.relative_to(root))
      for p in root.glob('*/*')
      if not os.path.islink(p) and (p / runs.RESULTS_FILE).exists()
  )
  assert trained == ['ir/step2', 'ir/step3', 'ir/step4', 'shared/step1']
  assert len(trained) == teachers.trainings_per_seed(1)
  assert os.path.islink(root / 'ir' / 'step1')
  assert os.path.realpath(root / 'ir' / 'step1') == os.path.realpath(root / 'shared/step1')
  step1 = runs.read_json(root / 'shared/step1' / runs.RESULTS_FILE)
  assert step1['privileged'] == 'ir'
  assert step1['train_inputs'] == ['ir', 'rgb']
  assert runs.read_json(root / 'shared/step1/config.json')['seed'] == 0
  folder = 'ir'
  step2 = runs.read_json(root / folder / 'step2' / runs.RESULTS_FILE)
  assert (step2['privileged'], step2['train_inputs']) == (folder, sorted(['rgb', folder]))
  step4 = runs.read_json(root / folder / 'step4' / runs.RESULTS_FILE)
  assert step4['train_inputs'] == ['rgb'] and step4['privileged'] == folder


@pytest.mark.slow
def test_a_finished_folder_trains_nothing_and_reports_the_same(command_line_run):
  _, _, first, first_md, second, again, again_md, *_ = command_line_run
  assert again['stages'] == {'trained': 0, 'skipped': 4}
  for key in ('seeds', 'teacher_sets', 'rows', 'teacher_streams', 'verdicts', 'settings'):
    assert again[key] == first[key], key
  assert '0 stages trained, 4 found finished' in second.stdout
  assert 'Report: ' in second.stdout
  assert 'step 1/1' not in second.stdout  # no training step ran
  # The same report, but for its settings line (this run's stages and wall time).
  lines, first_lines = again_md.splitlines(), first_md.splitlines()
  assert len(lines) == len(first_lines)
  differing = [k for k, (a, b) in enumerate(zip(lines, first_lines)) if a != b]
  assert differing == [2] and lines[2].startswith('Dataset '), differing


# MARK: the plan and the verdicts on known numbers


# Test accuracy (%) of the stand-in stages: step 1's RGB stream 50 + seed; each set's step 4
# that plus the set's difference at that seed.
STEP4_MINUS_RGB = {
    'depth': (10.0, 12.0, 11.0),  # helps, at 95% over 3 seeds
    'skeleton': (-5.0, -6.0, -7.0),  # hurts
    'depth,ir': (10.0, -9.0, 2.0),  # undecided
}


def _fake_run_stage(calls):
  """A `trainer.run_stage` that writes results of `STEP4_MINUS_RGB`'s numbers, and records
  `(seed, seed folder/set folder, stage, privileged, modalities, builder_config)` for each stage
  it trains."""

  def run_stage(config, workdir, stage, **kwargs):
    del kwargs
    directory = runs.stage_dir(workdir, stage)
    if directory.finished():
      return {**runs.read_json(directory.results_file), 'skipped': True}
    rgb = 50.0 + config.seed
    if stage == 'step1':
      accuracy = {'rgb': rgb, 'depth': 70.0 + config.seed, 'ir': 60.0, 'skeleton': 65.0}
    else:
      accuracy = {'fused': rgb + STEP4_MINUS_RGB[config.privileged][config.seed]}
    directory.path.mkdir(parents=True)
    results = {'stage': stage, 'test': {'accuracy': {k: v / 100 for k, v in accuracy.items()}}}
    runs.write_json(directory.results_file, results)
    calls.append(
        (
            config.seed,
            os.path.relpath(workdir, os.path.dirname(os.path.dirname(workdir))),
            stage,
            config.privileged,
            config.modalities,
            config.builder_config,
        )
    )
    return results

  return run_stage


def _tiny_demo_config(data_dir: str, **values):
  """`configs/demo.py:all,tiny` (builder config `tiny`) on an empty data dir, never built."""
  config = configs.demo.get_config('all,tiny')
  config.data_dir, config.build_if_missing = data_dir, False
  for key, value in values.items():
    config[key] = value
  return config


def test_step1_once_per_seed_each_set_its_steps_2_to_4_and_the_verdicts(tmp_path, monkeypatch):
  """Three seeds, three sets (the second named out of order): the stages the plan trains,
  where, with which settings; then the verdicts on known per-seed numbers."""
  calls = []
  monkeypatch.setattr(trainer, 'run_stage', _fake_run_stage(calls))
  workdir = str(tmp_path / 'run')
  config = _tiny_demo_config(str(tmp_path / 'tfds'))
  summary = teachers.run_teachers(
      config, workdir, num_seeds=3, epochs=2, teachers='depth;skeleton;ir,depth'
  )
  # (config.privileged, folder) of each set, in the order given; every stage reads one build.
  sets = (('depth', 'depth'), ('skeleton', 'skeleton'), ('depth,ir', 'depth+ir'))
  data = ('rgb,depth,ir,skeleton', 'tiny_ir_skeleton')
  expected = []
  for seed in range(3):
    expected.append((seed, f'seed{seed}/shared', 'step1', 'depth,ir,skeleton', *data))
    for privileged, folder in sets:
      expected += [
          (seed, f'seed{seed}/{folder}', s, privileged, *data) for s in ('step2', 'step3', 'step4')
      ]
  assert calls == expected
  assert [c[2] for c in calls].count('step1') == 3  # once per seed, not once per set
  assert summary['stages'] == {'trained': 30, 'skipped': 0} and len(calls) == 30
  assert config.builder_config == 'tiny' and config.privileged == 'depth'  # the caller's
  assert summary['teacher_sets'] == ['depth', 'skeleton', 'depth+ir']
  rows = {r['row']: r['per_seed'] for r in summary['rows']}
  assert rows['step 1, RGB stream alone'] == pytest.approx([50.0, 51.0, 52.0])
  assert rows['step 4, taught by skeleton'] == pytest.approx([45.0, 45.0, 45.0])
  verdicts = {(v['teachers'], v['versus']): v for v in summary['verdicts']}
  assert {k: v['verdict'] for k, v in verdicts.items()} == {
      ('depth', None): HOLDS,
      ('skeleton', None): CONTRADICTED,
      ('depth+ir', None): INCONCLUSIVE,
      ('skeleton', 'depth'): CONTRADICTED,
      ('depth+ir', 'depth'): INCONCLUSIVE,
  }
  # [10, 12, 11]: mean 11, sd 1, half-width t(0.975, 2 df) / sqrt(3) = 2.484.
  assert verdicts[('depth', None)]['half_width'] == pytest.approx(2.48414, 1e-4)
  text = open(os.path.join(workdir, 'teachers.md')).read()
  assert (
      '| depth helps: step 4 taught by depth beats step 1 RGB alone | 11.00 | [8.52, 13.48] | '
      '2.48 | **holds** |'
  ) in text
  assert (
      '| skeleton teaches better than depth: step 4 taught by skeleton beats step 4 taught by '
      'depth | -17.00 |'
  ) in text
  assert '| step 1, depth stream | 71.00 | [68.52, 73.48] | 70.00, 71.00, 72.00 |' in text
  # Run again: every stage is found finished, and the table is the same.
  calls.clear()
  again = teachers.run_teachers(
      config, workdir, num_seeds=3, epochs=2, teachers='depth;skeleton;ir,depth'
  )
  assert calls == [] and again['stages'] == {'trained': 0, 'skipped': 30}
  assert (again['rows'], again['verdicts']) == (summary['rows'], summary['verdicts'])


def test_without_depth_no_set_is_compared_with_it(tmp_path, monkeypatch):
  monkeypatch.setattr(trainer, 'run_stage', _fake_run_stage([]))
  workdir = str(tmp_path / 'run')
  summary = teachers.run_teachers(
      _tiny_demo_config(str(tmp_path / 'tfds')), workdir, 2, teachers='skeleton'
  )
  assert [v['kind'] for v in summary['verdicts']] == ['helps']
  assert 'no set is compared with it' in open(os.path.join(workdir, 'teachers.md')).read()


# MARK: bad input


@pytest.mark.parametrize(
    'teacher_sets, values, message',
    [
        ('depth;infrared', {}, "--teachers='depth;infrared': unknown modality 'infrared'"),
        ('depth;;ir', {}, "--teachers='depth;;ir': an empty teacher set"),
        ('', {}, "--teachers='': an empty teacher set"),
        ('depth,', {}, "--teachers='depth,': an empty teacher set or modality name"),
        ('rgb', {}, "--teachers='rgb': 'rgb' is the deployed modality"),
        ('depth;ir,rgb', {}, "'rgb' is the deployed modality"),
        ('depth,depth', {}, "the set 'depth,depth' names a modality twice"),
        ('depth;ir;depth', {}, "the set 'depth' is named twice"),
        ('ir', {'builder_config': 'pretext'}, "--config.builder_config='pretext'"),
        ('skeleton', {'builder_config': ''}, "no '_ir_skeleton' builder config"),
    ],
)
def test_bad_input_fails_naming_it_before_anything_is_made(
    tmp_path, monkeypatch, teacher_sets, values, message
):
  def no_training(*args, **kwargs):
    raise AssertionError('trained despite bad input')

  monkeypatch.setattr(trainer, 'run_stage', no_training)
  config = _tiny_demo_config(str(tmp_path / 'tfds'), **values)
  with pytest.raises(ValueError) as error:
    teachers.run_teachers(config, str(tmp_path / 'run'), 2, teachers=teacher_sets)
  assert message in str(error.value)
  assert not os.path.exists(tmp_path / 'run') and not os.path.exists(tmp_path / 'tfds')


def test_depth_alone_keeps_an_rgbd_build():
  """Only RGB and depth needed: the config's own build, which stores them, is kept."""
  config = _tiny_demo_config('')
  assert teachers.plan_config(config, (('depth',),)).builder_config == 'tiny'
  assert teachers.plan_config(config, (('depth',), ('ir',))).builder_config == 'tiny_ir_skeleton'


@pytest.mark.slow
def test_bad_input_on_the_command_line_is_one_line(tmp_path, compilation_cache_dir):
  workdir = str(tmp_path / 'run')
  proc = _run(_command(workdir, str(tmp_path / 'tfds'), 'depth;rgb'), compilation_cache_dir)
  assert proc.returncode == 1
  assert "error: --teachers='depth;rgb': 'rgb' is the deployed modality" in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not os.path.exists(workdir)
