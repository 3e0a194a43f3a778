"""The Optax optimizer of a stage: Adam (reference), optional schedule, decay, clipping.

Only the stage's trainable streams are handed to the optimizer; a frozen teacher
lives outside the optimizer state altogether (see `steps.TrainState`), so no
masking is needed and nothing is allocated for it.
"""

from __future__ import annotations

import ml_collections
import optax


def learning_rate_schedule(config: ml_collections.ConfigDict, total_steps: int) -> optax.Schedule:
  """`constant` (reference), `cosine` decay to 0, or `warmup_cosine`."""
  lr = config.learning_rate
  if config.schedule == 'constant':
    return optax.constant_schedule(lr)
  if config.schedule == 'cosine':
    return optax.cosine_decay_schedule(lr, decay_steps=max(total_steps, 1))
  if config.schedule == 'warmup_cosine':
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup_steps=config.warmup_steps, decay_steps=max(total_steps, 1)
    )
  raise ValueError(
      "optimizer.schedule must be 'constant', 'cosine' or 'warmup_cosine', "
      f'got {config.schedule!r}.'
  )


def make_optimizer(
    config: ml_collections.ConfigDict, total_steps: int
) -> tuple[optax.GradientTransformation, optax.Schedule]:
  """The stage's optimizer and its schedule (logged as the learning rate)."""
  schedule = learning_rate_schedule(config, total_steps)
  if config.weight_decay > 0:
    opt = optax.adamw(
        schedule, b1=config.b1, b2=config.b2, eps=config.eps, weight_decay=config.weight_decay
    )
  else:
    opt = optax.adam(schedule, b1=config.b1, b2=config.b2, eps=config.eps)
  if config.grad_clip_norm > 0:
    opt = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), opt)
  return opt, schedule
