"""The project's import graph: files per layer, circles, and imports that go up.

  python tools/import_graph.py

Reads (with `ast`, importing nothing) every import between the project's own
files in `modistill_jax/`, `data_builders/`, `configs/` and
`notebooks/results.py`, tests left out, function-level imports included (they
bind a module as surely as a top-level one). A file's layer is the length of
the longest chain of imports below it: layer 0 imports no project file, and a
file may import only files on lower layers. A circle (files that import each
other, directly or round a loop) has no such order; its files share one layer
and every import inside it is counted as going up. The library
(`modistill_jax`) sits below the dataset builders (which write its record
layout) and the notebook, so an import from the library into one of them also
goes up. The configs are layered like any file: they import `config_lib`, and
the one command that runs a fixed config (`demo`) imports it from above.

The output is what docs/architecture.md records; the command exits 1 when a
circle or an upward import exists, so it can guard the layering.
"""

from __future__ import annotations

import ast
import collections
from collections.abc import Iterable
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCES = ('modistill_jax', 'data_builders', 'configs', 'notebooks/results.py')
TOP_PACKAGES = ('modistill_jax', 'data_builders', 'configs', 'notebooks')
# The library may import none of these: they are built on top of it.
ABOVE_LIBRARY = ('data_builders', 'notebooks')


def _is_test(path: pathlib.Path) -> bool:
  name = path.name
  return name.startswith('test_') or name.endswith('_test.py') or 'test_utils' in name


def source_files() -> list[pathlib.Path]:
  """The project's Python files that the graph covers, relative to the root, tests left out."""
  files = []
  for source in SOURCES:
    path = ROOT / source
    found = [path] if path.is_file() else sorted(path.rglob('*.py'))
    files.extend(f.relative_to(ROOT) for f in found if not _is_test(f))
  return files


def _module_file(module: str) -> pathlib.Path | None:
  """The file that `import module` loads, when it is one of the project's files."""
  if module.split('.')[0] not in TOP_PACKAGES:
    return None
  base = pathlib.Path(*module.split('.'))
  for candidate in (base.with_suffix('.py'), base / '__init__.py'):
    if (ROOT / candidate).is_file():
      return candidate
  return None


def _imported_files(tree: ast.Module, path: pathlib.Path) -> Iterable[pathlib.Path | None]:
  """The file each import statement anywhere in `path` loads (None: not a project file)."""
  package = list(path.parent.parts)
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      yield from (_module_file(alias.name) for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
      if node.level:  # Relative: `from . import x`, `from .a import b`.
        parts = package[: len(package) - node.level + 1]
        base = '.'.join(parts + ([node.module] if node.module else []))
      else:
        base = node.module or ''
      for alias in node.names:
        # `from package import name`: the submodule `name` if there is one, else the package.
        yield _module_file(f'{base}.{alias.name}') or _module_file(base)


def import_edges(files: list[pathlib.Path]) -> dict[pathlib.Path, set[pathlib.Path]]:
  """For each file, the project files it imports."""
  covered = set(files)
  edges = {}
  for path in files:
    tree = ast.parse((ROOT / path).read_text(), filename=str(path))
    edges[path] = {t for t in _imported_files(tree, path) if t in covered and t != path}
  return edges


def circles(edges: dict[pathlib.Path, set[pathlib.Path]]) -> list[list[pathlib.Path]]:
  """Strongly connected components of more than one file (Tarjan's algorithm)."""
  index, low, on_stack, stack, found = {}, {}, set(), [], []

  def visit(node):
    index[node] = low[node] = len(index)
    stack.append(node)
    on_stack.add(node)
    for target in sorted(edges[node]):
      if target not in index:
        visit(target)
        low[node] = min(low[node], low[target])
      elif target in on_stack:
        low[node] = min(low[node], index[target])
    if low[node] == index[node]:
      component = []
      while True:
        member = stack.pop()
        on_stack.discard(member)
        component.append(member)
        if member == node:
          break
      if len(component) > 1:
        found.append(sorted(component))

  for node in sorted(edges):
    if node not in index:
      visit(node)
  return found


def layers(
    edges: dict[pathlib.Path, set[pathlib.Path]], loops: list[list[pathlib.Path]]
) -> dict[pathlib.Path, int]:
  """Each file's layer: the longest import chain below it, a circle counted as one file."""
  group = {f: f for f in edges}
  for loop in loops:
    for member in loop:
      group[member] = loop[0]
  below = collections.defaultdict(set)
  for source, targets in edges.items():
    below[group[source]].update(group[t] for t in targets if group[t] != group[source])
  memo = {}

  def height(node):
    if node not in memo:
      memo[node] = 1 + max((height(t) for t in below[node]), default=-1)
    return memo[node]

  return {f: height(group[f]) for f in edges}


def upward_imports(
    edges: dict[pathlib.Path, set[pathlib.Path]], layer: dict[pathlib.Path, int]
) -> list[tuple[pathlib.Path, pathlib.Path, str]]:
  """Imports that do not go down: inside a circle, or from the library into what sits above it."""
  found = []
  for source, targets in sorted(edges.items()):
    for target in sorted(targets):
      if layer[target] >= layer[source]:
        found.append((source, target, 'inside a circle'))
      elif source.parts[0] == 'modistill_jax' and target.parts[0] in ABOVE_LIBRARY:
        found.append((source, target, f'library into {target.parts[0]}/'))
  return found


def main() -> int:
  files = source_files()
  edges = import_edges(files)
  loops = circles(edges)
  layer = layers(edges, loops)
  up = upward_imports(edges, layer)
  by_layer = collections.defaultdict(list)
  for path, number in layer.items():
    by_layer[number].append(path)
  for number in sorted(by_layer):
    names = ' '.join(str(p) for p in sorted(by_layer[number]))
    print(f'layer {number}: {names}')
  print()
  for loop in loops:
    print('circle: ' + ' <-> '.join(str(p) for p in loop))
  for source, target, why in up:
    print(f'upward import: {source} -> {target} ({why})')
  imports = sum(len(t) for t in edges.values())
  print(
      f'{len(files)} files, {imports} imports, {len(by_layer)} layers, '
      f'{len(loops)} circles, {len(up)} upward imports'
  )
  return 1 if loops or up else 0


if __name__ == '__main__':
  sys.exit(main())
