"""Everything that learns or scores: the motion data core (:mod:`training.motion`), the product model
(:mod:`training.inbetween`), the documents' models (:mod:`training.documents`), the product's benchmarks
(:mod:`training.bench`) and the shared training command (:mod:`training.train`).

Never imports ``backend`` or the Blender extension: the import flow is addon -> backend -> training.
"""
