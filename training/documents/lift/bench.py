"""``anyfill bench lift``: the CS764 report's four LiftModel tables, trained and scored on our data.

One setting is varied at a time from a base setting (the lift task's defaults: dropout 0.5, our learning
rate 0.001, hidden size 1024, two residual blocks; with ``--named report`` the report's schedule and its
learning rate 0.1): dropout (0, 0.5, 0.9999), learning rate (0.001, 0.1, 1), hidden size (256, 512,
1024) and residual blocks (1, 2, 3). The four tables hold 12 rows but only 9 distinct runs: the base
setting appears once in every table and is trained once. Each run is an ordinary
``anyfill train lift`` run in ``RUNS_DIR/<name>`` (resumable), scored on the test split's files; a run
whose result is already on disk with the same settings is not trained again.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from training.bench.inbetween import write_json
from training.documents.commands import TABLES

# the swept setting (a field of the lift task's config) -> (table title, values)
RUN_FILE = "sweep_run.json"


def _fmt(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def setting(base: Any, field: str, value: float) -> tuple[str, Any]:
    """The run of one table row: its name ("base" for the base setting) and its config."""
    cfg = dataclasses.replace(base, **{field: type(getattr(base, field))(value)})
    return ("base" if cfg == base else f"{field}={_fmt(getattr(cfg, field))}"), cfg


def plan(base: Any, tables: Sequence[str] = tuple(TABLES)) -> list[tuple[str, Any]]:
    """The distinct runs of the chosen tables as (name, config), the base setting first."""
    runs = dict(setting(base, field, v) for field in tables for v in TABLES[field][1])
    return sorted(runs.items(), key=lambda kv: kv[0] != "base")


def _run_one(task: Any, cfg: Any, tcfg: Any, run_dir: Path) -> dict[str, Any]:
    """Train and score one setting, or read its result if this exact setting already finished."""
    from training.documents.lift.task import METRICS_FILE
    from training.train import fit

    settings = {"config": dataclasses.asdict(cfg), "trainer": dataclasses.asdict(tcfg)}
    done = run_dir / RUN_FILE
    if done.is_file():
        old = json.loads(done.read_text())
        if old.get("settings") == settings:
            return old
    t0 = time.perf_counter()
    fit(task, cfg, tcfg, run_dir)
    result = {
        "settings": settings,
        "wall_s": time.perf_counter() - t0,
        "test": json.loads((run_dir / METRICS_FILE).read_text()),
    }
    done.write_text(json.dumps(result, indent=2) + "\n")
    return result


def run(overrides: Sequence[str] = (), runs_dir: str | Path = "runs/lift-sweep", named: str | None = "quick",
        tables: Sequence[str] = tuple(TABLES)) -> dict[str, Any]:
    """Train every distinct run of the chosen tables (settings: the lift task's defaults, then ``named``,
    then ``key=value`` overrides, then the swept value) and collect their test scores."""
    from training import tasks  # noqa: F401 - registers the built-in models
    from training.train import get_task, resolve_configs

    task = get_task("lift")
    base, tcfg = resolve_configs(task, None, named, list(overrides))
    runs = plan(base, tables)
    results: dict[str, Any] = {}
    for i, (name, cfg) in enumerate(runs, 1):
        print(f"lift sweep: run {i}/{len(runs)} {name}", file=sys.stderr, flush=True)
        results[name] = _run_one(task, cfg, tcfg, Path(runs_dir) / name)
        t = results[name]["test"]
        print(f"lift sweep: {name}: MPJPE {t['mpjpe_mm']:.1f} mm, PA-MPJPE {t['pa_mpjpe_mm']:.1f} mm, "
              f"{results[name]['wall_s']:.0f} s", file=sys.stderr, flush=True)
    rows: dict[str, list[dict[str, Any]]] = {}
    for field in tables:
        title, values = TABLES[field]
        rows[title] = []
        for v in values:
            name = setting(base, field, v)[0]
            r = results[name]
            rows[title].append({"value": v, "run": name, "mpjpe_mm": r["test"]["mpjpe_mm"],
                                "pa_mpjpe_mm": r["test"]["pa_mpjpe_mm"], "wall_s": r["wall_s"]})
    return {"base": dataclasses.asdict(base), "trainer": dataclasses.asdict(tcfg), "tables": rows,
            "runs": results}


def format_tables(result: dict[str, Any]) -> str:
    """The tables as Markdown: one per varied setting, test MPJPE and PA-MPJPE in mm and training time."""
    out = []
    for table, rows in result["tables"].items():
        out += [f"| {table} | MPJPE (mm) | PA-MPJPE (mm) | train + test time (s) |", "| --- | --- | --- | --- |"]
        out += [f"| {_fmt(r['value'])} | {r['mpjpe_mm']:.1f} | {r['pa_mpjpe_mm']:.1f} | {r['wall_s']:.0f} |"
                for r in rows]
        out.append("")
    return "\n".join(out)


def main(args: argparse.Namespace) -> int:
    """``anyfill bench lift`` (its arguments: :mod:`training.documents.commands`)."""
    result = run(args.overrides, args.runs_dir, args.named or None, args.tables)
    print(format_tables(result))
    if args.json:
        write_json(result, args.json)
        print(f"wrote {args.json}")
    return 0
