"""Tests of the paper's losses (`modistill_jax/losses.py`) against NumPy by hand.

The hand computations follow the paper (section 3.2, eqs. 1, 3, 4, 5) and the
reductions of the authors' code: cross-entropies averaged over clips, the soft
term without a T^2 factor, the hallucination loss summed over every element
and weighted by 0.01.
"""

import functools
import inspect

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from modistill_jax import losses


def _log_softmax(z):
  z = np.asarray(z, np.float64)
  z = z - z.max(axis=-1, keepdims=True)
  return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def _softmax(z):
  return np.exp(_log_softmax(z))


def _sigmoid(a):
  return 1.0 / (1.0 + np.exp(-np.asarray(a, np.float64)))


def _example(seed=0, clips=4, classes=6):
  rng = np.random.default_rng(seed)
  student = rng.normal(scale=3.0, size=(clips, classes)).astype(np.float32)
  teacher = rng.normal(scale=3.0, size=(clips, classes)).astype(np.float32)
  labels = rng.integers(0, classes, size=clips).astype(np.int32)
  return student, teacher, labels


def test_defaults_are_the_references():
  """Defaults are the authors' settings: T=10, lambda=0.5, alpha=0.5, sum, weight 0.01."""

  def defaults(fn):
    return {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if p.default is not inspect.Parameter.empty
    }

  assert defaults(losses.generalized_distillation_loss) == {'temperature': 10.0, 'lam': 0.5}
  assert defaults(losses.hallucination_loss) == {
      'reduction': 'sum',
      'weight': 0.01,
      'num_clips': None,
      'reference_clips': 5,
  }
  assert defaults(losses.total_loss) == {'alpha': 0.5}


def test_cross_entropy_by_hand():
  """`cross_entropy` is the mean over clips of `-log softmax(z)[y]`.

  Also numerically stable for large logits (a naive softmax would overflow).
  """
  logits = np.array([[2.0, 1.0, 0.1], [0.5, 2.5, -1.0]], np.float32)
  labels = np.array([0, 2])
  p0 = np.exp(2.0) / (np.exp(2.0) + np.exp(1.0) + np.exp(0.1))
  p1 = np.exp(-1.0) / (np.exp(0.5) + np.exp(2.5) + np.exp(-1.0))
  expected = -(np.log(p0) + np.log(p1)) / 2
  np.testing.assert_allclose(losses.cross_entropy(logits, labels), expected, rtol=1e-6)
  big = np.array([[1000.0, 0.0], [0.0, 1000.0]], np.float32)
  np.testing.assert_allclose(losses.cross_entropy(big, np.array([0, 0])), 500.0, rtol=1e-6)


@pytest.mark.parametrize('temperature', [1.0, 2.0, 10.0])
def test_soft_cross_entropy_at_temperature_by_hand(temperature):
  """The soft term is `mean_clips(-sum_k softmax(z_t/T)_k log softmax(z_s/T)_k)`.

  Both the teacher's and the student's logits are divided by T, and there is no
  T^2 factor. Checked by hand at several T; the value must change with T (a
  loss ignoring T would pass at T=1 only).
  """
  student, teacher, _ = _example()
  s = np.exp(teacher / temperature) / np.exp(teacher / temperature).sum(-1, keepdims=True)
  expected = np.mean(-np.sum(s * _log_softmax(student / temperature), axis=-1))
  targets = losses.soft_targets(teacher, temperature)
  np.testing.assert_allclose(targets, s, rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(targets.sum(-1), 1.0, rtol=1e-6)
  got = losses.soft_cross_entropy(student / temperature, targets)
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  if temperature != 1.0:
    at_one = np.mean(-np.sum(_softmax(teacher) * _log_softmax(student), axis=-1))
    assert abs(float(got) - at_one) > 1e-2


def test_soft_targets_flatten_with_temperature():
  """A higher T smooths the teacher's prediction towards uniform (eq. 4's purpose)."""
  _, teacher, _ = _example()
  entropies = []
  for t in (1.0, 2.0, 10.0, 1000.0):
    p = np.asarray(losses.soft_targets(teacher, t), np.float64)
    entropies.append(-np.sum(p * np.log(p), axis=-1))
  assert np.all(np.diff(np.stack(entropies), axis=0) > 0)
  np.testing.assert_allclose(entropies[-1], np.log(teacher.shape[-1]), rtol=1e-3)


@pytest.mark.parametrize('temperature,lam', [(10.0, 0.5), (4.0, 0.2), (1.0, 1.0), (3.0, 0.0)])
def test_generalized_distillation_loss_by_hand(temperature, lam):
  """Eq. 3: `(1 - lambda) * CE(y, z_s) + lambda * CE(softmax(z_t/T), z_s/T)`.

  The hard and soft terms are returned unweighted alongside the total.
  """
  student, teacher, labels = _example(1)
  hard = -np.mean(_log_softmax(student)[np.arange(len(labels)), labels])
  soft = np.mean(
      -np.sum(_softmax(teacher / temperature) * _log_softmax(student / temperature), axis=-1)
  )
  out = losses.generalized_distillation_loss(
      student, teacher, labels, temperature=temperature, lam=lam
  )
  assert sorted(out) == ['hard', 'loss', 'soft']
  np.testing.assert_allclose(out['hard'], hard, rtol=1e-5)
  np.testing.assert_allclose(out['soft'], soft, rtol=1e-5)
  np.testing.assert_allclose(out['loss'], (1 - lam) * hard + lam * soft, rtol=1e-5)


def test_generalized_distillation_loss_defaults():
  """Without arguments the loss uses T=10 and lambda=0.5."""
  student, teacher, labels = _example(2)
  hard = -np.mean(_log_softmax(student)[np.arange(len(labels)), labels])
  soft = np.mean(-np.sum(_softmax(teacher / 10.0) * _log_softmax(student / 10.0), axis=-1))
  out = losses.generalized_distillation_loss(student, teacher, labels)
  np.testing.assert_allclose(out['loss'], 0.5 * hard + 0.5 * soft, rtol=1e-5)


def test_hallucination_loss_by_hand():
  """Eq. 1: `weight * reduce((sigmoid(A_t) - sigmoid(A_s))^2)` over every element.

  The reference sums over clips, frames, space and channels and scales by 0.01
  (the default); 'mean' divides by the element count instead.
  """
  rng = np.random.default_rng(3)
  teacher = rng.normal(scale=2.0, size=(6, 3, 3, 8)).astype(np.float32)
  student = rng.normal(scale=2.0, size=(6, 3, 3, 8)).astype(np.float32)
  squares = (_sigmoid(teacher) - _sigmoid(student)) ** 2
  np.testing.assert_allclose(
      losses.hallucination_loss(teacher, student), 0.01 * squares.sum(), rtol=1e-5
  )
  np.testing.assert_allclose(
      losses.hallucination_loss(teacher, student, reduction='sum', weight=1.0),
      squares.sum(),
      rtol=1e-5,
  )
  np.testing.assert_allclose(
      losses.hallucination_loss(teacher, student, reduction='mean'),
      0.01 * squares.mean(),
      rtol=1e-5,
  )
  np.testing.assert_allclose(
      losses.hallucination_loss(teacher, student, reduction='mean', weight=0.3),
      0.3 * squares.mean(),
      rtol=1e-5,
  )
  # 'per_clip': the 6 rows are 3 clips of 2 frames; the sum per clip, times 5 clips.
  np.testing.assert_allclose(
      losses.hallucination_loss(teacher, student, reduction='per_clip', num_clips=3),
      0.01 * squares.sum() / 3 * 5,
      rtol=1e-5,
  )
  assert float(losses.hallucination_loss(teacher, teacher)) == 0.0
  with pytest.raises(ValueError, match='reduction'):
    losses.hallucination_loss(teacher, student, reduction='max')
  with pytest.raises(ValueError, match='num_clips'):
    losses.hallucination_loss(teacher, student, reduction='per_clip')


@pytest.mark.parametrize('alpha', [0.5, 0.0, 1.0, 0.25])
def test_total_loss_by_hand(alpha):
  """Eq. 5: `L = (1 - alpha) * L_GD + alpha * L_hall`; the default alpha is 0.5."""
  gd, hall = jnp.float32(1.7), jnp.float32(0.4)
  np.testing.assert_allclose(
      losses.total_loss(gd, hall, alpha=alpha), (1 - alpha) * 1.7 + alpha * 0.4, rtol=1e-6
  )
  np.testing.assert_allclose(losses.total_loss(gd, hall), 0.5 * 1.7 + 0.5 * 0.4, rtol=1e-6)


def test_composed_defaults_match_reference_formula():
  """With all defaults, `L = 0.5 * L_GD(T=10, lambda=0.5) + 0.5 * 0.01 * sum(...)`.

  This is the authors' step-3 objective written out in full.
  """
  student, teacher, labels = _example(4, clips=2, classes=5)
  rng = np.random.default_rng(5)
  feats_t = rng.normal(size=(10, 2, 2, 16)).astype(np.float32)
  feats_s = rng.normal(size=(10, 2, 2, 16)).astype(np.float32)
  hard = -np.mean(_log_softmax(student)[np.arange(len(labels)), labels])
  soft = np.mean(-np.sum(_softmax(teacher / 10) * _log_softmax(student / 10), axis=-1))
  l_hall = np.sum((_sigmoid(feats_t) - _sigmoid(feats_s)) ** 2)
  expected = 0.5 * (0.5 * hard + 0.5 * soft) + 0.5 * 0.01 * l_hall
  got = losses.total_loss(
      losses.generalized_distillation_loss(student, teacher, labels)['loss'],
      losses.hallucination_loss(feats_t, feats_s),
  )
  np.testing.assert_allclose(got, expected, rtol=1e-5)


# --------------------------------------------------------------------------
# Gradients of the full objective (eq. 5).

IN_DIM, FEAT_DIM, CLASSES = 7, 4, 5


def _net(params, x):
  """A small two-layer network: `(logits, features)`, as a stream would give."""
  features = jnp.tanh(x @ params['w1'])
  return features @ params['w2'], features


def _params(key):
  k1, k2 = jax.random.split(key)
  return {
      'w1': jax.random.normal(k1, (IN_DIM, FEAT_DIM)),
      'w2': jax.random.normal(k2, (FEAT_DIM, CLASSES)),
  }


def _objective(student_params, teacher_params, x_student, x_teacher, labels, *, stop):
  """Eq. 5 with the student on one input and the teacher on another (RGB vs depth)."""
  s_logits, s_feats = _net(student_params, x_student)
  t_logits, t_feats = _net(teacher_params, x_teacher)
  if stop:
    t_logits, t_feats = jax.lax.stop_gradient((t_logits, t_feats))
  gd = losses.generalized_distillation_loss(s_logits, t_logits, labels)['loss']
  return losses.total_loss(gd, losses.hallucination_loss(t_feats, s_feats))


def _grad(argnums, stop):
  return jax.jit(jax.grad(functools.partial(_objective, stop=stop), argnums=argnums))


def _problem():
  keys = jax.random.split(jax.random.key(0), 4)
  return (
      _params(keys[0]),
      _params(keys[1]),
      jax.random.normal(keys[2], (3, IN_DIM)),
      jax.random.normal(keys[3], (3, IN_DIM)),
      jnp.array([0, 3, 4]),
  )


def test_objective_gradient_is_zero_for_a_stopped_teacher():
  """Through `stop_gradient`, eq. 5 gives the teacher exactly zero gradient.

  Both for the teacher's parameters and its input, while the student's
  parameters get non-zero gradients. Without the stop the teacher does get
  gradients (the contrast shows the check can fail): the losses themselves
  never stop gradients, the caller must.
  """
  student, teacher, xs, xt, labels = _problem()
  grads = _grad(argnums=(0, 1, 3), stop=True)(student, teacher, xs, xt, labels)
  g_student, g_teacher, g_teacher_input = grads
  for leaf in jax.tree.leaves((g_teacher, g_teacher_input)):
    np.testing.assert_array_equal(leaf, np.zeros_like(leaf))
  for leaf in jax.tree.leaves(g_student):
    assert np.all(np.isfinite(leaf)) and np.max(np.abs(leaf)) > 1e-4

  unstopped = _grad(argnums=1, stop=False)(student, teacher, xs, xt, labels)
  assert max(float(np.max(np.abs(leaf))) for leaf in jax.tree.leaves(unstopped)) > 1e-4


def test_student_gradient_same_with_teacher_stopped_or_not_differentiated():
  """Stopping the teacher or just not differentiating it gives the student the same gradient.

  Differentiating only the student's argument is the trainer's way (the teacher
  is a separate, undifferentiated argument); the student's gradient must not
  depend on which way is used, and must match central finite differences.
  """
  student, teacher, xs, xt, labels = _problem()
  stopped = _grad(argnums=0, stop=True)(student, teacher, xs, xt, labels)
  plain = _grad(argnums=0, stop=False)(student, teacher, xs, xt, labels)
  for a, b in zip(jax.tree.leaves(stopped), jax.tree.leaves(plain)):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)

  def f64(w1):
    p = {'w1': w1, 'w2': np.asarray(student['w2'], np.float64)}
    x = np.asarray(xs, np.float64)
    feats = np.tanh(x @ p['w1'])
    logits = feats @ p['w2']
    t_feats = np.tanh(np.asarray(xt, np.float64) @ np.asarray(teacher['w1'], np.float64))
    t_logits = t_feats @ np.asarray(teacher['w2'], np.float64)
    hard = -np.mean(_log_softmax(logits)[np.arange(3), np.asarray(labels)])
    soft = np.mean(-np.sum(_softmax(t_logits / 10) * _log_softmax(logits / 10), axis=-1))
    hall = 0.01 * np.sum((_sigmoid(t_feats) - _sigmoid(feats)) ** 2)
    return 0.5 * (0.5 * hard + 0.5 * soft) + 0.5 * hall

  w1 = np.asarray(student['w1'], np.float64)
  eps = 1e-6
  for i, j in [(0, 0), (3, 2), (6, 3)]:
    step = np.zeros_like(w1)
    step[i, j] = eps
    numeric = (f64(w1 + step) - f64(w1 - step)) / (2 * eps)
    np.testing.assert_allclose(plain['w1'][i, j], numeric, rtol=1e-3, atol=1e-6)
