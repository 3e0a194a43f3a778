"""xdist groups made from the fixtures the tests share, for `--dist loadgroup`.

Under `--dist loadgroup` the tests of one `xdist_group` run on one worker, one
after the other, and every other test on whichever worker is free. A module-
or class-scoped fixture is made once per worker that runs a test using it, so
the tests that share an expensive one belong in one group; the rest of their
file need not wait for that worker. `tests/conftest.py` calls these from its
`pytest_collection_modifyitems` (docs/testing.md, "Markers, groups and
workers").
"""

from __future__ import annotations

from collections.abc import Callable, Collection

import pytest


def expensive_fixtures(item, shareable: Collection[str]) -> list[str]:
  """The module- and class-scoped fixtures of `item`, those in `shareable` left out."""
  fixture_info = getattr(item, '_fixtureinfo', None)
  if fixture_info is None:
    return []
  return sorted(
      name
      for name, defs in fixture_info.name2fixturedefs.items()
      if name not in shareable and defs and defs[-1].scope in ('module', 'class')
  )


def group_names(items, shareable: Collection[str]) -> dict[int, str]:
  """A group for each test that shares an expensive fixture: `{index in items: name}`.

  Tests that share one (directly, or through a chain of tests that share
  others) form one group, named after the module and one of the fixtures; a
  test with an `xdist_group` mark of its own keeps it and gets none here.
  """
  parent = {}

  def root(key):
    while parent.setdefault(key, key) != key:
      key = parent[key]
    return key

  keys = {}
  for index, item in enumerate(items):
    if any(item.iter_markers('xdist_group')):
      continue
    names = expensive_fixtures(item, shareable)
    if names:
      keys[index] = [(item.module.__name__, name) for name in names]
      for key in keys[index][1:]:
        parent[root(key)] = root(keys[index][0])
  return {index: '{}:{}'.format(*root(item_keys[0])) for index, item_keys in keys.items()}


def mark_groups(items, shareable: Collection[str]) -> None:
  """Marks each test that shares an expensive fixture with its `group_names` group."""
  for index, name in group_names(items, shareable).items():
    items[index].add_marker(pytest.mark.xdist_group(name))


def group_of(item) -> str | None:
  """The group `--dist loadgroup` puts `item` in: its `xdist_group` names, sorted and joined."""
  marks = item.iter_markers('xdist_group')
  names = {str(m.args[0] if m.args else m.kwargs.get('name', 'default')) for m in marks}
  return '_'.join(sorted(names)) or None


def put_first(items, first: Callable[[object], bool]) -> None:
  """Reorders `items` (stably): the tests for which `first` holds, and their groups, first.

  xdist hands out the groups largest first, then the single tests in this
  order; long tests first make the workers' queues end close together.
  """
  groups = {group_of(item) for item in items if first(item)} - {None}
  items[:] = sorted(items, key=lambda item: not (first(item) or group_of(item) in groups))


def add_missing_suffixes(config, items) -> None:
  """Appends `@<group>` to the node ids of grouped tests where xdist's own hook could not.

  xdist's worker tells its scheduler a test's group by appending `@<group>` to
  the node id through `item._nodeid`, which pytest 9.2's structured node ids
  no longer read (pytest-xdist issue 1386): every test was then scheduled on
  its own. Call this after xdist's hook; it does nothing where xdist's suffix
  took, nor without `--dist loadgroup`.
  """
  if not getattr(config.option, 'loadgroup', False):
    return
  for item in items:
    group = group_of(item)
    if group and not item.nodeid.endswith(f'@{group}'):
      item._id = type(item._id).parse(f'{item.nodeid}@{group}')  # pylint: disable=protected-access
