"""TFDS builder `nw_ucla`: Northwestern-UCLA Multiview Action 3D, RGB + jet-coloured depth.

Build (see README.md for what `RAW` holds and the splits):

    tfds build data_builders/nw_ucla --manual_dir=RAW --data_dir=OUT [--config=res112]

The raw-data logic is in `nw_ucla_raw.py`; parallel conversion and the skip
report in `data_builders/raw_clips.py`.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from data_builders import raw_clips
from data_builders.nw_ucla import nw_ucla_raw


class Builder(raw_clips.RawClipBuilder):
  """NW-UCLA: 10 actions, 10 subjects, 3 views; one split per view."""

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'First release: raw 16-bit depth PNGs, frames joined on number.',
      '2.0.0': 'Record layout 2 (`records.py`): a clip table and one record per frame and '
      'modality; depth as single-channel 8-bit codes, resized as depth before coding.',
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Download `multiview_action.tgz.part-aa` ... `part-ap` from
  http://users.eecs.northwestern.edu/~jwa368/data/ (also linked from
  https://wangjiangb.github.io/my_data.html), join them with `cat` and untar
  into `manual_dir`. `manual_dir` must hold, at any depth, the folders
    view_1/, view_2/, view_3/   (normally multiview_action/view_V/)
  each with sample folders aAA_sSS_eEE/ holding frame_<N>_tc_<TC>_rgb.jpg and
  frame_<N>_tc_<TC>_depth.png.
  """
  CLASS_NAMES = nw_ucla_raw.CLASS_NAMES
  ATOMIC_SPLITS = nw_ucla_raw.ATOMIC_SPLITS
  HOMEPAGE = 'https://wangjiangb.github.io/my_data.html'

  def find_samples(self, manual_dir):
    return nw_ucla_raw.find_samples(manual_dir)

  def convert_function(self):
    return nw_ucla_raw.convert
