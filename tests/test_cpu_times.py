"""`pytest --cpu-times` (tests/conftest.py) and its tables (tools/cpu_times.py)."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

sys.path.insert(0, str(pathlib.Path(REPO_ROOT) / 'tools'))

import cpu_times  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position

RECORDS = [
    {'id': 'tests/a.py::x', 'cpu_s': 2.0, 'subprocess_cpu_s': 10.0, 'wall_s': 15.0},
    {'id': 'tests/a.py::y@group', 'cpu_s': 1.0, 'subprocess_cpu_s': 0.0, 'wall_s': 1.5},
    {'id': 'tests/b.py::z', 'cpu_s': 5.0, 'subprocess_cpu_s': 0.0, 'wall_s': 9.0},
]


def test_tables_add_up_per_file_and_rank_the_tests(tmp_path):
  path = tmp_path / 'cpu.jsonl'
  path.write_text(''.join(json.dumps(r) + '\n' for r in RECORDS))
  lines = cpu_times.tables(cpu_times.read(str(path)), top=2).splitlines()
  assert lines[0] == '3 tests, 18 CPU seconds (10 of them in subprocesses)'
  assert lines[4:6] == ['| 13.0 | 10.0 | 2 | `tests/a.py` |', '| 5.0 | 0.0 | 1 | `tests/b.py` |']
  assert lines[-2:] == [
      '| 12.0 | 10.0 | 15.0 | `tests/a.py::x` |',
      '| 5.0 | 0.0 | 9.0 | `tests/b.py::z` |',
  ]


@pytest.mark.slow
def test_option_writes_one_record_per_test_with_its_subprocesses(tmp_path):
  """A session of two tests, one of which spins a subprocess for about half a CPU second; then
  `python -m tools.cpu_times` on what it wrote."""
  (tmp_path / 'test_inner.py').write_text(
      'import subprocess, sys\n'
      'def test_spins():\n'
      "  subprocess.run([sys.executable, '-c', "
      "'import time\\nt = time.process_time()\\nwhile time.process_time() - t < 0.5: pass'], "
      'check=True)\n'
      'def test_idle():\n'
      '  pass\n'
  )
  path = tmp_path / 'cpu.jsonl'
  done = subprocess.run(
      [
          sys.executable,
          '-m',
          'pytest',
          '-q',
          '-p',
          'no:cacheprovider',
          '-p',
          'conftest',  # the option's home, as a plugin: the inner tests sit outside tests/
          f'--cpu-times={path}',
          str(tmp_path / 'test_inner.py'),
      ],
      cwd=os.path.join(REPO_ROOT, 'tests'),
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
  records = {r['id'].rsplit('::', 1)[1]: r for r in cpu_times.read(str(path))}
  assert set(records) == {'test_spins', 'test_idle'}
  assert 0.45 <= records['test_spins']['subprocess_cpu_s'] < 5
  assert records['test_idle']['subprocess_cpu_s'] == 0
  assert records['test_spins']['wall_s'] >= 0.45
  # The tables' command, as docs/testing.md shows it.
  tables = subprocess.run(
      [sys.executable, '-m', 'tools.cpu_times', str(path)],
      cwd=REPO_ROOT,
      capture_output=True,
      text=True,
      timeout=60,
      check=False,
  )
  assert tables.returncode == 0, tables.stderr[-3000:]
  assert tables.stdout.startswith('2 tests, '), tables.stdout
  assert tables.stdout.rstrip().splitlines()[-2].endswith('::test_spins` |'), tables.stdout
