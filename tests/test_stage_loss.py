"""`steps.stage_loss` against NumPy: each stage's loss, each `loss.kind`, and the gradient paths.

The model outputs are random arrays (3 clips of 2 frames, 4 classes, 2x2x4
feature maps), so each composition (cross-entropies, eq. 1 with each
reduction, eq. 3, eq. 5, Hoffman's joint loss) is checked on its own, in
float64 NumPy, with non-default T, lambda, alpha and weights so that a term
with a swapped or dropped coefficient cannot pass.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from modistill_jax import config_lib
from modistill_jax import losses
from modistill_jax import stages
from modistill_jax import steps

CLIPS, FRAMES, CLASSES = 3, 2, 4
FEATURES = (CLIPS * FRAMES, 2, 2, 4)
LABELS = np.array([0, 3, 1])


def loss_config(kind: str, reduction: str = 'per_clip'):
  config = config_lib.base_config().loss
  config.kind = kind
  config.hall_reduction = reduction
  config.temperature = 3.0
  config.lam = 0.3
  config.alpha = 0.2
  config.hall_weight = 0.05
  config.hall_reference_clips = 5
  return config


def random_outputs(stage: stages.Stage, seed: int = 0) -> dict:
  """`StageNetwork.apply`'s outputs for `stage`: logits, fused logits, the block-4 endpoints."""
  rng = np.random.default_rng(seed)
  return {
      'logits': {
          s: jnp.asarray(rng.normal(size=(CLIPS, CLASSES)) * 2, jnp.float32) for s in stage.streams
      },
      'fused': jnp.asarray(rng.normal(size=(CLIPS, CLASSES)), jnp.float32),
      'endpoints': {
          s: {'block4': jnp.asarray(rng.normal(size=FEATURES), jnp.float32)} for s in stage.streams
      },
  }


def log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(-1, keepdims=True)
  return z - np.log(np.exp(z).sum(-1, keepdims=True))


def xent(logits):
  return -np.mean(log_softmax(logits)[np.arange(CLIPS), LABELS])


def sigmoid(x):
  return 1 / (1 + np.exp(-np.asarray(x, np.float64)))


def hall_numpy(teacher, student, config):
  squared = (sigmoid(teacher) - sigmoid(student)) ** 2
  reduced = {
      'sum': squared.sum(),
      'mean': squared.mean(),
      'per_clip': squared.sum() / CLIPS * config.hall_reference_clips,
  }
  return config.hall_weight * reduced[config.hall_reduction]


def distillation_numpy(
    student_logits, teacher_logits, student_features, teacher_features, config
) -> tuple[float, dict[str, float]]:
  """`loss.kind`'s loss and its logged terms, from the paper's equations."""
  hard = xent(student_logits)
  if config.kind == 'xent':
    return hard, {'hard': hard}
  hall = hall_numpy(teacher_features, student_features, config)
  if config.kind == 'eq1':
    return hall, {'hall': hall}
  t = config.temperature
  soft = -np.mean(
      np.sum(
          np.exp(log_softmax(np.asarray(teacher_logits) / t))
          * log_softmax(np.asarray(student_logits) / t),
          -1,
      )
  )
  gd = (1 - config.lam) * hard + config.lam * soft
  if config.kind == 'eq3':
    return gd, {'hard': hard, 'soft': soft}
  return (1 - config.alpha) * gd + config.alpha * hall, {'hard': hard, 'soft': soft, 'hall': hall}


def assert_loss(actual, expected):
  loss, terms = actual
  expected_loss, expected_terms = expected
  assert set(terms) == set(expected_terms)
  np.testing.assert_allclose(float(loss), expected_loss, rtol=1e-5)
  for name, value in expected_terms.items():
    np.testing.assert_allclose(float(terms[name]), value, rtol=1e-5, err_msg=name)


def test_joint_stages_use_the_fused_logits_only():
  """Steps 2 and 4: one cross-entropy on the fused logits, not on the streams' own."""
  for name in ('step2', 'step4'):
    stage = stages.get_stage(name)
    outputs = random_outputs(stage)
    expected = xent(outputs['fused'])
    assert_loss(
        steps.stage_loss(stage, loss_config('eq5'), outputs, LABELS), (expected, {'xent': expected})
    )


def test_step1_sums_each_streams_cross_entropy():
  stage = stages.get_stage('step1')
  outputs = random_outputs(stage)
  terms = {f'xent_{s}': xent(outputs['logits'][s]) for s in ('depth', 'rgb')}
  assert_loss(
      steps.stage_loss(stage, loss_config('eq5'), outputs, LABELS), (sum(terms.values()), terms)
  )


@pytest.mark.parametrize('kind', stages.LOSS_KINDS)
@pytest.mark.parametrize('reduction', losses.HALL_REDUCTIONS)
def test_step3_loss_of_each_kind_and_reduction(kind, reduction):
  """Step 3: the hallucination stream (student) against the frozen depth stream (teacher)."""
  stage = stages.get_stage('step3')
  config = loss_config(kind, reduction)
  outputs = random_outputs(stage)
  logits, features = outputs['logits'], outputs['endpoints']
  expected = distillation_numpy(
      logits['hall'],
      logits['depth'],
      features['hall']['block4'],
      features['depth']['block4'],
      config,
  )
  assert_loss(steps.stage_loss(stage, config, outputs, LABELS), expected)


@pytest.mark.parametrize('kind', stages.LOSS_KINDS)
def test_hoffman_adds_the_teacher_and_rgb_cross_entropies(kind):
  stage = stages.get_stage('hoffman')
  config = loss_config(kind)
  outputs = random_outputs(stage)
  logits, features = outputs['logits'], outputs['endpoints']
  distill, terms = distillation_numpy(
      logits['hall'],
      logits['depth'],
      features['hall']['block4'],
      features['depth']['block4'],
      config,
  )
  xents = {f'xent_{s}': xent(logits[s]) for s in ('depth', 'rgb')}
  assert_loss(
      steps.stage_loss(stage, config, outputs, LABELS),
      (distill + sum(xents.values()), {**terms, **xents}),
  )


def loss_gradients(stage_name: str, kind: str = 'eq5') -> dict:
  """d stage_loss / d (every logit and endpoint)."""
  stage = stages.get_stage(stage_name)
  config = loss_config(kind)

  def loss(outputs):
    return steps.stage_loss(stage, config, outputs, LABELS)[0]

  return jax.tree.map(np.asarray, jax.grad(loss)(random_outputs(stage)))


def xent_gradient(logits):
  """d mean-CE / d logits = (softmax - one_hot) / clips."""
  return (np.exp(log_softmax(logits)) - np.eye(CLASSES)[LABELS]) / CLIPS


def test_step3_teacher_gets_no_gradient():
  """Neither the teacher's logits (eq. 3's soft targets) nor its features (eq. 1) are trained."""
  grads = loss_gradients('step3')
  assert not np.any(grads['logits']['depth'])
  assert not np.any(grads['endpoints']['depth']['block4'])
  assert np.all(np.abs(grads['logits']['hall']).sum(-1) > 0)
  assert np.any(grads['endpoints']['hall']['block4'])


@pytest.mark.parametrize('kind', stages.LOSS_KINDS)
def test_hoffman_teacher_learns_from_its_labels_only(kind):
  """The depth stream's logit gradient is its own cross-entropy's, whatever the distillation.

  Its features get none: the hallucination loss pulls only the student
  towards the teacher. The RGB stream, outside the distillation, gets its own
  cross-entropy's gradient too.
  """
  stage = stages.get_stage('hoffman')
  outputs = random_outputs(stage)
  grads = loss_gradients('hoffman', kind)
  for stream in ('depth', 'rgb'):
    np.testing.assert_allclose(
        grads['logits'][stream],
        xent_gradient(outputs['logits'][stream]),
        rtol=1e-5,
        atol=1e-7,
        err_msg=stream,
    )
  assert not np.any(grads['endpoints']['depth']['block4'])
  assert not np.any(grads['endpoints']['rgb']['block4'])
  assert not np.any(grads['fused'])
  student_features_trained = kind in ('eq1', 'eq5')
  assert np.any(grads['endpoints']['hall']['block4']) == student_features_trained
