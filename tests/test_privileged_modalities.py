"""Any deployed modality, any set of privileged ones (issue 27): stages, config, loss, training.

The paper's method is the case deployed='rgb', privileged='depth'; its value
tests (test_fidelity, test_stage_loss, ...) pin that case. Here: the stage
table for infrared, skeleton, depth + infrared and Table 4's inversion; the
config's checks; the generalised eq. (5), equal to the paper's for one
teacher; and `configs/ntu_cs.py:all,tiny` trained on the dummy NTU tree built
with infrared and skeletons: the skeleton privileged in-process, depth and
infrared from the command line.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys
from unittest import mock

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from conftest import REPO_ROOT, cli_env, once_per_run, parse_config_flag
from modistill_jax import config_lib
from modistill_jax import losses
from modistill_jax import runs
from modistill_jax import stages
from modistill_jax import steps
from modistill_jax import trainer
from modistill_jax.data import feeding
from modistill_jax.data import pipeline
from modistill_jax.models import multistream
from modistill_jax.models import resnet

import configs.ntu_cs

pytestmark = pytest.mark.usefixtures('fast_compile')

HALL = stages.HALL
# The NTU build that stores every modality (`data_builders/ntu_rgbd`).
IR_SKELETON_BUILD = 'res112_ir_skeleton'
EVERY_MODALITY = 'rgb,depth,ir,skeleton'


# MARK: the stage table


@pytest.mark.parametrize('p', ['ir', 'skeleton'])
def test_one_privileged_modality_takes_depths_place(p):
  """Infrared or skeleton privileged: every stage is the paper's with depth renamed."""
  s = {name: stages.get_stage(name, privileged=(p,)) for name in stages.ALL_STAGES + ('hoffman',)}
  step1 = s['step1'].models[0]
  assert (step1.receiver, step1.givers, step1.connections) == ('rgb', ((p, p),), False)
  assert s['step1'].fused == (p, 'rgb')
  assert s['step2'].models[0].givers == ((p, p),) and s['step2'].models[0].receiver == 'rgb'
  assert s['step2'].fused == (p, 'rgb') and s['step2'].inputs == tuple(sorted(('rgb', p)))
  assert s['step2'].init == (stages.step1_sources(p), stages.step1_sources('rgb'))
  step3 = s['step3']
  assert (step3.models[0].receiver, step3.models[0].receiver_input) == (HALL, 'rgb')
  assert step3.models[0].givers == ((p, p),) and step3.models[0].giver_frozen
  assert (step3.teachers, step3.frozen, step3.student) == ((p,), (p,), HALL)
  assert step3.init == (
      stages.InitSource(HALL, ('step2',), p),
      stages.InitSource(p, ('step2',), p),
  )
  assert s['step4'].inputs == ('rgb',) and s['step4'].fused == (HALL, 'rgb')
  assert s['hoffman'].teachers == (p,) and s['hoffman'].streams == (p, 'rgb', HALL)
  assert s['hoffman'].init[-1] == stages.InitSource(HALL, ('step1', f'step1_{p}'), p)
  single = stages.get_stage(f'step1_{p}')
  assert (single.streams, single.inputs, single.fused) == ((p,), (p,), (p,))


def test_depth_and_infrared_both_give_and_both_teach():
  """Two privileged streams: both connect to the receiver, both are step 3's frozen teachers."""
  s = {
      name: stages.get_stage(name, privileged=('ir', 'depth'))  # canonical order: depth, ir
      for name in stages.ALL_STAGES + ('hoffman',)
  }
  assert s['step1'].streams == ('depth', 'ir', 'rgb') and s['step1'].selects_each_stream
  step2 = s['step2'].models[0]
  assert step2.givers == (('depth', 'depth'), ('ir', 'ir')) and step2.receiver == 'rgb'
  assert step2.connections and s['step2'].fused == ('depth', 'ir', 'rgb')
  assert s['step2'].inputs == ('depth', 'ir', 'rgb')
  step3 = s['step3']
  assert step3.teachers == step3.frozen == ('depth', 'ir')
  assert step3.trainable == (HALL,) and step3.inputs == ('depth', 'ir', 'rgb')
  assert step3.init[0] == stages.InitSource(HALL, ('step2',), 'depth')
  assert s['step4'].streams == (HALL, 'rgb')
  assert len(s['hoffman'].models) == 4 and s['hoffman'].teachers == ('depth', 'ir')


def test_table4_inversion_is_rgb_privileged_depth_deployed():
  """`privileged=('rgb',)` deploys depth by default, the same stages as naming it."""
  for name in stages.ALL_STAGES + ('hoffman',):
    assert stages.get_stage(name, privileged='rgb') == stages.get_stage(
        name, privileged=('rgb',), deployed='depth'
    )
  step3 = stages.get_stage('step3', privileged=('rgb',))
  assert step3.models[0].receiver_input == 'depth' and step3.teachers == ('rgb',)
  assert stages.get_stage('step4', privileged=('rgb',)).inputs == ('depth',)
  # Another deployed modality: infrared seen at test time, depth privileged.
  step4 = stages.get_stage('step4', privileged=('depth',), deployed='ir')
  assert step4.inputs == ('ir',) and step4.fused == (HALL, 'ir')


# MARK: the config


def _config(**values) -> ml_collections.ConfigDict:
  config = configs.ntu_cs.get_config('all')
  return config_lib.override(config, values)


@pytest.mark.parametrize(
    'values, message',
    [
        ({'privileged': 'infrared'}, "config.privileged: unknown modality 'infrared'"),
        ({'privileged': 'depth;ir'}, "config.privileged: unknown modality 'depth;ir'"),
        ({'privileged': 'rgb', 'deployed': 'rgb'}, "contains the deployed modality 'rgb'"),
        ({'privileged': ''}, 'config.privileged must name at least one modality'),
        ({'privileged': 'depth,depth'}, 'names a modality twice'),
        ({'deployed': 'video'}, "config.deployed: unknown modality 'video'"),
        ({'modalities': 'rgb,sound'}, 'config.modalities entry must be one of'),
        ({'privileged': 'ir'}, "lacks ('ir',)"),
        ({'stage': 'step1_skeleton'}, "lacks ('skeleton',)"),
        ({'input.ir_encoding': 'hot'}, 'config.input.ir_encoding must be one of'),
    ],
)
def test_bad_modalities_fail_naming_key_and_value(values, message):
  with pytest.raises(ValueError, match=None) as error:
    config_lib.check(_config(**values))
  assert message in str(error.value)


def test_modalities_the_dataset_does_not_store_are_refused():
  """`feeding.check_stored_modalities`: an RGB-D build asked for infrared, named."""
  config = _config(modalities=EVERY_MODALITY)
  rgbd = {'rgb_frames_raw': 5, 'depth_frames_raw': 5}
  source = pipeline.Source(records=[rgbd], class_names=('a',), name='ntu_rgbd/cs/train')
  with pytest.raises(ValueError, match=r"stores no ir, skeleton frames, only \('rgb', 'depth'\)"):
    feeding.check_stored_modalities(config, {'train': source, 'validation': None})
  feeding.check_stored_modalities(_config(), {'train': source})  # RGB-D asks for RGB-D only


def test_a_run_saved_before_these_fields_reads_as_before():
  """A config.json without `deployed` and `modalities` resumes with their defaults."""
  saved = _config().to_dict()
  del saved['deployed'], saved['modalities']
  assert config_lib.differences(config_lib.with_defaults(saved), _config()) == {}


def test_command_line_forms_of_privileged():
  """One modality or several, comma-separated, as `train`'s `--config` flag parses them.

  In-process (`conftest.parse_config_flag`): the parsing is the test, not a
  process start (the documented commands start `train` itself).
  """
  forms = [
      '--config.privileged=rgb',
      '--config.privileged=ir',
      '--config.privileged=depth,ir',
      '--config.privileged=depth,skeleton --config.deployed=ir',
  ]
  parsed = []
  for form in forms:
    config = parse_config_flag(f'{REPO_ROOT}/configs/ntu_cs.py:all', *form.split(' '))
    parsed.append((config.privileged, config.deployed))
  assert parsed == [('rgb', ''), ('ir', ''), ('depth,ir', ''), ('depth,skeleton', 'ir')]


# MARK: the generalised loss


def _outputs(teachers, seed=0, classes=4, clips=5):
  rng = np.random.default_rng(seed)
  logits = {s: jnp.asarray(rng.normal(size=(clips, classes)), jnp.float32) for s in teachers}
  logits[HALL] = jnp.asarray(rng.normal(size=(clips, classes)), jnp.float32)
  endpoints = {
      s: {'block4': jnp.asarray(rng.normal(size=(clips * 2, 2, 2, 3)), jnp.float32)}
      for s in (*teachers, HALL)
  }
  return {'logits': logits, 'endpoints': endpoints}


LABELS = jnp.asarray([0, 1, 2, 3, 1])


def test_one_teacher_is_exactly_eq5():
  """Step 3 with one teacher: eq. (5) of its logits and feature map, bit for bit."""
  config = config_lib.base_config().loss
  outputs = _outputs(('ir',))
  stage = stages.get_stage('step3', privileged=('ir',))
  loss, terms = steps.stage_loss(stage, config, outputs, LABELS)
  gd = losses.generalized_distillation_loss(
      outputs['logits'][HALL], outputs['logits']['ir'], LABELS, temperature=10.0, lam=0.5
  )
  hall = losses.hallucination_loss(
      outputs['endpoints']['ir']['block4'],
      outputs['endpoints'][HALL]['block4'],
      reduction='per_clip',
      weight=0.01,
      num_clips=5,
  )
  expected = 0.5 * gd['loss'] + 0.5 * hall
  assert np.asarray(loss).tobytes() == np.asarray(expected).tobytes()
  assert np.asarray(terms['hall']).tobytes() == np.asarray(hall).tobytes()


def test_two_teachers_distil_their_fused_logits_and_each_feature_map():
  """L = (1 - a) L_GD(hall, mean of the teachers' logits) + a mean_p L_hall(p, hall)."""
  config = config_lib.base_config().loss
  outputs = _outputs(('depth', 'ir'), seed=1)
  stage = stages.get_stage('step3', privileged=('depth', 'ir'))
  loss, terms = steps.stage_loss(stage, config, outputs, LABELS)
  fused = (outputs['logits']['depth'] + outputs['logits']['ir']) / 2
  gd = losses.generalized_distillation_loss(outputs['logits'][HALL], fused, LABELS)['loss']
  halls = [
      losses.hallucination_loss(
          outputs['endpoints'][p]['block4'],
          outputs['endpoints'][HALL]['block4'],
          reduction='per_clip',
          num_clips=5,
      )
      for p in ('depth', 'ir')
  ]
  np.testing.assert_allclose(terms['hall'], (halls[0] + halls[1]) / 2, rtol=1e-6)
  np.testing.assert_allclose(loss, 0.5 * gd + 0.5 * (halls[0] + halls[1]) / 2, rtol=1e-6)
  assert halls[0] != halls[1]  # the two teachers' maps differ, so both count


# MARK: several givers


TINY_FACTORY = resnet.stream_factory(
    ml_collections.ConfigDict(
        {
            **config_lib.base_config().model.to_dict(),
            'units_per_block': (2, 2, 2, 2),
            'width': 4,
        }
    ),
    num_classes=3,
)


def test_givers_and_their_inputs_must_pair_up():
  spec = stages.ModelSpec('rgb', 'rgb', giver=('depth', 'ir'), giver_input=('depth',))
  with pytest.raises(
      ValueError, match=r"givers \('depth', 'ir'\) and their inputs \('depth',\) must pair up"
  ):
    _ = spec.givers


def test_gates_of_several_givers_add_up_and_one_givers_pass_unchanged():
  """`combined_gates`: one giver's gates are the receiver's, as they are (the paper's); two add."""
  rng = np.random.default_rng(0)
  gates = [{b: jnp.asarray(rng.normal(size=(2, 3))) for b in range(4)} for _ in range(2)]
  single = multistream.combined_gates(gates[:1])
  assert all(single[b] is gates[0][b] for b in range(4))
  for block, gate in multistream.combined_gates(gates).items():
    np.testing.assert_array_equal(gate, gates[0][block] + gates[1][block])
  assert multistream.combined_gates([]) is None


def test_a_second_giver_changes_the_receiver_only():
  """Depth's stream is the same with or without infrared beside it; the receiver is not."""
  clips = {
      m: jnp.asarray(np.random.default_rng(i).uniform(-1, 1, (1, 3, 16, 16, 3)), jnp.float32)
      for i, m in enumerate(('rgb', 'depth', 'ir'))
  }
  spec = stages.ModelSpec('rgb', 'rgb', 'depth', 'depth', True)
  one = multistream.MultiStream(spec, TINY_FACTORY)
  two = multistream.MultiStream(
      stages.ModelSpec('rgb', 'rgb', ('depth', 'ir'), ('depth', 'ir'), True), TINY_FACTORY
  )
  variables = two.init(jax.random.key(0), clips, train=False)
  both = two.apply(variables, clips, train=False)['logits']
  only_depth = one.apply(
      {c: {s: variables[c][s] for s in ('rgb', 'depth')} for c in variables}, clips, train=False
  )['logits']
  np.testing.assert_array_equal(both['depth'], only_depth['depth'])
  assert not np.array_equal(both['rgb'], only_depth['rgb'])


# MARK: training on the dummy NTU tree with infrared and skeletons


# The dummy tree's clips with infrared and a skeleton are a validation and a test subject's
# (P001, P003), so its infrared build has no training clip: this copy adds a batch of them, the
# validation clip's files under training subjects' names.
DUMMY_SAMPLE = 'S001C001P001R001A001'
TRAINING_COPIES = tuple(f'S001C001P{p}R001A001' for p in ('002', '004', '005', '008'))


def _ntu_ir_skeleton_data(tmp_path_factory) -> str:
  """A data_dir with the dummy NTU tree (and `TRAINING_COPIES`) built as `res112_ir_skeleton`,
  once per pytest run."""
  # pylint: disable=g-import-not-at-top (the builders sit above the library)
  from data_builders import builder_test_utils
  from data_builders import raw_clips
  from data_builders.ntu_rgbd import ntu_rgbd_dataset_builder

  def make(data_dir: str) -> None:
    tree = os.path.join(data_dir, 'raw')
    shutil.copytree(os.path.join(REPO_ROOT, 'data_builders', 'ntu_rgbd', 'dummy_data'), tree)
    for path in glob.glob(os.path.join(tree, '*', '*', DUMMY_SAMPLE + '*')):
      copy = shutil.copytree if os.path.isdir(path) else shutil.copyfile
      for sample in TRAINING_COPIES:
        copy(path, path.replace(DUMMY_SAMPLE, sample))
    with mock.patch.dict(os.environ, {raw_clips.WORKERS_ENV: '1'}):
      builder_test_utils.build(ntu_rgbd_dataset_builder.Builder, data_dir, tree, IR_SKELETON_BUILD)

  return once_per_run(tmp_path_factory, 'ntu_ir_skeleton', make)


@pytest.fixture(scope='module')
def ntu_ir_skeleton_data(tmp_path_factory) -> str:
  return _ntu_ir_skeleton_data(tmp_path_factory)


# `configs/ntu_cs.py:all,tiny` reading the build that stores every modality.
NTU_OVERRIDES = {
    'builder_config': IR_SKELETON_BUILD,
    'modalities': EVERY_MODALITY,
    'build_if_missing': False,
}


def _check_run(workdir: str, privileged: tuple[str, ...]) -> None:
  """Every stage finished, trained on what the stage table says, and evaluated."""
  for name in stages.ALL_STAGES:
    stage = stages.get_stage(name, privileged=privileged)
    results = runs.read_json(runs.stage_dir(workdir, name).results_file)
    assert results['privileged'] == '+'.join(privileged), name
    assert results['deployed'] == 'rgb', name
    assert tuple(results['train_inputs']) == stage.inputs, name
    accuracy = results['test']['accuracy']
    assert set(accuracy) == set(stage.streams) | {'fused'}, name
    assert all(0.0 <= a <= 1.0 for a in accuracy.values()), name
  assert runs.read_json(runs.stage_dir(workdir, 'step4').results_file)['train_inputs'] == ['rgb']


@pytest.mark.slow
def test_ntu_config_trains_all_steps_with_skeleton(ntu_ir_skeleton_data, tmp_path):
  """The skeleton privileged: its joint heat-maps through steps 1 to 4, in-process.

  Infrared alone (`privileged='ir'`) is not trained on its own: nothing of it would be checked
  that is not checked already. Its stages are the paper's with depth renamed
  (`test_one_privileged_modality_takes_depths_place`), and the code a run of it would reach
  is reached by the trainings kept (line and branch coverage of `modistill_jax/`
  and `data_builders/`: no line or branch that only it reached). Its checks: infrared decoded,
  preprocessed and trained as a privileged stream, with `results.json`'s inputs, streams,
  accuracies and `privileged`, in `test_ntu_command_line_trains_all_steps_with_depth_and_infrared`;
  one teacher through steps 1-4 (one giver in step 2, one frozen teacher and the hallucination
  stream initialised from it in step 3) here and in the shared tiny demo run (`tiny_run`, depth).
  """
  config = config_lib.override(
      configs.ntu_cs.get_config('all,tiny'),
      {**NTU_OVERRIDES, 'data_dir': ntu_ir_skeleton_data, 'privileged': 'skeleton'},
  )
  workdir = str(tmp_path / 'run')
  trainer.train_and_evaluate(config, workdir, config_file='configs/ntu_cs.py')
  _check_run(workdir, ('skeleton',))


@pytest.mark.slow
def test_ntu_command_line_trains_all_steps_with_depth_and_infrared(
    ntu_ir_skeleton_data, tmp_path, compilation_cache_dir
):
  """Two privileged modalities from the command line, comma-separated.

  On 4 devices, as the in-process training: step 4 (hall and RGB) is then the same program in
  both, compiled once (on one device the command is no cheaper, and compiles its own step 4).
  """
  workdir = str(tmp_path / 'run')
  proc = subprocess.run(
      [
          sys.executable,
          '-m',
          'modistill_jax.train',
          '--config=configs/ntu_cs.py:all,tiny',
          f'--workdir={workdir}',
          f'--config.data_dir={ntu_ir_skeleton_data}',
          f'--config.builder_config={IR_SKELETON_BUILD}',
          f'--config.modalities={EVERY_MODALITY}',
          '--config.privileged=depth,ir',
      ],
      cwd=REPO_ROOT,
      env=cli_env(compilation_cache_dir),
      capture_output=True,
      text=True,
      timeout=600,
      check=False,
  )
  assert proc.returncode == 0, proc.stderr[-3000:]
  _check_run(workdir, ('depth', 'ir'))
  # The closing table names the run's modalities, without the paper's depth-only figures.
  assert '| 1 | step 1, infrared stream | Infrared | x-entr |' in proc.stdout
  assert '| 8 | step 2 | RGB & Depth & Infrared | x-entr |' in proc.stdout
  assert ' paper |' not in proc.stdout
  config = json.loads(runs.stage_dir(workdir, 'step3').config_file.read_text())
  assert config['privileged'] == 'depth,ir'
