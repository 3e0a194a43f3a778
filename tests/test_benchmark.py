"""The benchmark command on a tiny demo stream: its JSON, FLOP accounting and no recompiles.

One run of `python -m modistill_jax.benchmark` benchmarks step1_rgb and step3
on four fake CPU devices, with the input pipeline on the tiny built dataset;
the tests read its JSON. Nothing here asserts a speed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import TINY_DATA
from modistill_jax import benchmark
from modistill_jax.config_lib import TINY

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STAGE_KEYS = {
    'stage': str, 'device_kind': str, 'frames_per_s': float, 'clips_per_s': float,
    'flops_per_step': float, 'forward_flops_per_frame': float, 'mfu': type(None),
    'peak_memory_bytes': int, 'compile_s': float, 'recompiles': int,
    'pipeline_clips_per_s': float, 'flop_ratio': float, 'multi_stream_efficiency': float}


@pytest.fixture(scope='module')
def report(tmp_path_factory, synthetic_data_dir) -> dict:
  """The JSON of one benchmark run of step1_rgb and step3 (tiny stream, 2 timed steps)."""
  out = tmp_path_factory.mktemp('benchmark') / 'result.json'
  env = {**os.environ, 'JAX_PLATFORMS': 'cpu', 'JAX_DISABLE_MOST_OPTIMIZATIONS': 'true',
         'XLA_FLAGS': os.environ.get('XLA_FLAGS', '--xla_force_host_platform_device_count=4')}
  command = [
      sys.executable, '-m', 'modistill_jax.benchmark', '--config=configs/demo.py:step3,tiny',
      '--stages=step1_rgb,step3', '--steps=2', '--warmup=2', f'--json={out}',
      '--num_classes=3', f'--data_dir={synthetic_data_dir}',
      *(f'--config.{k}={v}' for k, v in TINY_DATA.items()),
      '--pipeline_seconds=0.5']
  done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                        timeout=600, check=False)
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(out.read_text())


def test_json_has_every_key_with_its_type(report):
  assert [r['stage'] for r in report['stages']] == ['step1_rgb', 'step3']
  for result in report['stages']:
    for key, kind in STAGE_KEYS.items():
      assert isinstance(result[key], kind), (result['stage'], key, result[key])
    assert result['device_kind'] == 'cpu'
    assert result['num_devices'] == 4
    assert result['frames_per_s'] == pytest.approx(
        TINY['input.num_frames'] * result['clips_per_s'])
    assert result['peak_memory_bytes'] > 0


def test_pipeline_is_timed_on_the_modalities_each_stage_reads(report):
  step1, step3 = report['stages']
  assert step1['inputs'] == ['rgb'] and sorted(step3['inputs']) == ['depth', 'rgb']
  assert step1['pipeline_clips_per_s'] > 0 and step3['pipeline_clips_per_s'] > 0


def test_no_step_after_the_first_recompiles(report):
  assert [r['recompiles'] for r in report['stages']] == [0, 0]


def test_flops_count_the_frozen_teacher_as_a_forward_only(report):
  step1, step3 = report['stages']
  assert step1['forward_flops_per_frame'] > 0
  assert step3['flops_per_step'] > step1['flops_per_step']
  assert step3['flop_ratio'] == pytest.approx(step3['flops_per_step'] / step1['flops_per_step'])
  # A trained student plus a forward-only teacher is ~4/3 of one trained stream;
  # a teacher trained as well would make it ~2.
  assert step3['flop_ratio'] < 5 / 3
  assert step1['flop_ratio'] == 1.0 and step1['multi_stream_efficiency'] == pytest.approx(1.0)


def test_peak_flops_table_knows_the_accelerators_and_not_the_cpu():
  assert benchmark.peak_flops('TPU v5 lite') == 197e12
  assert benchmark.peak_flops('NVIDIA H100 80GB HBM3') == 989e12
  assert benchmark.peak_flops('NVIDIA H100 PCIe') == 756e12
  assert benchmark.peak_flops('NVIDIA A100-SXM4-40GB') == 312e12
  assert benchmark.peak_flops('cpu') is None
