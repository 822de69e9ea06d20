"""Inference through traced copies of a model's layers: the same arithmetic without Python's cost per operation.

``torch.jit.trace`` records a pass once and ``torch.jit.freeze`` folds the weights in; the copy then runs a window or a
sampling step without a Python call per tensor operation and without holding the interpreter lock (a server's other
requests go on meanwhile). A copy is only a cache of the eager layers: it is built on first use, kept only if it gives
their outputs on shapes other than the one traced (1e-5), and never served with gradients, in training mode, on other
dtypes or devices, or once what it was traced from (weights, buffers, the model's config) has changed.

* :class:`TracedPasses` - a :class:`.transformer.QueryEncoderDecoder`'s unmasked encoder and decoder passes (the
  ``core`` arguments below; typed as modules: the transformer imports this module, not the other way round).
* :class:`TracedMethod` - a model's method of tensors around its core (its head, its query tokens).
"""

from __future__ import annotations

import copy
import threading
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import nn

_fixed = threading.local()  # this thread's keys while :func:`weights_fixed` holds

TRACING = threading.RLock()
"""Held while a traced copy is built: ``torch.jit.trace`` swaps one process-wide map, so two traces at once on two
threads (a server's first fill beside its first sample) broke each other (``IndexError: unordered_map::at``)."""


@contextmanager
def weights_fixed() -> Iterator[None]:
    """Within this block, on this thread, every module's weights are taken as fixed: :func:`weights_key` walks a
    module once and gives the same key after. The caller's promise, for a run that reads a model hundreds of times
    and changes nothing (a sampling run checks its traced copies three times a step)."""
    outer = getattr(_fixed, "keys", None)
    if outer is None:
        _fixed.keys = {}
    try:
        yield
    finally:
        if outer is None:
            _fixed.keys = None


def weights_key(module: nn.Module, skip: nn.Module | None = None) -> tuple:
    """Changes whenever a weight of ``module`` (a parameter or a buffer; none under ``skip``) is replaced or changed in
    place (a training step, a loaded state). Checked on every traced call, so the module tree is walked directly:
    ``parameters()`` and ``buffers()`` cost several times as much (and inside :func:`weights_fixed`, once)."""
    fixed = getattr(_fixed, "keys", None)
    if fixed is not None:
        held = fixed.get((id(module), id(skip)))
        if held is not None and held[0] is module and held[1] is skip:
            return held[2]
    key, todo = [], [module]
    for m in todo:
        if m is not skip:
            todo += [c for c in m._modules.values() if c is not None]
            tensors = [*m._parameters.values(), *m._buffers.values()]
            key += [(t.data_ptr(), t._version) for t in tensors if t is not None]
    out = tuple(key)
    if fixed is not None:  # the modules held too, so their ids cannot be another's while the block lasts
        fixed[(id(module), id(skip))] = (module, skip, out)
    return out


class _EncoderPass(nn.Module):
    """The encoder's layers on tokens that are all valid."""

    def __init__(self, core: nn.Module):
        super().__init__()
        self.core = core

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.core.encode_layers(tokens)


class _DecoderPass(nn.Module):
    """The decoder's layers on queries that are all valid, against an encoding that is all valid: its
    cross-attention keys and values computed from ``memory``, or given (``memory_kv``, flattened)."""

    def __init__(self, core: nn.Module, given_kv: bool):
        super().__init__()
        self.core, self.given_kv = core, given_kv

    def forward(self, queries: torch.Tensor, *memory: torch.Tensor) -> torch.Tensor:
        if self.given_kv:
            return self.core.decode_layers(queries, None, memory_kv=list(zip(memory[::2], memory[1::2], strict=True)))
        return self.core.decode_layers(queries, memory[0])


class TracedPasses(NamedTuple):
    """A query encoder-decoder's unmasked inference passes, traced with ``torch.jit.trace`` and frozen (weights
    folded in as constants), with the weights' :func:`weights_key` they were built from."""

    encode: torch.jit.ScriptModule
    decode: torch.jit.ScriptModule
    decode_kv: torch.jit.ScriptModule
    key: tuple

    @classmethod
    def build(cls, core: nn.Module) -> TracedPasses | None:
        d = core.ln_enc.normalized_shape[0]
        gen = torch.Generator().manual_seed(0)
        tok, qry = torch.randn(1, 5, d, generator=gen), torch.randn(1, 4, d, generator=gen)
        was_training = core.training
        core.eval()
        try:
            with TRACING, torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings about Python values: the checks below decide
                memory = _EncoderPass(core)(tok)
                kv = [x for pair in core.memory_kv(memory) for x in pair]
                passes = [(_EncoderPass(core), (tok,)), (_DecoderPass(core, False), (qry, memory)),
                          (_DecoderPass(core, True), (qry, *kv))]
                # no trace check: the stacked projection is built on the first call and cached after, so two
                # traces' graphs differ in form; :func:`_reproduces` compares the outputs instead
                traced = [torch.jit.optimize_for_inference(torch.jit.freeze(
                    torch.jit.trace(m.eval(), args, check_trace=False))) for m, args in passes]
                if not _reproduces(core, traced, d, gen):
                    return None
        finally:
            core.train(was_training)
        return cls(*traced, weights_key(core))


def _reproduces(core: nn.Module, traced: list, d: int, gen: torch.Generator) -> bool:
    """Whether the traced passes give the eager layers' outputs (1e-5) on other batch sizes and token counts."""
    for b, k, q in ((2, 9, 3), (1, 1, 1), (3, 17, 30)):
        tok, qry = torch.randn(b, k, d, generator=gen), torch.randn(b, q, d, generator=gen)
        memory = _EncoderPass(core)(tok)
        kv = [x for pair in core.memory_kv(memory) for x in pair]
        want = _DecoderPass(core, False)(qry, memory)
        if not _close((traced[0](tok), traced[1](qry, memory), traced[2](qry, *kv)), (memory, want, want)):
            return False
    return True


def inference_only(module: nn.Module, x: torch.Tensor) -> bool:
    """Whether a traced copy may serve this call of ``module`` (``x``: one of its inputs): float32 CPU inference,
    without gradients, in eval mode."""
    return not (module.training or torch.is_grad_enabled() or x.dtype != torch.float32 or x.is_cuda)


class _Method(nn.Module):
    """A module's method of tensors as a module's forward, which ``torch.jit.trace`` takes."""

    def __init__(self, owner: nn.Module, name: str):
        super().__init__()
        self.owner, self.name = owner, name

    def forward(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return getattr(self.owner, self.name)(*args)


class TracedMethod:
    """Inference arithmetic around a core (a model's head) run as the core runs its layers (:class:`TracedPasses`):
    through a copy traced with ``torch.jit.trace`` and frozen, without Python's cost per operation.

    ``method``: a module's method that takes tensors and returns a tuple of them, with no branch on their values or
    shapes (its caller keeps any other call eager); ``examples()``: inputs of a few shapes; ``key()``: what it reads,
    compared by value (the :func:`weights_key` of its weights; a model's config, which its traced branches and
    constants came from). Once :attr:`on_first_use` is set (a loaded model file) the first call that may use it traces
    it on the first example, kept only if it gives the method's outputs on the others (1e-5); it serves float32 CPU
    inference without gradients, in eval mode, while the key is the one it was traced with. A plain attribute of the
    module, not a submodule: not in state dicts."""

    def __init__(self, method: Callable[..., tuple[torch.Tensor, ...]],
                 examples: Callable[[], list[tuple[torch.Tensor, ...]]], key: Callable[[], tuple]):
        self.method, self.examples, self.key = method, examples, key
        self.on_first_use = False
        self.traced: torch.jit.ScriptModule | None = None
        self.traced_key: tuple = ()
        self._failed = False

    def trace(self) -> bool:
        """Trace the method from the current weights; False, leaving it unset, when the traced copy does not
        reproduce the method on the examples it was not traced on."""
        self.traced = None
        owner = self.method.__self__
        method = _Method(owner, self.method.__name__)
        examples = self.examples()
        was_training = owner.training
        try:
            with TRACING, torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")  # tracer warnings about Python values: the check below decides
                traced = torch.jit.freeze(torch.jit.trace(method.eval(), examples[0], check_trace=False))
                ok = all(_close(traced(*x), method(*x)) for x in examples[1:])
        finally:
            owner.train(was_training)
        self._failed = not ok
        if ok:  # the key first (a copy: a config changed in place must differ), then the copy it belongs to
            self.traced_key = copy.deepcopy(self.key())
            self.traced = traced
        return ok

    def serving(self, x: torch.Tensor) -> torch.jit.ScriptModule | None:
        """The traced copy when it may serve this call (``x``: one of the inputs), traced first where
        :attr:`on_first_use` allows; None: run the method eager."""
        if not inference_only(self.method.__self__, x):
            return None
        if self.traced is None and self.on_first_use and not self._failed:
            with TRACING:  # another thread may have traced it meanwhile
                if self.traced is None and not self._failed:
                    self.trace()
        t = self.traced
        return t if t is not None and self.traced_key == self.key() else None


def _close(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...]) -> bool:
    """Whether traced outputs are the eager ones: the same shapes, the same values to 1e-5."""
    return all(g.shape == w.shape and torch.allclose(g, w, atol=1e-5, rtol=1e-5)
               for g, w in zip(got, want, strict=True))
