"""The training stages of the method, in one visible table.

A stage says which streams exist, what each reads, who gives to whom, which
streams are frozen teachers, what the loss is, which streams make the fused
prediction, and where every stream's initial weights come from. With the
deployed modality O (what the final model sees: RGB by default) and the
privileged ones P = (P1, ...) (training only: depth by default):

| stage | models (givers -> receiver) | loss | init |
| --- | --- | --- | --- |
| step1_<m> | m, for any modality m | CE(m) | ImageNet or scratch |
| step1 | P and O, independent (no connections) | sum of each one's CE | ImageNet or scratch |
| step2 | P -> O | CE(fused) | step 1 |
| step3 | P (frozen) -> hall(O input) | loss.kind, teachers = P | hall: step 2's P1; P: step 2 |
| step4 | hall(O input) -> O | CE(fused) | hall: step 3; O: step 2 |
| hoffman | P, O, hall(O input), unconnected | CE(P) + CE(O) + loss.kind(hall, P) | step 1 |

`all` runs step1, step2, step3, step4 in order. Stream names are the
modality names plus 'hall', so in the inverted setting (`privileged=('rgb',)`,
deployed depth, paper Table 4) the hallucination stream reads depth and
imitates the RGB stream. With one privileged modality (the paper) every row is
the paper's two-stream method; with several, each privileged stream gives to
the receiver (docs/method.md: how the connections and eq. (5) generalise). The
hoffman baseline (Hoffman et al., Table 1 rows 3-5) is one joint step with no
staging, every stream from step 1 (hall from P1's); its teacher logits and
features enter the hallucination loss through `stop_gradient`, so the
privileged streams learn only from their own labels. Its test-time prediction is
O + hall, as in step 4.
"""

from __future__ import annotations

from collections.abc import Sequence
import dataclasses

from modistill_jax import losses
from modistill_jax import modalities

# The paper's stages, on RGB-D data. `step1_<m>` exists for every modality (`STEP1_SINGLE`).
STAGE_NAMES = ('step1', 'step1_rgb', 'step1_depth', 'step2', 'step3', 'step4', 'hoffman')
# One stream of one modality, alone: `step1_ir`, `step1_skeleton`, ...
STEP1_SINGLE = tuple(f'step1_{m}' for m in modalities.NAMES)
ALL = 'all'
ALL_STAGES = ('step1', 'step2', 'step3', 'step4')
# `config.loss.kind`: the hallucination losses of step 3 and hoffman, by name.
LOSS_KINDS = tuple(losses.HALLUCINATION_LOSSES)
CONNECTABLE_STAGES = ('step2', 'step3', 'step4')
HALL = 'hall'
# The deployed modality where `config.deployed` is '': RGB, or depth where RGB is privileged
# (Table 4's inversion, which `--config.privileged=rgb` alone asks for).
DEFAULT_DEPLOYED = 'rgb'
INVERTED_DEPLOYED = 'depth'
# Every stage name a config may give: the paper's, each modality's step 1, and `all`.
KNOWN_STAGE_NAMES = STAGE_NAMES + tuple(s for s in STEP1_SINGLE if s not in STAGE_NAMES) + (ALL,)


def check_stage_name(stage: str) -> None:
  if stage not in KNOWN_STAGE_NAMES:
    raise ValueError(f'Unknown stage {stage!r}; stages are {KNOWN_STAGE_NAMES}.')


def expand(stage: str) -> tuple[str, ...]:
  """The stages a job runs: `all` is steps 1 to 4."""
  check_stage_name(stage)
  return ALL_STAGES if stage == ALL else (stage,)


def names_tuple(names: str | Sequence[str]) -> tuple[str, ...]:
  """One name, several comma-separated (`config.privileged='depth,ir'`), or a sequence of names
  (a `ModelSpec`'s givers) as a tuple."""
  if isinstance(names, str):
    return tuple(n for n in names.split(',') if n)
  return tuple(names)


def roles(privileged: str | Sequence[str], deployed: str = '') -> tuple[str, tuple[str, ...]]:
  """`(deployed, privileged)` checked, the privileged ones in the canonical modality order.

  `deployed` '' is RGB, or depth where RGB is privileged (`DEFAULT_DEPLOYED`).
  Raises ValueError naming the config key and value on an unknown, repeated or
  missing modality, or a deployed modality that is also privileged.
  """
  privileged = names_tuple(privileged)
  if not privileged:
    raise ValueError("config.privileged must name at least one modality, e.g. 'depth'.")
  for name in privileged:
    if name not in modalities.ALL:
      raise ValueError(
          f'config.privileged: unknown modality {name!r}; the modalities are {modalities.NAMES}.'
      )
  if len(set(privileged)) != len(privileged):
    raise ValueError(f'config.privileged names a modality twice: {privileged}.')
  if not deployed:
    deployed = INVERTED_DEPLOYED if DEFAULT_DEPLOYED in privileged else DEFAULT_DEPLOYED
  if deployed not in modalities.ALL:
    raise ValueError(
        f'config.deployed: unknown modality {deployed!r}; the modalities are {modalities.NAMES}.'
    )
  if deployed in privileged:
    raise ValueError(
        f'config.privileged {privileged} contains the deployed modality {deployed!r} '
        '(config.deployed): the final model cannot be taught by what it sees itself.'
    )
  return deployed, modalities.ordered(privileged)


@dataclasses.dataclass(frozen=True)
class ModelSpec:
  """One `MultiStream`: a receiver, its givers, their inputs, connections.

  `giver` and `giver_input` are one stream and its modality, or a tuple of
  several (each giver reads the input at the same place): the step-2 and step-3
  networks of several privileged modalities have one giver each.
  """

  receiver: str
  receiver_input: str
  giver: str | tuple[str, ...] | None = None
  giver_input: str | tuple[str, ...] | None = None
  connections: bool = False
  giver_frozen: bool = False

  @property
  def givers(self) -> tuple[tuple[str, str], ...]:
    """`((giver stream, its input), ...)`, in the order they run; () when none."""
    if self.giver is None:
      return ()
    names, inputs = names_tuple(self.giver), names_tuple(self.giver_input)
    if len(names) != len(inputs):
      raise ValueError(f'givers {names} and their inputs {inputs} must pair up.')
    return tuple(zip(names, inputs))

  @property
  def streams(self) -> tuple[str, ...]:
    return tuple(g for g, _ in self.givers) + (self.receiver,)


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
  teachers: tuple[str, ...] = ()  # the privileged streams the student learns from
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
    used |= {i for m in self.models for _, i in m.givers}
    return tuple(sorted(used))


def step1_sources(stream: str) -> InitSource:
  return InitSource(stream, ('step1', f'step1_{stream}'), stream)


def for_config(name: str, config) -> Stage:
  """The stage `name` as a run's config defines it (deployed and privileged modalities,
  connections).

  Every caller that has a config builds its stage here, so a config field that
  changes the stage graph is read in one place. A stage is connected when
  `model.connections` is on and it is not in `model.unconnected_stages` (the
  reference's runnable step 4, for one, is unconnected).
  """
  connections = config.model.connections and name not in tuple(config.model.unconnected_stages)
  return get_stage(
      name,
      privileged=config.privileged,
      deployed=config.deployed,
      connections=connections,
  )


def get_stage(
    name: str,
    *,
    privileged: str | Sequence[str] = 'depth',
    deployed: str = '',
    connections: bool = True,
) -> Stage:
  """The stage `name` for the privileged modalities and the deployed one (`roles`)."""
  check_stage_name(name)
  if name == ALL:
    raise ValueError("'all' is a sequence of stages; use expand('all').")
  o, ps = roles(privileged, deployed)
  if name in STEP1_SINGLE:
    m = name.removeprefix('step1_')
    return Stage(name, (ModelSpec(m, m),), loss='xent_each', fused=(m,))
  if name == 'step1':
    # The receiver is the first modality in the canonical order, the others give (but,
    # unconnected, give nothing): RGB-D is depth, rgb whichever is privileged, as it always was.
    first, *rest = modalities.ordered((o, *ps))
    spec = ModelSpec(first, first, tuple(rest), tuple(rest))
    return Stage(name, (spec,), loss='xent_each', fused=spec.streams)
  p1 = ps[0]
  if name == 'step2':
    return Stage(
        name,
        (ModelSpec(o, o, ps, ps, connections=connections),),
        loss='xent_fused',
        fused=(*ps, o),
        init=(*(step1_sources(p) for p in ps), step1_sources(o)),
    )
  if name == 'step3':
    return Stage(
        name,
        (ModelSpec(HALL, o, ps, ps, connections=connections, giver_frozen=True),),
        loss='distill',
        fused=(HALL,),
        frozen=ps,
        teachers=ps,
        student=HALL,
        init=(InitSource(HALL, ('step2',), p1), *(InitSource(p, ('step2',), p) for p in ps)),
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
      (*(ModelSpec(p, p) for p in ps), ModelSpec(o, o), ModelSpec(HALL, o)),
      loss='hoffman',
      fused=(o, HALL),
      teachers=ps,
      student=HALL,
      init=(
          *(step1_sources(p) for p in ps),
          step1_sources(o),
          InitSource(HALL, ('step1', f'step1_{p1}'), p1),
      ),
  )
