"""The product model: features, the any-order motion transformer, losses, the fill engine, checkpoint I/O,
its Lightning task, baselines and metrics. Imports :mod:`training.motion`, never :mod:`training.documents`."""
