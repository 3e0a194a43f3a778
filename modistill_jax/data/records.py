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
neighbours, so an RGB-only stage opens no depth byte. Keeping the
modalities in one frame split, rather than a split each, lets a build convert
each clip once: TFDS writes splits one after another, so a second frame split
would need every clip converted again or held on disk until then.

A build stores the modalities it was asked for (`clip_features`): RGB and
depth by default, and infrared or skeleton joints where a builder config adds
them. For each stored modality `m` (`modalities.NAMES`, in that order):

| key              | type                       | clip row                 | frame row      |
|------------------|----------------------------|--------------------------|----------------|
| m (rgb, depth, ...) | sequence of encoded frames | empty                 | the one frame  |
| m_records        | sequence of int64          | frame rows in `S_frames` | empty          |
| frame            | int32                      | -1                       | index in clip  |
| label            | ClassLabel (real names)    | action class, 0-based    | its clip's     |
| sample_id        | text                       | the dataset's own id     | its clip's     |
| subject, view, setup, replication | int32     | metadata, -1 if unknown  | its clip's     |
| num_frames       | int32                      | frames kept (all alike)  | its clip's     |
| m_frames_raw     | int32                      | frame counts in raw data | its clip's     |

How a modality's frame is encoded is its description's (`modistill_jax.modalities`):
RGB frames are JPEG; depth frames are single-channel 8-bit PNG (lossless) of
the per-clip depth codes of `jet.depth_to_code`, which the consumer colours on
the device (`preprocess.depth_image`): a third of a jet PNG's bytes and
decoding time, and the same jet pixels; infrared frames are 8-bit gray PNG;
a skeleton frame is its joints' coordinates (`skeletons.py`), a few hundred
bytes. Frames are encoded bytes rather than TFDS `Video`/`Image` features
because those decode on read whatever the caller needs. An RGB-D build's
records are byte for byte those this format always wrote.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
import dataclasses
from typing import Any

import numpy as np
import tensorflow_datasets as tfds
from tensorflow_datasets.core import hashing as tfds_hashing
from tensorflow_datasets.proto import tf_example_pb2

from modistill_jax import modalities as modalities_lib
from modistill_jax.data.frame_codecs import decode_depth as decode_depth
from modistill_jax.data.frame_codecs import decode_image as decode_image
from modistill_jax.data.frame_codecs import decode_image_reduced as decode_image_reduced
from modistill_jax.data.frame_codecs import encode_jpeg as encode_jpeg
from modistill_jax.data.frame_codecs import encode_png as encode_png

FILE_FORMAT = 'array_record'
METADATA_KEYS = ('subject', 'view', 'setup', 'replication')
# The modalities of an RGB-D build, every dataset's default.
MODALITIES = ('rgb', 'depth')
FRAMES_SUFFIX = '_frames'


def clip_fields(modalities: Sequence[str] = MODALITIES) -> tuple[str, ...]:
  """The per-clip fields a frame row repeats, so that a read can be checked."""
  return (
      'label',
      'sample_id',
      *METADATA_KEYS,
      'num_frames',
      *(f'{m}_frames_raw' for m in modalities),
  )


CLIP_FIELDS = clip_fields()


def stored_modalities(row: Mapping[str, Any]) -> tuple[str, ...]:
  """The modalities a clip, clip row or frame row holds (those with a raw frame count)."""
  return tuple(m for m in modalities_lib.NAMES if f'{m}_frames_raw' in row)


def frames_split(split: str) -> str:
  """The TFDS split holding the frame rows of clip-table split `split`."""
  return split + FRAMES_SUFFIX


def is_frames_split(split: str) -> bool:
  return split.endswith(FRAMES_SUFFIX)


def clip_features(
    class_names: Sequence[str], modalities: Sequence[str] = MODALITIES
) -> tfds.features.FeaturesDict:
  """The TFDS features of every row, clip-table and frame rows alike (see the module docstring).

  Args:
    class_names: the label's class names.
    modalities: the modalities the build stores (`modalities.NAMES`); an
      RGB-D build's features are those it always had.
  """
  modalities = modalities_lib.ordered(modalities)
  frames = tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.object_))
  positions = tfds.features.Sequence(tfds.features.Tensor(shape=(), dtype=np.int64))
  scalar = lambda doc: tfds.features.Scalar(dtype=np.int32, doc=doc)
  return tfds.features.FeaturesDict(
      {
          **{m: frames for m in modalities},
          **{f'{m}_records': positions for m in modalities},
          'frame': scalar("index of a frame row's frame in its clip; -1 in a clip row"),
          'label': tfds.features.ClassLabel(names=list(class_names)),
          'sample_id': tfds.features.Text(),
          'subject': scalar('performer, -1 if unknown'),
          'view': scalar('camera or view, -1 if unknown'),
          'setup': scalar('recording setup, -1 if unknown'),
          'replication': scalar('replication / repetition, -1 if unknown'),
          'num_frames': scalar(
              'frames kept in both modalities'
              if len(modalities) == 2
              else f'frames kept in all {len(modalities)} modalities'
          ),
          **{
              f'{m}_frames_raw': scalar(
                  f'{modalities_lib.get(m).title} frames found in the raw data'
              )
              for m in modalities
          },
      }
  )


def decode_frame(modality: str, data: bytes) -> np.ndarray:
  """A stored frame of `modality`, decoded on the host by its description (`modalities`)."""
  return modalities_lib.get(modality).decode(data)


def make_clip(
    *,
    frames: Mapping[str, np.ndarray],
    frames_raw: Mapping[str, int],
    label: int,
    sample_id: str,
    subject: int = -1,
    view: int = -1,
    setup: int = -1,
    replication: int = -1,
) -> dict:
  """A whole clip of any modalities, encoded: what a builder's conversion returns.

  Args:
    frames: modality -> its aligned, equally long clip, as its description's
      `check_clip` takes it (e.g. `(T, H, W, 3)` RGB, `(T, H, W)` depth codes
      or infrared, `(T, bodies, joints, 2)` skeleton joints).
    frames_raw: modality -> the frames of it found in the raw data.
    label, sample_id, subject, view, setup, replication: the clip's fields.

  Returns:
    The clip, whose `frame_rows` and `clip_rows` are the records written.
  """
  names = modalities_lib.ordered(frames)
  if set(frames_raw) != set(names):
    raise ValueError(
        f'{sample_id}: raw frame counts of {sorted(frames_raw)} for frames of {list(names)}.'
    )
  checked = {m: modalities_lib.get(m).check_clip(frames[m], sample_id) for m in names}
  lengths = {m: len(clip) for m, clip in checked.items()}
  if len(set(lengths.values())) != 1:
    raise ValueError(f'{sample_id}: modalities of different lengths {lengths}.')
  image_sizes = {
      m: c.shape[1:3] for m, c in checked.items() if modalities_lib.get(m).resample != 'joints'
  }
  if len(set(image_sizes.values())) > 1:
    raise ValueError(f'{sample_id}: frames of different sizes {image_sizes}.')
  num_frames = lengths[names[0]]
  if num_frames == 0:
    raise ValueError(f'{sample_id}: no frame to store.')
  encoded = {m: [modalities_lib.get(m).encode(f) for f in clip] for m, clip in checked.items()}
  return {
      **encoded,
      'label': int(label),
      'sample_id': sample_id,
      'subject': subject,
      'view': view,
      'setup': setup,
      'replication': replication,
      'num_frames': num_frames,
      **{f'{m}_frames_raw': int(frames_raw[m]) for m in names},
  }


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
  """`make_clip` of an RGB-D clip: `(T, H, W, 3)` RGB and `(T, H, W)` depth codes."""
  return make_clip(
      frames={'rgb': rgb, 'depth': depth_code},
      frames_raw={'rgb': rgb_frames_raw, 'depth': depth_frames_raw},
      label=label,
      sample_id=sample_id,
      subject=subject,
      view=view,
      setup=setup,
      replication=replication,
  )


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
  stored = tuple(m for m in modalities_lib.NAMES if m in feature)
  ints = ('label', *METADATA_KEYS, 'num_frames', *(f'{m}_frames_raw' for m in stored), 'frame')
  row: dict[str, Any] = {key: feature[key].int64_list.value[0] for key in ints}
  row['sample_id'] = feature['sample_id'].bytes_list.value[0]
  for modality in stored:
    row[modality] = list(feature[modality].bytes_list.value)
    row[f'{modality}_records'] = np.asarray(
        feature[f'{modality}_records'].int64_list.value, np.int64
    )
  return row


def frame_key(sample_id: str, modality: str, frame: int) -> str:
  """The TFDS key of a frame row; TFDS orders a split's rows by its hash."""
  return f'{sample_id}/{modality}/{frame}'


def frame_rows(example: dict) -> Iterator[tuple[str, dict]]:
  """`(key, row)` of every frame of a `make_clip` clip, modality after modality."""
  stored = stored_modalities(example)
  clip = {k: example[k] for k in clip_fields(stored)}
  empty = {**{m: [] for m in stored}, **{f'{m}_records': [] for m in stored}}
  for modality in stored:
    for frame, data in enumerate(example[modality]):
      row = {**clip, **empty, 'frame': frame}
      row[modality] = [data]
      yield frame_key(example['sample_id'], modality, frame), row


@dataclasses.dataclass(frozen=True)
class ClipEntry:
  """What a clip row needs of a converted clip: its fields, without the frame bytes."""

  fields: dict

  @classmethod
  def of(cls, example: dict) -> ClipEntry:
    stored = stored_modalities(example)
    lengths = {m: len(example[m]) for m in stored}
    if len(set(lengths.values())) != 1:
      raise ValueError(
          f"{example['sample_id']!r}: frames per modality {lengths}; the format requires "
          'aligned modalities.'
      )
    return cls({k: example[k] for k in clip_fields(stored)})


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
  stored = [stored_modalities(c.fields) for c in clips]
  keys = [
      frame_key(c.fields['sample_id'], m, t)
      for c, names in zip(clips, stored)
      for m in names
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
  for clip, names in zip(clips, stored):
    n = clip.fields['num_frames']
    found.append({m: position[start + i * n : start + (i + 1) * n] for i, m in enumerate(names)})
    start += len(names) * n
  return found


def clip_rows(
    split: str, clips: Sequence[ClipEntry], shuffled: bool = True
) -> Iterator[tuple[str, dict]]:
  """`(sample_id, clip row)` of each clip, with its frames' rows in `frames_split(split)`."""
  for clip, positions in zip(clips, frame_positions(split, clips, shuffled)):
    yield clip.fields['sample_id'], {
        **clip.fields,
        **{m: [] for m in positions},
        'frame': -1,
        **{f'{m}_records': p for m, p in positions.items()},
    }


def split_rows(
    examples: Iterable[dict], split: str, shuffled: bool = True
) -> dict[str, list[tuple[str, dict]]]:
  """`{split: clip rows, frames_split(split): frame rows}` of `make_clip` clips."""
  frames, clips = [], []
  for example in examples:
    frames.extend(frame_rows(example))
    clips.append(ClipEntry.of(example))
  return {frames_split(split): frames, split: list(clip_rows(split, clips, shuffled))}
