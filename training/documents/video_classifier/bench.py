"""The video classifier's ablation tables, the document's figures beside ours, from finished runs.

``python -m training.documents.video_classifier.bench RUNS_ROOT`` reads ``RUNS_ROOT/<seed folder>/<named
config>/results.json`` (one folder per training seed, any names) and prints the document's three tables
with our mean and spread over the seeds beside each row, and our parameter counts at the document's
sizes (R(2+1)D-18 at width 64 on RGB, 51 HMDB51 classes; counted on the meta device, nothing trained).
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

# the document's rows: (its architecture, train loss, val loss, val acc, CNN params, attention params) and
# the named config that has the same structure
DOC_ROWS: dict[str, tuple[str, float, float, float, str, str]] = {
    "attn-depth-6": ("8 CNN blocks + 1 Cross + 6 Self", 0.00676, 1.585, 0.6673, "31.3M", "28.6M"),
    "attn-depth-2": ("8 CNN blocks + 1 Cross + 2 Self", 0.02675, 1.484, 0.6745, "31.3M", "11.8M"),
    "attn-depth-1": ("8 CNN blocks + 1 Cross + 1 Self", 0.1199, 1.271, 0.7034, "31.3M", "7.6M"),
    "baseline": ("Baseline - R(2+1)D", 0.5385, 1.118, 0.7270, "31.5M", "0"),
    "cnn-blocks-7": ("7 CNN blocks + 1 Cross + 1 Self", 0.2204, 1.856, 0.6437, "17.1M", "7.6M"),
    "cnn-blocks-6": ("6 CNN blocks + 1 Cross + 6 Self", 0.0071, 2.005, 0.5827, "7.8M", "28.6M"),
    "cnn-blocks-4": ("4 CNN blocks + 1 Cross + 6 Self", 0.9097, 2.342, 0.4062, "1.9M", "28.6M"),
    "cnn-blocks-4-2c": ("4 CNN blocks + 2 Cross + 12 Self", 2.715, 3.22, 0.2815, "1.9M", "57.2M"),
    "cross-only": ("8 CNN blocks + 1 Cross", 0.2096, 1.368, 0.7047, "31.3M", "3.4M"),
    "self-only": ("8 CNN blocks + 1 Self", 0.0205, 1.215, 0.6752, "31.3M", "4.2M"),
}
TABLES: dict[str, tuple[str, ...]] = {
    "attention depth": ("attn-depth-6", "attn-depth-2", "attn-depth-1", "baseline"),
    "CNN depth": ("attn-depth-1", "cnn-blocks-7", "cnn-blocks-6", "cnn-blocks-4", "cnn-blocks-4-2c", "baseline"),
    "cross and self attention": ("attn-depth-1", "cross-only", "self-only"),
}


def document_size_params(name: str) -> dict[str, int]:
    """Our CNN and attention (+ classifier) parameters for a row at the document's sizes."""
    import torch

    from training.documents.video_classifier.model import VideoClassifier, VideoClassifierConfig
    from training.documents.video_classifier.task import _NAMED

    row = {k: v for k, v in _NAMED[name].items() if k in ("head", "blocks", "n_cross", "n_self")}
    with torch.device("meta"):
        counts = VideoClassifier(VideoClassifierConfig(n_classes=51, in_channels=3, width=64, **row)).param_counts()
    return {"cnn": counts["cnn"], "attention": counts["attention"] + (counts["classifier"] if row["head"] != "pool"
                                                                      else 0)}


def collect(runs_root: str | Path) -> dict[str, list[dict]]:
    """Named config -> results of its finished runs (one per seed folder)."""
    out: dict[str, list[dict]] = {}
    for f in sorted(Path(runs_root).glob("*/*/results.json")):
        out.setdefault(f.parent.name, []).append(json.loads(f.read_text()))
    return out


def _stat(values: list[float]) -> str:
    if not values:
        return "not run"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}"


def ablation_tables(runs_root: str | Path) -> str:
    """Markdown: per table, the document's row and ours (mean ± sample standard deviation over seeds, the
    seed count, each seed's accuracy), our parameter counts in the runs and at the document's sizes."""
    runs = collect(runs_root)
    out = []
    m = lambda n: f"{n / 1e6:.1f}M" if n >= 1e5 else f"{n / 1e3:.0f}k" if n else "0"  # noqa: E731
    for title, names in TABLES.items():
        out += [f"**{title}**", "",
                "| row | document: train loss / val loss / val acc | ours: train loss | val loss | val acc "
                "| seeds: val acc | document: CNN / attention params | ours at its sizes | ours as run |",
                "|---|---|---|---|---|---|---|---|---|"]
        for name in names:
            arch, tl, vl, va, cnn, att = DOC_ROWS[name]
            rs = runs.get(name, [])
            get = lambda k, rs=rs: [r[k] for r in rs if r.get(k) is not None]  # noqa: E731
            doc_size = document_size_params(name)
            ran = (f"{m(rs[0]['params']['cnn'])} / {m(rs[0]['params']['attention'])}" if rs else "")
            seeds = ", ".join(f"{a:.3f}" for a in get("val_acc"))
            out.append(f"| {arch} (`{name}`) | {tl} / {vl} / {va} | {_stat(get('train_loss'))} | "
                       f"{_stat(get('val_loss'))} | {_stat(get('val_acc'))} | {seeds} | {cnn} / {att} | "
                       f"{m(doc_size['cnn'])} / {m(doc_size['attention'])} | {ran} |")
        out.append("")
    return "\n".join(out)


if __name__ == "__main__":
    print(ablation_tables(sys.argv[1] if len(sys.argv) > 1 else "runs/video-classifier"))
