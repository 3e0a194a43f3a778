"""TFDS builder `ntu_rgbd`: NTU RGB+D 60 clips, RGB aligned to jet-coloured masked depth.

Build (see README.md for what `RAW` holds, the splits and their sizes):

    tfds build data_builders/ntu_rgbd --manual_dir=RAW --data_dir=OUT [--config=res112]

The `*_ir_skeleton` configs store the infrared videos and skeleton joints too.

The raw-data logic (ids, splits, skeleton-based alignment) is in `ntu_raw.py`;
parallel conversion and the skip report in `data_builders/raw_clips.py`.
"""

from __future__ import annotations

import dataclasses

import tensorflow_datasets as tfds

from data_builders import raw_clips
from data_builders.ntu_rgbd import ntu_raw
from modistill_jax.data import protocols


class Builder(raw_clips.RawClipBuilder):
  """NTU RGB+D 60: 56,880 clips, 60 actions, 40 subjects, 3 cameras, 17 setups."""

  VERSION = tfds.core.Version('2.0.0')
  RELEASE_NOTES = {
      '1.0.0': 'First release: masked depth, RGB affinely aligned per setup/camera.',
      '2.0.0': 'Record layout 2 (`records.py`): a clip table and one record per frame and '
      'modality; depth as single-channel 8-bit codes, resized as depth before coding.',
  }
  MANUAL_DOWNLOAD_INSTRUCTIONS = """
  Register at https://rose1.ntu.edu.sg/dataset/actionRecognition/ and download,
  for setups S001-S017 (NTU-60): `nturgbd_rgb_s0XX.zip`,
  `nturgbd_depth_masked_s0XX.zip` and `nturgbd_skeletons_s001_to_s017.zip`.
  Unzip them into `manual_dir`, either as they come (per-setup folders such as
  `nturgbd_rgb_s001/nturgb+d_rgb/`) or merged; `manual_dir` must hold, at any
  depth, folders named:
    nturgb+d_rgb/<ID>_rgb.avi
    nturgb+d_depth_masked/<ID>/MDepth-%08d.png
    nturgb+d_skeletons/<ID>.skeleton   (used to align RGB to depth)
  and, for the `*_ir_skeleton` configs, `nturgbd_ir_s0XX.zip`:
    nturgb+d_ir/<ID>_ir.avi
  """
  ON_REQUEST_CONFIGS = tuple(
      dataclasses.replace(
          config,
          name=f'{config.name}_ir_skeleton',
          modalities=('rgb', 'depth', 'ir', 'skeleton'),
          description=config.description + ' With infrared frames and skeleton joints.',
      )
      for config in raw_clips.CONFIGS
  )
  CLASS_NAMES = ntu_raw.CLASS_NAMES
  ATOMIC_SPLITS = protocols.NTU_ATOMIC_SPLITS
  HOMEPAGE = 'https://rose1.ntu.edu.sg/dataset/actionRecognition/'

  def find_samples(self, manual_dir):
    return ntu_raw.find_samples(manual_dir, self.builder_config.modalities)

  def convert_function(self):
    return ntu_raw.convert
