"""Each `config.optimizer` option against a hand computation of its update.

Adam's update after `t` steps is `-lr_t * m_hat / (sqrt(v_hat) + eps)`, with
`m = b1 m + (1 - b1) g`, `v = b2 v + (1 - b2) g^2`, `m_hat = m / (1 - b1^t)`,
`v_hat = v / (1 - b2^t)`. The options use values far from the defaults, so a
hyperparameter the optimizer drops or swaps changes the numbers.
"""

import math

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from modistill_jax import config_lib
from modistill_jax import optim

PARAMS = {'w': np.array([2.0, -1.0, 0.5])}
GRADS = [np.array([0.3, -0.2, 0.0]), np.array([-0.1, 0.4, 0.2])]


def optimizer_config(**values):
  config = config_lib.base_config().optimizer
  config.update(dict(learning_rate=0.1, b1=0.8, b2=0.9, eps=0.01), **values)
  return config


def updates(config, total_steps: int = 10, grads=GRADS) -> list[np.ndarray]:
  """The optimizer's update of `w` at each step (params fixed, as the check needs)."""
  tx, _ = optim.make_optimizer(config, total_steps)
  params = {'w': jnp.asarray(PARAMS['w'])}
  state = tx.init(params)
  out = []
  for g in grads:
    update, state = tx.update({'w': jnp.asarray(g)}, state, params)
    out.append(np.asarray(update['w'], np.float64))
  return out


def adam_directions(config, grads=GRADS) -> list[np.ndarray]:
  """`m_hat / (sqrt(v_hat) + eps)` after each step."""
  m = v = np.zeros(3)
  out = []
  for t, g in enumerate(grads, start=1):
    m = config.b1 * m + (1 - config.b1) * g
    v = config.b2 * v + (1 - config.b2) * g**2
    m_hat, v_hat = m / (1 - config.b1**t), v / (1 - config.b2**t)
    out.append(m_hat / (np.sqrt(v_hat) + config.eps))
  return out


def test_constant_adam_uses_b1_b2_eps_and_the_learning_rate():
  config = optimizer_config()
  expected = [-0.1 * d for d in adam_directions(config)]
  np.testing.assert_allclose(updates(config), expected, rtol=1e-5, atol=1e-8)


def test_weight_decay_is_decoupled():
  """AdamW: `-lr * (adam direction + weight_decay * w)`, the decay outside the moments."""
  config = optimizer_config(weight_decay=0.5)
  expected = [-0.1 * (d + 0.5 * PARAMS['w']) for d in adam_directions(config)]
  np.testing.assert_allclose(updates(config), expected, rtol=1e-5, atol=1e-8)


def test_gradient_clipping_rescales_the_global_norm_before_adam():
  """Norms 0.36 and 0.46 clipped to 0.25: Adam sees `g * 0.25 / |g|` (eps keeps it visible)."""
  config = optimizer_config(grad_clip_norm=0.25, eps=1.0)
  clipped = [g * min(1.0, 0.25 / np.linalg.norm(g)) for g in GRADS]
  expected = [-0.1 * d for d in adam_directions(config, clipped)]
  np.testing.assert_allclose(updates(config), expected, rtol=1e-5, atol=1e-8)
  unclipped = [-0.1 * d for d in adam_directions(config)]
  assert not np.allclose(expected, unclipped)


def test_cosine_schedule_decays_to_zero_over_the_run():
  _, schedule = optim.make_optimizer(optimizer_config(schedule='cosine'), 10)
  for step in (0, 2, 5, 10):
    expected = 0.1 * 0.5 * (1 + math.cos(math.pi * step / 10))
    assert float(schedule(step)) == pytest.approx(expected, abs=1e-7), step


def test_warmup_cosine_rises_linearly_then_decays_within_the_run():
  """From 0 to the peak over `warmup_steps`, then cosine to 0 at the run's last step."""
  _, schedule = optim.make_optimizer(optimizer_config(schedule='warmup_cosine', warmup_steps=4), 12)
  expected = {0: 0.0, 2: 0.05, 4: 0.1, 8: 0.05, 12: 0.0}
  assert {s: round(float(schedule(s)), 7) for s in expected} == expected


def test_the_schedule_scales_the_update_it_belongs_to():
  """Step 2 of a 2-step cosine run moves by `lr(1) = lr / 2` times Adam's direction."""
  config = optimizer_config(schedule='cosine')
  directions = adam_directions(config)
  np.testing.assert_allclose(
      updates(config, total_steps=2),
      [-0.1 * directions[0], -0.05 * directions[1]],
      rtol=1e-5,
      atol=1e-8,
  )


def test_reference_default_is_plain_adam():
  """The base config's optimizer is optax's Adam at 1e-3, nothing chained."""
  config = config_lib.base_config().optimizer
  ours = updates(config)
  adam = optax.adam(1e-3)
  params = {'w': jnp.asarray(PARAMS['w'])}
  state = adam.init(params)
  for g, got in zip(GRADS, ours):
    update, state = adam.update({'w': jnp.asarray(g)}, state, params)
    np.testing.assert_array_equal(got, np.asarray(update['w'], np.float64))


def test_unknown_schedule_names_the_choices():
  with pytest.raises(ValueError, match="'constant', 'cosine' or 'warmup_cosine', got 'step'"):
    optim.make_optimizer(optimizer_config(schedule='step'), 10)
