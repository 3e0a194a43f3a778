"""Speed of the real training step of a stage: throughput, FLOPs, MFU, memory, compile time.

  python -m modistill_jax.benchmark --config=configs/ntu_cs.py:step3 \
      --config.model.dtype=bfloat16 --config.batch_size=32 --json=step3.json
  python -m modistill_jax.benchmark --config=configs/ntu_cs.py --all_stages \
      --config.model.dtype=bfloat16 --config.batch_size=32 --json=stages.json
  python -m modistill_jax.benchmark --config=configs/ntu_cs.py --suite \
      [--data_dir=$TFDS_DATA_DIR] --json=suite.json --markdown=suite.md

The step is the trainer's own (`trainer.make_train_fn`: donated state, data-
parallel over every device), built from the config exactly as `run_stage`
builds it, with freshly initialised weights. Speed does not depend on the
weights, so no checkpoint and no dataset are needed; `--num_classes` sets the
classifier size (60, NTU RGB+D 60) that the dataset would.

What each reported number is:

* `clips_per_s`, `frames_per_s`: the step alone on synthetic uint8 batches
  already on the devices, the median of `--repeats` repeats of `--steps`
  steps (after `--warmup` steps), each repeat closed by one
  `block_until_ready` (`repeat_clips_per_s`: each repeat's). Frames are input frames (clips x
  `input.num_frames`), whatever the number of streams, so a two-stream stage
  at the same frames/s does twice the work of one stream.
* `pipeline_clips_per_s`: with `--data_dir`, the Grain input pipeline alone on
  the built dataset's training split (`pipeline.measure_clips_per_s`), at the
  config's batch size and `input.worker_count`, decoding the stage's `inputs`
  only, as the trainer does (so RGB-only stages read no depth); null otherwise.
* `flops_per_step`: XLA's cost analysis of the compiled step, over all devices
  (the analysis of an SPMD executable counts one device's share, which is
  `flops_per_step_per_device`).
* `forward_flops_per_frame`: one `Stream` in inference mode, compiled alone on
  one clip, divided by its frames. `flops_in_stream_forwards` expresses the
  step in those units: about 3 for one trained stream (forward and backward),
  4 for step 3 (a trained student plus the frozen teacher's forward only) and
  6 for steps 2 and 4 (two trained streams).
* `mfu`: `flops_per_step_per_device` x steps/s over the chip's peak dense bf16
  FLOP/s (`PEAK_BF16_FLOPS`); null where the device is not in that table (CPU).
* `lowered_flops_per_step`: XLA's cost analysis of the step as lowered (before
  optimisation and partitioning: the whole program once, so work replicated
  on every device, such as the optimizer update, counts once there and once
  per device in `flops_per_step`). `flop_disagreement` = |lowered - compiled|
  / the larger; `flops_disagree` when it is over 10% (the compiled count is
  known to misreport on GPU: jax#16008, #17912, #22249).
* `model_flops_per_step`, `model_flops_mfu`: model FLOPs = (3 x trained
  streams + frozen streams) x `forward_flops_per_frame` x frames per step,
  i.e. a forward and a backward (2 forwards) per trained stream and a forward
  per frozen one, counted from the one-stream forward, not from the step's
  program; MFU on them is comparable across implementations. `mfu` uses the
  compiled step count instead.
* `measured_peak_memory_bytes`: the device allocator's high-water mark
  (`device.memory_stats()['peak_bytes_in_use']`, the largest over the
  devices) after the timed steps, when they raised it; JAX cannot reset the
  mark, so a stage that stayed below an earlier one's peak gets null and
  `measured_peak_memory_at_most_bytes` (the mark before it). Null on backends
  without allocator statistics (CPU): the compile plan below is never
  reported as measured.
* `peak_memory_bytes`: per device, from the compiled memory analysis:
  arguments + outputs + temporaries - aliased (donated) bytes, what the
  executable reserves. `xla_peak_memory_in_bytes` is XLA's own
  `peak_memory_in_bytes` for comparison (the CPU backend leaves temporaries
  out of it).
* `compile_s`: tracing, lowering and compiling the step (ahead of time; the
  jitted function reuses that executable on its first call). Like every
  command, the benchmark keeps its programs in JAX's persistent compilation
  cache (`--compilation_cache`); `compile_cached` says the step was read from it,
  so `compile_s` is then the time to trace, lower and read it, not to compile.
* `recompiles`: XLA compilations (`jax.monitoring` backend-compile events)
  during every step after the first; anything but 0 means the step's input
  avals or shardings change between steps (null with `--steps=0`).

`--end_to_end` (one step-1 stage, with `--data_dir`) adds `end_to_end`: the
trainer's own loop (`trainer.run_stage` in a temporary workdir for
`--end_to_end_steps` steps: Grain pipeline, prefetch onto the devices,
host-to-device transfer, step, logging, validation at the config's cadence),
timed from the stage's `metrics.jsonl` with the compiles left out
(`loop_throughput`), beside the step alone and the pipeline alone of the same
run and its share of the lower of the two (`share_of_bound`).

`--suite` is the accelerator suite in one command: step 1 of the test-time
modality, step2, step3 and step4 at `--suite_image_size` (224) in bfloat16
at `--suite_batch` clips (default 64 per device), the plain ResNet v1.5
reference step (`reference_resnet`: same depth and width as the stream, so
ResNet-50 for the NTU configs, same frames, dtype, batch, optimizer and
sharding) and, with `--data_dir`, the end-to-end figure of step 1. Its
headline is step 1's frames/s over the reference's. JSON with `--json`, a
Markdown table printed and written with `--markdown`.

With several stages (`--all_stages`, `--stages`, or a config whose stage is
`all`), each stage also gets `flop_ratio` (its FLOPs over those of the
single-stream step 1 of the test-time modality, `step1_rgb` by default) and
`multi_stream_efficiency` = frames/s / (step-1 frames/s / flop_ratio): 1.0
when a stage with k times the FLOPs runs exactly k times slower than one stream.

`--lower_for=tpu,cuda` times nothing: it lowers each stage's train and eval
step for those platforms from this host (`lowering.py`: fails on host
callbacks, unstable custom calls and types the platform lacks) and prints
each program's StableHLO size and lowered FLOPs.

The package, by what each part measures: `step` (one stage's step: compiled,
costed, timed; compile and cache-read counters), `costs` (FLOP counts, memory,
the chips' peak FLOP/s, model FLOPs), `plain_resnet` (the reference step),
`end_to_end` (the pipeline alone and the trainer's loop), `suite` (several
stages compared, `--suite`), `reporting` (the table and the Markdown) and
`__main__` (the command's flags).
"""
