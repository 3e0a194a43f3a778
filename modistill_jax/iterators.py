"""A stage's batch iterators: `config.input` unpacked into the pipeline's arguments once.

Training and every evaluation (validation, test, the noise sweep, the
`evaluate` command) decode clips the same way; only what differs between them
(batch size, shuffling, augmentation) is added per iterator here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import ml_collections

from modistill_jax.data import pipeline


def decoding(config: ml_collections.ConfigDict, modalities: Sequence[str]) -> dict[str, Any]:
  """The pipeline arguments every iterator of a stage shares: how a clip is decoded."""
  return {
      'num_frames': config.input.num_frames,
      'image_size': (config.input.image_size,) * 2,
      'worker_count': config.input.worker_count,
      'modalities': modalities,
      'reduced_decoding': config.input.reduced_decoding,
  }


def train_iterator(
    config: ml_collections.ConfigDict, records: Sequence[dict], modalities: Sequence[str]
):
  """Endless shuffled training batches, augmented as `config.input` says."""
  return pipeline.train_iterator(
      records,
      global_batch_size=config.batch_size,
      seed=config.seed,
      uniform_prob=config.input.uniform_prob,
      flip=config.input.flip,
      **decoding(config, modalities),
  )


def eval_iterator(
    config: ml_collections.ConfigDict, records: Sequence[dict], modalities: Sequence[str]
):
  """Every record once, in batches of `config.eval_batch_size` (padded, masked)."""
  return pipeline.eval_iterator(
      records, global_batch_size=config.eval_batch_size, **decoding(config, modalities)
  )
