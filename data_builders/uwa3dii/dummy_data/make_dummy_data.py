"""Writes the fake UWA3DII raw tree the builder test reads (run from anywhere).

    python data_builders/uwa3dii/dummy_data/make_dummy_data.py

RGB `UWA3D-RGB/aYY_sZZ_vWW_e01/<fff>,.jpg` (320x240, with the stray comma) and
depth `UWA3D-Depth/WholeFrames/aYY_sZZ_vWW_e00/<fff>.png` (320x240). Quirks
(datasets notes, section 4):

| sample      | quirk                                                | expected        |
|-------------|------------------------------------------------------|-----------------|
| a01_s01_v01 | 005 RGB only, 006 depth only: 4 common of 5/5; 16-bit | view1, label 0  |
| a05_s02_v02 | 8-bit depth PNGs                                     | view2, label 4  |
| a02_s06_v02 | an empty (0-byte) RGB JPEG                           | skipped         |
| a12_s03_v03 | 16-bit depth                                         | view3, label 11 |
| a06_s06_v03 | depth only: no RGB folder                            | skipped         |
| a30_s01_v04 | 16-bit depth                                         | view4, label 29 |
| a21_s02_v04 | RGB only: no depth folder                            | skipped         |
"""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent


def person(shift: float) -> np.ndarray:
  y, x = np.mgrid[:240, :320] + 0.5
  x = x - shift
  return ((x - 160) ** 2 + (y - 60) ** 2 < 15**2) | ((np.abs(x - 160) < 25) & (y > 75) & (y < 200))


def write_sample(
    sample: str, rgb_frames, depth_frames, bits: int = 16, empty_rgb: int | None = None
) -> None:
  if rgb_frames:
    folder = HERE / 'UWA3D-RGB' / f'{sample}_e01'
    folder.mkdir(parents=True)
    for f in rgb_frames:
      rgb = np.where(person(4.0 * f)[..., None], [220, 140, 70], [50, 70, 100]).astype(np.uint8)
      path = folder / f'{f:03d},.jpg'
      Image.fromarray(rgb).save(path, quality=50)
      if f == empty_rgb:
        path.write_bytes(b'')
  if depth_frames:
    folder = HERE / 'UWA3D-Depth' / 'WholeFrames' / f'{sample}_e00'
    folder.mkdir(parents=True)
    for f in depth_frames:
      mask = person(4.0 * f)
      if bits == 16:
        depth = np.where(mask, 2500 + np.arange(240)[:, None], 0).astype(np.uint16)
      else:
        depth = np.where(mask, 60 + np.arange(240)[:, None] // 2, 0).astype(np.uint8)
      Image.fromarray(depth).save(folder / f'{f:03d}.png')


def main() -> None:
  for name in ('UWA3D-RGB', 'UWA3D-Depth'):
    if (HERE / name).exists():
      shutil.rmtree(HERE / name)
  write_sample('a01_s01_v01', [1, 2, 3, 4, 5], [1, 2, 3, 4, 6])
  write_sample('a05_s02_v02', [1, 2, 3], [1, 2, 3], bits=8)
  write_sample('a02_s06_v02', [1, 2, 3], [1, 2, 3], empty_rgb=2)
  write_sample('a12_s03_v03', [1, 2, 3], [1, 2, 3])
  write_sample('a06_s06_v03', [], [1, 2, 3])
  write_sample('a30_s01_v04', [1, 2, 3], [1, 2, 3])
  write_sample('a21_s02_v04', [1, 2, 3], [])


if __name__ == '__main__':
  main()
