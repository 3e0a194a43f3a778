"""Command line and library: export a trained RGB-only stage, weights included, for serving.

  python -m modistill_jax.export --workdir=DIR --out=EXPORT_DIR
  python -m modistill_jax.export --workdir=DIR --stage=step4 --out=EXPORT_DIR \
      --format=stablehlo --platforms=cpu,cuda

Both artefacts compute the same function as `predict.Predictor`: uint8 frames
`(clips, frames, H, W, 3)` -> float32 class probabilities `(clips, classes)`,
the softmax of the mean of the stage's two streams' clip logits (step 4: RGB
and hallucination). `frames`, `H` and `W` are fixed to the trained config
(`input.num_frames`, `input.image_size`); the number of clips is symbolic, so
one artefact serves any batch. Preprocessing inside the artefact is what
evaluation does on the device: cast to float32 and `(x - mean) / std` per
channel in 0..255 units (`preprocess.normalize`, the config's RGB statistics).
What stays with the caller is what the input pipeline does on the host: pick
`frames` uniformly spaced frames of the video (`sampling.uniform_indices`)
and resize each to `H x W` bilinearly (`pipeline.resize_frame`); `predict`'s
`sample_clips` does both from a video file.

`EXPORT_DIR` gets, per `--format` (default `both`):

* `saved_model/`: a TensorFlow SavedModel made by `jax2tf` with native
  serialization (the JAX computation embedded as StableHLO in an
  `XlaCallModule` op). Its `serving_default` signature takes `frames` (uint8
  `(None, frames, H, W, 3)`) and returns `{'probabilities': (None, classes)}`.
  The weights are TF variables of the SavedModel, not constants in its graph.
* `model.stablehlo`: `jax.export.Exported.serialize()` of the same function
  with the weights embedded as constants, one self-contained file. Load it
  with `jax.export.deserialize(bytearray(data))` and run `exported.call(frames)`
  from any JAX of a compatible calling convention, no modistill_jax needed.
* `metadata.json` (always): input name, shape, dtype and layout, the
  normalisation, the frame sampling, class names in output order, stage,
  checkpoint step and lowering platforms.

Both are lowered for `--platforms` (default: the platform JAX runs on here);
name several, e.g. `cpu,cuda,tpu`, to serve the same files on any of them.
Stages that read depth (step 2, ...) are refused, as in `predict`: serving
receives RGB only.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools
import json
import os
import sys
from typing import Any

from absl import app
from absl import flags
from etils import epath
import jax
import jax.numpy as jnp

from modistill_jax import cli
from modistill_jax import predict
from modistill_jax import quiet_tensorflow

FORMATS = ('saved_model', 'stablehlo', 'both')
SAVED_MODEL_DIR = 'saved_model'
STABLEHLO_FILE = 'model.stablehlo'
METADATA_FILE = 'metadata.json'
INPUT_NAME = 'frames'
OUTPUT_NAME = 'probabilities'
# The symbolic number of clips: one artefact serves every batch size.
BATCH_DIM = 'clips'


def default_platforms() -> tuple[str, ...]:
  return (jax.export.default_export_platform(),)


def metadata(predictor: predict.Predictor, platforms: Sequence[str]) -> dict[str, Any]:
  """What a server needs besides the function: shapes, preprocessing, class names."""
  mean, std = (
      list(predictor.input_config[f'{predict.VIDEO_MODALITY}_{k}']) for k in ('mean', 'std')
  )
  height, width = predictor.image_size
  return {
      'stage': predictor.stage.name,
      'checkpoint_step': predictor.step,
      'platforms': list(platforms),
      'input': {
          'name': INPUT_NAME,
          'dtype': 'uint8',
          'shape': [None, predictor.num_frames, height, width, 3],
          'layout': '(clips, frames, height, width, RGB); clips is any size',
          'frame_sampling': (
              f'{predictor.num_frames} uniformly spaced frames of the video: '
              'rint(linspace(0, num_video_frames - 1, frames))'
          ),
          'resize': f'each frame to {height}x{width}, PIL bilinear, before export input',
      },
      'normalization': {
          'applied_inside': True,
          'formula': '(float32(x) - mean) / std per channel, 0..255 units',
          'mean': mean,
          'std': std,
      },
      'output': {
          'name': OUTPUT_NAME,
          'dtype': 'float32',
          'shape': [None, len(predictor.class_names)],
          'meaning': "softmax of the mean of the streams' clip logits: "
          + ' + '.join(predictor.stage.fused),
      },
      'class_names': list(predictor.class_names),
  }


def export_saved_model(predictor: predict.Predictor, path: str, platforms: Sequence[str]) -> None:
  """Writes a SavedModel whose `serving_default` maps uint8 frames to probabilities."""
  tf = quiet_tensorflow.import_tensorflow()
  from jax.experimental import jax2tf  # pylint: disable=g-import-not-at-top (imports TensorFlow)

  tf_fn = jax2tf.convert(
      predictor.probabilities,
      polymorphic_shapes=[None, f'({BATCH_DIM}, ...)'],
      native_serialization_platforms=tuple(platforms),
      with_gradient=False,
  )
  weights = tf.nest.map_structure(lambda x: tf.Variable(x, trainable=False), predictor.variables)
  module = tf.Module()
  # Tracked as a flat list: the SavedModel then stores each weight once, as a variable.
  module.weights = tf.nest.flatten(weights)
  spec = tf.TensorSpec((None, *predictor.clip_shape), tf.uint8, name=INPUT_NAME)

  @tf.function(input_signature=[spec], autograph=False)
  def serve(frames):
    return {OUTPUT_NAME: tf_fn(weights, frames)}

  module.serve = serve
  tf.saved_model.save(module, path, signatures={'serving_default': serve})


def export_stablehlo(predictor: predict.Predictor, platforms: Sequence[str]) -> jax.export.Exported:
  """The probabilities function with the weights as constants, for any number of clips."""
  fn = jax.jit(functools.partial(predictor.probabilities, predictor.variables))
  shape = jax.export.symbolic_shape(f'{BATCH_DIM}, ' + ', '.join(map(str, predictor.clip_shape)))
  return jax.export.export(fn, platforms=tuple(platforms))(jax.ShapeDtypeStruct(shape, jnp.uint8))


def load_stablehlo(path: str) -> jax.export.Exported:
  return jax.export.deserialize(bytearray(epath.Path(path).read_bytes()))


def export(
    workdir: str, stage: str, out: str, *, fmt: str = 'both', platforms: Sequence[str] | None = None
) -> dict[str, Any]:
  """Writes the chosen artefacts and `metadata.json` into `out`; returns the metadata."""
  if fmt not in FORMATS:
    raise ValueError(f'format must be one of {FORMATS}, got {fmt!r}.')
  platforms = tuple(platforms or default_platforms())
  predictor = predict.Predictor(workdir, stage)
  out_dir = epath.Path(out)
  out_dir.mkdir(parents=True, exist_ok=True)
  meta = metadata(predictor, platforms)
  meta['files'] = {}
  if fmt in ('saved_model', 'both'):
    export_saved_model(predictor, os.fspath(out_dir / SAVED_MODEL_DIR), platforms)
    meta['files']['saved_model'] = SAVED_MODEL_DIR
  if fmt in ('stablehlo', 'both'):
    (out_dir / STABLEHLO_FILE).write_bytes(export_stablehlo(predictor, platforms).serialize())
    meta['files']['stablehlo'] = STABLEHLO_FILE
  (out_dir / METADATA_FILE).write_text(json.dumps(meta, indent=2))
  return meta


def define_flags() -> None:
  """The command's flags, defined only when it runs (see `predict.define_flags`)."""
  flags.DEFINE_string('workdir', None, 'Run folder the stage was trained in.', required=True)
  flags.DEFINE_string('stage', 'step4', 'An RGB-only stage of that run.')
  flags.DEFINE_string('out', None, 'Output folder.', required=True)
  flags.DEFINE_enum('format', 'both', FORMATS, 'Artefacts to write.')
  flags.DEFINE_list('platforms', [], 'Lowering platforms, e.g. cpu,cuda,tpu; default: this one.')


def main(argv: Sequence[str]) -> int:
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  cli.quiet_logging()
  quiet_tensorflow.quiet_native_logging()
  f = flags.FLAGS
  cli.use_compilation_cache(f.workdir)
  try:
    meta = export(f.workdir, f.stage, f.out, fmt=f.format, platforms=f.platforms)
  except (ValueError, KeyError) as e:
    print(f'error: {e}', file=sys.stderr)
    return 2
  files = ', '.join(str(epath.Path(f.out) / p) for p in meta['files'].values())
  print(
      f"{meta['stage']} (step {meta['checkpoint_step']}) for {', '.join(meta['platforms'])}: "
      f'{files}, {epath.Path(f.out) / METADATA_FILE}'
  )
  return 0


if __name__ == '__main__':
  define_flags()
  app.run(main)
