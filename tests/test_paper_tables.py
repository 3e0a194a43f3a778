"""The one table of the paper's rows that report and claims read."""

import pytest

from modistill_jax import paper_tables


def test_rows_are_numbered_once_and_found_by_number():
  numbers = [r.number for r in paper_tables.ROWS]
  assert numbers == [str(n) for n in range(1, 16)] + ['13a', '15a']
  assert paper_tables.row('13a').paper == (None, 76.12)
  with pytest.raises(KeyError, match="No row '16'"):
    paper_tables.row('16')


def test_a_label_of_rows_that_differ_in_loss_finds_the_row_of_each_loss():
  assert paper_tables.row_of_loss('3-5', 'eq3').number == '4'
  assert paper_tables.row_of_loss('13', 'eq1').number == '11'
  assert paper_tables.row_of_loss('14', 'eq1').number == '10'
  assert paper_tables.row_of_loss('14', 'eq3') is None  # the paper has no such row
  assert paper_tables.row_of_loss('15', 'eq1').number == '15'  # one row: any loss before it


def test_loss_names_as_the_paper_writes_them():
  assert paper_tables.row('12').loss_name == 'eq. 3'
  assert paper_tables.row('15').loss_name == 'x-entr'
