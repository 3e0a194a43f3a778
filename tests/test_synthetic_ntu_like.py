"""The `ntu_like` synthetic configuration, its calibration probe, and `default` left untouched."""

from __future__ import annotations

import dataclasses
import hashlib

from absl import flags
from ml_collections import config_flags
import numpy as np
import pytest

from conftest import REPO_ROOT
import configs.demo
import configs.ntu_like
import configs.ntu_like_coats
import configs.ntu_like_coats_no_turn
import configs.ntu_like_coats_no_turn_cs
import configs.ntu_like_coats_no_turn_cs24
import configs.ntu_like_coats_cs24
import configs.ntu_like_faces
from data_builders import builder_test_utils
from data_builders import raw_clips
from data_builders.synthetic_rgbd import Builder
from data_builders.synthetic_rgbd import probe
from data_builders.synthetic_rgbd import synthetic_rgbd_dataset_builder
from modistill_jax import stages
from modistill_jax.data import jet
from modistill_jax.data import records
from data_builders.synthetic_rgbd import renderer

CONFIGS = {config.name: config for config in Builder.BUILDER_CONFIGS}
NTU_LIKE = CONFIGS['ntu_like'].spec
NTU_LIKE_FACES = CONFIGS['ntu_like_faces'].spec
NTU_LIKE_COATS = CONFIGS['ntu_like_coats'].spec
NTU_LIKE_COATS_NO_TURN = CONFIGS['ntu_like_coats_no_turn'].spec
NTU_LIKE_COATS_NO_TURN_CS = CONFIGS['ntu_like_coats_no_turn_cs'].spec
NTU_LIKE_COATS_NO_TURN_CS24 = CONFIGS['ntu_like_coats_no_turn_cs24'].spec
NTU_LIKE_COATS_CS24 = CONFIGS['ntu_like_coats_cs24'].spec
# The `tiny` size with `ntu_like`'s content: 32x32, 8 frames, 24 clips per class, 4 subjects.
TINY_NTU_LIKE = dataclasses.replace(
    CONFIGS['tiny'].spec, scenario='ntu_like', rgb_distractors=False
)

# sha256 over the rgb, depth_mm and depth_jet bytes of one clip per class (clip
# 37 * label + 5). `default`'s was computed with main's generator before `ntu_like`
# existed; `ntu_like`'s when it was frozen, after the probe numbers in the README.
DEFAULT_CLIPS_SHA256 = '721c24316a8077346c9bf0305e1e101390fe60395970584db97a481904a73030'
NTU_LIKE_CLIPS_SHA256 = '882d1dddbe5c02652763429762fdbbfe9ef87071d2130413b001a5e538735e88'
# `ntu_like_faces`'s, computed before any stream was trained on it (README, calibration record).
NTU_LIKE_FACES_CLIPS_SHA256 = 'fb817f307605c6983e6eac1491947ebd9158b9da23f8efe5982dcb17f7acdd76'
# `ntu_like_coats`'s, computed before any stream was trained on it (README, calibration record).
NTU_LIKE_COATS_CLIPS_SHA256 = 'ecbf042d8d328a905018c26191585dea8187dc5db2660848726c79bc2acd0453'
# `ntu_like_coats_no_turn`'s, computed before any stream was trained on it (the same).
NTU_LIKE_COATS_NO_TURN_CLIPS_SHA256 = (
    '8ddd1ce3edea1c8a5d1ccf1de0e344e970b855c9234a628b471733e923d4becb'
)
# `ntu_like_coats_no_turn_cs24`'s, computed before any stream was trained on it (the same).
NTU_LIKE_COATS_NO_TURN_CS24_CLIPS_SHA256 = (
    '15a0ff391027858172ebaa51929e25051170fce38161468d694385bf9f4a8f9a'
)
# `ntu_like_coats_cs24`'s, computed before any stream was trained on it (the same).
NTU_LIKE_COATS_CS24_CLIPS_SHA256 = (
    'a751de8d9a3559ec754626003df2f239b743ce49201fffa3990c68c61e111130'
)


def clips_sha256(spec: renderer.GeneratorSpec) -> str:
  digest = hashlib.sha256()
  for label in range(len(spec.class_names)):
    clip = renderer.render_clip(spec, label, 37 * label + 5)
    for key in ('rgb', 'depth_mm', 'depth_jet'):
      digest.update(clip[key].tobytes())
  return digest.hexdigest()


def test_default_clips_are_the_pixels_they_were_before_ntu_like():
  assert CONFIGS['default'].spec == renderer.GeneratorSpec()
  assert clips_sha256(renderer.GeneratorSpec()) == DEFAULT_CLIPS_SHA256


def test_ntu_like_clips_are_the_frozen_ones():
  """The README's probe numbers were measured on these pixels: changing them needs a new probe."""
  assert clips_sha256(NTU_LIKE) == NTU_LIKE_CLIPS_SHA256


def test_ntu_like_is_default_sized_with_its_own_classes():
  """Same clips, frames, resolution, views and subjects as `default` (an epoch costs the same)."""
  default = CONFIGS['default'].spec
  assert dataclasses.replace(NTU_LIKE, scenario='default', rgb_distractors=True) == default
  assert NTU_LIKE.class_names == renderer.NTU_LIKE_CLASS_NAMES
  assert len(NTU_LIKE.class_names) == len(default.class_names)
  assert [(c.sample_id, c.split) for c in renderer.all_clips(NTU_LIKE)] == [
      (c.sample_id, c.split) for c in renderer.all_clips(default)
  ]


def test_ntu_like_clips_render_and_differ_from_default():
  for label, index in ((0, 0), (3, 17), (5, 100), (6, 100)):
    ntu_like = renderer.render_clip(NTU_LIKE, label, index)
    default = renderer.render_clip(renderer.GeneratorSpec(), label, index)
    assert ntu_like['rgb'].shape == (16, 64, 64, 3) and ntu_like['rgb'].dtype == np.uint8
    assert ntu_like['depth_mm'].shape == (16, 64, 64) and ntu_like['depth_mm'].any()
    for key in ('rgb', 'depth_mm'):
      assert not np.array_equal(ntu_like[key], default[key]), (label, index, key)


def test_jacket_turns_the_changing_pixels_yellow_or_back():
  """Among the RGB pixels that change between the first and the last frame, the
  hi-vis jacket makes the last frame yellower than the first after 'put on
  jacket', less yellow after 'take off jacket'; a bow, with no jacket, leaves
  their colour as it was (yellowness: mean of red and green minus blue)."""
  expected_sign = {'put on jacket': 1, 'take off jacket': -1, 'bow': 0}
  for name, sign in expected_sign.items():
    for index in (3, 7, 50, 120, 200):
      rgb = renderer.render_clip(NTU_LIKE, NTU_LIKE.class_names.index(name), index)['rgb']
      rgb = rgb.astype(np.float32)
      changed = np.abs(rgb[0] - rgb[-1]).sum(-1) > 60
      yellowness = (rgb[..., :2].mean(-1) - rgb[..., 2])[:, changed].mean(-1)
      gain = yellowness[-1] - yellowness[0]
      if sign:
        assert sign * gain > 10, (name, index, gain)
      else:
        assert abs(gain) < 10, (name, index, gain)


def test_unknown_scenario_is_rejected():
  with pytest.raises(ValueError, match="Unknown synthetic scenario 'ntu'.*ntu_like"):
    renderer.GeneratorSpec(scenario='ntu')


def test_tiny_ntu_like_builds_with_its_class_names(tmp_path, monkeypatch):
  monkeypatch.setenv(raw_clips.WORKERS_ENV, '1')
  config = synthetic_rgbd_dataset_builder.SyntheticRgbdConfig(
      name='tiny_ntu_like', description='tiny ntu_like, for this test', spec=TINY_NTU_LIKE
  )
  builder = Builder(config=config, data_dir=tmp_path)
  builder.download_and_prepare()
  assert builder.info.features['label'].names == list(renderer.NTU_LIKE_CLASS_NAMES)
  clips = {'train': 96, 'validation': 32, 'test': 64}
  assert {name: split.num_examples for name, split in builder.info.splits.items()} == {
      **clips,
      **{records.frames_split(s): 2 * 8 * n for s, n in clips.items()},
  }
  split, example = builder_test_utils.read_built(builder)['S02V01A05R001']
  assert (split, example['label']) == ('test', 5)
  depth = np.stack([records.decode_depth(frame) for frame in example['depth']])
  np.testing.assert_array_equal(
      jet.JET_OF_CODE[depth], renderer.render_clip(TINY_NTU_LIKE, 5, 3)['depth_jet']
  )


def test_probe_reads_the_class_and_is_chance_without_labels():
  """On the tiny draw (96 training clips, 64 test clips) the probe reads the class
  from both modalities; trained on shuffled labels it must fall to chance. A
  chance accuracy on 64 clips has a standard error of 0.041, so chance + 0.1 is
  over 2 of them, and the real-label floor (chance + 0.2) is 5 above chance."""
  real = probe.probe(TINY_NTU_LIKE)
  shuffled = probe.probe(TINY_NTU_LIKE, shuffle_labels=True)
  assert real['chance'] == shuffled['chance'] == 1 / 8
  for modality in probe.MODALITIES:
    assert real[modality] >= real['chance'] + 0.2, real
    assert shuffled[modality] <= shuffled['chance'] + 0.1, shuffled


def test_probe_uses_worker_processes_to_the_same_result():
  spec = dataclasses.replace(TINY_NTU_LIKE, clips_per_class=6)
  assert probe.probe(spec, workers=2) == probe.probe(spec)


@pytest.mark.parametrize('stage', stages.STAGE_NAMES + (stages.ALL,))
def test_ntu_like_config_is_the_demo_on_ntu_like_data(stage):
  demo, ntu_like = configs.demo.get_config(stage).to_dict(), configs.ntu_like.get_config(stage)
  assert ntu_like.builder_config == 'ntu_like'
  assert {**ntu_like.to_dict(), 'builder_config': demo['builder_config']} == demo


def test_ntu_like_config_loads_from_the_command_line():
  """`--config=configs/ntu_like.py:all` as the trainer's flag parses it."""
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, '', flag_values=flag_values, lock_config=True)
  flag_values(['prog', f'--config={REPO_ROOT}/configs/ntu_like.py:all'])
  assert flag_values.config.builder_config == 'ntu_like'
  assert flag_values.config.stage == stages.ALL


def test_ntu_like_faces_clips_are_the_calibrated_ones():
  """The calibration record's step-1 numbers on `ntu_like_faces` were measured on these pixels."""
  assert clips_sha256(NTU_LIKE_FACES) == NTU_LIKE_FACES_CLIPS_SHA256


def test_ntu_like_faces_is_ntu_like_with_faces_a_higher_camera_and_longer_walks():
  """Only what the calibration record says changed: size, classes and splits are `ntu_like`'s."""
  assert (
      dataclasses.replace(
          NTU_LIKE, camera_height=1.8, walk_distance_m=(1.9, 2.3), walk_far_z=1.6, faces=True
      )
      == NTU_LIKE_FACES
  )
  assert [(c.sample_id, c.split) for c in renderer.all_clips(NTU_LIKE_FACES)] == [
      (c.sample_id, c.split) for c in renderer.all_clips(NTU_LIKE)
  ]


@pytest.mark.parametrize(
    'spec, far_z, distances', ((NTU_LIKE, 1.0, (1.3, 1.7)), (NTU_LIKE_FACES, 1.6, (1.9, 2.3)))
)
def test_walks_start_and_end_where_the_spec_says(spec, far_z, distances):
  """'walk towards' starts at `walk_far_z` and comes `walk_distance_m` nearer; 'walk away' is
  its reverse (the hips' depth in the room, first and last frame)."""
  subject = renderer._subject(spec, 1)  # pylint: disable=protected-access
  for seed in range(5):
    for motion, sign in (('approach', 1), ('recede', -1)):
      rng = np.random.default_rng(seed)
      centres = renderer._actor(motion, subject, spec, rng)[0]  # pylint: disable=protected-access
      hips = centres[:, 6, 2]
      far, near = (hips[0], hips[-1]) if sign > 0 else (hips[-1], hips[0])
      assert far == pytest.approx(far_z), (motion, seed)
      assert distances[0] <= far - near <= distances[1], (motion, seed)


def _hair_pixels(spec: renderer.GeneratorSpec, label: int, index: int) -> np.ndarray:
  """Per frame, the RGB pixels that hair changes: the clip with faces against the same clip
  with a plain head (the same draws, so the same geometry and light)."""
  faces = renderer.render_clip(spec, label, index)['rgb'].astype(int)
  plain = renderer.render_clip(dataclasses.replace(spec, faces=False), label, index)['rgb']
  return (np.abs(faces - plain).sum(-1) > 30).sum((1, 2))


def test_turning_around_shows_the_back_of_the_head():
  """From the test view (in front), the actor starts facing the camera (hair on top only) and
  ends with its back to it (all hair), so hair covers more of the head at the end."""
  turn = NTU_LIKE_FACES.class_names.index('turn around')
  for index in (0, 3, 30, 60, 90):  # clips of view 1
    assert renderer.clip_info(NTU_LIKE_FACES, turn, index).view == renderer.TEST_VIEW
    hair = _hair_pixels(NTU_LIKE_FACES, turn, index)
    assert hair[-1] >= 2 * hair[0] + 3, (index, hair)


def test_a_bow_shows_more_hair_than_leaning_back():
  """Bowing turns the face to the floor and the top of the head to the camera (which looks
  down from 1.8 m); leaning back turns the face up to it. Most hair seen during the clip."""
  bow, lean_back = (NTU_LIKE_FACES.class_names.index(n) for n in ('bow', 'lean back'))
  for index in (0, 3, 30, 60, 90):
    most_bowing = _hair_pixels(NTU_LIKE_FACES, bow, index).max()
    most_leaning_back = _hair_pixels(NTU_LIKE_FACES, lean_back, index).max()
    assert most_bowing > most_leaning_back, (index, most_bowing, most_leaning_back)


def test_faces_leave_everything_but_the_head_as_it_was():
  """Hair only recolours head pixels: depth is the same, and few RGB pixels change."""
  spec = NTU_LIKE_FACES
  for label, index in ((0, 4), (5, 10), (7, 33)):
    faces = renderer.render_clip(spec, label, index)
    plain = renderer.render_clip(dataclasses.replace(spec, faces=False), label, index)
    np.testing.assert_array_equal(faces['depth_mm'], plain['depth_mm'])
    changed = (faces['rgb'] != plain['rgb']).any(-1).sum((1, 2))
    assert changed.max() <= 40, (label, index, changed)


@pytest.mark.parametrize('stage', stages.STAGE_NAMES + (stages.ALL,))
def test_ntu_like_faces_config_is_ntu_like_on_its_data(stage):
  ntu_like, faces = configs.ntu_like.get_config(stage).to_dict(), configs.ntu_like_faces.get_config(
      stage
  )
  assert faces.builder_config == 'ntu_like_faces'
  assert {**faces.to_dict(), 'builder_config': ntu_like['builder_config']} == ntu_like


def test_ntu_like_coats_clips_are_the_calibrated_ones():
  """The calibration record's step-1 numbers on `ntu_like_coats` are measured on these pixels."""
  assert clips_sha256(NTU_LIKE_COATS) == NTU_LIKE_COATS_CLIPS_SHA256


def test_ntu_like_coats_is_ntu_like_faces_with_two_raincoat_classes():
  """The same scene, sizes and splits; `ntu_like_faces`' 8 classes first, clip for clip the same
  pixels; then the two raincoat classes."""
  assert dataclasses.replace(NTU_LIKE_FACES, scenario='ntu_like_coats') == NTU_LIKE_COATS
  assert NTU_LIKE_COATS.class_names == NTU_LIKE_FACES.class_names + (
      'put on raincoat',
      'take off raincoat',
  )
  for label, index in ((0, 4), (5, 10), (6, 2), (7, 33)):
    coats = renderer.render_clip(NTU_LIKE_COATS, label, index)
    faces = renderer.render_clip(NTU_LIKE_FACES, label, index)
    for key in ('rgb', 'depth_mm'):
      np.testing.assert_array_equal(coats[key], faces[key], err_msg=f'{label} {index} {key}')


def _blue_pixels(rgb: np.ndarray) -> np.ndarray:
  r, g, b = (rgb[..., c].astype(int) for c in range(3))
  return ((b > r + 40) & (b > g + 15)).sum((1, 2))


@pytest.mark.parametrize('name, sign', (('put on raincoat', 1), ('take off raincoat', -1)))
def test_a_raincoat_appears_or_disappears_in_blue(name, sign):
  """Putting the raincoat on adds dark blue pixels over the shirt by the last frame, taking it off
  removes them (the room has blue of its own: the count changes by the coat's pixels)."""
  label = NTU_LIKE_COATS.class_names.index(name)
  for index in (0, 1, 2, 10, 31, 95):
    blue = _blue_pixels(renderer.render_clip(NTU_LIKE_COATS, label, index)['rgb'])
    assert sign * (blue[-1] - blue[0]) >= 40, (name, index, blue[0], blue[-1])


def test_a_jacket_clip_adds_no_blue():
  """The hi-vis jacket of the same gesture (it may cover a blue shirt: fewer blue pixels)."""
  label = NTU_LIKE_COATS.class_names.index('put on jacket')
  for index in (0, 1, 2, 10, 31, 95):
    blue = _blue_pixels(renderer.render_clip(NTU_LIKE_COATS, label, index)['rgb'])
    assert blue[-1] - blue[0] < 40, (index, blue[0], blue[-1])


def test_ntu_like_coats_no_turn_clips_are_the_calibrated_ones():
  assert clips_sha256(NTU_LIKE_COATS_NO_TURN) == NTU_LIKE_COATS_NO_TURN_CLIPS_SHA256


def test_ntu_like_coats_no_turn_is_ntu_like_coats_without_turning_around():
  """The same scene, sizes and splits; the classes before 'turn around' are `ntu_like_faces`'
  clips pixel for pixel; the raincoat classes follow the jacket ones."""
  assert dataclasses.replace(NTU_LIKE_COATS, scenario='ntu_like_coats_no_turn') == (
      NTU_LIKE_COATS_NO_TURN
  )
  assert NTU_LIKE_COATS_NO_TURN.class_names == tuple(
      name for name in NTU_LIKE_COATS.class_names if name != 'turn around'
  )
  assert NTU_LIKE_COATS_NO_TURN.class_names[:7] == NTU_LIKE_FACES.class_names[:7]
  for label, index in ((0, 4), (6, 2)):
    np.testing.assert_array_equal(
        renderer.render_clip(NTU_LIKE_COATS_NO_TURN, label, index)['rgb'],
        renderer.render_clip(NTU_LIKE_FACES, label, index)['rgb'],
    )
  label = NTU_LIKE_COATS_NO_TURN.class_names.index('put on raincoat')
  blue = _blue_pixels(renderer.render_clip(NTU_LIKE_COATS_NO_TURN, label, 0)['rgb'])
  assert blue[-1] - blue[0] >= 40, blue


def test_ntu_like_coats_no_turn_cs_is_step_4s_clips_split_by_subject():
  """The same clips (pixels, labels, views, subjects), in the `cs_*` splits: subjects 7-8 of
  every view are the test split, 5-6 the validation split, 1-4 the training split."""
  assert clips_sha256(NTU_LIKE_COATS_NO_TURN_CS) == NTU_LIKE_COATS_NO_TURN_CLIPS_SHA256
  assert dataclasses.replace(
      NTU_LIKE_COATS_NO_TURN_CS,
      protocol='cross_view',
      num_test_subjects=0,
      num_validation_subjects=1,
  ) == (NTU_LIKE_COATS_NO_TURN)
  by_view = renderer.all_clips(NTU_LIKE_COATS_NO_TURN)
  by_subject = renderer.all_clips(NTU_LIKE_COATS_NO_TURN_CS)
  assert [c.sample_id for c in by_subject] == [c.sample_id for c in by_view]
  roles = {'cs_train': 'train', 'cs_validation': 'validation', 'cs_test': 'test'}
  expected = {1: 'cs_train', 2: 'cs_train', 3: 'cs_train', 4: 'cs_train', 5: 'cs_validation'}
  expected |= {6: 'cs_validation', 7: 'cs_test', 8: 'cs_test'}
  for clip in by_subject:
    assert (clip.split, clip.role) == (expected[clip.subject], roles[expected[clip.subject]])
  sizes = {split: sum(c.split == split for c in by_subject) for split in roles}
  assert sizes == {'cs_train': 1296, 'cs_validation': 648, 'cs_test': 648}
  assert {c.view for c in by_subject if c.split == 'cs_test'} == {1, 2, 3}
  assert renderer.atomic_splits(NTU_LIKE_COATS_NO_TURN_CS) == tuple(roles)


def test_ntu_like_coats_no_turn_cs24_spreads_the_clips_over_24_subjects():
  """Step 5's spec with 24 subjects, 6 of them test and 6 validation, from every view."""
  assert clips_sha256(NTU_LIKE_COATS_NO_TURN_CS24) == NTU_LIKE_COATS_NO_TURN_CS24_CLIPS_SHA256
  assert dataclasses.replace(
      NTU_LIKE_COATS_NO_TURN_CS24, num_subjects=8, num_test_subjects=2, num_validation_subjects=2
  ) == (NTU_LIKE_COATS_NO_TURN_CS)
  clips = renderer.all_clips(NTU_LIKE_COATS_NO_TURN_CS24)
  subjects = {
      split: {c.subject for c in clips if c.split == split}
      for split in ('cs_train', 'cs_validation', 'cs_test')
  }
  assert subjects == {
      'cs_train': set(range(1, 13)),
      'cs_validation': set(range(13, 19)),
      'cs_test': set(range(19, 25)),
  }
  assert {c.replication for c in clips} == {1, 2, 3, 4}
  assert len({c.sample_id for c in clips}) == len(clips)
  assert [sum(c.split == s for c in clips) for s in subjects] == [1296, 648, 648]


def test_ntu_like_coats_cs24_is_the_24_subject_split_with_turning_around():
  assert clips_sha256(NTU_LIKE_COATS_CS24) == NTU_LIKE_COATS_CS24_CLIPS_SHA256
  assert dataclasses.replace(NTU_LIKE_COATS_CS24, scenario='ntu_like_coats_no_turn') == (
      NTU_LIKE_COATS_NO_TURN_CS24
  )
  assert NTU_LIKE_COATS_CS24.class_names == NTU_LIKE_COATS.class_names
  clips = renderer.all_clips(NTU_LIKE_COATS_CS24)
  sizes = [sum(c.split == s for c in clips) for s in ('cs_train', 'cs_validation', 'cs_test')]
  assert sizes == [1440, 720, 720]


@pytest.mark.parametrize(
    'module, builder_config',
    (
        (configs.ntu_like_coats_no_turn_cs, 'ntu_like_coats_no_turn_cs'),
        (configs.ntu_like_coats_no_turn_cs24, 'ntu_like_coats_no_turn_cs24'),
        (configs.ntu_like_coats_cs24, 'ntu_like_coats_cs24'),
    ),
)
def test_ntu_like_coats_cs_configs_read_their_builds_by_subject(module, builder_config):
  """Each is its cross-view config's on its build, read with `cross_subject`."""
  by_view_module = (
      configs.ntu_like_coats if 'no_turn' not in builder_config else configs.ntu_like_coats_no_turn
  )
  for stage in stages.STAGE_NAMES + (stages.ALL,):
    config = module.get_config(stage)
    by_view = by_view_module.get_config(stage).to_dict()
    assert (config.builder_config, config.protocol) == (builder_config, 'cross_subject')
    assert {
        **config.to_dict(),
        'builder_config': by_view['builder_config'],
        'protocol': by_view['protocol'],
    } == by_view


@pytest.mark.parametrize(
    'fields, message',
    (
        (dict(protocol='cross_camera'), "Unknown synthetic protocol 'cross_camera'"),
        (dict(protocol='cross_subject'), 'num_test_subjects must be positive under cross_subject'),
        (dict(num_test_subjects=2), 'and 0 under cross_view, got 2 under cross_view'),
        (
            dict(protocol='cross_subject', num_test_subjects=4, num_validation_subjects=4),
            '4 validation and 4 test subjects of 8',
        ),
    ),
)
def test_a_split_without_training_subjects_or_protocol_is_refused(fields, message):
  with pytest.raises(ValueError, match=message):
    renderer.GeneratorSpec(**fields)


@pytest.mark.parametrize('module', (configs.ntu_like_coats, configs.ntu_like_coats_no_turn))
@pytest.mark.parametrize('stage', stages.STAGE_NAMES + (stages.ALL,))
def test_ntu_like_coats_configs_are_ntu_like_on_their_data(module, stage):
  ntu_like = configs.ntu_like.get_config(stage).to_dict()
  config = module.get_config(stage)
  assert config.builder_config == module.__name__.split('.')[-1]
  assert {**config.to_dict(), 'builder_config': ntu_like['builder_config']} == ntu_like
