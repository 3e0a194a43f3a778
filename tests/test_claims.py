"""The claims command: its verdict rule on known numbers, and a tiny run of every row.

The run is the whole claims plan of one seed on conftest's tiny dataset (16x16
clips, width-4 stream, 2 steps per stage) with the RBG PRNG, whose initialisers
compile faster (the weights' values do not matter here). Seven of its 15 stages
(steps 1-4, the unconnected steps 2 and 3, Hoffman et al. with eq. 5) have the
settings of the shared tiny demo run (`tiny_run`), so they are copied from it
and found finished (`trainer.run_stage` refuses a finished stage trained with
other settings, so finding them checks that the plan asks for those settings);
the other 8 train. Counting the trainings and the folders shows that stages are
shared: 15 per seed, not the 27 of training every row from scratch. The report
over two seeds reads that seed's run folder and a copy of it as the second
seed: training a second seed would double the test's time, and what differs
between seeds (the intervals, the paired differences, the verdicts) is checked
on known numbers above.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO_ROOT, cli_env
from modistill_jax import claims
from modistill_jax import demo
from modistill_jax import paper_tables
from modistill_jax import runs
from modistill_jax import stages
from modistill_jax import trainer
import tiny_run

HOLDS, CONTRADICTED, INCONCLUSIVE = claims.HOLDS, claims.CONTRADICTED, claims.INCONCLUSIVE


def test_interval_is_the_t_interval_of_the_mean():
  """[1, 2, 3]: mean 2, sd 1, t(0.975, 2 df) = 4.3027, half width 4.3027 / sqrt(3)."""
  mean, low, high = claims.interval([1.0, 2.0, 3.0])
  assert mean == 2.0
  assert low == pytest.approx(2 - 4.302653 / np.sqrt(3), abs=1e-5)
  assert high == pytest.approx(2 + 4.302653 / np.sqrt(3), abs=1e-5)
  assert claims.interval([4.0]) == (4.0, None, None)
  assert claims.interval([]) == (None, None, None)


def test_half_width_is_the_smallest_detectable_difference():
  """[1, 2, 3]: half-width 4.3027 / sqrt(3) = 2.484 points; a mean difference of 2 is below it
  (inconclusive), [3, 4, 5] (mean 4, the same spread) is above it (holds). Five seeds of the
  same spread halve it: t(0.975, 4 df) = 2.7764, sd 1.5811, / sqrt(5): 1.963."""
  assert claims.half_width(*claims.interval([1.0, 2.0, 3.0])[1:]) == pytest.approx(2.48414, 1e-5)
  assert claims.verdict([1.0, 2.0, 3.0]) == INCONCLUSIVE
  assert claims.verdict([3.0, 4.0, 5.0]) == HOLDS
  five = [1.0, 2.0, 3.0, 4.0, 5.0]
  assert claims.half_width(*claims.interval(five)[1:]) == pytest.approx(1.96324, 1e-5)
  assert claims.half_width(*claims.interval([4.0])[1:]) is None


def test_claims_table_prints_the_half_width_beside_each_claim():
  summary = {
      'claims': [
          {
              'claim': 'A beats B',
              'mean': 2.0,
              **dict(zip(('low', 'high'), claims.interval([1.0, 2.0, 3.0])[1:])),
              'half_width': claims.half_width(*claims.interval([1.0, 2.0, 3.0])[1:]),
              'verdict': INCONCLUSIVE,
          },
          {
              'claim': 'C beats D',
              'mean': 5.0,
              'low': None,
              'high': None,
              'half_width': None,
              'verdict': INCONCLUSIVE,
          },
      ]
  }
  lines = claims.claims_markdown(summary).splitlines()
  assert 'smallest detectable difference (+-points)' in lines[0]
  assert lines[2] == '| A beats B | 2.00 | [-0.48, 4.48] | 2.48 | **inconclusive** |'
  assert lines[3] == '| C beats D | 5.00 | - | - | **inconclusive** |'


@pytest.mark.parametrize(
    'differences, margin, expected',
    [
        ([2.0, 3.0, 2.5, 3.1], None, HOLDS),  # consistently better
        ([-2.0, -3.0, -2.5], None, CONTRADICTED),  # consistently worse
        ([5.0, -5.0, 1.0], None, INCONCLUSIVE),  # the interval spans 0
        ([1.0, 3.0], None, INCONCLUSIVE),  # 2 seeds: t(1 df) = 12.7 swallows it
        ([9.0], None, INCONCLUSIVE),  # one seed decides nothing
        ([0.5, -0.3, 0.2, 0.1], 5.0, HOLDS),  # close: within +-5 points
        ([10.0, 11.0, 10.5], 5.0, CONTRADICTED),  # far apart
        ([-10.0, -11.0, -10.5], 5.0, CONTRADICTED),
        ([1.0, 8.0, -3.0], 5.0, INCONCLUSIVE),  # interval crosses the margin
    ],
)
def test_verdict_rule(differences, margin, expected):
  assert claims.verdict(differences, margin) == expected


def test_paired_differences_skip_missing_seeds():
  assert claims.paired([70.0, None, 60.0], [65.0, 50.0, 61.0]) == [5.0, -1.0]


def test_noise_claim_reports_the_first_level_where_the_hallucination_model_wins():
  step4 = [50.0, 52.0, 51.0]
  noise = {
      'no noise': [80.0, 81.0, 79.0],
      '0.1': [70.0, 71.0, 69.0],
      '1': [45.0, 46.0, 44.0],
      '10': [30.0, 31.0, 29.0],
      'void': [12.0, 12.5, 13.0],
  }
  claim = claims.noise_claim(step4, noise)
  assert claim['verdict'] == HOLDS
  assert claim['note'] == 'from sigma^2 = 1'
  assert [r['sigma2'] for r in claim['per_level']] == ['0.1', '1', '10']
  assert [r['verdict'] for r in claim['per_level']] == [CONTRADICTED, HOLDS, HOLDS]
  strong_teacher = {k: [v + 40 for v in values] for k, values in noise.items()}
  assert claims.noise_claim(step4, strong_teacher)['verdict'] == CONTRADICTED


# The plan's stages that the shared tiny demo run trains with the same settings: {claims
# folder: (demo run folder, stages)}. The demo run's ablation links its step 1, which the
# claims plan links itself, so only the stage folders are copied.
FROM_DEMO_RUN = {
    claims.STAGED: ('', stages.ALL_STAGES),
    runs.ABLATION_DIR: (runs.ABLATION_DIR, demo.ABLATION_STAGES),
    'hoffman_eq5': ('', ('hoffman',)),
}


def copy_demo_run_stages(demo_workdir: str, seed_folder) -> None:
  """The `FROM_DEMO_RUN` stages into a claims seed's folder; step 2 without its noise sweep.

  The demo's sweep has the tiny config's one noise level; the claims run sweeps its own.
  """
  for folder, (demo_folder, stage_names) in FROM_DEMO_RUN.items():
    for stage in stage_names:
      shutil.copytree(os.path.join(demo_workdir, demo_folder, stage), seed_folder / folder / stage)
  runs.stage_dir(seed_folder / claims.STAGED, 'step2').noise_sweep_file.unlink()


@pytest.fixture(scope='module')
def claims_run(tmp_path_factory, synthetic_data_dir, tiny_trained_workdir, fast_compile):
  """The claims plan, 1 seed, run twice (the second run must train nothing); then 2 seeds' report.

  The first run starts with the demo run's stages copied in (`FROM_DEMO_RUN`). Returns the
  workdir, the first run's summary and `run_stage` calls, the second run's, and the report over
  seeds 0 and 1 (seed 1: seed 0's folder copied), written as `run_claims` writes it.
  """
  del fast_compile
  config = tiny_run.run_config(synthetic_data_dir)
  config.eval.noise_variances = (0.1, 10.0)
  workdir = str(tmp_path_factory.mktemp('claims') / 'run')
  copy_demo_run_stages(tiny_trained_workdir, claims.seed_dir(workdir, 0))
  calls = []
  real_run_stage = trainer.run_stage

  def counting_run_stage(config, workdir, stage, **kwargs):
    results = real_run_stage(config, workdir, stage, **kwargs)
    calls.append((str(workdir), stage, bool(results.get('skipped'))))
    return results

  # The demo run's epochs (its 2 steps make the stage's length either way), so that its
  # stages are this plan's.
  epochs = config.num_epochs
  with pytest.MonkeyPatch.context() as patch, jax.default_prng_impl('unsafe_rbg'):
    patch.setattr(trainer, 'run_stage', counting_run_stage)
    first = claims.run_claims(config, workdir, num_seeds=1, epochs=epochs)
    first_calls = list(calls)
    calls.clear()
    second = claims.run_claims(config, workdir, num_seeds=1, epochs=epochs)
  # Stages share through relative links, which the copy keeps.
  shutil.copytree(claims.seed_dir(workdir, 0), claims.seed_dir(workdir, 1), symlinks=True)
  two_seeds = {**second, **claims.summarize(workdir, [0, 1])}
  claims.write_report(workdir, two_seeds)
  return workdir, first, first_calls, second, list(calls), two_seeds


@pytest.mark.slow
def test_every_row_and_claim_over_two_seeds(claims_run):
  workdir, *_, summary = claims_run
  assert summary['seeds'] == [0, 1]
  assert [r['row'] for r in summary['rows']] == [str(n) for n in range(1, 16)] + ['13a', '15a']
  for row in summary['rows']:
    assert len(row['per_seed']) == 2, row['row']
    assert all(v is not None for v in row['per_seed']), row['row']
    assert row['low'] <= row['mean'] <= row['high'], row['row']
  assert [r['sigma2'] for r in summary['table2']] == ['no noise', '0.1', '10', 'void']
  assert all(len(r['per_seed']) == 2 and None not in r['per_seed'] for r in summary['table2'])
  assert len(summary['claims']) == len(claims.CLAIMS) + 1
  for claim in summary['claims']:
    assert claim['verdict'] in (HOLDS, CONTRADICTED, INCONCLUSIVE), claim['claim']
  text = open(os.path.join(workdir, 'claims.md')).read()
  assert '| 15a | step 4, RGB privileged | Depth | x-entr |' in text
  assert runs.read_json(os.path.join(workdir, 'claims.json'))['claims'] == summary['claims']
  for png in ('claims_rows.png', 'claims_noise.png'):
    assert os.path.getsize(os.path.join(workdir, png)) > 1000, png


@pytest.mark.slow
def test_stages_are_shared(claims_run):
  """One step 1 for every row; each step-3 variant from the same step 2."""
  workdir, summary, calls, *_ = claims_run
  assert claims.TRAININGS_PER_SEED == 15
  assert summary['seeds'] == [0]
  # The demo run's stages are found finished, every other stage trains: 15 run_stage calls.
  from_demo = sorted(
      (folder, stage) for folder, (_, names) in FROM_DEMO_RUN.items() for stage in names
  )
  assert len(from_demo) == 7
  assert summary['stages'] == {'trained': 8, 'skipped': 7}
  assert len(calls) == 15
  found = sorted((os.path.basename(w), stage) for w, stage, skipped in calls if skipped)
  assert found == from_demo
  seed0 = claims.seed_dir(workdir, 0)
  trained = sorted(
      str(p.relative_to(seed0))
      for p in seed0.glob('*/*')
      if not os.path.islink(p) and (p / runs.RESULTS_FILE).exists()
  )
  assert len(trained) == 15
  assert [t for t in trained if t.endswith('/step1')] == ['staged/step1']
  for folder in ('step3_eq1', 'step3_eq3'):
    assert os.path.realpath(seed0 / folder / 'step2') == os.path.realpath(seed0 / 'staged/step2')
  assert os.path.realpath(seed0 / 'no_connections_eq1' / 'step2') == os.path.realpath(
      seed0 / 'no_connections' / 'step2'
  )
  step3 = runs.read_json(seed0 / 'step3_eq1' / 'step3' / runs.RESULTS_FILE)
  assert (step3['loss'], step3['connections']) == ('eq1', True)
  inverted = runs.read_json(seed0 / 'inverted' / 'step4' / runs.RESULTS_FILE)
  assert inverted['privileged'] == 'rgb'


@pytest.mark.slow
def test_a_finished_run_trains_nothing_and_reports_the_same(claims_run):
  _, first, _, second, calls, _ = claims_run
  assert second['stages'] == {'trained': 0, 'skipped': 15}
  assert calls and all(skipped for _, _, skipped in calls)
  assert second['rows'] == first['rows']
  assert second['claims'] == first['claims']


def test_each_seed_trains_with_its_own_seed():
  """`run_claims` gives seed s's stages `config.seed = s` (and the variant's switches)."""
  config = tiny_run.run_config('')
  for seed in (3, 4):
    for variant in claims.VARIANTS:
      vconfig = claims.variant_config(config, variant, seed, epochs=2)
      assert (vconfig.seed, vconfig.num_epochs) == (seed, 2)
      assert (vconfig.loss.kind, vconfig.model.connections, vconfig.privileged) == (
          variant.loss,
          variant.connections,
          variant.privileged,
      )
  assert config.seed == tiny_run.run_config('').seed  # the caller's config is unchanged


def test_each_row_is_read_from_the_folder_that_trains_it_as_set_up():
  """The table in claims.py's docstring: Table 1 and 4 rows by the variant folder of a seed."""
  folders = {row.number: claims.row_folder(row) for row in paper_tables.ROWS}
  assert folders == {
      **dict.fromkeys(('1', '2', '6', '7', '8', '13', '15'), claims.STAGED),
      '3': 'hoffman_eq1',
      '4': 'hoffman_eq3',
      '5': 'hoffman_eq5',
      '9': runs.ABLATION_DIR,
      '14': runs.ABLATION_DIR,
      '10': claims.NO_CONNECTIONS_EQ1,
      '11': 'step3_eq1',
      '12': 'step3_eq3',
      '13a': 'inverted',
      '15a': 'inverted',
  }


@pytest.mark.parametrize(
    'workdir, seeds, epochs, message',
    (
        ('run', 0, 1, '--seeds must be at least 1, got 0.'),
        ('run', 2, 0, '--epochs must be at least 1, got 0.'),
        ('gs://bucket/run', 2, 1, '--workdir=gs://bucket/run: the claims folder must be local'),
    ),
)
def test_a_run_that_cannot_start_is_refused_naming_the_flag(
    tmp_path, monkeypatch, workdir, seeds, epochs, message
):
  """Before the dataset is built or anything trained (both would fail the test here)."""
  monkeypatch.setattr(claims.cli, 'build_dataset', lambda config: pytest.fail('built'))
  workdir = workdir if workdir.startswith('gs://') else str(tmp_path / workdir)
  with pytest.raises(ValueError) as raised:
    claims.run_claims(tiny_run.run_config(str(tmp_path)), workdir, seeds, epochs)
  assert str(raised.value).startswith(message)
  assert not os.path.exists(str(tmp_path / 'run'))


@pytest.mark.slow
def test_a_bad_flag_on_the_command_line_is_one_line(tmp_path, compilation_cache_dir):
  proc = subprocess.run(
      [sys.executable, '-m', 'modistill_jax.claims', '--config=configs/demo.py',
       f'--workdir={tmp_path / "run"}', '--seeds=0'],
      cwd=REPO_ROOT, env=cli_env(compilation_cache_dir), capture_output=True, text=True,
      timeout=120, check=False,
  )  # fmt: skip
  assert proc.returncode == 1
  assert proc.stderr.strip() == 'error: --seeds must be at least 1, got 0.'
  assert not (tmp_path / 'run').exists()
