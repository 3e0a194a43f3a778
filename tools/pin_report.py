"""Adds the packages of a `pip install --dry-run --report` to constraints.txt.

`make lock` installs the runtime and the test extras and freezes them; the
extras no machine here can install whole (`cuda`, `tpu`, `dataflow`, `notebook`:
GBs of GPU wheels, a TPU runtime) are then resolved by pip without installing,
against those pins, and this script prints the file with that resolution
merged in. A pin already in the file is kept as it is, so the versions the
README's numbers were computed with never move here; a resolution that
disagrees with one fails instead.

  python tools/pin_report.py REPORT.json constraints.txt > constraints.txt.new
"""

import json
import re
import sys


def canonical(name: str) -> str:
  """A package name as pip compares them (PEP 503)."""
  return re.sub(r'[-_.]+', '-', name).lower()


def merge(report: dict, lines: list[str]) -> list[str]:
  """The constraints file's lines with every package of `report` pinned, comments first."""
  comments = [line for line in lines if line.startswith('#')]
  pins = {}
  for line in lines:
    if line.strip() and not line.startswith('#'):
      name, version = line.strip().split('==')
      pins[canonical(name)] = (name, version)
  for item in report['install']:
    meta = item['metadata']
    key = canonical(meta['name'])
    if item.get('download_info', {}).get('dir_info', {}).get('editable'):
      continue  # the project itself
    if key in pins and pins[key][1] != meta['version']:
      raise SystemExit(
          f'{meta["name"]}: the resolution chose {meta["version"]}, constraints.txt pins '
          f'{pins[key][1]}; resolve again with `make lock`.'
      )
    pins.setdefault(key, (meta['name'], meta['version']))
  body = sorted((f'{name}=={version}' for name, version in pins.values()), key=str.lower)
  return comments + body


def main(argv: list[str]) -> None:
  if len(argv) != 3:
    raise SystemExit(__doc__)
  with open(argv[1]) as f:
    report = json.load(f)
  with open(argv[2]) as f:
    lines = f.read().splitlines()
  print('\n'.join(merge(report, lines)))


if __name__ == '__main__':
  main(sys.argv)
