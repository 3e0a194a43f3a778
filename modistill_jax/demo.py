"""`make demo`: the whole method end to end on CPU, and a report of what it shows.

  python -m modistill_jax.demo --workdir=workdirs/demo --data_dir=workdirs/tfds

On the synthetic RGB+D dataset (built on first use, no download) with the tiny
stream of `configs/demo.py`, it runs, in one run folder:

1. steps 1 -> 4 (`all`): each stream alone, the RGB+D teacher, the
   hallucination stream, the RGB-only deployed model;
2. the Hoffman et al. one-step baseline (Table 1 rows 3-5);
3. the no-connection ablation: steps 2 and 3 without cross-stream connections,
   from the same step-1 streams, in `WORKDIR/no_connections/` (rows 9 and 14);
4. Table 2's depth-noise sweep of the step-2 teacher;
5. `report.md` with Table 1 / Table 2 layouts, training curves, the noise curve
   and the step-4 confusion matrix, and prints the table and the report's path.
"""

from __future__ import annotations

import time

from absl import app
from absl import flags

from configs import demo as demo_config
from modistill_jax import cli
from modistill_jax import config_lib
from modistill_jax import evaluate
from modistill_jax import finished_stage
from modistill_jax import metrics
from modistill_jax import report
from modistill_jax import runs
from modistill_jax import stages
from modistill_jax import trainer

# The stages the demo trains, in order: steps 1-4, the Hoffman et al. baseline,
# and steps 2 and 3 of the no-connection ablation.
ABLATION_STAGES = ('step2', 'step3')
NUM_STAGES = len(stages.expand(stages.ALL)) + 1 + len(ABLATION_STAGES)


def run_demo(
    workdir: str, data_dir: str, config_arg: str = 'all', overrides: dict | None = None
) -> str:
  """Runs every stage of the demo and writes the report; returns its path.

  Args:
    config_arg: `configs/demo.py`'s argument (`'all,tiny'`: the tests' tiny run).
    overrides: `{dotted.key: value}` applied to the demo config.
  """
  t0 = time.time()
  config = config_lib.override(demo_config.get_config(config_arg), overrides or {})
  config.data_dir = data_dir

  def banner(text):
    print(f'\n=== {text} ({time.time() - t0:.0f} s) ===', flush=True)

  if runs.as_path(workdir).exists():
    runs.as_path(workdir).rmtree()
  banner('building the synthetic dataset if needed')
  cli.build_dataset(config)
  clock = metrics.RunClock(NUM_STAGES)
  banner('steps 1-4')
  trainer.train_and_evaluate(config, workdir, clock=clock)
  banner('Hoffman et al. baseline (one joint step)')
  trainer.run_stage(config, workdir, 'hoffman', clock=clock)

  banner('ablation: steps 2 and 3 without connections')
  ablation = runs.ablation_workdir(workdir)
  # The ablation shares step 1 (it has no connections to ablate).
  runs.share_stage(ablation, 'step1', workdir)
  config.model.connections = False
  for stage in ABLATION_STAGES:
    trainer.run_stage(config, ablation, stage, clock=clock)
  config.model.connections = True

  banner('Table 2: step 2 with noisy depth')
  step2 = finished_stage.load(workdir, 'step2')
  rows = evaluate.noise_sweep(step2, evaluate.evaluation_config(step2, config))
  runs.write_json(step2.dir.noise_sweep_file, rows)

  path = report.write_report(workdir, title='modistill_jax demo: synthetic RGB+D, tiny stream')
  banner('done')
  print(report.console_summary(workdir, clock))
  print(f'Report: {path}')
  print(f'Wall time: {metrics.format_duration(time.time() - t0)}')
  return path


def main(argv):
  del argv
  cli.quiet_logging()
  cli.use_compilation_cache(flags.FLAGS.workdir)
  run_demo(flags.FLAGS.workdir, flags.FLAGS.data_dir)


if __name__ == '__main__':
  flags.DEFINE_string('workdir', 'workdirs/demo', 'Run folder (replaced).')
  flags.DEFINE_string('data_dir', 'workdirs/tfds', 'Where the synthetic dataset is built.')
  app.run(main)
