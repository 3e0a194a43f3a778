"""`--dist loadgroup` with `xdist_groups`: a shared fixture is made once, the other tests spread.

A pytest run of its own (two xdist workers) on a test file made here, whose
conftest calls `xdist_groups` as `tests/conftest.py` does: the tests that
share a module fixture must run on one worker and make it once, and the
independent tests of the same file must run on both workers. Both failed
silently before (pytest-xdist issue 1386: every test scheduled on its own).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import textwrap

import pytest

CONFTEST = """
import pytest
import xdist_groups

@pytest.hookimpl(wrapper=True)
def pytest_collection_modifyitems(config, items):
  xdist_groups.mark_groups(items, shareable={'cheap'})
  xdist_groups.put_first(items, lambda item: 'slow' in item.name)
  result = yield
  xdist_groups.add_missing_suffixes(config, items)
  return result
"""

TESTS = '''
import os
import time
import pytest

@pytest.fixture(scope='module')
def shared(tmp_path_factory):
  """Leaves one file per worker that makes it."""
  made = tmp_path_factory.getbasetemp().parent / 'made'
  made.mkdir(exist_ok=True)
  (made / os.environ['PYTEST_XDIST_WORKER']).touch()

@pytest.fixture(scope='module')
def cheap():
  return None

@pytest.mark.parametrize('i', range(4))
def test_slow_shares(shared, cheap, i):
  time.sleep(0.5)

@pytest.mark.parametrize('i', range(6))
def test_free(cheap, i):
  time.sleep(0.5)
'''


@pytest.mark.slow
def test_shared_fixture_is_made_once_and_the_rest_spreads(tmp_path):
  (tmp_path / 'conftest.py').write_text(textwrap.dedent(CONFTEST))
  (tmp_path / 'test_inner.py').write_text(textwrap.dedent(TESTS))
  env = {k: v for k, v in os.environ.items() if not k.startswith(('PYTEST_', 'COV_CORE'))}
  env['PYTHONPATH'] = os.path.dirname(os.path.abspath(__file__))
  basetemp = tmp_path / 'basetemp'
  done = subprocess.run(
      [
          sys.executable,
          '-m',
          'pytest',
          '-n',
          '2',
          '--dist',
          'loadgroup',
          '-v',
          '-p',
          'no:cacheprovider',
          f'--basetemp={basetemp}',
          'test_inner.py',
      ],
      cwd=tmp_path,
      env=env,
      capture_output=True,
      text=True,
      timeout=300,
      check=False,
  )
  assert done.returncode == 0, done.stdout + done.stderr
  ran = re.findall(
      r'\[(gw\d)\] \[\s*\d+%\] PASSED test_inner\.py::(test_\w+)\[(\d)\]@?(\S*)', done.stdout
  )
  assert len(ran) == 10, done.stdout
  shares = {(worker, group) for worker, name, _, group in ran if name == 'test_slow_shares'}
  assert shares in ({('gw0', 'test_inner:shared')}, {('gw1', 'test_inner:shared')}), done.stdout
  assert [p.name for p in (basetemp / 'made').iterdir()] == [next(iter(shares))[0]]
  free = {(worker, group) for worker, name, _, group in ran if name == 'test_free'}
  assert free == {('gw0', ''), ('gw1', '')}, done.stdout
