"""The record format every dataset builder writes and the input pipeline reads.

One example is one clip, stored once, whatever the protocol (protocols are
unions of the builder's splits, see `protocols.py`):

| key              | type                       | meaning                                    |
|------------------|----------------------------|--------------------------------------------|
| rgb              | sequence of JPEG bytes     | RGB frames, aligned to depth, H x W        |
| depth            | sequence of PNG bytes      | jet-coloured depth frames (`jet.py`), H x W|
| label            | ClassLabel (real names)    | action class, 0-based                      |
| sample_id        | text                       | the dataset's own sample id                |
| subject, view, setup, replication | int32     | metadata, -1 where a dataset has none      |
| num_frames       | int32                      | frames kept (RGB and depth alike)          |
| rgb_frames_raw, depth_frames_raw | int32      | frame counts found in the raw data         |

Frames are kept as encoded bytes rather than TFDS `Video` features because
TFDS's random-access (`tfds.data_source`) path decodes every frame of a
feature, while a training clip uses 5 of them: the pipeline decodes only the
frames it samples. Depth is PNG (lossless: JPEG rings on the jet map's sharp
edges); RGB is JPEG. Files are ArrayRecord, for Grain's random access.
"""

from __future__ import annotations

from collections.abc import Sequence
import io

import cv2
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds

FILE_FORMAT = 'array_record'
METADATA_KEYS = ('subject', 'view', 'setup', 'replication')
JPEG_QUALITY = 90


def clip_features(class_names: Sequence[str]) -> tfds.features.FeaturesDict:
  """The TFDS features of one clip example."""
  frames = tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_))
  scalar = lambda doc: tfds.features.Scalar(dtype=np.int32, doc=doc)
  return tfds.features.FeaturesDict({
      'rgb': frames,
      'depth': frames,
      'label': tfds.features.ClassLabel(names=list(class_names)),
      'sample_id': tfds.features.Text(),
      'subject': scalar('performer, -1 if unknown'),
      'view': scalar('camera or view, -1 if unknown'),
      'setup': scalar('recording setup, -1 if unknown'),
      'replication': scalar('replication / repetition, -1 if unknown'),
      'num_frames': scalar('frames kept in both modalities'),
      'rgb_frames_raw': scalar('RGB frames found in the raw data'),
      'depth_frames_raw': scalar('depth frames found in the raw data'),
  })


def encode_jpeg(frame: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(frame, np.uint8)).save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def encode_png(frame: np.ndarray) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(frame, np.uint8)).save(buffer, format='PNG', compress_level=6)
  return buffer.getvalue()


def decode_image(data: bytes) -> np.ndarray:
  """Encoded JPEG/PNG bytes -> `(H, W, 3)` uint8 RGB.

  OpenCV rather than Pillow because `cv2.imdecode` is one C call that releases
  the GIL throughout and writes straight into a numpy array: the input
  pipeline's decoding threads then use every core, where Pillow's Python-level
  header parsing and `tobytes` copy serialise a large part of each frame. Both
  use libjpeg-turbo and libpng, and give the same pixels for this format
  (`tests/test_records.py`).
  """
  frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR_RGB)
  if frame is None:
    raise ValueError(f'Cannot decode a {len(data)}-byte frame as JPEG or PNG.')
  return frame


def make_example(*, rgb: np.ndarray, depth_jet: np.ndarray, label: int, sample_id: str,
                 rgb_frames_raw: int, depth_frames_raw: int, subject: int = -1,
                 view: int = -1, setup: int = -1, replication: int = -1) -> dict:
  """Encodes aligned, equally long `(T, H, W, 3)` uint8 RGB and jet-depth clips."""
  rgb, depth_jet = np.asarray(rgb), np.asarray(depth_jet)
  if rgb.shape != depth_jet.shape or rgb.ndim != 4 or rgb.shape[-1] != 3:
    raise ValueError(f'RGB {rgb.shape} and depth {depth_jet.shape} must both be (T, H, W, 3).')
  if rgb.shape[0] == 0:
    raise ValueError(f'{sample_id}: no frame to store.')
  return {
      'rgb': [encode_jpeg(f) for f in rgb],
      'depth': [encode_png(f) for f in depth_jet],
      'label': int(label), 'sample_id': sample_id,
      'subject': subject, 'view': view, 'setup': setup, 'replication': replication,
      'num_frames': rgb.shape[0], 'rgb_frames_raw': rgb_frames_raw,
      'depth_frames_raw': depth_frames_raw,
  }
