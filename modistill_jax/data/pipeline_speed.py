"""Measures the input pipeline's clips/s on this machine, without a built dataset.

    python -m modistill_jax.data.pipeline_speed --workers 0 1 2 --seconds 20
    python -m modistill_jax.data.pipeline_speed --workers 0 --modalities rgb   # step1_rgb, step4

Builds clips in memory with `records.make_example` (so the JPEG/PNG sizes are
those a builder would write) and times `pipeline.train_iterator` for each
worker count, then decoding alone in one thread, the per-core decode bound,
both for the `--modalities` a stage reads (both by default: steps 2 and 3).
The `--clips` distinct clips are indexed as a split of `--split-size` records
(NTU RGB+D's cross-subject training split by default), because Grain's index
shuffle costs more per record the smaller the split: ~0.6 ms on 48 records,
~8 us on 40,000, which would otherwise dominate the RGB-only rate.
The frames are smooth scenes with a moving figure and mild sensor noise, not
random pixels, which no codec compresses and which would make decoding look
slower than on real video.
"""

from __future__ import annotations

import argparse

import numpy as np

from modistill_jax.data import jet
from modistill_jax.data import pipeline
from modistill_jax.data import records


def synthetic_clip(rng: np.random.Generator, index: int, num_frames: int,
                   size: int) -> dict:
  """One record: a lit room with a figure walking across it, RGB and jet depth."""
  t = np.arange(num_frames)[:, None, None]
  y, x = np.mgrid[:size, :size][:, None].astype(np.float32)
  centre = size * (0.2 + 0.6 * t / max(num_frames - 1, 1))
  figure = ((x - centre) ** 2 / (0.08 * size) ** 2 + (y - 0.55 * size) ** 2 /
            (0.3 * size) ** 2) < 1
  room = np.broadcast_to(
      np.stack([80 + 100 * y / size, 90 + 60 * x / size, 120 - 40 * y / size], -1),
      (num_frames, size, size, 3))
  rgb = np.where(figure[..., None], np.array([170, 60, 50], np.float32), room)
  rgb = np.clip(rgb + rng.normal(0, 4, rgb.shape), 0, 255).astype(np.uint8)
  depth_mm = np.where(figure, 2500.0, 3000.0 + 1500.0 * y / size)
  depth_mm = depth_mm + rng.normal(0, 10, depth_mm.shape)
  return records.make_example(
      rgb=rgb, depth_jet=jet.depth_to_jet(depth_mm), label=index % 10,
      sample_id=f'speed{index:04d}', rgb_frames_raw=num_frames, depth_frames_raw=num_frames)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--clips', type=int, default=48)
  parser.add_argument('--split-size', type=int, default=40_320)
  parser.add_argument('--frames-per-clip', type=int, default=40)
  parser.add_argument('--size', type=int, default=224)
  parser.add_argument('--batch-size', type=int, default=32)
  parser.add_argument('--workers', type=int, nargs='+', default=[0, 1, 2])
  parser.add_argument('--seconds', type=float, default=20.0)
  parser.add_argument('--modalities', nargs='+', default=list(pipeline.MODALITIES),
                      choices=pipeline.MODALITIES)
  args = parser.parse_args()

  rng = np.random.default_rng(0)
  clips = [synthetic_clip(rng, i, args.frames_per_clip, args.size) for i in range(args.clips)]
  split = [clips[i % args.clips] for i in range(args.split_size)]
  rgb_kb = np.mean([len(f) for c in clips for f in c['rgb']]) / 1024
  depth_kb = np.mean([len(f) for c in clips for f in c['depth']]) / 1024
  print(f'{args.clips} clips as a {args.split_size}-record split, x {args.frames_per_clip} '
        f'frames at {args.size}x{args.size}; mean JPEG {rgb_kb:.1f} KiB, PNG {depth_kb:.1f} KiB; '
        f'{pipeline.usable_cores()} cores; '
        f'decoding {" + ".join(args.modalities)}')
  for workers in args.workers:
    rate = pipeline.measure_clips_per_s(
        split, image_size=(args.size, args.size), batch_size=args.batch_size,
        worker_count=workers, seconds=args.seconds, modalities=args.modalities)
    print(f'pipeline, {workers} workers: {rate:.1f} clips/s')
  rate = pipeline.measure_decode_clips_per_s(clips, seconds=args.seconds,
                                             modalities=args.modalities)
  print(f'decode only, 1 thread: {rate:.1f} clips/s '
        f'(x {pipeline.usable_cores()} cores = {rate * pipeline.usable_cores():.1f})')


if __name__ == '__main__':
  main()
