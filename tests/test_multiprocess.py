"""Two processes on one machine train exactly like one process with the same devices.

The train CLI runs step1_rgb for `NUM_STEPS` steps on conftest's tiny dataset
twice, at the same time: as one process with 4 CPU devices, and as a
two-process job (`--coordinator_address=localhost:PORT --num_processes=2`,
gloo CPU collectives), each process with 2 devices, both writing into one
workdir as hosts of a pod write to a shared filesystem. The global batch (4
clips) and the mesh size (4 devices) are the same; each process reads only its
half of each global batch (`pipeline.train_iterator` shards the shuffled
stream by process), so the two jobs see the same clips at every step.

The comparison is to 1e-5 (float32), in a well-conditioned setting:

* Inputs are normalised by the pixel std (`input.rgb_std`), 32x32 frames and
  all 4 stored frames: with the config's unit std, 16x16 and 2 frames the
  deepest BatchNorm layers normalise over a handful of values per channel, the
  gradient norm is ~1000 at initialisation and the float32 rounding of a
  different summation order (the two-process batch is assembled host by host,
  so its rows come in another order, and the reductions cross processes) grows
  to ~1e-3 in the loss after two steps.
* Adam's `eps` is 1e-3: Adam's first update is `lr * g / (|g| + eps)`, i.e.
  `lr * sign(g)` for `|g| >> eps`; a gradient component that is zero in exact
  arithmetic comes out as +-1e-12 depending on the summation order and would
  move its weight by a whole `lr` in either direction. With eps=1e-3 such a
  component moves its weight by ~1e-12, and comparing params compares gradients.

A per-process (instead of global) BatchNorm, a missing cross-process gradient
reduction, or hosts reading the same clips would differ by O(lr) = 1e-3.
"""

import os
import socket
import subprocess
import sys

from etils import epath
import numpy as np
import pytest

from conftest import REPO_ROOT, assert_trees_close, cli_env, override_flags
from modistill_jax import checkpointing
from modistill_jax import metrics as metrics_lib
from modistill_jax import runs

NUM_STEPS = 2  # one epoch of the tiny dataset; its validation makes step 2 the best state
TIMEOUT_S = 420
WELL_CONDITIONED = {
    'num_train_steps': NUM_STEPS,
    'input.image_size': 32,
    'input.num_frames': 4,
    'input.rgb_std': (58.0, 57.0, 57.0),
    'optimizer.eps': 1e-3,
}


def free_port() -> int:
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def train_command(workdir: str, data_dir: str, *extra: str) -> list[str]:
  return [
      sys.executable,
      '-m',
      'modistill_jax.train',
      '--config=configs/demo.py:step1_rgb',
      f'--workdir={workdir}',
      *override_flags({**WELL_CONDITIONED, 'data_dir': data_dir}),
      *extra,
  ]


def wait_all(procs: dict[str, subprocess.Popen]) -> dict[str, str]:
  """Waits for every process (killing all if one hangs); returns their outputs."""
  outputs = {}
  try:
    for name, proc in procs.items():
      outputs[name] = proc.communicate(timeout=TIMEOUT_S)[0]
  except subprocess.TimeoutExpired:
    for proc in procs.values():
      proc.kill()
    pytest.fail(
        f'timed out after {TIMEOUT_S}s: '
        + '\n'.join(f'--- {n}:\n{p.communicate()[0][-3000:]}' for n, p in procs.items())
    )
  for name, proc in procs.items():
    assert proc.returncode == 0, f'{name} failed:\n{outputs[name][-5000:]}'
  return outputs


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path, synthetic_data_dir, compilation_cache_dir):
  """Params, BatchNorm statistics and losses of a 2-process job match 1 process to 1e-5."""
  single, multi = str(tmp_path / 'single'), str(tmp_path / 'multi')
  address = f'localhost:{free_port()}'
  run = dict(cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  procs = {
      'single': subprocess.Popen(
          train_command(single, synthetic_data_dir),
          env=cli_env(compilation_cache_dir, device_count=4),
          **run,
      )
  }
  for i in range(2):
    procs[f'process {i}'] = subprocess.Popen(
        train_command(
            multi,
            synthetic_data_dir,
            f'--coordinator_address={address}',
            '--num_processes=2',
            f'--process_id={i}',
        ),
        env=cli_env(compilation_cache_dir, device_count=2),
        **run,
    )
  wait_all(procs)

  stage_single, stage_multi = (os.path.join(w, 'step1_rgb') for w in (single, multi))
  # Each process saved its own data-iterator position into the shared checkpoint.
  data_dir = epath.Path(stage_multi) / 'checkpoints' / 'latest' / str(NUM_STEPS) / 'data'
  assert sorted(p.name for p in data_dir.iterdir() if p.name.startswith('process_')) == [
      'process_0-of-2.json',
      'process_1-of-2.json',
  ]
  for stage_dir in (stage_single, stage_multi):
    assert runs.read_json(os.path.join(stage_dir, runs.RESULTS_FILE))['best_step'] == NUM_STEPS

  def train_losses(stage_dir):
    records = metrics_lib.read_jsonl(os.path.join(stage_dir, 'metrics.jsonl'))
    return {r['step']: r['loss'] for r in records if r['split'] == 'train'}

  losses_single, losses_multi = train_losses(stage_single), train_losses(stage_multi)
  assert sorted(losses_single) == sorted(losses_multi) == list(range(1, NUM_STEPS + 1))
  np.testing.assert_allclose(
      [losses_multi[s] for s in sorted(losses_multi)],
      [losses_single[s] for s in sorted(losses_single)],
      rtol=1e-5,
      atol=1e-5,
  )

  state_single = checkpointing.read_best_state(runs.stage_dir(single, 'step1_rgb').best_dir)
  state_multi = checkpointing.read_best_state(runs.stage_dir(multi, 'step1_rgb').best_dir)
  assert int(state_single['step']) == int(state_multi['step']) == NUM_STEPS
  assert_trees_close(state_multi['params'], state_single['params'], rtol=1e-5, atol=1e-5)
  assert_trees_close(state_multi['batch_stats'], state_single['batch_stats'], rtol=1e-5, atol=1e-5)
