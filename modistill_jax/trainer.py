"""The staged trainer: one linear `run_stage`, and `train_and_evaluate` over stages.

`run_stage` reads top to bottom: the stage's start (`initialization.prepare`:
effective config, finished already?, prerequisites) -> mesh -> data -> the
stage folder (lock, config saved or compared) -> network -> the state
(resumed, or initial weights) -> the evaluators -> loop (step; log; ask the
validation; save; stop on SIGTERM or divergence; what happens after a step is
`step_end`'s to decide) -> the test of the best state -> results.

This module holds the loop and its own helpers. What it builds on lives in
its own module: the stage's start and initial weights (`initialization`),
validation with best-state selection and the test pass (`evaluators`), the
splits and device prefetch (`data.feeding`, `iterators`), the network
(`models`), the step functions (`steps`), the folder (`runs.StageDir`: what a
stage writes, and where; the last file written is the results, which makes the
stage finished)."""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Mapping
import dataclasses
import functools
import os
import signal
import sys
import threading
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from modistill_jax import checkpointing
from modistill_jax import config_lib
from modistill_jax import evaluators
from modistill_jax import initialization
from modistill_jax import iterators
from modistill_jax import metrics as metrics_lib
from modistill_jax import optim
from modistill_jax import profiling
from modistill_jax import runs
from modistill_jax import sharding
from modistill_jax import stages
from modistill_jax import steps
from modistill_jax.data import feeding
from modistill_jax.models import stage_network
from modistill_jax.models import StageNetwork

PyTree = Any


# MARK: jitted steps


def create_train_state(
    variables: Mapping[str, PyTree], stage: stages.Stage, tx
) -> steps.TrainState:
  params = {s: variables['params'][s] for s in stage.trainable}
  frozen = (
      {c: {s: variables[c][s] for s in stage.frozen} for c in ('params', 'batch_stats')}
      if stage.frozen
      else {}
  )
  return steps.TrainState(
      step=jnp.zeros((), jnp.int32),
      params=params,
      batch_stats={s: variables['batch_stats'][s] for s in stage.trainable},
      opt_state=tx.init(params),
      frozen=frozen,
  )


def make_state_fn(stage: stages.Stage, tx, mesh):
  """Variables -> `TrainState` replicated over the mesh, jitted."""
  return jax.jit(
      functools.partial(create_train_state, stage=stage, tx=tx),
      out_shardings=sharding.replicated(mesh),
  )


def make_train_fn(model: StageNetwork, config: ml_collections.ConfigDict, tx, schedule, mesh):
  """The jitted data-parallel train step; the trainer and `benchmark` run this one.

  The state is donated (updated in place, no second copy of params and optimizer
  state), replicated over the mesh; the batch is sharded over its first axis.
  """
  replicated = sharding.replicated(mesh)
  return jax.jit(
      functools.partial(steps.train_step, model=model, config=config, tx=tx, schedule=schedule),
      in_shardings=(replicated, sharding.data_sharded(mesh)),
      out_shardings=(replicated, replicated),
      donate_argnums=(0,),
  )


def abstract_state(model: StageNetwork, config: ml_collections.ConfigDict, make_state, mesh):
  """The shapes, dtypes and (replicated) shardings of the stage's `TrainState`; nothing computed.

  What a checkpoint is restored into, and what a step is lowered or timed with.
  """
  return sharding.abstract(
      jax.eval_shape(lambda: make_state(initialization.init_model_variables(model, config))),
      sharding.replicated(mesh),
  )


def guarded_step(train_fn, state: steps.TrainState, batch: Mapping[str, jax.Array]):
  """`train_fn(state, batch)` with implicit host-device transfers disallowed.

  State and batch are on the devices already (the batch put there explicitly,
  `sharding.to_global` in `data.feeding`'s prefetch); an array that would be
  copied silently into or out of the step (a NumPy batch, say) raises instead.
  """
  with jax.transfer_guard('disallow'):
    return train_fn(state, batch)


def parameter_overview(state: steps.TrainState) -> str:
  """A short table of the state's variables: count per stream and collection, trainable or not."""
  rows = [('stream', 'collection', 'variables', 'trained')]
  parts = [(state.params, 'params', 'yes'), (state.batch_stats, 'batch_stats', 'no (running)')]
  parts += [(state.frozen.get(c, {}), c, 'no (frozen)') for c in ('params', 'batch_stats')]
  for tree, collection, trained in parts:
    for stream, variables in tree.items():
      count = sum(x.size for x in jax.tree.leaves(variables))
      rows.append((stream, collection, f'{count:,}', trained))
  widths = [max(len(r[i]) for r in rows) for i in range(4)]
  return '\n'.join('  ' + '  '.join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows)


# MARK: the loop's decisions


# The exit status of a stage stopped by SIGTERM (preemption) with its progress saved: "stopped,
# rerun the same command to resume", distinct from 0 (done) and 1 (failed). 75 is EX_TEMPFAIL
# of sysexits.h ("try again later").
PREEMPTED_EXIT_CODE = 75
# How long a job asked to stop (SIGTERM) may take to reach its next step and save there.
# Past it (a save stuck on an unwritable folder, a long compile or evaluation) the process
# exits with `PREEMPTED_EXIT_CODE` anyway; the checkpoints committed before stay intact.
PREEMPTION_GRACE_SECONDS = 60.0


class SigtermWatch:
  """Calls `on_sigterm()` for each SIGTERM on a thread of its own, whatever the main thread does.

  Python runs a signal's handler on the main thread only, between bytecodes: a
  main thread blocked in native code (an XLA compile or wait, a storage call
  that stopped answering) runs none until that returns, and one that a SIGTERM
  reaches just before it blocks on a lock (a `threading.Event().wait()`) never
  runs it at all: the signal is taken and the lock's wait is not interrupted.
  Python's C handler, though, writes the signal's number to the wakeup fd
  (`signal.set_wakeup_fd`) at once, on whichever thread the kernel picked; the
  watch thread reads it there. The bytes of other signals go on to the wakeup
  fd installed before, if any. Installed and closed on the main thread.
  """

  def __init__(self, on_sigterm: Callable[[], None]):
    self._on_sigterm = on_sigterm
    read_fd, self._write_fd = os.pipe()
    os.set_blocking(self._write_fd, False)  # as `set_wakeup_fd` requires
    self._previous_fd = signal.set_wakeup_fd(self._write_fd, warn_on_full_buffer=False)
    # The handler only makes Python's C handler take SIGTERM (and write its byte).
    self._previous_handler = signal.signal(signal.SIGTERM, _taken_by_the_watch)
    _WATCH_FDS.add(self._write_fd)
    self._thread = threading.Thread(
        target=self._watch, args=(read_fd,), name='SIGTERM watch', daemon=True
    )
    self._thread.start()

  def _watch(self, read_fd: int) -> None:
    try:
      while data := os.read(read_fd, 512):  # b'' once `close` closed the write end
        if others := bytes(b for b in data if b != signal.SIGTERM):
          _forward(self._previous_fd, others)
        for _ in range(len(data) - len(others)):
          self._on_sigterm()
    finally:
      os.close(read_fd)

  def close(self) -> None:
    """Hands SIGTERM back to the handler and wakeup fd installed before; a SIGTERM
    already read is still acted on."""
    signal.signal(signal.SIGTERM, self._previous_handler)
    signal.set_wakeup_fd(self._previous_fd)
    _WATCH_FDS.discard(self._write_fd)
    os.close(self._write_fd)


# The write ends of the installed watches' pipes.
_WATCH_FDS: set[int] = set()


def _taken_by_the_watch(signum, frame) -> None:
  del signum, frame


def _forward(fd: int, data: bytes) -> None:
  if fd != -1:
    try:
      os.write(fd, data)
    except OSError:  # full or closed, as Python's C handler would find it
      pass


def _forget_watches_after_fork() -> None:
  """A process forked while a watch is installed takes SIGTERM the default way.

  Its copy of the wakeup fd would write to the parent's pipe (a SIGTERM sent
  to the child would stop the parent), and it has no watch thread of its own.
  """
  if not _WATCH_FDS:
    return
  _WATCH_FDS.clear()
  signal.set_wakeup_fd(-1)
  signal.signal(signal.SIGTERM, signal.SIG_DFL)


os.register_at_fork(after_in_child=_forget_watches_after_fork)


class _Preemption:
  """Turns SIGTERM into a flag the loop checks between steps, with a deadline.

  The loop saves and stops at the next step. Where it does not get there
  within `grace_seconds` (stuck in a save, compiling, evaluating), a timer
  ends the process with `PREEMPTED_EXIT_CODE`; a second SIGTERM ends it at once.
  Both hold whatever the main thread is doing (`SigtermWatch`).
  """

  def __init__(self, grace_seconds: float = PREEMPTION_GRACE_SECONDS):
    self.requested = False
    self._grace_seconds = grace_seconds
    self._deadline = None
    self._watch = SigtermWatch(self._handle)

  def _handle(self):
    """On the watch's thread, one SIGTERM at a time."""
    if self.requested:
      stop_preempted('a second SIGTERM')
    self.requested = True
    self._deadline = threading.Timer(
        self._grace_seconds,
        stop_preempted,
        (f'SIGTERM {self._grace_seconds:.0f} s ago, and no step reached since',),
    )
    self._deadline.daemon = True
    self._deadline.start()

  def restore(self):
    self._watch.close()

  def agreed(self) -> bool:
    """All hosts stop at the same step if any of them was asked to."""
    if jax.process_count() == 1:
      return self.requested
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

    flags = multihost_utils.process_allgather(np.array([self.requested]))
    return bool(np.any(flags))


def stop_preempted(why: str) -> None:
  """Ends the process at once as preempted: what is committed stays, what is pending is lost.

  Also what SIGTERM does outside a stage's loop (`train`'s `SigtermWatch`): building
  the dataset, loading, evaluating; there is nothing new to save there.
  """
  print(
      f'{why}: stopped without saving; the last committed checkpoint is kept. Rerun the '
      'same command to resume from it.',
      file=sys.stderr,
      flush=True,
  )
  os._exit(PREEMPTED_EXIT_CODE)  # pylint: disable=protected-access


@dataclasses.dataclass(frozen=True)
class StepEnd:
  """What the loop does after a step, decided once per step by `step_end`.

  Attributes:
    log: the logging cadence is due (metrics written, progress shown).
    validate: evaluate on the validation split and keep the best state.
    save: save the latest checkpoint (the cadence, or the last step).
    preempted: every host agreed to stop here (SIGTERM); the latest is saved.
  """

  log: bool
  validate: bool
  save: bool
  preempted: bool

  @property
  def check_metrics(self) -> bool:
    """The steps' metrics are fetched and checked before anything is validated or saved.

    So no non-finite state is ever kept as best, latest or handed on.
    """
    return self.log or self.validate or self.save or self.preempted


def step_end(
    step: int,
    *,
    config: ml_collections.ConfigDict,
    total_steps: int,
    validation: evaluators.Validation,
    preemption: _Preemption,
) -> StepEnd:
  """The decisions after `step` (1-based): log, validate, save, stop.

  Validation is due on its own cadence (`Validation.is_due`). Hosts agree on a
  SIGTERM only where it costs no extra synchronisation (log or save steps),
  except on one host, which looks every step.
  """
  log = step % config.log_every_steps == 0
  save = step % config.checkpoint_every_steps == 0 or step == total_steps
  preempted = preemption.agreed() if log or save or jax.process_count() == 1 else False
  return StepEnd(log=log, validate=validation.is_due(step), save=save, preempted=preempted)


# MARK: the stage


class ConfigMismatchError(ValueError):
  """A stopped or finished stage rerun with settings other than those that trained it."""


def check_resume_config(
    directory: runs.StageDir, config: ml_collections.ConfigDict, finished: bool = False
) -> None:
  """A resumed or rerun stage must have the config that trained its first steps.

  Only `config_lib.RESUMABLE_KEYS` (logging and checkpoint cadence, worker
  counts, where the data is) may change; anything else would silently mix two
  configurations in one run, or (a finished stage, skipped) report results
  under settings that did not produce them. A finished stage also takes other
  `config_lib.EVALUATION_KEYS`: those are for evaluating it again
  (`train --reevaluate`, `evaluate`), which reads them from this config.
  """
  ignore = config_lib.RESUMABLE_KEYS + (config_lib.EVALUATION_KEYS if finished else ())
  saved = config_lib.with_defaults(runs.read_json(directory.config_file))
  diff = config_lib.differences(saved, config, ignore=ignore)
  if diff:
    raise ConfigMismatchError(
        f'{directory.path} was trained with other settings than this command gives:\n'
        f'{config_lib.format_differences(diff)}\n'
        "Either rerun with the run's own values (add "
        f'{config_lib.as_flags({k: a for k, (a, _) in diff.items()})}), or train this stage '
        f'afresh in another --workdir (or after removing {directory.path}).'
    )


def stage_record(stage_name: str, config: ml_collections.ConfigDict, stage: stages.Stage):
  """What results.json says the stage was: dataset, modalities, loss, connections, streams."""
  deployed, privileged = stages.roles(config.privileged, config.deployed)
  return {
      'stage': stage_name,
      'dataset': config.dataset,
      'protocol': config.protocol,
      # One name ('depth', as always) or several joined ('depth+ir').
      'privileged': '+'.join(privileged),
      'deployed': deployed,
      'loss': stage.loss_name(config.loss.kind),
      'connections': bool(config.model.connections and any(m.connections for m in stage.models)),
      'train_inputs': list(stage.inputs),
      'fused_streams': list(stage.fused),
  }


def write_stage_files(directory: runs.StageDir, config: ml_collections.ConfigDict, sources) -> None:
  """The stage's config.json and dataset.json (classes, split sizes), written at its start."""
  runs.write_json(directory.config_file, config.to_dict())
  runs.write_json(
      directory.dataset_file,
      {
          'dataset': config.dataset,
          'protocol': config.protocol,
          'builder_config': config.builder_config,
          'class_names': list(sources['train'].class_names),
          'split_sizes': {k: (len(v.records) if v else 0) for k, v in sources.items()},
      },
  )


def stage_data(config: ml_collections.ConfigDict):
  """`(mesh, splits, steps per epoch, total steps)`; a batch that does not fit fails here."""
  mesh = sharding.make_mesh()
  sharding.check_batch_size(config.batch_size, mesh)
  sharding.check_batch_size(config.eval_batch_size, mesh, 'eval_batch_size')
  sources = feeding.load_sources(config)
  train = sources['train']
  if train is None:
    raise ValueError(f'{config.dataset}/{config.protocol} has no training split.')
  steps_per_epoch = len(train.records) // config.batch_size
  if steps_per_epoch == 0:
    raise ValueError(
        f'{len(train.records)} training clips cannot fill one batch of {config.batch_size}.'
    )
  total_steps = (
      config.num_train_steps if config.num_train_steps > 0 else config.num_epochs * steps_per_epoch
  )
  return mesh, sources, steps_per_epoch, total_steps


class TrainTime:
  """`train_seconds` counts every run of the stage, each up to its last checkpoint."""

  def __init__(self, directory: runs.StageDir, resuming: bool, started: float):
    self.file, self.started = directory.train_time_file, started
    self.earlier = (
        runs.read_json(self.file)
        if resuming and self.file.exists()
        else {'seconds': 0.0, 'runs': 0}
    )

  def seconds(self) -> float:
    return self.earlier['seconds'] + time.time() - self.started

  def save(self) -> None:
    """With each latest checkpoint: the time up to it, and this run counted."""
    runs.write_json(self.file, {'seconds': self.seconds(), 'runs': self.earlier['runs'] + 1})

  def record(self) -> dict[str, Any]:
    """results.json's `train_seconds` and `resumes`."""
    return {'train_seconds': self.seconds(), 'resumes': self.earlier['runs']}


class TrainLog:
  """The train metrics at the logging cadence: averaged since the last log, with clips/s."""

  def __init__(self, writer: metrics_lib.MetricWriter, progress, batch_size: int, step: int):
    self.writer, self.progress, self.batch_size = writer, progress, batch_size
    self.last_step, self.last_time = step, time.time()

  def write(self, step: int, history, best_validation: float | None) -> None:
    now = time.time()
    scalars = metrics_lib.mean_metrics(history)
    scalars['clips_per_s'] = (
        (step - self.last_step) * self.batch_size / max(now - self.last_time, 1e-9)
    )
    self.writer.write(step, 'train', scalars)
    self.progress.update(step, scalars, best_validation)
    self.last_step, self.last_time = step, now


def check_finite(history, step: int, stage_name: str, ckpt: checkpointing.StageCheckpoints):
  """Stops a diverged stage, naming the metric, its step and the last good checkpoint."""
  bad = metrics_lib.first_non_finite(history, step - len(history) + 1)
  if bad is None:
    return
  bad_step, name, value = bad
  last_good = ckpt.latest.latest_step()
  kept = (
      f'Last good checkpoint: step {last_good} in {ckpt.directory.latest_dir}'
      if last_good is not None
      else 'No checkpoint was saved before it'
  )
  raise FloatingPointError(
      f'{stage_name} diverged: {name} = {value} at step {bad_step}; stopped, and '
      f'nothing from that step on was saved. {kept}. Lower optimizer.learning_rate '
      'or set optimizer.grad_clip_norm, then train the stage afresh.'
  )


def run_stage(
    config: ml_collections.ConfigDict,
    workdir: str,
    stage_name: str,
    *,
    config_file: str | None = None,
    overrides: tuple[str, ...] = (),
    clock: metrics_lib.RunClock | None = None,
    preemption_grace_seconds: float = PREEMPTION_GRACE_SECONDS,
) -> dict[str, Any]:
  """Trains and evaluates one stage; returns (and writes) its results.

  A finished stage is not run again: its saved results are returned with
  `skipped: True` (if this config is the one that trained it; otherwise
  `ConfigMismatchError`, as for resuming). `config_file` and `overrides` (the command line's
  `--config.*` flags) only make the hint for a missing prerequisite a command
  that runs as printed. `clock`: the run's stages so far, for the run's time
  left (one stage if None). A SIGTERM stops the stage at its next step, saved, and
  returns `{'preempted_at_step': step}`; `preemption_grace_seconds`: see `_Preemption`.
  """
  # Nothing is created for a stage that cannot start.
  start = initialization.prepare(
      config, stage_name, workdir, config_file=config_file, overrides=overrides
  )
  config, stage, directory = start.config, start.stage, start.directory
  if start.finished:
    check_resume_config(directory, config, finished=True)
    print(f'[{stage_name}] finished earlier ({directory.results_file}); nothing to do.', flush=True)
    if clock is not None:
      clock.planned_stages = max(clock.planned_stages - 1, 1)
    return {**runs.read_json(directory.results_file), 'skipped': True}
  t_start = time.time()

  mesh, sources, steps_per_epoch, total_steps = stage_data(config)
  progress = metrics_lib.Progress(
      total_steps, stage_name, clips_per_step=config.batch_size, clock=clock, started=t_start
  )

  # MARK: the folder: one job at a time, one config per stage
  if jax.process_index() == 0:
    directory.path.mkdir(parents=True, exist_ok=True)
  with runs.StageLock(directory) as lock:
    if note := lock.acquire():
      progress.message(note)
    train_time = TrainTime(directory, start.resuming, t_start)
    if start.resuming and directory.config_file.exists():
      check_resume_config(directory, config)
    else:
      write_stage_files(directory, config, sources)

    # MARK: network and state: this stage's latest checkpoint, else its initial weights
    model = stage_network(stage, config.model, len(sources['train'].class_names))
    tx, schedule = optim.make_optimizer(config.optimizer, total_steps)
    make_state = make_state_fn(stage, tx, mesh)
    abstract = abstract_state(model, config, make_state, mesh)
    train_iter = iterators.train_iterator(config, sources['train'].records, stage.inputs)
    position = feeding.IteratorPosition(train_iter)
    ckpt = checkpointing.StageCheckpoints(directory, keep=config.keep_checkpoints)
    restored = ckpt.restore_latest(abstract, position)
    if restored is not None:
      state, notes = restored
      for n in [*notes, f'resumed at step {int(state.step)}']:
        progress.message(n)
    else:
      variables, origin = start.initial_variables(model)
      state = make_state(variables)
      del variables
      progress.message(f'initialised from {origin}')
      # A stage that starts afresh selects afresh: a best kept by an attempt that
      # died before its first latest checkpoint is not this run's.
      ckpt.clear_best()
    progress.message('variables:\n' + parameter_overview(state))

    # MARK: the evaluators and the loop
    start_step = int(state.step)
    writer = metrics_lib.MetricWriter(directory.path, start_step=start_step)
    program = evaluators.EvalProgram(model, config, mesh)
    validation = evaluators.Validation(
        program, sources['validation'], stage, config, checkpoints=ckpt,
        abstract_best=checkpointing.best_dict(abstract), steps_per_epoch=steps_per_epoch,
        total_steps=total_steps, writer=writer, progress=progress,
    )  # fmt: skip
    test = evaluators.Test(
        program, sources[config.eval.split], config.eval.split, directory=directory,
        writer=writer, progress=progress,
    )  # fmt: skip
    train_fn = make_train_fn(model, config, tx, schedule, mesh)
    preempt = _Preemption(preemption_grace_seconds)
    profiler = profiling.StepProfiler(config.profile_steps, directory.path)
    batches = feeding.prefetched(train_iter, mesh, config.input.prefetch)
    pending: list[dict[str, jax.Array]] = []
    train_log, stopped_at = TrainLog(writer, progress, config.batch_size, start_step), None
    try:
      for step in range(start_step + 1, total_steps + 1):
        profiler.begin(step)
        batch, position.state = next(batches)
        state, step_metrics = guarded_step(train_fn, state, batch)
        profiler.end(step, state)
        pending.append(step_metrics)
        end = step_end(
            step, config=config, total_steps=total_steps, validation=validation, preemption=preempt
        )
        if end.check_metrics:
          history = jax.device_get(pending)
          check_finite(history, step, stage_name, ckpt)
          train_log.write(step, history, validation.best_accuracy)
          pending = []
          ckpt.check_for_errors()
        validation.maybe_evaluate(step, state)
        if end.save or end.preempted:
          ckpt.save_latest(step, state, position)
          train_time.save()
        if end.preempted:
          progress.message(
              f'SIGTERM: saved step {step}; rerun the same command to resume (exit status '
              f'{PREEMPTED_EXIT_CODE}).'
          )
          stopped_at = step
          break
    finally:
      profiler.close()
      preempt.restore()
      ckpt.wait()  # an error stops the stage with its good checkpoints committed
    if stopped_at is not None:
      ckpt.close()
      writer.close()
      return {'stage': stage_name, 'preempted_at_step': stopped_at}

    # MARK: test with the best-on-validation state (the final state without validation)
    best_state = validation.best_state(state)
    results = {
        **stage_record(stage_name, config, stage),
        **validation.record(),
        'total_steps': total_steps,
        **train_time.record(),
    }
    results.update(test.evaluate(best_state, results['best_step']))
    # Written last: from here on the stage counts as finished (`runs.StageDir.finished`).
    runs.write_json(directory.results_file, results)
    ckpt.close()
    writer.close()
    progress.finish(str(directory.path), str(directory.results_file))
    return results


def train_and_evaluate(
    config: ml_collections.ConfigDict,
    workdir: str,
    *,
    config_file: str | None = None,
    overrides: tuple[str, ...] = (),
    clock: metrics_lib.RunClock | None = None,
    preemption_grace_seconds: float = PREEMPTION_GRACE_SECONDS,
) -> dict[str, dict[str, Any]]:
  """Runs the config's stage (or, for `all`, steps 1 to 4 in order); finished ones are skipped.

  `clock`: the run these stages belong to (by default, just these stages). A stage
  stopped by SIGTERM ends the run there (see `run_stage`).
  """
  results = {}
  names = stages.expand(config.stage)
  clock = clock or metrics_lib.RunClock(len(names))
  for stage_name in names:
    results[stage_name] = run_stage(
        config,
        workdir,
        stage_name,
        config_file=config_file,
        overrides=overrides,
        clock=clock,
        preemption_grace_seconds=preemption_grace_seconds,
    )
    if 'preempted_at_step' in results[stage_name]:
      break
  return results
