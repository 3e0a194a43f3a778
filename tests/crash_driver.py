"""`python -m modistill_jax.train` that SIGKILLs itself at a named moment (crash-safety tests).

    python tests/crash_driver.py POINT [train flags ...]

POINT is one of
  best_save_started:N    just after the N-th best-checkpoint save was started
                         (its files are being written in the background)
  best_save_committed:N  just after the N-th best save was committed, before
                         the latest checkpoint of the same step
  latest_save_started:N  just after the N-th latest-checkpoint save was started
  before_results         after the test evaluation, before `results.json`
  latest_save_hangs:N    the N-th latest-checkpoint save never returns (storage that
                         stopped answering) once the save before it is committed;
                         prints 'save hangs' first. Not a SIGKILL: the test signals
                         the stuck process itself.

A SIGKILL can come at any instant; these are the instants where the run
folder's bookkeeping could disagree with its checkpoints.
"""

import os
import signal
import sys
import threading

from absl import app

from modistill_jax import checkpointing
from modistill_jax import runs
from modistill_jax import train


def _die():
  sys.stdout.flush()
  os.kill(os.getpid(), signal.SIGKILL)


def install(point: str) -> None:
  name, _, count = point.partition(':')
  calls = {'n': 0}

  def after_nth(method, commit=None):
    original = getattr(checkpointing.StageCheckpoints, method)

    def patched(self, *args, **kwargs):
      original(self, *args, **kwargs)
      calls['n'] += 1
      if calls['n'] == int(count):
        if commit:
          getattr(self, commit).wait_until_finished()
        _die()

    setattr(checkpointing.StageCheckpoints, method, patched)

  if name == 'best_save_started':
    after_nth('save_best')
  elif name == 'best_save_committed':
    after_nth('save_best', commit='best')
  elif name == 'latest_save_started':
    after_nth('save_latest')
  elif name == 'latest_save_hangs':
    original = checkpointing.StageCheckpoints.save_latest

    def hanging(self, *args, **kwargs):
      calls['n'] += 1
      if calls['n'] == int(count):
        # What a real save does first (Orbax's `CheckpointManager.save`): the save before commits.
        self.latest.wait_until_finished()
        print('save hangs', flush=True)
        threading.Event().wait()
      original(self, *args, **kwargs)

    checkpointing.StageCheckpoints.save_latest = hanging
  elif name == 'before_results':
    original = runs.write_json

    def write_json(path, obj):
      if str(path).endswith(runs.RESULTS_FILE):
        _die()
      original(path, obj)

    runs.write_json = write_json
  else:
    raise SystemExit(f'unknown point {point!r}')


if __name__ == '__main__':
  install(sys.argv.pop(1))
  app.run(train.main)
