"""UWA3D Multiview Activity II raw data (RGB-D release): finding and converting samples.

Facts used (`shared/datasets/README.md`, section 3): RGB frames
`UWA3D-RGB/aYY_sZZ_vWW_eNN/<fff>,.jpg` (note the stray comma), depth frames
`UWA3D-Depth/WholeFrames/aYY_sZZ_vWW_eNN/<fff>.png`. The `_eNN` suffix differs
between the modalities (`_e00` depth, `_e01` RGB), so samples are joined on
`aYY_sZZ_vWW`, which is unique, and that is the sample id. Frames are joined on
their number; frames present in one modality only are dropped, and the raw
count of each modality is recorded.

Depth bit depth is unconfirmed: 16-bit PNGs are read as millimetres, 8-bit
ones as they are (see `raw_clips.depth_values`: the per-clip jet colouring
only needs depth order, so both render alike). RGB (probably 320x240) and
depth (320x240) are resized to the output size.
"""

from __future__ import annotations

import dataclasses
import re

from absl import logging
from etils import epath

from data_builders import raw_clips
from modistill_jax.data import protocols
from modistill_jax.data import records

CLASS_NAMES = (
    'one hand waving',
    'one hand punching',
    'two hand waving',
    'two hand punching',
    'sitting down',
    'standing up',
    'vibrating',
    'falling down',
    'holding chest',
    'holding head',
    'holding back',
    'walking',
    'irregular walking',
    'lying down',
    'turning around',
    'drinking',
    'phone answering',
    'bending',
    'jumping jack',
    'running',
    'picking up',
    'putting down',
    'kicking',
    'jumping',
    'dancing',
    'mopping floor',
    'sneezing',
    'sitting down (chair)',
    'squatting',
    'coughing',
)
ATOMIC_SPLITS = protocols.view_splits('uwa3dii')
RGB_DIR, DEPTH_DIR = 'UWA3D-RGB', 'WholeFrames'
SAMPLE_DIR = re.compile(r'(a(\d+)_s(\d+)_v(\d+))_e\d+')
RGB_FRAME = re.compile(r'(\d+),?\.jpg')
DEPTH_FRAME = re.compile(r'(\d+)\.png')


@dataclasses.dataclass(frozen=True)
class UwaSample:
  sample_id: str
  split: str
  rgb_dir: str
  depth_dir: str


def parse_id(sample_id: str) -> dict[str, int]:
  match = SAMPLE_DIR.fullmatch(sample_id + '_e00')
  if not match:
    raise ValueError(f'Not a UWA3DII sample id: {sample_id!r}')
  return dict(zip(('action', 'subject', 'view'), map(int, match.groups()[1:])))


def _index(folders: list[epath.Path]) -> dict[str, epath.Path]:
  """`{aYY_sZZ_vWW: sample folder}`; of duplicates, the first in name order wins."""
  found = {}
  for folder in folders:
    for entry in sorted(folder.iterdir()):
      match = SAMPLE_DIR.fullmatch(entry.name)
      if match and entry.is_dir():
        if match.group(1) in found:
          logging.warning(
              '[uwa3dii] %s found twice; using %s', match.group(1), found[match.group(1)]
          )
        else:
          found[match.group(1)] = entry
  return found


def find_samples(root: epath.Path) -> tuple[list[UwaSample], list[raw_clips.Skip]]:
  folders = raw_clips.find_dirs(
      root, lambda n: n in (RGB_DIR, DEPTH_DIR), lambda n: SAMPLE_DIR.fullmatch(n) is not None
  )
  rgb = _index([f for f in folders if f.name == RGB_DIR])
  depth = _index([f for f in folders if f.name == DEPTH_DIR])
  if not rgb and not depth:
    raise FileNotFoundError(
        f'No UWA3DII sample under {root}: expected the folders {RGB_DIR}/ (holding '
        f'aYY_sZZ_vWW_eNN/<fff>,.jpg) and UWA3D-Depth/{DEPTH_DIR}/ (holding '
        f'aYY_sZZ_vWW_eNN/<fff>.png), at any depth. Found: {folders}.'
    )
  samples, skipped = [], []
  for sample_id in sorted(set(rgb) | set(depth)):
    meta = parse_id(sample_id)
    split = f'view{meta["view"]}'
    if split not in ATOMIC_SPLITS or not 1 <= meta['action'] <= len(CLASS_NAMES):
      skipped.append(raw_clips.Skip(sample_id, split, 'action or view out of range'))
    elif sample_id not in depth:
      skipped.append(
          raw_clips.Skip(sample_id, split, f'no depth folder {DEPTH_DIR}/{sample_id}_e*')
      )
    elif sample_id not in rgb:
      skipped.append(raw_clips.Skip(sample_id, split, f'no RGB folder {RGB_DIR}/{sample_id}_e*'))
    else:
      samples.append(UwaSample(sample_id, split, str(rgb[sample_id]), str(depth[sample_id])))
  return samples, skipped


def _frames(folder: epath.Path, pattern: re.Pattern[str]) -> dict[int, epath.Path]:
  frames = {}
  for entry in folder.iterdir():
    match = pattern.fullmatch(entry.name)
    if match:
      frames[int(match.group(1))] = entry
  return frames


def convert(sample: UwaSample, height: int, width: int) -> dict:
  """One sample -> one example; raises `SampleError` on bad input."""
  rgb_files = _frames(epath.Path(sample.rgb_dir), RGB_FRAME)
  depth_files = _frames(epath.Path(sample.depth_dir), DEPTH_FRAME)
  rgb, depth_code = raw_clips.paired_frames(rgb_files, depth_files, height, width)
  meta = parse_id(sample.sample_id)
  return records.make_example(
      rgb=rgb,
      depth_code=depth_code,
      label=meta['action'] - 1,
      sample_id=sample.sample_id,
      rgb_frames_raw=len(rgb_files),
      depth_frames_raw=len(depth_files),
      subject=meta['subject'],
      view=meta['view'],
  )
