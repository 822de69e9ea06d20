"""Settings refused by the command line, run in-process: what every settings check's test asserts of a refusal."""

from __future__ import annotations

from anyfill.cli import main as cli


def refused(argv: list[str], capsys, *says: str) -> str:
    """Run the command in-process: exit status 2, one line on stderr holding every ``says``; returns that line."""
    assert cli(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    for s in says:
        assert s in err, (s, err)
    return err
