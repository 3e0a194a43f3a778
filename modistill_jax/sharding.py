"""Data parallelism over every device of every host: a 1-D mesh named 'data'.

The step is `jax.jit` over global arrays: the batch is sharded along its first
axis over the mesh, params and optimizer state are replicated. This is what
`jax.pmap` is implemented with since JAX 0.8 (pmap is in maintenance mode), and
gradients need no explicit all-reduce: the loss is a mean over the global batch,
so XLA inserts the reductions. For the same reason BatchNorm statistics are
computed over the global batch, and results do not depend on how many devices
share it (the reference's per-GPU BatchNorm on one GPU is the 1-device case).

Each host feeds only its slice of the global batch (`input_pipeline` reads a
per-host share of the records); `to_global` assembles the slices into one array.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

DATA_AXIS = 'data'


def make_mesh() -> Mesh:
  # Auto axes let XLA propagate the batch sharding through the frame/clip reshapes.
  return jax.make_mesh(
      (jax.device_count(),), (DATA_AXIS,), axis_types=(jax.sharding.AxisType.Auto,)
  )


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def data_sharded(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P(DATA_AXIS))


def abstract(tree: Any, placement: jax.sharding.Sharding | None) -> Any:
  """`tree`'s arrays as shapes and dtypes placed by `placement`: what `jitted.lower` takes."""
  return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=placement), tree)


def check_batch_size(global_batch_size: int, mesh: Mesh, what: str = 'batch_size') -> None:
  """Fails with the numbers when a global batch cannot be split evenly."""
  devices, hosts = mesh.devices.size, jax.process_count()
  if global_batch_size % devices or global_batch_size % hosts:
    raise ValueError(
        f'config.{what}={global_batch_size} clips must divide over {devices} devices '
        f'on {hosts} host(s); use a multiple of {np.lcm(devices, hosts)}.'
    )


def to_global(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
  """This host's slice of a batch -> global arrays sharded over the data axis."""
  sharding = data_sharded(mesh)
  return {
      k: jax.make_array_from_process_local_data(sharding, np.asarray(v)) for k, v in batch.items()
  }


def fetch(tree: Any) -> Any:
  """Global arrays -> numpy on every host (gathers other hosts' shards)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top

  return multihost_utils.process_allgather(tree, tiled=True)
