"""Motion data, models, losses, metrics, benchmarks and the training command line.

Never imports ``anyfill.backend`` or the Blender extension: the import flow is addon -> backend -> training.
"""
