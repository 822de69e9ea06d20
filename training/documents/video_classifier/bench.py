"""The video classifier's ablation tables, from finished ``anyfill train video-classifier`` runs."""

from __future__ import annotations

import json
from pathlib import Path

# the classifier's three ablation tables: title -> rows; a row lists named configs with identical settings
# (the 8-block cross-attention model with one self-attention layer is a row of all three tables), and the
# first of them that has a finished run fills the row, so that model is trained once
_REF = ("attn-depth-1", "cnn-blocks-8", "head-cross")
ABLATIONS: dict[str, tuple[tuple[str, ...], ...]] = {
    "attention depth (self-attention layers after 4 queries' cross-attention; 8 CNN blocks)":
        (("attn-depth-0",), _REF, ("attn-depth-2",), ("attn-depth-4",)),
    "CNN depth (blocks kept; cross-attention head with 1 self-attention layer)":
        (("cnn-blocks-8", *_REF), ("cnn-blocks-7",), ("cnn-blocks-6",), ("cnn-blocks-4",)),
    "cross- versus self-attention (8 CNN blocks)":
        (("head-cross", *_REF), ("head-self",), ("head-pool", "baseline")),
}


def ablation_tables(runs_root: str | Path) -> str:
    """Markdown tables of ``video-classifier`` runs in ``RUNS_ROOT/<named config>/results.json``."""
    out = []
    fmt = lambda v: "n/a" if v is None else f"{v:.3f}"  # noqa: E731
    for title, rows in ABLATIONS.items():
        out += [f"**{title}**", "", "| config | train loss | val loss | val acc | CNN params | attention params |",
                "|---|---|---|---|---|---|"]
        for names in rows:
            found = [f for f in (Path(runs_root) / n / "results.json" for n in names) if f.is_file()]
            if not found:
                out.append(f"| {names[0]} | not run | | | | |")
                continue
            r = json.loads(found[0].read_text())
            out.append(f"| {names[0]} | {fmt(r['train_loss'])} | {fmt(r['val_loss'])} | {fmt(r['val_acc'])} | "
                       f"{r['params']['cnn']:,} | {r['params']['attention']:,} |")
        out.append("")
    return "\n".join(out)
