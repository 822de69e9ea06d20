"""``anyfill bench speed --against DIR``: the speed bench of this code beside another source tree, interleaved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anyfill.cli import main as cli
from training.bench import interleaved

ROOT = Path(__file__).resolve().parents[1]


def _run(fill: dict[str, float], sample: float) -> dict:
    return {"fill_ms": {sk: {"median": ms, "min": ms - 0.5, "max": ms + 1.0} for sk, ms in fill.items()},
            "sample_s": {"hand": {"median": sample}}}


def test_summary_pairs_the_rounds():
    """Each side's median of its rounds' medians, the fastest windows, and this code's time over the other's round
    by round (the drift between rounds cancels in the ratio)."""
    runs = {"other": [_run({"body": 10.0, "hand": 12.0}, 2.0), _run({"body": 14.0, "hand": 16.0}, 3.0),
                      _run({"body": 12.0, "hand": 14.0}, 2.5)],
            "this": [_run({"body": 8.0, "hand": 9.0}, 2.0), _run({"body": 7.0, "hand": 12.0}, 2.7),
                     _run({"body": 12.0, "hand": 7.0}, 2.5)]}
    out = interleaved.summary(runs)
    body = out["fill_ms/body"]
    assert body["other_median"] == 12.0 and body["this_median"] == 8.0
    assert body["ratios"] == [0.8, 0.5, 1.0] and (body["ratio_min"], body["ratio_max"]) == (0.5, 1.0)
    assert body["this_fastest"] == [7.5, 6.5, 11.5]
    assert out["sample_s/hand"]["ratios"] == pytest.approx([1.0, 0.9, 1.0])
    table = interleaved.format_table({"rounds": 3, "args": ["--threads", "1"], "against": "/x", "summary": out})
    assert "| fill body window | 12.0 ms | 8.0 ms | 0.50-1.00 |" in table
    assert "| sample hand | 2.50 s | 2.50 s | 0.90-1.00 |" in table


def test_against_refuses_a_folder_that_is_not_a_source_tree(tmp_path, capsys):
    assert cli(["bench", "speed", "--against", str(tmp_path)]) == 2
    assert f"--against {tmp_path}: not a source tree of anyfill" in capsys.readouterr().err
    with pytest.raises(ValueError, match="--rounds must be at least 1"):
        interleaved.run(ROOT, 0, [])


@pytest.mark.slow
def test_against_this_tree_runs_both_sides_in_fresh_processes(tmp_path, data_root):
    """One round against this very checkout: both sides' numbers come from real runs of the bench (each a fresh
    process), written as JSON beside the table."""
    out = tmp_path / "speed.json"
    assert cli(["bench", "speed", "--against", str(ROOT), "--rounds", "1", "--repeats", "2", "--threads", "1",
                "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["rounds"] == 1 and set(result["runs"]) == {"other", "this"}
    for side in ("other", "this"):
        (run,) = result["runs"][side]
        assert set(run["fill_ms"]) == {"body", "hand"} and run["fill_ms"]["body"]["median"] > 0
        assert run["sample_s"]["hand"]["median"] > 0
    assert result["summary"]["fill_ms/body"]["ratio_min"] > 0
