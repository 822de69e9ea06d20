"""``anyfill bench speed --against DIR``: the speed bench of this code beside another source tree's, in interleaved
rounds of fresh processes.

Why: this project's machine drifts by a fifth within an hour and by more within a minute, so two speed numbers
measured apart say little about two versions of the code. Each round runs ``anyfill bench speed`` once with the
other tree (``DIR``, a checkout or a ``git archive`` of another commit, first on ``PYTHONPATH``) and once with this
code, each in a fresh process from a neutral folder, one right after the other; the report gives every round, the
median of the rounds' medians, and each round's ratio of this code's time to the other's, which the drift moves
less than either number.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from training.motion.splits import DATA_ENV, data_root

SIDES = ("other", "this")


def run(against: str | Path, rounds: int, speed_args: list[str], root: str | Path | None = None) -> dict:
    """``rounds`` interleaved pairs of ``anyfill bench speed SPEED_ARGS`` runs: the source tree ``against`` first,
    then this code. Refuses a folder that is not a source tree of this project (no ``anyfill/cli.py``)."""
    other = Path(against).resolve()
    if not (other / "anyfill" / "cli.py").is_file():
        raise ValueError(f"--against {against}: not a source tree of anyfill (no anyfill/cli.py there)")
    if rounds < 1:
        raise ValueError(f"--rounds must be at least 1, got {rounds}")
    env = dict(os.environ, **{DATA_ENV: str(data_root(root))})
    runs: dict[str, list[dict]] = {side: [] for side in SIDES}
    with tempfile.TemporaryDirectory(prefix="anyfill-speed-") as neutral:  # not this checkout: `-m` reads the cwd
        for _ in range(rounds):
            for side in SIDES:
                path = Path(neutral) / f"{side}.json"
                side_env = dict(env)
                if side == "other":
                    side_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(other), env.get("PYTHONPATH")]))
                done = subprocess.run([sys.executable, "-m", "anyfill.cli", "bench", "speed", *speed_args,
                                       "--json", str(path)], cwd=neutral, env=side_env, capture_output=True,
                                      text=True)
                if done.returncode != 0:
                    tail = "\n".join((done.stderr or done.stdout).strip().splitlines()[-5:])
                    raise RuntimeError(f"bench speed of {'--against ' + str(other) if side == 'other' else 'this code'}"
                                       f" failed (status {done.returncode}):\n{tail}")
                runs[side].append(json.loads(path.read_text()))
    return {"against": str(other), "rounds": rounds, "args": speed_args, "runs": runs, "summary": summary(runs)}


def summary(runs: dict[str, list[dict]]) -> dict:
    """Per measure (each model's window, the sample): each side's median of the rounds' medians and fastest run,
    and the range of this code's time over the other's, round by round."""
    out = {}
    first = runs["this"][0]
    measures = [("fill_ms", sk) for sk in first["fill_ms"]] + [("sample_s", sk) for sk in first["sample_s"]]
    for kind, sk in measures:
        med = {side: [r[kind][sk]["median"] for r in runs[side]] for side in SIDES}
        row = {f"{side}_median": statistics.median(med[side]) for side in SIDES}
        if kind == "fill_ms":
            row.update({f"{side}_fastest": [r[kind][sk]["min"] for r in runs[side]] for side in SIDES})
        ratios = [t / o for t, o in zip(med["this"], med["other"], strict=True)]
        row.update(ratio_min=min(ratios), ratio_max=max(ratios), ratios=ratios)
        out[f"{kind}/{sk}"] = row
    return out


def format_table(result: dict) -> str:
    unit = {"fill_ms": "ms", "sample_s": "s"}
    lines = [f"speed, {result['rounds']} interleaved rounds of fresh processes (bench speed "
             f"{' '.join(result['args'])}): --against {result['against']} then this code",
             "| measure | other, median of rounds | this code | this / other, round by round |",
             "| --- | --- | --- | --- |"]
    for key, row in result["summary"].items():
        kind, sk = key.split("/")
        what = f"fill {sk} window" if kind == "fill_ms" else f"sample {sk}"
        fmt = ".1f" if kind == "fill_ms" else ".2f"
        lines.append(f"| {what} | {row['other_median']:{fmt}} {unit[kind]} | {row['this_median']:{fmt}} {unit[kind]} "
                     f"| {row['ratio_min']:.2f}-{row['ratio_max']:.2f} |")
    return "\n".join(lines)
