"""Checkpoint folders as users name them: relative paths work like absolute ones."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from modistill_jax import checkpointing
from modistill_jax import steps


def test_relative_stage_folder_saves_and_reads_back(tmp_path, monkeypatch):
  """`make demo` passes `workdirs/demo`; Orbax itself accepts absolute paths only."""
  monkeypatch.chdir(tmp_path)
  state = steps.TrainState(step=jnp.int32(3), params={'rgb': {'w': jnp.arange(4.0)}},
                           batch_stats={'rgb': {'mean': jnp.ones(2)}}, opt_state={},
                           frozen={})
  ckpt = checkpointing.StageCheckpoints('run/step1')
  ckpt.save_best(3, state)
  ckpt.wait()
  ckpt.close()
  assert checkpointing.has_best('run/step1')
  saved = checkpointing.read_best_state('run/step1')
  np.testing.assert_array_equal(saved['params']['rgb']['w'], np.arange(4.0))
  assert int(saved['step']) == 3
  assert (tmp_path / 'run' / 'step1' / 'checkpoints' / 'best' / '3').is_dir()
