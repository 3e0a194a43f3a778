"""Pytest fixtures: a local Google Cloud Storage emulator, and the settings pointing clients at it.

`gcs_emulator` (session) starts `gcp-storage-emulator` (PyPI, the `test`
extra) as a real server process on 127.0.0.1 on a free port, and stops it
after the session (`running_emulator` does the same outside pytest, for
`tools/pipeline_speed.py`); `gcs_bucket` (per test) creates an empty bucket on
it and points this process's clients at the emulator for the test. A test
module uses them by importing both names:

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

Two more changes serve the measurement of bytes read from `gs://`
(docs/performance.md, "Bytes from storage per training clip"):

* A suffix range, `Range: bytes=-N` (the last N bytes, which ArrayRecord's GCS
  reader asks for to read a shard's footer), is answered with those bytes, as
  GCS does; the emulator otherwise served the whole object, and a shard file
  over 1 MiB then did not open.
* The server counts the download requests it answers and the body bytes it
  sends, read with `GcsEmulator.downloads()` (an internal route, `GET
  /_downloads`, as the emulator's own `/wipe` is).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
import contextlib
import dataclasses
import http
import json
import os
import re
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


# The internal route that reports `Downloads` (not part of GCS's API).
DOWNLOADS_ROUTE = '/_downloads'


@dataclasses.dataclass(frozen=True)
class Downloads:
  """Object downloads a server answered: how many, and the bytes of their bodies.

  Attributes:
    requests: download requests answered with the object's bytes (200 or 206).
    bytes: the bytes of those responses' bodies.
  """

  requests: int
  bytes: int

  def __sub__(self, earlier: Downloads) -> Downloads:
    return Downloads(self.requests - earlier.requests, self.bytes - earlier.bytes)


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

  def downloads(self) -> Downloads:
    """The downloads the server has answered since it started (differences measure a span)."""
    with urllib.request.urlopen(f'{self.url}{DOWNLOADS_ROUTE}', timeout=10) as response:
      return Downloads(**json.load(response))


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


class EmulatorDidNotStart(RuntimeError):
  """The emulator server exited or did not answer in time; the message has its output."""


@contextlib.contextmanager
def running_emulator() -> Iterator[GcsEmulator]:
  """A GCS emulator server process on 127.0.0.1 on a free port, stopped on leaving."""
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
          raise EmulatorDidNotStart(
              f'The GCS emulator `{" ".join(command)}` {state}; its output:\n'
              f'{log.read()}\n(it comes with the test extra: pip install -e ".[test]")'
          )
        time.sleep(0.2)
      yield GcsEmulator(url=url, env=client_env(url))
    finally:
      _stop(process)


@pytest.fixture(scope='session')
def gcs_emulator() -> Iterator[GcsEmulator]:
  """A GCS emulator server process on 127.0.0.1, for the whole test session."""
  try:
    with running_emulator() as emulator:
      yield emulator
  except EmulatorDidNotStart as e:
    pytest.fail(str(e), pytrace=False)


def reset_epath_backend_choice() -> None:
  # epath decides once per process whether `gs://` goes through TensorFlow,
  # reading EPATH_USE_TF then (a cached private function of etils 1.x).
  gpath._is_tf_installed.cache_clear()  # pylint: disable=protected-access


@pytest.fixture
def gcs_bucket(gcs_emulator, monkeypatch) -> Iterator[str]:
  """`gs://<a new empty bucket>`, with this process's clients pointed at the emulator."""
  for name, value in gcs_emulator.env.items():
    monkeypatch.setenv(name, value)
  reset_epath_backend_choice()
  yield gcs_emulator.create_bucket(f'test-{uuid.uuid4().hex[:16]}')
  monkeypatch.undo()
  reset_epath_backend_choice()


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


def _bounded_suffix_range(request, storage) -> None:
  """Rewrites a suffix range `bytes=-N` into `bytes=START-`, the last N bytes of the object.

  The emulator's own download matches only `bytes=START-[END]`; GCS answers a
  suffix range with the last N bytes (all of them when N exceeds the size).
  """
  headers = request._request_handler.headers  # pylint: disable=protected-access
  match = re.fullmatch(r'\s*bytes=-(\d+)\s*', headers.get('range', ''))
  if match:
    size = len(storage.get_file(request.params['bucket_name'], request.params['object_id']))
    del headers['range']
    headers['range'] = f'bytes={max(0, size - int(match.group(1)))}-'


def serve(port: int) -> None:
  """Runs the emulator in this process until interrupted, in memory, on 127.0.0.1:`port`.

  Its downloads carry the object's generation and answer suffix ranges, as
  GCS's do, and are counted (module docstring).
  """
  from gcp_storage_emulator.exceptions import NotFound  # pylint: disable=g-import-not-at-top
  from gcp_storage_emulator.handlers import objects  # pylint: disable=g-import-not-at-top

  download = objects.download
  # The server answers one request at a time (http.server.HTTPServer), so no lock.
  served = {'requests': 0, 'bytes': 0}

  def download_as_gcs_does(request, response, storage, *args, **kwargs):
    try:
      _bounded_suffix_range(request, storage)
    except NotFound:
      pass  # the download answers 404
    download(request, response, storage, *args, **kwargs)
    if response.status in (http.HTTPStatus.OK, http.HTTPStatus.PARTIAL_CONTENT):
      obj = storage.get_file_obj(request.params['bucket_name'], request.params['object_id'])
      response['x-goog-generation'] = obj['generation']
      response['x-goog-metageneration'] = obj['metageneration']
      served['requests'] += 1
      served['bytes'] += len(response._content)  # pylint: disable=protected-access

  def report_downloads(request, response, storage, *args, **kwargs):
    del request, storage, args, kwargs
    response.json(served)

  objects.download = download_as_gcs_does
  for name in ('insert', 'delete'):
    setattr(objects, name, _honouring_preconditions(getattr(objects, name)))
  # Imported only now: the server binds its routes to the handlers when imported.
  from gcp_storage_emulator import server  # pylint: disable=g-import-not-at-top

  server.HANDLERS = ((rf'^{DOWNLOADS_ROUTE}$', {'GET': report_downloads}), *server.HANDLERS)
  server.create_server('127.0.0.1', port, in_memory=True).run()


if __name__ == '__main__':
  parser = argparse.ArgumentParser(description=serve.__doc__)
  parser.add_argument('--port', type=int, required=True)
  serve(parser.parse_args().port)
