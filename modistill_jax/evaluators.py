"""The evaluators of a stage: what it evaluates, when, and what each writes into results.json.

The trainer builds them once per stage from its config and asks them after
each step, as kauldron's loop asks its evaluators (`maybe_eval`) and big_vision
builds its evaluators once from the config. They share one `EvalProgram`: the
eval step jitted once, which runs every split and every depth condition
(Table 2's levels are its inputs, `steps.DepthCondition`).

* `Validation`: every `eval_every_epochs` epochs and after the last step.
  Keeps the best state as the best checkpoint; writes results' `best_step`,
  `selected_on` and `validation_accuracy`.
* `Test`: once, after the loop, on the best state. Writes results'
  `<eval.split>` (`accuracy`, `num_examples`, `complete`) and
  `predictions_<split>.npz`.
* `NoiseSweep`: on demand (`evaluate --sweep`, `demo`, `claims`). Its rows are
  `noise_sweep.json`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import functools
import io
import math
from typing import Any

from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from modistill_jax import checkpointing
from modistill_jax import iterators
from modistill_jax import runs
from modistill_jax import sharding
from modistill_jax import stages
from modistill_jax import steps
from modistill_jax.data import pipeline
from modistill_jax.models import StageNetwork

# MARK: one split, exactly


def make_eval_fn(model: StageNetwork, config: ml_collections.ConfigDict, mesh):
  """The jitted `steps.eval_step`; its predictions come back replicated."""
  return jax.jit(
      functools.partial(steps.eval_step, model=model, config=config),
      out_shardings=sharding.replicated(mesh),
  )


def evaluate_split(
    state: steps.TrainState,
    source: pipeline.Source,
    *,
    eval_fn,
    mesh,
    config: ml_collections.ConfigDict,
    modalities: Sequence[str],
    depth_condition: steps.DepthCondition | None = None,
) -> dict[str, Any]:
  """Exact accuracy of every stream and of the fused model on a whole split.

  `modalities`: the clips the stage reads (`Stage.inputs`), the only ones decoded.
  `depth_condition`: the depth corruption, as `eval_fn`'s input (else `config.eval`'s).
  """
  condition = () if depth_condition is None else (depth_condition,)
  # Evaluation never reads the optimizer state; without it, the training state
  # (validation) and a best state (which has none) are one program, not two.
  state = state.replace(opt_state=None)
  batches = iterators.eval_iterator(config, source.records, modalities)
  key = jax.random.key(config.eval.noise_seed)
  outputs = []
  truncated = False
  for i, batch in enumerate(batches):
    if 0 < config.max_eval_batches <= i:
      truncated = True
      break
    outputs.append(
        sharding.fetch(
            eval_fn(state, sharding.to_global(batch, mesh), jax.random.fold_in(key, i), *condition)
        )
    )
  stacked = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
  mask = stacked.pop('mask').astype(bool)
  kept = {k: v[mask] for k, v in stacked.items()}
  labels = kept['label']
  accuracy = {
      k.split('/', 1)[1]: float(np.mean(v == labels))
      for k, v in kept.items()
      if k.startswith('pred/')
  }
  return {
      'accuracy': accuracy,
      'num_examples': int(mask.sum()),
      'complete': not truncated and int(mask.sum()) == batches.num_examples,
      'predictions': kept,
  }


class EvalProgram:
  """A stage's evaluation program, jitted once and run on any split, state and depth condition."""

  def __init__(self, model: StageNetwork, config: ml_collections.ConfigDict, mesh):
    self.config = config
    self.mesh = mesh
    self.modalities = model.stage.inputs
    self.eval_fn = make_eval_fn(model, config, mesh)

  def evaluate(
      self,
      state: steps.TrainState,
      source: pipeline.Source,
      depth_condition: steps.DepthCondition | None = None,
  ) -> dict[str, Any]:
    """`evaluate_split` of `state` on `source` with this program."""
    return evaluate_split(
        state,
        source,
        eval_fn=self.eval_fn,
        mesh=self.mesh,
        config=self.config,
        modalities=self.modalities,
        depth_condition=depth_condition,
    )


def save_predictions(path: epath.Path, predictions: Mapping[str, np.ndarray]) -> None:
  """Writes the per-clip predictions (`np.savez`) whole or not at all."""
  buffer = io.BytesIO()
  np.savez(buffer, **predictions)
  runs.write_whole(path, buffer.getvalue())


def best_train_state(saved: Mapping[str, Any]) -> steps.TrainState:
  """A best checkpoint's `{step, params, batch_stats, frozen}` as a state to evaluate.

  It has no optimizer state; `frozen` is `{}` where the stage has no frozen teacher.
  """
  return checkpointing.dict_to_state(
      {**saved, 'opt_state': None, 'frozen': saved.get('frozen') or {}}
  )


# MARK: validation, and the best state selected on it


def selection_groups(stage: stages.Stage) -> dict[str, tuple[str, ...]]:
  """`{accuracy name: streams selected on it}`: which validation accuracy picks which streams.

  A stage is selected on the prediction it reports (fused, or its one stream).
  The joint step 1 trains independent streams, and each is selected on its own
  accuracy, as the reference does, so step 2 starts from each stream's best.
  """
  if stage.selects_each_stream:
    return {s: (s,) for s in stage.trainable}
  name = 'fused' if len(stage.fused) > 1 else stage.fused[0]
  return {name: stage.trainable}


def improved(value: float, best: float | None, ties: str) -> bool:
  """Whether a validation accuracy replaces the best one (`ties`: 'later' or 'earlier')."""
  return best is None or value > best or (ties == 'later' and value == best)


_COLLECTIONS = ('params', 'batch_stats')


class Validation:
  """Validation on its cadence, and the best-on-validation state kept as the best checkpoint.

  The selection record (best accuracy and step of each `selection_groups`
  group) lives in the best checkpoint itself, so a resumed stage goes on
  selecting where it stopped. With several groups (the joint step 1) each
  group's best streams are kept on the devices, as copies that survive the
  train step's buffer donation, and the best checkpoint combines them. A stage
  without a validation split selects its final state.
  """

  def __init__(
      self,
      program: EvalProgram,
      source: pipeline.Source | None,
      stage: stages.Stage,
      config: ml_collections.ConfigDict,
      *,
      checkpoints: checkpointing.StageCheckpoints,
      abstract_best: dict[str, Any],
      steps_per_epoch: int,
      total_steps: int,
      writer,
      progress,
  ):
    self.program, self.source, self.stage, self.config = program, source, stage, config
    self.checkpoints, self.abstract_best = checkpoints, abstract_best
    self.steps_per_epoch, self.total_steps = steps_per_epoch, total_steps
    self.writer, self.progress = writer, progress
    self.groups = selection_groups(stage)
    self.selection = checkpoints.best_selection() or {'metrics': {}, 'steps': {}}
    self.best_streams = {}
    if len(self.groups) > 1 and self.selection['steps']:
      saved = checkpoints.restore_best(abstract_best)
      self.best_streams = {s: {c: saved[c][s] for c in _COLLECTIONS} for s in stage.trainable}

  def is_due(self, step: int) -> bool:
    """Every `eval_every_epochs` epochs and after the last step (a run shorter than an epoch
    still has a best state), where there is a validation split."""
    epoch_end = (
        step % self.steps_per_epoch == 0
        and (step // self.steps_per_epoch) % self.config.eval_every_epochs == 0
    )
    return (epoch_end or step == self.total_steps) and self.source is not None

  @property
  def best_accuracy(self) -> float | None:
    """The best validation accuracy so far of a stage selected on one prediction."""
    if len(self.groups) > 1:
      return None
    return self.selection['metrics'].get(next(iter(self.groups)))

  def maybe_evaluate(self, step: int, state: steps.TrainState) -> None:
    """Validates `state` if due, and keeps it (or the streams that improved) as the best."""
    if not self.is_due(step):
      return
    accuracy = self.program.evaluate(state, self.source)['accuracy']
    self.writer.write(step, 'validation', {f'accuracy/{k}': v for k, v in accuracy.items()})
    best, ties = self.selection['metrics'], self.config.selection_ties
    better = [g for g in self.groups if improved(accuracy[g], best.get(g), ties)]
    self.progress.message(
        f'epoch {step // self.steps_per_epoch}: validation accuracy '
        + ', '.join(
            f'{g} {accuracy[g]:.4f}' + (' (best)' if g in better else '') for g in self.groups
        )
    )
    if not better:
      return
    for g in better:
      self.selection['metrics'][g] = accuracy[g]
      self.selection['steps'][g] = step
      if len(self.groups) > 1:
        self.best_streams.update(
            {
                s: {c: jax.tree.map(jnp.copy, getattr(state, c)[s]) for c in _COLLECTIONS}
                for s in self.groups[g]
            }
        )
    self.checkpoints.save_best(step, self._best_of(state), self.selection)

  def _best_of(self, state: steps.TrainState) -> dict[str, Any]:
    best = checkpointing.best_dict(state)
    if len(self.groups) > 1:
      for c in _COLLECTIONS:
        best[c] = {s: self.best_streams[s][c] for s in self.stage.trainable}
    return best

  def best_state(self, final: steps.TrainState) -> steps.TrainState:
    """The selected state, read back from the best checkpoint (`final` where nothing validated)."""
    step = int(final.step)
    if self.source is None and self.selection['steps'].get(next(iter(self.groups))) != step:
      self.selection = {'metrics': {}, 'steps': {g: step for g in self.groups}}
      self.checkpoints.save_best(step, checkpointing.best_dict(final), self.selection)
      self.checkpoints.wait()
    return best_train_state(self.checkpoints.restore_best(self.abstract_best))

  def record(self) -> dict[str, Any]:
    """results.json's `best_step`, `selected_on` and `validation_accuracy`."""
    metrics, chosen = self.selection['metrics'], self.selection['steps']
    return {
        'best_step': max(chosen.values()),
        'selected_on': {
            g: {'step': chosen[g], 'validation_accuracy': metrics.get(g)} for g in self.groups
        },
        'validation_accuracy': (
            metrics.get(next(iter(self.groups))) if len(self.groups) == 1 else dict(metrics) or None
        ),
    }


# MARK: the test pass


class Test:
  """The best state on `config.eval.split`, once after the loop: results, predictions, a metric."""

  def __init__(
      self,
      program: EvalProgram,
      source: pipeline.Source | None,
      split: str,
      *,
      directory: runs.StageDir,
      writer,
      progress,
  ):
    self.program, self.source, self.split = program, source, split
    self.directory, self.writer, self.progress = directory, writer, progress

  def evaluate(self, state: steps.TrainState, step: int) -> dict[str, Any]:
    """results.json's `<split>` entry (none where the dataset has no such split)."""
    if self.source is None:
      return {}
    result = self.program.evaluate(state, self.source)
    self.writer.write(step, self.split, {f'accuracy/{k}': v for k, v in result['accuracy'].items()})
    save_predictions(self.directory.predictions_file(self.split), result['predictions'])
    self.progress.message(
        f'{self.split} accuracy: '
        + ', '.join(f'{k} {v:.4f}' for k, v in result['accuracy'].items())
    )
    return {self.split: {k: result[k] for k in ('accuracy', 'num_examples', 'complete')}}


# MARK: Table 2's noise sweep


def sweep_settings(config: ml_collections.ConfigDict) -> list[tuple[str, float, bool]]:
  """Table 2's columns: (label, sigma, void) for clean depth, each noise variance, void depth."""
  settings = [('no noise', 0.0, False)]
  settings += [(f'{v:g}', math.sqrt(v), False) for v in config.eval.noise_variances]
  settings.append(('void', 0.0, True))
  return settings


class NoiseSweep:
  """Table 2: accuracy with clean depth, each of `config.eval.noise_variances`, and void depth.

  One program serves every column (the condition is its input), so the sweep
  compiles once, and reads the split's source once.
  """

  def __init__(self, program: EvalProgram, source: pipeline.Source):
    self.program, self.source = program, source

  def rows(self, state: steps.TrainState) -> list[dict[str, Any]]:
    """`noise_sweep.json`'s rows: `sigma2` (the column's label), `sigma`, `void`, the results."""
    rows = []
    for label, sigma, void in sweep_settings(self.program.config):
      result = self.program.evaluate(state, self.source, steps.DepthCondition.of(sigma, void))
      result.pop('predictions')
      rows.append({'sigma2': label, 'sigma': sigma, 'void': void, **result})
    return rows
