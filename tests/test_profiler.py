"""`config.profile_steps`: a `jax.profiler` trace of chosen steps in the stage folder.

In-process on the tiny built `synthetic_rgbd` and 4 fake CPU devices, as in
`test_trainer.py`; TensorBoard's own profile plugin lists what was written.
"""

import argparse

import pytest
from tensorboard.plugins import base_plugin
from xprof import profile_plugin

from conftest import tiny_config
from modistill_jax import config_lib
from modistill_jax import profiling
from modistill_jax import runs
from modistill_jax import trainer

pytestmark = pytest.mark.usefixtures('fast_compile')


def profile_runs(logdir: str) -> list[str]:
  """The profile runs TensorBoard's profile plugin lists for `tensorboard --logdir logdir`."""
  context = base_plugin.TBContext(
      logdir=logdir, flags=argparse.Namespace(master_tpu_unsecure_channel='')
  )
  return profile_plugin.ProfilePlugin(context).runs_imp()


@pytest.mark.slow
def test_profile_steps_write_a_trace_tensorboard_lists(tmp_path, synthetic_data_dir):
  config = tiny_config('demo', 'step1_rgb', num_train_steps=3, profile_steps=(2, 3))
  config.data_dir = synthetic_data_dir
  trainer.run_stage(config, str(tmp_path), 'step1_rgb')
  stage_dir = runs.stage_dir(str(tmp_path), 'step1_rgb').path
  traces = list(stage_dir.glob('plugins/profile/*/*.xplane.pb'))
  assert len(traces) == 1, traces
  assert traces[0].stat().length > 0
  assert profile_runs(str(stage_dir)) == [traces[0].parent.name]
  # The steps are annotated, which the profile's step-time breakdown needs.
  data = traces[0].read_bytes()
  assert b'train' in data and b'step_num' in data


def test_without_profile_steps_nothing_is_traced(tiny_trained_workdir):
  """The shared tiny run (every stage, `profile_steps` left at `()`) wrote no trace."""
  for stage in ('step1', 'step2', 'step3', 'step4'):
    stage_dir = runs.stage_dir(tiny_trained_workdir, stage).path
    assert runs.stage_dir(tiny_trained_workdir, stage).finished()
    assert not (stage_dir / 'plugins').exists()
    assert profile_runs(str(stage_dir)) == []


@pytest.mark.parametrize('steps', [(3, 2), (0, 1), (5,), (1, 2, 3)])
def test_bad_profile_steps_are_refused_before_anything_runs(steps):
  config = tiny_config('demo', 'step1_rgb', profile_steps=steps)
  with pytest.raises(ValueError, match=r'config\.profile_steps must be FIRST,LAST'):
    config_lib.check(config)


@pytest.mark.slow
def test_a_stage_that_stops_inside_the_window_still_closes_the_trace(tmp_path):
  """The trace stops on `close` when the loop ends before the last step, and can start again."""
  profiler = profiling.StepProfiler((1, 10), tmp_path)
  profiler.begin(1)
  profiler.end(1, None)
  profiler.close()
  again = profiling.StepProfiler((1, 1), tmp_path / 'again')
  again.begin(1)
  again.end(1, None)  # the last step: stops the trace itself
  again.close()
  assert len(list(tmp_path.glob('plugins/profile/*/*.xplane.pb'))) == 1
  assert len(list((tmp_path / 'again').glob('plugins/profile/*/*.xplane.pb'))) == 1
