"""``anyfill train MODEL --help`` and ``--print-config``: every setting with its meaning and default, read from
the source (:mod:`training.settings`) without importing torch, and true to the real config dataclasses."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import tomllib

import pytest

from training import tasks  # noqa: F401 - registers the built-in models
from training.settings import read_task
from training.train import TASKS, TrainerConfig, get_task


def _help(model: str, capsys) -> str:
    from anyfill.cli import main

    with pytest.raises(SystemExit) as e:
        main(["train", model, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def _fields(cls: type) -> list[tuple[str, object]]:
    """(name, default) of a dataclass, nested config dataclasses as the list of their own."""
    out = []
    for f in dataclasses.fields(cls):
        if f.default_factory is not dataclasses.MISSING and dataclasses.is_dataclass(f.default_factory):
            out.append((f.name, _fields(f.default_factory)))
        else:
            out.append((f.name, f.default))
    return out


def _read(settings) -> list[tuple[str, object]]:
    return [(s.name, _read(s.nested) if s.nested else s.default) for s in settings]


@pytest.mark.parametrize("model", sorted(TASKS))
def test_the_source_reading_is_the_real_config(model):
    """What help shows is what training uses: the same fields in the same order, the same defaults, named
    configs and trainer defaults."""
    info, task = read_task(model, TASKS[model]), get_task(model)
    assert _read(info.settings) == _fields(task.config_cls)
    assert info.named_configs == task.named_configs
    assert info.default_trainer == task.default_trainer
    assert info.has_check == (task.check is not None)


@pytest.mark.parametrize("model", sorted(TASKS))
def test_help_lists_every_setting_with_its_default_and_meaning(model, capsys):
    text = _help(model, capsys)
    info = read_task(model, TASKS[model])
    settings = [*info.settings, *(n for s in info.settings for n in s.nested)]
    trainer = [(f"trainer.{f.name}", f) for f in dataclasses.fields(TrainerConfig)]
    for name, s in [*((s.name, s) for s in settings if not s.nested), *trainer]:
        line = next((li for li in text.splitlines() if li.split("=")[0].strip() == name), None)
        assert line is not None, f"{model} --help does not list {name}"
        default = getattr(s, "default", None)
        default = info.default_trainer.get(name.removeprefix("trainer."), default) if name.startswith("trainer.") \
            else default
        shown = "none" if default is None else repr(default)
        assert line.split("=", 1)[1].strip().startswith(shown), (name, line)
        assert len(line.split("=", 1)[1].strip()) > len(shown), f"{model}: {name} has no meaning"


def test_help_and_print_config_import_no_torch():
    code = ("import sys, contextlib, io\nfrom anyfill.cli import main\n"
            "with contextlib.suppress(SystemExit), contextlib.redirect_stdout(io.StringIO()):\n"
            "    main(['train', 'anyorder', '--help'])\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['train', 'lift', 'hidden=64', '--print-config']) == 0\n"
            "print(sorted(m for m in ('torch', 'lightning', 'numpy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_print_config_of_a_checked_model_imports_only_its_config_and_check():
    """anyorder checks its settings with its own code: --print-config imports the module that holds its config
    and check (NumPy, SciPy), not torch or Lightning, and still refuses a bad setting as training would."""
    code = ("import sys, contextlib, io\nfrom anyfill.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            "    assert main(['train', 'anyorder', 'skeleton=body', '--print-config']) == 0\n"
            "    assert main(['train', 'anyorder', 'skeleton=elbow', '--print-config']) == 2\n"
            "print(sorted(m for m in ('torch', 'lightning') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == "[]" and "skeleton must be 'hand' or 'body', got 'elbow'" in run.stderr
    info = read_task("anyorder", TASKS["anyorder"])
    assert info.config_at == ("training.inbetween.config", "AnyOrderTrainConfig")
    assert info.check_at == ("training.inbetween.config", "check_settings")


def test_print_config_is_an_explained_config_file(tmp_path, capsys):
    from anyfill.cli import main

    assert main(["train", "lift", "hidden=64", "trainer.max_epochs=3", "--print-config"]) == 0
    text = capsys.readouterr().out
    assert "hidden = 64" in text and "# width of the network (the report: 1024) (default 1024)" in text
    config = tomllib.loads(text)
    assert config["hidden"] == 64 and config["trainer"]["max_epochs"] == 3
    (tmp_path / "lift.toml").write_text(text)
    assert main(["train", "lift", "--config", str(tmp_path / "lift.toml"), "--print-config"]) == 0
    assert capsys.readouterr().out == text
