"""The layering `tools/import_graph.py` reads: no circles, no import from a lower layer up."""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / 'tools'))

import import_graph  # noqa: E402  pylint: disable=g-import-not-at-top,wrong-import-position


def graph():
  files = import_graph.source_files()
  edges = import_graph.import_edges(files)
  loops = import_graph.circles(edges)
  return edges, loops, import_graph.layers(edges, loops)


def test_the_project_has_no_circles_and_no_upward_imports():
  edges, loops, layer = graph()
  assert loops == []
  assert import_graph.upward_imports(edges, layer) == []


def test_a_circle_is_found_and_its_imports_go_up():
  a, b, c = (pathlib.Path(f'modistill_jax/{n}.py') for n in 'abc')
  edges = {a: {b}, b: {a, c}, c: set()}
  loops = import_graph.circles(edges)
  layer = import_graph.layers(edges, loops)
  assert loops == [[a, b]]
  assert layer == {a: 1, b: 1, c: 0}
  assert import_graph.upward_imports(edges, layer) == [
      (a, b, 'inside a circle'),
      (b, a, 'inside a circle'),
  ]


def test_the_library_importing_the_builders_goes_up():
  library, builder = pathlib.Path('modistill_jax/x.py'), pathlib.Path('data_builders/y.py')
  edges = {library: {builder}, builder: set()}
  layer = import_graph.layers(edges, [])
  assert import_graph.upward_imports(edges, layer) == [
      (library, builder, 'library into data_builders/')
  ]


def test_function_level_and_from_imports_are_read():
  edges, _, _ = graph()
  feeding = pathlib.Path('modistill_jax/data/feeding.py')
  # `from modistill_jax.data import records` inside `ensure_dataset`.
  assert pathlib.Path('modistill_jax/data/records.py') in edges[feeding]
  loader = pathlib.Path('modistill_jax/finished_stage.py')
  below = {pathlib.Path('modistill_jax/runs.py'), pathlib.Path('modistill_jax/checkpointing.py')}
  assert below <= edges[loader]
