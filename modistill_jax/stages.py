"""The training stages of the method, in one visible table.

A stage says which streams exist, what each reads, who gives to whom, which
stream is a frozen teacher, what the loss is, which streams make the fused
prediction, and where every stream's initial weights come from. With the
privileged modality P (depth by default) and the test-time modality O (RGB):

| stage | models (giver -> receiver) | loss | init |
| --- | --- | --- | --- |
| step1_rgb | rgb | CE(rgb) | ImageNet or scratch |
| step1_depth | depth | CE(depth) | ImageNet or scratch |
| step1 | depth, rgb (no connections) | CE(depth) + CE(rgb) | ImageNet or scratch |
| step2 | P -> O | CE(fused) | step 1 |
| step3 | P (frozen) -> hall(O input) | loss.kind, teacher = P | hall and P from step 2's P |
| step4 | hall(O input) -> O | CE(fused) | hall: step 3; O: step 2 |
| hoffman | P, O, hall(O input); no connections | CE(P) + CE(O) + loss.kind(hall, P) | step 1 |

`all` runs step1, step2, step3, step4 in order. Stream names are the
modality names ('rgb', 'depth') plus 'hall', so in the inverted setting
(`privileged='rgb'`, paper Table 4) the hallucination stream reads depth and
imitates the RGB stream. The hoffman baseline (Hoffman et al., Table 1 rows 3-5)
is one joint step with no staging, every stream from step 1 (hall from P's); its
teacher logits and features enter the hallucination loss through `stop_gradient`,
so the depth stream learns only from its own labels. Its test-time prediction is
O + hall, as in step 4.
"""

from __future__ import annotations

import dataclasses

from modistill_jax import losses

STAGE_NAMES = ('step1', 'step1_rgb', 'step1_depth', 'step2', 'step3', 'step4', 'hoffman')
ALL = 'all'
ALL_STAGES = ('step1', 'step2', 'step3', 'step4')
# `config.loss.kind`: the hallucination losses of step 3 and hoffman, by name.
LOSS_KINDS = tuple(losses.HALLUCINATION_LOSSES)
CONNECTABLE_STAGES = ('step2', 'step3', 'step4')
HALL = 'hall'


def check_stage_name(stage: str) -> None:
  if stage not in STAGE_NAMES + (ALL,):
    raise ValueError(f'Unknown stage {stage!r}; stages are {STAGE_NAMES + (ALL,)}.')


def expand(stage: str) -> tuple[str, ...]:
  """The stages a job runs: `all` is steps 1 to 4."""
  check_stage_name(stage)
  return ALL_STAGES if stage == ALL else (stage,)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One `MultiStream`: receiver, optional giver, their inputs, connections."""

  receiver: str
  receiver_input: str
  giver: str | None = None
  giver_input: str | None = None
  connections: bool = False
  giver_frozen: bool = False

  @property
  def streams(self) -> tuple[str, ...]:
    return (self.giver, self.receiver) if self.giver else (self.receiver,)


@dataclasses.dataclass(frozen=True)
class InitSource:
  """Stream `stream` starts from stream `from_stream` of an earlier stage's checkpoint."""

  stream: str
  from_stages: tuple[str, ...]  # candidates, first existing wins (e.g. step1, or step1_rgb)
  from_stream: str


@dataclasses.dataclass(frozen=True)
class Stage:
  """Everything the trainer needs to know about a stage (see the module table)."""

  name: str
  models: tuple[ModelSpec, ...]
  loss: str  # a key of `steps.STAGE_LOSSES`: 'xent_fused' | 'xent_each' | 'distill' | 'hoffman'
  fused: tuple[str, ...]  # streams averaged into the reported/test prediction
  frozen: tuple[str, ...] = ()
  teacher: str | None = None
  student: str | None = None
  init: tuple[InitSource, ...] = ()  # empty: ImageNet / from_workdir / scratch

  @property
  def streams(self) -> tuple[str, ...]:
    return tuple(s for m in self.models for s in m.streams)

  @property
  def trainable(self) -> tuple[str, ...]:
    return tuple(s for s in self.streams if s not in self.frozen)

  @property
  def selects_each_stream(self) -> bool:
    """Independent streams (the joint step 1), each selected on its own accuracy."""
    return self.loss == 'xent_each' and len(self.trainable) > 1

  def loss_name(self, loss_kind: str) -> str:
    """The loss a stage trains with as results name it: `loss_kind` where a student learns."""
    return loss_kind if self.student else self.loss

  @property
  def inputs(self) -> tuple[str, ...]:
    """Modalities the stage reads (so evaluation knows whether depth is used)."""
    used = {m.receiver_input for m in self.models}
    used |= {m.giver_input for m in self.models if m.giver_input}
    return tuple(sorted(used))


def step1_sources(stream: str) -> InitSource:
  return InitSource(stream, ('step1', f'step1_{stream}'), stream)


def for_config(name: str, config) -> Stage:
  """The stage `name` as a run's config defines it (privileged modality, connections).

  Every caller that has a config builds its stage here, so a config field that
  changes the stage graph is read in one place. A stage is connected when
  `model.connections` is on and it is not in `model.unconnected_stages` (the
  reference's runnable step 4, for one, is unconnected).
  """
  connections = config.model.connections and name not in tuple(config.model.unconnected_stages)
  return get_stage(name, privileged=config.privileged, connections=connections)


def get_stage(name: str, *, privileged: str = 'depth', connections: bool = True) -> Stage:
  """The stage `name` for privileged modality `privileged` ('depth' or 'rgb')."""
  check_stage_name(name)
  if name == ALL:
    raise ValueError("'all' is a sequence of stages; use expand('all').")
  p = privileged
  o = 'rgb' if p == 'depth' else 'depth'
  if name in ('step1_rgb', 'step1_depth'):
    m = name.split('_')[1]
    return Stage(name, (ModelSpec(m, m),), loss='xent_each', fused=(m,))
  if name == 'step1':
    return Stage(
        name,
        (ModelSpec('rgb', 'rgb', 'depth', 'depth', connections=False),),
        loss='xent_each',
        fused=('depth', 'rgb'),
    )
  if name == 'step2':
    return Stage(
        name,
        (ModelSpec(o, o, p, p, connections=connections),),
        loss='xent_fused',
        fused=(p, o),
        init=(step1_sources(p), step1_sources(o)),
    )
  if name == 'step3':
    return Stage(
        name,
        (ModelSpec(HALL, o, p, p, connections=connections, giver_frozen=True),),
        loss='distill',
        fused=(HALL,),
        frozen=(p,),
        teacher=p,
        student=HALL,
        init=(InitSource(HALL, ('step2',), p), InitSource(p, ('step2',), p)),
    )
  if name == 'step4':
    return Stage(
        name,
        (ModelSpec(o, o, HALL, o, connections=connections),),
        loss='xent_fused',
        fused=(HALL, o),
        init=(InitSource(HALL, ('step3',), HALL), InitSource(o, ('step2',), o)),
    )
  # hoffman: one joint step from the step-1 streams, no connections.
  return Stage(
      name,
      (ModelSpec(p, p), ModelSpec(o, o), ModelSpec(HALL, o)),
      loss='hoffman',
      fused=(o, HALL),
      teacher=p,
      student=HALL,
      init=(step1_sources(p), step1_sources(o), InitSource(HALL, ('step1', f'step1_{p}'), p)),
  )
