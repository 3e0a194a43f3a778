"""Pytest fixtures: a local Google Cloud Storage emulator, and the settings pointing clients at it.

`gcs_emulator` (session) starts `gcp-storage-emulator` (PyPI, the `test`
extra) as a real server process on 127.0.0.1 on a free port, and stops it
after the session; `gcs_bucket` (per test) creates an empty bucket on it and
points this process's clients at the emulator for the test. A test module uses
them by importing both names:

    from gcs_emulator import gcs_bucket, gcs_emulator  # pylint: disable=unused-import

Subprocesses get the same settings from `gcs_emulator.env`.

Each client library finds a GCS endpoint its own way; measured with etils
1.15, gcsfs 2026.10, TensorStore 0.1.86, array-record 0.8.6, TensorFlow 2.21:

* `etils.epath` (`gs://`) uses `tf.io.gfile` whenever TensorFlow is
  installed, and TensorFlow's GCS file system has `https://www.googleapis.com`
  built in (no endpoint override). `EPATH_USE_TF=false` makes epath use fsspec
  (gcsfs), which reads `STORAGE_EMULATOR_HOST`.
* TensorStore (Orbax's array storage): `TENSORSTORE_GCS_HTTP_URL`, and
  `GOOGLE_AUTH_TOKEN_FOR_TESTING` in place of credentials.
* ArrayRecord (TFDS data sources, Grain) reads `gs://` through the
  google-cloud-cpp storage client: `CLOUD_STORAGE_EMULATOR_ENDPOINT`. Without
  it, opening a `gs://` shard waits minutes for Google's metadata server.
* google-cloud-storage (tensorboardX's own `gs://` writer): `STORAGE_EMULATOR_HOST`.

The variables are read when each library first opens a `gs://` path (gcsfs
when imported), so a process should have them before its first `gs://` use.

The emulator (2026.7.19) answers a download without the object's generation
(`x-goog-generation`, which GCS sends); TensorStore then fails the next
conditional read of a checkpoint it wrote (`Malformed StorageGeneration`
reading an OCDBT manifest), so this module runs the server itself (`python
gcs_emulator.py --port N`) with its download handler adding that header. The
emulator also ignores write preconditions (`ifGenerationMatch`), on which the
run folder's lock relies (`runs.JobLock`: several hosts racing for one object);
here uploads and deletes honour them as GCS does. It lacks GCS's `moveTo`, so
gcsfs renames fall back to copy and delete after ~35 s of retries.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
import dataclasses
import http
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid

from etils.epath import gpath
import pytest

START_TIMEOUT_S = 60


@dataclasses.dataclass(frozen=True)
class GcsEmulator:
  """A running emulator.

  Attributes:
    url: its HTTP endpoint, e.g. `http://127.0.0.1:40123`.
    env: the environment variables that point every client library at it.
  """

  url: str
  env: dict[str, str]

  def create_bucket(self, name: str) -> str:
    """Creates bucket `name`; returns `gs://name`."""
    request = urllib.request.Request(
        f'{self.url}/storage/v1/b?project=test',
        data=json.dumps({'name': name}).encode(),
        headers={'Content-Type': 'application/json'},
        method='POST',
    )
    with urllib.request.urlopen(request, timeout=10) as response:
      if response.status != 200:
        raise RuntimeError(f'Creating bucket {name} on {self.url}: HTTP {response.status}.')
    return f'gs://{name}'


def client_env(url: str) -> dict[str, str]:
  """The variables that point each client library at the emulator at `url` (module docstring)."""
  return {
      'STORAGE_EMULATOR_HOST': url,
      'CLOUD_STORAGE_EMULATOR_ENDPOINT': url,
      'TENSORSTORE_GCS_HTTP_URL': url,
      'GOOGLE_AUTH_TOKEN_FOR_TESTING': 'emulator',
      'EPATH_USE_TF': 'false',
      # gcsfs would otherwise ask GCS's control plane (unreachable) for each
      # operation whether the bucket is zonal, and log a warning each time.
      'GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT': 'false',
  }


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _answers(url: str) -> bool:
  try:
    with urllib.request.urlopen(f'{url}/storage/v1/b', timeout=2) as response:
      return response.status == 200
  except (urllib.error.URLError, ConnectionError, TimeoutError):
    return False


def _stop(process: subprocess.Popen) -> None:
  process.terminate()
  try:
    process.wait(timeout=10)
  except subprocess.TimeoutExpired:
    process.kill()
    process.wait()


@pytest.fixture(scope='session')
def gcs_emulator() -> Iterator[GcsEmulator]:
  """A GCS emulator server process on 127.0.0.1, for the whole test session."""
  port = _free_port()
  url = f'http://127.0.0.1:{port}'
  command = [sys.executable, os.path.abspath(__file__), '--port', str(port)]
  with tempfile.TemporaryFile('w+') as log:
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
      deadline = time.monotonic() + START_TIMEOUT_S
      while not _answers(url):
        if process.poll() is not None or time.monotonic() > deadline:
          log.seek(0)
          state = (
              f'exited with status {process.returncode}'
              if process.poll() is not None
              else f'did not answer on {url} within {START_TIMEOUT_S} s'
          )
          pytest.fail(
              f'The GCS emulator `{" ".join(command)}` {state}; its output:\n'
              f'{log.read()}\n(it comes with the test extra: pip install -e ".[test]")',
              pytrace=False,
          )
        time.sleep(0.2)
      yield GcsEmulator(url=url, env=client_env(url))
    finally:
      _stop(process)


def _reset_epath_backend_choice() -> None:
  # epath decides once per process whether `gs://` goes through TensorFlow,
  # reading EPATH_USE_TF then (a cached private function of etils 1.x).
  gpath._is_tf_installed.cache_clear()  # pylint: disable=protected-access


@pytest.fixture
def gcs_bucket(gcs_emulator, monkeypatch) -> Iterator[str]:
  """`gs://<a new empty bucket>`, with this process's clients pointed at the emulator."""
  for name, value in gcs_emulator.env.items():
    monkeypatch.setenv(name, value)
  _reset_epath_backend_choice()
  yield gcs_emulator.create_bucket(f'test-{uuid.uuid4().hex[:16]}')
  monkeypatch.undo()
  _reset_epath_backend_choice()


_PRECONDITIONS = threading.Lock()


def _honouring_preconditions(handler):
  """`handler` (an object upload or delete) answering 412 where `ifGenerationMatch` fails.

  GCS compares the object's generation (0: no object) with the request's before
  it writes; the check and the write are one step here too, under one lock.
  """
  from gcp_storage_emulator.exceptions import NotFound  # pylint: disable=g-import-not-at-top

  def checked(request, response, storage, *args, **kwargs):
    wanted = request.query.get('ifGenerationMatch')
    if not wanted:
      return handler(request, response, storage, *args, **kwargs)
    with _PRECONDITIONS:
      name = request.params.get('object_id') or request.query.get('name', [None])[0]
      if name is None and isinstance(request.data, dict):
        name = request.data['meta'].get('name')
      try:
        generation = storage.get_file_obj(request.params['bucket_name'], name)['generation']
      except NotFound:
        generation = '0'
      if str(generation) != wanted[0]:
        response.status = http.HTTPStatus.PRECONDITION_FAILED
        response.json({'error': {'code': 412, 'message': 'conditionNotMet'}})
        return None
      return handler(request, response, storage, *args, **kwargs)

  return checked


def serve(port: int) -> None:
  """Runs the emulator in this process until interrupted, in memory, on 127.0.0.1:`port`.

  Its downloads carry the object's generation, as GCS's do (module docstring).
  """
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top

  download = objects.download

  def download_with_generation(request, response, storage, *args, **kwargs):
    download(request, response, storage, *args, **kwargs)
    if response.status in (http.HTTPStatus.OK, http.HTTPStatus.PARTIAL_CONTENT):
      obj = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
      response['x-goog-generation'] = obj['generation']
      response['x-goog-metageneration'] = obj['metageneration']

  objects.download = download_with_generation
  for name in ('insert', 'delete'):
    setattr(objects, name, _honouring_preconditions(getattr(objects, name)))
  # Imported only now: the server binds its routes to the handlers when imported.
  from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top

  server.create_server('127.0.0.1', port, in_memory=True).run()


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description=serve.__doc__)
  parser.add_argument('--port', type=int, required=True)
  serve(parser.parse_args().port)
