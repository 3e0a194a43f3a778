"""Every stage's train and eval step lowers for TPU and CUDA on this CPU host (`lowering.py`).

Lowering is tracing plus StableHLO emission, no compile: every stage at the
tiny config's sizes (the same ops and shardings as full size), and step 3, the
stage with both a trained and a frozen stream, at the full NTU shapes (224x224,
5 frames, bf16, 64 clips over the 4 fake CPU devices); `python -m
modistill_jax.benchmark --all_stages --lower_for=tpu,cuda` lowers every stage at
full size (about a minute of CPU time, docs/performance.md).
"""

from __future__ import annotations

import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import ntu_cs
from conftest import cli_env, tiny_config
from modistill_jax import config_lib
from modistill_jax import lowering
from modistill_jax import steps

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STAGES = ('step1_rgb', 'step2', 'step3', 'step4')
# One stream's inference forward per 224x224 frame, slim layout (docs/performance.md, measured
# by the benchmark's compiled cost analysis).
FORWARD_FLOPS_PER_FRAME = 7.04e9


@pytest.mark.slow
def test_every_stage_lowers_for_tpu_and_cuda():
  found = lowering.lower_stages(tiny_config('ntu_cs', 'all'), STAGES, num_classes=60)
  assert [(x.stage, x.step, x.platform) for x in found] == [
      (s, step, p) for s in STAGES for step in ('train', 'eval') for p in ('tpu', 'cuda')
  ]
  for x in found:
    assert x.num_devices == jax.device_count() == 4
    assert x.module_bytes > 10_000 and x.flops > 0, x
  flops = {(x.stage, x.step, x.platform): x.flops for x in found}
  for s in STAGES:
    assert flops[s, 'train', 'tpu'] == pytest.approx(flops[s, 'train', 'cuda'], rel=1e-3)
    assert flops[s, 'train', 'tpu'] > flops[s, 'eval', 'tpu']
  table = lowering.table(found)
  assert table.count('\n') == len(found) and 'step3        train  cuda' in table


@pytest.mark.slow
def test_step3_lowers_at_full_ntu_size():
  config = ntu_cs.get_config('step3')
  config_lib.override(config, {'model.dtype': 'bfloat16', 'batch_size': 64, 'eval_batch_size': 64})
  found = lowering.lower_stages(config, ['step3'], num_classes=60)
  by_step = {(x.step, x.platform): x for x in found}
  assert set(by_step) == {(s, p) for s in ('train', 'eval') for p in ('tpu', 'cuda')}
  frames = 64 * 5
  # Train: the student's forward and backward (3 forwards) and the frozen teacher's forward;
  # eval: both streams' forwards. Lowered counts skip padding taps, hence a few % under.
  for step, forwards in (('train', 4), ('eval', 2)):
    for platform in ('tpu', 'cuda'):
      flops = by_step[step, platform].flops
      assert flops == pytest.approx(forwards * frames * FORWARD_FLOPS_PER_FRAME, rel=0.03)


def _lower(fn, *args):
  """`lowering.lower_step` of `jax.jit(fn)` on unsharded `args`, for both platforms."""
  shapes = [jax.ShapeDtypeStruct(np.shape(a), np.asarray(a).dtype) for a in args]
  return lowering.lower_step(
      jax.jit(fn), shapes, what='The test step', platforms=('tpu', 'cuda'), num_devices=1
  )


def test_a_host_callback_is_refused():
  def debug_printing(x):
    jax.debug.print('x: {}', x.sum())
    return x * 2

  def pure_calling(x):
    return jax.pure_callback(np.sin, jax.ShapeDtypeStruct(x.shape, x.dtype), x) * 2

  def debug_calling(x):
    jax.debug.callback(print, x)
    return x * 2

  for fn, primitive in (
      (debug_printing, 'debug_print'),
      (debug_calling, 'debug_callback'),
      (pure_calling, 'pure_callback'),
  ):
    with pytest.raises(lowering.LoweringError, match=f'calls back to the host \\({primitive}\\)'):
      _lower(fn, np.ones(4, np.float32))


def test_a_callback_inside_the_real_train_step_is_refused(monkeypatch):
  model_inputs = steps.model_inputs

  def printing_model_inputs(batch, *args, **kwargs):
    jax.debug.print('label {}', batch['label'])
    return model_inputs(batch, *args, **kwargs)

  monkeypatch.setattr(steps, 'model_inputs', printing_model_inputs)
  with pytest.raises(lowering.LoweringError, match=r'train step of step1_rgb calls back'):
    lowering.lower_stages(tiny_config('ntu_cs', 'step1_rgb'), ['step1_rgb'], num_classes=3)


def test_a_custom_call_only_this_host_knows_is_refused():
  def custom(x):
    return jax.ffi.ffi_call('cpu_only_kernel', jax.ShapeDtypeStruct(x.shape, x.dtype))(x)

  with pytest.raises(
      lowering.LoweringError,
      match=r'(?s)does not lower for tpu/cuda.*custom calls.*cpu_only_kernel',
  ):
    _lower(custom, np.ones(4, np.float32))


def test_float64_is_refused_for_tpu_only():
  with jax.enable_x64(True):
    x = np.ones(4, np.float64)
    with pytest.raises(lowering.LoweringError, match='computes in f64, which tpu does not'):
      _lower(lambda v: jnp.sin(v), x)
    [(platform, _, _)] = lowering.lower_step(
        jax.jit(jnp.sin),
        [jax.ShapeDtypeStruct(x.shape, x.dtype)],
        what='f64',
        platforms=('cuda',),
        num_devices=1,
    )
    assert platform == 'cuda'


def test_unknown_platforms_are_refused():
  with pytest.raises(ValueError, match=r"among \('tpu', 'cuda'\), got \['rocm'\]"):
    lowering.check_platforms(['rocm'])


@pytest.mark.slow
def test_the_command_prints_each_platform(compilation_cache_dir):
  command = [
      sys.executable,
      '-m',
      'modistill_jax.benchmark',
      '--config=configs/ntu_cs.py:step3,tiny',
      '--lower_for=tpu,cuda',
  ]
  done = subprocess.run(
      command,
      cwd=REPO_ROOT,
      env=cli_env(compilation_cache_dir),
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  rows = [line.split() for line in done.stdout.splitlines()[1:]]
  assert [r[:4] for r in rows] == [
      ['step3', step, platform, '4'] for step in ('train', 'eval') for platform in ('tpu', 'cuda')
  ]
