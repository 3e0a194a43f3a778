"""Command line: train a stage (or all of steps 1-4) of a protocol config.

  python -m modistill_jax.train --config=configs/ntu_cs.py:step3 --workdir=DIR
  python -m modistill_jax.train --config=configs/demo.py:all --workdir=DIR \
      --config.batch_size=32 --config.model.dtype=bfloat16

On a Cloud TPU pod slice every host runs the same command with `--multihost`
(`jax.distributed.initialize()` finds the other hosts). For a hand-made cluster,
e.g. two processes on one machine, pass `--coordinator_address`,
`--num_processes` and `--process_id`.

Exit status: 0 when every stage asked for is finished, 75
(`trainer.PREEMPTED_EXIT_CODE`) when SIGTERM stopped one with its progress saved
(rerun the same command to resume), 1 on an error (docs/faults.md).

It ends as `make demo` does: Table 1 of the run folder's finished stages and
the wall time of each stage it trained. A config that disagrees with a
stopped or finished stage, a missing earlier stage, or a stage folder another
job holds is one message that says what to type instead (exit status 1).
"""

from __future__ import annotations

import os
import shlex
import sys

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from modistill_jax import checkpointing
from modistill_jax import cli
from modistill_jax import config_lib
from modistill_jax import evaluate
from modistill_jax import metrics
from modistill_jax import pretrained
from modistill_jax import report
from modistill_jax import runs
from modistill_jax import stages
from modistill_jax import trainer

_CONFIG = config_flags.DEFINE_config_file(
    'config',
    None,
    'Protocol config file and stage, e.g. configs/ntu_cs.py:step3.',
    lock_config=True,
)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Run folder; each stage writes a subfolder.')
_MULTIHOST = flags.DEFINE_bool('multihost', False, 'Call jax.distributed.initialize() (TPU pods).')
_COORDINATOR = flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None, 'Processes in the job.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None, 'This process in the job.')
_REEVALUATE = flags.DEFINE_bool(
    'reevaluate',
    False,
    'Evaluate finished stages again (they are skipped otherwise) and '
    "rewrite their results, with the run's own network and this command's `eval` settings.",
)
_PREEMPTION_GRACE = flags.DEFINE_float(
    'preemption_grace_s',
    trainer.PREEMPTION_GRACE_SECONDS,
    'After SIGTERM, the seconds the job may take to save at its next step; past them it '
    f'exits anyway (status {trainer.PREEMPTED_EXIT_CODE}, its committed checkpoints intact).',
)
flags.mark_flags_as_required(['config', 'workdir'])


def initialize_distributed() -> None:
  """Joins a multi-process job when asked to; a plain run stays single-process."""
  if _COORDINATOR.value is not None:
    # CPU processes need a collectives library to exchange data (GPU and TPU
    # clients ignore this). Nothing may touch a JAX backend before `initialize`.
    jax.config.update('jax_cpu_collectives_implementation', 'gloo')
    jax.distributed.initialize(_COORDINATOR.value, _NUM_PROCESSES.value, _PROCESS_ID.value)
  elif _MULTIHOST.value:
    jax.distributed.initialize()


def config_file() -> str:
  """The `--config` flag's file and options without the stage (for commands in messages).

  `configs/demo.py:step2,tiny` -> `configs/demo.py:tiny` (see `runs.train_command`).
  """
  path, _, arg = flags.FLAGS['config'].config_filename.partition(':')
  options = config_lib.parse_config_arg(arg)[1] if arg else ()
  return path + (':' + ','.join(options) if options else '')


def config_overrides(argv: list[str]) -> tuple[str, ...]:
  """The command line's `--config.x` flags as `--config.x=y`, for the commands messages print.

  A flag may carry its value in the next argument (`--config.batch_size 8`), as
  absl allows for any flag but a boolean (`--config.input.flip`, `--noconfig.input.flip`).
  """
  overrides, args = [], iter(argv)
  for arg in args:
    name = arg.removeprefix('--').split('=', 1)[0]
    if not (arg.startswith('--config.') or arg.startswith('--noconfig.')):
      continue
    if '=' in arg or flags.FLAGS[name.removeprefix('no')].boolean:
      overrides.append(arg)
    else:
      overrides.append(f'{arg}={shlex.quote(next(args, ""))}')
  return tuple(overrides)


def main(argv):
  del argv
  # Until a stage's loop takes SIGTERM over (to save at its next step), it stops the job at
  # once, with the status that says "rerun to resume", even in a long compile or read.
  trainer.SigtermWatch(lambda: trainer.stop_preempted('SIGTERM'))
  cli.quiet_logging()
  cli.use_compilation_cache(_WORKDIR.value)
  initialize_distributed()
  cli.build_dataset(_CONFIG.value)
  clock = metrics.RunClock(len(stages.expand(_CONFIG.value.stage)))
  try:
    results = trainer.train_and_evaluate(
        _CONFIG.value,
        _WORKDIR.value,
        config_file=config_file(),
        overrides=config_overrides(sys.argv),
        clock=clock,
        preemption_grace_seconds=_PREEMPTION_GRACE.value,
    )
  except checkpointing.CheckpointError as e:
    # The storage, not this program: the message says it all (path, operation, reason).
    # Exiting the normal way would wait for Orbax's background writes to the same storage,
    # each failing and logging its tracebacks at shutdown; what is committed is intact.
    print(f'error: {e}', file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)  # pylint: disable=protected-access
  if any('preempted_at_step' in result for result in results.values()):
    sys.exit(trainer.PREEMPTED_EXIT_CODE)
  for stage, result in results.items():
    if result.get('skipped') and _REEVALUATE.value:
      split = _CONFIG.value.eval.split
      accuracy = evaluate.reevaluate(_WORKDIR.value, stage, _CONFIG.value)[split]['accuracy']
      if jax.process_index() == 0:
        print(
            f'[{stage}] evaluated again, {split} accuracy: '
            + ', '.join(f'{k} {v:.4f}' for k, v in accuracy.items()),
            flush=True,
        )
  if jax.process_index() == 0:
    print(report.console_summary(_WORKDIR.value, clock), flush=True)


if __name__ == '__main__':
  app.run(
      cli.with_refusals(
          main,
          trainer.ConfigMismatchError,
          evaluate.ConflictingConfigError,
          runs.StageNotFinishedError,
          runs.LockHeldError,
          pretrained.CheckpointNotFoundError,
      )
  )
