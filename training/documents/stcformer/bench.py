"""``anyfill bench prediction``: the STCFormer report's motion-prediction benchmark on our test split.

From 10 observed frames (25 fps global joint positions of the Bandai test files, windows of 10 + 25
frames every ``stride`` frames, see :mod:`training.documents.stcformer.data`) predict the next 25. Scores:
A-MPJPE (mm, mean over the 25 output frames) and MPJPE at 80, 160, 320, 400, 560 and 1000 ms (that
frame only). A method is ``zero`` (zero-velocity: repeat the last observed frame) or a training run
folder of ``anyfill train sttformer|stcformer|stcformer-ar|convstgat|stacformer`` (or a checkpoint in
one). The autoregressive model is scored truly autoregressively, and every method's inference time on
the same windows is reported, so its cost can be compared with STCFormer's.

``attention_maps`` is the report's attention analysis: the softmaxed temporal (frame x frame) and
spatial (joint x joint) maps of the first encoder block of a trained criss-cross model, as PNG heat maps,
and the L1 distance between them.
"""

from __future__ import annotations

import json
import pickle
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from training.documents.stcformer import data as pdata
from training.train import run_paths


def load_run(path: str | Path, best: bool = False) -> tuple[str, Any, dict]:
    """The trained torch module of a run: (model name, module in eval mode, run config snapshot); with
    ``best``, the weights of its best validation epoch (``best-val.pt``) where the run kept them."""
    import torch

    from training.documents.stcformer.task import BEST_FILE, MODELS, build_model

    run_dir, ckpt = run_paths(path)
    if best and (run_dir / BEST_FILE).is_file():
        ckpt = run_dir / BEST_FILE
    snap = json.loads((run_dir / "config.json").read_text())
    name = snap.get("model")
    if name not in MODELS:
        raise ValueError(f"{run_dir}: model {name!r} is not a motion-prediction model ({', '.join(MODELS)})")
    model = build_model(name, snap["config"])
    try:
        saved = torch.load(ckpt, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch's text advises weights_only=False, which would run the file's code
        raise ValueError(f"{ckpt}: holds more than tensors and plain values (a checkpoint of an earlier anyfill "
                         "saved NumPy's random state as an array; its best-val.pt still reads)") from None
    state = saved["state_dict"]
    model.load_state_dict({k[len("model."):]: v for k, v in state.items() if k.startswith("model.")})
    snap["checkpoint"] = {"path": str(ckpt), "step": saved.get("global_step"), "epoch": saved.get("epoch"),
                          "train_seconds": saved.get("train_seconds"), "val_a_mpjpe_mm": saved.get("val_a_mpjpe_mm")}
    return name, model.eval(), snap


def run(
    methods: Sequence[str],
    root: str | Path | None = None,
    stride: int = 5,
    batch_size: int = 512,
    threads: int = 1,
    repeats: int = 3,
) -> dict:
    """Score each method on the test-split windows; returns a JSON-able result. The inference time is
    the fastest of ``repeats`` runs over all windows (the machine may be shared)."""
    import torch

    from training.documents.stcformer.criss_cross import count_parameters
    from training.documents.stcformer.task import predict

    if threads > 0:
        torch.set_num_threads(threads)
    windows = pdata.cut_windows(pdata.load_split("test", root), stride)
    if len(windows) == 0:
        raise ValueError("no test windows of 35 frames")
    observed, future = windows[:, : pdata.N_IN], windows[:, pdata.N_IN :]
    result: dict[str, Any] = {"windows": len(windows), "stride": stride, "fps": pdata.FPS, "methods": []}
    for m in methods:
        row: dict[str, Any] = {"method": m}
        if m == "zero":
            fn = pdata.zero_velocity
            row.update(model="zero-velocity", parameters=0)
        else:
            name, model, snap = load_run(m)
            ck = snap["checkpoint"]
            row.update(model=name, parameters=count_parameters(model), config=snap["config"], checkpoint=ck["path"],
                       train_seconds=ck["train_seconds"], steps=ck["step"], epochs=ck["epoch"])

            def fn(obs: np.ndarray, model: Any = model) -> np.ndarray:
                return predict(model, obs, batch_size)

        times = []
        for _ in range(max(1, repeats)):
            t0 = time.perf_counter()
            pred = fn(observed)
            times.append(time.perf_counter() - t0)
        row["inference_s"] = min(times)
        row["ms_per_window"] = 1000.0 * row["inference_s"] / len(windows)
        per_frame = pdata.mpjpe_per_frame(pred, future)
        row.update(pdata.summarise(per_frame), per_frame=per_frame.tolist())
        result["methods"].append(row)
    return result


def format_table(result: dict) -> str:
    """A markdown table: one row per method."""
    hz = [f"{ms}ms" for ms in pdata.HORIZONS_MS]
    head = ["method", "A-MPJPE", *hz, "params", "train s", "steps", "infer ms/window"]
    lines = [
        f"motion prediction: {result['windows']} test windows (10 -> 25 frames at {result['fps']:g} fps, "
        f"every {result['stride']} frames), MPJPE in mm",
        "| " + " | ".join(head) + " |",
        "|" + " --- |" * len(head),
    ]
    for r in result["methods"]:
        train = f"{r['train_seconds']:.0f}" if r.get("train_seconds") is not None else "-"
        cells = [r["method"], f"{r['A-MPJPE']:.1f}", *(f"{r[h]:.1f}" for h in hz), str(r["parameters"]), train,
                 str(r.get("steps", "-")), f"{r['ms_per_window']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_json(result: dict, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(result, indent=2) + "\n")


# --- attention analysis ---------------------------------------------------------------------------

_COLOURS = np.array([[0, 0, 4], [81, 18, 124], [183, 55, 121], [252, 137, 97], [252, 253, 191]], float)  # magma


def _heat_png(matrix: np.ndarray, path: Path, cell: int = 24) -> None:
    """Write a matrix as a magma-coloured PNG heat map (row = query, column = key), its minimum black and
    its maximum white (the values themselves go to the JSON beside it)."""
    from PIL import Image

    m = (matrix - matrix.min()) / max(float(matrix.max() - matrix.min()), 1e-12)
    pos = m * (len(_COLOURS) - 1)
    i = np.clip(np.floor(pos).astype(int), 0, len(_COLOURS) - 2)
    rgb = _COLOURS[i] + (pos - i)[..., None] * (_COLOURS[i + 1] - _COLOURS[i])
    img = Image.fromarray(rgb.astype(np.uint8), "RGB").resize((m.shape[1] * cell, m.shape[0] * cell), Image.NEAREST)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path)


def _on_grid(m: np.ndarray, n: int) -> np.ndarray:
    """A row-stochastic map resampled (nearest) to n x n and renormalised, to compare maps of two sizes."""
    rows = np.minimum((np.arange(n) * m.shape[0]) // n, m.shape[0] - 1)
    cols = np.minimum((np.arange(n) * m.shape[1]) // n, m.shape[1] - 1)
    g = m[np.ix_(rows, cols)]
    return g / g.sum(axis=1, keepdims=True)


def map_distances(temporal: np.ndarray, spatial: np.ndarray) -> dict[str, float]:
    """L1 distance between the temporal and spatial maps (both on a common grid, mean over rows of the
    L1 distance of the attention distributions: 0 = identical, 2 = disjoint), and each map's distance
    from uniform attention (how peaked it is)."""
    n = max(temporal.shape[0], spatial.shape[0])
    t, s = _on_grid(temporal, n), _on_grid(spatial, n)
    return {
        "l1_temporal_spatial": float(np.abs(t - s).sum(axis=1).mean()),
        "l1_temporal_uniform": float(np.abs(temporal - 1.0 / temporal.shape[1]).sum(axis=1).mean()),
        "l1_spatial_uniform": float(np.abs(spatial - 1.0 / spatial.shape[1]).sum(axis=1).mean()),
    }


def attention_maps(
    run_path: str | Path, out_dir: str | Path, root: str | Path | None = None, stride: int = 5,
    max_windows: int = 512,
) -> dict:
    """Mean softmaxed maps of the first encoder block's criss-cross self-attention over test windows:
    temporal (n_in x n_in, query frame x key frame) and spatial (J x J, query joint x key joint), as PNGs
    in ``out_dir``, with their L1 distances (also written as ``attention.json``). As in the report, the
    weights are the run's best validation epoch's (``best-val.pt``), the last ones if it has none."""
    import torch

    from training.documents.stcformer.criss_cross import CrissCrossAttention
    from training.documents.stcformer.task import M_PER_MM

    name, model, snap = load_run(run_path, best=True)
    attn = getattr(getattr(model, "encoder", [None])[0], "attn", None)
    if not isinstance(attn, CrissCrossAttention):
        raise ValueError(f"{name}: its first encoder block has no criss-cross attention (use stcformer, stcformer-ar)")
    windows = pdata.cut_windows(pdata.load_split("test", root), stride)[:max_windows]
    attn.keep_maps = True
    with torch.no_grad():
        model.encode(torch.as_tensor(windows[:, : pdata.N_IN]) * M_PER_MM)
    attn.keep_maps = False
    wt, ws = attn.last_maps  # (B, J, H, T, T), (B, T, H, J, J)
    temporal = wt.mean(dim=(0, 1, 2)).numpy().astype(np.float64)
    spatial = ws.mean(dim=(0, 1, 2)).numpy().astype(np.float64)
    out = Path(out_dir)
    _heat_png(temporal, out / f"{name}-temporal.png")
    _heat_png(spatial, out / f"{name}-spatial.png")
    result = {"model": name, "run": str(run_path), "checkpoint": snap["checkpoint"], "windows": len(windows),
              **map_distances(temporal, spatial),
              "temporal": temporal.round(4).tolist(), "spatial": spatial.round(4).tolist()}
    write_json(result, out / f"{name}-attention.json")
    return result
