"""Stage chaining: `all` writes four finished stages, each starting from slices of the last.

The trained run is `tiny_run`'s (`configs/demo.py:all,tiny` on conftest's tiny
dataset, one epoch per stage), shared with the predict, export and demo tests.
Each stage's starting variables are recomputed with `initialization.initial_variables`,
which must initialise no stream (each is loaded whole, so none can pass by
coincidence), and compared bit for bit with the streams of the previous stages'
best checkpoints. The noise sweep of `evaluate` runs on a copy of the same run.
"""

import math
import shutil
import subprocess
import sys

import jax
import numpy as np
import pytest

from conftest import REPO_ROOT, cli_env, override_flags
import tiny_run
from modistill_jax import checkpointing
from modistill_jax import evaluate
from modistill_jax import evaluators
from modistill_jax import finished_stage
from modistill_jax import initialization
from modistill_jax import runs
from modistill_jax import stages
from modistill_jax import steps
from modistill_jax import trainer
from modistill_jax.benchmark import step as benchmark_step
from modistill_jax.models import multistream
from modistill_jax.models import stage_network

pytestmark = pytest.mark.usefixtures('fast_compile')

NOISE_VARIANCES = (0.1, 10.0)
SWEEP_COLUMNS = ['no noise', '0.1', '10', 'void']

# stage -> {stream it trains: (earlier stage, stream of that stage's best checkpoint)}
CHAIN = {
    'step2': {'depth': ('step1', 'depth'), 'rgb': ('step1', 'rgb')},
    'step3': {'hall': ('step2', 'depth'), 'depth': ('step2', 'depth')},
    'step4': {'hall': ('step3', 'hall'), 'rgb': ('step2', 'rgb')},
}


@pytest.fixture
def workdir(tiny_trained_workdir):
  return tiny_trained_workdir


@pytest.fixture(scope='session')
def config(synthetic_data_dir):
  return tiny_run.run_config(synthetic_data_dir)


def assert_bit_identical(actual, expected, what: str):
  paths_a = jax.tree_util.tree_flatten_with_path(actual)[0]
  paths_e = jax.tree_util.tree_flatten_with_path(expected)[0]
  assert [p for p, _ in paths_a] == [p for p, _ in paths_e], what
  assert paths_a, what
  for (path, a), (_, e) in zip(paths_a, paths_e):
    assert a.dtype == e.dtype and np.array_equal(a, e), what + jax.tree_util.keystr(path)


def assert_starts_from(config, workdir: str, stage_name: str, sources: dict[str, tuple[str, str]]):
  """`initial_variables` of `stage_name` equals, stream by stream, the named checkpoint slices,
  and initialises no stream (every one is loaded whole)."""
  stage = stages.get_stage(stage_name)
  model = stage_network(stage, config.model, num_classes=3)
  initialised = []
  real_init_stream = multistream.init_stream

  def counting_init_stream(stream, name, rng, clips):
    if not isinstance(rng, jax.core.Tracer):  # made, not only traced for its shapes
      initialised.append(name)
    return real_init_stream(stream, name, rng, clips)

  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(multistream, 'init_stream', counting_init_stream)
    variables, origin = initialization.initial_variables(
        config, stage, model, initialization.prerequisites(stage, config, workdir)
    )
  assert origin == 'previous stages'
  assert initialised == []
  assert set(variables['params']) == set(sources)
  for stream, (source_stage, source_stream) in sources.items():
    saved = checkpointing.read_best_state(runs.stage_dir(workdir, source_stage).best_dir)
    expected = checkpointing.stream_variables(saved, source_stream)
    actual = {c: variables[c][stream] for c in ('params', 'batch_stats')}
    assert_bit_identical(
        actual, expected, f'{stage_name} {stream} <- {source_stage} {source_stream}: '
    )


def test_all_writes_four_finished_stages(workdir):
  """Every stage of `all` has results (with a test accuracy) and a best checkpoint."""
  for stage_name in stages.ALL_STAGES:
    directory = runs.stage_dir(workdir, stage_name)
    assert directory.finished(), stage_name
    results = runs.read_json(directory.results_file)
    assert results['stage'] == stage_name
    assert results['best_step'] == results['total_steps'] == 2
    assert int(checkpointing.read_best_state(directory.best_dir)['step']) == 2
    predictions = np.load(directory.predictions_file('test'))
    assert results['test']['num_examples'] == len(predictions['label'])
    assert results['test']['accuracy']['fused'] == np.mean(
        predictions['pred/fused'] == predictions['label']
    )


@pytest.mark.parametrize('stage_name', sorted(CHAIN))
def test_stage_starts_from_previous_checkpoints(stage_name, workdir, config):
  """Steps 2-4 start from the intended streams of the earlier best checkpoints, bit for bit.

  Step 2: both streams from step 1. Step 3: the hallucination stream and the
  frozen teacher both from step 2's depth stream. Step 4: the hallucination
  stream from step 3, the RGB stream from step 2 (not step 1, whose RGB stream
  never saw the connections).
  """
  assert_starts_from(config, workdir, stage_name, CHAIN[stage_name])


def test_step1_from_another_runs_step1_keeps_all_but_the_classifier(workdir, config, tmp_path):
  """`--config.init.from_workdir=RUN` (README: NW-UCLA fine-tuned from NTU): a new run's step 1
  starts from RUN's step-1 streams, bit for bit, but for the classifier, made afresh (the other
  dataset's classes), and names RUN as its origin."""
  config = config.copy_and_resolve_references()
  config.init.from_workdir = workdir
  stage = stages.get_stage('step1')
  model = stage_network(stage, config.model, num_classes=3)
  sources = initialization.prerequisites(stage, config, str(tmp_path))
  assert {(src.stream, directory.path) for src, directory in sources.items()} == {
      (s, runs.stage_dir(workdir, 'step1').path) for s in stage.streams
  }
  variables, origin = initialization.initial_variables(config, stage, model, sources)
  assert origin == f'step 1 of {workdir}'
  saved = checkpointing.read_best_state(runs.stage_dir(workdir, 'step1').best_dir)
  for stream in stage.streams:
    expected = checkpointing.stream_variables(saved, stream)
    actual = {c: dict(variables[c][stream]) for c in ('params', 'batch_stats')}
    fresh, kept = actual['params'].pop('logits'), expected['params'].pop('logits')
    assert_bit_identical(actual, expected, f'step1 {stream}: ')
    assert jax.tree.structure(fresh) == jax.tree.structure(kept)
    assert not np.array_equal(fresh['kernel'], kept['kernel']), stream


@pytest.mark.slow
def test_step2_from_separate_step1_stages(tmp_path, config):
  """Step 2 finds its streams in `step1_rgb` and `step1_depth` when there is no joint step 1."""
  workdir = str(tmp_path)
  with jax.default_prng_impl('unsafe_rbg'):
    for stage_name in ('step1_rgb', 'step1_depth'):
      trainer.run_stage(config, workdir, stage_name)
  assert not runs.stage_dir(workdir, 'step1').path.exists()
  assert_starts_from(
      config, workdir, 'step2', {'depth': ('step1_depth', 'depth'), 'rgb': ('step1_rgb', 'rgb')}
  )


@pytest.mark.slow
def test_noise_sweep_cli_writes_table(workdir, synthetic_data_dir, compilation_cache_dir, tmp_path):
  """`evaluate --sweep` prints Table 2's row and writes it to `step2/noise_sweep.json`.

  The columns are no noise, each variance of `eval.noise_variances`, and void
  depth, in that order, each evaluated with its own sigma.
  """
  # A copy: the shared run keeps the demo's own sweep, which the demo test reads.
  workdir = shutil.copytree(workdir, tmp_path / 'run', symlinks=True)
  overrides = {'data_dir': synthetic_data_dir, 'eval.noise_variances': NOISE_VARIANCES}
  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'modistill_jax.evaluate',
          '--config=configs/demo.py:step2',
          f'--workdir={workdir}',
          '--sweep',
          '--max_eval_batches=2',  # the command's own flag, over the config's one batch
          *override_flags(overrides),
      ],
      cwd=REPO_ROOT,
      env=cli_env(compilation_cache_dir),
      capture_output=True,
      text=True,
      timeout=600,
  )
  assert proc.returncode == 0, proc.stderr[-5000:]
  rows = runs.read_json(runs.stage_dir(workdir, 'step2').noise_sweep_file)
  assert [r['sigma2'] for r in rows] == SWEEP_COLUMNS
  assert [r['void'] for r in rows] == [False, False, False, True]
  np.testing.assert_allclose(
      [r['sigma'] for r in rows], [0.0] + [math.sqrt(v) for v in NOISE_VARIANCES] + [0.0]
  )
  for r in rows:
    assert set(r['accuracy']) == {'depth', 'rgb', 'fused'}
    # Two evaluation batches (`--max_eval_batches=2`, not the config's 1): all 6 test clips.
    assert r['num_examples'] == 6
  assert '| sigma^2 | ' + ' | '.join(SWEEP_COLUMNS) + ' |' in proc.stdout
  assert evaluate.sweep_table(rows) in proc.stdout


def test_sweep_is_one_program_with_each_level_as_its_own_evaluation(workdir, config):
  """The sweep's columns are, clip by clip, `evaluate_stage` with each level fixed in its program.

  That per-level evaluation is how the sweep ran before the level became an
  input; now the sweep compiles one evaluation program for all its columns.
  """
  config = config.copy_and_resolve_references()
  config.eval.noise_variances = NOISE_VARIANCES
  step2 = finished_stage.load(workdir, 'step2')
  evaluation = evaluate.evaluation_config(step2, config)
  compiled = []

  def on_compile(event, duration, fun_name='', **kwargs):
    del duration, kwargs
    if event == benchmark_step.BACKEND_COMPILE_EVENT:
      compiled.append(fun_name)

  jax.monitoring.register_event_duration_secs_listener(on_compile)
  try:
    rows = evaluate.noise_sweep(step2, evaluation)
  finally:
    jax.monitoring.unregister_event_duration_listener(on_compile)
  assert [name for name in compiled if 'eval_step' in name] == ['jit(eval_step)']

  program, source, state = evaluate.stage_evaluation(step2, evaluation)
  noisy_differs = False
  for row, (label, sigma, void) in zip(rows, evaluators.sweep_settings(evaluation), strict=True):
    fixed = evaluation.copy_and_resolve_references()
    fixed.eval.depth_noise_std = sigma
    fixed.eval.void_depth = void
    expected = evaluate.evaluate_stage(step2, fixed)
    actual = program.evaluate(state, source, steps.DepthCondition.of(sigma, void))
    assert row['sigma2'] == label
    assert row['accuracy'] == expected['accuracy'], label
    assert expected['predictions'].keys() == actual['predictions'].keys()
    for key, value in expected['predictions'].items():
      np.testing.assert_array_equal(actual['predictions'][key], value, err_msg=f'{label} {key}')
    noisy_differs |= row['accuracy'] != rows[0]['accuracy']
  assert noisy_differs, 'no column differs from clean depth: the comparison shows nothing'


def test_noise_cannot_reach_step4(workdir, config):
  """Step 4 reads RGB only, so every depth-noise setting gives the same accuracies."""
  config = config.copy_and_resolve_references()
  config.eval.noise_variances = NOISE_VARIANCES
  with jax.default_prng_impl('unsafe_rbg'):
    step4 = finished_stage.load(workdir, 'step4')
    rows = evaluate.noise_sweep(step4, evaluate.evaluation_config(step4, config))
  assert [r['sigma2'] for r in rows] == SWEEP_COLUMNS
  assert set(rows[0]['accuracy']) == {'hall', 'rgb', 'fused'}
  for r in rows[1:]:
    assert r['accuracy'] == rows[0]['accuracy'], r['sigma2']
    assert r['num_examples'] == rows[0]['num_examples']
