"""What a step costs: XLA's FLOP counts, memory plans and high-water marks, chips' peaks.

Numbers read from a lowered or compiled program or a device, and the model
FLOPs counted from one stream's forward; nothing here runs a step.
"""

from __future__ import annotations

from collections.abc import Sequence
import functools

import jax
import ml_collections

from modistill_jax.models import resnet

# `lowered` and `compiled` FLOP counts further apart than this are flagged.
FLOP_DISAGREEMENT_LIMIT = 0.10

# Peak dense (no sparsity) bf16 FLOP/s per chip, from the vendors' pages:
#   TPU v4 275 T, v5e 197 T, v5p 459 T, v6e (Trillium) 918 T: the "Peak compute
#   per chip (bf16)" rows of cloud.google.com/tpu/docs/{v4,v5e,v5p,v6e};
#   A100 312 T: NVIDIA A100 datasheet, "BFLOAT16 Tensor Core" (624 T is sparse);
#   H100 SXM 989 T, PCIe 756 T, NVL 835 T: NVIDIA H100 datasheet, "BFLOAT16
#   Tensor Core" halved (its 1,979 / 1,513 / 1,671 T are with sparsity);
#   H200 989 T: NVIDIA H200 datasheet (H200 SXM), 1,979 T with sparsity halved.
# Keys are `jax.Device.device_kind` ("TPU v5 lite" is v5e, "TPU v5" is v5p,
# "TPU v6 lite" is v6e); GPUs match by the substrings, first match wins.
PEAK_BF16_FLOPS = {
    'TPU v4': 275e12,
    'TPU v5 lite': 197e12,
    'TPU v5e': 197e12,
    'TPU v5': 459e12,
    'TPU v5p': 459e12,
    'TPU v6 lite': 918e12,
    'TPU v6e': 918e12,
}

_GPU_PEAK_BF16_FLOPS = (
    ('H100 PCIe', 756e12),
    ('H100 NVL', 835e12),
    ('H100', 989e12),
    ('H200', 989e12),
    ('A100', 312e12),
)


def peak_flops(device_kind: str) -> float | None:
  """The chip's peak dense bf16 FLOP/s, or None when unknown (CPU, other chips)."""
  if device_kind in PEAK_BF16_FLOPS:
    return PEAK_BF16_FLOPS[device_kind]
  if device_kind.startswith('NVIDIA'):
    for name, peak in _GPU_PEAK_BF16_FLOPS:
      if name in device_kind:
        return peak
  return None


def flops(stage: jax.stages.Compiled | jax.stages.Lowered) -> float:
  analysis = stage.cost_analysis()
  if isinstance(analysis, Sequence):  # one entry per executable in older JAX
    analysis = analysis[0]
  return float(analysis['flops'])


def flop_disagreement(lowered_flops: float, compiled_flops: float) -> float:
  """How far the compiled FLOP count is from the lowered one, relative to the larger.

  The lowered count is XLA's analysis of the program as JAX emitted it; the
  compiled one, of the optimised program, which on GPU is known to misreport
  (jax#16008, #17912, #22249). Neither is ground truth, so the difference is
  taken against the larger of the two: 0 when they agree, 1 when one is 0.
  """
  larger = max(lowered_flops, compiled_flops)
  return abs(lowered_flops - compiled_flops) / larger if larger > 0 else 0.0


def flops_disagree(lowered_flops: float, compiled_flops: float) -> bool:
  """Whether the two counts are further apart than `FLOP_DISAGREEMENT_LIMIT` (10%)."""
  return flop_disagreement(lowered_flops, compiled_flops) > FLOP_DISAGREEMENT_LIMIT


def peak_bytes_in_use(devices: Sequence[jax.Device]) -> int | None:
  """The devices' largest allocator high-water mark, or None where the backend keeps none (CPU)."""
  peaks = [(d.memory_stats() or {}).get('peak_bytes_in_use') for d in devices]
  return None if None in peaks else max(peaks)


def own_peak(before: int | None, after: int | None) -> int | None:
  """A measurement's own peak memory, from the high-water marks before and after it.

  JAX cannot reset the mark, so only a measurement that raised it knows its
  own peak (the new mark); one that did not stayed at or below `before`, and
  gets None.
  """
  return after if None not in (before, after) and after > before else None


def peak_memory(compiled: jax.stages.Compiled) -> tuple[int, int | None]:
  """Bytes one device reserves for the executable, and XLA's own peak estimate.

  The first is arguments + outputs + temporaries - aliased (donated) bytes, on
  every backend. The second is `peak_memory_in_bytes`, None where it is 0; the
  CPU backend leaves temporaries out of it, so it is not the headline number.
  """
  stats = compiled.memory_analysis()
  total = (
      stats.argument_size_in_bytes
      + stats.output_size_in_bytes
      + stats.temp_size_in_bytes
      - stats.alias_size_in_bytes
  )
  return int(total), int(getattr(stats, 'peak_memory_in_bytes', 0)) or None


def forward_flops_per_frame(config: ml_collections.ConfigDict, num_classes: int) -> float:
  """XLA's FLOPs of one stream in inference mode, per frame, on one clip.

  The stream is the one every stage runs (`resnet.stream_factory`), in the
  config's compute dtype.
  """
  num_frames, size = config.input.num_frames, config.input.image_size
  stream = resnet.stream_factory(config.model, num_classes)(name='stream')
  frames = jax.ShapeDtypeStruct((num_frames, size, size, 3), resnet.compute_dtype(config.model))
  variables = jax.eval_shape(
      functools.partial(stream.init, num_frames=num_frames, train=False), jax.random.key(0), frames
  )
  forward = jax.jit(functools.partial(stream.apply, num_frames=num_frames, train=False))
  return flops(forward.lower(variables, frames).compile()) / num_frames


def model_flops_per_step(
    forward_flops_per_frame: float,
    frames_per_step: int,
    *,
    trained_streams: int,
    frozen_streams: int,
) -> float:
  """The model FLOPs of a step: 3 forwards per trained stream (forward, backward), 1 per frozen.

  Counted from the one-stream inference forward, not from the step's own
  program, so recomputation (remat), optimizer updates or a miscounted
  backward do not enter it; MFU on it compares across implementations.
  """
  return forward_flops_per_frame * frames_per_step * (3 * trained_streams + frozen_streams)


def model_flops_mfu(
    flops_per_step: float, step_s: float | None, peak_per_device: float | None, num_devices: int
) -> float | None:
  """`flops_per_step` per second over the devices' peak; None without a peak (CPU) or a timing."""
  if not (peak_per_device and step_s):
    return None
  return flops_per_step / step_s / (peak_per_device * num_devices)
