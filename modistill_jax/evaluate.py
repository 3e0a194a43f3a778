"""Command line: evaluate a finished stage as it was trained, with clean, noisy or missing depth.

  python -m modistill_jax.evaluate --workdir=DIR --stage=step2
  python -m modistill_jax.evaluate --workdir=DIR --stage=step2 --depth_noise_std=0.316
  python -m modistill_jax.evaluate --workdir=DIR --stage=step2 --void_depth
  python -m modistill_jax.evaluate --workdir=DIR --stage=step2 --sweep
  python -m modistill_jax.evaluate --config=configs/ntu_cv.py:step2 --workdir=DIR \
      --config.eval.split=validation

The network, stage graph, input normalisation and dataset come from the
stage's saved `config.json`, never from the command line: evaluating with other
settings than those that trained the weights gives numbers that mean nothing.
The command line may change only what the evaluation is about
(`config_lib.EVALUATION_KEYS`: split, batch size, depth noise or void depth,
data_dir, truncation). A `--config` that disagrees with the run on anything
else is refused, naming each key and both values, as one message and the
command to use (no traceback). A run from ImageNet weights keeps their input
normalisation when the `--config` names no ImageNet checkpoint (training-only).
`--depth_noise_std` is the sigma of the multiplicative noise; the paper's
Table 2 indexes sigma^2.

As a library this module evaluates a finished stage with the trainer's own
evaluators (`evaluators.EvalProgram`, `evaluators.NoiseSweep`): the same
program, the same exact accuracy of a state on a whole split.

`--sweep` writes Table 2's row (no noise, each variance in
`config.eval.noise_variances`, void) to the stage's `noise_sweep.json`, from
one compiled evaluation program (the level is its input, `steps.DepthCondition`). The
noise and void act on the privileged modalities (`config.privileged`: depth in the
paper, whose flags name it), so they only change stages that read them (steps 1-3,
hoffman's teachers); a step-4 model reads the deployed modality only, which is the
point of the method.
"""

from __future__ import annotations

import json
from typing import Any

from absl import app
from absl import flags
import jax
import ml_collections
from ml_collections import config_flags

from modistill_jax import cli
from modistill_jax import config_lib
from modistill_jax import finished_stage
from modistill_jax import evaluators
from modistill_jax import initialization
from modistill_jax import runs
from modistill_jax import sharding
from modistill_jax import stages
from modistill_jax import steps
from modistill_jax.data import feeding
from modistill_jax.data import pipeline
from modistill_jax.models import stage_network

# MARK: evaluating a finished stage


class ConflictingConfigError(ValueError):
  """A command line that would evaluate a network other than the one the run trained."""


def evaluation_config(
    run: finished_stage.FinishedStage, given: ml_collections.ConfigDict | None
) -> ml_collections.ConfigDict:
  """The run's own config, with the evaluation keys of `given` (a command line's config).

  Raises:
    ConflictingConfigError: `given` differs from the run outside the evaluation
      and training-only keys (network, normalisation, dataset, privileged modality).
  """
  config = ml_collections.ConfigDict(run.config.to_dict())
  if given is None:
    return config
  effective = initialization.effective_config(given, run.name)
  if run.config.init.imagenet and not given.init.imagenet:
    # The run normalised its inputs as its ImageNet checkpoint says, whatever a config file
    # says (`initialization.effective_config`); `init` is training-only, so a command line
    # without it cannot restate that normalisation, and it is not a disagreement.
    for key in initialization.IMAGENET_NORMALISATION_KEYS:
      effective.input[key] = run.config.input[key]
  diff = config_lib.differences(
      run.config, effective, ignore=config_lib.EVALUATION_KEYS + config_lib.TRAINING_ONLY_KEYS
  )
  if diff:
    raise ConflictingConfigError(
        f'{run.dir.path} was trained with other settings than the given config:\n'
        f'{config_lib.format_differences(diff)}\nEvaluate the run as trained: drop --config '
        f'(python -m modistill_jax.evaluate --workdir={run.dir.workdir} --stage={run.name}), '
        'or make these values agree.'
    )
  given_flat = config_lib.flatten(effective)
  for key, value in given_flat.items():
    if config_lib.matches(key, config_lib.EVALUATION_KEYS):
      _set(config, key, value)
  return config


def _set(config: ml_collections.ConfigDict, dotted: str, value: Any) -> None:
  *parents, leaf = dotted.split('.')
  for p in parents:
    config = config[p]
  config[leaf] = value


def stage_evaluation(
    run: finished_stage.FinishedStage,
    config: ml_collections.ConfigDict,
    state: steps.TrainState | None = None,
) -> tuple[evaluators.EvalProgram, pipeline.Source, steps.TrainState]:
  """A finished stage's evaluation on `config.eval.split`, set up once for several conditions.

  Returns the stage's evaluation program (its network, the mesh, the jitted
  step), the split's source, and the state (the stage's best, unless given) on
  the devices.
  """
  config_lib.check(config)
  stage = stages.for_config(run.name, config)
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size')
  source = feeding.load_sources(config)[config.eval.split]
  if source is None:
    raise ValueError(f'{config.dataset}/{config.protocol} has no {config.eval.split!r} split.')
  if tuple(source.class_names) != run.class_names:
    raise ValueError(
        f'The data in {config.data_dir or "the TFDS default folder"} has other '
        f'classes than {run.dir.dataset_file}: not the dataset the run trained on.'
    )
  model = stage_network(stage, config.model, len(run.class_names))
  state = state or evaluators.best_train_state(run.best_state())
  program = evaluators.EvalProgram(model, config, mesh)
  return program, source, jax.device_put(state, sharding.replicated(mesh))


def evaluate_stage(
    run: finished_stage.FinishedStage,
    config: ml_collections.ConfigDict,
    state: steps.TrainState | None = None,
) -> dict[str, Any]:
  """Accuracy of every stream and the fused model under `config.eval` (exact).

  Returns the results and, under 'predictions', the per-clip predictions.
  """
  program, source, state = stage_evaluation(run, config, state)
  return program.evaluate(state, source)


def noise_sweep(
    run: finished_stage.FinishedStage, config: ml_collections.ConfigDict
) -> list[dict[str, Any]]:
  """Table 2's row of a finished stage (`evaluators.NoiseSweep`), set up and compiled once."""
  program, source, state = stage_evaluation(run, config)
  return evaluators.NoiseSweep(program, source).rows(state)


def reevaluate(
    workdir: str, stage_name: str, given: ml_collections.ConfigDict | None = None
) -> dict[str, Any]:
  """Evaluates a finished stage again and rewrites its results and predictions."""
  run = finished_stage.load(workdir, stage_name)
  config = evaluation_config(run, given)
  result = evaluate_stage(run, config)
  split = config.eval.split
  evaluators.save_predictions(run.dir.predictions_file(split), result.pop('predictions'))
  results = {**run.results, split: result}
  runs.write_json(run.dir.results_file, results)
  return results


def sweep_table(rows: list[dict[str, Any]], stream: str = 'fused') -> str:
  """The sweep as a Markdown table laid out like the paper's Table 2."""
  head = '| sigma^2 | ' + ' | '.join(r['sigma2'] for r in rows) + ' |'
  rule = '|---' * (len(rows) + 1) + '|'
  body = (
      f'| accuracy ({stream}) | '
      + ' | '.join(f"{100 * r['accuracy'][stream]:.2f}%" for r in rows)
      + ' |'
  )
  return '\n'.join([head, rule, body])


def define_flags() -> None:
  """The command line's flags (defined only when run as a program)."""
  config_flags.DEFINE_config_file(
      'config',
      None,
      'Optional: a config to check against the run, whose `eval` settings '
      'apply, e.g. configs/ntu_cv.py:step2.',
      lock_config=True,
  )
  flags.DEFINE_string('workdir', None, 'Run folder the stage was trained in.', required=True)
  flags.DEFINE_list('stage', [], "Stages to evaluate (default: the --config's stage).")
  flags.DEFINE_bool('sweep', False, "Evaluate Table 2's row: noise on the privileged modalities.")
  flags.DEFINE_string('split', None, "Split to evaluate (default: the run's eval.split).")
  flags.DEFINE_string('data_dir', None, "Where the dataset is (default: the run's).")
  flags.DEFINE_integer('eval_batch_size', None, 'Clips per evaluation batch.')
  flags.DEFINE_integer('max_eval_batches', None, '> 0: truncate (smoke runs; results say so).')
  flags.DEFINE_float(
      'depth_noise_std', None, 'sigma of the multiplicative noise of the privileged modalities.'
  )
  flags.DEFINE_bool('void_depth', None, 'Replace the privileged modalities by zeros.')


# Flags of this command and the config key each sets.
_EVAL_FLAGS = {
    'split': 'eval.split',
    'data_dir': 'data_dir',
    'eval_batch_size': 'eval_batch_size',
    'max_eval_batches': 'max_eval_batches',
    'depth_noise_std': 'eval.depth_noise_std',
    'void_depth': 'eval.void_depth',
}


def main(argv):
  del argv
  cli.quiet_logging()
  f = flags.FLAGS
  cli.use_compilation_cache(f.workdir)
  given = f.config
  names = f.stage or (list(stages.expand(given.stage)) if given else [])
  if not names:
    raise app.UsageError('Name the stage: --stage=step2 (or give --config=FILE:STAGE).')
  for stage_name in names:
    run = finished_stage.load(f.workdir, stage_name)
    config = evaluation_config(run, given)
    for flag, key in _EVAL_FLAGS.items():
      if f[flag].value is not None:
        _set(config, key, f[flag].value)
    if f.sweep:
      rows = noise_sweep(run, config)
      runs.write_json(run.dir.noise_sweep_file, rows)
      print(f'{stage_name} ({config.eval.split}):\n{sweep_table(rows)}')
    else:
      result = evaluate_stage(run, config)
      result.pop('predictions')
      print(f'{stage_name} ({config.eval.split}): ' + json.dumps(result))


if __name__ == '__main__':
  define_flags()
  app.run(cli.with_refusals(main, ConflictingConfigError, runs.StageNotFinishedError))
