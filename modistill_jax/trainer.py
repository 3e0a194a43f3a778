"""The staged trainer: one linear `run_stage`, and `train_and_evaluate` over stages.

`run_stage` reads top to bottom: finished already? -> prerequisites -> mesh ->
data -> the stage folder (lock, config saved or compared) -> model -> initial
weights (resume > previous stages > from_workdir > ImageNet > scratch) ->
jitted steps -> loop (log, validate every epoch, keep the best, checkpoint,
stop on SIGTERM or divergence) -> test evaluation of the best state -> results.

What a stage writes, and where, is `runs.StageDir`'s to say; the last file
written is the results, which makes the stage finished."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
import functools
import io
import json
import os
import signal
import time
from typing import Any

from absl import logging
from etils import epath
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from modistill_jax import checkpointing
from modistill_jax import config_lib
from modistill_jax import metrics as metrics_lib
from modistill_jax import optim
from modistill_jax import param_merge
from modistill_jax import pretrained
from modistill_jax import runs
from modistill_jax import sharding
from modistill_jax import stages
from modistill_jax import steps
from modistill_jax.data import pipeline

PyTree = Any


# MARK: data


def ensure_dataset(config: ml_collections.ConfigDict) -> str | None:
  """Builds a download-free dataset (the synthetic one) on first use; returns where, if it did."""
  if not config.build_if_missing:
    return None
  import data_builders  # pylint: disable=g-import-not-at-top,unused-import  (registers builders)
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  from modistill_jax.data import records  # pylint: disable=g-import-not-at-top
  name = config.dataset + (f'/{config.builder_config}' if config.builder_config else '')
  builder = tfds.builder(name, data_dir=config.data_dir or None, file_format=records.FILE_FORMAT)
  # TFDS logs a warning when asked about a dataset folder that does not exist yet.
  if builder.data_path.exists() and builder.is_prepared():
    return None
  if jax.process_count() > 1:
    raise RuntimeError(f'Build {name} once before a multi-host run (tfds build).')
  logging.info('Building %s in %s', name, builder.data_dir)
  builder.download_and_prepare()
  return str(builder.data_dir)


def load_sources(config: ml_collections.ConfigDict) -> dict[str, pipeline.Source | None]:
  ensure_dataset(config)
  return {split: pipeline.load_source(config.dataset, config.protocol, split,
                                      data_dir=config.data_dir or None,
                                      builder_config=config.builder_config or None)
          for split in ('train', 'validation', 'test')}


def input_shape(config: ml_collections.ConfigDict, batch: int) -> tuple[int, ...]:
  size = config.input.image_size
  return (batch, config.input.num_frames, size, size, 3)


# MARK: initial weights


def previous_stage_variables(stage: stages.Stage, sources: Mapping[stages.InitSource, runs.StageDir]
                             ) -> dict[str, dict[str, PyTree]]:
  """`{stream: {'params', 'batch_stats'}}` from the finished stages `prerequisites` found."""
  cache: dict[str, dict[str, Any]] = {}
  loaded = {}
  for src in stage.init:
    directory = sources[src]
    if directory.name not in cache:
      cache[directory.name] = checkpointing.read_best_state(directory.best_dir)
    loaded[src.stream] = checkpointing.stream_variables(cache[directory.name], src.from_stream)
    logging.info('%s: stream %r <- %s stream %r', stage.name, src.stream, directory.path,
                 src.from_stream)
  return loaded


def prerequisites(stage: stages.Stage, config: ml_collections.ConfigDict, workdir: str, *,
                  config_file: str | None = None, overrides: tuple[str, ...] = ()
                  ) -> dict[stages.InitSource, runs.StageDir]:
  """The finished stages the stage starts from, all located before anything is read or made.

  Raises:
    runs.StageNotFinishedError: one is missing; the message is the command that makes it.
  """
  if stage.init:
    return {src: runs.find_finished(workdir, src.from_stages, config_file, overrides)
            for src in stage.init}
  if config.init.from_workdir:
    return {stages.InitSource(s, (f'step1_{s}', 'step1'), s):
            runs.find_finished(config.init.from_workdir, (f'step1_{s}', 'step1'))
            for s in stage.streams}
  return {}


def _read_imagenet_metadata(config: ml_collections.ConfigDict) -> dict[str, Any]:
  return json.loads((epath.Path(config.init.imagenet) / pretrained.METADATA_FILE).read_text())


def check_imagenet_layout(config: ml_collections.ConfigDict) -> None:
  """The model must run the ImageNet weights in the stride layout they were trained in.

  `run_stage` calls this first, so a mismatch fails before any data is read or
  anything is compiled.
  """
  if not config.init.imagenet:
    return
  layout = _read_imagenet_metadata(config)['stride_layout']
  if layout != config.model.stride_layout:
    raise ValueError(
        f'{config.init.imagenet} holds {layout!r}-layout weights; set '
        f'--config.model.stride_layout={layout} to run them as trained.')


def step1_variables(stage: stages.Stage, config: ml_collections.ConfigDict,
                    sources: Mapping[stages.InitSource, runs.StageDir]
                    ) -> tuple[dict[str, dict[str, PyTree]], tuple[str, ...], str]:
  """Step-1 initial weights: another run's step 1, ImageNet, or none (scratch).

  Returns `(loaded streams, fresh key patterns, description)`.
  """
  if config.init.from_workdir:
    loaded = {src.stream: checkpointing.stream_variables(
        checkpointing.read_best_state(directory.best_dir), src.from_stream)
              for src, directory in sources.items()}
    return loaded, (r'(.*/)?logits/.*',), f'step 1 of {config.init.from_workdir}'
  if config.init.imagenet:
    variables, _ = pretrained.load(config.init.imagenet)
    return ({s: variables for s in stage.streams}, pretrained.FRESH_PATTERNS,
            f'ImageNet weights {config.init.imagenet}')
  return {}, (), 'scratch'


def effective_config(config: ml_collections.ConfigDict, stage_name: str
                     ) -> ml_collections.ConfigDict:
  """A copy of `config` as the stage runs it (the caller's config is never changed).

  The stage name is set, and with ImageNet weights both modalities get the
  input normalisation recorded with the converted checkpoint: every stage of a
  run descends from the step-1 weights, so every stage and its evaluation use
  it. This copy is the stage's `config.json`.
  """
  effective = ml_collections.ConfigDict(config.to_dict())
  effective.stage = stage_name
  if config.init.imagenet:
    meta = _read_imagenet_metadata(config)
    for m in ('rgb', 'depth'):
      effective.input[f'{m}_mean'] = tuple(meta['mean'])
      effective.input[f'{m}_std'] = tuple(meta['std'])
  return effective


def initial_variables(config: ml_collections.ConfigDict, stage: stages.Stage,
                      init_variables: Mapping[str, PyTree],
                      sources: Mapping[stages.InitSource, runs.StageDir]
                      ) -> tuple[dict[str, PyTree], str]:
  """The stage's starting variables: fresh init overwritten by loaded streams."""
  if stage.init:
    loaded, fresh, what = previous_stage_variables(stage, sources), (), 'previous stages'
  else:
    loaded, fresh, what = step1_variables(stage, config, sources)
  variables = jax.tree.map(np.asarray, dict(init_variables))
  for stream, source in loaded.items():
    target = {c: variables[c][stream] for c in ('params', 'batch_stats')}
    merged = param_merge.merge(target, source, fresh=fresh, what=f'{what} ({stream})')
    for c in ('params', 'batch_stats'):
      variables[c][stream] = merged[c]
  return variables, what


def create_train_state(variables: Mapping[str, PyTree], stage: stages.Stage,
                       tx) -> steps.TrainState:
  params = {s: variables['params'][s] for s in stage.trainable}
  frozen = ({c: {s: variables[c][s] for s in stage.frozen} for c in ('params', 'batch_stats')}
            if stage.frozen else {})
  return steps.TrainState(
      step=jnp.zeros((), jnp.int32), params=params,
      batch_stats={s: variables['batch_stats'][s] for s in stage.trainable},
      opt_state=tx.init(params), frozen=frozen)


def init_model_variables(model: steps.StageModel,
                         config: ml_collections.ConfigDict) -> dict[str, PyTree]:
  """Freshly initialised variables of every stream of the stage (shapes need one clip)."""
  dummy = {m: jnp.zeros(input_shape(config, 1), model.dtype) for m in model.stage.inputs}
  return jax.jit(model.init)(jax.random.key(config.seed), dummy)


def make_state_fn(stage: stages.Stage, tx, mesh):
  """Variables -> `TrainState` replicated over the mesh, jitted."""
  return jax.jit(functools.partial(create_train_state, stage=stage, tx=tx),
                 out_shardings=sharding.replicated(mesh))


def make_train_fn(model: steps.StageModel, config: ml_collections.ConfigDict, tx,
                  schedule, mesh):
  """The jitted data-parallel train step; the trainer and `benchmark` run this one.

  The state is donated (updated in place, no second copy of params and optimizer
  state), replicated over the mesh; the batch is sharded over its first axis.
  """
  replicated = sharding.replicated(mesh)
  return jax.jit(
      functools.partial(steps.train_step, model=model, config=config, tx=tx, schedule=schedule),
      in_shardings=(replicated, sharding.data_sharded(mesh)),
      out_shardings=(replicated, replicated), donate_argnums=(0,))


# MARK: evaluation


def make_eval_fn(model: steps.StageModel, config: ml_collections.ConfigDict, mesh):
  return jax.jit(functools.partial(steps.eval_step, model=model, config=config),
                 out_shardings=sharding.replicated(mesh))


def evaluate(state: steps.TrainState, source: pipeline.Source, *, eval_fn, mesh,
             config: ml_collections.ConfigDict, modalities: Sequence[str]) -> dict[str, Any]:
  """Exact accuracy of every stream and of the fused model on a whole split.

  `modalities`: the clips the stage reads (`Stage.inputs`), the only ones decoded.
  """
  batches = pipeline.eval_iterator(
      source.records, global_batch_size=config.eval_batch_size,
      num_frames=config.input.num_frames, image_size=(config.input.image_size,) * 2,
      worker_count=config.input.worker_count, modalities=modalities)
  key = jax.random.key(config.eval.noise_seed)
  outputs = []
  truncated = False
  for i, batch in enumerate(batches):
    if 0 < config.max_eval_batches <= i:
      truncated = True
      break
    outputs.append(sharding.fetch(eval_fn(state, sharding.to_global(batch, mesh),
                                          jax.random.fold_in(key, i))))
  stacked = {k: np.concatenate([o[k] for o in outputs]) for k in outputs[0]}
  mask = stacked.pop('mask').astype(bool)
  kept = {k: v[mask] for k, v in stacked.items()}
  labels = kept['label']
  accuracy = {k.split('/', 1)[1]: float(np.mean(v == labels))
              for k, v in kept.items() if k.startswith('pred/')}
  return {'accuracy': accuracy, 'num_examples': int(mask.sum()),
          'complete': not truncated and int(mask.sum()) == batches.num_examples,
          'predictions': kept}


def selection_groups(stage: stages.Stage) -> dict[str, tuple[str, ...]]:
  """`{accuracy name: streams selected on it}`: which validation accuracy picks which streams.

  A stage is selected on the prediction it reports (fused, or its one stream).
  The joint step 1 trains independent streams, and each is selected on its own
  accuracy, as the reference does, so step 2 starts from each stream's best.
  """
  if stage.loss == 'xent_each' and len(stage.trainable) > 1:
    return {s: (s,) for s in stage.trainable}
  name = 'fused' if len(stage.fused) > 1 else stage.fused[0]
  return {name: stage.trainable}


def improved(value: float, best: float | None, ties: str) -> bool:
  """Whether a validation accuracy replaces the best one (`ties`: 'later' or 'earlier')."""
  return best is None or value > best or (ties == 'later' and value == best)


# MARK: the stage


class _Preemption:
  """Turns SIGTERM into a flag the loop checks between steps.

  A second SIGTERM (or one while the job is stuck outside the loop) is not
  swallowed: the default action ends the process.
  """

  def __init__(self):
    self.requested = False
    self._previous = signal.signal(signal.SIGTERM, self._handle)

  def _handle(self, signum, frame):
    del frame
    if self.requested:
      signal.signal(signal.SIGTERM, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
    self.requested = True

  def restore(self):
    signal.signal(signal.SIGTERM, self._previous)

  def agreed(self) -> bool:
    """All hosts stop at the same step if any of them was asked to."""
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    flags = multihost_utils.process_allgather(np.array([self.requested]))
    return bool(np.any(flags))


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


def _prefetched(iterator, mesh, size: int):
  """(global batch, iterator state after it), `size` batches ahead on devices."""
  pairs = _with_positions(iterator)
  batches = ((sharding.to_global(b, mesh), s) for b, s in pairs)
  queue = [next(batches) for _ in range(max(size, 1))]
  while True:
    yield queue.pop(0)
    queue.append(next(batches))



class ConfigMismatchError(ValueError):
  """A stopped stage rerun with settings other than those that trained it."""


def check_resume_config(directory: runs.StageDir, config: ml_collections.ConfigDict) -> None:
  """A resumed stage must continue with the config that trained its first steps.

  Only `config_lib.RESUMABLE_KEYS` (logging and checkpoint cadence, worker
  counts, where the data is) may change; anything else would silently mix two
  configurations in one run.
  """
  saved = config_lib.with_defaults(runs.read_json(directory.config_file))
  diff = config_lib.differences(saved, config, ignore=config_lib.RESUMABLE_KEYS)
  if diff:
    raise ConfigMismatchError(
        f'{directory.path} was trained with other settings than this command gives:\n'
        f'{config_lib.format_differences(diff)}\n'
        'Either resume with the run\'s own values (add '
        f'{config_lib.as_flags({k: a for k, (a, _) in diff.items()})}), or train this stage '
        f'afresh in another --workdir (or after removing {directory.path}).')


def save_predictions(path: epath.Path, predictions: Mapping[str, np.ndarray]) -> None:
  """Writes the per-clip predictions (`np.savez`) whole or not at all."""
  buffer = io.BytesIO()
  np.savez(buffer, **predictions)
  runs.write_whole(path, buffer.getvalue())


def run_stage(config: ml_collections.ConfigDict, workdir: str, stage_name: str, *,
              config_file: str | None = None, overrides: tuple[str, ...] = (),
              clock: metrics_lib.RunClock | None = None) -> dict[str, Any]:
  """Trains and evaluates one stage; returns (and writes) its results.

  A finished stage is not run again: its saved results are returned with
  `skipped: True`. `config_file` and `overrides` (the command line's
  `--config.*` flags) only make the hint for a missing prerequisite a command
  that runs as printed. `clock`: the run's stages so far, for the run's time
  left (one stage if None).
  """
  config_lib.check(config)
  check_imagenet_layout(config)
  config = effective_config(config, stage_name)
  stage = stages.for_config(stage_name, config)
  directory = runs.stage_dir(workdir, stage_name)
  if directory.finished():
    print(f'[{stage_name}] finished earlier ({directory.results_file}); nothing to do.',
          flush=True)
    if clock is not None:
      clock.planned_stages = max(clock.planned_stages - 1, 1)
    return {**runs.read_json(directory.results_file), 'skipped': True}
  resuming = directory.latest_dir.exists() and any(
      p.name.isdigit() for p in directory.latest_dir.iterdir())
  # Nothing is created for a stage that cannot start.
  sources_of_init = {} if resuming else prerequisites(
      stage, config, workdir, config_file=config_file, overrides=overrides)
  t_start = time.time()

  # MARK: mesh and data
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  sharding.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size')
  sources = load_sources(config)
  train_src = sources['train']
  if train_src is None:
    raise ValueError(f'{config.dataset}/{config.protocol} has no training split.')
  num_classes = len(train_src.class_names)
  steps_per_epoch = len(train_src.records) // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(f'{len(train_src.records)} training clips cannot fill one batch of '
                     f'{config.batch_size}.')
  total_steps = (config.num_train_steps if config.num_train_steps > 0
                 else config.num_epochs * steps_per_epoch)
  progress = metrics_lib.Progress(total_steps, stage_name, clips_per_step=config.batch_size,
                                  clock=clock, started=t_start)

  # MARK: the folder: one job at a time, one config per stage
  if jax.process_index() == 0:
    directory.path.mkdir(parents=True, exist_ok=True)
  with runs.StageLock(directory) as lock:
    note = lock.acquire()
    if note:
      progress.message(note)
    if resuming and directory.config_file.exists():
      check_resume_config(directory, config)
    else:
      runs.write_json(directory.config_file, config.to_dict())
      runs.write_json(directory.dataset_file, {
          'dataset': config.dataset, 'protocol': config.protocol,
          'builder_config': config.builder_config, 'class_names': list(train_src.class_names),
          'split_sizes': {k: (len(v.records) if v else 0) for k, v in sources.items()}})

    # MARK: model, optimizer, initial weights
    model = steps.StageModel(stage, config.model, num_classes)
    tx, schedule = optim.make_optimizer(config.optimizer, total_steps)
    init_vars = init_model_variables(model, config)
    replicated = sharding.replicated(mesh)
    make_state = make_state_fn(stage, tx, mesh)
    abstract_state = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=replicated),
        jax.eval_shape(make_state, init_vars))
    abstract_best = checkpointing.best_dict(abstract_state)

    train_iter = pipeline.train_iterator(
        sources['train'].records, global_batch_size=config.batch_size,
        num_frames=config.input.num_frames, image_size=(config.input.image_size,) * 2,
        seed=config.seed, uniform_prob=config.input.uniform_prob, flip=config.input.flip,
        worker_count=config.input.worker_count, modalities=stage.inputs)
    position = IteratorPosition(train_iter)
    ckpt = checkpointing.StageCheckpoints(directory, keep=config.keep_checkpoints)

    # Resume precedence: this stage's own latest checkpoint > previous stages /
    # from_workdir / ImageNet > scratch. Loading transforms never run on resume.
    groups = selection_groups(stage)
    restored = ckpt.restore_latest(abstract_state, position)
    if restored is not None:
      state, notes = restored
      for n in notes:
        progress.message(n)
      progress.message(f'resumed at step {int(state.step)}')
    else:
      variables, origin = initial_variables(config, stage, init_vars, sources_of_init)
      state = make_state(variables)
      progress.message(f'initialised from {origin}')
      # A stage that starts afresh selects afresh: a best kept by an attempt that
      # died before its first latest checkpoint is not this run's.
      ckpt.clear_best()
    del init_vars
    # The selection record lives in the best checkpoint itself (see checkpointing).
    selection = ckpt.best_selection() or {'metrics': {}, 'steps': {}}
    # With several groups (the joint step 1) each group's best streams are kept
    # on the devices, as copies that survive the step's buffer donation.
    best_streams = {}
    if len(groups) > 1 and selection['steps']:
      saved = ckpt.restore_best(abstract_best)
      best_streams = {s: {c: saved[c][s] for c in ('params', 'batch_stats')}
                      for s in stage.trainable}

    def best_of(state) -> dict[str, Any]:
      if len(groups) == 1:
        return checkpointing.best_dict(state)
      best = checkpointing.best_dict(state)
      for c in ('params', 'batch_stats'):
        best[c] = {s: best_streams[s][c] for s in stage.trainable}
      return best

    # MARK: steps
    train_fn = make_train_fn(model, config, tx, schedule, mesh)
    eval_fn = make_eval_fn(model, config, mesh)
    start_step = int(state.step)
    writer = metrics_lib.MetricWriter(directory.path, start_step=start_step)
    preempt = _Preemption()

    # MARK: loop
    batches = _prefetched(train_iter, mesh, config.input.prefetch)
    pending: list[dict[str, jax.Array]] = []
    last_log_step, last_log_time = start_step, time.time()
    stopped_early = False
    try:
      for step in range(start_step + 1, total_steps + 1):
        batch, position.state = next(batches)
        state, step_metrics = train_fn(state, batch)
        pending.append(step_metrics)
        epoch_end = (step % steps_per_epoch == 0
                     and (step // steps_per_epoch) % config.eval_every_epochs == 0)
        save_now = step % config.checkpoint_every_steps == 0 or step == total_steps
        validate = (epoch_end or step == total_steps) and sources['validation'] is not None
        preempted = preempt.agreed() if (step % config.log_every_steps == 0 or save_now
                                         or jax.process_count() == 1) else False
        # Every step's metrics are checked before anything is validated or saved,
        # so no non-finite state is ever kept as best, latest or handed on.
        if step % config.log_every_steps == 0 or validate or save_now or preempted:
          history = jax.device_get(pending)
          bad = metrics_lib.first_non_finite(history, step - len(history) + 1)
          if bad is not None:
            bad_step, name, value = bad
            last_good = ckpt.latest.latest_step()
            kept = (f'Last good checkpoint: step {last_good} in {directory.latest_dir}'
                    if last_good is not None else 'No checkpoint was saved before it')
            raise FloatingPointError(
                f'{stage_name} diverged: {name} = {value} at step {bad_step}; stopped, and '
                f'nothing from that step on was saved. {kept}. Lower optimizer.learning_rate '
                'or set optimizer.grad_clip_norm, then train the stage afresh.')
          now = time.time()
          scalars = metrics_lib.mean_metrics(history)
          scalars['clips_per_s'] = ((step - last_log_step) * config.batch_size
                                    / max(now - last_log_time, 1e-9))
          writer.write(step, 'train', scalars)
          progress.update(step, scalars, (selection['metrics'].get(next(iter(groups)))
                                          if len(groups) == 1 else None))
          pending, last_log_step, last_log_time = [], step, now
          ckpt.check_for_errors()
          lock.heartbeat()
        # The last step validates too, so a run shorter than an epoch (num_train_steps)
        # still has a best-on-validation state for the test evaluation and later stages.
        if validate:
          result = evaluate(state, sources['validation'], eval_fn=eval_fn, mesh=mesh,
                            config=config, modalities=stage.inputs)
          writer.write(step, 'validation',
                       {f'accuracy/{k}': v for k, v in result['accuracy'].items()})
          better = [g for g in groups if improved(result['accuracy'][g],
                                                   selection['metrics'].get(g),
                                                   config.selection_ties)]
          progress.message(f'epoch {step // steps_per_epoch}: validation accuracy ' + ', '.join(
              f'{g} {result["accuracy"][g]:.4f}' + (' (best)' if g in better else '')
              for g in groups))
          if better:
            for g in better:
              selection['metrics'][g] = result['accuracy'][g]
              selection['steps'][g] = step
              if len(groups) > 1:
                best_streams.update({s: {c: jax.tree.map(jnp.copy, getattr(state, c)[s])
                                         for c in ('params', 'batch_stats')}
                                     for s in groups[g]})
            ckpt.save_best(step, best_of(state), selection)
        if save_now or preempted:
          ckpt.save_latest(step, state, position)
        if preempted:
          stopped_early = True
          progress.message(f'SIGTERM: saved step {step}; rerun the same command to resume.')
          break
    finally:
      preempt.restore()
      ckpt.wait()  # an error stops the stage with its good checkpoints committed

    if stopped_early:
      ckpt.close()
      writer.close()
      return {'stage': stage_name, 'preempted_at_step': int(state.step)}

    # MARK: test with the best-on-validation state (the final state without validation)
    if sources['validation'] is None and selection['steps'].get(next(iter(groups))) != int(
        state.step):
      selection = {'metrics': {}, 'steps': {g: int(state.step) for g in groups}}
      ckpt.save_best(int(state.step), checkpointing.best_dict(state), selection)
      ckpt.wait()
    best = ckpt.restore_best(abstract_best)
    best_state = steps.TrainState(step=best['step'], params=best['params'],
                                  batch_stats=best['batch_stats'], opt_state=None,
                                  frozen=best['frozen'])
    single = len(groups) == 1
    results = {
        'stage': stage_name, 'dataset': config.dataset, 'protocol': config.protocol,
        'privileged': config.privileged,
        'loss': config.loss.kind if stage.student else stage.loss,
        'connections': bool(config.model.connections and any(m.connections for m in stage.models)),
        'train_inputs': list(stage.inputs), 'fused_streams': list(stage.fused),
        'best_step': max(selection['steps'].values()),
        'selected_on': {g: {'step': selection['steps'][g],
                            'validation_accuracy': selection['metrics'].get(g)} for g in groups},
        'validation_accuracy': (selection['metrics'].get(next(iter(groups))) if single
                                else dict(selection['metrics']) or None),
        'total_steps': total_steps, 'train_seconds': time.time() - t_start}
    split = config.eval.split
    if sources[split] is not None:
      result = evaluate(best_state, sources[split], eval_fn=eval_fn, mesh=mesh, config=config,
                        modalities=stage.inputs)
      results[split] = {k: result[k] for k in ('accuracy', 'num_examples', 'complete')}
      writer.write(results['best_step'], split,
                   {f'accuracy/{k}': v for k, v in result['accuracy'].items()})
      save_predictions(directory.predictions_file(split), result['predictions'])
      progress.message(f'{split} accuracy: ' + ', '.join(
          f'{k} {v:.4f}' for k, v in result['accuracy'].items()))
    # Written last: from here on the stage counts as finished (`runs.StageDir.finished`).
    runs.write_json(directory.results_file, results)
    ckpt.close()
    writer.close()
    progress.finish(str(directory.path), str(directory.results_file))
    return results


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str, *,
                       config_file: str | None = None, overrides: tuple[str, ...] = (),
                       clock: metrics_lib.RunClock | None = None) -> dict[str, dict[str, Any]]:
  """Runs the config's stage (or, for `all`, steps 1 to 4 in order); finished ones are skipped.

  `clock`: the run these stages belong to (by default, just these stages).
  """
  results = {}
  names = stages.expand(config.stage)
  clock = clock or metrics_lib.RunClock(len(names))
  for stage_name in names:
    results[stage_name] = run_stage(config, workdir, stage_name, config_file=config_file,
                                    overrides=overrides, clock=clock)
    if 'preempted_at_step' in results[stage_name]:
      break
  return results
