"""The any-order pixel model: MNIST and k-means quantisation, both variants, the four orders, completion."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch

from training.documents import mnist
from training.documents.pixels import sampling as ps
from training.documents.pixels.model import PixelAnyOrder, PixelConfig
from training.documents.pixels.task import order_loss
from training.inbetween.config import AnyOrderConfig

SIDE = 8  # small images keep every order's loop fast; the model does not depend on the side


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread: on a busy 2-core machine, two threads on tiny models spin for minutes."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_model(variant: str, seed: int = 0) -> PixelAnyOrder:
    torch.manual_seed(seed)
    core = AnyOrderConfig(d_model=32, n_heads=4, n_enc_layers=1, n_dec_layers=1, dropout=0.0, n_freqs=6,
                          min_period=2 / SIDE, max_period=2.0)
    return PixelAnyOrder(PixelConfig(variant=variant, side=SIDE, core=core))


def test_kmeans_recovers_clusters_and_quantisation_round_trips():
    rng = np.random.default_rng(0)
    true = np.array([3.0, 70.0, 150.0, 240.0])
    values = np.concatenate([rng.normal(c, 4.0, 5000) for c in true]).clip(0, 255).round().astype(np.uint8)
    centres = mnist.kmeans_1d(values)
    assert np.all(np.diff(centres) > 0)
    np.testing.assert_allclose(centres, true, atol=1.0)
    idx = rng.integers(0, 4, size=(5, 28, 28)).astype(np.uint8)
    np.testing.assert_array_equal(mnist.quantise(mnist.dequantise(idx, centres), centres), idx)
    img = values[:100]
    q = mnist.quantise(img, centres)
    # each pixel goes to its nearest centre
    assert np.all(np.abs(img - centres[q]) <= np.abs(img[:, None] - centres[None]).min(1) + 1e-9)


def test_mnist_split_and_colours(data_root):
    train, train_labels = mnist.load("train", data_root)
    test, _ = mnist.load("test", data_root)
    assert train.shape == (9000, 28, 28) and test.shape == (1000, 28, 28) and train.dtype == np.uint8
    assert set(np.unique(train_labels)) == set(range(10))
    centres = mnist.kmeans_1d(train)
    assert centres[0] < 5 and centres[-1] > 230  # black background, white strokes
    q = mnist.quantise(test, centres)
    assert 0.7 < (q == 0).mean() < 0.95


def test_png_grid_round_trip(tmp_path):
    imgs = np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5)
    g = mnist.grid(imgs, cols=2, pad=1, background=7)
    assert g.shape == (2 * 5 + 1, 2 * 6 + 1)
    np.testing.assert_array_equal(g[1:5, 7:12], imgs[1])
    assert g[0, 0] == 7 and g[6:10, 7:12].max() == 7  # padding and the empty fourth tile
    path = tmp_path / "g.png"
    mnist.write_png(path, g)
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    w, h = struct.unpack(">II", data[16:24])
    assert (h, w) == g.shape
    idat = data.index(b"IDAT")
    n = struct.unpack(">I", data[idat - 4 : idat])[0]
    raw = np.frombuffer(zlib.decompress(data[idat + 4 : idat + 4 + n]), dtype=np.uint8).reshape(h, w + 1)
    np.testing.assert_array_equal(raw[:, 1:], g)


@pytest.mark.parametrize("variant", ["query", "triples"])
@pytest.mark.parametrize("order", ps.ORDERS)
def test_every_order_visits_each_pixel_once(variant, order):
    model = tiny_model(variant)
    for per_step in (1, 5):
        r = ps.run_order(model, order, 3, per_step=per_step, seed=1)
        assert r.visited.shape == (3, SIDE * SIDE)
        assert torch.equal(r.visited.sort(1).values, torch.arange(SIDE * SIDE).expand(3, -1))
        assert r.colours.min() >= 0 and r.colours.max() < 4 and torch.isfinite(r.nll).all()
    if order == "raster":
        assert torch.equal(r.visited[0], torch.arange(SIDE * SIDE))


@pytest.mark.parametrize("variant", ["query", "triples"])
@pytest.mark.parametrize("order", ps.ORDERS)
def test_conditional_completion_keeps_the_given_pixels(variant, order):
    model = tiny_model(variant)
    truth = torch.randint(0, 4, (2, SIDE * SIDE), generator=torch.Generator().manual_seed(2))
    known = torch.zeros(2, SIDE * SIDE, dtype=torch.bool)
    known[:, : SIDE * SIDE // 2] = True  # the top half
    for score in (False, True):
        r = ps.run_order(model, order, image=truth, known=known, score=score, seed=3)
        assert torch.equal(r.colours[known], truth[known])
        assert torch.equal(r.visited.sort(1).values, torch.arange(SIDE * SIDE // 2, SIDE * SIDE).expand(2, -1))
        assert score == torch.equal(r.colours, truth)  # scoring keeps the image, sampling draws new colours


def test_entropy_orders_pick_by_entropy():
    """Lowest-entropy-first visits the cells in increasing entropy when nothing else changes (a model
    whose prediction ignores the known cells)."""
    model = tiny_model("query")
    with torch.no_grad():
        for p in model.core.parameters():
            p.zero_()
    first_logits = model.query_logits(torch.zeros(1, 0, dtype=torch.long), torch.zeros(1, 0, dtype=torch.long),
                                      torch.arange(SIDE * SIDE)[None])
    ent = ps.entropy(first_logits)[0]
    low = ps.run_order(model, "lowest-entropy", 1).visited[0]
    high = ps.run_order(model, "highest-entropy", 1).visited[0]
    assert ent[low[0]] == ent.min() and ent[high[0]] == ent.max()
    assert torch.all(ent[low].diff() >= -1e-6) and torch.all(ent[high].diff() <= 1e-6)


def test_triples_cache_matches_teacher_forcing():
    """The incremental, cached likelihood of an order equals the one-pass teacher-forced likelihood."""
    model = tiny_model("triples").eval()
    truth = torch.randint(0, 4, (3, SIDE * SIDE), generator=torch.Generator().manual_seed(0))
    r = ps.run_order(model, "random", image=truth, score=True, seed=4)
    cols = truth.gather(1, r.visited)
    logp = torch.log_softmax(model.triples_logits(r.visited, cols), -1)
    torch.testing.assert_close(r.nll, -logp.gather(2, cols[..., None])[..., 0].sum(1), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("variant", ["query", "triples"])
def test_overfits_a_tiny_batch(variant):
    model = tiny_model(variant)
    gen = torch.Generator().manual_seed(0)
    batch = torch.randint(0, 4, (2, SIDE * SIDE), generator=gen)  # two random 4-colour images
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = order_loss(model, batch, torch.Generator().manual_seed(99)).item()
    for _ in range(300):
        loss = order_loss(model, batch, gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    losses = [order_loss(model, batch, torch.Generator().manual_seed(s)).item() for s in range(8)]
    assert first > 1.2 and np.mean(losses) < 0.4 * first


def test_independent_decoder_target_does_not_depend_on_other_queries():
    """The thesis's pure-query decoder: a target's distribution is the same whichever other cells are
    queried with it (alone, among a few, among every unknown cell, in any order); with queries that see
    each other it changes (so the check has teeth)."""
    gen = torch.Generator().manual_seed(5)
    known = torch.randperm(SIDE * SIDE, generator=gen)[:20][None]
    colours = torch.randint(0, 4, (1, 20), generator=gen)
    others = torch.tensor([c for c in range(SIDE * SIDE) if c not in set(known[0].tolist())])
    target = others[:1][None]
    for independent, same in ((True, True), (False, False)):
        model = tiny_model("query")
        model.cfg.independent = independent
        with torch.no_grad():
            alone = model.query_logits(known, colours, target)[0, 0]
            few = model.query_logits(known, colours, others[[7, 0, 3]][None])[0, 1]
            every = model.query_logits(known, colours, others.flip(0)[None])[0, -1]
        assert torch.allclose(alone, few, atol=1e-5) == same
        assert torch.allclose(alone, every, atol=1e-5) == same


@pytest.mark.parametrize("independent", [True, False])
def test_query_unknown_scoring(independent):
    """Scoring a fixed order while querying every unknown cell (as the entropy orders must) gives the
    independent decoder's likelihood unchanged, and the cross-talking decoder's a different one."""
    model = tiny_model("query")
    model.cfg.independent = independent
    truth = torch.randint(0, 4, (2, SIDE * SIDE), generator=torch.Generator().manual_seed(6))
    one = ps.run_order(model, "random", image=truth, score=True, seed=2)
    every = ps.run_order(model, "random", image=truth, score=True, seed=2, query_unknown=True)
    assert torch.equal(one.visited, every.visited)
    assert torch.allclose(one.nll, every.nll, rtol=1e-5) == independent


@pytest.mark.slow  # about 15 s: trains the digit classifier of the class check
def test_digit_classifier_reads_the_test_digits(data_root):
    """The class check of samples per order rests on a classifier that reads 4-colour digits."""
    from training.documents.pixels import bench
    from training.documents.pixels.task import PixelTaskConfig, quantised_splits

    cfg = PixelTaskConfig(data_root=str(data_root))
    centres, sets = quantised_splits(cfg)
    net, acc = bench.digit_classifier(cfg, centres, epochs=1)
    assert acc > 0.9
    shares = bench.class_shares(net, torch.from_numpy(sets["test"][:100]))
    assert len(shares) == 10 and abs(sum(shares) - 1) < 1e-6 and max(shares) < 0.3  # every class, none dominant
