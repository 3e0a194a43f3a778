"""Your own RGB-D folder: built by the documented command, checked against its source, trained.

A generated folder holds three classes (classes.txt in a non-sorted order), RGB
as .mp4 and .avi videos and as frame folders with gaps and mixed zero-padding,
16- and 8-bit depth, an RGB -> depth affine file, one sample with more RGB
than depth frames, four broken samples among the good ones, and no validation
rows. It is built by `python -m data_builders.custom_rgbd build` as a user
types it (a subprocess), its clips are compared with the frames that made the files, and
`configs/custom.py:step1` trains on it with the tiny stream. Every table mistake
stops the build naming file and line, and a failed build leaves no dataset.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from etils import epath
import jax
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from configs import custom
from conftest import REPO_ROOT
from conftest import tiny_config
from data_builders import builder_test_utils
from data_builders import raw_clips
from data_builders.custom_rgbd import builder as custom_builder
from data_builders.custom_rgbd import layout
from modistill_jax import trainer
from modistill_jax.data import feeding
from modistill_jax.data import pipeline
from modistill_jax.data import records
import tiny_run

RES = 112  # the res112 config's frame size
RGB_W, RGB_H = 80, 64  # even: yuv420p video
DEPTH_W, DEPTH_H = 32, 24
# depth = 0.5 * rgb - (4, 2): the depth camera sees RGB's x 8..72, y 4..52.
AFFINE = [[0.5, 0.0, -4.0], [0.0, 0.5, -2.0]]
CLASSES = ('wave', 'clap', 'jump')  # classes.txt's order, not the sorted one
# Broken samples among the good ones: a substring of each one's skip reason.
SKIPS = {
    'no_rgb': 'no RGB: none of rgb/no_rgb{.mp4,.avi,.mkv,.mov} or the folder rgb/no_rgb/ '
    '(labels.csv line 8)',
    'no_depth': 'no depth: no folder depth/no_depth/ (labels.csv line 9)',
    'bad_video': 'undecodable bad_video.mp4',
    'odd_depth': 'frame of another size: depth/odd_depth/d2.png is 30x24, its siblings 32x24 '
    '(labels.csv line 11)',
}


def smooth_rgb(x: np.ndarray, y: np.ndarray, t: int, seed: int) -> np.ndarray:
  """Colours at continuous RGB coordinates: smooth, so any resampler gives about the same."""
  return np.stack(
      [
          128 + 90 * np.sin(x / 11 + t + seed),
          128 + 90 * np.cos(y / 9 - t / 2 + seed),
          128 + 60 * np.sin((x + y) / 15 + seed),
      ],
      axis=-1,
  )


def rgb_frames(count: int, seed: int) -> list[np.ndarray]:
  y, x = np.mgrid[:RGB_H, :RGB_W] + 0.5  # pixel centres
  return [
      np.clip(np.rint(smooth_rgb(x, y, t, seed)), 0, 255).astype(np.uint8) for t in range(count)
  ]


def depth_frames(count: int, bits: int, seed: int) -> list[np.ndarray]:
  """Depth ramps that move with t; a corner of zeros (no reading, black in the jet map)."""
  y, x = np.mgrid[:DEPTH_H, :DEPTH_W]
  frames = []
  for t in range(count):
    if bits == 16:
      d = 800 + 40 * x + 25 * y + 150 * t + 10 * seed
    else:
      d = 20 + 5 * x + 2 * y + 10 * t + seed
    d[:4, :6] = 0
    frames.append(d.astype(np.uint16 if bits == 16 else np.uint8))
  return frames


def write_frames(folder: epath.Path, frames, names) -> None:
  folder.mkdir(parents=True, exist_ok=True)
  for frame, name in zip(frames, names):
    Image.fromarray(frame).save(folder / name, quality=95)


def write_folder(root: epath.Path, samples: dict, rows: list[str], affine=None) -> None:
  """`samples`: `{name: (rgb kind, rgb frames, rgb file names, depth frames, depth names)}`."""
  root.mkdir(parents=True)
  (root / 'labels.csv').write_text('\n'.join(rows) + '\n')
  (root / 'classes.txt').write_text('\n'.join(CLASSES) + '\n')
  if affine is not None:
    (root / 'rgb_to_depth.json').write_text(json.dumps(affine))
  for name, (kind, rgb, rgb_names, depth, depth_names) in samples.items():
    if kind == 'frames':
      write_frames(root / 'rgb' / name, rgb, rgb_names)
    elif kind is not None:
      (root / 'rgb').mkdir(exist_ok=True)
      codec = {'mp4': 'libx264', 'avi': 'mpeg4'}[kind]
      tiny_run.write_video(os.fspath(root / 'rgb' / f'{name}.{kind}'), rgb, codec)
    if depth is not None:
      write_frames(root / 'depth' / name, depth, depth_names)


def numbered(pattern: str, numbers) -> list[str]:
  return [pattern.format(n) for n in numbers]


def make_sample(seed: int, rgb, bits: int, depth_names: list[str]) -> tuple:
  """`rgb`: a video's (suffix, frame count), or the file names of a frame folder."""
  if isinstance(rgb, tuple):
    kind, rgb_names, count = rgb[0], None, rgb[1]
  else:
    kind, rgb_names, count = 'frames', rgb, len(rgb)
  return (
      kind,
      rgb_frames(count, seed),
      rgb_names,
      depth_frames(len(depth_names), bits, seed),
      depth_names,
  )


SEEDS = {'wave_01': 1, 'clap_01': 2, 'jump_01': 3, 'wave_02': 4, 'clap_02': 5, 'jump_02': 6}
# The main folder. Depth/RGB numbering has gaps and mixed padding: sorted by name,
# d10 would come before d2 and f010 before f9.
GOOD = {
    'wave_01': make_sample(
        SEEDS['wave_01'], ('mp4', 4), 16, numbered('depth_{}.png', (1, 2, 5, 10))
    ),
    'clap_01': make_sample(
        SEEDS['clap_01'], ['f9.png', 'f010.png', 'f11.jpg'], 8, numbered('d{:04d}.png', (7, 8, 9))
    ),
    'jump_01': make_sample(SEEDS['jump_01'], ('avi', 5), 16, numbered('{}.png', (1, 2, 3, 4))),
    'wave_02': make_sample(
        SEEDS['wave_02'], numbered('{}.png', (1, 2, 3)), 8, numbered('x_{}.png', (1, 3, 10))
    ),
    'clap_02': make_sample(SEEDS['clap_02'], ('mp4', 3), 16, numbered('{:03d}.png', (1, 2, 3))),
    'jump_02': make_sample(
        SEEDS['jump_02'], numbered('img{}.png', (0, 1, 2)), 8, numbered('{}.png', (0, 1, 2))
    ),
}
LABELS = {
    'wave_01': 'wave',
    'clap_01': 'clap',
    'jump_01': 'jump',
    'wave_02': 'wave',
    'clap_02': 'clap',
    'jump_02': 'jump',
}
ROWS = [
    'sample,label,split,subject,view',
    'wave_01,wave,train,1,2',
    'clap_01,clap,train,2,',
    'jump_01,jump,train,,1',
    'wave_02,wave,train,3,1',
    'clap_02,clap,test,4,2',
    'jump_02,jump,test,4,1',
    'no_rgb,wave,train,,',
    'no_depth,clap,train,,',
    'bad_video,jump,train,,',
    'odd_depth,wave,train,,',
]


def broken_samples() -> dict:
  odd = depth_frames(3, 16, 7)
  odd[1] = odd[1][:, :30]
  return {
      'no_rgb': (None, None, None, depth_frames(3, 16, 7), numbered('{}.png', (1, 2, 3))),
      'no_depth': ('frames', rgb_frames(3, 7), numbered('{}.png', (1, 2, 3)), None, None),
      'bad_video': (None, None, None, depth_frames(3, 16, 7), numbered('{}.png', (1, 2, 3))),
      'odd_depth': (
          'frames',
          rgb_frames(3, 7),
          numbered('{}.png', (1, 2, 3)),
          odd,
          numbered('d{}.png', (1, 2, 3)),
      ),
  }


def build(name: str, root: epath.Path, data_dir: epath.Path) -> None:
  """The command's build of the `res112` config, in-process (the command itself: `built`)."""
  custom_builder.build(name, root, os.fspath(data_dir), ['res112'], overwrite=False)


def build_command(*args: str) -> subprocess.CompletedProcess:
  """`python -m data_builders.custom_rgbd ARGS` as a user types it."""
  return subprocess.run(
      [sys.executable, '-m', 'data_builders.custom_rgbd', *args],
      cwd=REPO_ROOT,
      env={**os.environ, 'PYTHONPATH': REPO_ROOT},
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )


@pytest.fixture(scope='module', autouse=True)
def one_build_worker():
  with pytest.MonkeyPatch.context() as patch:
    patch.setenv(raw_clips.WORKERS_ENV, '1')
    yield


@pytest.fixture(scope='module')
def built(tmp_path_factory) -> epath.Path:
  """The main folder built as `my_gestures`; returns the data_dir."""
  root = epath.Path(tmp_path_factory.mktemp('custom')) / 'recordings'
  write_folder(root, {**GOOD, **broken_samples()}, ROWS, affine=AFFINE)
  (root / 'rgb' / 'bad_video.mp4').write_bytes(b'not a video at all' * 10)
  data_dir = epath.Path(tmp_path_factory.mktemp('custom_data'))
  # The documented command, exactly as README.md shows it.
  done = build_command(
      'build', 'my_gestures', f'--manual_dir={root}', f'--data_dir={data_dir}', '--config=res112'
  )
  assert done.returncode == 0, done.stderr
  assert f'Built my_gestures in {data_dir}/my_gestures/res112/2.0.0' in done.stdout
  return data_dir


def read_examples(data_dir: epath.Path, name: str) -> tuple[dict, tfds.core.DatasetBuilder]:
  """`({sample_id: (split, example)}, builder)` of a built dataset, opened as the trainer does."""
  folder = pipeline.built_dataset_dir(name, data_dir=os.fspath(data_dir), builder_config='res112')
  ds = tfds.builder_from_directory(folder)
  return builder_test_utils.read_built(ds), ds


def decoded(example: dict, key: str) -> np.ndarray:
  return np.stack([records.decode_frame(key, f) for f in example[key]]).astype(np.float64)


def expected_rgb(frames: list[np.ndarray], seed: int, warped: bool) -> np.ndarray:
  """What the stored RGB should be, from the source frames or their continuous colours."""
  if not warped:
    return np.stack(
        [np.asarray(Image.fromarray(f).resize((RES, RES), Image.BILINEAR)) for f in frames]
    ).astype(np.float64)
  j, i = np.meshgrid(np.arange(RES) + 0.5, np.arange(RES) + 0.5)
  u, v = j * DEPTH_W / RES, i * DEPTH_H / RES  # depth-frame coordinates
  x, y = (u + 4.0) / 0.5, (v + 2.0) / 0.5  # the affine, inverted
  return np.stack([np.clip(smooth_rgb(x, y, t, seed), 0, 255) for t in range(len(frames))])


@pytest.mark.slow
def test_builds_every_good_sample_and_reports_the_rest(built):
  examples, ds = read_examples(built, 'my_gestures')
  assert sorted(examples) == sorted(GOOD)
  assert ds.info.features['label'].names == list(CLASSES)
  # No validation row: no validation split (each split has its frame rows beside it).
  assert set(ds.info.splits) == {'train', 'test', 'train_frames', 'test_frames'}
  for sample_id, (split, example) in examples.items():
    assert CLASSES[example['label']] == LABELS[sample_id]
    assert split == ('test' if sample_id in ('clap_02', 'jump_02') else 'train')
  assert (examples['wave_01'][1]['subject'], examples['wave_01'][1]['view']) == (1, 2)
  assert (examples['jump_01'][1]['subject'], examples['jump_01'][1]['setup']) == (-1, -1)
  version_dir = epath.Path(
      pipeline.built_dataset_dir('my_gestures', data_dir=os.fspath(built), builder_config='res112')
  )
  trimmed = (version_dir / custom_builder.TRIMMED_REPORT).read_text().splitlines()
  assert trimmed[1:] == ['jump_01\ttrain\t5\t4']


@pytest.mark.slow
@pytest.mark.parametrize('sample_id', sorted(SKIPS))
def test_broken_sample_is_skipped_with_its_file_and_line(built, sample_id):
  folder = pipeline.built_dataset_dir(
      'my_gestures', data_dir=os.fspath(built), builder_config='res112'
  )
  reasons = {
      s.sample_id: s.reason
      for s in raw_clips.read_skip_report(epath.Path(folder) / raw_clips.SKIP_REPORT)
  }
  assert sorted(reasons) == sorted(SKIPS)
  assert SKIPS[sample_id] in reasons[sample_id]
  csv_line = next(n for n, row in enumerate(ROWS, 1) if row.startswith(f'{sample_id},'))
  assert reasons[sample_id].endswith(f'(labels.csv line {csv_line})')


@pytest.mark.slow
@pytest.mark.parametrize('sample_id', sorted(GOOD))
def test_clips_match_their_source_frames(built, sample_id):
  """RGB through the affine within JPEG/video tolerance; depth exactly as its codes."""
  examples, _ = read_examples(built, 'my_gestures')
  example = examples[sample_id][1]
  _, rgb, _, depth, _ = GOOD[sample_id]
  kept = min(len(rgb), len(depth))
  assert (example['num_frames'], example['rgb_frames_raw'], example['depth_frames_raw']) == (
      kept,
      len(rgb),
      len(depth),
  )
  # Depth frames in numeric order, paired by rank, coloured per clip over the kept frames.
  want_depth = raw_clips.depth_clip_to_code(np.stack(depth[:kept]).astype(np.int32), RES, RES)
  np.testing.assert_array_equal(decoded(example, 'depth'), want_depth)
  stored = decoded(example, 'rgb')
  want = expected_rgb(rgb[:kept], SEEDS[sample_id], warped=True)
  error = np.abs(stored - want)
  # Measured: 1.0-1.4 from PNG frames and H.264, 3.0 from MPEG-4 part 2 (.avi), and
  # 2.8-3.2 from lossless frames sampled half a pixel off.
  tolerance = 4.0 if GOOD[sample_id][0] == 'avi' else 2.0
  assert error.mean() < tolerance and np.percentile(error, 99) < 16, (error.mean(), error.max())
  # The same frames merely resized (no affine) would be far off: the check can fail.
  unwarped = expected_rgb(rgb[:kept], SEEDS[sample_id], warped=False)
  assert np.abs(stored - unwarped).mean() > 20


def test_without_affine_rgb_and_depth_are_resized_alike(tmp_path):
  root = epath.Path(tmp_path) / 'plain'
  frames = rgb_frames(3, 9)
  write_folder(
      root,
      {
          's': (
              'frames',
              frames,
              numbered('{}.png', (1, 2, 3)),
              depth_frames(3, 16, 9),
              numbered('{}.png', (1, 2, 3)),
          )
      },
      ['sample,label,split', 's,wave,train'],
  )
  build('plain_rgbd', root, epath.Path(tmp_path) / 'data')
  examples, _ = read_examples(epath.Path(tmp_path) / 'data', 'plain_rgbd')
  error = np.abs(decoded(examples['s'][1], 'rgb') - expected_rgb(frames, 9, warped=False))
  assert error.mean() < 2.0 and error.max() < 16, (error.mean(), error.max())


@pytest.mark.parametrize(
    'rows, classes, message',
    [
        ([], None, 'labels.csv is empty'),
        (['sample,label,split'], None, 'has a header but no sample row'),
        (
            ['sample,label,split', 'a,wave,train', 'b,wave,val'],
            None,
            "labels.csv:3: split must be one of ('train', 'validation', 'test'), got 'val'",
        ),
        (['sample,label,split', 'a,,train'], None, "labels.csv:2: sample 'a' has no label"),
        (
            ['sample,label,split', 'a,wave,train', 'b,wave,test', 'a,clap,test'],
            None,
            "labels.csv:4: sample 'a' already on line 2",
        ),
        (
            ['sample,label,split', 'a,wave,train', 'b,run,test'],
            CLASSES,
            "labels.csv:3: label 'run' is not in",
        ),
        (['sample,label,split,subjet', 'a,wave,train,1'], None, "unknown ['subjet']"),
        (
            ['sample,label,split,subject', 'a,wave,train,P1'],
            None,
            "labels.csv:2: subject must be an integer (or empty), got 'P1'",
        ),
    ],
    ids=[
        'empty',
        'header_only',
        'unknown_split',
        'missing_label',
        'duplicate_sample',
        'label_not_in_classes',
        'misspelled_column',
        'non_integer_subject',
    ],
)
def test_table_mistake_stops_the_build_naming_file_and_line(tmp_path, rows, classes, message):
  root = epath.Path(tmp_path) / 'raw'
  root.mkdir()
  (root / 'labels.csv').write_text('\n'.join(rows) + ('\n' if rows else ''))
  if classes:
    (root / 'classes.txt').write_text('\n'.join(classes))
  data_dir = epath.Path(tmp_path) / 'data'
  with pytest.raises(ValueError) as failure:
    build('table_mistake', root, data_dir)
  assert message in str(failure.value)
  assert not (data_dir / 'table_mistake').exists()


@pytest.mark.slow
def test_command_refuses_a_table_mistake_in_one_line_and_answers_help(tmp_path):
  root = epath.Path(tmp_path) / 'raw'
  root.mkdir()
  (root / 'labels.csv').write_text('sample,label,split\na,wave,val\n')
  done = build_command('build', 'table_mistake', f'--manual_dir={root}', f'--data_dir={tmp_path}')
  assert done.returncode == 1
  assert done.stderr.strip().splitlines()[-1] == (
      f"error: {root}/labels.csv:2: split must be one of ('train', 'validation', 'test'), "
      "got 'val'."
  )
  assert 'Traceback' not in done.stderr
  usage = build_command('--help')
  assert 'Traceback' not in usage.stderr  # absl's --help exits with status 1
  assert 'build my_gestures --manual_dir=ROOT' in usage.stdout and '--manual_dir' in usage.stdout


def test_unknown_builder_config_is_refused(tmp_path):
  root = epath.Path(tmp_path)
  (root / 'labels.csv').write_text('sample,label,split\na,wave,train\n')
  with pytest.raises(ValueError, match=r'--config=res100: not a config of any_name; use one of'):
    custom_builder.build('any_name', root, os.fspath(root / 'data'), ['res100'], overwrite=False)


def test_bad_affine_file_stops_the_build(tmp_path):
  root = epath.Path(tmp_path) / 'raw'
  root.mkdir()
  (root / 'labels.csv').write_text('sample,label,split\na,wave,train\n')
  (root / 'rgb_to_depth.json').write_text('[[0.5, 0, -4], [0, 0.5]]')
  with pytest.raises(ValueError, match='rgb_to_depth.json must hold a 2x3 list'):
    build('bad_affine', root, epath.Path(tmp_path) / 'data')


def test_failed_build_leaves_no_dataset(tmp_path):
  """Every training sample broken: the build fails mid-way, and nothing looks built."""
  root = epath.Path(tmp_path) / 'raw'
  write_folder(
      root,
      {'a': (None, None, None, depth_frames(2, 16, 0), ['1.png', '2.png'])},
      ['sample,label,split', 'a,wave,train'],
  )
  (root / 'rgb').mkdir()
  (root / 'rgb' / 'a.avi').write_bytes(b'\x00' * 100)
  data_dir = epath.Path(tmp_path) / 'data'
  with pytest.raises(RuntimeError, match="every sample of split 'train' was skipped"):
    build('all_broken', root, data_dir)
  config_dir = data_dir / 'all_broken' / 'res112'
  assert not config_dir.exists() or not list(config_dir.iterdir())
  with pytest.raises(FileNotFoundError, match='No built all_broken dataset'):
    pipeline.built_dataset_dir('all_broken', data_dir=os.fspath(data_dir), builder_config='res112')


def test_name_must_be_new_and_a_folder_name(tmp_path):
  root = epath.Path(tmp_path)
  (root / 'labels.csv').write_text('sample,label,split\na,wave,train\n')
  with pytest.raises(ValueError, match="'mnist' is already a TFDS dataset"):
    build('mnist', root, root / 'data')
  with pytest.raises(ValueError, match='lower-case letters'):
    build('My-Data', root, root / 'data')


@pytest.mark.slow
def test_custom_config_trains_on_the_built_dataset(built, fast_compile):
  """`configs/custom.py:step1 --config.dataset=my_gestures` with the tiny stream, end to end.

  Step 1 (both streams, so both modalities of the built clips) stands for the
  four stages: README.md's own-data commands train `configs/custom.py:all`
  on a built folder as the user types them (tests/test_documented_commands.py),
  and tests/test_configs.py checks every stage's results on a dataset without
  a validation split. What is this dataset's own is checked here: its clips
  feed the trainer, the whole test split is evaluated, and without validation
  rows the stage keeps its final state.
  """
  del fast_compile
  # tiny_run's stream and schedule (the demo's bn_momentum too), so that the XLA programs are
  # the ones tiny_run compiles for the predict/export tests: one compile in a pytest session.
  config = tiny_config(
      'custom',
      'step1',
      **{
          **tiny_run.RUN_OVERRIDES,
          'dataset': 'my_gestures',
          'data_dir': os.fspath(built),
          'builder_config': 'res112',
          'model.bn_momentum': tiny_run.run_config('').model.bn_momentum,
      },
  )
  workdir = epath.Path(built).parent / 'run'
  with jax.default_prng_impl('unsafe_rbg'):
    results = trainer.train_and_evaluate(config, os.fspath(workdir))
  assert list(results) == ['step1']
  assert results['step1']['test']['num_examples'] == 2
  assert set(results['step1']['test']['accuracy']) == {'rgb', 'depth', 'fused'}
  # No validation split: the stage keeps (and tests) its final state.
  assert (results['step1']['best_step'], results['step1']['validation_accuracy']) == (2, None)


@pytest.mark.slow
def test_custom_config_without_dataset_name_says_which_flag(built):
  config = custom.get_config('step1')
  config.data_dir = os.fspath(built)
  with pytest.raises(ValueError, match='set --config.dataset=NAME'):
    feeding.load_sources(config)


def test_frames_order_by_number_and_a_repeated_number_is_an_error(tmp_path):
  folder = epath.Path(tmp_path) / 'depth' / 's'
  folder.mkdir(parents=True)
  for name in ('f010.png', 'f9.png', 'f11.png', 'notes.txt', '.f1.png'):
    (folder / name).write_bytes(b'')
  sample = layout.CustomSample('s', 'train', 0, 2, os.fspath(tmp_path), None)
  frames = layout.numbered_frames(folder, layout.DEPTH_FRAME_SUFFIXES, sample)
  assert [p.name for p in frames] == ['f9.png', 'f010.png', 'f11.png']
  (folder / 'g0009.png').write_bytes(b'')
  with pytest.raises(
      raw_clips.SampleError,
      match='two frames numbered 9: depth/s/(f9|g0009).png, depth/s/(f9|g0009).png',
  ):
    layout.numbered_frames(folder, layout.DEPTH_FRAME_SUFFIXES, sample)


def write_ir_and_skeleton(root: epath.Path, name: str, ir: list[np.ndarray], skeleton) -> None:
  """`ir/<name>/<k>.png` frames, and `skeleton/<name>.csv` (text) or `.npy` (an array)."""
  if ir is not None:
    write_frames(root / 'ir' / name, ir, numbered('{}.png', range(1, len(ir) + 1)))
  (root / 'skeleton').mkdir(exist_ok=True)
  if isinstance(skeleton, str):
    (root / 'skeleton' / f'{name}.csv').write_text(skeleton)
  elif skeleton is not None:
    np.save(os.fspath(root / 'skeleton' / f'{name}.npy'), skeleton)


def joint_pixels(count: int) -> np.ndarray:
  """`(count, 25, 2)` joints in depth pixels, moving right; joint 5 untracked in frame 1."""
  x = np.linspace(2.0, 28.0, 25)[None] + 0.5 * np.arange(count)[:, None]
  joints = np.stack([x, np.full_like(x, 12.0)], axis=-1)
  joints[1, 5] = np.nan
  return joints


def joints_csv(joints: np.ndarray) -> str:
  rows = ['frame,body,joint,x,y']
  for t, frame in enumerate(joints):
    rows += [f'{t},0,{j},{x},{y}' for j, (x, y) in enumerate(frame) if np.isfinite(x)]
  return '\n'.join(rows) + '\n'


def test_infrared_and_skeletons_are_built_and_bad_files_named(tmp_path):
  root = epath.Path(tmp_path) / 'with_ir'
  names = numbered('{}.png', (1, 2, 3))
  samples = {
      s: make_sample(seed, numbered('{}.png', (1, 2, 3)), 16, names)
      for seed, s in enumerate(('csv_ok', 'npy_ok', 'bad_csv', 'odd_ir', 'no_ir', 'outside'))
  }
  write_folder(root, samples, ['sample,label,split', *(f'{s},wave,train' for s in samples)])
  rng = np.random.default_rng(0)
  ir8 = [rng.integers(0, 256, (DEPTH_H, DEPTH_W), np.uint8) for _ in range(3)]
  ir16 = [rng.integers(0, 4000, (DEPTH_H, DEPTH_W), np.uint16) for _ in range(4)]
  write_ir_and_skeleton(root, 'csv_ok', ir8, joints_csv(joint_pixels(3)))
  write_ir_and_skeleton(root, 'npy_ok', ir16, joint_pixels(5).astype(np.float32))
  write_ir_and_skeleton(root, 'bad_csv', ir8, 'frame,body,joint,x,y\n0,0,0,1,2\n1,0,zero,1,2\n')
  write_ir_and_skeleton(root, 'odd_ir', [f[:, :30] for f in ir8], joints_csv(joint_pixels(3)))
  write_ir_and_skeleton(root, 'no_ir', None, joints_csv(joint_pixels(3)))
  write_ir_and_skeleton(root, 'outside', ir8, joint_pixels(3) + 40)
  data_dir = epath.Path(tmp_path) / 'data'
  build('with_ir', root, data_dir)
  examples, ds = read_examples(data_dir, 'with_ir')
  assert sorted(examples) == ['csv_ok', 'npy_ok']
  report = {s.sample_id: s.reason for s in raw_clips.read_skip_report(ds.data_path / 'skipped.tsv')}
  assert report == {
      'bad_csv': "skeleton/bad_csv.csv:3: invalid literal for int() with base 10: 'zero' "
      '(labels.csv line 4)',
      'odd_ir': 'infrared of another size than depth: ir/odd_ir/1.png is 30x24, the depth '
      'frames 32x24 (labels.csv line 5)',
      'no_ir': 'no infrared: no folder ir/no_ir/ (labels.csv line 6)',
      'outside': 'skeleton/outside.npy: joints outside the 32x24 depth frame; x and y must be '
      'its pixels (labels.csv line 7)',
  }
  for sample_id, ir, frames_raw in (('csv_ok', ir8, 3), ('npy_ok', ir16, 4)):
    example = examples[sample_id][1]
    assert example['num_frames'] == 3 and example['ir_frames_raw'] == frames_raw
    stored_ir = decoded(example, 'ir')
    scale = 1 if sample_id == 'csv_ok' else 255 / max(f.max() for f in ir16)
    source = [np.round(f.astype(np.float64) * scale).astype(np.uint8) for f in ir[:3]]
    expected = [np.asarray(Image.fromarray(f).resize((RES, RES), Image.BILINEAR)) for f in source]
    np.testing.assert_array_equal(stored_ir, np.stack(expected))
    joints = decoded(example, 'skeleton')
    assert joints.shape == (3, 2, 25, 2) and np.isnan(joints[:, 1]).all()
    np.testing.assert_allclose(
        joints[:, 0], (joint_pixels(3) + 0.5) / (DEPTH_W, DEPTH_H), rtol=1e-6
    )
  assert examples['npy_ok'][1]['skeleton_frames_raw'] == 5
