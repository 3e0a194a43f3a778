"""The `ntu_like` synthetic configuration, its calibration probe, and `default` left untouched."""

from __future__ import annotations

import hashlib

from modistill_jax.data import synthetic

# sha256 over the rgb, depth_mm and depth_jet bytes of one `default` clip per class
# (clip 37 * label + 5), computed with main's generator before `ntu_like` existed.
DEFAULT_CLIPS_SHA256 = '721c24316a8077346c9bf0305e1e101390fe60395970584db97a481904a73030'


def test_default_clips_are_the_pixels_they_were_before_ntu_like():
  digest = hashlib.sha256()
  spec = synthetic.GeneratorSpec()
  for label in range(len(synthetic.CLASS_NAMES)):
    clip = synthetic.render_clip(spec, label, 37 * label + 5)
    for key in ('rgb', 'depth_mm', 'depth_jet'):
      digest.update(clip[key].tobytes())
  assert digest.hexdigest() == DEFAULT_CLIPS_SHA256
