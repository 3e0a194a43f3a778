"""Command line: train a stage (or all of steps 1-4) of a protocol config.

  python -m modistill_jax.train --config=configs/ntu_cs.py:step3 --workdir=DIR
  python -m modistill_jax.train --config=configs/demo.py:all --workdir=DIR \
      --config.batch_size=32 --config.model.dtype=bfloat16

On a Cloud TPU pod slice every host runs the same command with `--multihost`
(`jax.distributed.initialize()` finds the other hosts). For a hand-made cluster,
e.g. two processes on one machine, pass `--coordinator_address`,
`--num_processes` and `--process_id`.
"""

from __future__ import annotations

import sys

from absl import app
from absl import flags
import jax
from ml_collections import config_flags

from modistill_jax import cli
from modistill_jax import config_lib
from modistill_jax import evaluate
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
  """The command line's `--config.x=y` flags, repeated in the commands messages print."""
  return tuple(a for a in argv if a.startswith('--config.'))


def main(argv):
  del argv
  cli.quiet_logging()
  cli.use_compilation_cache(_WORKDIR.value)
  initialize_distributed()
  cli.build_dataset(_CONFIG.value)
  results = trainer.train_and_evaluate(
      _CONFIG.value, _WORKDIR.value, config_file=config_file(), overrides=config_overrides(sys.argv)
  )
  for stage, result in results.items():
    if result.get('skipped') and _REEVALUATE.value:
      result = evaluate.reevaluate(_WORKDIR.value, stage, _CONFIG.value)
    print(f'{stage}: {result}')


if __name__ == '__main__':
  app.run(main)
