"""On-device normalisation, depth noise and void depth."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from modistill_jax.data import preprocess


def test_normalize_formula_per_channel():
  clips = np.arange(2 * 3 * 4 * 3, dtype=np.uint8).reshape(2, 3, 4, 3)
  mean, std = (123.68, 116.78, 103.94), (58.4, 57.1, 57.4)
  out = preprocess.normalize(jnp.asarray(clips), mean, std)
  assert out.dtype == jnp.float32
  np.testing.assert_allclose(out, (clips - np.array(mean)) / np.array(std), rtol=1e-5)
  half = preprocess.normalize(jnp.asarray(clips), mean, (1.0, 1.0, 1.0), dtype=jnp.bfloat16)
  assert half.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(half, np.float32), clips - np.array(mean), atol=1.0)


@pytest.mark.parametrize('sigma', [0.01, 0.1])
def test_depth_noise_statistics(sigma):
  value = 100.0
  depth = jnp.full((64, 64, 64, 3), value, jnp.uint8)
  noisy = preprocess.depth_noise(jax.random.key(0), depth, sigma)
  assert noisy.dtype == jnp.float32 and noisy.shape == depth.shape
  np.testing.assert_allclose(float(noisy.mean()), value, rtol=3e-3)
  np.testing.assert_allclose(float(noisy.std()), value * sigma, rtol=2e-2)
  other = preprocess.depth_noise(jax.random.key(1), depth, sigma)
  assert not np.array_equal(noisy, other)


def test_depth_noise_clips_to_byte_range():
  depth = jnp.asarray(np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)), jnp.uint8)
  noisy = preprocess.depth_noise(jax.random.key(0), depth, np.sqrt(10.0))  # Table 2's 1e1
  assert float(noisy.min()) == 0.0 and float(noisy.max()) == 255.0


def test_void_depth_is_zero():
  depth = jnp.full((2, 5, 8, 8, 3), 7, jnp.uint8)
  void = preprocess.void_depth(depth)
  assert void.shape == depth.shape and void.dtype == depth.dtype
  assert not np.any(void)
