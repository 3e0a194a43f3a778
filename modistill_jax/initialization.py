"""A stage's start: the config it runs with, what it starts from, its initial weights.

The trainer enters this module once, through `prepare`, which returns a
`StageStart`: the effective config, the stage, its folder, whether it is
finished or resuming, and the finished stages it starts from (located before
anything is read or made); the start's `initial_variables` then makes the
weights for the stage's network.

Precedence, highest first: the stage's own latest checkpoint (a resume, which
`trainer.run_stage` handles with the data position) > the finished earlier
stages the stage table names (`Stage.init`) > another run's step 1
(`init.from_workdir`) > ImageNet weights (`init.imagenet`) > scratch. Loaded
streams go through `param_merge.merge`, which names every key that does not
fit; only the streams not loaded whole are initialised (stream by stream,
`StageNetwork.init_variables`), so a stage that starts from earlier stages
compiles no initialiser.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
import dataclasses
import functools
from typing import Any

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from modistill_jax import checkpointing
from modistill_jax import config_lib
from modistill_jax import modalities
from modistill_jax import param_merge
from modistill_jax import pretrained
from modistill_jax import runs
from modistill_jax import stages
from modistill_jax.models import StageNetwork

PyTree = Any
# The `config.input` keys an ImageNet checkpoint's metadata sets (`effective_config`).
IMAGENET_NORMALISATION_KEYS = tuple(
    f'{m}_{statistic}' for m in modalities.NAMES for statistic in ('mean', 'std')
)


def check_imagenet_layout(config: ml_collections.ConfigDict, metadata: Mapping[str, Any]) -> None:
  """The model must run the ImageNet weights in the stride layout they were trained in."""
  layout = metadata['stride_layout']
  if layout != config.model.stride_layout:
    raise ValueError(
        f'{config.init.imagenet} holds {layout!r}-layout weights; set '
        f'--config.model.stride_layout={layout} to run them as trained.'
    )


def effective_config(
    config: ml_collections.ConfigDict, stage_name: str
) -> ml_collections.ConfigDict:
  """A checked copy of `config` as the stage runs it (the caller's config is never changed).

  The stage name is set, and with ImageNet weights every modality gets the
  input normalisation recorded with the converted checkpoint: every stage of a
  run descends from the step-1 weights, so every stage and its evaluation use
  it. This copy is the stage's `config.json`. A config that fails
  `config_lib.check`, or asks for ImageNet weights in another stride layout,
  fails here, before any data is read or anything is compiled.
  """
  config_lib.check(config)
  effective = ml_collections.ConfigDict(config.to_dict())
  effective.stage = stage_name
  if config.init.imagenet:
    metadata = pretrained.read_metadata(config.init.imagenet)
    check_imagenet_layout(config, metadata)
    for key in IMAGENET_NORMALISATION_KEYS:
      effective.input[key] = tuple(metadata[key.rsplit('_', 1)[1]])
  return effective


def prerequisites(
    stage: stages.Stage,
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    config_file: str | None = None,
    overrides: tuple[str, ...] = (),
) -> dict[stages.InitSource, runs.StageDir]:
  """The finished stages the stage starts from, all located before anything is read or made.

  Raises:
    runs.StageNotFinishedError: one is missing; the message is the command that makes it.
  """
  if stage.init:
    return {
        src: runs.find_finished(workdir, src.from_stages, config_file, overrides)
        for src in stage.init
    }
  if config.init.from_workdir:
    return {
        stages.InitSource(s, (f'step1_{s}', 'step1'), s): runs.find_finished(
            config.init.from_workdir, (f'step1_{s}', 'step1')
        )
        for s in stage.streams
    }
  return {}


def previous_stage_variables(
    stage: stages.Stage, sources: Mapping[stages.InitSource, runs.StageDir]
) -> dict[str, dict[str, PyTree]]:
  """`{stream: {'params', 'batch_stats'}}` from the finished stages `prerequisites` found."""
  cache: dict[str, dict[str, Any]] = {}
  loaded = {}
  for src in stage.init:
    directory = sources[src]
    if directory.name not in cache:
      cache[directory.name] = checkpointing.read_best_state(directory.best_dir)
    loaded[src.stream] = checkpointing.stream_variables(cache[directory.name], src.from_stream)
    logging.info(
        '%s: stream %r <- %s stream %r', stage.name, src.stream, directory.path, src.from_stream
    )
  return loaded


def step1_variables(
    stage: stages.Stage,
    config: ml_collections.ConfigDict,
    sources: Mapping[stages.InitSource, runs.StageDir],
) -> tuple[dict[str, dict[str, PyTree]], tuple[str, ...], str]:
  """Step-1 initial weights: another run's step 1, ImageNet, or none (scratch).

  Returns `(loaded streams, fresh key patterns, description)`.
  """
  if config.init.from_workdir:
    loaded = {
        src.stream: checkpointing.stream_variables(
            checkpointing.read_best_state(directory.best_dir), src.from_stream
        )
        for src, directory in sources.items()
    }
    return loaded, (r'(.*/)?logits/.*',), f'step 1 of {config.init.from_workdir}'
  if config.init.imagenet:
    variables, _ = pretrained.load(config.init.imagenet)
    return (
        {s: variables for s in stage.streams},
        pretrained.FRESH_PATTERNS,
        f'ImageNet weights {config.init.imagenet}',
    )
  return {}, (), 'scratch'


def init_model_variables(
    model: StageNetwork, config: ml_collections.ConfigDict, streams: Sequence[str] | None = None
) -> dict[str, PyTree]:
  """Freshly initialised variables of the stage's streams, all or `streams` (shapes need one clip).

  The streams read 3-channel images whatever the modality (depth after its colour table).
  """
  size = config.input.image_size
  dummy = {
      m: jnp.zeros((1, config.input.num_frames, size, size, 3), model.input_dtype)
      for m in model.stage.inputs
  }
  return model.init_variables(jax.random.key(config.seed), dummy, streams)


def streams_to_initialise(
    stage: stages.Stage,
    loaded: Mapping[str, Mapping[str, PyTree]],
    fresh: Sequence[str],
    shapes: Mapping[str, PyTree],
) -> tuple[str, ...]:
  """The stage's streams whose initial values are needed: those not loaded, and those with a
  variable the `fresh` patterns keep from the initialisation (a new classifier, say)."""
  needed = []
  for stream in dict.fromkeys(stage.streams):
    keys = param_merge.flatten({c: shapes[c][stream] for c in ('params', 'batch_stats')})
    if stream not in loaded or any(param_merge.matches(k, fresh) for k in keys):
      needed.append(stream)
  return tuple(needed)


def initial_variables(
    config: ml_collections.ConfigDict,
    stage: stages.Stage,
    model: StageNetwork,
    sources: Mapping[stages.InitSource, runs.StageDir],
) -> tuple[dict[str, PyTree], str]:
  """The stage's starting variables: loaded streams, fresh init where nothing is loaded.

  A stream that is loaded whole is not initialised at all (its shapes come from
  tracing the initialisation, `jax.eval_shape`), so a stage that starts from
  earlier stages compiles no initialisation.
  """
  if stage.init:
    loaded, fresh, what = previous_stage_variables(stage, sources), (), 'previous stages'
  else:
    loaded, fresh, what = step1_variables(stage, config, sources)
  shapes = jax.eval_shape(functools.partial(init_model_variables, model, config))
  made = init_model_variables(model, config, streams_to_initialise(stage, loaded, fresh, shapes))
  variables = jax.tree.map(np.asarray, made)
  for stream, source in loaded.items():
    # A stream loaded whole is filled into zero-stride stand-ins of its shapes (no memory).
    target = {
        c: made[c][stream]
        if stream in made[c]
        else jax.tree.map(
            lambda s: np.broadcast_to(np.zeros((), s.dtype), s.shape), shapes[c][stream]
        )
        for c in ('params', 'batch_stats')
    }
    merged = param_merge.merge(target, source, fresh=fresh, what=f'{what} ({stream})')
    for c in ('params', 'batch_stats'):
      variables[c][stream] = merged[c]
  return variables, what


@dataclasses.dataclass(frozen=True)
class StageStart:
  """What a stage starts from, known before anything is read or made (`prepare`).

  Attributes:
    config: the effective config (`effective_config`): the stage's `config.json`.
    stage: the stage as this config defines it.
    directory: the stage's folder.
    finished: the stage has its results already (nothing to run).
    resuming: the stage has a latest checkpoint to go on from.
    prerequisites: the finished stages (or `init.from_workdir`'s step 1) its
      weights come from; empty where finished or resuming.
  """

  config: ml_collections.ConfigDict
  stage: stages.Stage
  directory: runs.StageDir
  finished: bool
  resuming: bool
  prerequisites: Mapping[stages.InitSource, runs.StageDir]

  def initial_variables(self, model: StageNetwork) -> tuple[dict[str, PyTree], str]:
    """The stage's starting variables (`initial_variables`), and whence."""
    return initial_variables(self.config, self.stage, model, self.prerequisites)


def prepare(
    config: ml_collections.ConfigDict,
    stage_name: str,
    workdir: str,
    *,
    config_file: str | None = None,
    overrides: tuple[str, ...] = (),
) -> StageStart:
  """The stage's start; fails before anything is created if the config or a prerequisite does.

  `config_file` and `overrides` make the hint for a missing prerequisite a
  command that runs as printed (`prerequisites`).
  """
  config = effective_config(config, stage_name)
  stage = stages.for_config(stage_name, config)
  directory = runs.stage_dir(workdir, stage_name)
  finished = directory.finished()
  resuming = (
      not finished
      and directory.latest_dir.exists()
      and any(p.name.isdigit() for p in directory.latest_dir.iterdir())
  )
  found = (
      {}
      if finished or resuming
      else prerequisites(stage, config, workdir, config_file=config_file, overrides=overrides)
  )
  return StageStart(config, stage, directory, finished, resuming, found)
