"""MetricWriter: metrics.jsonl and TensorBoard events in a local or a gs:// stage folder.

The gs:// cases run against a local GCS emulator (`gcs_emulator.py`).
"""

import json
import os
import struct
import urllib.request

from etils import epath
import jax
import pytest
from tensorboardX.proto import event_pb2

from modistill_jax import metrics as metrics_lib


# On the local GCS server: `slow`, as every test of it (tests/conftest.py).
@pytest.fixture(params=['local', pytest.param('gs', marks=pytest.mark.slow)])
def stage_dir(request, tmp_path) -> str:
  if request.param == 'local':
    return str(tmp_path / 'run' / 'step1')
  return request.getfixturevalue('gcs_bucket') + '/run/step1'


def read_events(path: epath.Path) -> list[event_pb2.Event]:
  """The events of a TensorBoard event file (TFRecord framing: length, CRC, data, CRC)."""
  data, events, offset = path.read_bytes(), [], 0
  while offset < len(data):
    (length,) = struct.unpack('<Q', data[offset : offset + 8])
    events.append(event_pb2.Event.FromString(data[offset + 12 : offset + 12 + length]))
    offset += 12 + length + 4
  return events


def scalars(events: list[event_pb2.Event]) -> list[tuple[int, str, float]]:
  return [(e.step, v.tag, v.simple_value) for e in events for v in e.summary.value]


def event_files(stage_dir: str) -> list[epath.Path]:
  return sorted((epath.Path(stage_dir) / 'events').iterdir())


def write_steps(writer: metrics_lib.MetricWriter, steps, session: int) -> None:
  for step in steps:
    writer.write(step, 'train', {'loss': session * 100 + step})
    if step % 4 == 0:
      writer.write(step, 'validation', {'accuracy/fused': session + step / 10})


def test_records_and_events_reach_the_stage_folder(stage_dir):
  writer = metrics_lib.MetricWriter(stage_dir)
  write_steps(writer, range(1, 6), session=1)
  writer.close()
  records = metrics_lib.read_jsonl(epath.Path(stage_dir) / 'metrics.jsonl')
  assert [(r['step'], r['split']) for r in records] == [
      (1, 'train'),
      (2, 'train'),
      (3, 'train'),
      (4, 'train'),
      (4, 'validation'),
      (5, 'train'),
  ]
  assert records[4]['accuracy/fused'] == pytest.approx(1.4)
  (events,) = event_files(stage_dir)
  assert scalars(read_events(events)) == [
      (1, 'train/loss', 101.0),
      (2, 'train/loss', 102.0),
      (3, 'train/loss', 103.0),
      (4, 'train/loss', 104.0),
      (4, 'validation/accuracy/fused', pytest.approx(1.4)),
      (5, 'train/loss', 105.0),
  ]


def test_a_resumed_run_holds_each_step_once(stage_dir):
  first = metrics_lib.MetricWriter(stage_dir, start_step=0)
  write_steps(first, range(1, 7), session=1)
  first.close()
  # Resumed from a checkpoint at step 3: steps 4-6 are trained and written again.
  second = metrics_lib.MetricWriter(stage_dir, start_step=3)
  write_steps(second, range(4, 9), session=2)
  second.close()
  records = metrics_lib.read_jsonl(epath.Path(stage_dir) / 'metrics.jsonl')
  assert [(r['step'], r['split'], r.get('loss')) for r in records] == [
      (1, 'train', 101),
      (2, 'train', 102),
      (3, 'train', 103),
      (4, 'train', 204),
      (4, 'validation', None),
      (5, 'train', 205),
      (6, 'train', 206),
      (7, 'train', 207),
      (8, 'train', 208),
      (8, 'validation', None),
  ]
  # TensorBoard keeps both event files; the second starts with the marker that
  # hides the first one's events from step 4 on.
  old, new = event_files(stage_dir)
  assert [s for s, _, _ in scalars(read_events(old))] == [1, 2, 3, 4, 4, 5, 6]
  (start,) = [e for e in read_events(new) if e.HasField('session_log')]
  assert (start.session_log.status, start.step) == (event_pb2.SessionLog.START, 4)


def test_a_fresh_start_drops_an_interrupted_sessions_records(stage_dir):
  first = metrics_lib.MetricWriter(stage_dir)
  write_steps(first, range(1, 3), session=1)
  first.close()
  second = metrics_lib.MetricWriter(stage_dir, start_step=0)
  write_steps(second, range(1, 2), session=2)
  second.close()
  records = metrics_lib.read_jsonl(epath.Path(stage_dir) / 'metrics.jsonl')
  assert [(r['step'], r['loss']) for r in records] == [(1, 201)]


def test_remote_folder_syncs_training_records_in_batches(gcs_emulator, gcs_bucket):
  stage_dir = epath.Path(gcs_bucket) / 'run' / 'step1'
  writer = metrics_lib.MetricWriter(stage_dir, sync_every_s=3600)
  writer.write(1, 'train', {'loss': 1.0})
  writer.write(2, 'train', {'loss': 2.0})
  assert not (stage_dir / 'metrics.jsonl').exists()  # waits for the next sync
  writer.write(2, 'validation', {'accuracy/fused': 0.5})  # synced at once
  assert [r['step'] for r in metrics_lib.read_jsonl(stage_dir / 'metrics.jsonl')] == [1, 2, 2]
  writer.write(3, 'train', {'loss': 3.0})
  writer.close()
  assert [r['step'] for r in metrics_lib.read_jsonl(stage_dir / 'metrics.jsonl')] == [1, 2, 2, 3]
  # The objects are in the emulator's bucket, as its own JSON API lists them.
  bucket = gcs_bucket.removeprefix('gs://')
  with urllib.request.urlopen(f'{gcs_emulator.url}/storage/v1/b/{bucket}/o') as response:
    names = [item['name'] for item in json.load(response)['items']]
  assert 'run/step1/metrics.jsonl' in names
  assert [n for n in names if n.startswith('run/step1/events/events.out.tfevents.')]
  local_events = writer._local_events  # pylint: disable=protected-access
  assert local_events and not os.path.exists(local_events)  # the local copy is removed


def test_writer_of_another_process_writes_nothing(tmp_path, monkeypatch):
  monkeypatch.setattr(jax, 'process_index', lambda: 1)
  writer = metrics_lib.MetricWriter(str(tmp_path / 'stage'))
  writer.write(1, 'train', {'loss': 1.0})
  writer.close()
  assert not (tmp_path / 'stage').exists()
