"""Frame-index sampling: exact uniform indices, ordered random draws."""

import numpy as np
import pytest

from modistill_jax.data import sampling


@pytest.mark.parametrize(
    'num_available, expected',
    [
        (10, [0, 2, 4, 7, 9]),  # linspace 0, 2.25, 4.5, 6.75, 9 (ties to even)
        (5, [0, 1, 2, 3, 4]),
        (100, [0, 25, 50, 74, 99]),  # 24.75, 49.5, 74.25
        (3, [0, 0, 1, 2, 2]),  # 0, .5, 1, 1.5, 2
        (1, [0, 0, 0, 0, 0]),
    ],
)
def test_uniform_indices_exact(num_available, expected):
  indices = sampling.uniform_indices(num_available, 5)
  assert indices.dtype == np.int32
  np.testing.assert_array_equal(indices, expected)


@pytest.mark.parametrize('num_available', [5, 6, 17, 300])
def test_random_indices_sorted_in_range_distinct(num_available):
  rng = np.random.default_rng(0)
  draws = [sampling.random_indices(num_available, 5, rng) for _ in range(200)]
  for indices in draws:
    assert indices.shape == (5,)
    assert np.all(np.diff(indices) > 0), indices  # sorted and distinct
    assert indices.min() >= 0 and indices.max() < num_available
  # Random, not a fixed pattern: more than one distinct draw when there is a choice.
  assert len({tuple(d) for d in draws}) > (1 if num_available > 5 else 0)


@pytest.mark.parametrize('num_available', [1, 2, 3, 4])
def test_random_indices_short_clip_uses_every_frame(num_available):
  rng = np.random.default_rng(1)
  for _ in range(50):
    indices = sampling.random_indices(num_available, 5, rng)
    assert np.all(np.diff(indices) >= 0)
    counts = np.bincount(indices, minlength=num_available)
    assert counts.min() >= 5 // num_available and counts.max() <= -(-5 // num_available)


def test_train_indices_mixes_uniform_and_random():
  rng = np.random.default_rng(2)
  uniform = tuple(sampling.uniform_indices(40, 5))
  draws = [tuple(sampling.train_indices(40, 5, rng, 0.5)) for _ in range(400)]
  share = sum(d == uniform for d in draws) / len(draws)
  assert 0.4 < share < 0.6
  assert all(
      d == uniform for d in (tuple(sampling.train_indices(40, 5, rng, 1.0)) for _ in range(20))
  )
  assert not any(
      d == uniform for d in (tuple(sampling.train_indices(40, 5, rng, 0.0)) for _ in range(20))
  )


def test_rejects_empty_clip():
  with pytest.raises(ValueError, match='0 available'):
    sampling.uniform_indices(0, 5)
