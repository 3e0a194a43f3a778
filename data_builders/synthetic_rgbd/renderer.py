"""Procedural RGB+D action clips, with depth privileged or (`ntu_like`) complementary.

A small stand-in for NTU RGB+D that needs no download: a ray-cast room (floor,
a round wall) and one actor made of spheres, filmed by a pinhole camera that
records aligned RGB and depth, as a Kinect does. Every clip is a pure function
of `(spec.seed, label, index)`, so datasets, tests and notebooks render the
same pixels on any machine, in any order.

In the `default` scenario the classes are defined by how the actor (or a part
of it) moves in 3-D, in the room's frame (view 1's camera looks along +z; "forward" is towards it):

| class          | motion                                                         |
|----------------|----------------------------------------------------------------|
| approach       | steps 1.3-1.7 m towards view 1's camera (from ~3.6 m), facing it |
| recede         | steps 1.3-1.7 m backwards, away from it                        |
| cross near     | sidesteps 1.3-1.7 m across the room, ~2 m from that camera     |
| cross far      | the same, ~3.6 m from it                                       |
| reach forward  | one hand goes ~0.55 m forward, towards the camera, and back    |
| reach sideways | one hand goes ~0.55 m out to the side and back                 |
| lean forward   | the upper body bows ~40 degrees forward, about the hips, and back |
| turn around    | the whole body turns 180 degrees about the vertical axis       |

Directions that a horizontal flip would swap (left/right, which hand, which
way round) are drawn at random, so the flip augmentation keeps labels valid.

What each modality shows, and why depth is privileged:

* Depth (planar depth in mm, Kinect-like noise growing with distance squared,
  0 = invalid beyond a Kinect v2's 4.5 m range, coloured by
  `jet.depth_to_jet`) shows the floor as a fixed ramp, the wall mostly as
  invalid (black), and the actor's distance directly: an actor
  walking towards the camera changes colour, a near crossing is coloured
  differently from a far one, a hand or head coming forward changes colour
  while the rest of the body does not. Appearance does not exist in depth.
* RGB shows the same scene through textures and light: each subject has its
  own size (0.8-1.2x), build, clothes colours and stripes; the floor tiles,
  wall posters, light direction, colour cast and a light level that drifts
  during the clip are drawn per clip; and a screen on the wall plays a disc
  that grows or shrinks, looking like something approaching or receding,
  unrelated to the label. Motion in depth reaches RGB only as perspective cues:
  apparent size (confounded by subject size), the height of the feet in the
  image, foreshortening and shading. So RGB carries the class, but in a form
  that takes more examples to learn, which is what a hallucination stream
  trained to imitate the depth stream is meant to make up for.

The `ntu_like` scenario (`GeneratorSpec(scenario='ntu_like')`) makes the two
modalities close and complementary, as on NTU RGB+D, by construction: 'put on
jacket' and 'take off jacket' perform the same gesture and differ only in a
hi-vis jacket appearing or disappearing over the shirt (RGB only); 'bow' and
'lean back' bend the upper body towards or away from the camera by the same
angle, which a camera in front sees almost alike (depth, mostly); 'walk
towards', 'walk away', 'walk across' and 'turn around' show in both. Its
builder config also turns `rgb_distractors` off. The dataset's README has the
design and the probe that calibrated it. `ntu_like_coats` adds 'put on raincoat'
and 'take off raincoat': the jacket's gesture with a dark blue coat, so that
four classes are one gesture to depth and RGB alone tells them apart;
`ntu_like_coats_no_turn` is that without 'turn around'.

The `pretext` scenario is no action dataset: it is the data of the pretraining
that plays ImageNet's role for the miniature (`modistill_jax/pretext.py`). Each
clip has an actor of its own, drawn for that clip alone (never one of the action
datasets' subjects), performing a motion drawn at random from every motion the
renderer knows, in a room of its own; the label is the hue of the actor's shirt
(8 bins of 45 degrees), never the motion. Telling it needs what the action
classes need in RGB and a network from scratch lacks: finding the actor in a
cluttered room and reading the colour of its torso.

`GeneratorSpec` also sets the camera's height, the walks' length and whether
heads have a face (hair on their back and top): `ntu_like_faces` uses them to
show motion in depth more in RGB. With `ir_and_joints`, `render_clip` also
returns what a Kinect's other streams record: an infrared image (the grey
reflectance of everything under the depth camera's own emitter, falling off
with the distance squared) and the actor's joints (its spheres' centres in
Kinect v2's 25-joint layout, projected into the frame).

Views are camera azimuths around the middle of the room (view 1 faces the
actor; the other views stand to its sides), with a few centimetres of
placement jitter per clip. Subjects are fixed appearance/body draws shared by
all their clips. The split of a clip follows from its view and subject
(`role_of`), by the spec's protocol. Cross-view (`cross_view`, the default):
view 1 is the test set; the last subjects of the other views are the
validation set; the rest is the training set. Cross-subject (`cross_subject`,
as NTU RGB+D's benchmark that the paper's Table 1 reports): the last subjects
of every view are the test set, the subjects before them the validation set,
the rest the training set.
"""

from __future__ import annotations

import colorsys
import dataclasses

import numpy as np

from modistill_jax.data import jet
from modistill_jax.data import protocols

CLASS_NAMES = (
    'approach',
    'recede',
    'cross near',
    'cross far',
    'reach forward',
    'reach sideways',
    'lean forward',
    'turn around',
)
# The `ntu_like` scenario's classes (see the module docstring), named like NTU's actions.
NTU_LIKE_CLASS_NAMES = (
    'walk towards',
    'walk away',
    'walk across',
    'bow',
    'lean back',
    'put on jacket',
    'take off jacket',
    'turn around',
)
# `ntu_like`'s classes and two more of the jacket's gesture, in which a dark blue raincoat
# appears or disappears: four classes that depth sees as one gesture (README, calibration).
NTU_LIKE_COATS_CLASS_NAMES = NTU_LIKE_CLASS_NAMES + ('put on raincoat', 'take off raincoat')
# Those without 'turn around', which the trained RGB stream hardly tells at 64x64 (README).
NTU_LIKE_COATS_NO_TURN_CLASS_NAMES = tuple(
    name for name in NTU_LIKE_COATS_CLASS_NAMES if name != 'turn around'
)
# Scenario -> its class names. `default`: every class is a motion in depth, which RGB sees
# only through perspective (depth strongly privileged); `ntu_like`: some classes differ
# only in RGB, some (mostly) only in depth, most in both; `ntu_like_coats`: more of them
# only in RGB.
# The `pretext` scenario's classes: the hue of the actor's shirt, in 8 bins of 45 degrees
# from red (0), each named by the colour at its middle.
PRETEXT_CLASS_NAMES = (
    'orange shirt',
    'yellow shirt',
    'lime shirt',
    'spring green shirt',
    'azure shirt',
    'blue shirt',
    'violet shirt',
    'rose shirt',
)
SCENARIOS = {
    'default': CLASS_NAMES,
    'ntu_like': NTU_LIKE_CLASS_NAMES,
    'ntu_like_coats': NTU_LIKE_COATS_CLASS_NAMES,
    'ntu_like_coats_no_turn': NTU_LIKE_COATS_NO_TURN_CLASS_NAMES,
    'pretext': PRETEXT_CLASS_NAMES,
}
# The motion (in `_actor`'s vocabulary) an `ntu_like` class performs. The jacket and
# raincoat classes perform the same one: what tells them apart is only what RGB sees.
_NTU_LIKE_MOTIONS = {
    'walk towards': 'approach',
    'walk away': 'recede',
    'walk across': 'cross',
    'bow': 'lean forward',
    'lean back': 'lean back',
    'put on jacket': 'dress',
    'take off jacket': 'dress',
    'turn around': 'turn around',
    'put on raincoat': 'dress',
    'take off raincoat': 'dress',
}
# Every motion `_actor` performs; a `pretext` clip performs one drawn from them at random.
_MOTIONS = tuple(dict.fromkeys(CLASS_NAMES + tuple(_NTU_LIKE_MOTIONS.values())))
# The coats the dressing classes put on (True) or take off, each a plain colour drawn per
# clip between two RGB albedos: hi-vis yellow to orange, dark to mid blue.
_HI_VIS = ((0.8, 0.5, 0.0), (1.0, 0.8, 0.15))
_RAINCOAT = ((0.0, 0.12, 0.4), (0.15, 0.3, 0.75))
_COATS = {
    'put on jacket': (True, _HI_VIS),
    'take off jacket': (False, _HI_VIS),
    'put on raincoat': (True, _RAINCOAT),
    'take off raincoat': (False, _RAINCOAT),
}
TEST_VIEW = 1

# Room and camera geometry, in metres. The wall is a vertical cylinder around
# the room's middle, so every view sees a background at a similar distance.
_WALL_RADIUS = 3.4
_CAMERA_DISTANCE = 2.6
_CAMERA_TARGET = np.array([0.0, 0.85, 0.3])
_HORIZONTAL_FOV_DEG = 60.0
_SENSOR_NOISE_MM = 1.5  # depth noise standard deviation at 1 m; grows with distance squared
_MAX_RANGE_M = 4.5  # a Kinect v2's rated range: farther pixels read 0 (invalid)
# Infrared: the depth camera's emitter lights what it sees, falling off with distance squared;
# a white surface facing it at this distance reads 255. Noise in grey levels.
_IR_FULL_SCALE_M = 1.5
_IR_NOISE = 2.0

# The actor's spheres in body coordinates (x right, y up, z forward), before the
# subject's scale: (x, y, z, radius, part). Parts: 0 skin, 1 shirt, 2 trousers.
# Arms are added separately, as 3 spheres from the shoulder to the hand.
_BODY = (
    (-0.10, 0.10, 0.0, 0.085, 2),
    (0.10, 0.10, 0.0, 0.085, 2),  # feet
    (-0.10, 0.35, 0.0, 0.090, 2),
    (0.10, 0.35, 0.0, 0.090, 2),  # knees
    (-0.10, 0.60, 0.0, 0.100, 2),
    (0.10, 0.60, 0.0, 0.100, 2),  # thighs
    (0.0, 0.82, 0.0, 0.160, 2),  # hips
    (0.0, 1.04, 0.0, 0.170, 1),  # belly
    (0.0, 1.26, 0.0, 0.180, 1),  # chest
    (0.0, 1.56, 0.0, 0.110, 0),  # head
)
_ARM_RADII = (0.065, 0.060, 0.060)
_ARM_PARTS = (1, 1, 0)
_SHOULDER = np.array([0.25, 1.36, 0.0])
_HAND_REST = np.array([0.30, 0.86, 0.03])
_HIP_PIVOT_Y = 0.80  # the upper body (belly and up) bows about this height
_HEAD = 9  # the head's index among the actor's spheres (the last of `_BODY`)
# The actor's skeleton in Kinect v2's 25-joint layout (NTU RGB+D's order,
# `modistill_jax.data.skeletons.KINECT_V2_LIMBS`): the sphere whose centre stands for each
# joint. Spheres 0-9 are `_BODY`'s, 10-12 the left arm's (body -x) from the shoulder to the
# hand, 13-15 the right arm's. The actor has no neck, wrists, fingers or ankles: the chest,
# the hands and the feet stand for them.
KINECT_V2_SPHERES = (
    6, 7, 8, 9,  # spine base (hips), spine middle (belly), neck (chest), head
    10, 11, 12, 12,  # left shoulder, elbow, wrist, hand
    13, 14, 15, 15,  # right shoulder, elbow, wrist, hand
    4, 2, 0, 0,  # left hip (thigh), knee, ankle, foot
    5, 3, 1, 1,  # right hip, knee, ankle, foot
    8, 12, 12, 15, 15,  # spine at the shoulders (chest), left hand tip, thumb, right ones
)  # fmt: skip
# With `GeneratorSpec.faces`, the head's front below this height (the cosine between the
# surface normal and the head's up axis) is face (skin); the rest, back and top, is hair.
_HAIRLINE = 0.45


@dataclasses.dataclass(frozen=True)
class GeneratorSpec:
  """What to render: the size of the dataset and the seed it is drawn from.

  Attributes:
    resolution: frame height and width, pixels.
    num_frames: frames per clip.
    clips_per_class: clips of every class, spread evenly over views and
      subjects (clip `i` of a class has view `i % num_views + 1` and subject
      `(i // num_views) % num_subjects + 1`).
    seed: every pixel is a function of it (and of the clip's label and index).
    view_azimuths_deg: camera azimuth of views 1, 2, ...; under `cross_view`, view
      1 is the test view.
    num_subjects: distinct actors.
    protocol: which clips are held out, a key of `protocols.SYNTHETIC_PROTOCOLS`:
      `cross_view` (view 1 is the test split) or `cross_subject` (the
      `num_test_subjects` highest-numbered subjects, from every view). It also
      names the atomic splits the clips are written to, so that a build can only
      be read with the protocol it was made for.
    num_test_subjects: under `cross_subject`, the subjects held out for the test
      split (0 under `cross_view`).
    num_validation_subjects: the highest-numbered subjects that are not test
      subjects, whose clips (from the training views under `cross_view`, from
      every view under `cross_subject`) form the validation split.
    scenario: a key of `SCENARIOS`: which classes are rendered, hence what
      separates them in each modality.
    rgb_distractors: whether RGB carries two nuisances made to look like
      motion: a screen on the wall playing a disc that grows or shrinks (like
      something approaching or receding; depth sees a flat wall), and a light
      level that drifts during the clip (every pixel changes; depth does not).
    camera_height: metres above the floor of every view's camera (before its
      few centimetres of jitter). A higher camera looks down more steeply: the
      feet of an actor walking towards it move further down the image, and a
      bow shows the top of the head.
    walk_distance_m: the range a 'walk towards' / 'walk away' (`approach`,
      `recede`) covers, drawn per clip.
    walk_far_z: the room depth (z, metres; view 1's camera stands at -2.6)
      where such a walk starts (towards) or ends (away); the near end is this
      minus the walk's distance.
    faces: whether the head has a front: a face (skin) below a hairline, hair
      of the subject's colour on its back and top. Without it the head is a
      plain skin-coloured sphere, the same from every side, so RGB sees a
      'turn around' or which way a bow goes only through the arms and torso.
  """

  resolution: int = 64
  num_frames: int = 16
  clips_per_class: int = 288
  seed: int = 0
  view_azimuths_deg: tuple[float, ...] = (0.0, -35.0, 35.0)
  num_subjects: int = 8
  protocol: str = 'cross_view'
  num_test_subjects: int = 0
  num_validation_subjects: int = 1
  scenario: str = 'default'
  rgb_distractors: bool = True
  camera_height: float = 1.3
  walk_distance_m: tuple[float, float] = (1.3, 1.7)
  walk_far_z: float = 1.0
  faces: bool = False

  def __post_init__(self):
    if self.scenario not in SCENARIOS:
      raise ValueError(
          f'Unknown synthetic scenario {self.scenario!r}; ' f'known: {", ".join(SCENARIOS)}.'
      )
    if self.protocol not in protocols.SYNTHETIC_PROTOCOLS:
      raise ValueError(
          f'Unknown synthetic protocol {self.protocol!r}; known: '
          f'{", ".join(protocols.SYNTHETIC_PROTOCOLS)}.'
      )
    if (self.protocol == 'cross_subject') != (self.num_test_subjects > 0):
      raise ValueError(
          'num_test_subjects must be positive under cross_subject and 0 under cross_view, got '
          f'{self.num_test_subjects} under {self.protocol}.'
      )
    held_out = self.num_validation_subjects + self.num_test_subjects
    if self.num_validation_subjects < 1 or held_out >= self.num_subjects:
      raise ValueError(
          'Need at least one training and one validation subject, got '
          f'{self.num_validation_subjects} validation and {self.num_test_subjects} test '
          f'subjects of {self.num_subjects}.'
      )
    if len(self.view_azimuths_deg) < 2:
      raise ValueError('Need a test view and at least one training view.')

  @property
  def num_views(self) -> int:
    return len(self.view_azimuths_deg)

  @property
  def class_names(self) -> tuple[str, ...]:
    return SCENARIOS[self.scenario]


@dataclasses.dataclass(frozen=True)
class ClipInfo:
  """Where clip `index` of class `label` sits in the dataset."""

  label: int
  index: int
  view: int
  subject: int
  replication: int
  role: str  # 'train', 'validation' or 'test' in the spec's protocol
  split: str  # the atomic split the clip is written to

  @property
  def sample_id(self) -> str:
    return f'S{self.subject:02d}V{self.view:02d}' f'A{self.label:02d}R{self.replication:03d}'


def role_of(spec: GeneratorSpec, view: int, subject: int) -> str:
  """What a view and subject's clips are for in the spec's protocol: 'train', 'validation' or
  'test'."""
  if spec.protocol == 'cross_view' and view == TEST_VIEW:
    return 'test'
  if subject > spec.num_subjects - spec.num_test_subjects:
    return 'test'
  if subject > spec.num_subjects - spec.num_test_subjects - spec.num_validation_subjects:
    return 'validation'
  return 'train'


def atomic_split(spec: GeneratorSpec, role: str) -> str:
  """The atomic split (`protocols.SYNTHETIC_PROTOCOLS`) a role's clips are written to."""
  (split,) = protocols.SYNTHETIC_PROTOCOLS[spec.protocol].atomic_splits(role)
  return split


def atomic_splits(spec: GeneratorSpec) -> tuple[str, ...]:
  """The splits a build of `spec` holds, in the order of `protocols.SPLITS`."""
  protocol = protocols.SYNTHETIC_PROTOCOLS[spec.protocol]
  return tuple(s for role in protocols.SPLITS for s in protocol.atomic_splits(role))


def clip_info(spec: GeneratorSpec, label: int, index: int) -> ClipInfo:
  view = index % spec.num_views + 1
  subject = (index // spec.num_views) % spec.num_subjects + 1
  replication = index // (spec.num_views * spec.num_subjects) + 1
  role = role_of(spec, view, subject)
  return ClipInfo(
      label=label,
      index=index,
      view=view,
      subject=subject,
      replication=replication,
      role=role,
      split=atomic_split(spec, role),
  )


def all_clips(spec: GeneratorSpec) -> list[ClipInfo]:
  return [
      clip_info(spec, label, index)
      for label in range(len(spec.class_names))
      for index in range(spec.clips_per_class)
  ]


@dataclasses.dataclass(frozen=True)
class _Subject:
  scale: float
  build: float  # width factor of the hips, torso and shoulders
  colours: np.ndarray  # (3 parts, RGB) albedo in [0, 1]
  stripe_period: float  # metres, along the body's height
  stripe_contrast: float
  stripe_phase: float
  hair: np.ndarray | None = None  # RGB albedo of the hair, drawn by `_subject` only


def _subject(spec: GeneratorSpec, subject: int) -> _Subject:
  rng = np.random.default_rng([spec.seed, 0, subject])
  # The hair from a generator of its own, so every other draw is what it was before hair existed.
  hair_rng = np.random.default_rng([spec.seed, 3, subject])
  skin = np.array([0.85, 0.65, 0.5]) * rng.uniform(0.45, 1.1)
  return _Subject(
      scale=rng.uniform(0.8, 1.2),
      build=rng.uniform(0.85, 1.2),
      colours=np.clip(
          np.stack([skin, rng.uniform(0.1, 0.95, 3), rng.uniform(0.1, 0.9, 3)]), 0.05, 1.0
      ),
      stripe_period=rng.uniform(0.06, 0.2),
      stripe_contrast=rng.uniform(0.0, 0.45),
      stripe_phase=rng.uniform(0, 2 * np.pi),
      # Black to mid brown: darker than the darkest skin, so the face stands out from the hair.
      hair=np.array([1.0, 0.75, 0.55]) * hair_rng.uniform(0.05, 0.3),
  )


def _pretext_subject(label: int, rng: np.random.Generator) -> _Subject:
  """An actor of one `pretext` clip, whose shirt has a hue in bin `label` (8 bins from red).

  The hue keeps a tenth of a bin away from the bin's edges, so every label is
  told apart by the shirt alone; saturation and value vary, as do the skin,
  trousers, stripes and body, drawn as `_subject` draws them.
  """
  hue = (label + rng.uniform(0.1, 0.9)) / len(PRETEXT_CLASS_NAMES)
  shirt = colorsys.hsv_to_rgb(hue, rng.uniform(0.55, 1.0), rng.uniform(0.5, 1.0))
  skin = np.array([0.85, 0.65, 0.5]) * rng.uniform(0.45, 1.1)
  return _Subject(
      scale=rng.uniform(0.8, 1.2),
      build=rng.uniform(0.85, 1.2),
      colours=np.clip(np.stack([skin, shirt, rng.uniform(0.1, 0.9, 3)]), 0.05, 1.0),
      stripe_period=rng.uniform(0.06, 0.2),
      stripe_contrast=rng.uniform(0.0, 0.45),
      stripe_phase=rng.uniform(0, 2 * np.pi),
  )


def _rotation_y(angle: np.ndarray) -> np.ndarray:
  """`(..., 3, 3)` rotations about the vertical axis (x towards z for positive angles)."""
  c, s = np.cos(angle), np.sin(angle)
  zero, one = np.zeros_like(angle), np.ones_like(angle)
  return np.stack(
      [np.stack([c, zero, s], -1), np.stack([zero, one, zero], -1), np.stack([-s, zero, c], -1)], -2
  )


def _rotation_x(angle: np.ndarray) -> np.ndarray:
  """`(..., 3, 3)` rotations about the x axis (z towards -y for positive angles)."""
  c, s = np.cos(angle), np.sin(angle)
  zero, one = np.zeros_like(angle), np.ones_like(angle)
  return np.stack(
      [np.stack([one, zero, zero], -1), np.stack([zero, c, s], -1), np.stack([zero, -s, c], -1)], -2
  )


def _actor(name: str, subject: _Subject, spec: GeneratorSpec, rng: np.random.Generator):
  """The actor's spheres over time, performing motion `name`.

  `name` is a `default` class or one of the motions only `ntu_like` uses:
  'cross' (a crossing at any distance), 'lean back' (the bow's mirror image
  about the hips: the same image from the front, the opposite way in depth)
  and 'dress' (both hands up to the shoulders and down, as when putting a
  jacket on or taking it off).

  Returns:
    centres `(T, P, 3)` in room coordinates, radii `(P,)`, parts `(P,)`, the
    action's progress `(T,)`, 0 before it starts to 1 once it is done, and the
    head's forward and up axes `(T, 2, 3)` in the room (unit vectors: where
    its face looks, and the top of its head).
  """
  num_frames = spec.num_frames
  # Each clip performs the action over a random sub-interval of the clip.
  start = rng.uniform(0.0, 0.2)
  duration = rng.uniform(0.7, 1.0 - start)
  tau = np.clip((np.linspace(0.0, 1.0, num_frames) - start) / duration, 0.0, 1.0)
  ease = 0.5 - 0.5 * np.cos(np.pi * tau)  # 0 -> 1, for displacements
  out_and_back = np.sin(np.pi * tau)  # 0 -> 1 -> 0, for gestures
  side = rng.choice([-1.0, 1.0])  # which hand, which way: flips swap these

  # Body-frame positions of the spheres, per frame.
  body = np.array([b[:4] for b in _BODY])
  body = np.broadcast_to(body, (num_frames,) + body.shape).copy()
  shoulders = np.stack([_SHOULDER * [-1, 1, 1], _SHOULDER])
  hands = np.broadcast_to(
      np.stack([_HAND_REST * [-1, 1, 1], _HAND_REST]), (num_frames, 2, 3)
  ).copy()
  # Walking: legs and hands swing in opposite phase while the actor moves.
  walks = name in ('approach', 'recede', 'cross near', 'cross far', 'cross')
  if walks:
    stride = 0.12 * np.sin(2 * np.pi * rng.uniform(1.5, 2.5) * tau + rng.uniform(0, 2 * np.pi))
    stride *= (tau > 0) & (tau < 1)
    body[:, [0, 2], 2] += stride[:, None] * [1.0, 0.5]
    body[:, [1, 3], 2] -= stride[:, None] * [1.0, 0.5]
    hands[:, 0, 2] -= 0.8 * stride
    hands[:, 1, 2] += 0.8 * stride
  hand = int(side > 0)
  if name == 'reach forward':
    reach = np.array([0.0, 0.35, 0.55]) + [0.0, 0.0, rng.uniform(-0.05, 0.1)]
    hands[:, hand] += out_and_back[:, None] * reach
  elif name == 'reach sideways':
    reach = np.array([side * 0.55, 0.4, 0.0]) + [side * rng.uniform(-0.05, 0.1), 0.0, 0.0]
    hands[:, hand] += out_and_back[:, None] * reach
  elif name == 'dress':
    lift = rng.uniform(0.35, 0.5)
    hands += out_and_back[:, None, None] * np.array([[0.05, lift, -0.15], [-0.05, lift, -0.15]])

  # Arms: three spheres evenly spaced from the shoulder to the hand.
  fractions = np.array([1 / 3, 2 / 3, 1.0])
  arms = shoulders[None, :, None] + fractions[None, None, :, None] * (
      hands[:, :, None] - shoulders[None, :, None]
  )  # (T, 2, 3, 3)
  arms = arms.reshape(num_frames, 6, 3)
  points = np.concatenate([body[..., :3], arms], axis=1)
  radii = np.concatenate([body[0, :, 3], np.tile(_ARM_RADII, 2)])
  parts = np.array([b[4] for b in _BODY] + list(_ARM_PARTS) * 2)
  upper = np.concatenate([np.arange(len(_BODY)) >= 7, np.ones(6, bool)])
  widen = np.concatenate([[1.0] * 6, [subject.build] * 4, [subject.build] * 6])
  points[..., 0] *= widen
  radii = radii * np.where(np.arange(len(radii)) < 6, 1.0, np.sqrt(subject.build))

  # The head's forward and up axes (body +z and +y), turned with it below.
  head_axes = np.broadcast_to(np.eye(3)[[2, 1]], (num_frames, 2, 3))

  # Bowing: the upper body rotates forward (or back) about the hips.
  if name in ('lean forward', 'lean back'):
    bow = np.deg2rad(rng.uniform(30.0, 50.0)) * out_and_back
    if name == 'lean back':
      bow = -bow
    pivot = np.array([0.0, _HIP_PIVOT_Y, 0.0])
    bent = np.einsum('tij,tpj->tpi', _rotation_x(-bow), points - pivot) + pivot
    points = np.where(upper[None, :, None], bent, points)
    head_axes = np.einsum('tij,tpj->tpi', _rotation_x(-bow), head_axes)

  # Body frame -> room: the actor faces view 1's camera (body +z = room -z),
  # give or take, and turns about its vertical axis when the class says so.
  yaw = np.pi + rng.uniform(-0.35, 0.35) + np.zeros(num_frames)
  if name == 'turn around':
    yaw = yaw + side * np.pi * ease
  points = np.einsum('tij,tpj->tpi', _rotation_y(yaw), points * subject.scale)
  head_axes = np.einsum('tij,tpj->tpi', _rotation_y(yaw), head_axes)

  x0, z0 = rng.uniform(-0.35, 0.35), rng.uniform(-0.2, 0.5)
  distance = rng.uniform(*spec.walk_distance_m)
  path = np.zeros((num_frames, 3))
  if name == 'approach':
    path[:, 2] = spec.walk_far_z - distance * ease
  elif name == 'recede':
    path[:, 2] = spec.walk_far_z - distance * (1.0 - ease)
  elif name in ('cross near', 'cross far', 'cross'):
    path[:, 0] = side * rng.uniform(0.65, 0.85) * (2 * ease - 1)
    if name == 'cross':
      path[:, 2] = rng.uniform(-0.75, 1.2)
    else:
      path[:, 2] = rng.uniform(-0.75, -0.45) if name == 'cross near' else rng.uniform(0.9, 1.2)
  else:
    path[:, 0], path[:, 2] = x0, z0
  if name in ('approach', 'recede'):
    path[:, 0] = x0
  sway = 0.03 * np.sin(2 * np.pi * rng.uniform(0.3, 1.0) * tau + rng.uniform(0, 2 * np.pi))
  path[:, 0] += sway
  return points + path[:, None], radii * subject.scale, parts, tau, head_axes


def _camera(spec: GeneratorSpec, view: int, rng: np.random.Generator):
  """Camera position and `(3, 3)` rotation whose rows are its right/up/forward axes."""
  azimuth = np.deg2rad(spec.view_azimuths_deg[view - 1])
  position = np.array(
      [_CAMERA_DISTANCE * np.sin(azimuth), spec.camera_height, -_CAMERA_DISTANCE * np.cos(azimuth)]
  ) + rng.normal(0.0, 0.05, 3)
  forward = _CAMERA_TARGET + rng.normal(0.0, 0.05, 3) - position
  forward /= np.linalg.norm(forward)
  right = np.cross([0.0, 1.0, 0.0], forward)
  right /= np.linalg.norm(right)
  return position, np.stack([right, np.cross(forward, right), forward])


def _focal(resolution: int) -> float:
  return resolution / 2 / np.tan(np.deg2rad(_HORIZONTAL_FOV_DEG) / 2)


def _rays(resolution: int, rotation: np.ndarray):
  """Unit ray directions `(H*W, 3)` in the room, and their camera-axis component."""
  coords = (np.arange(resolution) + 0.5 - resolution / 2) / _focal(resolution)
  u, v = np.meshgrid(coords, coords)
  cam = np.stack([u, -v, np.ones_like(u)], -1).reshape(-1, 3)
  cam /= np.linalg.norm(cam, axis=-1, keepdims=True)
  return cam @ rotation, cam[:, 2]


def _cast_actor(
    centres: np.ndarray,
    radii: np.ndarray,
    origin: np.ndarray,
    rotation: np.ndarray,
    rays: np.ndarray,
    size: int,
):
  """Ray-casts the spheres: the nearest sphere and its distance for every ray.

  Rays are cast only inside a window that follows the actor from frame to
  frame (the spheres' projected bounding box, one window size for the whole
  clip so that all frames are cast at once): it covers a fraction of the image,
  which is what keeps a few thousand clips within a minute.

  Returns:
    `(T, N)` sphere index (0 where no sphere is hit) and distance (inf there).
  """
  frames = len(centres)
  camera = (centres - origin) @ rotation.T  # (T, P, 3): right, up, forward
  depth = np.maximum(camera[..., 2], radii + 1e-3)
  focal = _focal(size)
  reach = focal * radii / np.sqrt(depth**2 - radii**2) + 1.5  # silhouette radius, px
  cols = focal * camera[..., 0] / depth + size / 2
  rows = size / 2 - focal * camera[..., 1] / depth
  lo = np.clip(np.floor(np.stack([(rows - reach).min(1), (cols - reach).min(1)], -1)), 0, size)
  hi = np.clip(np.ceil(np.stack([(rows + reach).max(1), (cols + reach).max(1)], -1)), 0, size)
  extent = (hi - lo).max(0).astype(int)  # window (height, width)
  start = np.minimum(lo, size - extent).astype(int)  # (T, 2)
  window = (
      (start[:, 0, None, None] + np.arange(extent[0])[:, None]) * size
      + start[:, 1, None, None]
      + np.arange(extent[1])
  ).reshape(frames, -1)
  offsets = centres - origin
  along = np.einsum('tmk,tpk->tpm', rays[window], offsets)  # (T, P, M)
  disc = along**2 - ((offsets**2).sum(-1) - radii**2)[..., None]
  hit = along - np.sqrt(np.maximum(disc, 0.0))
  hit = np.where((disc > 0) & (hit > 0), hit, np.inf)
  nearest = np.zeros((frames, len(rays)), int)
  distance = np.full((frames, len(rays)), np.inf)
  frame = np.arange(frames)[:, None]
  nearest[frame, window] = hit.argmin(axis=1)
  distance[frame, window] = hit.min(axis=1)
  return nearest, distance


def _room_distance(origin: np.ndarray, rays: np.ndarray):
  """Distance along each ray to the floor or the wall, whichever is first, and
  whether it is the floor."""
  with np.errstate(divide='ignore'):
    t_floor = np.where(rays[:, 1] < 0, -origin[1] / rays[:, 1], np.inf)
  a = rays[:, 0] ** 2 + rays[:, 2] ** 2
  b = 2 * (origin[0] * rays[:, 0] + origin[2] * rays[:, 2])
  c = origin[0] ** 2 + origin[2] ** 2 - _WALL_RADIUS**2  # < 0: the camera is inside
  t_wall = (-b + np.sqrt(b * b - 4 * a * c)) / (2 * a)
  return np.minimum(t_floor, t_wall), t_floor < t_wall


def _room_albedo(
    points: np.ndarray,
    floor: np.ndarray,
    look_angle: float,
    num_frames: int,
    rng: np.random.Generator,
    screen: bool,
) -> np.ndarray:
  """`(T, N, 3)` colours of the floor tiles, the wall posters and (if `screen`) a
  screen playing a looming (or shrinking) disc, at the room points `(N, 3)`."""
  tile = rng.uniform(0.3, 0.7)
  tiles = rng.uniform(0.15, 0.9, (2, 3))
  checker = (np.floor(points[:, 0] / tile) + np.floor(points[:, 2] / tile)).astype(int) % 2
  albedo = np.where(floor[:, None], tiles[checker], rng.uniform(0.3, 0.9, 3))
  # Wall coordinates: arc length around the wall from where the camera looks, and height.
  arc = _WALL_RADIUS * np.angle(np.exp(1j * (np.arctan2(points[:, 0], points[:, 2]) - look_angle)))
  height = points[:, 1]
  for _ in range(rng.integers(4, 9)):
    centre = rng.uniform([-2.5, 0.4], [2.5, 2.4])
    half = rng.uniform(0.1, 0.4, 2)
    inside = ~floor & (np.abs(arc - centre[0]) < half[0]) & (np.abs(height - centre[1]) < half[1])
    albedo[inside] = rng.uniform(0.05, 1.0, 3)
  albedo = np.broadcast_to(albedo, (num_frames,) + albedo.shape).copy()
  if not screen:
    return albedo
  # The screen: a dark panel with a bright disc whose radius grows or shrinks.
  centre = rng.uniform([-1.2, 1.4], [1.2, 2.0])
  screen = np.flatnonzero(
      ~floor & (np.abs(arc - centre[0]) < 0.45) & (np.abs(height - centre[1]) < 0.3)
  )
  radii = np.linspace(*rng.permutation([0.04, 0.25]), num_frames)
  drift = np.linspace(0.0, rng.uniform(-0.15, 0.15), num_frames)
  disc = (arc[screen] - centre[0] - drift[:, None]) ** 2 + (
      height[screen] - centre[1]
  ) ** 2 < radii[
      :, None
  ] ** 2  # (T, screen pixels)
  albedo[:, screen] = np.where(disc[..., None], rng.uniform(0.6, 1.0, 3), 0.08)
  return albedo


def _infrared(
    reflectance: np.ndarray, cosine: np.ndarray, distance: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
  """`(T, N)` uint8 infrared of surfaces lit only by the depth camera's emitter.

  Args:
    reflectance: `(T, N)` grey reflectance of the surface each ray hits, 0..1.
    cosine: `(T, N)` cosine between its normal and the direction back to the camera.
    distance: `(T, N)` metres along the ray (the emitter sits at the camera).
    rng: draws the sensor noise.
  """
  lit = reflectance * np.maximum(cosine, 0.0) * (_IR_FULL_SCALE_M / distance) ** 2
  ir = 255 * lit + _IR_NOISE * rng.standard_normal(lit.shape)
  return np.clip(np.round(ir), 0, 255).astype(np.uint8)


def _joints(centres: np.ndarray, origin: np.ndarray, rotation: np.ndarray) -> np.ndarray:
  """`(T, 1, 25, 2)` float32 Kinect v2 joints as fractions of the frame, NaN outside it.

  Each joint is its `KINECT_V2_SPHERES` sphere's centre projected by the camera
  (`(u, v)`: fractions of the width and height, as `modistill_jax.data.skeletons`
  stores joints): the single body of an NTU skeleton frame, registered to the
  frames as NTU's builder registers its joints.
  """
  camera = (centres[:, KINECT_V2_SPHERES] - origin) @ rotation.T  # right, up, forward
  width_at_unit_depth = 2 * np.tan(np.deg2rad(_HORIZONTAL_FOV_DEG) / 2)  # metres, square frame
  u = 0.5 + camera[..., 0] / camera[..., 2] / width_at_unit_depth
  v = 0.5 - camera[..., 1] / camera[..., 2] / width_at_unit_depth
  joints = np.stack([u, v], -1)
  inside = ((joints >= 0) & (joints <= 1)).all(-1) & (camera[..., 2] > 0)
  return np.where(inside[..., None], joints, np.nan).astype(np.float32)[:, None]


def render_clip(
    spec: GeneratorSpec, label: int, index: int, ir_and_joints: bool = False
) -> dict[str, np.ndarray]:
  """Renders clip `index` of class `label`.

  Args:
    spec: what to render.
    label, index: which clip.
    ir_and_joints: also render the infrared image and the joints (a generator of
      their own draws the infrared noise, so the other outputs are the same either way).

  Returns:
    'rgb': `(T, H, W, 3)` uint8; 'depth_mm': `(T, H, W)` uint16 planar depth in
    millimetres, 0 beyond the sensor's range (most of the wall); 'depth_jet': the depth
    coloured by `jet.depth_to_jet`, `(T, H, W, 3)` uint8. With `ir_and_joints`, 'ir':
    `(T, H, W)` uint8, the grey reflectance of the room and actor under the depth
    camera's own illumination (no colour, no room light), falling off with the
    distance squared; 'joints': `(T, 1, 25, 2)` float32, `_joints`.
  """
  info = clip_info(spec, label, index)
  rng = np.random.default_rng([spec.seed, 1, label, index])
  size, frames = spec.resolution, spec.num_frames
  origin, rotation = _camera(spec, info.view, rng)
  rays, forwardness = _rays(size, rotation)
  name = spec.class_names[label]
  if spec.scenario == 'pretext':
    # The actor and its motion from a generator of their own: `rng` draws the rest of the
    # clip as in the action scenarios.
    actor_rng = np.random.default_rng([spec.seed, 2, label, index])
    subject = _pretext_subject(label, actor_rng)
    motion = _MOTIONS[actor_rng.integers(len(_MOTIONS))]
  else:
    subject = _subject(spec, info.subject)
    # `default`'s classes are motions themselves ('turn around' is both scenarios' and maps to
    # itself).
    motion = _NTU_LIKE_MOTIONS.get(name, name)
  centres, radii, parts, progress, head_axes = _actor(motion, subject, spec, rng)
  # Albedo of each body part per frame, and whether the shirt is covered by a coat (`_COATS`)
  # that the actor puts on or takes off halfway through the gesture.
  colours = np.broadcast_to(subject.colours, (frames,) + subject.colours.shape).copy()
  jacket = np.zeros(frames, bool)
  if name in _COATS:
    puts_on, (low, high) = _COATS[name]
    jacket = progress >= 0.5 if puts_on else progress < 0.5
    colours[jacket, 1] = rng.uniform(low, high)
  nearest, t_actor = _cast_actor(centres, radii, origin, rotation, rays, size)
  t_room, floor = _room_distance(origin, rays)
  actor = t_actor < t_room  # (T, N)
  distance = np.where(actor, t_actor, t_room)

  light = np.array([rng.uniform(-1.0, 1.0), rng.uniform(1.0, 2.0), rng.uniform(-1.5, -0.5)])
  light /= np.linalg.norm(light)
  ambient = rng.uniform(0.3, 0.55)
  shading = lambda normal: ambient + (1 - ambient) * np.maximum(normal @ light, 0.0)

  # The room does not move: shade it once, then paint the actor's pixels over it.
  room_points = origin + t_room[:, None] * rays
  wall_normal = -room_points * [1.0, 0.0, 1.0] / _WALL_RADIUS
  look = origin + rotation[2] * _WALL_RADIUS
  colour = _room_albedo(
      room_points, floor, np.arctan2(look[0], look[2]), frames, rng, spec.rgb_distractors
  )
  room_normal = np.where(floor[:, None], [0.0, 1.0, 0.0], wall_normal)
  if ir_and_joints:
    reflectance = colour.mean(-1)
    cosine = np.broadcast_to(-(room_normal * rays).sum(-1), reflectance.shape).copy()
  colour *= shading(room_normal)[:, None]
  frame, pixel = np.nonzero(actor)
  sphere = nearest[frame, pixel]
  points = origin + t_actor[frame, pixel, None] * rays[pixel]
  normal = (points - centres[frame, sphere]) / radii[sphere, None]
  stripes = (
      np.sin(
          2 * np.pi * points[:, 1] / subject.scale / subject.stripe_period + subject.stripe_phase
      )
      > 0
  )
  striped = (parts[sphere] > 0) & ~(jacket[frame] & (parts[sphere] == 1))
  albedo = (
      colours[frame, parts[sphere]]
      * np.where(striped & stripes, 1.0 - subject.stripe_contrast, 1.0)[:, None]
  )
  if spec.faces:
    forward, up = head_axes[frame, 0], head_axes[frame, 1]
    face = ((normal * forward).sum(-1) > 0) & ((normal * up).sum(-1) < _HAIRLINE)
    albedo[(sphere == _HEAD) & ~face] = subject.hair
  colour[frame, pixel] = albedo * shading(normal)[:, None]
  if ir_and_joints:
    reflectance[frame, pixel] = albedo.mean(-1)
    cosine[frame, pixel] = -(normal * rays[pixel]).sum(-1)

  # Camera exposure: a light level drifting during the clip (a distractor), a colour cast, noise.
  level = np.ones(frames)
  if spec.rgb_distractors:
    tau = np.linspace(0.0, 1.0, frames)
    level = 1.0 + rng.uniform(0.0, 0.25) * np.sin(
        2 * np.pi * rng.uniform(0.5, 1.5) * tau + rng.uniform(0, 2 * np.pi)
    )
  rgb = (255 * colour * rng.uniform(0.85, 1.15, 3)).astype(np.float32) * level[:, None, None]
  rgb += 3.0 * rng.standard_normal(rgb.shape, np.float32)
  rgb = np.clip(np.round(rgb), 0, 255).astype(np.uint8).reshape(frames, size, size, 3)

  depth = distance * forwardness  # planar depth, metres
  noise = rng.standard_normal(depth.shape, np.float32) * _SENSOR_NOISE_MM
  depth_mm = np.clip(np.round(1000 * depth + noise * depth**2), 1, 65535)
  depth_mm[depth > _MAX_RANGE_M] = 0
  depth_mm = depth_mm.astype(np.uint16).reshape(frames, size, size)
  out = {'rgb': rgb, 'depth_mm': depth_mm, 'depth_jet': jet.depth_to_jet(depth_mm)}
  if ir_and_joints:
    ir_rng = np.random.default_rng([spec.seed, 4, label, index])
    ir = _infrared(reflectance, cosine, distance, ir_rng)
    out['ir'] = ir.reshape(frames, size, size)
    out['joints'] = _joints(centres, origin, rotation)
  return out
