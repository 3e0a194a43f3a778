"""Best-on-validation selection: which accuracy picks which streams, and how ties go.

`evaluators.Validation` keeps, for each group of `selection_groups`, the state of
the validation whose accuracy `improved` on the best so far; the run-level
tests (the joint step 1's crafted accuracies in test_trainer, the tie in
test_run_folder) rest on these two functions.
"""

import pytest

from modistill_jax import evaluators
from modistill_jax import stages


def test_each_stage_is_selected_on_its_reported_prediction():
  """Fused where streams are averaged, the one stream otherwise; step 1's streams each alone."""
  expected = {
      'step1': {'depth': ('depth',), 'rgb': ('rgb',)},
      'step1_rgb': {'rgb': ('rgb',)},
      'step1_depth': {'depth': ('depth',)},
      'step2': {'fused': ('depth', 'rgb')},
      'step3': {'hall': ('hall',)},
      'step4': {'fused': ('hall', 'rgb')},
      'hoffman': {'fused': ('depth', 'rgb', 'hall')},
  }
  assert {
      name: evaluators.selection_groups(stages.get_stage(name)) for name in stages.STAGE_NAMES
  } == expected


def test_inverted_setting_selects_on_the_depth_student():
  """With RGB privileged (Table 4), step 3's student reads depth and is still 'hall'."""
  assert evaluators.selection_groups(stages.get_stage('step3', privileged='rgb')) == {
      'hall': ('hall',)
  }
  assert evaluators.selection_groups(stages.get_stage('step2', privileged='rgb')) == {
      'fused': ('rgb', 'depth')
  }


@pytest.mark.parametrize('ties, expected', [('later', 3), ('earlier', 1)])
def test_best_epoch_of_a_validation_sequence(ties, expected):
  """0.5, 0.7, 0.6, 0.7, 0.4: the first 0.7 or the later one, never the drop after it."""
  best, best_epoch = None, None
  for epoch, accuracy in enumerate([0.5, 0.7, 0.6, 0.7, 0.4]):
    if evaluators.improved(accuracy, best, ties):
      best, best_epoch = accuracy, epoch
  assert (best, best_epoch) == (0.7, expected)


def test_improved_cases():
  assert evaluators.improved(0.1, None, 'earlier')  # the first validation always counts
  assert evaluators.improved(0.6, 0.5, 'earlier') and evaluators.improved(0.6, 0.5, 'later')
  assert not evaluators.improved(0.4, 0.5, 'later')
  assert evaluators.improved(0.5, 0.5, 'later') and not evaluators.improved(0.5, 0.5, 'earlier')
