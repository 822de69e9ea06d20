"""What ``anyfill train MODEL --help`` and ``--print-config`` show, read from the source without importing it.

A model's settings are the fields of its config dataclass; their meanings are the comments beside them
(or the comment lines just above), which exist only in the source. So the settings are read from the
source files with :mod:`ast` and :mod:`tokenize`: no torch or Lightning import, help in a fraction of a
second. Base classes and nested config dataclasses (a ``field(default_factory=FeatureSpec)``) are followed
through the module's ``from ... import`` lines; the ``Task(...)`` call gives the named configs and the
trainer defaults, which must be literals or names of module-level literals. ``tests/test_train_help.py``
checks every registered model's reading against its real dataclasses.
"""

from __future__ import annotations

import ast
import dataclasses
import io
import textwrap
import tokenize
from dataclasses import dataclass, field
from functools import cache
from importlib.util import find_spec
from pathlib import Path
from typing import Any


@dataclass
class Setting:
    """One field of a config dataclass as its source says it."""

    name: str
    type: str  # the annotation, as written
    default: Any  # the default's value (a nested config: None, see ``nested``)
    meaning: str
    nested: list[Setting] = field(default_factory=list)  # a nested config dataclass's own settings


@dataclass
class TaskInfo:
    """A model's settings and the rest of its ``Task(...)`` call, read statically."""

    name: str
    doc: str  # the config class's docstring
    settings: list[Setting]
    named_configs: dict[str, dict[str, Any]]
    default_trainer: dict[str, Any]
    has_check: bool  # the task refuses some settings: a check that needs the module itself
    # where the config class and the check are defined (module, name): --print-config imports only those modules
    # (None: a check that is not a plain name, found by importing the task's module)
    config_at: tuple[str, str] | None = None
    check_at: tuple[str, str] | None = None


@cache
def _module(module: str) -> tuple[ast.Module, dict[int, str]]:
    """A module's syntax tree and its comments by line number (negative: a line holding only a comment)."""
    spec = find_spec(module)
    if spec is None or spec.origin is None:
        raise KeyError(f"no module {module!r}")
    text = Path(spec.origin).read_text()
    comments = {tok.start[0] * (-1 if not tok.line[: tok.start[1]].strip() else 1): tok.string.lstrip("#").strip()
                for tok in tokenize.generate_tokens(io.StringIO(text).readline) if tok.type == tokenize.COMMENT}
    return ast.parse(text), comments


def _definition(module: str, name: str) -> tuple[str, ast.AST]:
    """Where ``name`` used in ``module`` is defined: (module, its ClassDef or its top-level assigned value),
    following ``from X import name`` (absolute imports only, as the project writes them)."""
    tree, _ = _module(module)
    for node in tree.body:
        if isinstance(node, (ast.ClassDef, ast.FunctionDef)) and node.name == name:
            return module, node
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            if any(isinstance(t, ast.Name) and t.id == name for t in targets) and node.value is not None:
                return module, node.value
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                if (alias.asname or alias.name) == name:
                    return _definition(node.module, alias.name)
    raise KeyError(f"{module}: no definition of {name!r} found in its source")


def _value(module: str, node: ast.AST) -> Any:
    """A literal, or the name of a module-level literal; ``dict(X)`` is X."""
    if isinstance(node, ast.Name):
        return _value(*_definition(module, node.id))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in ("dict", "tuple", "list"):
        return {"dict": dict, "tuple": tuple, "list": list}[node.func.id](_value(module, node.args[0]))
    return ast.literal_eval(node)


def _meaning(comments: dict[int, str], node: ast.AST) -> str:
    """The comment on a field's line, else the comment-only lines right above it."""
    if node.lineno in comments:
        return comments[node.lineno]
    above, line = [], node.lineno - 1
    while -line in comments:
        above.insert(0, comments[-line])
        line -= 1
    return " ".join(above)


def read_config(module: str, name: str) -> tuple[str, list[Setting]]:
    """The docstring and settings of config dataclass ``name`` as used in ``module``: base classes' fields
    first (in dataclass order), a field redefined keeping its place."""
    where, cls = _definition(module, name)
    if not isinstance(cls, ast.ClassDef):
        raise KeyError(f"{module}: {name} is not a class")
    _, comments = _module(where)
    fields: dict[str, Setting] = {}
    for base in reversed(cls.bases):
        if isinstance(base, ast.Name):
            fields.update((s.name, s) for s in read_config(where, base.id)[1])
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        setting = Setting(node.target.id, ast.unparse(node.annotation), None, _meaning(comments, node))
        value = node.value
        if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "field":
            kw = {k.arg: k.value for k in value.keywords}
            if "default_factory" in kw and isinstance(kw["default_factory"], ast.Name):
                setting.nested = read_config(where, kw["default_factory"].id)[1]
                value = None
            else:
                value = kw.get("default")
        if value is not None:
            setting.default = _value(where, value)
        fields[setting.name] = setting
    return ast.get_docstring(cls) or "", list(fields.values())


def _defined_at(module: str, name: str) -> tuple[str, str] | None:
    """(module, name) of the definition of ``name`` as used in ``module`` (None: not found in the source)."""
    try:
        where, node = _definition(module, name)
    except KeyError:
        return None
    return (where, name) if isinstance(node, (ast.ClassDef, ast.FunctionDef)) else None


def read_task(name: str, module: str) -> TaskInfo:
    """The settings of model ``name``, whose module defines ``TASK = Task(...)`` or a ``TASKS`` family."""
    tree, _ = _module(module)
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Task"):
            continue
        kw = {k.arg: k.value for k in node.keywords}
        try:
            config = kw["config_cls"].id
            doc, settings = read_config(module, config)
        except KeyError:  # a family, TASKS = {name: Task(config_cls=...) for ...}: MODELS = {name: (..., config)}
            family = _definition(module, "MODELS")[1]
            config = next(v.elts[-1].id for k, v in zip(family.keys, family.values, strict=True)
                          if ast.literal_eval(k) == name)
            doc, settings = read_config(module, config)
        check = kw.get("check")
        return TaskInfo(name, doc, settings,
                        _value(module, kw["named_configs"]) if "named_configs" in kw else {},
                        _value(module, kw["default_trainer"]) if "default_trainer" in kw else {},
                        check is not None, _defined_at(module, config),
                        _defined_at(module, check.id) if isinstance(check, ast.Name) else None)
    raise KeyError(f"{module}: no Task(...) call in its source")


def shadow(settings: list[Setting], name: str = "Settings") -> type:
    """A dataclass with the fields and defaults of ``settings`` (nested ones as nested dataclasses): a
    config can be resolved and printed with it before, or without, the real one is imported."""
    spec = []
    for s in settings:
        if s.nested:
            spec.append((s.name, s.type, field(default_factory=shadow(s.nested, s.type))))
        else:
            spec.append((s.name, s.type, field(default=s.default)))
    return dataclasses.make_dataclass(name, spec, frozen=False)


def _shown(value: Any) -> str:
    return "none" if value is None else repr(value)


def format_settings(settings: list[Setting], values: Any = None, prefix: str = "") -> list[str]:
    """Help lines: ``name = default  meaning`` (with ``values``, a resolved config: its value, and the
    default beside it where they differ). Nested settings follow under their group's name."""
    lines, groups = [], []
    width = max((len(prefix + s.name) for s in settings), default=0)
    for s in settings:
        if s.nested:
            groups.append(s)
            continue
        shown = _shown(s.default if values is None else getattr(values, s.name))
        changed = values is not None and getattr(values, s.name) != s.default
        meaning = s.meaning + (f" (default {_shown(s.default)})" if changed else "")
        head = f"  {prefix + s.name:<{width}} = {shown:<12} "
        lines.append(textwrap.fill(meaning, 120, initial_indent=head, subsequent_indent=" " * len(head))
                     if meaning else head.rstrip())
    for g in groups:
        lines += ["", textwrap.fill(f"{g.name} ({g.type}; each also given by its own name): {g.meaning}", 120)]
        lines += format_settings(g.nested, None if values is None else getattr(values, g.name))
    return lines
