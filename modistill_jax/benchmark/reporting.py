"""The benchmark's results as a fixed-width table and as Markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def _fmt(value, scale: float = 1.0, digits: int = 1) -> str:
  return 'n/a' if value is None else f'{value / scale:,.{digits}f}'


def _memory(result: Mapping[str, Any]) -> str:
  if result.get('measured_peak_memory_bytes') is not None:
    return _fmt(result['measured_peak_memory_bytes'], 2**30, 2)
  if result.get('measured_peak_memory_at_most_bytes') is not None:
    return '<= ' + _fmt(result['measured_peak_memory_at_most_bytes'], 2**30, 2)
  return 'n/a'


def markdown(report: Mapping[str, Any]) -> str:
  """The report as Markdown: settings, a row per stage and the reference, headline, end to end."""
  first = report['stages'][0]
  lines = [
      f"{first['device_kind']} x {first['num_devices']} ({first['platform']}), {first['dtype']}, "
      f"{first['batch_size']} clips x {first['num_frames']} frames of "
      f"{first['image_size']}x{first['image_size']}, blocks {first['units_per_block']} width "
      f"{first['width']}, median of {first['repeats']} x {first['steps']} steps; host load "
      f"{first['host_load_avg_1m'][0]:.1f} on {first['host_cpus']} cores",
      '',
      '| stage | clips/s | frames/s | GFLOP/step lowered | GFLOP/step compiled | disagree '
      '| model GFLOP/step | model-FLOP MFU | MFU (compiled) | measured peak GiB | plan GiB '
      '| compile s | recompiles | multi-stream eff. | input clips/s |',
      '|---|' + '---:|' * 14,
  ]
  rows = list(report['stages']) + ([report['reference']] if report.get('reference') else [])

  def percent(r, key):
    return 'n/a' if r.get(key) is None else f'{100 * r[key]:.1f}%'

  for r in rows:
    flag = f"{100 * r['flop_disagreement']:.1f}%" + (' **>10%**' if r['flops_disagree'] else '')
    lines.append(
        f"| {r['stage']} | {_fmt(r['clips_per_s'])} | {_fmt(r['frames_per_s'])} "
        f"| {_fmt(r['lowered_flops_per_step'], 1e9)} | {_fmt(r['flops_per_step'], 1e9)} "
        f"| {flag} | {_fmt(r['model_flops_per_step'], 1e9)} | {percent(r, 'model_flops_mfu')} "
        f"| {percent(r, 'mfu')} | {_memory(r)} | {_fmt(r['peak_memory_bytes'], 2**30, 2)} "
        f"| {_fmt(r['compile_s'])} | {'n/a' if r['recompiles'] is None else r['recompiles']} "
        f"| {_fmt(r.get('multi_stream_efficiency'), 1, 2)} "
        f"| {_fmt(r.get('pipeline_clips_per_s'))} |"
    )
  headline = report.get('headline')
  if headline and headline['over_reference'] is not None:
    lines += [
        '',
        f"**{headline['stage']} frames/s over the plain ResNet reference's: "
        f"{_fmt(headline['over_reference'], 1, 2)}x** ({_fmt(headline['frames_per_s'])} "
        f"vs {_fmt(headline['reference_frames_per_s'])})",
    ]
  e2e = report.get('end_to_end')
  if e2e:
    share = 'n/a' if e2e['share_of_bound'] is None else f"{100 * e2e['share_of_bound']:.0f}%"
    lines += [
        '',
        f"End to end ({e2e['stage']}, trainer loop, {e2e['steps_timed']} steps timed): "
        f"**{_fmt(e2e['clips_per_s'])} clips/s**, {share} of min(step alone "
        f"{_fmt(e2e['step_alone_clips_per_s'])}, pipeline alone "
        f"{_fmt(e2e['pipeline_alone_clips_per_s'])}); with validation passes "
        f"({e2e['validation_passes_timed']} timed): "
        f"{_fmt(e2e['with_validation_clips_per_s'])} clips/s",
    ]
  if report.get('model_flops'):
    lines += [
        '',
        f"Model FLOPs: {report['model_flops']}. Measured memory: " f"{report['measured_memory']}.",
    ]
  return '\n'.join(lines) + '\n'


def table(results: Sequence[Mapping[str, Any]]) -> str:
  """A fixed-width table of the results, one row per stage."""
  first = results[0]
  lines = [
      f"{first['device_kind']} x {first['num_devices']} ({first['platform']}), "
      f"{first['dtype']}, {first['batch_size']} clips x {first['num_frames']} frames of "
      f"{first['image_size']}x{first['image_size']}, blocks {first['units_per_block']} "
      f"width {first['width']}; host load {first['host_load_avg_1m'][0]:.1f} on "
      f"{first['host_cpus']} cores",
      f'forward GFLOP/frame (one stream, inference): '
      f"{_fmt(first['forward_flops_per_frame'], 1e9, 3)}",
      f"{'stage':<12}{'clips/s':>10}{'frames/s':>11}{'GFLOP/step':>13}{'fwd units':>10}"
      f"{'MFU':>7}{'mem GiB':>9}{'compile s':>10}{'recomp':>7}{'FLOP x':>8}{'eff':>7}"
      f"{'input clips/s':>15}",
  ]
  for r in results:
    mfu = 'n/a' if r['mfu'] is None else f"{100 * r['mfu']:.1f}%"
    recompiles = 'n/a' if r['recompiles'] is None else str(r['recompiles'])
    lines.append(
        f"{r['stage']:<12}{_fmt(r['clips_per_s']):>10}{_fmt(r['frames_per_s']):>11}"
        f"{_fmt(r['flops_per_step'], 1e9):>13}{_fmt(r['flops_in_stream_forwards'], 1, 2):>10}"
        f"{mfu:>7}{_fmt(r['peak_memory_bytes'], 2**30, 2):>9}{_fmt(r['compile_s']):>10}"
        f"{recompiles:>7}{_fmt(r['flop_ratio'], 1, 2):>8}"
        f"{_fmt(r['multi_stream_efficiency'], 1, 2):>7}{_fmt(r['pipeline_clips_per_s']):>15}"
    )
  return '\n'.join(lines)
