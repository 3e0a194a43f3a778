"""Tables of what the tests cost the machine, from `pytest --cpu-times=PATH` (tests/conftest.py).

On a machine whose cores the two pytest workers share, a test's wall time
depends on what ran beside it and counts waits on a shared fixture's lock; its
CPU seconds (the worker's threads and the subprocesses it waited for) do not,
and they add up to what the whole suite asks of the machine.

  python -m tools.cpu_times PATH [--top N]

prints, as Markdown, the total, the seconds per file and the N costliest tests.
"""

import argparse
import collections
import json


def read(path: str) -> list[dict]:
  """The records of a `--cpu-times` file, each with `total_s`: the test's CPU seconds in all."""
  with open(path) as f:
    records = [json.loads(line) for line in f if line.strip()]
  for r in records:
    r['total_s'] = r['cpu_s'] + r['subprocess_cpu_s']
  return records


def file_of(node_id: str) -> str:
  return node_id.split('::', 1)[0]


def tables(records: list[dict], top: int) -> str:
  """The total, the seconds per file (costliest first) and the `top` costliest tests."""
  per_file = collections.defaultdict(lambda: [0.0, 0.0, 0])
  for r in records:
    row = per_file[file_of(r['id'])]
    row[0] += r['cpu_s']
    row[1] += r['subprocess_cpu_s']
    row[2] += 1
  total = sum(r['total_s'] for r in records)
  lines = [
      f'{len(records)} tests, {total:,.0f} CPU seconds '
      f'({sum(r["subprocess_cpu_s"] for r in records):,.0f} of them in subprocesses)',
      '',
      '| CPU s | in subprocesses | tests | file |',
      '|---:|---:|---:|---|',
  ]
  for name, (own, sub, count) in sorted(per_file.items(), key=lambda kv: -sum(kv[1][:2])):
    lines.append(f'| {own + sub:,.1f} | {sub:,.1f} | {count} | `{name}` |')
  lines += ['', '| CPU s | in subprocesses | wall s | test |', '|---:|---:|---:|---|']
  for r in sorted(records, key=lambda r: -r['total_s'])[:top]:
    test_id = r['id'].split('@', 1)[0]  # without xdist's group suffix
    lines.append(
        f'| {r["total_s"]:,.1f} | {r["subprocess_cpu_s"]:,.1f} | {r["wall_s"]:,.1f} | `{test_id}` |'
    )
  return '\n'.join(lines)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('path', help='the file `pytest --cpu-times=PATH` wrote')
  parser.add_argument('--top', type=int, default=20, help='how many of the costliest tests')
  args = parser.parse_args()
  print(tables(read(args.path), args.top))


if __name__ == '__main__':
  main()
