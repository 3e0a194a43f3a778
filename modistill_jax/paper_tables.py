"""The paper's Tables 1, 2 and 4: what each row is, how it is trained, and its published numbers.

One table that `report` (run folders, the demo, the notebook) and `claims`
(rows over seeds) both read. A row says which stage and stream produce it and
how that stage was set up (loss, connections, privileged modality), so a
command finds its run folder from the row; the paper's NTU RGB+D numbers stand
beside it. Rows 13a and 15a are Table 4's (RGB privileged, depth at test time).
"""

from __future__ import annotations

import dataclasses

CROSS_ENTROPY = 'x-entr'
# NTU RGB+D protocols, in the order of a row's `paper` numbers.
PROTOCOLS = ('cross_subject', 'cross_view')


@dataclasses.dataclass(frozen=True)
class Row:
  """One row of Table 1 or 4: the stage and stream whose test accuracy it is."""

  number: str  # the paper's row number ('13a', '15a': Table 4)
  method: str
  test_modality: str
  stage: str
  stream: str  # key of results['test']['accuracy']
  # The distillation loss of the stage ('eq1', 'eq3', 'eq5'), or cross-entropy alone.
  loss: str = CROSS_ENTROPY
  connections: bool = True  # False: trained without cross-stream connections
  privileged: str = 'depth'  # the training-only modality ('rgb': Table 4)
  # The paper's NTU RGB+D accuracy (%), (cross-subject, cross-view); None: not published.
  paper: tuple[float | None, float | None] = (None, None)
  # Rows that differ only in the loss share a label where one run folder shows one of them.
  group: str = ''

  @property
  def label(self) -> str:
    return self.group or self.number

  @property
  def loss_name(self) -> str:
    """The loss as the paper writes it: 'eq. 5', 'x-entr'."""
    return f'eq. {self.loss[2:]}' if self.loss.startswith('eq') else self.loss


_STEP3 = 'step 3 w/ connections'
_STEP3_MODALITY = 'RGB (hall) + depth via connections'
_HOFFMAN = 'Hoffman et al. w/o connections'

ROWS = (
    Row('1', 'step 1, depth stream', 'Depth', 'step1', 'depth', paper=(70.44, 75.16)),
    Row('2', 'step 1, RGB stream', 'RGB', 'step1', 'rgb', paper=(66.52, 71.39)),
    Row('3', _HOFFMAN, 'RGB', 'hoffman', 'fused', 'eq1', paper=(64.64, None), group='3-5'),
    Row('4', _HOFFMAN, 'RGB', 'hoffman', 'fused', 'eq3', paper=(68.60, None), group='3-5'),
    Row('5', _HOFFMAN, 'RGB', 'hoffman', 'fused', 'eq5', paper=(70.70, None), group='3-5'),
    Row('6', 'step 2, depth stream', 'Depth', 'step2', 'depth', paper=(71.09, 77.30)),
    Row('7', 'step 2, RGB stream', 'RGB', 'step2', 'rgb', paper=(66.68, 56.26)),
    Row('8', 'step 2', 'RGB & Depth', 'step2', 'fused', paper=(79.73, 81.43)),
    Row(
        '9',
        'step 2 w/o connections',
        'RGB & Depth',
        'step2',
        'fused',
        connections=False,
        paper=(78.27, 82.11),
    ),
    Row(
        '10',
        'step 3 w/o connections',
        'RGB (hall)',
        'step3',
        'hall',
        'eq1',
        connections=False,
        paper=(69.93, 70.64),
        group='14',
    ),
    Row('11', _STEP3, _STEP3_MODALITY, 'step3', 'hall', 'eq1', paper=(70.47, None), group='13'),
    Row('12', _STEP3, _STEP3_MODALITY, 'step3', 'hall', 'eq3', paper=(71.52, None), group='13'),
    Row('13', _STEP3, _STEP3_MODALITY, 'step3', 'hall', 'eq5', paper=(71.93, 74.10), group='13'),
    Row(
        '14',
        'step 3 w/o connections',
        'RGB (hall)',
        'step3',
        'hall',
        'eq5',
        connections=False,
        paper=(71.10, None),
        group='14',
    ),
    Row('15', 'step 4', 'RGB', 'step4', 'fused', paper=(73.42, 77.21)),
    Row(
        '13a',
        'step 3, RGB privileged',
        'Depth (hall) + RGB via connections',
        'step3',
        'hall',
        'eq5',
        privileged='rgb',
        paper=(None, 76.12),
    ),
    Row(
        '15a',
        'step 4, RGB privileged',
        'Depth',
        'step4',
        'fused',
        privileged='rgb',
        paper=(None, 76.41),
    ),
)

# Table 2 (NTU cross-view, step 2 with noisy depth), by sigma^2 label.
PAPER_TABLE2 = {
    'no noise': 81.43,
    '0.001': 81.34,
    '0.01': 81.12,
    '0.1': 76.85,
    '1': 62.47,
    '10': 51.43,
    'void': 14.24,
}


def row(number: str) -> Row:
  """The row the paper numbers `number` (KeyError naming the numbers there are)."""
  for candidate in ROWS:
    if candidate.number == number:
      return candidate
  raise KeyError(f'No row {number!r} in Tables 1 and 4; rows: {[r.number for r in ROWS]}.')


def row_of_loss(label: str, loss: str) -> Row | None:
  """The row labelled `label` trained with `loss` ('3-5' with eq1 is row 3); None if no such row.

  A label of one row is that row whatever the loss (step 4 follows any step 3).
  """
  members = [r for r in ROWS if r.label == label]
  if len(members) == 1:
    return members[0]
  return next((r for r in members if r.loss == loss), None)
