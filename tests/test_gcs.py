"""gs:// through a local GCS emulator: epath files, Orbax checkpoints, a built dataset.

Every check also lists the emulator's bucket through its own JSON API, so a
client that quietly wrote to local disk instead would fail the test.
"""

import json
import os
import urllib.request

from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from modistill_jax.data import pipeline
from modistill_jax.data import shards


def object_names(emulator, bucket: str) -> list[str]:
  """The bucket's object names, as the emulator itself lists them."""
  name = bucket.removeprefix('gs://')
  with urllib.request.urlopen(f'{emulator.url}/storage/v1/b/{name}/o') as response:
    return sorted(item['name'] for item in json.load(response).get('items', []))


def upload_tree(local: str, remote: epath.Path) -> None:
  for root, _, files in os.walk(local):
    for name in files:
      path = os.path.join(root, name)
      target = remote / os.path.relpath(path, local)
      target.parent.mkdir(parents=True, exist_ok=True)
      target.write_bytes(epath.Path(path).read_bytes())


def test_epath_files(gcs_emulator, gcs_bucket):
  folder = epath.Path(gcs_bucket) / 'run' / 'step1'
  folder.mkdir(parents=True, exist_ok=True)
  (folder / 'results.json').write_text('{"accuracy": 0.5}')
  (folder / 'predictions.npz').write_bytes(b'\x00\x01\x02')
  assert json.loads((folder / 'results.json').read_text()) == {'accuracy': 0.5}
  assert (folder / 'predictions.npz').read_bytes() == b'\x00\x01\x02'
  assert sorted(p.name for p in folder.iterdir()) == ['predictions.npz', 'results.json']
  assert object_names(gcs_emulator, gcs_bucket) == [
      'run/step1/predictions.npz',
      'run/step1/results.json',
  ]
  # No rename: gcsfs tries GCS's moveTo first, which the emulator lacks (HTTP
  # 501), and falls back to copy + delete only after ~35 s of retries.
  (folder / 'predictions.npz').unlink()
  assert not (folder / 'predictions.npz').exists()
  assert object_names(gcs_emulator, gcs_bucket) == ['run/step1/results.json']


def test_orbax_checkpoints(gcs_emulator, gcs_bucket):
  # Enough arrays that TensorStore updates the OCDBT manifest conditionally,
  # reading back the generation its earlier write got (see gcs_emulator.py).
  tree = {
      f'layer{i}': {
          'kernel': np.full((3, 4), i, np.float32),
          'bias': np.arange(4, dtype=np.float32) + i,
      }
      for i in range(40)
  }
  directory = epath.Path(gcs_bucket) / 'x'
  with ocp.CheckpointManager(directory, options=ocp.CheckpointManagerOptions(max_to_keep=2)) as mgr:
    for step in (1, 2, 3):
      mgr.save(step, args=ocp.args.StandardSave(jax.tree.map(lambda x, s=step: x * s, tree)))
    mgr.wait_until_finished()
  with ocp.CheckpointManager(directory) as mgr:
    assert mgr.all_steps() == [2, 3]
    restored = mgr.restore(3, args=ocp.args.StandardRestore(tree))
  jax.tree.map(np.testing.assert_array_equal, restored, jax.tree.map(lambda x: x * 3, tree))
  names = object_names(gcs_emulator, gcs_bucket)
  # TensorStore wrote the array data (OCDBT files) into the bucket too.
  assert 'x/3/commit_success.txt' in names and not [n for n in names if n.startswith('x/1/')]
  assert [n for n in names if n.startswith('x/3/default/ocdbt.process_0/d/')]


def test_built_dataset_on_gs(synthetic_data_dir, gcs_bucket):
  data_dir = f'{gcs_bucket}/tfds'
  upload_tree(synthetic_data_dir, epath.Path(data_dir))
  kwargs = dict(
      global_batch_size=2, num_frames=2, image_size=(16, 16), process_index=0, process_count=1
  )
  remote = pipeline.load_source('synthetic_rgbd', 'cross_view', 'test', data_dir=data_dir)
  local = pipeline.load_source('synthetic_rgbd', 'cross_view', 'test', data_dir=synthetic_data_dir)
  for remote_batch, local_batch in zip(
      pipeline.eval_iterator(remote.records, **kwargs),
      pipeline.eval_iterator(local.records, **kwargs),
      strict=True,
  ):
    for key in local_batch:
      np.testing.assert_array_equal(remote_batch[key], local_batch[key], err_msg=key)
  # A truncated shard on gs:// is caught when the split is opened, too.
  shard = (
      epath.Path(data_dir)
      / 'synthetic_rgbd'
      / '0.0.1'
      / 'synthetic_rgbd-train.array_record-00000-of-00001'
  )
  shard.write_bytes(shard.read_bytes()[:1000])
  with pytest.raises(shards.DatasetShardError, match=f'{shard} cannot be opened as ArrayRecord'):
    pipeline.load_source('synthetic_rgbd', 'cross_view', 'train', data_dir=data_dir)
