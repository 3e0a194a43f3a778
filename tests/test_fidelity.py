"""The switches between the paper's method and the authors' published code (issue 14).

Each switch must change the network, the loss or the evaluation exactly as its
config comment says, and leave the defaults' behaviour (and parameter trees)
as they were: eq. (1)'s reduction, the temporal conv's form and init, stages
without connections, step 2's batch-statistics evaluation, gray depth and
depth without a mean, and `config_lib.check` refusing a bad value of each.
Tiny streams (width 4, 2 units per block, 16x16 frames) keep it to seconds.
"""

import functools
import re

import flax.linen as nn
import flax.traverse_util
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import apply_tapped, fill_variables
from modistill_jax import config_lib
from modistill_jax import param_merge
from modistill_jax import pretrained
from modistill_jax import stages
from modistill_jax import steps
from modistill_jax.data import jet
from modistill_jax.data import preprocess
from modistill_jax.models import MultiStream
from modistill_jax.models import resnet
from modistill_jax.models import stage_network
from modistill_jax.models import StageNetwork

pytestmark = pytest.mark.usefixtures('fast_compile')

NUM_CLASSES = 3
FRAMES = config_lib.TINY['input.num_frames']
SIZE = config_lib.TINY['input.image_size']


def tiny_config(**overrides):
  """The base config at `:step1,tiny`, then `overrides` ({dotted key: value})."""
  config = config_lib.finalize(config_lib.base_config(), 'step1,tiny')
  config_lib.override(config, overrides)
  config_lib.check(config)
  return config


def uint8_clips(seed: int, num_clips: int) -> np.ndarray:
  rng = np.random.default_rng(seed)
  return rng.integers(0, 256, (num_clips, FRAMES, SIZE, SIZE, 3), dtype=np.uint8)


def stage_model(stage_name: str, config) -> StageNetwork:
  return stage_network(stages.for_config(stage_name, config), config.model, NUM_CLASSES)


def filled_variables(model: StageNetwork, inputs, seed: int = 0, temporal_noise=0.0):
  shapes = jax.eval_shape(model.init_variables, jax.random.key(0), inputs)
  return fill_variables(shapes, seed, temporal_noise)


# eq. (1): the batch-invariant reduction.


def step3_outputs(num_copies: int) -> tuple[dict, np.ndarray]:
  """Step-3-like outputs of 5 clips, repeated `num_copies` times along the batch."""
  rng = np.random.default_rng(0)
  clips = 5
  logits = {s: rng.normal(size=(clips, NUM_CLASSES)).astype(np.float32) for s in ('depth', 'hall')}
  block4 = {
      s: rng.normal(size=(clips, FRAMES, 2, 2, 8)).astype(np.float32) for s in ('depth', 'hall')
  }
  labels = rng.integers(0, NUM_CLASSES, clips)
  tile = lambda a: np.concatenate([a] * num_copies)
  outputs = {
      'logits': {s: tile(z) for s, z in logits.items()},
      'endpoints': {s: {'block4': tile(f).reshape((-1,) + f.shape[2:])} for s, f in block4.items()},
  }
  return outputs, tile(labels)


def eq5(reduction: str, num_copies: int) -> tuple[float, float]:
  """The step-3 loss (eq. 5) and its L_hall term."""
  config = tiny_config(**{'loss.hall_reduction': reduction})
  outputs, labels = step3_outputs(num_copies)
  loss, terms = steps.stage_loss(
      stages.for_config('step3', config), config.loss, outputs, jnp.asarray(labels)
  )
  return float(loss), float(terms['hall'])


def test_per_clip_reduction_is_the_reference_sum_at_5_clips():
  """At the reference's 5 clips the default 'per_clip' is bit-identical to 'sum'."""
  assert config_lib.base_config().loss.hall_reduction == 'per_clip'
  assert eq5('per_clip', 1) == eq5('sum', 1)


def test_per_clip_balance_does_not_move_with_the_batch():
  """10 clips made of the same 5 twice: 'per_clip' gives the 5-clip loss, 'sum' doubles L_hall."""
  loss5, hall5 = eq5('per_clip', 1)
  loss10, hall10 = eq5('per_clip', 2)
  np.testing.assert_allclose([loss10, hall10], [loss5, hall5], rtol=1e-6)
  sum_loss10, sum_hall10 = eq5('sum', 2)
  np.testing.assert_allclose(sum_hall10, 2 * hall5, rtol=1e-6)
  assert sum_loss10 > loss5 + 0.4 * hall5  # alpha = 0.5: half the extra L_hall


# Temporal convolutions.


def stream_tree(**kwargs) -> dict[str, tuple[int, ...]]:
  stream = resnet.Stream(num_classes=NUM_CLASSES, units_per_block=(2, 2, 2, 2), width=4, **kwargs)
  shapes = jax.eval_shape(
      lambda: stream.init(
          jax.random.key(0), jnp.zeros((FRAMES, SIZE, SIZE, 3)), num_frames=FRAMES, train=False
      )
  )
  return {k: v.shape for k, v in flax.traverse_util.flatten_dict(shapes, sep='/').items()}


def test_conv_bn_relu_adds_only_a_temporal_batchnorm():
  linear, explicit = stream_tree(), stream_tree(temporal_form='linear', temporal_init='identity')
  assert linear == explicit
  assert not any('temporal_bn' in k for k in linear)
  bn = stream_tree(temporal_form='conv_bn_relu')
  added = {k: v for k, v in bn.items() if k not in linear}
  assert all(bn[k] == v for k, v in linear.items())
  expected = {
      f'{c}/block{b}_unit1/temporal_bn/{n}': (4 * 2 ** (b - 1),)
      for b in range(1, 5)
      for c, names in (('params', ('scale', 'bias')), ('batch_stats', ('mean', 'var')))
      for n in names
  }
  assert added == expected


def test_imagenet_weights_fit_the_conv_bn_relu_form():
  """A converted ImageNet tree (the default form's) loads; the temporal BatchNorm starts fresh."""

  def variables(form):
    stream = resnet.Stream(
        num_classes=NUM_CLASSES, units_per_block=(2, 2, 2, 2), width=4, temporal_form=form
    )
    return jax.eval_shape(
        lambda: stream.init(
            jax.random.key(0), jnp.zeros((FRAMES, SIZE, SIZE, 3)), num_frames=FRAMES, train=False
        )
    )

  target, source = variables('conv_bn_relu'), variables('linear')
  merged = param_merge.merge(target, source, fresh=pretrained.FRESH_PATTERNS)
  assert 'temporal_bn' in merged['batch_stats']['block3_unit1']
  with pytest.raises(param_merge.MergeError, match='temporal_bn'):
    param_merge.merge(target, source, fresh=(r'(.*/)?logits/.*', r'(.*/)?temporal/.*'))


def unit_conv3_input(temporal_form: str) -> np.ndarray:
  """conv3's input in a temporal unit whose temporal kernel is minus the identity."""
  unit = resnet.Bottleneck(
      width=4,
      stride=1,
      layout='slim',
      temporal=True,
      num_frames=FRAMES,
      conv=functools.partial(nn.Conv, use_bias=False),
      norm=functools.partial(nn.BatchNorm, use_running_average=True),
      temporal_form=temporal_form,
  )
  x = jnp.asarray(np.random.default_rng(0).normal(size=(2 * FRAMES, 4, 4, 16)), jnp.float32)
  variables = unit.init(jax.random.key(0), x)
  params = flax.traverse_util.flatten_dict(variables['params'], sep='/')
  params['temporal/kernel'] = -params['temporal/kernel']
  variables = {**variables, 'params': flax.traverse_util.unflatten_dict(params, sep='/')}
  _, record = apply_tapped(unit, variables, x, taps=('conv3',))
  return np.asarray(record['conv3'][0][0])


def test_conv_bn_relu_zeroes_a_negative_pre_activation():
  """With kernel -I the temporal conv's output is <= 0: linear passes it on, the ReLU zeroes it."""
  linear = unit_conv3_input('linear')
  assert linear.min() < -0.1
  np.testing.assert_array_equal(unit_conv3_input('conv_bn_relu'), 0.0)


def test_reference_code_init_copies_channel_1_of_the_previous_frame():
  kernel = np.asarray(resnet.temporal_reference_code_init(None, (3, 1, 1, 4, 4)))
  expected = np.zeros((3, 1, 1, 4, 4))
  expected[0, 0, 0, 1, :] = 1
  np.testing.assert_array_equal(kernel, expected)
  conv = nn.Conv(
      4, (3, 1, 1), padding='SAME', use_bias=False, kernel_init=resnet.temporal_reference_code_init
  )
  frames = jnp.asarray(np.random.default_rng(0).normal(size=(1, 3, 1, 1, 4)), jnp.float32)
  out = conv.apply(conv.init(jax.random.key(0), frames), frames)
  np.testing.assert_array_equal(out[0, 0], 0.0)
  np.testing.assert_allclose(out[0, 1:, 0, 0], np.repeat(frames[0, :2, 0, 0, 1:2], 4, axis=-1))


# Connections of step 4.


def test_unconnected_step4_is_the_mean_of_two_streams_alone():
  config = tiny_config(**{'model.unconnected_stages': ('step4',)})
  assert not stages.for_config('step4', config).models[0].connections
  assert stages.for_config('step2', config).models[0].connections
  assert stages.for_config('step3', config).models[0].connections
  rgb = {'rgb': jnp.asarray(uint8_clips(0, 2), jnp.float32) - 128.0}
  model = stage_model('step4', config)
  variables = filled_variables(model, rgb)
  fused = model.apply(variables, rgb, train=False)['fused']

  alone = []
  for stream in ('hall', 'rgb'):
    single = MultiStream(
        stages.ModelSpec(stream, 'rgb'), resnet.stream_factory(config.model, NUM_CLASSES)
    )
    alone.append(
        single.apply({c: {stream: variables[c][stream]} for c in variables}, rgb, train=False)[
            'logits'
        ][stream]
    )
  np.testing.assert_allclose(fused, (alone[0] + alone[1]) / 2, rtol=1e-5, atol=1e-6)
  connected = stage_model('step4', tiny_config()).apply(variables, rgb, train=False)['fused']
  assert np.abs(np.asarray(connected) - np.asarray(fused)).max() > 1e-3


# Step 2 evaluated with the depth stream's batch statistics.


def step2_eval(batch_stats: bool, batch: dict, variables) -> dict:
  config = tiny_config(**{'eval.step2_privileged_batch_stats': batch_stats})
  model = stage_model('step2', config)
  inputs = steps.model_inputs(batch, config.input, model.stage.inputs, jnp.float32)
  streams = steps.eval_batch_stats_streams(model.stage, config.privileged, config.eval)
  return apply_tapped(
      model,
      variables,
      inputs,
      train=False,
      batch_stats_streams=streams,
      clip_mask=batch['mask'],
      mutable=['batch_stats'],
      taps=('depth/conv1', 'depth/bn1'),
  )


def step2_batch(seed: int) -> dict:
  return {
      'rgb': uint8_clips(seed, 3),
      'depth': uint8_clips(seed + 1, 3),
      'mask': np.array([True, True, False]),
      'label': np.zeros(3, np.int32),
      'index': np.arange(3, dtype=np.int32),
  }


def test_step2_batch_statistics_evaluation_by_hand():
  """The depth stream's first BatchNorm normalises by the batch's valid clips' own statistics."""
  config = tiny_config()
  batch = step2_batch(0)
  model = stage_model('step2', config)
  variables = filled_variables(
      model,
      steps.model_inputs(batch, config.input, ('depth', 'rgb'), jnp.float32),
      temporal_noise=0.3,
  )
  (running, _), _ = step2_eval(False, batch, variables)
  (out, _), record = step2_eval(True, batch, variables)
  depth_change = np.asarray(out['logits']['depth']) - np.asarray(running['logits']['depth'])
  assert np.abs(depth_change).max() > 1e-3

  conv = np.asarray(record['depth/conv1'][1], np.float64)
  valid = conv[: 2 * FRAMES]  # the padded third clip's frames are left out
  mean, var = valid.mean(axis=(0, 1, 2)), valid.var(axis=(0, 1, 2))
  bn = variables['params']['depth']['bn1']
  by_hand = (conv - mean) / np.sqrt(var + 1e-5) * np.asarray(bn['scale']) + np.asarray(bn['bias'])
  np.testing.assert_allclose(record['depth/bn1'][1], by_hand, rtol=1e-4, atol=1e-4)

  # The padding clip's content does not reach the valid clips' predictions.
  other = dict(batch, depth=batch['depth'].copy(), rgb=batch['rgb'].copy())
  other['depth'][2] = 255 - other['depth'][2]
  other['rgb'][2] = 0
  (padded_other, _), _ = step2_eval(True, other, variables)
  np.testing.assert_allclose(padded_other['fused'][:2], out['fused'][:2], rtol=1e-5, atol=1e-5)


def test_eval_step_uses_the_batch_statistics():
  """The jitted `eval_step` predicts from the same batch-statistics logits."""
  config = tiny_config(**{'eval.step2_privileged_batch_stats': True})
  batch = step2_batch(2)
  model = stage_model('step2', config)
  variables = filled_variables(
      model,
      steps.model_inputs(batch, config.input, ('depth', 'rgb'), jnp.float32),
      temporal_noise=0.3,
  )
  state = steps.TrainState(
      step=jnp.zeros((), jnp.int32),
      params=variables['params'],
      batch_stats=variables['batch_stats'],
      opt_state=(),
      frozen={},
  )
  preds = jax.jit(functools.partial(steps.eval_step, model=model, config=config))(
      state, batch, jax.random.key(0)
  )
  (out, _), _ = step2_eval(True, batch, variables)
  (running, _), _ = step2_eval(False, batch, variables)
  for stream in ('depth', 'rgb', 'fused'):
    logits = out[stream] if stream == 'fused' else out['logits'][stream]
    np.testing.assert_array_equal(preds[f'pred/{stream}'], np.argmax(logits, -1))
  assert np.abs(np.asarray(out['fused']) - np.asarray(running['fused'])).max() > 1e-3


def test_batch_statistics_evaluation_only_in_step2():
  eval_config = tiny_config(**{'eval.step2_privileged_batch_stats': True}).eval
  for name in ('step1', 'step3', 'step4', 'hoffman'):
    assert steps.eval_batch_stats_streams(stages.get_stage(name), 'depth', eval_config) == ()
  assert steps.eval_batch_stats_streams(stages.get_stage('step2'), 'depth', eval_config) == (
      'depth',
  )
  assert (
      steps.eval_batch_stats_streams(stages.get_stage('step2'), 'depth', tiny_config().eval) == ()
  )


# Depth encoding and mean.


def test_gray_depth_inverts_the_jet_table():
  """Every table colour maps back to its level, except jet's flat stretch 28..32 (-> 30)."""
  table = jet.jet_table()
  gray = np.asarray(preprocess.jet_to_gray(table[None]))[0]
  np.testing.assert_array_equal(gray, np.repeat(gray[:, :1], 3, axis=1))
  expected = np.arange(256)
  expected[28:33] = 30
  np.testing.assert_array_equal(gray[:, 0], expected)
  assert (table[28:33] == (0, 0, 255)).all() and len(np.unique(table, axis=0)) == 252


def test_gray_depth_of_a_coloured_clip_is_its_8bit_level():
  rng = np.random.default_rng(0)
  depth_mm = rng.uniform(500, 4500, (FRAMES, SIZE, SIZE))
  depth_mm[:, :3] = 0  # invalid
  coloured = jet.depth_to_jet(depth_mm)
  valid = depth_mm > 0
  near, far = depth_mm[valid].min(), depth_mm[valid].max()
  level = np.where(valid, np.round((far - depth_mm) / (far - near) * 255), 0).astype(np.int64)
  level[(level >= 28) & (level <= 32)] = 30
  np.testing.assert_array_equal(np.asarray(preprocess.jet_to_gray(coloured))[..., 1], level)


def test_depth_inputs_gray_and_without_mean():
  batch = {'depth': jet.depth_to_jet(np.random.default_rng(1).uniform(1, 9, (2, FRAMES, 4, 4)))}
  jet_mean = steps.model_inputs(batch, tiny_config().input, ('depth',), jnp.float32)['depth']
  np.testing.assert_array_equal(
      jet_mean, batch['depth'].astype(np.float32) - np.asarray(config_lib.VGG_MEAN, np.float32)
  )
  config = tiny_config(**{'input.depth_encoding': 'gray', 'input.depth_subtract_mean': False})
  gray = steps.model_inputs(batch, config.input, ('depth',), jnp.float32)['depth']
  np.testing.assert_array_equal(gray, preprocess.jet_to_gray(batch['depth']).astype(np.float32))


# The reference preset and bad values.


def test_reference_switches():
  config = config_lib.reference_code_switches(tiny_config())
  config_lib.check(config)
  assert not stages.for_config('step4', config).models[0].connections
  assert not stages.for_config('step3', config).models[0].connections
  assert stages.for_config('step2', config).models[0].connections
  assert (
      config.loss.hall_reduction,
      config.model.temporal_form,
      config.model.temporal_init,
      config.input.depth_encoding,
  ) == ('sum', 'conv_bn_relu', 'reference_code', 'gray')
  assert config.eval.step2_privileged_batch_stats and not config.input.depth_subtract_mean


def test_a_saved_config_from_before_the_switches_gets_their_defaults():
  """A run's config.json without the new fields rebuilds the model it trained."""
  saved = config_lib.base_config().to_dict()
  for group, field in (
      ('model', 'temporal_form'),
      ('model', 'temporal_init'),
      ('model', 'unconnected_stages'),
      ('input', 'depth_encoding'),
      ('input', 'depth_subtract_mean'),
      ('loss', 'hall_reference_clips'),
      ('eval', 'step2_privileged_batch_stats'),
  ):
    del saved[group][field]
  saved['loss']['hall_reduction'] = 'sum'
  saved['model']['width'] = 4
  config = config_lib.with_defaults(saved)
  config_lib.check(config)
  assert config.to_dict() == {
      **config_lib.base_config().to_dict(),
      'loss': {**config_lib.base_config().loss.to_dict(), 'hall_reduction': 'sum'},
      'model': {**config_lib.base_config().model.to_dict(), 'width': 4},
  }


@pytest.mark.parametrize(
    'key, value, shown',
    [
        ('loss.hall_reduction', 'batch_sum', "'batch_sum'"),
        ('loss.hall_reference_clips', 0, 'got 0'),
        ('model.temporal_form', 'conv_bn', "'conv_bn'"),
        ('model.temporal_init', 'zeros', "'zeros'"),
        ('model.unconnected_stages', ('step4', 'step1'), "'step1'"),
        ('input.depth_encoding', 'hha', "'hha'"),
    ],
)
def test_check_refuses_bad_switch_values(key, value, shown):
  """The error names the field and the bad value."""
  config = config_lib.base_config()
  group, field = key.split('.')
  config[group][field] = value
  with pytest.raises(ValueError, match=f'config.{re.escape(key)}.*{re.escape(shown)}'):
    config_lib.check(config)
