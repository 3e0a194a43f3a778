# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Results of a modistill_jax run
#
# Opens a run folder (the demo's, or a real NTU / NW-UCLA / UWA3DII run) and shows what
# the paper's Tables 1 and 2 show, with our numbers (and the paper's, for NTU), the
# training curves, per-class accuracy and a few test clips. Nothing here trains: it reads
# the files the trainer wrote, through `modistill_jax.report`.
#
# Set `MODISTILL_WORKDIR` (or edit `WORKDIR` below) to the folder given to `--workdir`.

# %%
import os

from IPython.display import Markdown, display
import matplotlib.pyplot as plt
import numpy as np

from modistill_jax import report
from modistill_jax import runs
from modistill_jax.data import jet, pipeline, records

WORKDIR = os.environ.get('MODISTILL_WORKDIR', '../workdirs/demo')
print('run folder:', runs.as_path(WORKDIR))
print('stages:', runs.stages_with_metrics(WORKDIR))

# %% [markdown]
# ## Table 1 layout
# Test-split accuracy of each stage and stream. For the NTU protocols the paper's
# published number stands beside ours.

# %%
display(Markdown(report.table1_markdown(report.table1(WORKDIR))))

# %% [markdown]
# ## Training curves

# %%
report.plot_training_curves(WORKDIR)

# %% [markdown]
# ## Table 2: the step-2 teacher with noisy depth
# Written by `python -m modistill_jax.evaluate --workdir=... --stage=step2 --sweep`
# (the demo runs it). The paper's numbers are for NTU cross-view.

# %%
sweep = report.noise_sweep(WORKDIR)
step4 = report.stage_results(WORKDIR, 'step4')
hallucination = 100 * step4['test']['accuracy']['fused'] if step4 else None
if sweep:
  display(Markdown(report.table2_markdown(sweep, hallucination)))
  report.plot_noise_curve(sweep, hallucination)
else:
  print('No noise sweep in this run folder.')

# %% [markdown]
# ## Several run folders side by side
# Seeds, configurations, ablations (the claims command's `DIR/seed<s>/<variant>` folders) or
# real runs, one column each. Set `MODISTILL_COMPARE` to folders separated by spaces; by
# default the run above and its no-connection ablation, if it has one.

# %%
compared = os.environ.get('MODISTILL_COMPARE', '').split() or [
    str(p) for p in (runs.as_path(WORKDIR), runs.ablation_workdir(WORKDIR)) if p.exists()
]
display(Markdown(report.compare_markdown(report.compare(compared))))

# %% [markdown]
# ## Per-class accuracy and confusion matrix of the deployed model (step 4, RGB only)

# %%
stage = 'step4' if step4 else runs.stages_with_metrics(WORKDIR)[-1]
names = report.class_names(WORKDIR, stage)
matrix = report.confusion_matrix(WORKDIR, stage)
per_class = report.per_class_accuracy(matrix)
display(
    Markdown(
        '\n'.join(
            ['| class | accuracy | clips |', '|---|---|---|']
            + [
                f'| {n} | {100 * a:.1f}% | {int(t)} |'
                for n, a, t in zip(names, per_class, matrix.sum(axis=1))
            ]
        )
    )
)
report.plot_confusion(matrix, names, f'{stage}, test split')

# %% [markdown]
# ## A few test clips: RGB, depth, and what the model said

# %%
dataset = report.dataset_info(WORKDIR, stage)
source = pipeline.load_source(
    dataset['dataset'],
    dataset['protocol'],
    'test',
    data_dir=report.stage_config(WORKDIR, stage)['data_dir'] or None,
    builder_config=dataset['builder_config'] or None,
)
saved = report.predictions(WORKDIR, stage)
shown = np.random.default_rng(0).choice(
    len(saved['index']), size=min(4, len(saved['index'])), replace=False
)
fig, axes = plt.subplots(2, len(shown), figsize=(3 * len(shown), 6), squeeze=False)
for col, i in enumerate(shown):
  record = source.records[int(saved['index'][i])]
  middle = len(record['rgb']) // 2
  axes[0, col].imshow(records.decode_image(record['rgb'][middle]))
  axes[1, col].imshow(jet.JET_OF_CODE[records.decode_depth(record['depth'][middle])])
  truth, guess = names[saved['label'][i]], names[saved['pred/fused'][i]]
  axes[0, col].set_title(
      f'true: {truth}\npredicted: {guess}', fontsize=9, color='green' if truth == guess else 'red'
  )
  for ax in axes[:, col]:
    ax.axis('off')
axes[0, 0].set_ylabel('RGB')
axes[1, 0].set_ylabel('depth (jet)')
fig.tight_layout()
