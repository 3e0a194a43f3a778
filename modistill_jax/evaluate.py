"""Command line: evaluate a trained stage, with clean, noisy or missing depth.

  python -m modistill_jax.evaluate --config=configs/ntu_cv.py:step2 --workdir=DIR
  python -m modistill_jax.evaluate --config=configs/ntu_cv.py:step2 --workdir=DIR \
      --config.eval.depth_noise_std=0.316          # sigma; the paper's Table 2 indexes sigma^2
  python -m modistill_jax.evaluate --config=configs/ntu_cv.py:step2 --workdir=DIR \
      --config.eval.void_depth=True
  python -m modistill_jax.evaluate --config=configs/ntu_cv.py:step2 --workdir=DIR --sweep

Reads the stage's best checkpoint and reports every stream's and the fused
accuracy on `config.eval.split`, exactly (every example once). `--sweep` writes
Table 2's row: no noise, each variance in `config.eval.noise_variances`, void,
to `<stage>/noise_sweep.json` and prints it as a Markdown table. Depth noise
only changes stages that read depth (steps 1-3, hoffman's teacher); a step-4
model reads RGB only, which is the point of the method.
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from absl import app
from absl import flags
import jax
import ml_collections
from ml_collections import config_flags

from modistill_jax import checkpointing
from modistill_jax import cli
from modistill_jax import sharding
from modistill_jax import stages
from modistill_jax import steps
from modistill_jax import trainer

def load_stage_state(workdir: str, stage_name: str) -> steps.TrainState:
  """The best state of a finished stage, enough for evaluation (no optimizer)."""
  stage_dir = trainer.stage_dir(workdir, stage_name)
  if not checkpointing.has_best(stage_dir):
    raise trainer.MissingPrerequisiteError(
        f'No trained {stage_name} in {stage_dir}; train it first with '
        f'python -m modistill_jax.train --config=<config.py>:{stage_name} --workdir={workdir}')
  saved = checkpointing.read_best_state(stage_dir)
  return steps.TrainState(step=saved['step'], params=saved['params'],
                          batch_stats=saved['batch_stats'], opt_state=None,
                          frozen=saved.get('frozen') or {})


def evaluate_stage(config: ml_collections.ConfigDict, workdir: str,
                   stage_name: str) -> dict[str, Any]:
  """Accuracy of every stream and the fused model under `config.eval`."""
  stage = stages.for_config(stage_name, config)
  trainer.apply_imagenet_normalization(config)
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size')
  source = trainer.load_sources(config)[config.eval.split]
  if source is None:
    raise ValueError(f'{config.dataset}/{config.protocol} has no {config.eval.split!r} split.')
  model = steps.StageModel(stage, config.model, len(source.class_names))
  state = jax.device_put(load_stage_state(workdir, stage_name), sharding.replicated(mesh))
  result = trainer.evaluate(state, source, eval_fn=trainer.make_eval_fn(model, config, mesh),
                            mesh=mesh, config=config, modalities=stage.inputs)
  return {k: result[k] for k in ('accuracy', 'num_examples', 'complete')}


def noise_sweep(config: ml_collections.ConfigDict, workdir: str,
                stage_name: str) -> list[dict[str, Any]]:
  """Table 2: accuracy with clean depth, each noise variance, and void depth."""
  config = config.copy_and_resolve_references()  # the caller's config stays clean
  settings = [('no noise', 0.0, False)]
  settings += [(f'{v:g}', math.sqrt(v), False) for v in config.eval.noise_variances]
  settings.append(('void', 0.0, True))
  rows = []
  for label, sigma, void in settings:
    config.eval.depth_noise_std = sigma
    config.eval.void_depth = void
    result = evaluate_stage(config, workdir, stage_name)
    rows.append({'sigma2': label, 'sigma': sigma, 'void': void, **result})
  return rows


def sweep_table(rows: list[dict[str, Any]], stream: str = 'fused') -> str:
  """The sweep as a Markdown table laid out like the paper's Table 2."""
  head = '| sigma^2 | ' + ' | '.join(r['sigma2'] for r in rows) + ' |'
  rule = '|---' * (len(rows) + 1) + '|'
  body = f'| accuracy ({stream}) | ' + ' | '.join(
      f"{100 * r['accuracy'][stream]:.2f}%" for r in rows) + ' |'
  return '\n'.join([head, rule, body])


def define_flags() -> None:
  """The command line's flags (defined only when run as a program)."""
  config_flags.DEFINE_config_file(
      'config', None, 'Protocol config file and stage, e.g. configs/ntu_cv.py:step2.',
      lock_config=True)
  flags.DEFINE_string('workdir', None, 'Run folder the stage was trained in.', required=True)
  flags.DEFINE_bool('sweep', False, "Evaluate Table 2's depth-noise row.")
  flags.mark_flag_as_required('config')


def main(argv):
  del argv
  cli.quiet_logging()
  config, workdir = flags.FLAGS.config, flags.FLAGS.workdir
  for stage_name in stages.expand(config.stage):
    out_dir = trainer.stage_dir(workdir, stage_name)
    if flags.FLAGS.sweep:
      rows = noise_sweep(config, workdir, stage_name)
      trainer.write_json(os.path.join(out_dir, 'noise_sweep.json'), rows)
      print(f'{stage_name} ({config.eval.split}):\n{sweep_table(rows)}')
    else:
      result = evaluate_stage(config, workdir, stage_name)
      print(f'{stage_name} ({config.eval.split}): ' + json.dumps(result))


if __name__ == '__main__':
  define_flags()
  app.run(main)
