"""The models of the documents the project grew from, one subpackage each (model, data, task, bench side
by side). They may use :mod:`training.motion`, the product's shared parts and :mod:`training.train`; nothing
of the product imports them."""
