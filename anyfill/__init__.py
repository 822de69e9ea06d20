"""anyfill: AI in-betweening for animators. The importable parts are ``anyfill.training`` (data, models,
benchmarks, training) and ``anyfill.backend`` (the local fill server); ``addon/`` is the Blender extension."""

__version__ = "0.1.0"
