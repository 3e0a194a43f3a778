"""The benchmark command on a tiny demo stream: its JSON, FLOP accounting and no recompiles.

One run of `python -m modistill_jax.benchmark` benchmarks step1_rgb and step3
on four fake CPU devices, with the input pipeline on the tiny built dataset;
the tests read its JSON. A second run, `--suite` on a tiny stream, checks the
suite's fields for every stage and the reference ResNet, and its end-to-end
accounting; the reference ResNet's step and the suite's arithmetic are also
tested alone. Nothing here asserts a speed.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from configs import demo
from conftest import TINY_DATA, cli_env
from modistill_jax.benchmark import costs
from modistill_jax.benchmark import end_to_end
from modistill_jax.benchmark import step as benchmark_step
from modistill_jax import reference_resnet
from modistill_jax import sharding
from modistill_jax.config_lib import TINY
from modistill_jax.data import feeding

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

STAGE_KEYS = {
    'stage': str,
    'device_kind': str,
    'frames_per_s': float,
    'clips_per_s': float,
    'flops_per_step': float,
    'forward_flops_per_frame': float,
    'mfu': type(None),
    'peak_memory_bytes': int,
    'compile_s': float,
    'compile_cached': bool,
    'recompiles': int,
    'pipeline_clips_per_s': float,
    'flop_ratio': float,
    'multi_stream_efficiency': float,
}


@pytest.fixture(scope='module')
def report(tmp_path_factory, synthetic_data_dir, compilation_cache_dir) -> dict:
  """The JSON of one benchmark run of step1_rgb and step3 (tiny stream, 2 timed steps)."""
  out = tmp_path_factory.mktemp('benchmark') / 'result.json'
  env = {
      **os.environ,
      'JAX_PLATFORMS': 'cpu',
      'JAX_DISABLE_MOST_OPTIMIZATIONS': 'true',
      'XLA_FLAGS': os.environ.get('XLA_FLAGS', '--xla_force_host_platform_device_count=4'),
      # The session's cache, not the user's cache folder (the command's default).
      'JAX_COMPILATION_CACHE_DIR': compilation_cache_dir,
  }
  command = [
      sys.executable,
      '-m',
      'modistill_jax.benchmark',
      '--config=configs/demo.py:step3,tiny',
      '--stages=step1_rgb,step3',
      '--steps=2',
      '--warmup=2',
      f'--json={out}',
      '--num_classes=3',
      f'--data_dir={synthetic_data_dir}',
      *(f'--config.{k}={v}' for k, v in TINY_DATA.items()),
      '--pipeline_seconds=0.5',
  ]
  done = subprocess.run(
      command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600, check=False
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return json.loads(out.read_text())


@pytest.mark.slow
def test_json_has_every_key_with_its_type(report):
  assert [r['stage'] for r in report['stages']] == ['step1_rgb', 'step3']
  for result in report['stages']:
    for key, kind in STAGE_KEYS.items():
      assert isinstance(result[key], kind), (result['stage'], key, result[key])
    assert result['device_kind'] == 'cpu'
    assert result['num_devices'] == 4
    assert result['frames_per_s'] == pytest.approx(TINY['input.num_frames'] * result['clips_per_s'])
    assert result['peak_memory_bytes'] > 0


@pytest.mark.slow
def test_pipeline_is_timed_on_the_modalities_each_stage_reads(report):
  step1, step3 = report['stages']
  assert step1['inputs'] == ['rgb'] and sorted(step3['inputs']) == ['depth', 'rgb']
  assert step1['pipeline_clips_per_s'] > 0 and step3['pipeline_clips_per_s'] > 0


@pytest.mark.slow
def test_no_step_after_the_first_recompiles(report):
  assert [r['recompiles'] for r in report['stages']] == [0, 0]


@pytest.mark.slow
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
  assert costs.peak_flops('TPU v5 lite') == 197e12
  assert costs.peak_flops('NVIDIA H100 80GB HBM3') == 989e12
  assert costs.peak_flops('NVIDIA H100 PCIe') == 756e12
  assert costs.peak_flops('NVIDIA A100-SXM4-40GB') == 312e12
  assert costs.peak_flops('cpu') is None


# MARK: the accelerator suite (`--suite`), its accounting, and the reference ResNet

SUITE_STAGES = ['step1_rgb', 'step2', 'step3', 'step4']
SUITE_KEYS = {
    'stage': str,
    'batch_size': int,
    'clips_per_s': float,
    'frames_per_s': float,
    'repeat_clips_per_s': list,
    'lowered_flops_per_step': float,
    'flops_per_step': float,
    'flop_disagreement': float,
    'flops_disagree': bool,
    'model_flops_per_step': float,
    'model_flops_mfu': type(None),
    'mfu': type(None),
    # The CPU backend keeps no allocator statistics: n/a, never the compile plan.
    'measured_peak_memory_bytes': type(None),
    'measured_peak_memory_at_most_bytes': type(None),
    'peak_memory_bytes': int,
    'compile_s': float,
    'compile_cached': bool,
    'recompiles': int,
    'pipeline_clips_per_s': float,
    'forward_flops_per_frame': float,
}


@pytest.fixture(scope='module')
def suite(tmp_path_factory, synthetic_data_dir, compilation_cache_dir) -> dict:
  """`benchmark --suite` on a tiny stream (16x16, 2 frames, width 4): its JSON and Markdown.

  6 end-to-end steps at 2 steps per epoch and a log record every step: the
  stage validates after steps 2, 4 and 6.
  """
  folder = tmp_path_factory.mktemp('suite')
  command = [
      sys.executable,
      '-m',
      'modistill_jax.benchmark',
      '--config=configs/demo.py:step1_rgb',
      '--suite',
      '--suite_image_size=16',
      '--suite_batch=4',
      '--steps=2',
      '--warmup=1',
      '--repeats=2',
      '--num_classes=3',
      '--config.model.width=4',
      '--config.input.num_frames=2',
      '--config.input.worker_count=0',
      '--config.input.prefetch=1',
      '--config.builder_config=',
      '--config.eval_batch_size=4',
      '--config.log_every_steps=1',
      f'--data_dir={synthetic_data_dir}',
      '--pipeline_seconds=0.3',
      '--end_to_end_steps=6',
      f'--json={folder / "suite.json"}',
      f'--markdown={folder / "suite.md"}',
  ]
  # One device: partitioning the four stages over several would double their compile time.
  done = subprocess.run(
      command,
      cwd=REPO_ROOT,
      env=cli_env(compilation_cache_dir, device_count=1),
      capture_output=True,
      text=True,
      timeout=900,
      check=False,
  )
  assert done.returncode == 0, done.stderr[-3000:]
  return {
      'json': json.loads((folder / 'suite.json').read_text()),
      'markdown': (folder / 'suite.md').read_text(),
  }


@pytest.mark.slow
def test_suite_reports_every_field_for_every_stage_and_the_reference(suite):
  report = suite['json']
  assert [r['stage'] for r in report['stages']] == SUITE_STAGES
  for result in report['stages'] + [report['reference']]:
    for key, kind in SUITE_KEYS.items():
      assert isinstance(result[key], kind), (result['stage'], key, result[key])
    assert result['frames_per_s'] == pytest.approx(2 * result['clips_per_s'])
    assert len(result['repeat_clips_per_s']) == 2
    assert result['clips_per_s'] == pytest.approx(np.median(result['repeat_clips_per_s']))
    assert result['flops_disagree'] == (result['flop_disagreement'] > 0.1)
    assert result['recompiles'] == 0
  for result in report['stages']:
    assert result['dtype'] == 'bfloat16' and result['image_size'] == 16
    trained, frozen = len(result['trainable']), len(result['frozen'])
    assert result['model_flops_per_step'] == pytest.approx(
        result['forward_flops_per_frame'] * 4 * 2 * (3 * trained + frozen)
    )
  by_name = {r['stage']: r for r in report['stages']}
  assert (by_name['step3']['trainable'], by_name['step3']['frozen']) == (['hall'], ['depth'])
  reference = report['reference']
  assert reference['model_flops_per_step'] == pytest.approx(
      3 * reference['forward_flops_per_frame'] * 4 * 2
  )


@pytest.mark.slow
def test_suite_headline_is_step1_over_the_reference(suite):
  report = suite['json']
  headline = report['headline']
  assert headline['frames_per_s'] == report['stages'][0]['frames_per_s']
  assert headline['reference_frames_per_s'] == report['reference']['frames_per_s']
  assert headline['over_reference'] == pytest.approx(
      headline['frames_per_s'] / headline['reference_frames_per_s']
  )
  text = suite['markdown']
  for name in SUITE_STAGES + ['reference']:
    assert f'| {name} |' in text
  assert f"{headline['over_reference']:.2f}x" in text


@pytest.mark.slow
def test_suite_end_to_end_times_the_trainer_loop_between_its_compiles(suite):
  end_to_end = suite['json']['end_to_end']
  # Records at steps 1-6, validation after 2, 4, 6: (0, 1] holds the compile,
  # (2, 3] the evaluation's compile, (4, 5] a validation pass; (1, 2], (3, 4]
  # and (5, 6] are the loop alone.
  assert end_to_end['stage'] == 'step1_rgb'
  assert end_to_end['steps_timed'] == 3
  assert end_to_end['validation_passes_timed'] == 1
  assert end_to_end['clips_per_s'] > 0 and end_to_end['with_validation_clips_per_s'] > 0
  step1 = suite['json']['stages'][0]
  assert end_to_end['step_alone_clips_per_s'] == step1['clips_per_s']
  assert end_to_end['pipeline_alone_clips_per_s'] == step1['pipeline_clips_per_s']
  bound = min(step1['clips_per_s'], step1['pipeline_clips_per_s'])
  assert end_to_end['share_of_bound'] == pytest.approx(end_to_end['clips_per_s'] / bound)


def test_flop_disagreement_is_relative_to_the_larger_count():
  assert costs.flop_disagreement(100.0, 100.0) == 0.0
  assert costs.flop_disagreement(100.0, 125.0) == pytest.approx(0.2)
  assert costs.flop_disagreement(125.0, 100.0) == pytest.approx(0.2)
  assert costs.flop_disagreement(0.0, 0.0) == 0.0
  assert not costs.flops_disagree(100.0, 111.0)  # 9.9% apart
  assert costs.flops_disagree(100.0, 112.0)  # 10.7% apart
  assert costs.flops_disagree(3.0e12, 1.0e12)  # a compiled count a third of the lowered


def test_loop_throughput_skips_the_compiles_and_separates_validation():
  def train(step, clips_per_s):
    return {'step': step, 'split': 'train', 'clips_per_s': clips_per_s}

  # 10 clips per step; steps 1-2 compile (slow), validation after step 4 (its
  # compile falls in (4, 6]) and after 8 (a pass in (8, 10]).
  records = [
      train(2, 1.0),
      train(4, 20.0),
      {'step': 4, 'split': 'validation'},
      train(6, 2.0),
      train(8, 40.0),
      {'step': 8, 'split': 'validation'},
      train(10, 10.0),
      train(12, 40.0),
  ]
  timing = end_to_end.loop_throughput(records, clips_per_step=10)
  # Loop alone: (2, 4] 1 s, (6, 8] 0.5 s, (10, 12] 0.5 s -> 60 clips in 2 s.
  assert timing['clips_per_s'] == pytest.approx(30.0)
  assert timing['steps_timed'] == 6
  # With the later validation pass: plus (8, 10], 2 s -> 80 clips in 4 s.
  assert timing['with_validation_clips_per_s'] == pytest.approx(20.0)
  assert timing['validation_passes_timed'] == 1
  with pytest.raises(ValueError, match='end_to_end_steps'):
    end_to_end.loop_throughput(records[:1], clips_per_step=10)


def test_own_peak_only_when_the_measurement_raised_the_mark():
  assert costs.own_peak(100, 250) == 250
  assert costs.own_peak(250, 250) is None
  assert costs.own_peak(None, None) is None


def test_reference_is_resnet50_by_its_parameter_count():
  model = reference_resnet.ResNet(num_classes=1000)
  shapes = jax.eval_shape(
      functools.partial(model.init, train=False),
      jax.random.key(0),
      jax.ShapeDtypeStruct((1, 224, 224, 3), jnp.float32),
  )
  # torchvision's resnet50: 25,557,032 trainable parameters (BatchNorm scales and biases included).
  assert sum(x.size for x in jax.tree.leaves(shapes['params'])) == 25_557_032
  assert len([n for n in shapes['params'] if n.startswith('Bottleneck')]) == 3 + 4 + 6 + 3


@pytest.mark.slow
def test_reference_step_trains_on_a_fixed_batch(fast_compile):
  del fast_compile
  model = reference_resnet.ResNet(num_classes=3, units_per_block=(1, 1, 1, 1), width=4)
  config = ml_collections.ConfigDict(
      {'rgb_mean': (120.0, 110.0, 100.0), 'rgb_std': (60.0, 60.0, 60.0)}
  )
  mesh = sharding.make_mesh()
  tx = optax.adam(1e-2)
  train_fn = reference_resnet.make_train_fn(model, tx, config, mesh)
  state = jax.device_put(
      reference_resnet.init_state(model, tx, image_size=16), sharding.replicated(mesh)
  )
  rng = np.random.default_rng(0)
  batch = sharding.to_global(
      {
          'rgb': rng.integers(0, 256, (4, 2, 16, 16, 3), dtype=np.uint8),
          'label': np.arange(4, dtype=np.int32) % 3,
      },
      mesh,
  )
  losses = []
  for _ in range(6):
    state, step_metrics = train_fn(state, batch)
    losses.append(float(step_metrics['loss']))
  assert int(state.step) == 6
  assert losses[-1] < 0.5 * losses[0], losses


def test_end_to_end_refuses_a_stage_that_needs_earlier_stages():
  config = ml_collections.ConfigDict(demo.get_config('step3').to_dict())
  with pytest.raises(ValueError, match="'step3' alone, but it starts from step2"):
    end_to_end.measure_end_to_end(config, 'step3', data_dir='unused', num_steps=10)


def test_synthetic_batch_has_each_modality_as_the_pipeline_yields_it():
  """uint8 frames and depth codes, float32 joint coordinates within the frame, on the devices."""
  config = demo.get_config('step3,tiny')
  batch = benchmark_step.synthetic_batch(
      config, ('rgb', 'depth', 'skeleton'), 3, sharding.make_mesh(), seed=0
  )
  for m, dtype in (('rgb', np.uint8), ('depth', np.uint8), ('skeleton', np.float32)):
    assert batch[m].shape == feeding.input_shape(config, config.batch_size, m), m
    assert batch[m].dtype == dtype, m
  joints = np.asarray(batch['skeleton'])
  assert 0 <= joints.min() and joints.max() <= config.input.image_size
  assert np.asarray(batch['label']).max() < 3 and np.asarray(batch['mask']).all()
