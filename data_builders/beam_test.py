"""`tfds build` on Apache Beam writes exactly what the process pool writes.

The three raw-data builders are built from their fake raw trees (`dummy_data/`,
which hold bad samples of every kind the builders skip) twice, each time by one
`tfds build` command for all three, as the READMEs give it:

* the process pool: `MODISTILL_BUILD_WORKERS=2`;
* Beam: `--beam_pipeline_options=runner=DirectRunner,direct_num_workers=2,
  direct_running_mode=multi_processing`, whose worker processes unpickle the
  transform, the samples and the conversion function, as Dataflow's workers do.

The two builds must hold the same splits (clip tables and frame rows), the
same rows in the same order (TFDS orders both by the hash of the key) with
every feature equal, frames byte for byte, and the same `skipped.tsv` (Beam's workers send their
skips to
a side output that the launching process merges).

The two commands run side by side (each mostly waits on its own workers).
NTU's `res112_ir_skeleton` config (infrared videos and skeleton joints too) is
built the same two ways.
"""

from __future__ import annotations

import os
import pathlib
import subprocess

import numpy as np
import pytest
import tensorflow_datasets as tfds

from data_builders import builder_test_utils
from data_builders import raw_clips
from modistill_jax import modalities
from modistill_jax.data import records

REPO = pathlib.Path(__file__).resolve().parents[1]
DATASETS = ('nw_ucla', 'uwa3dii', 'ntu_rgbd')
CONFIG = 'res112'
BEAM_OPTIONS = 'runner=DirectRunner,direct_num_workers=2,direct_running_mode=multi_processing'
TIMEOUT_S = 600
IR_SKELETON_CONFIG = 'res112_ir_skeleton'

pytestmark = pytest.mark.beam


def _start_build(
    manual_dir: pathlib.Path,
    data_dir: pathlib.Path,
    *extra_args: str,
    datasets: tuple[str, ...] = DATASETS,
    config: str = CONFIG,
) -> subprocess.Popen:
  env = dict(os.environ, **{raw_clips.WORKERS_ENV: '2'})
  return subprocess.Popen(
      builder_test_utils.tfds_build_command()
      + [f'data_builders/{name}' for name in datasets]
      + [
          f'--manual_dir={manual_dir}',
          '--add_name_to_manual_dir',
          f'--config={config}',
          f'--data_dir={data_dir}',
          *extra_args,
      ],
      cwd=REPO,
      env=env,
      stdout=subprocess.PIPE,
      stderr=subprocess.STDOUT,
      text=True,
  )


def _finish(proc: subprocess.Popen, what: str) -> None:
  try:
    output = proc.communicate(timeout=TIMEOUT_S)[0]
  except subprocess.TimeoutExpired:
    proc.kill()
    pytest.fail(f'{what} timed out after {TIMEOUT_S}s:\n{proc.communicate()[0][-5000:]}')
  assert proc.returncode == 0, f'{what} failed ({proc.returncode}):\n{output[-5000:]}'


def _build_both_ways(root: pathlib.Path, datasets: tuple[str, ...], config: str):
  """`{'pool': data_dir, 'beam': data_dir}` of the two builds of `datasets`' `config`."""
  manual_dir = root / 'manual'  # `--add_name_to_manual_dir`: manual/<dataset name>
  manual_dir.mkdir()
  for name in datasets:
    (manual_dir / name).symlink_to(REPO / 'data_builders' / name / 'dummy_data')
  data_dirs = {'pool': root / 'pool', 'beam': root / 'beam'}
  pool = _start_build(manual_dir, data_dirs['pool'], datasets=datasets, config=config)
  beam = _start_build(
      manual_dir,
      data_dirs['beam'],
      f'--beam_pipeline_options={BEAM_OPTIONS}',
      datasets=datasets,
      config=config,
  )
  _finish(pool, 'tfds build on the process pool')
  _finish(beam, 'tfds build on Beam')
  return data_dirs


@pytest.fixture(scope='module')
def built(tmp_path_factory) -> dict[str, pathlib.Path]:
  """The two builds of the three datasets."""
  return _build_both_ways(tmp_path_factory.mktemp('beam_vs_pool'), DATASETS, CONFIG)


@pytest.fixture(scope='module')
def built_ir_skeleton(tmp_path_factory) -> dict[str, pathlib.Path]:
  """The two builds of NTU's `res112_ir_skeleton` config."""
  return _build_both_ways(
      tmp_path_factory.mktemp('beam_vs_pool_ir_skeleton'), ('ntu_rgbd',), IR_SKELETON_CONFIG
  )


def _assert_same_example(pool: dict, beam: dict, where: str) -> None:
  assert sorted(pool) == sorted(beam), where
  for key, value in pool.items():
    if key in modalities.NAMES:  # a frame row holds one frame of one of them, a clip row none
      assert [bytes(a) for a in value] == [bytes(b) for b in beam[key]], (where, key)
    else:
      np.testing.assert_array_equal(value, beam[key], err_msg=f'{where}: {key}')


@pytest.mark.parametrize('name', DATASETS)
def test_beam_writes_the_pool_examples_and_skip_report(built, name):
  _assert_same_builds(built, name, CONFIG)


def test_beam_writes_the_pool_infrared_and_skeletons(built_ir_skeleton):
  _assert_same_builds(built_ir_skeleton, 'ntu_rgbd', IR_SKELETON_CONFIG)


def _assert_same_builds(built: dict[str, pathlib.Path], name: str, config: str) -> None:
  pool, beam = (
      tfds.builder_from_directory(os.fspath(built[kind] / name / config / '2.0.0'))
      for kind in ('pool', 'beam')
  )
  sizes = lambda builder: {s: info.num_examples for s, info in builder.info.splits.items()}
  assert sizes(beam) == sizes(pool)
  for split in pool.info.splits:
    pool_examples = list(pool.as_data_source(split=split))
    beam_examples = list(beam.as_data_source(split=split))
    assert [e['sample_id'] for e in beam_examples] == [e['sample_id'] for e in pool_examples], split
    for pool_example, beam_example in zip(pool_examples, beam_examples):
      _assert_same_example(
          pool_example, beam_example, f'{name}/{split}/{pool_example["sample_id"].decode()}'
      )
    if records.is_frames_split(split):
      stored = records.stored_modalities(pool_examples[0])
      assert sum(len(e[m]) for e in pool_examples for m in stored) == len(pool_examples)
  reports = [raw_clips.read_skip_report(b.data_path / raw_clips.SKIP_REPORT) for b in (pool, beam)]
  assert reports[0], 'the dummy data has bad samples: the pool must have skipped some'
  assert sorted(reports[1], key=lambda s: s.sample_id) == sorted(
      reports[0], key=lambda s: s.sample_id
  )
  assert not (beam.data_path / raw_clips.BEAM_SKIPS_DIR).exists()
