"""The API contract as a file: ``python -m backend.openapi OUT`` writes the server's OpenAPI schema to OUT
(``make openapi``: ``docs/openapi.json``). No model is needed: the schema does not depend
on which models are loaded."""

from __future__ import annotations

import argparse
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
    p = argparse.ArgumentParser(prog="python -m backend.openapi", description="Write the server's OpenAPI schema.")
    p.add_argument("out", metavar="OUT", help="the file to write, e.g. docs/openapi.json (what make openapi writes)")
    out = Path(p.parse_args(sys.argv[1:] if argv is None else argv).out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(dumps())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
