"""The API contract as a file: ``python -m backend.openapi [OUT]`` (``make openapi``) writes the
server's OpenAPI schema to ``docs/openapi.json`` (or OUT). No model is needed: the schema does not depend
on which models are loaded."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def schema() -> dict:
    from backend.registry import Registry
    from backend.server import create_app

    return create_app(Registry(), token="").openapi()


def dumps() -> str:
    return json.dumps(schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0] if argv else Path(__file__).resolve().parents[1] / "docs" / "openapi.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dumps())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
