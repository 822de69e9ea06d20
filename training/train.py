"""``anyfill train MODEL``: one Lightning-based training command for every model of the project.

Each trainable model registers a :class:`Task` (its config dataclass, named configs, and a function
that builds the LightningModule and LightningDataModule from a config) in ``TASKS``. This module owns
the plumbing they share: config files and ``key=value`` overrides, seeds, run folders, TensorBoard
logs, a progress bar (progress lines when the output is not a terminal), resumable checkpoints (kill a
run, rerun the same command, it continues from a checkpoint at most ``checkpoint_every_minutes`` old),
and multi-device / multi-node DDP through Lightning (``torchrun`` sets the environment it reads).

Checkpoints are pickles (optimizer and scheduler state): resuming unpickles the run folder's ``.ckpt``
files, so only resume run folders you trust.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import importlib
import json
import os
import re
import shutil
import sys
import tomllib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from training.checks import at_least, is_whole, whole
from training.settings import Setting, TaskInfo, format_settings, read_config, read_task, shadow

# model name -> module that defines TASK (imported only when that model is trained)
TASKS: dict[str, str] = {}


@dataclass
class TrainerConfig:
    """Settings of the training loop itself, shared by every model (``trainer.<field>=...``)."""

    max_epochs: int = 10  # passes over the training data (an epoch is the model's own count of steps)
    max_steps: int = -1  # stop after this many optimiser steps; -1: no step limit
    max_time: str | None = None  # "DD:HH:MM:SS", a wall-clock budget
    seed: int = 0  # seeds torch, numpy and the data loaders' workers
    accelerator: str = "auto"  # cpu, gpu, auto
    devices: str = "auto"  # "auto", a count, or a list like "0,1"
    num_nodes: int = 1  # machines taking part (DDP; torchrun sets the rest of the environment)
    strategy: str = "auto"  # auto picks DDP for several devices
    precision: str = "32-true"  # Lightning's precision: 32-true, bf16-mixed, 16-mixed
    threads: int = 0  # torch CPU threads; 0 leaves torch's default
    log_every_n_steps: int = 20  # steps between TensorBoard points
    val_every_n_epochs: int = 1  # epochs between validations
    checkpoint_every_n_steps: int = 0  # 0: at the end of every epoch only
    checkpoint_every_minutes: float = 1.0  # also a checkpoint (timed.ckpt) this often during epochs; 0: off
    gradient_clip_val: float = 0.0  # clip the gradient norm to this; 0: no clipping
    progress: bool = True  # a progress bar on a terminal, progress lines otherwise


@dataclass
class Task:
    """A trainable model: config class, named configs, and how to build its Lightning parts."""

    name: str
    config_cls: type
    build: Callable[[Any], tuple[Any, Any]]  # config -> (LightningModule, LightningDataModule)
    named_configs: dict[str, dict[str, Any]] = field(default_factory=dict)
    default_trainer: dict[str, Any] = field(default_factory=dict)
    after_fit: Callable[[Any, Any, Any, Path], None] | None = None  # (config, module, trainer, run_dir)
    results: tuple[str, ...] = ()  # files ``after_fit`` writes in the run folder: --fresh moves them aside too
    check: Callable[[Any], None] | None = None  # raises ValueError naming a bad setting, when settings are given


def register(name: str, module: str) -> None:
    TASKS[name] = module


def get_task(name: str) -> Task:
    """The Task of a model; a module that trains a family of models defines ``TASKS`` by name."""
    if name not in TASKS:
        raise KeyError(f"unknown model {name!r}; trainable models: {', '.join(sorted(TASKS)) or 'none'}")
    module = importlib.import_module(TASKS[name])
    family = getattr(module, "TASKS", None)
    return family[name] if family is not None else module.TASK


def _coerce(value: str, current: Any, ftype: Any) -> Any:
    """Turn an override string into the type of the field it sets."""
    if isinstance(current, bool) or ftype in (bool, "bool"):
        if value.lower() in ("1", "true", "yes", "on"):
            return True
        if value.lower() in ("0", "false", "no", "off"):
            return False
        raise ValueError(f"expected a boolean, got {value!r}")
    if isinstance(current, int) and not isinstance(current, bool):
        return int(value)
    if isinstance(current, float):
        return float(value)
    if isinstance(current, (list, tuple)):
        items = [v for v in value.replace(",", " ").split() if v]
        elem = type(current[0]) if current else str
        return type(current)(elem(v) for v in items)
    if value.lower() == "none":
        return None
    return value


def _nested(cfg: Any) -> dict[str, str]:
    """Setting name -> the dataclass field of ``cfg`` that holds it, for the settings of nested dataclasses
    (a model config's ``features``): those are given by their own names, as if they were ``cfg``'s."""
    return {f.name: name for name in (f.name for f in dataclasses.fields(cfg))
            if dataclasses.is_dataclass(inner := getattr(cfg, name)) for f in dataclasses.fields(inner)}


def apply_overrides(cfg: Any, overrides: dict[str, Any], where: str) -> Any:
    """A copy of dataclass ``cfg`` with fields replaced; unknown fields are an error naming them. A setting
    of a nested dataclass field is given by its own name, or as that field's dict (a saved config)."""
    fields = {f.name: f for f in dataclasses.fields(cfg)}
    nested = _nested(cfg)
    inner: dict[str, dict[str, Any]] = {}
    for key, value in overrides.items():
        if key in nested:
            inner.setdefault(nested[key], {})[key] = value
        elif key in fields and dataclasses.is_dataclass(getattr(cfg, key)) and isinstance(value, dict):
            inner.setdefault(key, {}).update(value)
    changes = {name: apply_overrides(getattr(cfg, name), values, where) for name, values in inner.items()}
    for key, value in overrides.items():
        if key in nested or key in changes:
            continue
        if key not in fields:
            raise KeyError(f"{where}: unknown setting {key!r}; settings are {', '.join([*fields, *nested])}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current):  # a group of settings: each is given by its own name
            names = ", ".join(f.name for f in dataclasses.fields(current))
            raise ValueError(f"{where}: {key} is a group of settings, each given by its own name ({names}), "
                             f"not a value: got {key}={value!r}")
        try:
            changes[key] = _coerce(value, current, fields[key].type) if isinstance(value, str) else value
        except ValueError as e:
            raise ValueError(f"{where}: bad value for {key!r}: {e}") from None
    return dataclasses.replace(cfg, **changes)


def load_config_file(path: str | Path) -> dict[str, Any]:
    """A config file's settings; a file that is not a table of settings is an error naming the file."""
    path = Path(path)
    if path.suffix not in (".toml", ".json"):
        raise ValueError(f"{path}: config files are .toml or .json")
    try:
        text = path.read_text()
        flat = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}: not a valid {path.suffix[1:].upper()} file ({e})") from None
    if not isinstance(flat, dict):
        raise ValueError(f"{path}: a config file holds a table of settings (key = value), "
                         f"not a {type(flat).__name__}")
    return flat


def _split_sections(flat: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    model, trainer = {}, {}
    for k, v in flat.items():
        if k == "trainer" and isinstance(v, dict):
            trainer.update(v)
        elif k.startswith("trainer."):
            trainer[k[len("trainer.") :]] = v
        else:
            model[k] = v
    return model, trainer


def resolve_configs(task: Task, config_file: str | Sequence[str] | None, named: str | None,
                    overrides: Sequence[str], run: tuple[str, dict[str, Any]] | None = None):
    """Defaults <- task's trainer defaults <- a run's saved settings (``run``: where, and its config.json) <- named
    config <- config files (in order, a later one overriding an earlier one) <- ``key=value`` overrides."""
    cfg = task.config_cls()
    tcfg = apply_overrides(TrainerConfig(), task.default_trainer, f"{task.name} trainer defaults")
    layers: list[tuple[str, dict[str, Any]]] = []
    if run is not None:
        where, saved = run
        layers.append((where, {**_flat(saved.get("config") or {}), "trainer": saved.get("trainer") or {}}))
    if named:
        if named not in task.named_configs:
            raise KeyError(f"{task.name}: no named config {named!r}; named configs: {', '.join(task.named_configs)}")
        layers.append((f"named config {named}", task.named_configs[named]))
    for file in [config_file] if isinstance(config_file, (str, Path)) else config_file or []:
        layers.append((str(file), load_config_file(file)))
    ov: dict[str, Any] = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} is not of the form key=value")
        k, v = item.split("=", 1)
        ov[k.strip().lstrip("-")] = v
    layers.append(("command line", ov))
    for where, flat in layers:
        m, t = _split_sections(flat)
        cfg = apply_overrides(cfg, m, where)
        tcfg = apply_overrides(tcfg, t, where)
    if task.check is not None:
        task.check(cfg)
    check_trainer(tcfg)
    return cfg, tcfg


# what Lightning's Trainer(precision=...) takes (lightning.fabric.plugins.precision.precision: _PRECISION_INPUT_STR,
# _PRECISION_INPUT_STR_ALIAS and _PRECISION_INPUT_INT; tests/test_cli_settings_checks.py checks they still agree)
PRECISIONS = ("32-true", "bf16-mixed", "16-mixed", "64-true", "16-true", "bf16-true", "transformer-engine",
              "transformer-engine-float16", "32", "64", "16", "bf16", 32, 64, 16)
# Trainer(accelerator=...): Lightning's registered accelerators and its two aliases
ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps", "tpu")
MAX_TIME = re.compile(r"(\d+):(\d\d):(\d\d):(\d\d)")  # Lightning's Timer: DD:HH:MM:SS
MAX_SEED = 2**32 - 1  # Lightning's seed_everything (numpy's seeds)


def check_trainer(tcfg: TrainerConfig) -> None:
    """Settings of the loop that would only fail later (Lightning refusing them once the data is loaded, or the
    run failing mid-way), refused when given, naming the valid values."""
    if tcfg.checkpoint_every_n_steps < 0 or not tcfg.checkpoint_every_minutes >= 0:
        raise ValueError("trainer.checkpoint_every_n_steps and trainer.checkpoint_every_minutes must be >= 0 "
                         f"(0: off), got {tcfg.checkpoint_every_n_steps} and {tcfg.checkpoint_every_minutes}")
    whole(tcfg, "max_epochs", -1, " (-1: no epoch limit)", prefix="trainer.")
    whole(tcfg, "max_steps", -1, " (-1: no step limit)", prefix="trainer.")
    t = tcfg.max_time
    if t is not None and not (isinstance(t, str) and MAX_TIME.fullmatch(t.strip())):
        raise ValueError(f"trainer.max_time must be DD:HH:MM:SS (e.g. 00:12:00:00 for 12 hours) or none, "
                         f"got {tcfg.max_time!r}")
    if not is_whole(tcfg.seed) or not 0 <= tcfg.seed <= MAX_SEED:
        raise ValueError(f"trainer.seed must be a whole number in [0, {MAX_SEED}], got {tcfg.seed!r}")
    if tcfg.accelerator not in ACCELERATORS:
        raise ValueError(f"trainer.accelerator must be one of {', '.join(ACCELERATORS)}, got {tcfg.accelerator!r}")
    try:
        devices = _devices(tcfg.devices)
    except ValueError:
        devices = []
    if devices == [] or isinstance(devices, int) and not (devices >= 1 or devices == -1):
        raise ValueError("trainer.devices must be auto, a count >= 1 (-1: all) or a list of device indices like 0,1; "
                         f"got {tcfg.devices!r}")
    whole(tcfg, "num_nodes", 1, prefix="trainer.")
    if tcfg.precision not in PRECISIONS or isinstance(tcfg.precision, bool):
        shown = ", ".join(dict.fromkeys(map(str, PRECISIONS)))
        raise ValueError(f"trainer.precision must be one of Lightning's: {shown}; got {tcfg.precision!r}")
    whole(tcfg, "threads", 0, " (0: torch's default)", prefix="trainer.")
    whole(tcfg, "log_every_n_steps", 0, " (0: no logging)", prefix="trainer.")
    whole(tcfg, "val_every_n_epochs", 1, prefix="trainer.")
    at_least(tcfg, "gradient_clip_val", meaning=" (0: no clipping)", prefix="trainer.")


def _flat(config: dict[str, Any]) -> dict[str, Any]:
    """A saved config with its nested settings (a model's ``features``) at the top, as runs saved them before."""
    out = {}
    for k, v in config.items():
        out.update(v if isinstance(v, dict) and k == "features" else {k: v})
    return out


def _devices(spec: str | int) -> Any:
    spec = str(spec)  # a config file may give a count as a number
    if spec == "auto":
        return "auto"
    if "," in spec:
        return [int(s) for s in spec.split(",") if s]
    return int(spec)


class UnreadableCheckpoints(ValueError):
    """Every checkpoint of a run folder fails to load: the run must not silently start over."""


def _nonfinite(obj: Any, where: str = "") -> str | None:
    """The name of the first floating-point tensor in ``obj`` (nested dicts, lists) that holds NaN or inf."""
    import torch

    if isinstance(obj, torch.Tensor):
        return where or "a tensor" if obj.is_floating_point() and not bool(obj.isfinite().all()) else None
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    return next((bad for k, v in items if (bad := _nonfinite(v, f"{where}.{k}" if where else str(k)))), None)


def _read_step(path: Path) -> int:
    """A checkpoint's step, once the whole file has been read (every tensor's data, not lazily: a file
    damaged inside its tensor data fails here) and its weights and optimizer state are finite."""
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    for part in ("state_dict", "optimizer_states"):
        if (bad := _nonfinite(ckpt.get(part, {}))) is not None:
            raise ValueError(f"{part} {bad} holds NaN or infinite values")
    return int(ckpt.get("global_step", 0))


def resume_checkpoint(ckpt_dir: Path, steps: dict[Path, int] | None = None) -> Path | None:
    """The checkpoint to resume from: the readable one with the most steps (the newest file on a tie),
    ``None`` when the folder holds none (``steps``, when given, gets each readable file's step).
    Readable: the whole file loads and its weights are finite. Unreadable files beside a readable one (a run
    killed while writing) are renamed ``NAME.unreadable``, and said so; when every file is unreadable,
    :class:`UnreadableCheckpoints` names them and how to start over."""
    files = sorted(ckpt_dir.glob("*.ckpt")) if ckpt_dir.is_dir() else []
    readable, bad = [], []
    for c in files:
        try:
            readable.append((_read_step(c), c.stat().st_mtime, c))
        except Exception as e:  # noqa: BLE001 - any file that does not load is unreadable, and named
            bad.append((c, f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"))
    if bad and not readable:
        listed = "\n".join(f"  {c} ({why})" for c, why in bad)
        raise UnreadableCheckpoints(
            f"every checkpoint in {ckpt_dir} is unreadable, so this run cannot resume:\n{listed}\n"
            "Nothing was trained. To start over from step 0, rerun with --fresh (the old checkpoints are moved "
            "aside) or use another --run-dir.")
    for c, why in bad:
        aside = c.with_name(c.name + ".unreadable")
        c.replace(aside)
        print(f"anyfill train: unreadable checkpoint {c} ({why}) moved to {aside.name}", file=sys.stderr)
    if steps is not None:
        steps.update({c: step for step, _, c in readable})
    return max(readable, key=lambda r: (r[0], r[1]))[2] if readable else None


class RunInUse(ValueError):
    """Another run holds the run folder's lock."""


def _is_main_process() -> bool:
    """Not one of the extra processes of a multi-device run (torchrun or Lightning set these for each)."""
    return all(os.environ.get(k, "0") == "0" for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def lock_run_dir(run_dir: Path):
    """An exclusive lock on ``run_dir`` (``run_dir/.lock``, holding the owner's pid) for as long as the returned
    file stays open: it goes with the process, so a killed run leaves no stale lock. A second run in the same
    folder is refused at once, naming the folder and the pid holding it."""
    import fcntl

    f = (run_dir / ".lock").open("a+")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip()
        f.close()
        raise RunInUse(f"{run_dir} is in use by another run{f' (pid {holder})' if holder else ''}: wait for it "
                       "to end, or use another --run-dir") from None
    f.seek(0)
    f.truncate()
    f.write(f"{os.getpid()}\n")
    f.flush()
    return f


def _run_callbacks(ckpt_dir: Path):
    """Lightning callbacks of every run: the RNG state in each checkpoint, and ``last.ckpt`` on Ctrl-C."""
    import random
    import signal
    import threading

    import numpy as np
    import torch
    from lightning.pytorch.callbacks import Callback

    class _RngState(Callback):
        """Torch's, NumPy's and Python's random state saved in each checkpoint and restored with it, so a run
        resumed from an epoch's end draws (dropout) as the run never stopped does. NumPy's state is kept as a
        tensor and plain numbers: readers that load a checkpoint with ``weights_only=True`` (the benches) refuse
        NumPy arrays, and refused every checkpoint a run wrote."""

        def on_save_checkpoint(self, trainer, module, checkpoint):
            kind, keys, pos, has_gauss, gauss = np.random.get_state()
            checkpoint["anyfill_rng"] = {
                "torch": torch.get_rng_state(), "python": random.getstate(),
                "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                          "has_gauss": int(has_gauss), "gauss": float(gauss)},
                **({"cuda": torch.cuda.get_rng_state_all()} if torch.cuda.is_available() else {}),
            }

        def on_load_checkpoint(self, trainer, module, checkpoint):
            rng = checkpoint.get("anyfill_rng")
            if not rng:  # a checkpoint written before the state was saved
                return
            torch.set_rng_state(rng["torch"])
            state = rng["numpy"]
            if isinstance(state, dict):
                state = (state["kind"], state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"],
                         state["gauss"])
            np.random.set_state(state)  # (a tuple with an array: a checkpoint of an earlier version)
            random.setstate(rng["python"])
            if "cuda" in rng and torch.cuda.is_available() and len(rng["cuda"]) == torch.cuda.device_count():
                torch.cuda.set_rng_state_all(rng["cuda"])

    class _SaveOnInterrupt(Callback):
        """Ctrl-C: Lightning catches the KeyboardInterrupt and exits; first the steps since the last
        checkpoint are saved as ``last.ckpt`` (written beside, then renamed over it). While the run trains, a
        Ctrl-C stops it at the end of the step under way, so that what is saved is never an optimizer step half
        applied (the weights of some layers moved, the others not); a second Ctrl-C stops it at once."""

        def __init__(self):
            self.training = False
            self.interrupted = False
            self.requested = False  # a Ctrl-C waits for the step under way
            self._previous = None
            self._pid = os.getpid()

        def on_train_start(self, trainer, module):
            self.training = True
            # only Python's own Ctrl-C handler is taken over (not an ignored SIGINT, nor a caller's handler), and
            # only from the main thread, where signal handlers live
            if (threading.current_thread() is threading.main_thread()
                    and signal.getsignal(signal.SIGINT) is signal.default_int_handler):
                self._pid = os.getpid()
                self._previous = signal.signal(signal.SIGINT, self._defer)

        def _defer(self, signum, frame):
            # a data loader's worker process inherits the handler: there the Ctrl-C is Python's own (the worker
            # ends, as torch's workers do on one), and only the training process says it stops
            if self.requested or os.getpid() != self._pid:
                raise KeyboardInterrupt
            self.requested = True
            print("anyfill train: stopping after this step (Ctrl-C again to stop at once)", file=sys.stderr)

        def _stop_if_requested(self):
            if self.requested:
                raise KeyboardInterrupt

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            self._stop_if_requested()

        def on_validation_batch_end(self, trainer, module, outputs, batch, batch_idx, dataloader_idx=0):
            self._stop_if_requested()

        def teardown(self, trainer, module, stage):
            if self._previous is not None:
                signal.signal(signal.SIGINT, self._previous)
                self._previous = None

        def on_exception(self, trainer, module, exception):
            if not isinstance(exception, KeyboardInterrupt):
                return
            self.interrupted = True
            if not self.training:  # not yet restored or started: nothing new to save
                return
            last, tmp = ckpt_dir / "last.ckpt", ckpt_dir / "last.ckpt.tmp"
            trainer.save_checkpoint(tmp)
            if trainer.is_global_zero:
                tmp.replace(last)
                print(f"anyfill train: interrupted at step {trainer.global_step}: saved {last}", file=sys.stderr)

    return _RngState(), _SaveOnInterrupt()


def progress_lines(every_s: float = 10.0):
    """Progress as plain lines on stderr (for logs and pipes, where a progress bar shows only at exit): at
    most one every ``every_s`` seconds, and one at each epoch's end."""
    import time

    from lightning.pytorch.callbacks import Callback

    class _ProgressLines(Callback):
        def __init__(self):
            self.last = 0.0
            self.start_step, self.start_time = 0, 0.0

        def on_train_start(self, trainer, module):
            self.start_step, self.start_time = trainer.global_step, time.monotonic()
            self.last = self.start_time

        def _line(self, trainer, what: str) -> None:
            if not trainer.is_global_zero:
                return
            now = time.monotonic()
            rate = (trainer.global_step - self.start_step) / max(now - self.start_time, 1e-9)
            total = f"/{trainer.max_steps}" if trainer.max_steps and trainer.max_steps > 0 else ""
            metrics = trainer.progress_bar_metrics
            shown = "".join(f", {k} {float(v):.4g}" for k, v in metrics.items() if k in ("loss", "val_angle"))
            print(f"anyfill train: {what}epoch {trainer.current_epoch} step {trainer.global_step}{total}{shown}, "
                  f"{rate:.1f} steps/s", file=sys.stderr, flush=True)
            self.last = now

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if time.monotonic() - self.last >= every_s:
                self._line(trainer, "")

        def on_train_epoch_end(self, trainer, module):
            self._line(trainer, "end of ")

    return _ProgressLines()


def step_checkpoints(**kwargs: Any):
    """Lightning's ModelCheckpoint (``kwargs``), except that the checkpoint a run resumed from goes as any other
    once ``save_top_k`` newer ones are written: Lightning keeps it for good, so a run resumed from a
    ``stepNNNNNNNN.ckpt`` kept three of them, where the newest two are kept."""
    from lightning.pytorch.callbacks import ModelCheckpoint

    class _StepCheckpoints(ModelCheckpoint):
        def _should_remove_checkpoint(self, trainer, previous: str, current: str) -> bool:
            # called once ``current`` is written; only a file of this callback's own folder is deleted
            resumed = trainer.ckpt_path
            if resumed is not None and previous != current and Path(previous).absolute() == Path(resumed).absolute():
                return Path(self.dirpath).absolute() in Path(previous).absolute().parents
            return super()._should_remove_checkpoint(trainer, previous, current)

    return _StepCheckpoints(**kwargs)


def fit(task: Task, cfg: Any, tcfg: TrainerConfig, run_dir: Path, fresh: bool = False) -> Path:
    """Train (or resume) a task in ``run_dir``, holding the folder's lock; returns the run folder."""
    import torch

    if tcfg.threads > 0:
        torch.set_num_threads(tcfg.threads)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = lock_run_dir(run_dir) if _is_main_process() else None
    try:
        return _fit(task, cfg, tcfg, run_dir, fresh)
    finally:
        if lock is not None:
            lock.close()


def _fit(task: Task, cfg: Any, tcfg: TrainerConfig, run_dir: Path, fresh: bool) -> Path:
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    ckpt_dir = run_dir / "checkpoints"
    cfg_path = run_dir / "config.json"
    # through JSON, so tuples compare equal to the lists a saved config.json holds
    snapshot = json.loads(json.dumps(
        {"model": task.name, "config": dataclasses.asdict(cfg), "trainer": dataclasses.asdict(tcfg)}
    ))
    had_config = cfg_path.is_file()
    if fresh and any(ckpt_dir.glob("*.ckpt")):
        # kept, but out of the way: a later resume must not pick the old run's checkpoints
        aside = run_dir / f"checkpoints-before-{datetime.datetime.now():%Y%m%d-%H%M%S}"
        ckpt_dir.replace(aside)
        if cfg_path.is_file():  # the old run's settings go with its checkpoints, so it can be restored
            shutil.copy2(cfg_path, aside / cfg_path.name)
        moved = [name for name in task.results if (run_dir / name).is_file()]
        for name in moved:  # its results too: the new run writes its own when it ends
            (run_dir / name).replace(aside / name)
        if (run_dir / "tb").is_dir():  # and its TensorBoard logs, which the new run's would run on from
            (run_dir / "tb").replace(aside / "tb")
            moved.append("tb/")
        print(f"anyfill train: --fresh: the run's old checkpoints (and its {', '.join(['config.json', *moved])}) "
              f"moved to {aside}", file=sys.stderr)
    steps: dict[Path, int] = {}
    resume = None if fresh else resume_checkpoint(ckpt_dir, steps)
    if resume is not None and not cfg_path.is_file():
        raise ValueError(f"{run_dir} holds checkpoints but no config.json, so they cannot be checked against this "
                         "command (a model of other settings would fail to load them); put the run's config.json "
                         "back, use --fresh to start over (the old checkpoints are moved aside) or another --run-dir")
    if resume is not None:
        old = saved_run(run_dir, task.name)["config"]
        # a setting added to the code after the run began is no difference while it keeps its default
        defaults = _flat(json.loads(json.dumps(dataclasses.asdict(type(cfg)()))))
        old = _flat(old)
        diff = sorted(k for k, v in _flat(snapshot["config"]).items() if old.get(k, defaults.get(k)) != v)
        if diff:
            raise ValueError(
                f"{run_dir} holds a run with a different model config (differs in: {', '.join(diff)}); "
                "use another --run-dir, or --fresh to start over"
            )
    tmp = cfg_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(snapshot, indent=2) + "\n")
    tmp.replace(cfg_path)

    L.seed_everything(tcfg.seed, workers=True)
    module, data = task.build(cfg)
    rng_state, on_interrupt = _run_callbacks(ckpt_dir)
    # no version counter: last.ckpt and timed.ckpt are replaced, never written beside as last-v1.ckpt
    callbacks = [
        step_checkpoints(
            dirpath=ckpt_dir, filename="step{step:08d}", auto_insert_metric_name=False, save_last=True,
            save_top_k=2, monitor="step", mode="max", enable_version_counter=False,
            every_n_train_steps=tcfg.checkpoint_every_n_steps or None,
        ),
        LearningRateMonitor(logging_interval="step"),
        rng_state,
        on_interrupt,
    ]
    if tcfg.checkpoint_every_minutes > 0:  # within epochs too: a killed run loses at most this much
        callbacks.append(ModelCheckpoint(
            dirpath=ckpt_dir, filename="timed", save_top_k=1, enable_version_counter=False,
            train_time_interval=datetime.timedelta(minutes=tcfg.checkpoint_every_minutes),
        ))
    bar = tcfg.progress and sys.stderr.isatty()
    if tcfg.progress and not bar:
        callbacks.append(progress_lines())
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_epochs=tcfg.max_epochs,
        max_steps=tcfg.max_steps,
        max_time=tcfg.max_time,
        accelerator=tcfg.accelerator,
        devices=_devices(tcfg.devices),
        num_nodes=tcfg.num_nodes,
        strategy=tcfg.strategy,
        precision=tcfg.precision,
        logger=TensorBoardLogger(save_dir=run_dir, name="tb", version=""),
        callbacks=callbacks,
        log_every_n_steps=tcfg.log_every_n_steps,
        check_val_every_n_epoch=tcfg.val_every_n_epochs,
        gradient_clip_val=tcfg.gradient_clip_val or None,
        enable_progress_bar=bar,
        deterministic="warn",
    )
    if resume is not None:
        print(f"anyfill train: resuming from {resume} (step {steps[resume]})", file=sys.stderr)
    elif had_config and not fresh:
        print(f"anyfill train: no checkpoint in {ckpt_dir}: starting at step 0", file=sys.stderr)
    # the run's own checkpoints hold more than tensors (optimizer and scheduler state, hyper-parameters):
    # they are trusted like the code that wrote them, as the readability check above already does
    try:
        trainer.fit(module, datamodule=data, ckpt_path=str(resume) if resume else None, weights_only=False)
    except SystemExit:
        if on_interrupt.interrupted:  # Lightning's exit on Ctrl-C, last.ckpt saved: interrupted, status 130
            raise KeyboardInterrupt from None
        raise
    if trainer.should_stop or tcfg.max_time:
        # a run stopped mid-epoch (max_time) keeps its last steps: save them for the next resume
        trainer.save_checkpoint(ckpt_dir / "last.ckpt")
    check_finite(module, run_dir)
    if task.after_fit is not None and trainer.is_global_zero:
        task.after_fit(cfg, module, trainer, run_dir)
    return run_dir


def check_finite(module: Any, run_dir: Path) -> None:
    """A model with NaN or infinite weights (a run that diverged) writes no results and no export: an error (status
    2) naming the tensor; the run's checkpoints stay for inspection. (The models of the documents ended such runs
    with status 0 and NaN scores; NaN logits even scored a classifier's accuracy 1.0.)"""
    for name, t in module.state_dict().items():
        if t.is_floating_point() and not bool(t.isfinite().all()):
            raise ValueError(f"the trained model's weights hold NaN or infinite values ({name}): the training "
                             f"diverged, so nothing was written; the run's checkpoints are kept in "
                             f"{run_dir / 'checkpoints'} (try a lower lr or trainer.gradient_clip_val)")


_DESCRIPTION = ("Train a model. Settings: the model's defaults, then --named, then --config, then key=value "
                "overrides (or --key value; trainer.key=value for the training loop, e.g. trainer.max_epochs=5).")


def build_parser(task_names: Sequence[str], info: TaskInfo | None = None) -> argparse.ArgumentParser:
    """The parser of ``anyfill train``; with a model's ``info``, its help lists every setting of the model
    and of the training loop with its default and meaning."""
    p = argparse.ArgumentParser(
        prog="anyfill train" + (f" {info.name}" if info else ""),
        description=(f"{_DESCRIPTION}\n\n{info.doc}" if info and info.doc else _DESCRIPTION),
        epilog="\n".join(settings_help(info)) if info else "'anyfill train MODEL --help' lists the model's settings.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("model", choices=sorted(task_names), metavar="MODEL", help=", ".join(sorted(task_names)))
    p.add_argument("overrides", nargs="*", metavar="key=value")
    p.add_argument("--config", metavar="FILE", action="append",
                   help="a .toml or .json file of settings (--print-config writes one); give several and they "
                        "apply in order, a later file overriding an earlier one")
    p.add_argument("--named", metavar="NAME", help="a named config of the model (listed in its --help)")
    p.add_argument("--run-dir", metavar="DIR",
                   help="run folder (default runs/MODEL); {now} expands to the start time, e.g. runs/pae-{now}")
    p.add_argument("--restore-from", metavar="DIR",
                   help="continue the run in this existing folder from its newest checkpoint, with the settings "
                   "it was started with (its config.json; key=value change them, e.g. trainer.max_epochs)")
    p.add_argument("--fresh", action="store_true", help="ignore checkpoints in the run folder and start over")
    p.add_argument("--print-config", action="store_true",
                   help="print the resolved settings, each with its meaning, as a --config file, and exit")
    return p


def _trainer_settings() -> list[Setting]:
    return read_config(__name__, "TrainerConfig")[1]


def settings_help(info: TaskInfo) -> list[str]:
    """The settings part of ``anyfill train MODEL --help``: name, default and meaning of every setting."""
    trainer = _trainer_settings()
    for s in trainer:
        s.default = info.default_trainer.get(s.name, s.default)
    lines = [f"model settings of {info.name} (key=value or --key value):", *format_settings(info.settings), "",
             "training loop settings (trainer.key=value; defaults of this model):",
             *format_settings(trainer, prefix="trainer."), ""]
    if info.named_configs:
        lines.append("named configs (--named NAME):")
        lines += [f"  {k}: " + ", ".join(f"{n}={v}" for n, v in c.items()) for k, c in info.named_configs.items()]
    return lines


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return json.dumps(value) if isinstance(value, str) else repr(value)


def config_text(info: TaskInfo, cfg: Any, tcfg: TrainerConfig) -> str:
    """A resolved config as a TOML file for ``--config``: every setting with its meaning, and its default
    where the value differs; unset (none) settings commented out."""
    out = [f"# anyfill train {info.name}: resolved settings ('anyfill train {info.name} --config FILE' reads this)"]

    def section(settings: list[Setting], values: Any, defaults: dict[str, Any]) -> None:
        for s in settings:
            if s.nested:
                continue
            value, default = getattr(values, s.name), defaults.get(s.name, s.default)
            shown = "none" if default is None else _toml(default)
            note = "" if _toml(value) == shown else f" (default {shown})"
            line = f"{s.name} = {_toml(value)}" if value is not None else f"# {s.name} = (none)"
            out.append(f"{line:<40} # {s.meaning}{note}")
        for s in settings:
            if s.nested:
                out.extend(["", f"[{s.name}]  # {s.meaning}"])
                section(s.nested, getattr(values, s.name), {})

    section([s for s in info.settings if not s.nested], cfg, {})
    out.extend(["", "[trainer]"])
    section(_trainer_settings(), tcfg, info.default_trainer)
    section([s for s in info.settings if s.nested], cfg, {})
    return "\n".join(out) + "\n"


def expand_run_dir(template: str, now: datetime.datetime | None = None) -> Path:
    """The run folder of ``--run-dir``: ``{now}`` becomes the start time (YYYYmmdd-HHMMSS), so one template
    gives each run its own folder, as the video update's output option did."""
    stamp = (now or datetime.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return Path(template.replace("{now}", stamp))


def _load_builtin_tasks() -> None:
    importlib.import_module("training.tasks")  # registers every built-in model


_OWN_FLAGS = {"--config", "--named", "--run-dir", "--restore-from"}
_OWN_SWITCHES = {"--fresh", "--print-config", "--help", "-h"}


def _flags_to_overrides(argv: list[str]) -> list[str]:
    """Model settings may also be given as flags: ``--skeleton hand`` or ``--skeleton=hand`` is the
    override ``skeleton=hand``."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        key = a.split("=", 1)[0]
        if not a.startswith("--") or key in _OWN_FLAGS or a in _OWN_SWITCHES:
            out.append(a)
        elif "=" in a:
            out.append(f"{key[2:].replace('-', '_')}={a.split('=', 1)[1]}")
        elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
            out.append(f"{a[2:].replace('-', '_')}={argv[i + 1]}")
            i += 1
        else:
            out.append(f"{a[2:].replace('-', '_')}=true")
        i += 1
    return out


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Add ``train`` to ``anyfill``. Its arguments depend on the model (``anyfill train MODEL --help``), so the
    rest of the command line is parsed here, by :func:`build_parser` for that model."""
    p = sub.add_parser("train", help="train a model (see 'anyfill train MODEL --help')", add_help=False,
                       description=_DESCRIPTION)
    p.add_argument("argv", nargs=argparse.REMAINDER, help="MODEL [key=value ...] [options]")
    p.set_defaults(func=lambda args: _command(args.argv or ["--help"]))


def _command(argv: list[str]) -> int:
    """``anyfill train`` run as the process's command. Once it is interrupted (last.ckpt saved: Lightning ignores
    Ctrl-C during that save, then gives Python's handler back), more Ctrl-C are ignored while it ends, so it ends as
    the first said (``anyfill: interrupted``, status 130): one landing in Python's exit-time cleanup printed a
    KeyboardInterrupt traceback, or ended it with status -2. Not in :func:`main`, which may run inside a program
    that goes on."""
    import signal

    try:
        return main(argv)
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        raise


def _attribute(module: str, name: str) -> Any:
    return getattr(importlib.import_module(module), name)


def _model_named(argv: Sequence[str]) -> str | None:
    return next((a for a in argv if a in TASKS), None)


TRAINING_RUN_HINT = "a run folder of 'anyfill train <model>' (holding config.json and checkpoints/)"


def run_paths(path: str | Path) -> tuple[Path, Path]:
    """(run folder, checkpoint) of a run folder or of a checkpoint file inside one: what a benchmark of a trained
    model is given; FileNotFoundError naming the path when it is neither."""
    p = Path(path)
    if p.is_file() and p.suffix == ".ckpt":
        return p.parent.parent, p
    # the newest last*.ckpt: Lightning writes last-v1.ckpt when a run folder was copied and resumed
    lasts = sorted((p / "checkpoints").glob("last*.ckpt"), key=lambda c: c.stat().st_mtime)
    if not (p / "config.json").is_file() or not lasts:
        raise FileNotFoundError(f"{p}: not {TRAINING_RUN_HINT}")
    return p, lasts[-1]


def saved_run(run_dir: Path, model: str, restoring: bool = False) -> dict[str, Any]:
    """A run folder's config.json (its model, config and trainer settings), refused (ValueError, naming the file)
    when it is not one or is a run of another model: what a resumed run is checked against, and what
    ``--restore-from`` goes on with (``restoring``: the message's advice is that option's)."""
    path = run_dir / "config.json"
    elsewhere = ("give --restore-from the folder of a run of this model" if restoring else
                 "use --fresh to start over (the old checkpoints and config.json are moved aside) or another --run-dir")
    try:
        saved = json.loads(path.read_text())
        if not isinstance(saved, dict) or not isinstance(saved.get("config"), dict):
            raise TypeError("no table of settings under 'config'")
    except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as e:
        raise ValueError(f"{path}: not a run's config.json ({type(e).__name__}: {e}), so the run's checkpoints "
                         f"cannot be checked against this command; {elsewhere}") from None
    if saved.get("model", model) != model:
        raise ValueError(f"{run_dir} holds a run of the model {saved['model']!r}, not {model!r}; {elsewhere}")
    return saved


def main(argv: Sequence[str] | None = None) -> int:
    """``anyfill train``. Help and ``--print-config`` read the model's settings from its source
    (:mod:`training.settings`): neither imports torch or Lightning, except to run a model's own checks."""
    _load_builtin_tasks()
    argv = _flags_to_overrides(list(sys.argv[1:] if argv is None else argv))
    name = _model_named(argv)
    info = read_task(name, TASKS[name]) if name else None
    args = build_parser(list(TASKS), info).parse_intermixed_args(argv)
    if args.print_config:
        # the same resolution as training; on dataclasses made from the source unless the model checks its
        # settings with its own code: then the modules defining its config class and its check are imported
        # (only those: a check beside its config needs no Lightning), and a bad setting fails here as in training
        if info.has_check and info.config_at and info.check_at:
            task = Task(info.name, _attribute(*info.config_at), build=None, named_configs=info.named_configs,
                        default_trainer=info.default_trainer, check=_attribute(*info.check_at))
        elif info.has_check:
            task = get_task(args.model)
        else:
            task = Task(info.name, shadow(info.settings, "Config"), build=None, named_configs=info.named_configs,
                        default_trainer=info.default_trainer)
        cfg, tcfg = resolve_configs(task, args.config, args.named, args.overrides)
        print(config_text(info, cfg, tcfg), end="")
        return 0
    task = get_task(args.model)
    run = None
    if args.restore_from:
        # usage errors, as a bad setting is (ValueError: ``anyfill: error: ...``, status 2)
        if args.run_dir:
            raise ValueError("give --run-dir (a new run) or --restore-from (an old one), not both")
        run_dir = Path(args.restore_from)
        if not run_dir.is_dir():
            raise ValueError(f"--restore-from {run_dir}: no such folder")
        if not (run_dir / "config.json").is_file():
            raise ValueError(f"--restore-from {run_dir}: no run there (no config.json)")
        try:
            run = (str(run_dir / "config.json"), saved_run(run_dir, task.name, restoring=True))
        except ValueError as e:
            raise ValueError(f"--restore-from {run_dir}: {e}") from None
    else:
        run_dir = expand_run_dir(args.run_dir or os.path.join("runs", args.model))
    cfg, tcfg = resolve_configs(task, args.config, args.named, args.overrides, run)
    fit(task, cfg, tcfg, run_dir, fresh=args.fresh)
    return 0
