"""The record format every dataset builder writes and the input pipeline reads.

A training clip decodes 5 of its 70-100 frames, and an RGB-only stage none of
its depth: so frames are records of their own, and a clip is read by reading
its small clip-table row, then exactly the frame records it samples. Each
atomic split `S` of a builder is written as two TFDS splits of one feature
set (TFDS has one per dataset):

* `S`, the clip table: one row per clip, no frame bytes. Keyed by the sample
  id as before, so TFDS orders a split's clips as it always did (the hash of
  the key), and record `i` of a split is the same clip as in version 1.
* `S_frames` (`frames_split`): one row per frame per modality, holding that
  one encoded frame and, to check a read against, its clip's `sample_id` and
  `frame` index. A clip row lists where each of its frames is in `S_frames`
  (`rgb_records`, `depth_records`); the rows of a split's clips and frames
  are computed from the frames' keys by TFDS's own key hash, the order it
  writes (`frame_positions`).

ArrayRecord (TFDS writes `group_size:1`) reads a record without its
neighbours, so an RGB-only stage opens no depth byte. Keeping the two
modalities in one frame split, rather than a split each, lets a build convert
each clip once: TFDS writes splits one after another, so a second frame split
would need every clip converted again or held on disk until then.

| key              | type                       | clip row                 | frame row      |
|------------------|----------------------------|--------------------------|----------------|
| rgb, depth       | sequence of encoded frames | empty                    | the one frame  |
| rgb_records, depth_records | sequence of int64 | frame rows in `S_frames` | empty          |
| frame            | int32                      | -1                       | index in clip  |
| label            | ClassLabel (real names)    | action class, 0-based    | its clip's     |
| sample_id        | text                       | the dataset's own id     | its clip's     |
| subject, view, setup, replication | int32     | metadata, -1 if unknown  | its clip's     |
| num_frames       | int32                      | frames kept (both alike) | its clip's     |
| rgb_frames_raw, depth_frames_raw | int32      | frame counts in raw data | its clip's     |

RGB frames are JPEG; depth frames are single-channel 8-bit PNG (lossless) of
the per-clip depth codes of `jet.depth_to_code`, which the consumer colours on
the device (`preprocess.depth_image`): a third of a jet PNG's bytes and
decoding time, and the same jet pixels. Frames are encoded bytes rather than
TFDS `Video`/`Image` features because those decode on read whatever the
caller needs.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
import dataclasses
import io
from typing import Any

import cv2
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds
from tensorflow_datasets.core import hashing as tfds_hashing
from tensorflow_datasets.proto import tf_example_pb2

from modistill_jax.data import jet

FILE_FORMAT = 'array_record'
METADATA_KEYS = ('subject', 'view', 'setup', 'replication')
JPEG_QUALITY = 90
MODALITIES = ('rgb', 'depth')
FRAMES_SUFFIX = '_frames'
# The per-clip fields a frame row repeats, so that a read can be checked.
CLIP_FIELDS = (
    'label',
    'sample_id',
    *METADATA_KEYS,
    'num_frames',
    'rgb_frames_raw',
    'depth_frames_raw',
)


def frames_split(split: str) -> str:
  """The TFDS split holding the frame rows of clip-table split `split`."""
  return split + FRAMES_SUFFIX


def is_frames_split(split: str) -> bool:
  return split.endswith(FRAMES_SUFFIX)


def clip_features(class_names: Sequence[str]) -> tfds.features.FeaturesDict:
  """The TFDS features of every row, clip-table and frame rows alike (see the module docstring)."""
  frames = tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_))
  positions = tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.int64))
  scalar = lambda doc: tfds.features.Scalar(dtype=np.int32, doc=doc)
  return tfds.features.FeaturesDict(
      {
          'rgb': frames,
          'depth': frames,
          'rgb_records': positions,
          'depth_records': positions,
          'frame': scalar("index of a frame row's frame in its clip; -1 in a clip row"),
          'label': tfds.features.ClassLabel(names=list(class_names)),
          'sample_id': tfds.features.Text(),
          'subject': scalar('performer, -1 if unknown'),
          'view': scalar('camera or view, -1 if unknown'),
          'setup': scalar('recording setup, -1 if unknown'),
          'replication': scalar('replication / repetition, -1 if unknown'),
          'num_frames': scalar('frames kept in both modalities'),
          'rgb_frames_raw': scalar('RGB frames found in the raw data'),
          'depth_frames_raw': scalar('depth frames found in the raw data'),
      }
  )


def encode_jpeg(frame: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
  buffer = io.BytesIO()
  Image.fromarray(np.asarray(frame, np.uint8)).save(buffer, format='JPEG', quality=quality)
  return buffer.getvalue()


def encode_png(frame: np.ndarray) -> bytes:
  """Lossless PNG of `(H, W, 3)` RGB or `(H, W)` 8-bit single-channel frames."""
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


# `decode_image_reduced` factors: libjpeg's DCT scaling, as OpenCV's IMREAD_REDUCED_* flags
# (without their BGR bit, so that the frame comes out RGB).
REDUCED_DECODE_FLAGS = {
    2: (cv2.IMREAD_REDUCED_COLOR_2 & ~cv2.IMREAD_COLOR) | cv2.IMREAD_COLOR_RGB,
    4: (cv2.IMREAD_REDUCED_COLOR_4 & ~cv2.IMREAD_COLOR) | cv2.IMREAD_COLOR_RGB,
}


def decode_image_reduced(data: bytes, factor: int) -> np.ndarray:
  """A JPEG decoded at 1/`factor` of its size (2 or 4): `(ceil(H/f), ceil(W/f), 3)` uint8 RGB.

  libjpeg-turbo computes the smaller image from the DCT coefficients (a 4x4 or
  2x2 inverse DCT per 8x8 block instead of 8x8, and upsampling and colour
  conversion at the smaller size), so it costs a fraction of a full decode.
  Its pixels are not those of a full decode resized (`pipeline.resize_frame`),
  which is why the pipeline uses it only when asked (`input.reduced_decoding`).
  """
  frame = cv2.imdecode(np.frombuffer(data, np.uint8), REDUCED_DECODE_FLAGS[factor])
  if frame is None:
    raise ValueError(f'Cannot decode a {len(data)}-byte frame as JPEG at 1/{factor} size.')
  return frame


def decode_depth(data: bytes) -> np.ndarray:
  """A stored depth frame (single-channel PNG of `jet.depth_to_code`) -> `(H, W)` uint8."""
  frame = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
  if frame is None or frame.ndim != 2 or frame.dtype != np.uint8:
    raise ValueError(
        f'Cannot decode a {len(data)}-byte frame as an 8-bit single-channel '
        'depth PNG' + ('' if frame is None else f' (got {frame.dtype} {frame.shape})') + '.'
    )
  return frame


def decode_frame(modality: str, data: bytes) -> np.ndarray:
  """`decode_image` of an RGB frame, `decode_depth` of a depth one."""
  return decode_image(data) if modality == 'rgb' else decode_depth(data)


def make_example(
    *,
    rgb: np.ndarray,
    depth_code: np.ndarray,
    label: int,
    sample_id: str,
    rgb_frames_raw: int,
    depth_frames_raw: int,
    subject: int = -1,
    view: int = -1,
    setup: int = -1,
    replication: int = -1,
) -> dict:
  """A whole clip, encoded: aligned, equally long `(T, H, W, 3)` RGB and `(T, H, W)` depth codes.

  What a builder's conversion returns; `frame_rows` and `clip_rows` split it
  into the records written.
  """
  rgb, depth_code = np.asarray(rgb), np.asarray(depth_code)
  if rgb.ndim != 4 or rgb.shape[-1] != 3 or depth_code.shape != rgb.shape[:-1]:
    raise ValueError(
        f'{sample_id}: RGB {rgb.shape} and depth {depth_code.shape} must be '
        '(T, H, W, 3) and (T, H, W).'
    )
  if depth_code.dtype != np.uint8 or depth_code.max(initial=0) > jet.MAX_CODE:
    raise ValueError(
        f'{sample_id}: depth must be uint8 codes of jet.depth_to_code (0 to '
        f'{jet.MAX_CODE}), got {depth_code.dtype} up to {depth_code.max()}.'
    )
  if rgb.shape[0] == 0:
    raise ValueError(f'{sample_id}: no frame to store.')
  return {
      'rgb': [encode_jpeg(f) for f in rgb],
      'depth': [encode_png(f) for f in depth_code],
      'label': int(label),
      'sample_id': sample_id,
      'subject': subject,
      'view': view,
      'setup': setup,
      'replication': replication,
      'num_frames': rgb.shape[0],
      'rgb_frames_raw': rgb_frames_raw,
      'depth_frames_raw': depth_frames_raw,
  }


_INT_FIELDS = ('label', *METADATA_KEYS, 'num_frames', 'rgb_frames_raw', 'depth_frames_raw', 'frame')


def parse_row(serialized: bytes) -> dict[str, Any]:
  """A stored row (clip or frame), as `tfds.data_source` decodes it, about 7x faster.

  TFDS writes each row as a `tf.train.Example` and decodes it feature by
  feature in Python: 1.9 ms a row against 0.27 ms here, measured on the
  loaded 2-core development machine, where a JPEG frame decoded in 2.3 ms; a
  training clip reads 6 rows per modality. This picks the fields of this one
  feature set from the parsed proto; `tests/test_record_layout.py` checks it
  against TFDS's decoding.
  """
  feature = tf_example_pb2.Example.FromString(serialized).features.feature
  row: dict[str, Any] = {key: feature[key].int64_list.value[0] for key in _INT_FIELDS}
  row['sample_id'] = feature['sample_id'].bytes_list.value[0]
  for modality in MODALITIES:
    row[modality] = list(feature[modality].bytes_list.value)
    row[f'{modality}_records'] = np.asarray(
        feature[f'{modality}_records'].int64_list.value, np.int64
    )
  return row


def frame_key(sample_id: str, modality: str, frame: int) -> str:
  """The TFDS key of a frame row; TFDS orders a split's rows by its hash."""
  return f'{sample_id}/{modality}/{frame}'


def frame_rows(example: dict) -> Iterator[tuple[str, dict]]:
  """`(key, row)` of every frame of a `make_example` clip, RGB then depth."""
  clip = {k: example[k] for k in CLIP_FIELDS}
  for modality in MODALITIES:
    for frame, data in enumerate(example[modality]):
      row = {**clip, 'rgb': [], 'depth': [], 'rgb_records': [], 'depth_records': [], 'frame': frame}
      row[modality] = [data]
      yield frame_key(example['sample_id'], modality, frame), row


@dataclasses.dataclass(frozen=True)
class ClipEntry:
  """What a clip row needs of a converted clip: its fields, without the frame bytes."""

  fields: dict

  @classmethod
  def of(cls, example: dict) -> ClipEntry:
    if len(example['rgb']) != len(example['depth']):
      raise ValueError(
          f"{example['sample_id']!r}: {len(example['rgb'])} RGB frames but "
          f"{len(example['depth'])} depth frames; the format requires aligned "
          'modalities.'
      )
    return cls({k: example[k] for k in CLIP_FIELDS})


def frame_positions(
    split: str, clips: Sequence[ClipEntry], shuffled: bool = True
) -> list[dict[str, np.ndarray]]:
  """Where each frame of `clips` lies in `frames_split(split)`, per clip and modality.

  Args:
    split: the clip-table split.
    clips: the split's clips, in the order their `frame_rows` were generated.
    shuffled: TFDS's default: a split's rows in the order of their keys'
      hashes salted with the split name (`tfds_hashing`, the order a
      dataset keeps across TFDS versions, under Beam too); False for a builder
      with `disable_shuffling`, which writes rows as generated.
  """
  keys = [
      frame_key(c.fields['sample_id'], m, t)
      for c in clips
      for m in MODALITIES
      for t in range(c.fields['num_frames'])
  ]
  if shuffled:
    hasher = tfds_hashing.Hasher(frames_split(split))
    order = sorted(range(len(keys)), key=lambda i: hasher.hash_key(keys[i]))
    position = np.empty(len(keys), np.int64)
    position[order] = np.arange(len(keys))
  else:
    position = np.arange(len(keys))
  found, start = [], 0
  for clip in clips:
    n = clip.fields['num_frames']
    found.append(
        {m: position[start + i * n : start + (i + 1) * n] for i, m in enumerate(MODALITIES)}
    )
    start += len(MODALITIES) * n
  return found


def clip_rows(
    split: str, clips: Sequence[ClipEntry], shuffled: bool = True
) -> Iterator[tuple[str, dict]]:
  """`(sample_id, clip row)` of each clip, with its frames' rows in `frames_split(split)`."""
  for clip, positions in zip(clips, frame_positions(split, clips, shuffled)):
    yield clip.fields['sample_id'], {
        **clip.fields,
        'rgb': [],
        'depth': [],
        'frame': -1,
        'rgb_records': positions['rgb'],
        'depth_records': positions['depth'],
    }


def split_rows(
    examples: Iterable[dict], split: str, shuffled: bool = True
) -> dict[str, list[tuple[str, dict]]]:
  """`{split: clip rows, frames_split(split): frame rows}` of `make_example` clips."""
  frames, clips = [], []
  for example in examples:
    frames.extend(frame_rows(example))
    clips.append(ClipEntry.of(example))
  return {frames_split(split): frames, split: list(clip_rows(split, clips, shuffled))}
