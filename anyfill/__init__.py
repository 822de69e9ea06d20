"""anyfill: AI in-betweening for animators. Beside this command line, the importable packages are
``training`` (data, models, benchmarks, training) and ``backend`` (the local fill server); ``addon/`` is the
Blender extension."""

__version__ = "0.1.0"
