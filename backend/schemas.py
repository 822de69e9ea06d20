"""The HTTP API's request and response models (pydantic): the contract the Blender extension is tested against.

Every request is JSON. A window is a list of ``frames`` (frame numbers at ``fps``, strictly increasing)
and, per joint of the model's skeleton, a track: one rotation per frame (``null`` where it is not known),
translations for the skeleton's moving joints, and optionally which frames are targets. Rotations use
the request's ``rotation_format`` unless a joint names its own (rigs mix rotation modes). See
``docs/backend.md`` for the conventions and an example.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from training.inbetween.fill import MAX_FPS, MAX_VALUE, MIN_FPS
from training.inbetween.sampling import MAX_K, MAX_TEMPERATURE, MAX_VARIATIONS, ORDERS

API_VERSION = "v1"

# --- limits (requests beyond these get a 4xx that names the field) ----------------------------------------
MAX_BODY_BYTES = 8 * 1024 * 1024
MAX_FRAMES = 2048  # per fill or sample request (a shot longer than the model's window runs window by window)
MAX_JOINTS = 64  # entries in ``joints`` (a model has at most 22)
ID_PATTERN = r"^[A-Za-z0-9_.\-]{1,64}$"

EulerOrder = Literal["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"]
Order = Literal["forward", "random", "lowest-entropy", "highest-entropy"]
assert set(Order.__args__) == set(ORDERS)  # the engine's orders, one list


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class QuaternionFormat(_Strict):
    """Unit quaternions. ``wxyz`` (scalar first, Blender's ``rotation_quaternion``) by default, or
    ``xyzw`` (scalar last, scipy's). Known quaternions must have norm 1 within ``QUAT_TOLERANCE`` unless
    the request sets ``normalize_quaternions``; answers are unit quaternions kept in one hemisphere."""

    type: Literal["quaternion"]
    layout: Literal["wxyz", "xyzw"] = "wxyz"


class EulerFormat(_Strict):
    """Euler angles ``[x, y, z]`` (the angle about each axis, always in that component order, like
    Blender's ``rotation_euler``), composed in ``order``. With ``convention: "blender"`` (default) the
    order is Blender's ``rotation_mode``: ``"XYZ"`` applies X first, R = Rz·Ry·Rx. With ``"bvh"`` it is
    the BVH channel order (intrinsic): ``"ZXY"`` means R = Rz·Rx·Ry, the same rotation as Blender's
    ``"YXZ"``. Answers are unwrapped along time (no 360-degree jumps)."""

    type: Literal["euler"]
    order: EulerOrder = "XYZ"
    convention: Literal["blender", "bvh"] = "blender"
    units: Literal["degrees", "radians"] = "degrees"


class AxisAngleFormat(_Strict):
    """Blender's ``rotation_axis_angle`` layout ``[angle, x, y, z]``: the angle first, then the axis
    (normalised on the way in; a zero axis is refused unless the angle is 0)."""

    type: Literal["axis_angle"]
    units: Literal["degrees", "radians"] = "radians"


class RotationVectorFormat(_Strict):
    """A rotation vector ``[x, y, z]``: the unit axis times the angle."""

    type: Literal["rotation_vector"]
    units: Literal["degrees", "radians"] = "radians"


RotationFormat = Annotated[
    QuaternionFormat | EulerFormat | AxisAngleFormat | RotationVectorFormat, Field(discriminator="type")
]
MAX_FRAME_NUMBER = 1e9
# the closest two frames of a window may be, in frames: closer ones are one frame to Blender's extension (it merges
# keys within ``addon/curves.py``'s EPS_FRAME of each other, as one key) and to an animator; sent as two, the engine
# filled them as two keys a billionth of a frame apart (the cubic curves that carry a resampled fill back to the
# request's frames took their slope between them)
MIN_FRAME_STEP = 1e-3
# strict: JSON numbers only (integers included); ``true``, ``false`` and numeric strings are refused
Number = Annotated[float, Field(strict=True, ge=-MAX_VALUE, le=MAX_VALUE)]
FrameNumber = Annotated[float, Field(strict=True, ge=-MAX_FRAME_NUMBER, le=MAX_FRAME_NUMBER)]
Vec = Annotated[list[Number], Field(min_length=1, max_length=4)]


class JointTrack(_Strict):
    """One joint of the window. ``rotations`` has one entry per frame: a rotation, or ``null`` where it
    is not known (omit the list when nothing is known). ``translations``: only for the skeleton's moving
    joints (root), one ``[x, y, z]`` or ``null`` per frame, known exactly where the rotation is.
    ``offset``: a non-moving joint's bone offset (its constant local translation) in the model's units;
    default: the model's rest offset. ``targets``: the frames (numbers from ``frames``, each once) to fill for
    this joint; default: every frame whose rotation is ``null``; ``[]``: none."""

    rotation_format: RotationFormat | None = None
    rotations: Annotated[list[Vec | None], Field(max_length=MAX_FRAMES)] | None = None
    translations: Annotated[list[Vec | None], Field(max_length=MAX_FRAMES)] | None = None
    offset: Vec | None = None
    targets: Annotated[list[FrameNumber], Field(max_length=MAX_FRAMES)] | None = None


class FillRequest(_Strict):
    model: str = Field(min_length=1, max_length=200, description="a loaded model's name (see /v1/models)")
    fps: float = Field(strict=True, ge=MIN_FPS, le=MAX_FPS, description="frames per second of `frames`")
    frames: Annotated[list[FrameNumber], Field(min_length=1, max_length=MAX_FRAMES)] = Field(
        description="frame numbers of the window, strictly increasing, more than `min_frame_step` (0.001) apart "
        "(any spacing beyond; subframes allowed)")
    rotation_format: RotationFormat = Field(default_factory=lambda: QuaternionFormat(type="quaternion"),
                                            description="default for every joint; quaternion wxyz if left out")
    normalize_quaternions: bool = Field(
        False, strict=True, description="accept non-unit (non-zero) quaternions and normalise them instead of refusing")
    joints: dict[str, JointTrack] = Field(
        min_length=1, max_length=MAX_JOINTS, description="tracks by joint name; joints left out are filled "
        "as needed but not returned")
    id: str | None = Field(None, pattern=ID_PATTERN, description="a client-chosen job id (to cancel or poll)")


class SampleRequest(FillRequest):
    order: Order = Field("lowest-entropy", description="which targets are drawn next: lowest-entropy (most "
                         "certain first, the default: the best mean fill of the four on both shipped models), "
                         "forward (time order), random, highest-entropy")
    k: int = Field(1, strict=True, ge=1, le=MAX_K, description="cells (query model) or frames (triples model) per step")
    temperature: float = Field(1.0, strict=True, ge=0.0, le=MAX_TEMPERATURE,
                               description="how far variations stray from the fill, as a multiple of the model's "
                               "calibrated default (1; chosen on validation data, see its card's `sampling`); 0 gives "
                               "the deterministic fill")
    seed: int = Field(0, strict=True, ge=0, le=2**32 - 1)
    n: int = Field(1, strict=True, ge=1, le=MAX_VARIATIONS, description="number of variations")
    stream: bool = Field(False, strict=True, description="answer with NDJSON events (started, progress, result)")


# --- responses ------------------------------------------------------------------------------------------
# Every answer is validated against its model before it is sent (FastAPI's ``response_model``); extra
# fields are an error, so the contract and the code cannot drift apart.


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class JointResult(_Answer):
    """Per frame: the rotation (the given value where known, the fill where a target, ``null``
    elsewhere), translations for moving joints, the masks, and each target's uncertainty: the circular
    standard deviation of its rotation in degrees and the entropy (nats) of its distribution."""

    rotation_format: RotationFormat
    rotations: list[list[float] | None]
    translations: list[list[float] | None] | None = None
    known: list[bool]
    target: list[bool]
    uncertainty_deg: list[float | None]
    entropy: list[float | None]


class Timings(_Answer):
    total_ms: float = Field(description="from the request's arrival to the answer")
    queue_ms: float = Field(description="waiting for a free worker")
    prepare_ms: float = Field(description="validation and conversion into the model's cells")
    model_ms: float = Field(description="the fill engine itself (network and its feature pipeline)")
    encode_ms: float = Field(description="conversion of the answer into the requested formats")


class Resampling(_Answer):
    """What the server did with a window whose frame rate the model was not trained at."""

    window_fps: float = Field(description="the request's own frame rate (median spacing of its frames)")
    filled_fps: float = Field(description="the trained rate the window was filled at, on a grid that also "
                              "holds every keyed frame at its own time; the answer is carried back to the "
                              "request's frames by cubic curves through that grid")


class FillResponse(_Answer):
    id: str
    model: str
    frames: list[float]
    joints: dict[str, JointResult]
    resampled: Resampling | None = Field(None, description="set when the window was filled at another frame "
                                         "rate than its own (a 60 or 120 fps rig on a 24-40 fps model)")
    timings: Timings


class Variation(_Answer):
    joints: dict[str, JointResult]


class SampleResponse(_Answer):
    id: str
    model: str
    frames: list[float]
    order: Order
    k: int
    temperature: float
    seed: int
    variations: list[Variation]
    resampled: Resampling | None = Field(None, description="set when the window was sampled at another frame "
                                         "rate than its own (a 60 or 120 fps rig on a 24-40 fps model)")
    timings: Timings


class SampleEvent(_Answer):
    """One line of a streamed sample (``stream: true``, media type ``application/x-ndjson``): ``started``
    (with ``id``), ``progress`` (``done`` of ``total`` steps), then ``result`` or ``error`` or
    ``cancelled``."""

    event: Literal["started", "progress", "result", "error", "cancelled"]
    id: str
    done: int | None = None
    total: int | None = None
    result: SampleResponse | None = None
    error: str | None = None
    status: int | None = None


class Health(_Answer):
    status: Literal["ok"] = "ok"
    api: str = API_VERSION
    version: str
    models: list[str]


class JointInfo(_Answer):
    name: str
    index: int
    parent: str | None
    parent_index: int
    moving: bool = Field(description="its translation varies over time (send `translations`)")
    rest_offset: list[float] | None = Field(description="local translation in the rest pose, model units")


class ReferenceHabit(_Answer):
    direction: list[float] = Field(description="mean direction of the reference, perpendicular to the bone, in the "
                                   "joint's frame")
    strength: float = Field(description="how consistent the data is (0..1)")


class Hinge(_Answer):
    axis: list[float] = Field(description="the dominant axis of the local rotation's spread (parent's frame)")
    share: float = Field(description="the share of the spread along it (a knee: 1.0)")


class JointHabit(_Answer):
    """How the training data holds one joint: what a rig's rest pose is matched against (twists included)."""

    name: str
    axis: list[float] = Field(description="the bone's direction in the joint's own frame")
    references: dict[str, ReferenceHabit]
    mean_local: list[float] = Field(description="mean local rotation, quaternion [w, x, y, z]")
    spread: list[list[float]] | None = Field(None, description="covariance (rad^2) of the local rotation's "
                                             "rotation vector about the mean")
    hinge: Hinge | None = None


class Ground(_Answer):
    """Where the training data's floor is: the lowest height of ``joints`` (the ankles) over each clip."""

    joints: list[str]
    height: float = Field(description="the median over the training clips (model units, up axis)")
    low: float = Field(description="the lowest clip's")
    high: float = Field(description="the highest clip's")


class Conventions(_Answer):
    """The training data's joint habits (``training/conventions.py``), relative to two body-anchored
    directions (body: ``forward``, ``up``; hand: ``finger``, ``palm``), and a body's floor."""

    skeleton: str
    references: list[str]
    joints: list[JointHabit]
    ground: Ground | None = None


class Limits(_Answer):
    max_body_bytes: int = MAX_BODY_BYTES
    max_frames: int = MAX_FRAMES
    max_sample_frames: int = MAX_FRAMES
    max_joints: int = MAX_JOINTS
    max_variations: int = MAX_VARIATIONS
    max_k: int = MAX_K
    max_temperature: float = MAX_TEMPERATURE
    max_fps: float = MAX_FPS
    min_frame_step: float = Field(MIN_FRAME_STEP, description="adjacent `frames` must be more than this apart "
                                  "(in frames): closer ones are one frame")


class RotationConventions(_Answer):
    internal: str = "unit quaternions (x, y, z, w); local to the parent joint"
    formats: list[str] = ["quaternion", "euler", "axis_angle", "rotation_vector"]
    quaternion_layouts: list[str] = ["wxyz", "xyzw"]
    default_quaternion_layout: str = "wxyz"
    euler_orders: list[str] = ["XYZ", "XZY", "YXZ", "YZX", "ZXY", "ZYX"]
    euler_conventions: list[str] = ["blender", "bvh"]
    euler_values: str = "[x, y, z] angles (Blender's rotation_euler layout), whatever the order"
    quaternion_tolerance: float


class ModelInfo(_Answer):
    name: str
    skeleton: str
    kind: str
    variant: str
    joints: list[JointInfo]
    root: str
    up_axis: Literal["x", "y", "z"]
    units: str
    window_frames: int = Field(description="the model's window; longer fills run in overlapping windows")
    fps_range: list[float] = Field(description="frame rates the model was trained at (min, max)")
    rotations: RotationConventions
    limits: Limits
    data: str | None = None
    licence: str | None = None
    metrics: dict = Field(default_factory=dict)
    conventions: Conventions | None = Field(None, description="the training data's joint habits, for retargeting")


class ModelList(_Answer):
    models: list[ModelInfo]


class JobStatus(_Answer):
    id: str
    kind: Literal["fill", "sample"]
    state: Literal["queued", "running", "done", "failed", "cancelled"]
    done: int = Field(description="progress: sampling steps taken, or frames a long fill (longer than the model's "
                      "window) has committed; 0 until the first report")
    total: int = Field(description="the steps or frames of the whole job; 0 until the first report (a fill of one "
                       "model window reports none)")


class CancelResponse(_Answer):
    id: str
    cancelled: bool = Field(description="true when the job was still queued or running")
    state: str


class ErrorResponse(_Answer):
    error: str = Field(description="what is wrong, naming the field")
    field: str | None = Field(None, description="the offending field, e.g. joints.Hips.rotations[3]")
    detail: list | None = None
