"""Built-in trainable models: each module here defines ``TASK`` (or ``TASKS`` for a family) for
``anyfill train``. Only modules that exist are registered, so the list is always true."""

from importlib.util import find_spec

from ..train import register

_BUILTIN = {
    "anyorder": "anyorder",  # the thesis's conditional any-order transformer (hand, body)
    "pixels": "pixels",  # the any-order MNIST pixel model
    "lift": "lift",  # CS764 2D-to-3D LiftModel
    "sttformer": "motion_prediction",  # STCFormer report family: 10 -> 25 frames of 3D joints
    "stcformer": "motion_prediction",
    "stcformer-ar": "motion_prediction",
    "convstgat": "motion_prediction",
    "stacformer": "motion_prediction",
    "perceiver": "perceiver",  # video predictive coding
    "perceiver-ae": "perceiver",  # the name the issue gives the command
    "video-classifier": "video_classifier",  # (2+1)D CNN + attention heads
}

for _name, _module in _BUILTIN.items():
    if find_spec(f"{__name__}.{_module}") is not None:
        register(_name, f"{__name__}.{_module}")
