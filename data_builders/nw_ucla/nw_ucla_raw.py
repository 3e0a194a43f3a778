"""Northwestern-UCLA Multiview Action 3D raw data: finding and converting samples.

Facts used (`shared/datasets/README.md`, section 2): sample folders
`multiview_action/view_V/aAA_sSS_eEE/` hold `frame_<N>_tc_<TC>_rgb.jpg`
(640x480) and `frame_<N>_tc_<TC'>_depth.png` (320x240, uint16 mm), among other
files. The frame number N is shared by the modalities but the timecodes
differ, so frames are joined on N, and N is sorted numerically (it is not
zero-padded: 99 < 100). Only the frames present in both modalities are kept;
the counts of each are recorded. `fileList.txt` is not needed: the folder
listing is the ground truth.

Kinect v1 registers RGB to depth by itself and RGB is twice the depth size
over the same field of view, so both are simply resized to the output size
(the documented x2 rescale, whatever the output size).

Action ids are not contiguous (no a07, a10): labels follow
{1:0, 2:1, 3:2, 4:3, 5:4, 6:5, 8:6, 9:7, 11:8, 12:9}. A sample is keyed
`aAA_sSS_eEE_vVV`, since the same `aAA_sSS_eEE` occurs in every view.
"""

from __future__ import annotations

import collections
import dataclasses
import re

from etils import epath

from data_builders import raw_clips
from modistill_jax.data import protocols
from modistill_jax.data import records

CLASS_NAMES = (
    'pick up with one hand',
    'pick up with two hands',
    'drop trash',
    'walk around',
    'sit down',
    'stand up',
    'donning',
    'doffing',
    'throw',
    'carry',
)
ACTION_TO_LABEL = {1: 0, 2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 8: 6, 9: 7, 11: 8, 12: 9}
ATOMIC_SPLITS = protocols.view_splits('nw_ucla')
VIEW_DIR = re.compile(r'view_(\d+)')
SAMPLE_DIR = re.compile(r'a(\d+)_s(\d+)_e(\d+)')
FRAME_FILE = re.compile(r'frame_(\d+)_tc_(\d+)_(rgb\.jpg|depth\.png)')


@dataclasses.dataclass(frozen=True)
class UclaSample:
  sample_id: str
  split: str
  folder: str
  action: int
  subject: int
  repetition: int
  view: int


def find_samples(root: epath.Path) -> tuple[list[UclaSample], list[raw_clips.Skip]]:
  views = raw_clips.find_dirs(
      root,
      lambda n: VIEW_DIR.fullmatch(n) is not None,
      lambda n: SAMPLE_DIR.fullmatch(n) is not None,
  )
  samples, skipped, seen = [], [], set()
  for view_dir in views:
    view = int(VIEW_DIR.fullmatch(view_dir.name).group(1))
    for folder in sorted(view_dir.iterdir()):
      match = SAMPLE_DIR.fullmatch(folder.name)
      if not match or not folder.is_dir():
        continue
      action, subject, repetition = map(int, match.groups())
      sample_id = f'{folder.name}_v{view:02d}'
      split = f'view{view}'
      if sample_id in seen:
        continue
      seen.add(sample_id)
      if split not in ATOMIC_SPLITS:
        skipped.append(raw_clips.Skip(sample_id, split, f'view {view} is not one of 1-3'))
      elif action not in ACTION_TO_LABEL:
        skipped.append(raw_clips.Skip(sample_id, split, f'unknown action id a{action:02d}'))
      else:
        samples.append(UclaSample(sample_id, split, str(folder), action, subject, repetition, view))
  if not samples and not skipped:
    raise FileNotFoundError(
        f'No NW-UCLA sample under {root}: expected view_1/, view_2/, view_3/ folders (as in '
        f'multiview_action/view_1/a01_s01_e00/frame_<N>_tc_<TC>_rgb.jpg and ..._depth.png), '
        f'directly in it or below. Found view folders: {views}.'
    )
  return samples, skipped


def frame_files(folder: epath.Path) -> dict[str, dict[int, epath.Path]]:
  """`{'rgb.jpg' | 'depth.png': {N: path}}`; of duplicate N, the lowest timecode wins."""
  found = collections.defaultdict(dict)
  for entry in sorted(folder.iterdir(), key=lambda p: _timecode(p.name)):
    match = FRAME_FILE.fullmatch(entry.name)
    if match:
      found[match.group(3)].setdefault(int(match.group(1)), entry)
  return found


def _timecode(name: str) -> int:
  match = FRAME_FILE.fullmatch(name)
  return int(match.group(2)) if match else -1


def convert(sample: UclaSample, height: int, width: int) -> dict:
  """One sample -> one example; raises `SampleError` on bad input."""
  files = frame_files(epath.Path(sample.folder))
  rgb_files, depth_files = files['rgb.jpg'], files['depth.png']
  if not rgb_files and not depth_files:
    raise raw_clips.SampleError('sample folder holds no frame')
  rgb, depth_code = raw_clips.paired_frames(rgb_files, depth_files, height, width)
  return records.make_example(
      rgb=rgb,
      depth_code=depth_code,
      label=ACTION_TO_LABEL[sample.action],
      sample_id=sample.sample_id,
      rgb_frames_raw=len(rgb_files),
      depth_frames_raw=len(depth_files),
      subject=sample.subject,
      view=sample.view,
      replication=sample.repetition,
  )
