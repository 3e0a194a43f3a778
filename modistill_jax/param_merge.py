"""Loading parameters into a model's tree, with one readable diff when they don't fit.

Every cross-stage initialisation goes through `merge`: ImageNet weights into a
step-1 stream, step-1 streams into step 2, step 2's depth stream into step 3's
hallucination stream, and so on. It never guesses: a key the target has but the
source lacks, a key the source has but the target lacks, or a shape mismatch is
an error listing all such keys at once, unless the key matches one of the
`fresh` patterns (kept from the target's initialisation, e.g. a new classifier)
or `ignore` patterns (source keys dropped on purpose).

Keys are '/'-joined paths, e.g. `rgb/block2_unit1/temporal/kernel`; patterns are
regular expressions matched against the whole path.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
import re
from typing import Any

import flax.traverse_util
import numpy as np


def flatten(tree: Mapping[str, Any]) -> dict[str, Any]:
  return flax.traverse_util.flatten_dict(dict(tree), sep='/')


def unflatten(flat: Mapping[str, Any]) -> dict[str, Any]:
  return flax.traverse_util.unflatten_dict(dict(flat), sep='/')


def matches(key: str, patterns: Iterable[str]) -> bool:
  """Whether a '/'-joined key matches one of the patterns as a whole."""
  return any(re.fullmatch(p, key) for p in patterns)


class MergeError(ValueError):
  """The source does not fit the target; the message lists every offending key."""


def merge(
    target: Mapping[str, Any],
    source: Mapping[str, Any],
    *,
    fresh: Iterable[str] = (),
    ignore: Iterable[str] = (),
    what: str = 'checkpoint',
) -> dict[str, Any]:
  """Returns `target` with every leaf replaced by `source`'s, checked.

  Args:
    target: the freshly initialised tree (shapes and structure to fill).
    source: the loaded tree.
    fresh: patterns of target keys that keep their initial value; a source value
      for them is ignored.
    ignore: patterns of source keys that are dropped without complaint.
    what: name of the source, for the error message.

  Raises:
    MergeError: listing missing, unexpected and mis-shaped keys together.
  """
  fresh, ignore = tuple(fresh), tuple(ignore)
  flat_target, flat_source = flatten(target), flatten(source)
  missing = sorted(k for k in flat_target if k not in flat_source and not matches(k, fresh))
  unexpected = sorted(
      k for k in flat_source if k not in flat_target and not matches(k, ignore + fresh)
  )
  misshaped = sorted(
      f'{k}: {what} {np.shape(flat_source[k])} vs model {np.shape(flat_target[k])}'
      for k in flat_target
      if k in flat_source
      and not matches(k, fresh)
      and np.shape(flat_source[k]) != np.shape(flat_target[k])
  )
  if missing or unexpected or misshaped:
    lines = [f'{what} does not fit the model:']
    for title, keys in (
        ('missing from ' + what, missing),
        ('unexpected in ' + what, unexpected),
        ('shape mismatch', misshaped),
    ):
      if keys:
        lines.append(f'  {title} ({len(keys)}):')
        lines.extend(f'    {k}' for k in keys)
    raise MergeError('\n'.join(lines))
  merged = {
      k: (
          v
          if matches(k, fresh) or k not in flat_source
          else np.asarray(flat_source[k], dtype=np.asarray(v).dtype)
      )
      for k, v in flat_target.items()
  }
  return unflatten(merged)
