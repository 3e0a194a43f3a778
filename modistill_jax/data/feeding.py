"""Feeding the trainer: a config's splits, and batches on the devices ahead of the step.

The pipeline (`pipeline.py`) makes per-host uint8 batches; this module is what
the trainer and evaluation add on top: the dataset is built on first use when
the config allows it, the batches are put on the mesh a few steps ahead of the
step, and the data position saved with a checkpoint is the one the *step* has
reached, not the prefetching iterator's.
"""

from __future__ import annotations

from collections.abc import Iterator
import importlib
import json
import sys
import time
from typing import Any

from absl import logging
from etils import epath
import jax
import ml_collections
import numpy as np

from modistill_jax import runs
from modistill_jax import sharding
from modistill_jax import stages
from modistill_jax.data import pipeline
from modistill_jax.data import records

# How often a command waiting for another one's build of the same dataset looks again.
BUILD_WAIT_SECONDS = 2.0


def ensure_dataset(config: ml_collections.ConfigDict) -> str | None:
  """Builds a download-free dataset (the synthetic one) on first use; returns where, if it did.

  The builder is found through `config.builder_module`, the module (named in
  the config, imported here by name) that registers it with TFDS: the builders
  sit above the library and import it, so the library never imports them.
  The build holds a lock beside the version folder (`runs.JobLock`), so commands
  started together on one machine or on hosts sharing the data dir build it once:
  the others wait and then read what was built.

  Raises:
    ValueError: `builder_module` is unset or cannot be imported, or it does not
      register `config.dataset`.
  """
  if not config.build_if_missing:
    return None
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  name = config.dataset + (f'/{config.builder_config}' if config.builder_config else '')
  _import_builder(config)
  try:
    builder = tfds.builder(name, data_dir=config.data_dir or None, file_format=records.FILE_FORMAT)
  except tfds.core.DatasetNotFoundError as e:
    raise ValueError(
        f'config.builder_module={config.builder_module!r} does not register the dataset '
        f'{name!r} (config.dataset, config.builder_config) with TFDS: {e}'
    ) from None
  # TFDS logs a warning when asked about a dataset folder that does not exist yet.
  if builder.data_path.exists() and builder.is_prepared():
    return None
  if jax.process_count() > 1:
    raise RuntimeError(f'Build {name} once before a multi-host run (tfds build).')
  version_dir = epath.Path(builder.data_dir)
  with runs.JobLock(version_dir.parent / f'.{version_dir.name}.building.json') as lock:
    waiting = False
    while True:
      try:
        lock.acquire()
        break
      except runs.LockHeldError as e:
        if not waiting:
          # stderr: `cli.build_dataset` hides TFDS's stdout while building.
          print(f'Waiting for another command building {name}: {e}', file=sys.stderr, flush=True)
          waiting = True
        time.sleep(BUILD_WAIT_SECONDS)
    if builder.data_path.exists() and builder.is_prepared():  # built by the one waited for
      return None
    logging.info('Building %s in %s', name, builder.data_dir)
    builder.download_and_prepare()
  return str(builder.data_dir)


def _import_builder(config: ml_collections.ConfigDict) -> None:
  """Imports `config.builder_module`, which registers `config.dataset` with TFDS."""
  if not config.builder_module:
    raise ValueError(
        f'config.build_if_missing is set but config.builder_module is empty: name the module '
        f'that registers the dataset {config.dataset!r} with TFDS (e.g. '
        "'data_builders.synthetic_rgbd')."
    )
  try:
    importlib.import_module(config.builder_module)
  except ImportError as e:
    raise ValueError(
        f'config.builder_module={config.builder_module!r} cannot be imported ({e}); it names '
        f'the module that registers the dataset {config.dataset!r} with TFDS.'
    ) from e


def load_sources(config: ml_collections.ConfigDict) -> dict[str, pipeline.Source | None]:
  """The config's train, validation and test splits (None where the protocol has none).

  Raises:
    ValueError: the dataset does not store one of `config.modalities`.
  """
  ensure_dataset(config)
  sources = {
      split: pipeline.load_source(
          config.dataset,
          config.protocol,
          split,
          data_dir=config.data_dir or None,
          builder_config=config.builder_config or None,
      )
      for split in ('train', 'validation', 'test')
  }
  check_stored_modalities(config, sources)
  return sources


def check_stored_modalities(
    config: ml_collections.ConfigDict, sources: dict[str, pipeline.Source | None]
) -> None:
  """Every one of `config.modalities` is in the dataset's clips (the first clip of a split)."""
  for source in sources.values():
    if source is None or not len(source.records):
      continue
    stored = records.stored_modalities(source.records[0])
    missing = [m for m in stages.names_tuple(config.modalities) if m not in stored]
    if missing:
      name = config.dataset + (f'/{config.builder_config}' if config.builder_config else '')
      raise ValueError(
          f'config.modalities {config.modalities!r}: {source.name} ({name}) stores no '
          f'{", ".join(missing)} frames, only {stored}; build a config that stores them '
          '(docs/modalities.md#what-each-dataset-can-store) and set --config.builder_config.'
      )


def input_shape(config: ml_collections.ConfigDict, batch: int, modality: str) -> tuple[int, ...]:
  """The shape of `batch` clips of `modality` as the pipeline yields them (depth: 1 channel)."""
  size = config.input.image_size
  return (batch, config.input.num_frames, *pipeline.frame_shape(modality, (size, size)))


class IteratorPosition:
  """The data position the *step* has consumed, checkpointable by Grain's handler.

  Batches are prefetched onto devices ahead of the step, so the Grain iterator
  itself is ahead of what training has seen; saving it would skip batches on
  resume. Each batch travels with the iterator state right after it, and this
  object saves the state of the last batch the step consumed.
  """

  def __init__(self, iterator):
    self._iterator = iterator
    self.state = iterator.get_state()

  def get_state(self) -> bytes:
    return json.dumps(self.state).encode()

  def set_state(self, state: bytes) -> None:
    self.state = json.loads(state)
    self._iterator.set_state(self.state)

  def start_prefetch(self) -> None:
    """Grain's restore hook; the wrapped iterator starts on its first `next`."""


def _with_positions(iterator) -> Iterator[tuple[dict[str, np.ndarray], Any]]:
  while True:
    batch = next(iterator)
    yield batch, iterator.get_state()


def prefetched(iterator, mesh, size: int) -> Iterator[tuple[dict[str, jax.Array], Any]]:
  """(global batch, iterator state after it), `size` batches ahead on devices."""
  pairs = _with_positions(iterator)
  batches = ((sharding.to_global(b, mesh), s) for b, s in pairs)
  queue = [next(batches) for _ in range(max(size, 1))]
  while True:
    yield queue.pop(0)
    queue.append(next(batches))
