"""A finished stage loaded whole: its saved config, dataset, results and best state.

One floor above `runs` (the folder's names, what "finished" means) and
`checkpointing` (how a best state is read), so neither of them needs the
other's caller: `evaluate`, `predict`, `demo` and `claims` open a stage here.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import ml_collections

from modistill_jax import checkpointing
from modistill_jax import config_lib
from modistill_jax import runs


@dataclasses.dataclass
class FinishedStage:
  """A finished stage as it was trained: config, dataset, results and best state."""

  dir: runs.StageDir
  config: ml_collections.ConfigDict
  dataset: dict[str, Any]
  results: dict[str, Any]

  @property
  def name(self) -> str:
    return self.dir.name

  @property
  def class_names(self) -> tuple[str, ...]:
    return tuple(self.dataset['class_names'])

  def best_state(self) -> dict[str, Any]:
    """The best checkpoint's `{step, params, batch_stats, frozen}` (no optimizer state)."""
    return checkpointing.read_best_state(self.dir.best_dir)


def load(workdir: runs.PathLike, stage: str) -> FinishedStage:
  """A finished stage: its saved config, dataset info and results; its best state on demand.

  Raises:
    StageNotFinishedError: the stage has no results in `workdir`.
  """
  directory = runs.find_finished(workdir, (stage,))
  return FinishedStage(
      dir=directory,
      config=config_lib.with_defaults(runs.read_json(directory.config_file)),
      dataset=runs.read_json(directory.dataset_file),
      results=runs.read_json(directory.results_file),
  )
