"""A record of `synthetic_rgbd`: the work the builder's worker processes do.

It is a module of its own, imported by its full name, because a spawned worker
imports the function it runs by module name, and `tfds build
data_builders/synthetic_rgbd` loads the builder's own module under a name
(`synthetic_rgbd...`) that only the building process can import.
"""

from __future__ import annotations

from modistill_jax.data import jet
from modistill_jax.data import records
from data_builders.synthetic_rgbd import renderer


def example(spec: renderer.GeneratorSpec, clip: renderer.ClipInfo) -> tuple[str, dict]:
  """`(sample_id, record)` of a clip: rendered, then encoded as every dataset's records are."""
  frames = renderer.render_clip(spec, clip.label, clip.index)
  return clip.sample_id, records.make_example(
      rgb=frames['rgb'],
      depth_code=jet.depth_to_code(frames['depth_mm']),
      label=clip.label,
      sample_id=clip.sample_id,
      rgb_frames_raw=spec.num_frames,
      depth_frames_raw=spec.num_frames,
      subject=clip.subject,
      view=clip.view,
      replication=clip.replication,
  )


def example_of_task(task: tuple[renderer.GeneratorSpec, renderer.ClipInfo]) -> tuple[str, dict]:
  """`example` of a `(spec, clip)` pair, the form a pool's `map` hands out."""
  return example(*task)
