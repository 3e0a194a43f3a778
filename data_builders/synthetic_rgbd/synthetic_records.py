"""A record of `synthetic_rgbd`: the work the builder's worker processes do.

It is a module of its own, imported by its full name, because a spawned worker
imports the function it runs by module name, and `tfds build
data_builders/synthetic_rgbd` loads the builder's own module under a name
(`synthetic_rgbd...`) that only the building process can import.
"""

from __future__ import annotations

from collections.abc import Sequence

from modistill_jax.data import jet
from modistill_jax.data import records
from data_builders.synthetic_rgbd import renderer

# The modalities a build may store: the renderer makes all of them.
STORABLE = ('rgb', 'depth', 'ir', 'skeleton')


def example(
    spec: renderer.GeneratorSpec,
    clip: renderer.ClipInfo,
    modalities: Sequence[str] = records.MODALITIES,
) -> tuple[str, dict]:
  """`(sample_id, record)` of a clip: rendered, then encoded as every dataset's records are.

  Args:
    spec: what to render.
    clip: which clip.
    modalities: what the record stores (of `STORABLE`; RGB and depth by default).
  """
  unknown = sorted(set(modalities) - set(STORABLE))
  if unknown:
    raise ValueError(f'synthetic_rgbd renders no {unknown}; it renders {list(STORABLE)}.')
  extra = not set(modalities) <= {'rgb', 'depth'}
  rendered = renderer.render_clip(spec, clip.label, clip.index, ir_and_joints=extra)
  frames = {'rgb': rendered['rgb'], 'depth': jet.depth_to_code(rendered['depth_mm'])}
  if extra:
    frames.update(ir=rendered['ir'], skeleton=rendered['joints'])
  return clip.sample_id, records.make_clip(
      frames={m: frames[m] for m in modalities},
      frames_raw={m: spec.num_frames for m in modalities},
      label=clip.label,
      sample_id=clip.sample_id,
      subject=clip.subject,
      view=clip.view,
      replication=clip.replication,
  )


def example_of_task(
    task: tuple[renderer.GeneratorSpec, renderer.ClipInfo, Sequence[str]],
) -> tuple[str, dict]:
  """`example` of a `(spec, clip, modalities)` triple, the form a pool's `map` hands out."""
  return example(*task)
