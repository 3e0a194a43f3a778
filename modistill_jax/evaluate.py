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

As a library this module is every evaluation: `evaluate_split` (exact
accuracy of a state on a whole split) is what the trainer validates and tests
with, and what this command runs on a finished stage's best state.

`--sweep` writes Table 2's row (no noise, each variance in
`config.eval.noise_variances`, void) to the stage's `noise_sweep.json`, from
one compiled evaluation program (the level is its input, `steps.DepthCondition`). Depth
noise only changes stages that read depth (steps 1-3, hoffman's teacher); a
step-4 model reads RGB only, which is the point of the method.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
import functools
import io
import json
import math
from typing import Any

from absl import app
from absl import flags
from etils import epath
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from modistill_jax import cli
from modistill_jax import config_lib
from modistill_jax import finished_stage
from modistill_jax import initialization
from modistill_jax import runs
from modistill_jax import sharding
from modistill_jax import stages
from modistill_jax import steps
from modistill_jax.data import feeding
from modistill_jax.data import pipeline
from modistill_jax.models import stage_network
from modistill_jax.models import StageNetwork

# MARK: evaluating a state (the trainer's validation and test, and this command)


def make_eval_fn(model: StageNetwork, config: ml_collections.ConfigDict, mesh):
  """The jitted `steps.eval_step`; its predictions come back replicated."""
  return jax.jit(
      functools.partial(steps.eval_step, model=model, config=config),
      out_shardings=sharding.replicated(mesh),
  )


def evaluate_split(
    state: steps.TrainState,
    source: pipeline.Source,
    *,
    eval_fn,
    mesh,
    config: ml_collections.ConfigDict,
    modalities: Sequence[str],
    depth_condition: steps.DepthCondition | None = None,
) -> dict[str, Any]:
  """Exact accuracy of every stream and of the fused model on a whole split.

  `modalities`: the clips the stage reads (`Stage.inputs`), the only ones decoded.
  `depth_condition`: the depth corruption, as `eval_fn`'s input (else `config.eval`'s).
  """
  condition = () if depth_condition is None else (depth_condition,)
  batches = pipeline.eval_iterator(
      source.records,
      global_batch_size=config.eval_batch_size,
      num_frames=config.input.num_frames,
      image_size=(config.input.image_size,) * 2,
      worker_count=config.input.worker_count,
      modalities=modalities,
      reduced_decoding=config.input.reduced_decoding,
  )
  key = jax.random.key(config.eval.noise_seed)
  outputs = []
  truncated = False
  for i, batch in enumerate(batches):
    if 0 < config.max_eval_batches <= i:
      truncated = True
      break
    outputs.append(
        sharding.fetch(
            eval_fn(state, sharding.to_global(batch, mesh), jax.random.fold_in(key, i), *condition)
        )
    )
  stacked = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
  mask = stacked.pop('mask').astype(bool)
  kept = {k: v[mask] for k, v in stacked.items()}
  labels = kept['label']
  accuracy = {
      k.split('/', 1)[1]: float(np.mean(v == labels))
      for k, v in kept.items()
      if k.startswith('pred/')
  }
  return {
      'accuracy': accuracy,
      'num_examples': int(mask.sum()),
      'complete': not truncated and int(mask.sum()) == batches.num_examples,
      'predictions': kept,
  }


def save_predictions(path: epath.Path, predictions: Mapping[str, np.ndarray]) -> None:
  """Writes the per-clip predictions (`np.savez`) whole or not at all."""
  buffer = io.BytesIO()
  np.savez(buffer, **predictions)
  runs.write_whole(path, buffer.getvalue())


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


def best_train_state(run: finished_stage.FinishedStage) -> steps.TrainState:
  """The stage's best state, enough for evaluation (no optimizer state is read)."""
  saved = run.best_state()
  return steps.TrainState(
      step=saved['step'],
      params=saved['params'],
      batch_stats=saved['batch_stats'],
      opt_state=None,
      frozen=saved.get('frozen') or {},
  )


def stage_evaluator(
    run: finished_stage.FinishedStage,
    config: ml_collections.ConfigDict,
    state: steps.TrainState | None = None,
) -> Callable[[steps.DepthCondition | None], dict[str, Any]]:
  """Evaluation of a finished stage on `config.eval.split`, set up once for several conditions.

  The mesh, the split's source, the network, the state on the devices and the
  jitted step are made here; the returned function evaluates with `config.eval`'s
  depth (given None) or with a `steps.DepthCondition` (every condition runs the
  same compiled program).
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
  state = jax.device_put(state or best_train_state(run), sharding.replicated(mesh))
  eval_fn = make_eval_fn(model, config, mesh)

  def evaluate(depth_condition: steps.DepthCondition | None) -> dict[str, Any]:
    result = evaluate_split(
        state,
        source,
        eval_fn=eval_fn,
        mesh=mesh,
        config=config,
        modalities=stage.inputs,
        depth_condition=depth_condition,
    )
    return {k: result[k] for k in ('accuracy', 'num_examples', 'complete', 'predictions')}

  return evaluate


def evaluate_stage(
    run: finished_stage.FinishedStage,
    config: ml_collections.ConfigDict,
    state: steps.TrainState | None = None,
) -> dict[str, Any]:
  """Accuracy of every stream and the fused model under `config.eval` (exact).

  Returns the results and, under 'predictions', the per-clip predictions.
  """
  return stage_evaluator(run, config, state)(None)


def sweep_settings(config: ml_collections.ConfigDict) -> list[tuple[str, float, bool]]:
  """Table 2's columns: (label, sigma, void) for clean depth, each noise variance, void depth."""
  settings = [('no noise', 0.0, False)]
  settings += [(f'{v:g}', math.sqrt(v), False) for v in config.eval.noise_variances]
  settings.append(('void', 0.0, True))
  return settings


def noise_sweep(
    run: finished_stage.FinishedStage, config: ml_collections.ConfigDict
) -> list[dict[str, Any]]:
  """Table 2: accuracy with clean depth, each noise variance, and void depth.

  One evaluation program serves every column (the condition is its input), so
  the sweep compiles once, and reads the split's source and builds the network once.
  """
  evaluate = stage_evaluator(run, config)
  rows = []
  for label, sigma, void in sweep_settings(config):
    result = evaluate(steps.DepthCondition.of(sigma, void))
    result.pop('predictions')
    rows.append({'sigma2': label, 'sigma': sigma, 'void': void, **result})
  return rows


def reevaluate(
    workdir: str, stage_name: str, given: ml_collections.ConfigDict | None = None
) -> dict[str, Any]:
  """Evaluates a finished stage again and rewrites its results and predictions."""
  run = finished_stage.load(workdir, stage_name)
  config = evaluation_config(run, given)
  result = evaluate_stage(run, config)
  split = config.eval.split
  save_predictions(run.dir.predictions_file(split), result.pop('predictions'))
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
  flags.DEFINE_bool('sweep', False, "Evaluate Table 2's depth-noise row.")
  flags.DEFINE_string('split', None, "Split to evaluate (default: the run's eval.split).")
  flags.DEFINE_string('data_dir', None, "Where the dataset is (default: the run's).")
  flags.DEFINE_integer('eval_batch_size', None, 'Clips per evaluation batch.')
  flags.DEFINE_integer('max_eval_batches', None, '> 0: truncate (smoke runs; results say so).')
  flags.DEFINE_float('depth_noise_std', None, 'sigma of the multiplicative depth noise.')
  flags.DEFINE_bool('void_depth', None, 'Replace depth by zeros.')


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
