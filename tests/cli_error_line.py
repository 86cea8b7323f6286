"""Runs a CLI command that must fail on bad input: exit code 2, one `recvae <cmd>: error:` line, no traceback."""

from __future__ import annotations

from collections.abc import Sequence

from recvae import cli


def error_line(capsys, argv: Sequence[str]) -> str:
    """The one error line of `recvae argv` (asserting exit code 2 and no traceback anywhere in the output)."""
    names = {add.__name__.removeprefix("add_").replace("_", "-") for add, _ in cli.COMMANDS}  # similar-items
    command = next(a for a in argv if a in names)
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert "Traceback" not in out + err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"recvae {command}: error:")]
    assert len(lines) == 1, err
    return lines[0]
