"""TFDS builder `uwa3dii`: UWA3D Multiview Activity II, RGB + jet-coloured depth.

Build (see README.md for what `RAW` holds and the splits):

    tfds build data_builders/uwa3dii --manual_dir=RAW --data_dir=OUT [--config=res112]

The raw-data logic is in `uwa3dii_raw.py`; parallel conversion and the skip
report in `data_builders/raw_clips.py`.
"""

from __future__ import annotations

import tensorflow_datasets as tfds

from data_builders import raw_clips
from data_builders.uwa3dii import uwa3dii_raw


class Builder(raw_clips.RawClipBuilder):
  """UWA3DII: 30 activities, 10 subjects, 4 views; one split per view."""

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'First release: WholeFrames depth, modalities joined on aYY_sZZ_vWW.',
      '2.0.0': 'Record layout 2 (`records.py`): a clip table and one record per frame and '
      'modality; depth as single-channel 8-bit codes, resized as depth before coding.',
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  No public download address of the RGB-D release of UWA3D Multiview
  Activity II could be confirmed: ask its authors (Rahmani et al., University
  of Western Australia; https://github.com/LeiWangR/HDG links their related
  releases) for the RGB and WholeFrames depth archives. Extract them into
  `manual_dir`, which must hold, at any depth, the folders
    UWA3D-RGB/aYY_sZZ_vWW_eNN/<fff>,.jpg
    UWA3D-Depth/WholeFrames/aYY_sZZ_vWW_eNN/<fff>.png
  (RGB folders end _e01 and depth folders _e00: samples are joined on aYY_sZZ_vWW).
  """
  CLASS_NAMES = uwa3dii_raw.CLASS_NAMES
  ATOMIC_SPLITS = uwa3dii_raw.ATOMIC_SPLITS
  HOMEPAGE = 'https://github.com/LeiWangR/HDG'

  def find_samples(self, manual_dir):
    return uwa3dii_raw.find_samples(manual_dir)

  def convert_function(self):
    return uwa3dii_raw.convert
