"""Writes the fake NTU RGB+D raw tree the builder test reads (run from anywhere).

    python data_builders/ntu_rgbd/dummy_data/make_dummy_data.py

The scene is a person-shaped silhouette in the 512x424 depth frame. Each RGB
frame shows the same scene through a known RGB->depth affine map per
(setup, camera), so a correct alignment puts the RGB person on the depth
silhouette. RGB videos are small real AVIs (MPEG-4, 192x108, i.e. the
1920x1080 frame scaled by 0.1: the builder scales maps to the decoded size),
depth PNGs are full-size 512x424 uint16 (mostly zeros), skeleton files follow
the official text format with the joints' colour/depth pixel pairs.

Samples and the quirks they carry (README section 4 of the datasets notes):

| id | layout | quirk | expected |
| --- | --- | --- | --- |
| S001C002P003R002A013 | per-setup | 8 RGB / 6 depth frames; skeleton with a 0-body | cstest_cvval |
|  |  | frame, NaN/zero joints, a false third body |  |
| S001C002P005R002A008 | per-setup | in the official missing-skeleton list: no file | cstrain_cvval|
| S001C001P001R001A001 | per-setup | 6 RGB / 7 depth frames; subject 1 (validation) | csval_cvtest |
| S001C003P002R001A050 | per-setup | one MDepth PNG is empty (0 bytes) | skipped |
| S002C003P008R001A020 | merged | missing-skeleton id; group without any skeleton | cstrain_cvval |
| S002C001P020R001A059 | merged | group without skeleton (issue-#39 fallback map) | cstest_cvtest |
| S002C001P010R001A002 | merged | no depth folder | skipped |
| S002C001P011R001A003 | merged | RGB file is not a video | skipped |
| S002C001P012R002A004 | merged | depth folder without frames | skipped |
| S002C002P013R001A005 | merged | depth only, no RGB video | skipped |

Infrared videos (`nturgb+d_ir/<ID>_ir.avi`, 512x424 like the depth frames: the
silhouette bright on a dark room), for the `*_ir_skeleton` configs, which also
need a skeleton file: S001C002P003R002A013 (8 frames; built, 6 kept),
S001C001P001R001A001 (5 frames; built, 5 kept), S001C002P005R002A008 (no
skeleton: skipped) and S002C001P020R001A059 (merged layout; no skeleton:
skipped); S002C003P008R001A020 has none (skipped). An RGB-D build reads no
infrared file, so these change nothing it builds.
"""

from __future__ import annotations

import pathlib
import shutil

import av
import numpy as np
from PIL import Image

HERE = pathlib.Path(__file__).resolve().parent
RGB_SIZE = (1920, 1080)
DEPTH_SIZE = (512, 424)
FAKE_RGB_SCALE = 0.1
# Known RGB->depth maps of the groups with skeletons; the others are rendered
# with the issue-#39 fallback of their camera, which is what the builder uses.
TRUE_AFFINES = {
    (1, 2): np.array([[0.352, 0.012, -85.0], [-0.008, 0.348, 9.0]]),
    (1, 1): np.array([[0.340, -0.005, -70.0], [0.004, 0.345, 20.0]]),
    (1, 3): np.array([[0.3451, 0.0009, -73.3], [0.0015, 0.3451, 22.2]]),
    (2, 1): np.array([[0.3456, 0.0028, -82.2], [-0.0014, 0.3469, 13.1]]),
    (2, 2): np.array([[0.3429, 0.0009, -72.9], [0.0003, 0.3436, 17.6]]),
    (2, 3): np.array([[0.3451, 0.0009, -73.3], [0.0015, 0.3451, 22.2]]),
}


def silhouette(x: np.ndarray, y: np.ndarray, shift: float) -> np.ndarray:
  """Person mask at depth-frame coordinates (x, y): a head over a torso."""
  head = (x - 256 - shift) ** 2 + (y - 110) ** 2 < 28**2
  torso = (np.abs(x - 256 - shift) < 45) & (y > 140) & (y < 340)
  return head | torso


def depth_frame(shift: float) -> np.ndarray:
  """512x424 uint16 mm: the person at 3-3.4 m, zeros (masked out) elsewhere."""
  y, x = np.mgrid[: DEPTH_SIZE[1], : DEPTH_SIZE[0]] + 0.5
  mask = silhouette(x, y, shift)
  return np.where(mask, 3000 + (y - 100), 0).astype(np.uint16)


def rgb_frame(affine: np.ndarray, size: tuple[int, int], shift: float) -> np.ndarray:
  """`size` = (W, H) RGB frame of the scene seen through the RGB->depth `affine`."""
  w, h = size
  v, u = np.mgrid[:h, :w] + 0.5
  cx, cy = u * RGB_SIZE[0] / w, v * RGB_SIZE[1] / h  # Nominal 1920x1080 coordinates.
  dx = affine[0, 0] * cx + affine[0, 1] * cy + affine[0, 2]
  dy = affine[1, 0] * cx + affine[1, 1] * cy + affine[1, 2]
  mask = silhouette(dx, dy, shift)
  frame = np.empty((h, w, 3), np.uint8)
  frame[:] = (40, 60, 90)
  frame[mask] = (230, 150, 60)
  return frame


def joint_lines(affine: np.ndarray, shift: float, rng: np.random.Generator) -> list[str]:
  """25 joint lines of a body inside the silhouette, colour = depth mapped back."""
  depth_xy = np.stack([256 + shift + rng.uniform(-40, 40, 25), rng.uniform(90, 330, 25)], 1)
  inverse = np.linalg.inv(np.vstack([affine, [0, 0, 1]]))
  color_xy = (np.c_[depth_xy, np.ones(25)] @ inverse.T)[:, :2] + rng.normal(0, 0.2, (25, 2))
  return [
      f'0.1 -0.2 3.2 {d[0]:.4f} {d[1]:.4f} {c[0]:.4f} {c[1]:.4f} 0.9 0.1 0.2 0.3 2'
      for d, c in zip(depth_xy, color_xy)
  ]


def skeleton_text(affine: np.ndarray, frames: int, seed: int) -> str:
  """Official format, with the quirks: a 0-body frame, NaN/zero joints, a false body."""
  rng = np.random.default_rng(seed)
  lines = [str(frames)]
  for f in range(frames):
    if f == 2:
      lines.append('0')
      continue
    bodies = [joint_lines(affine, 2.0 * f, rng)]
    if f == 1:
      bodies[0][3] = 'NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN NaN 0'
      bodies[0][4] = '0 0 0 0 0 0 0 0 0 0 0 0'
    if f == 4:  # A false detection (a chair): colour positions unrelated to depth.
      bodies.append(
          [
              f'0.5 0.1 2.5 {x:.3f} {y:.3f} {rng.uniform(0, 1900):.3f} '
              f'{rng.uniform(0, 1070):.3f} 0 0 0 0 1'
              for x, y in rng.uniform([20, 20], [490, 400], (25, 2))
          ]
      )
    lines.append(str(len(bodies)))
    for i, joints in enumerate(bodies):
      lines.append(f'7205759403793235{i} 0 0 0 0 0 0 0.33916 -0.5899565 2')
      lines.append('25')
      lines.extend(joints)
  return '\n'.join(lines) + '\n'


def ir_frame(shift: float) -> np.ndarray:
  """512x424 RGB (gray) infrared frame: the silhouette bright, the room dark."""
  y, x = np.mgrid[: DEPTH_SIZE[1], : DEPTH_SIZE[0]] + 0.5
  level = np.where(silhouette(x, y, shift), 220 - (y - 100) // 4, 30).astype(np.uint8)
  return np.repeat(level[..., None], 3, axis=-1)


def write_ir(root: pathlib.Path, sample_id: str, layout: str, frames: int) -> None:
  setup = int(sample_id[1:4])
  folder = (root / f'nturgbd_ir_s{setup:03d}' if layout == 'per-setup' else root) / 'nturgb+d_ir'
  folder.mkdir(parents=True, exist_ok=True)
  write_avi(folder / f'{sample_id}_ir.avi', [ir_frame(2.0 * f) for f in range(frames)])


def write_avi(path: pathlib.Path, frames: list[np.ndarray]) -> None:
  with av.open(str(path), 'w', format='avi') as container:
    stream = container.add_stream('mpeg4', rate=30)
    stream.height, stream.width = frames[0].shape[:2]
    stream.pix_fmt = 'yuv420p'
    for frame in frames:
      container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format='rgb24')))
    container.mux(stream.encode())
  with av.open(str(path)) as container:  # It must decode, with every frame.
    assert sum(1 for _ in container.decode(video=0)) == len(frames), path


def write_sample(
    root: pathlib.Path,
    sample_id: str,
    layout: str,
    rgb_frames: int | None,
    depth_frames: int | None,
    skeleton: bool,
) -> None:
  setup, camera = int(sample_id[1:4]), int(sample_id[5:8])
  affine = TRUE_AFFINES[setup, camera]
  wrap = {
      'per-setup': lambda kind: root / f'nturgbd_{kind}_s{setup:03d}',
      'merged': lambda kind: root,
  }[layout]
  if rgb_frames:
    folder = wrap('rgb') / 'nturgb+d_rgb'
    folder.mkdir(parents=True, exist_ok=True)
    size = (int(RGB_SIZE[0] * FAKE_RGB_SCALE), int(RGB_SIZE[1] * FAKE_RGB_SCALE))
    write_avi(
        folder / f'{sample_id}_rgb.avi',
        [rgb_frame(affine, size, 2.0 * f) for f in range(rgb_frames)],
    )
  if depth_frames is not None:
    folder = wrap('depth_masked') / 'nturgb+d_depth_masked' / sample_id
    folder.mkdir(parents=True, exist_ok=True)
    for f in range(depth_frames):
      Image.fromarray(depth_frame(2.0 * f)).save(folder / f'MDepth-{f + 1:08d}.png')
  if skeleton:
    folder = root / 'nturgbd_skeletons_s001_to_s017' / 'nturgb+d_skeletons'
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f'{sample_id}.skeleton').write_text(
        skeleton_text(affine, rgb_frames, seed=int(sample_id[-3:]))
    )


def main() -> None:
  root = HERE
  for child in root.iterdir():
    if child.is_dir():
      shutil.rmtree(child)
  write_sample(root, 'S001C002P003R002A013', 'per-setup', 8, 6, skeleton=True)
  write_sample(root, 'S001C002P005R002A008', 'per-setup', 6, 6, skeleton=False)
  write_sample(root, 'S001C001P001R001A001', 'per-setup', 6, 7, skeleton=True)
  write_sample(root, 'S001C003P002R001A050', 'per-setup', 6, 6, skeleton=False)
  (
      root
      / 'nturgbd_depth_masked_s001'
      / 'nturgb+d_depth_masked'
      / 'S001C003P002R001A050'
      / 'MDepth-00000003.png'
  ).write_bytes(b'')
  write_sample(root, 'S002C003P008R001A020', 'merged', 6, 6, skeleton=False)
  write_sample(root, 'S002C001P020R001A059', 'merged', 6, 6, skeleton=False)
  write_sample(root, 'S002C001P010R001A002', 'merged', 6, None, skeleton=False)
  write_sample(root, 'S002C001P011R001A003', 'merged', None, 6, skeleton=False)
  (root / 'nturgb+d_rgb' / 'S002C001P011R001A003_rgb.avi').write_bytes(
      np.random.default_rng(0).integers(0, 256, 2048, np.uint8).tobytes()
  )
  write_sample(root, 'S002C001P012R002A004', 'merged', 6, 0, skeleton=False)
  # Git keeps no empty folder: a stray non-frame file stands for "no frames".
  (root / 'nturgb+d_depth_masked' / 'S002C001P012R002A004' / 'desktop.ini').write_text('\n')
  write_sample(root, 'S002C002P013R001A005', 'merged', None, 6, skeleton=False)
  write_infrared(root)


def write_infrared(root: pathlib.Path) -> None:
  """The infrared videos (see the module docstring)."""
  write_ir(root, 'S001C002P003R002A013', 'per-setup', 8)
  write_ir(root, 'S001C001P001R001A001', 'per-setup', 5)
  write_ir(root, 'S001C002P005R002A008', 'per-setup', 6)
  write_ir(root, 'S002C001P020R001A059', 'merged', 6)


if __name__ == '__main__':
  main()
