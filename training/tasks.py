"""Built-in trainable models: each module named here defines ``TASK`` (or ``TASKS`` for a family) for
``anyfill train``. Only modules that exist are registered, so the list is always true."""

from importlib.util import find_spec

from training.train import register

_BUILTIN = {
    "anyorder": "training.inbetween.task",  # the thesis's conditional any-order transformer (hand, body)
    "pixels": "training.documents.pixels.task",  # the any-order MNIST pixel model
    "lift": "training.documents.lift.task",  # CS764 2D-to-3D LiftModel
    "sttformer": "training.documents.stcformer.task",  # STCFormer report family: 10 -> 25 frames of 3D joints
    "stcformer": "training.documents.stcformer.task",
    "stcformer-ar": "training.documents.stcformer.task",
    "convstgat": "training.documents.stcformer.task",
    "stacformer": "training.documents.stcformer.task",
    "perceiver": "training.documents.perceiver.task",  # video predictive coding
    "perceiver-ae": "training.documents.perceiver.task",  # the name the issue gives the command
    "video-classifier": "training.documents.video_classifier.task",  # (2+1)D CNN + attention heads
}

for _name, _module in _BUILTIN.items():
    if find_spec(_module) is not None:
        register(_name, _module)
