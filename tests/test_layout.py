"""The folders tell the architecture: imports are absolute and flow one way, with no cycle.

``backend`` -> ``training.inbetween`` -> ``training.motion``; the documents' models may use the product's
parts, nothing of the product imports them; the fill engine imports no training-data code and no task.
"""

import ast
import functools
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("training.checks", "training.motion", "training.inbetween", "training.documents", "training.bench",
          "training.train", "training.settings", "training.tasks", "backend", "anyfill")
ALLOWED = {  # layer -> the layers it may import (its own included)
    "training.checks": set(),  # the settings checks' helpers: the bottom, plain Python
    "training.motion": {"training.motion"},
    "training.inbetween": {"training.checks", "training.motion", "training.inbetween", "training.train"},
    "training.bench": {"training.motion", "training.inbetween", "training.bench"},
    "training.documents": {"training.checks", "training.motion", "training.inbetween", "training.documents",
                           "training.train", "training.bench", "training.tasks"},
    "training.train": {"training.checks", "training.settings"},
    "training.settings": set(),
    "training.tasks": {"training.train"},
    "backend": {"backend", "training.checks", "training.motion", "training.inbetween", "anyfill"},
    # the command line is the top: each area adds its commands to its tree (backend: only backend.commands,
    # which imports nothing of the server until a command runs)
    "anyfill": {"anyfill", "training.bench", "training.train", "training.documents", "backend"},
}


@functools.cache
def modules() -> dict[str, Path]:
    out = {}
    for top in ("training", "backend", "anyfill"):
        for p in (ROOT / top).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


def layer(module: str) -> str | None:
    return next((x for x in LAYERS if module == x or module.startswith(x + ".")), None)


@functools.cache
def imports(module: str) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement of one of the project's modules (also inside functions), its source parsed once."""
    return [node for node in ast.walk(ast.parse(modules()[module].read_text()))
            if isinstance(node, ast.Import | ast.ImportFrom)]


@functools.cache
def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """Module -> the project's modules it imports (also inside functions); and every relative import."""
    mods = modules()

    def ours(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    edges: dict[str, set[str]] = {m: set() for m in mods}
    relative = []
    for name in mods:
        for node in imports(name):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    relative.append(f"{name}: line {node.lineno}")
                    continue
                targets = [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            edges[name] |= {o for t in targets if (o := ours(t)) not in (None, name, "training")}
    return edges, relative


def test_imports_are_absolute():
    assert import_graph()[1] == []


def test_imports_flow_one_way():
    edges, _ = import_graph()
    wrong = [f"{a} -> {b}" for a, bs in edges.items() if layer(a) for b in bs if layer(b) not in ALLOWED[layer(a)]]
    assert wrong == []


def test_private_names_are_imported_only_within_their_own_package():
    """A name with a leading underscore is its package's own: modules of one folder may share it, another package
    imports public names only (``training.documents.commands`` imported the STCFormer bench's ``_run_paths``)."""
    mods = modules()

    def package(module: str) -> str:
        return module if mods[module].name == "__init__.py" else module.rpartition(".")[0]

    wrong = []
    for name in mods:
        for node in imports(name):
            if isinstance(node, ast.ImportFrom) and node.module in mods and not node.level:
                wrong += [f"{name}: {node.module}.{a.name}" for a in node.names if a.name.startswith("_")
                          and not a.name.startswith("__") and package(node.module) != package(name)]
    assert wrong == []


def test_fill_engine_imports_no_training_data_and_no_task():
    edges, _ = import_graph()
    assert not edges["training.inbetween.fill"] & {"training.inbetween.datasets", "training.inbetween.task"}


def test_no_import_cycle():
    edges, _ = import_graph()
    done: set[str] = set()
    cycles = []

    def visit(m: str, path: list[str]) -> None:
        if m in path:
            cycles.append(" -> ".join(path[path.index(m):] + [m]))
        elif m not in done:
            for n in sorted(edges[m]):
                visit(n, path + [m])
            done.add(m)

    for m in sorted(edges):
        visit(m, [])
    assert cycles == []


def test_docs_are_product_pages_and_readme_maps_them():
    """Every docs/*.md page is a product page: under 300 lines, no experiment history (that goes to
    docs/notebook/), and linked from the README's map of the docs."""
    import re

    root = Path(__file__).resolve().parents[1]
    readme = (root / "README.md").read_text()
    pages = sorted((root / "docs").glob("*.md"))
    assert pages
    for page in pages:
        text = page.read_text()
        assert len(text.splitlines()) < 300, f"{page.name}: {len(text.splitlines())} lines"
        assert not re.search(r"\bsession \d|\bwe tried\b", text, re.I), f"{page.name} narrates its history"
        assert f"](docs/{page.name})" in readme, f"README does not link docs/{page.name}"
