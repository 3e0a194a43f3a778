"""The paper's losses, as pure functions of arrays.

Equation numbers refer to the paper (`shared/paper.txt`, section 3.2); where the
paper is silent, the reductions follow the authors' implementation
(`shared/reference-notes.md`):

* eq. (1), `hallucination_loss`: `weight * reduce((sigmoid(A_d) - sigmoid(A_h))^2)`
  on one endpoint, with `weight=0.01`. The reference reduces by a *sum over every
  element* of the batch (`'sum'`, this function's default), so its weight
  against L_GD (a mean over clips) grows with the number of clips per batch; the
  paper's alpha was set at the reference's 5 clips. `'per_clip'` (the config's
  default, `config.loss.hall_reduction`) sums over a clip's elements
  (frames, space, channels), averages over clips and multiplies by that
  reference batch: equal to `'sum'` at 5 clips, and the balance of eq. (5) stays
  the reference's at any batch size. `'mean'` also drops the feature-map size.
* eq. (3)/(4), `generalized_distillation_loss`:
  `(1 - lambda) * CE(y, softmax(z_s)) + lambda * CE(softmax(z_t / T), softmax(z_s / T))`,
  each cross-entropy averaged over clips, no T^2 factor.
* eq. (5), `total_loss`: `(1 - alpha) * L_GD + alpha * L_hall`. With several
  privileged streams (teachers), L_GD distils their fused logits (the mean of
  theirs) and L_hall is the mean of eq. (1) towards each teacher's feature map;
  with one teacher both are exactly the paper's.

`HALLUCINATION_LOSSES` names the step-3 / hoffman losses a config chooses
(`config.loss.kind`): a new one is one entry there (and its test).

Nothing here stops gradients: the trainer differentiates only the student's
parameters, and the model stops gradients at a frozen giver.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import functools
from typing import Any, Literal

import jax
import jax.numpy as jnp

Array = jax.Array


def cross_entropy(logits: Array, labels: Array) -> Array:
  """Softmax cross-entropy with integer labels, mean over the batch."""
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.mean(jnp.take_along_axis(log_p, labels[:, None].astype(jnp.int32), axis=-1))


def soft_cross_entropy(logits: Array, target_probs: Array) -> Array:
  """`mean_clips(-sum_k p_k log softmax(logits)_k)` against a probability target."""
  log_p = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
  return -jnp.mean(jnp.sum(target_probs * log_p, axis=-1))


HALL_REDUCTIONS = ('per_clip', 'sum', 'mean')


def hallucination_loss(
    teacher_activations: Array,
    student_activations: Array,
    *,
    reduction: Literal['per_clip', 'sum', 'mean'] = 'sum',
    weight: float = 0.01,
    num_clips: int | None = None,
    reference_clips: int = 5,
) -> Array:
  """Eq. (1): `weight * reduce((sigmoid(A_teacher) - sigmoid(A_student))^2)`.

  Args:
    teacher_activations, student_activations: the endpoint of both streams,
      `(clips * frames, ...)`.
    reduction: `'per_clip'`: `sum / num_clips * reference_clips`; `'sum'`: over
      every element of the batch (the reference, batch-dependent); `'mean'`:
      over every element.
    weight: the extra factor (0.01 in the reference).
    num_clips: clips in the batch; needed by `'per_clip'` (the leading axis
      holds clips times frames).
    reference_clips: the batch at which `'per_clip'` equals `'sum'`.
  """
  diff = jax.nn.sigmoid(teacher_activations.astype(jnp.float32)) - jax.nn.sigmoid(
      student_activations.astype(jnp.float32)
  )
  if reduction == 'per_clip':
    if not num_clips:
      raise ValueError("reduction='per_clip' needs the batch's num_clips.")
    # A Python float: exactly 1.0 at the reference batch, so the value is then
    # bit-identical to 'sum'.
    reduced = jnp.sum(diff**2) * (reference_clips / num_clips)
  elif reduction == 'sum':
    reduced = jnp.sum(diff**2)
  elif reduction == 'mean':
    reduced = jnp.mean(diff**2)
  else:
    raise ValueError(f'reduction must be one of {HALL_REDUCTIONS}, got {reduction!r}')
  return weight * reduced


def soft_targets(teacher_logits: Array, temperature: float) -> Array:
  """Eq. (4): `s = softmax(f_t(x) / T)`."""
  return jax.nn.softmax(teacher_logits.astype(jnp.float32) / temperature, axis=-1)


def generalized_distillation_loss(
    student_logits: Array,
    teacher_logits: Array,
    labels: Array,
    *,
    temperature: float = 10.0,
    lam: float = 0.5,
) -> dict[str, Array]:
  """Eq. (3): `(1 - lambda) * hard + lambda * soft`.

  Returns a dict with the weighted total under `'loss'` and the unweighted
  `'hard'` and `'soft'` terms, which the trainer logs separately.
  """
  hard = cross_entropy(student_logits, labels)
  soft = soft_cross_entropy(student_logits / temperature, soft_targets(teacher_logits, temperature))
  return {'loss': (1.0 - lam) * hard + lam * soft, 'hard': hard, 'soft': soft}


def total_loss(gd_loss: Array, hall_loss: Array, *, alpha: float = 0.5) -> Array:
  """Eq. (5): `L = (1 - alpha) * L_GD + alpha * L_hall`."""
  return (1.0 - alpha) * gd_loss + alpha * hall_loss


# MARK: the hallucination losses by name (`config.loss.kind`)

# (loss_config, student logits, teacher logits, student features, teacher features, labels)
# -> (loss, {term name: unweighted term}); the terms are logged separately. The teacher
# logits are the teachers' fused logits (`fused_teacher_logits`), the teacher features one
# feature map per teacher.
HallucinationLoss = Callable[..., tuple[Array, dict[str, Array]]]


def fused_teacher_logits(teacher_logits: Sequence[Array]) -> Array:
  """The teachers' fused logits, the mean of theirs: one teacher's, exactly, alone."""
  return functools.reduce(jnp.add, teacher_logits) / len(teacher_logits)


def _hall(
    loss_config: Any, student_features: Array, teacher_features: Sequence[Array], labels: Array
):
  """Eq. (1) towards each teacher's feature map, averaged: one teacher's eq. (1), exactly."""
  terms = [
      hallucination_loss(
          features,
          student_features,
          reduction=loss_config.hall_reduction,
          weight=loss_config.hall_weight,
          num_clips=labels.shape[0],
          reference_clips=loss_config.hall_reference_clips,
      )
      for features in teacher_features
  ]
  return functools.reduce(jnp.add, terms) / len(terms)


def _gd(loss_config: Any, student_logits: Array, teacher_logits: Array, labels: Array):
  return generalized_distillation_loss(
      student_logits,
      teacher_logits,
      labels,
      temperature=loss_config.temperature,
      lam=loss_config.lam,
  )


def xent(loss_config, student_logits, teacher_logits, student_f, teacher_f, labels):
  """`'xent'`: the student learns from the labels alone (no teacher)."""
  del loss_config, teacher_logits, student_f, teacher_f
  hard = cross_entropy(student_logits, labels)
  return hard, {'hard': hard}


def eq1(loss_config, student_logits, teacher_logits, student_f, teacher_f, labels):
  """`'eq1'`: the hallucination loss alone."""
  del student_logits, teacher_logits
  hall = _hall(loss_config, student_f, teacher_f, labels)
  return hall, {'hall': hall}


def eq3(loss_config, student_logits, teacher_logits, student_f, teacher_f, labels):
  """`'eq3'`: generalized distillation alone."""
  del student_f, teacher_f
  gd = _gd(loss_config, student_logits, teacher_logits, labels)
  return gd['loss'], {'hard': gd['hard'], 'soft': gd['soft']}


def eq5(loss_config, student_logits, teacher_logits, student_f, teacher_f, labels):
  """`'eq5'`: the paper's loss, generalized distillation plus hallucination."""
  hall = _hall(loss_config, student_f, teacher_f, labels)
  gd = _gd(loss_config, student_logits, teacher_logits, labels)
  loss = total_loss(gd['loss'], hall, alpha=loss_config.alpha)
  return loss, {'hard': gd['hard'], 'soft': gd['soft'], 'hall': hall}


HALLUCINATION_LOSSES: dict[str, HallucinationLoss] = {
    'xent': xent,
    'eq1': eq1,
    'eq3': eq3,
    'eq5': eq5,
}
