"""Which of the paper's published numbers stand beside ours in the tables."""

from __future__ import annotations

from modistill_jax import report

ROWS = {r.number: r for r in report.TABLE1_ROWS}


def test_paper_numbers_only_for_ntu_protocols():
  """The synthetic demo shares the protocol name 'cross_view' but not the paper's numbers."""
  assert report.paper_number(ROWS['15'], 'x-entr', 'ntu_rgbd', 'cross_subject') == 73.42
  assert report.paper_number(ROWS['15'], 'x-entr', 'ntu_rgbd', 'cross_view') == 77.21
  assert report.paper_number(ROWS['15'], 'x-entr', 'synthetic_rgbd', 'cross_view') is None
  assert report.paper_number(ROWS['15'], 'x-entr', 'nw_ucla', 'views12_3') is None


def test_loss_dependent_rows_pick_the_paper_row_of_that_loss():
  """Hoffman (rows 3-5) and step 3 (rows 10-14) are published per loss."""
  assert report.paper_number(ROWS['3-5'], 'eq1', 'ntu_rgbd', 'cross_subject') == 64.64
  assert report.paper_number(ROWS['3-5'], 'eq5', 'ntu_rgbd', 'cross_subject') == 70.70
  assert report.paper_number(ROWS['13'], 'eq3', 'ntu_rgbd', 'cross_subject') == 71.52
  assert report.paper_number(ROWS['14'], 'eq1', 'ntu_rgbd', 'cross_view') == 70.64
  assert report.paper_number(ROWS['14'], 'eq3', 'ntu_rgbd', 'cross_subject') is None
