"""The main job end to end: the shipped models behind a real server, real clips filled over HTTP."""

import json

import pytest

from training.inbetween.checkpoint import load_model, read_card, shipped_models_dir
from training.motion import bvh

pytestmark = [pytest.mark.data, pytest.mark.slow]


@pytest.mark.parametrize("name", ["hand", "body"])
def test_shipped_models_load_and_their_cards_say_how_they_were_made(name):
    model, card = load_model(name)
    assert card["schema"]["name"] == name and model.cfg.skeleton == name
    assert (shipped_models_dir() / f"{name}.safetensors").stat().st_size <= 20 * 1024 * 1024
    card = read_card(shipped_models_dir() / f"{name}.safetensors")
    assert card["training"]["command"].startswith("anyfill train anyorder")
    gaps = card["metrics"]["inbetween"]["gaps"]
    assert set(gaps) == {"5", "15", "30", "45"} and all(v["L2Q"] > 0 for v in gaps.values())


def test_demo_fills_real_clips_through_the_server(data_root, tmp_path):
    from backend import demo

    results = demo.run(every=8, frames=41, out_dir=tmp_path)
    assert [r["skeleton"] for r in results] == ["body", "hand"]
    for r in results:
        assert r["keys_unchanged"], json.dumps(r)
        assert r["filled_frames"] == 41 - r["keys"]
        assert 0 <= r["position_error"] < 50 and r["interp_position_error"] >= 0
        out = bvh.read(r["output"])
        assert out.n_frames == 41
