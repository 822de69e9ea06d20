"""Any-order generation and scoring for the pixel model: the thesis's four sampling orders.

Orders: ``raster`` (left to right, top to bottom), ``random`` (a seeded permutation), ``lowest-entropy``
and ``highest-entropy`` (at each step, the unknown cell whose predicted distribution has the lowest or
highest entropy goes next). ``per_step`` cells are filled per step (1 is the thesis's exact procedure;
more cells per step are sampled independently given the same context, which is faster and approximate).

The same loop either samples colours or, given the true colours (``score``), scores them: the sum of
-log p(colour of the next cell | cells so far) along the order is the image's negative log-likelihood
under that order (for an entropy order, the order is chosen from the model's entropies given the true
cells so far). A perfectly consistent model gives every order the same likelihood.

Conditional completion: cells given in ``known`` keep their colours; only the others are visited.

Queried cells: the entropy orders must query every unknown cell at every step (to choose the next one
by its entropy); the fixed orders query only the next cells, unless ``query_unknown``. For a decoder
whose queries see each other that changes the distributions, so a fair comparison of orders queries
the same cells in every order (``query_unknown=True``); for the independent (pure-query) decoder, and
for the triples variant, whose candidates are scored side by side, it changes nothing.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from training.documents.commands import PIXEL_ORDERS as ORDERS  # the command line lists them too
from training.documents.pixels.model import PixelAnyOrder


@dataclass
class OrderResult:
    """Colours (B, N) of every cell, the cells visited in order (B, N - known), and the summed
    -log p of the visited cells' colours (B,) in nats."""

    colours: torch.Tensor
    visited: torch.Tensor
    nll: torch.Tensor


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy (nats) of categorical distributions given by logits (..., C)."""
    logp = F.log_softmax(logits, dim=-1)
    return -(logp.exp() * logp).sum(-1)


def _rows(mask: torch.Tensor) -> torch.Tensor:
    """Column indices of the True entries of a (B, N) mask with the same count in every row -> (B, K)."""
    counts = mask.sum(1)
    if not bool((counts == counts[0]).all()):
        raise ValueError("every image must have the same number of known cells")
    return mask.nonzero()[:, 1].view(mask.shape[0], int(counts[0]))


def _integer(value: object) -> int | None:
    """``value`` as an int when it is an integer (not a bool), else None."""
    if isinstance(value, bool):
        return None
    try:
        return operator.index(value)
    except TypeError:
        return None


def _positive_finite(value: object) -> bool:
    try:
        return math.isfinite(float(value)) and float(value) > 0
    except (TypeError, ValueError):
        return False


@torch.no_grad()
def run_order(model: PixelAnyOrder, order: str, n: int | None = None, *, image: torch.Tensor | None = None,
              known: torch.Tensor | None = None, score: bool = False, per_step: int = 1,
              temperature: float = 1.0, seed: int = 0, query_unknown: bool = False) -> OrderResult:
    """Visit every unknown cell in ``order`` and sample its colour; with ``score``, take its colour from
    ``image`` (B, N) instead and score it. ``known`` (B, N) bool marks cells of ``image`` that are given
    (conditional completion: they keep their colours and are not visited). ``n`` is the batch size when
    there is no ``image``. ``query_unknown``: fixed orders query every unknown cell too, as the entropy
    orders do, and take the next cells' distributions from that pass (query variant)."""
    if order not in ORDERS:
        raise ValueError(f"unknown order {order!r}; expected one of {', '.join(ORDERS)}")
    # guards for every caller: per_step < 1 would never advance the loop below, the others fail deep inside
    if _integer(per_step) is None or per_step < 1:
        raise ValueError(f"per_step must be an integer >= 1 (cells filled per step), got {per_step!r}")
    if not score and not _positive_finite(temperature):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if image is None and (_integer(n) is None or n < 1):
        raise ValueError(f"n (images to sample) must be an integer >= 1, got {n!r}")
    model.eval()
    dev = model.coords.device
    cells = model.n_cells
    if (score or known is not None) and image is None:
        raise ValueError("scoring and conditional completion need an image")
    b = image.shape[0] if image is not None else int(n)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    colours = torch.full((b, cells), -1, dtype=torch.long, device=dev)
    is_known = torch.zeros(b, cells, dtype=torch.bool, device=dev)
    if known is not None:
        is_known = known.to(dev).clone()
        colours[is_known] = image.to(dev)[is_known].long()
    n_todo = cells - int(is_known[0].sum()) if b else 0
    fixed = None
    if order in ("raster", "random"):
        rank = torch.arange(cells, device=dev).float().expand(b, cells)
        if order == "random":
            rank = torch.rand(b, cells, generator=gen).to(dev)
        rank = rank.masked_fill(is_known, float("inf"))
        fixed = rank.argsort(dim=1)[:, :n_todo]
    visited = torch.zeros(b, 0, dtype=torch.long, device=dev)
    nll = torch.zeros(b, device=dev)
    state = _TriplesState(model, colours, is_known) if model.cfg.variant == "triples" else None
    while visited.shape[1] < n_todo:
        k = min(per_step, n_todo - visited.shape[1])
        cand = fixed[:, visited.shape[1] : visited.shape[1] + k] if fixed is not None else _rows(~is_known)
        if state is not None:
            logits = state.scores(cand)
        else:
            kn = _rows(is_known)
            if fixed is not None and query_unknown:  # the same queries as an entropy order's step
                unknown = _rows(~is_known)  # ascending cell indices, so cand's places are a search away
                every = model.query_logits(kn, colours.gather(1, kn), unknown)
                at = torch.searchsorted(unknown, cand.contiguous())
                logits = every.gather(1, at[..., None].expand(-1, -1, every.shape[-1]))
            else:
                logits = model.query_logits(kn, colours.gather(1, kn), cand)
        if fixed is None:  # entropy orders: keep the k lowest (or highest) entropy candidates
            pick = entropy(logits).argsort(dim=1, descending=order == "highest-entropy")[:, :k]
            cand = cand.gather(1, pick)
            logits = logits.gather(1, pick[..., None].expand(-1, -1, logits.shape[-1]))
        logp = F.log_softmax(logits, dim=-1)
        if score:
            chosen = image.to(dev).long().gather(1, cand)
        else:
            probs = F.softmax(logits / temperature, dim=-1).reshape(-1, logits.shape[-1]).cpu()
            chosen = torch.multinomial(probs, 1, generator=gen).view(b, k).to(dev)
        nll -= logp.gather(2, chosen[..., None])[..., 0].sum(1)
        colours.scatter_(1, cand, chosen)
        is_known.scatter_(1, cand, True)
        visited = torch.cat([visited, cand], 1)
        if state is not None:
            state.append(cand, chosen)
    return OrderResult(colours=colours, visited=visited, nll=nll)


class _TriplesState:
    """The key/value cache of the triples variant during generation: the known cells form the prefix,
    each filled cell is fed back as the input of the next triple."""

    def __init__(self, model: PixelAnyOrder, colours: torch.Tensor, is_known: torch.Tensor) -> None:
        self.model = model
        b = colours.shape[0]
        self.cache = None
        self.last = model.start_tokens(b)
        if bool(is_known.any()):
            kn = _rows(is_known)
            self.append(kn, colours.gather(1, kn))

    def scores(self, cand: torch.Tensor) -> torch.Tensor:
        """Logits (B, U, C) of each candidate cell as the next step, side by side."""
        inp = self.last.expand(-1, cand.shape[1], -1)
        logits, _ = self.model.triples_step(inp, cand, self.cache, independent=True)
        return logits

    def append(self, cells: torch.Tensor, colours: torch.Tensor) -> None:
        """Feed filled cells (B, S) in order: triples (last -> cells[0]), (cells[0] -> cells[1]), ..."""
        tokens = self.model.input_tokens(cells, colours)
        inp = torch.cat([self.last, tokens[:, :-1]], 1)
        _, self.cache = self.model.triples_step(inp, cells, self.cache)
        self.last = tokens[:, -1:]


def summary(colours: np.ndarray) -> dict[str, float]:
    """Brightness (mean colour index) and background fraction (share of colour 0) of images (B, N)."""
    return {"brightness": float(colours.mean()), "background": float((colours == 0).mean())}
