"""Writes the fake NW-UCLA raw tree the builder test reads (run from anywhere).

    python data_builders/nw_ucla/dummy_data/make_dummy_data.py

`multiview_action/view_V/aAA_sSS_eEE/` folders with 640x480 RGB JPEGs,
320x240 uint16 depth PNGs, depth_vis JPEGs, skeleton texts and `fileList.txt`;
RGB and depth of a frame share N but not the timecode. Quirks (datasets
notes, section 4):

| folder            | quirk                                          | expected         |
|-------------------|------------------------------------------------|------------------|
| view_1/a08_s01_e00| frame numbers 99, 100, 101 (numeric order)     | view1, label 6   |
| view_1/a09_s02_e01| N=9 RGB only, N=10 depth only: 4 common of 5/5 | view1, label 7   |
| view_2/a11_s03_e00| plain                                          | view2, label 8   |
| view_2/a05_s04_e01| a truncated depth PNG                          | skipped          |
| view_2/a07_s01_e00| action id 7 does not exist                     | skipped          |
| view_3/a12_s01_e02| plain                                          | view3, label 9   |
| view_3/a01_s01_e00| no frame (only an empty fileList.txt)          | skipped          |
"""

from __future__ import annotations

import pathlib
import shutil

import numpy as np
from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent


def person(width: int, height: int, shift: float) -> np.ndarray:
  y, x = (np.mgrid[:height, :width] + 0.5) * (240 / height)
  x = x - shift
  return ((x - 160) ** 2 + (y - 60) ** 2 < 15**2) | ((np.abs(x - 160) < 25) & (y > 75) & (y < 200))


def write_sample(
    root: pathlib.Path, view: int, name: str, rgb_frames, depth_frames, corrupt: int | None = None
) -> None:
  folder = root / 'multiview_action' / f'view_{view}' / name
  folder.mkdir(parents=True)
  lines = []
  for n in sorted(set(rgb_frames) | set(depth_frames)):
    tc = 90467000 + 33 * n
    shift = 3.0 * n % 40
    if n in rgb_frames:
      rgb = np.where(person(640, 480, shift)[..., None], [220, 140, 70], [50, 70, 100])
      Image.fromarray(rgb.astype(np.uint8)).save(folder / f'frame_{n}_tc_{tc}_rgb.jpg', quality=50)
    if n in depth_frames:
      mask = person(320, 240, shift)
      depth = np.where(mask, 2500 + np.arange(240)[:, None], 0).astype(np.uint16)
      path = folder / f'frame_{n}_tc_{tc + 32}_depth.png'
      Image.fromarray(depth).save(path)
      if n == corrupt:
        path.write_bytes(path.read_bytes()[:60])
      Image.fromarray((mask * 200).astype(np.uint8)).save(
          folder / f'frame_{n}_tc_{tc + 32}_depth_vis.jpg', quality=50
      )
      (folder / f'frame_{n}_tc_{tc + 32}_skeletons.txt').write_text(
          '1\n' + ''.join(f'{0.1 * j:.3f},{0.05 * j:.3f},2.5,1\n' for j in range(20))
      )
    lines.append(f'{n} {tc} {tc + 32}')
  (folder / 'fileList.txt').write_text('\n'.join(lines) + ('\n' if lines else ''))


def main() -> None:
  target = HERE / 'multiview_action'
  if target.exists():
    shutil.rmtree(target)
  write_sample(HERE, 1, 'a08_s01_e00', [99, 100, 101], [99, 100, 101])
  write_sample(HERE, 1, 'a09_s02_e01', [5, 6, 7, 8, 9], [5, 6, 7, 8, 10])
  write_sample(HERE, 2, 'a11_s03_e00', [1, 2, 3], [1, 2, 3])
  write_sample(HERE, 2, 'a05_s04_e01', [1, 2, 3], [1, 2, 3], corrupt=2)
  write_sample(HERE, 2, 'a07_s01_e00', [1, 2], [1, 2])
  write_sample(HERE, 3, 'a12_s01_e02', [20, 21, 22], [20, 21, 22])
  write_sample(HERE, 3, 'a01_s01_e00', [], [])


if __name__ == '__main__':
  main()
