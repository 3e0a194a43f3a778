"""Faults at users' scale: storage that refuses writes, shared folders, mixed sensor data.

Each test injects one fault the way a user's cluster or data would and checks
the message, the exit status and that nothing committed was lost:

* a write refused by the storage (a file-size limit: EFBIG, which Orbax reports
  as a TensorStore `ValueError`): one `error:` line naming the path and the
  reason, status 1; the rerun without the fault finishes;
* SIGTERM while a checkpoint save hangs: the job exits within its grace period
  with the preemption status (75), the checkpoint committed before intact; the
  grace starts even where the main thread runs no signal handler;
* the stage lock: processes racing for a free or a stale lock (locally and on
  the GCS emulator, which honours generation preconditions here), a heartbeat
  that beats while the main thread is busy, a holder whose lock was taken over
  stopping at once, release of one's own lock only;
* two first runs building the missing dataset at once: built once;
* a sample whose depth frames mix bit depths: skipped and reported; a table
  that is not UTF-8: the file and line;
* the hint for a missing stage repeats `--config.key value` flags with their values.

The immutable checkpoint folder (`chattr +i`) is in test_run_folder.py, SIGTERM
and resume (with the time summed over both runs) in test_preemption.py.
"""

from __future__ import annotations

import json
import os
import resource
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time

from etils import epath
import numpy as np
from PIL import Image
import pytest
import tensorflow_datasets as tfds

from conftest import REPO_ROOT, cli_env, override_flags, read_latest_state
from data_builders import raw_clips
from data_builders.custom_rgbd import builder as custom_builder
from data_builders.custom_rgbd import layout
from modistill_jax import checkpointing
from modistill_jax import runs
from modistill_jax import trainer

STAGE = 'step1_rgb'
TIMEOUT_S = 300
# Above the run folder's JSON files and TensorBoard events, below a train state's arrays.
FILE_SIZE_LIMIT = 24 * 1024


@pytest.fixture(scope='session')
def env(compilation_cache_dir):
  """The training subprocesses' environment, on one CPU device.

  The faults here (a refused write, a hanging save, a missing stage) meet the
  run folder the same way on any number of devices, and a stage on one device
  costs a fraction of one on four (as in tests/test_run_folder.py, whose `env`
  says why); tests/test_preemption.py stops and resumes on four.
  """
  return cli_env(compilation_cache_dir, device_count=1)


def train_args(workdir, data_dir, **overrides) -> list[str]:
  values = {'data_dir': data_dir, 'num_train_steps': 4, 'checkpoint_every_steps': 1, **overrides}
  return [
      '-m',
      'modistill_jax.train',
      f'--config=configs/demo.py:{STAGE}',
      f'--workdir={workdir}',
      *override_flags(values),
  ]


def python(args, env, **kwargs) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, *args],
      cwd=REPO_ROOT,
      env=env,
      capture_output=True,
      text=True,
      timeout=TIMEOUT_S,
      **kwargs,
  )


def committed_steps(directory: epath.Path) -> list[int]:
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


# MARK: writes the storage refuses


def test_storage_error_reason_is_whole_and_on_one_line():
  """The innermost OS error wherever it is wrapped; TensorStore's status without its sources."""
  denied = PermissionError(1, 'Operation not permitted', '/run/latest/3.orbax-checkpoint-tmp')
  try:
    try:
      raise denied
    except PermissionError as e:
      raise RuntimeError('Failed to run 4 Handler Commit operations') from e
  except RuntimeError as wrapped:
    assert checkpointing.reason(wrapped) == str(denied)
  tensorstore = ValueError(
      'OUT_OF_RANGE: Error writing local file "/run/latest/3/d/abc":\n File too large '
      "[source locations='tensorstore/internal/os/file_util_posix.cc:352']"
  )
  error = checkpointing.failure('save to', epath.Path('/run/latest'), tensorstore)
  assert str(error) == (
      'Checkpoint save to /run/latest failed: OUT_OF_RANGE: Error writing local file '
      '"/run/latest/3/d/abc": File too large'
  )


def _limit_file_size(max_bytes: int):
  def preexec():
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))

  return preexec


@pytest.mark.faults
@pytest.mark.slow
def test_file_size_limit_ends_the_job_with_one_line_and_the_rerun_finishes(
    tmp_path, synthetic_data_dir, env
):
  """`ulimit -f`: the checkpoint's arrays are the first files over the limit (EFBIG)."""
  workdir = str(tmp_path / 'run')
  directory = runs.stage_dir(workdir, STAGE)
  start = time.monotonic()
  failed = python(
      train_args(workdir, synthetic_data_dir), env, preexec_fn=_limit_file_size(FILE_SIZE_LIMIT)
  )
  assert failed.returncode == 1, failed.stdout[-3000:] + failed.stderr[-3000:]
  assert time.monotonic() - start < 120
  (error,) = [line for line in failed.stderr.splitlines() if line.startswith('error: ')]
  assert error.startswith(f'error: Checkpoint save to {directory.path}/checkpoints/'), error
  assert 'File too large' in error, error
  assert committed_steps(directory.latest_dir) == []
  assert not directory.finished()

  rerun = python(train_args(workdir, synthetic_data_dir), env)
  assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
  assert int(read_latest_state(str(directory.path))['step']) == 4
  assert directory.finished()


@pytest.mark.faults
@pytest.mark.slow
def test_sigterm_while_a_save_hangs_exits_as_preempted_within_the_grace(
    tmp_path, synthetic_data_dir, env
):
  workdir = str(tmp_path / 'run')
  directory = runs.stage_dir(workdir, STAGE)
  driver = os.path.join(REPO_ROOT, 'tests', 'crash_driver.py')
  # Validation only after step 4: none (no compile, no best save) before step 2's save hangs.
  args = train_args(workdir, synthetic_data_dir, eval_every_epochs=2)[2:]
  grace_s = 1
  # A file, not a pipe: nothing the run writes there can block it while stdout is read.
  stderr_path = tmp_path / 'stderr.txt'
  with open(stderr_path, 'w') as stderr_file:
    proc = subprocess.Popen(
        [sys.executable, driver, 'latest_save_hangs:2', *args, f'--preemption_grace_s={grace_s}'],
        cwd=REPO_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=stderr_file,
        text=True,
    )
  # Reading stdout ends (at EOF) even where the run hangs before its save.
  killer = threading.Timer(TIMEOUT_S, proc.kill)
  killer.start()
  try:
    for line in proc.stdout:
      if 'save hangs' in line:
        break
    else:
      proc.wait()
      pytest.fail(f'the save never started:\n{stderr_path.read_text()[-3000:]}')
    signalled = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    exited_after_s = time.monotonic() - signalled
  finally:
    killer.cancel()
    if proc.poll() is None:
      proc.kill()
  stderr = stderr_path.read_text()
  assert exited_after_s < grace_s + 19, stderr[-3000:]  # the grace, and a loaded machine's delay
  assert proc.returncode == trainer.PREEMPTED_EXIT_CODE == 75, stderr[-3000:]
  assert f'SIGTERM {grace_s} s ago, and no step reached since: stopped without saving' in stderr
  # Step 1's checkpoint was committed before the hanging save, and is whole.
  assert committed_steps(directory.latest_dir) == [1]
  assert int(read_latest_state(str(directory.path))['step']) == 1
  assert not directory.finished()


def test_sigterm_is_acted_on_while_the_main_thread_runs_no_signal_handler(monkeypatch):
  """The grace starts at SIGTERM even where the main thread cannot run Python's handler.

  Here the main thread blocks SIGTERM (so another thread takes it) and waits on
  a lock. So is a main thread in native code (an XLA wait, a storage call that
  stopped answering), or one that SIGTERM reached just before its wait began:
  it runs no handler until the wait ends, and here the wait ends only if the
  stage is stopped.
  """
  stopped = threading.Event()
  reasons = []

  def stop_preempted(why):
    reasons.append(why)
    stopped.set()

  monkeypatch.setattr(trainer, 'stop_preempted', stop_preempted)
  preemption = trainer._Preemption(grace_seconds=0.2)  # pylint: disable=protected-access
  try:
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGTERM])
    try:
      # Sent once the main thread waits (sent now, it would run the handler before its wait).
      threading.Timer(0.5, os.kill, (os.getpid(), signal.SIGTERM)).start()
      assert stopped.wait(timeout=30), 'the grace never ran out'
    finally:
      signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM])
  finally:
    preemption.restore()
  assert preemption.requested
  assert reasons == ['SIGTERM 0 s ago, and no step reached since']


# MARK: the lock on a folder many hosts share

# A job's process racing for the lock: says `ready` once imported, spins until the file
# `go` exists, then prints `held` or `refused <message>`; a lock it got is held 3 s.
RACER = textwrap.dedent("""
    import os, sys, time
    from etils import epath
    from modistill_jax import runs
    path, go, hold = epath.Path(sys.argv[1]), sys.argv[2], 3.0
    lock = runs.JobLock(path)
    print('ready', flush=True)
    while not os.path.exists(go):
      pass
    try:
      note = lock.acquire()
    except runs.LockHeldError as e:
      print('refused', e, flush=True)
    else:
      print('held', note, flush=True)
      time.sleep(hold)
      lock.release()
""")


@pytest.fixture(params=['local', 'gcs'])
def lock_place(request, tmp_path):
  """`(folder, environment)`: a local folder, or a bucket on the GCS emulator."""
  env = dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS='cpu')
  if request.param == 'local':
    return epath.Path(tmp_path), env
  emulator = request.getfixturevalue('gcs_emulator')
  return epath.Path(request.getfixturevalue('gcs_bucket')) / 'run', {**env, **emulator.env}


def race(lock_file: epath.Path, env, go: str, racers: int = 3) -> list[str]:
  """The racers' outputs; they start together, after every one has imported the modules."""
  procs = [
      subprocess.Popen(
          [sys.executable, '-c', RACER, os.fspath(lock_file), go],
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for _ in range(racers)
  ]
  for proc in procs:
    assert proc.stdout.readline().strip() == 'ready', proc.communicate()[1][-3000:]
  with open(go, 'w'):
    pass
  outputs = []
  for proc in procs:
    out, err = proc.communicate(timeout=TIMEOUT_S)
    assert proc.returncode == 0, err[-3000:]
    outputs.append(out.strip())
  return outputs


@pytest.mark.faults
@pytest.mark.parametrize('stale', [False, True], ids=['free', 'stale'])
@pytest.mark.slow
def test_of_processes_racing_for_a_lock_one_holds_it(lock_place, stale, tmp_path):
  folder, env = lock_place
  lock_file = folder / 'step1' / runs.LOCK_FILE
  if stale:  # a job killed on this host: its pid is gone
    dead = subprocess.Popen(['true'])
    dead.wait()
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock_file.write_text(json.dumps({'host': socket.gethostname(), 'pid': dead.pid}))
  outputs = race(lock_file, env, str(tmp_path / 'go'))
  held = [o for o in outputs if o.startswith('held')]
  assert len(held) == 1, outputs
  if stale:
    assert f'took over the stale lock of pid {dead.pid}' in held[0]
  for refused in (o for o in outputs if not o.startswith('held')):
    assert refused.startswith(f'refused {lock_file} is held by pid '), outputs
  assert not lock_file.exists()  # released by its holder


def test_heartbeat_beats_while_busy_and_a_lock_taken_over_stops_its_holder(lock_place):
  folder, _ = lock_place
  lock_file = folder / runs.LOCK_FILE
  lost = []
  lock = runs.JobLock(lock_file, on_lost=lost.append, beat_seconds=0.2)
  lock.acquire()
  try:
    first = json.loads(lock_file.read_text())['heartbeat']
    busy_until = time.monotonic() + 1.5
    while time.monotonic() < busy_until:  # the main thread never yields to a beat of its own
      np.linalg.svd(np.ones((64, 64)))
    assert json.loads(lock_file.read_text())['heartbeat'] > first
    assert not lost
    # Another job takes the folder over (as after `rm lock.json` and a new job).
    runs.write_json(lock_file, {'host': 'other-host', 'pid': 7, 'heartbeat': time.time()})
    deadline = time.monotonic() + 10
    while not lost and time.monotonic() < deadline:
      time.sleep(0.05)
    assert lost and lost[0].startswith(f'Lost the lock {lock_file}: pid 7 on other-host took it')
  finally:
    lock.release()
  # Release leaves the other job's lock alone.
  assert json.loads(lock_file.read_text())['host'] == 'other-host'


@pytest.mark.faults
@pytest.mark.slow
def test_a_job_whose_lock_was_taken_over_exits_at_once(tmp_path):
  lock_file = tmp_path / runs.LOCK_FILE
  holder = textwrap.dedent(f"""
      import time
      from etils import epath
      from modistill_jax import runs
      lock = runs.JobLock(epath.Path({str(lock_file)!r}), beat_seconds=0.2)
      lock.acquire()
      runs.write_json({str(lock_file)!r}, {{'host': 'h2', 'pid': 9}})
      time.sleep(60)
  """)
  start = time.monotonic()
  proc = subprocess.run(
      [sys.executable, '-c', holder],
      env=dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS='cpu'),
      capture_output=True,
      text=True,
      timeout=TIMEOUT_S,
  )
  assert proc.returncode == runs.LOCK_LOST_EXIT_CODE == 1
  assert time.monotonic() - start < 50
  assert f'error: Lost the lock {lock_file}: pid 9 on h2 took it over' in proc.stderr


# MARK: first runs on a fresh machine


@pytest.mark.faults
@pytest.mark.slow
def test_two_first_runs_at_once_build_the_dataset_once(tmp_path):
  data_dir = str(tmp_path / 'tfds')
  first_run = textwrap.dedent(f"""
      from configs import demo
      from modistill_jax import cli, config_lib
      config = config_lib.override(demo.get_config('step1_rgb,tiny'), {{'data_dir': {data_dir!r}}})
      cli.build_dataset(config)
      print('ready', flush=True)
  """)
  env = dict(os.environ, PYTHONPATH=REPO_ROOT, JAX_PLATFORMS='cpu')
  procs = [
      subprocess.Popen(
          [sys.executable, '-c', first_run],
          cwd=REPO_ROOT,
          env=env,
          stdout=subprocess.PIPE,
          stderr=subprocess.PIPE,
          text=True,
      )
      for _ in range(2)
  ]
  outputs = [p.communicate(timeout=TIMEOUT_S) for p in procs]
  for proc, (out, err) in zip(procs, outputs):
    assert proc.returncode == 0, err[-3000:]
    assert out.strip().endswith('ready')
  assert sum(out.count('Built synthetic_rgbd') for out, _ in outputs) == 1, outputs
  waited = 'Waiting for another command building synthetic_rgbd/tiny'
  assert sum(waited in err for _, err in outputs) == 1, outputs
  config_dir = epath.Path(data_dir) / 'synthetic_rgbd' / 'tiny'
  assert sorted(p.name for p in config_dir.iterdir()) == ['2.0.0']  # no incomplete.*, no lock
  assert (config_dir / '2.0.0' / 'dataset_info.json').exists()


# MARK: users' data


def write_png(path: epath.Path, array: np.ndarray) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  Image.fromarray(array).save(os.fspath(path))


def test_depth_frames_of_mixed_bit_depths_leave_their_sample_out(tmp_path, monkeypatch):
  """Samples of one bit depth each (8 or 16) are built; the one mixing them is listed."""
  monkeypatch.setenv(raw_clips.WORKERS_ENV, '1')
  root = epath.Path(tmp_path) / 'raw'
  rng = np.random.default_rng(0)
  millimetres = lambda: rng.integers(500, 4000, (24, 32)).astype(np.uint16)  # noqa: E731
  levels = lambda: rng.integers(1, 255, (24, 32)).astype(np.uint8)  # noqa: E731
  depth = {
      'a16': [millimetres() for _ in range(3)],
      'b8': [levels() for _ in range(3)],
      'mixed': [millimetres(), levels(), millimetres()],
      'c16': [millimetres() for _ in range(3)],
  }
  for sample, frames in depth.items():
    for i, frame in enumerate(frames, 1):
      write_png(root / 'depth' / sample / f'{i}.png', frame)
      write_png(root / 'rgb' / sample / f'{i}.png', rng.integers(0, 255, (24, 32, 3), np.uint8))
  (root / 'labels.csv').write_text(
      'sample,label,split\na16,x,train\nb8,y,train\nmixed,x,train\nc16,y,test\n'
  )
  data_dir = epath.Path(tmp_path) / 'data'
  custom_builder.build('sensors', root, os.fspath(data_dir), ['res112'], overwrite=False)
  (version,) = (data_dir / 'sensors' / 'res112').iterdir()
  (skip,) = raw_clips.read_skip_report(version / raw_clips.SKIP_REPORT)
  assert (skip.sample_id, skip.split) == ('mixed', 'train')
  assert skip.reason == (
      'depth frames of mixed bit depths: depth/mixed/2.png is 8-bit grey (L), 2 of the 3 '
      'frames are 16-bit grey (I;16) (labels.csv line 4)'
  )
  splits = tfds.builder_from_directory(os.fspath(version)).info.splits
  assert (splits['train'].num_examples, splits['test'].num_examples) == (2, 1)


def test_table_that_is_not_utf8_names_the_file_and_line(tmp_path):
  root = epath.Path(tmp_path)
  (root / 'labels.csv').write_bytes(b'sample,label,split\na,wave,train\nb,caf\xe9,test\n')
  with pytest.raises(layout.LayoutError) as error:
    layout.read_layout(root)
  assert str(error.value).startswith(
      f'{root / "labels.csv"}:3: byte 0xe9 (byte 6 of the line) is not UTF-8 text'
  )


# MARK: messages


@pytest.mark.slow
def test_missing_stage_hint_keeps_values_in_both_flag_forms(tmp_path, synthetic_data_dir, env):
  workdir = str(tmp_path / 'run')
  flags = override_flags({'data_dir': synthetic_data_dir})
  spaced = [part for flag in flags[:2] for part in flag.split('=', 1)]  # `--config.key value`
  proc = python(
      ['-m', 'modistill_jax.train', '--config=configs/demo.py:step2', f'--workdir={workdir}']
      + spaced
      + flags[2:],
      env,
  )
  assert proc.returncode == 1
  hint = next(line for line in proc.stderr.splitlines() if 'modistill_jax.train' in line)
  assert hint.split()[-len(flags) :] == flags
