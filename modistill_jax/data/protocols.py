"""Evaluation protocols as unions of each builder's splits.

Every builder writes each sample once, into one "atomic" split named after the
roles the sample plays in the dataset's protocols; a protocol's train,
validation and test sets are unions of atomic splits, which TFDS reads as a
split expression (`'a+b+c'`). So NTU is not written once per protocol.

* `ntu_rgbd`: atomic split `cs{role}_cv{role}` with roles train/val/test, e.g.
  `cstrain_cvtest`. Cross-subject: the reference's 19 training subjects /
  subject 1 as validation / the 20 standard test subjects. Cross-view: cameras
  2 and 3 / the reference's 31-per-class seeded validation draw from them /
  camera 1.
* `nw_ucla`: `view1`, `view2`, `view3`; `uwa3dii`: `view1` ... `view4`.
  Protocol `views{train}_{test}` trains on the listed views and tests on the
  others named, e.g. `views12_3` (NW-UCLA default) and `views123_4` (UWA3DII
  default). The reference used no validation set for these two.
* `synthetic_rgbd`: a build is made for one protocol and holds its splits:
  `train`, `validation`, `test` for `cross_view` (the test split is one
  camera), `cs_train`, `cs_validation`, `cs_test` for `cross_subject` (the
  test split is held-out subjects from every camera); see its builder. A build
  read with the other protocol is refused, naming the splits it holds.
* Any dataset built from your own folder (`data_builders/custom_rgbd`), whatever
  its name: `train`, `validation`, `test` as its labels.csv says. Protocol
  `csv_splits` reads them as they are, for every dataset name; a split no
  sample was given is absent, so without validation rows there is no
  validation set (as for NW-UCLA).
"""

from __future__ import annotations

from collections.abc import Mapping
import dataclasses
import itertools
import re

SPLITS = ('train', 'validation', 'test')
CSV_SPLITS = 'csv_splits'
ROLES = ('train', 'val', 'test')


@dataclasses.dataclass(frozen=True)
class Protocol:
  """Atomic split names making up each of a protocol's splits."""

  train: tuple[str, ...]
  validation: tuple[str, ...]
  test: tuple[str, ...]

  def atomic_splits(self, split: str) -> tuple[str, ...]:
    if split not in SPLITS:
      raise ValueError(f'split must be one of {SPLITS}, got {split!r}')
    return getattr(self, split)


def ntu_atomic_split(cs_role: str, cv_role: str) -> str:
  assert cs_role in ROLES and cv_role in ROLES, (cs_role, cv_role)
  return f'cs{cs_role}_cv{cv_role}'


NTU_ATOMIC_SPLITS = tuple(ntu_atomic_split(a, b) for a, b in itertools.product(ROLES, ROLES))


def _ntu(axis: str) -> Protocol:
  def pick(role):
    return tuple(
        s
        for s in NTU_ATOMIC_SPLITS
        if re.fullmatch(rf'cs{role}_cv\w+' if axis == 'cs' else rf'cs\w+_cv{role}', s)
    )

  return Protocol(train=pick('train'), validation=pick('val'), test=pick('test'))


def views_protocol(name: str, num_views: int) -> Protocol:
  """`views12_3` -> train views 1, 2; test view 3; no validation."""
  match = re.fullmatch(r'views(\d+)_(\d+)', name)
  if not match:
    raise ValueError(f'A view protocol is named views<train views>_<test views>, got {name!r}.')
  train, test = (tuple(int(c) for c in g) for g in match.groups())
  views = set(train) | set(test)
  if set(train) & set(test) or not views <= set(range(1, num_views + 1)):
    raise ValueError(f'{name!r}: views must be disjoint and within 1..{num_views}.')
  return Protocol(
      train=tuple(f'view{v}' for v in train), validation=(), test=tuple(f'view{v}' for v in test)
  )


NUM_VIEWS = {'nw_ucla': 3, 'uwa3dii': 4}


def view_splits(dataset: str) -> tuple[str, ...]:
  """The atomic splits of a view-split dataset: `view1` ... `viewN`."""
  return tuple(f'view{v}' for v in range(1, NUM_VIEWS[dataset] + 1))


SYNTHETIC_PROTOCOLS = {
    'cross_view': Protocol(train=('train',), validation=('validation',), test=('test',)),
    'cross_subject': Protocol(
        train=('cs_train',), validation=('cs_validation',), test=('cs_test',)
    ),
}


DEFAULT_PROTOCOL = {
    'ntu_rgbd': 'cross_subject',
    'nw_ucla': 'views12_3',
    'uwa3dii': 'views123_4',
    'synthetic_rgbd': 'cross_view',
}


def get_protocol(dataset: str, name: str) -> Protocol:
  """The protocol `name` of TFDS dataset `dataset`."""
  if name == CSV_SPLITS:  # Datasets named by their users: the name cannot select the protocol.
    return Protocol(train=('train',), validation=('validation',), test=('test',))
  if dataset == 'ntu_rgbd':
    axes = {'cross_subject': 'cs', 'cross_view': 'cv'}
    if name not in axes:
      raise ValueError(f'NTU protocols are {sorted(axes)}, got {name!r}.')
    return _ntu(axes[name])
  if dataset in NUM_VIEWS:
    return views_protocol(name, NUM_VIEWS[dataset])
  if dataset == 'synthetic_rgbd':
    if name not in SYNTHETIC_PROTOCOLS:
      raise ValueError(f'synthetic_rgbd protocols are {sorted(SYNTHETIC_PROTOCOLS)}, got {name!r}.')
    return SYNTHETIC_PROTOCOLS[name]
  raise ValueError(
      f'Unknown dataset {dataset!r}; known: {sorted(DEFAULT_PROTOCOL)}, or any '
      f'dataset built by data_builders.custom_rgbd with protocol {CSV_SPLITS!r}.'
  )


def split_expression(
    dataset: str, protocol: str, split: str, split_sizes: Mapping[str, int]
) -> str | None:
  """TFDS split expression for a protocol's split, over the non-empty atomic splits.

  Args:
    split_sizes: the built dataset's `{split name: num_examples}`.

  Returns:
    e.g. `'cstrain_cvtrain+cstrain_cvval+cstrain_cvtest'`, or None when the
    protocol has no such split (no validation set) or all its parts are empty.

  Raises:
    ValueError: the build holds none of the protocol's atomic splits: it was
      made for another protocol (a `synthetic_rgbd` build is made for one).
  """
  chosen = get_protocol(dataset, protocol)
  every_part = {s for name in SPLITS for s in chosen.atomic_splits(name)}
  if split_sizes and not every_part & set(split_sizes):
    raise ValueError(
        f'The built {dataset} holds the splits {sorted(split_sizes)}, none of protocol '
        f'{protocol!r} ({sorted(every_part)}): set config.protocol to the one it was built for, '
        'or config.builder_config to a build made for this protocol.'
    )
  parts = [s for s in chosen.atomic_splits(split) if split_sizes.get(s, 0) > 0]
  return '+'.join(parts) if parts else None
