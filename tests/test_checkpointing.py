"""Checkpoint folders as users name them, and what a best checkpoint holds."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from modistill_jax import checkpointing
from modistill_jax import runs
from modistill_jax import steps


def test_relative_stage_folder_saves_and_reads_back(tmp_path, monkeypatch):
  """`make demo` passes `workdirs/demo`; Orbax itself accepts absolute paths only."""
  monkeypatch.chdir(tmp_path)
  state = steps.TrainState(
      step=jnp.int32(3),
      params={'rgb': {'w': jnp.arange(4.0)}},
      batch_stats={'rgb': {'mean': jnp.ones(2)}},
      opt_state={'mu': jnp.zeros(4)},
      frozen={},
  )
  directory = runs.stage_dir('run', 'step1')
  ckpt = checkpointing.StageCheckpoints(directory)
  selection = {'metrics': {'rgb': 0.5}, 'steps': {'rgb': 3}}
  ckpt.save_best(3, checkpointing.best_dict(state), selection)
  ckpt.wait()
  assert ckpt.best_selection() == selection
  ckpt.close()
  saved = checkpointing.read_best_state(directory.best_dir)
  np.testing.assert_array_equal(saved['params']['rgb']['w'], np.arange(4.0))
  assert int(saved['step']) == 3
  assert 'opt_state' not in saved  # nothing downstream reads the optimizer
  assert (tmp_path / 'run' / 'step1' / 'checkpoints' / 'best' / '3').is_dir()
