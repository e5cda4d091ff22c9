"""What a ``softprompt`` command accepts, read from its ``--help`` (a public interface), for tests."""

import contextlib
import io
import re

import pytest

from softprompt.cli import main


def usage(command: str) -> str:
    """The usage lines of ``softprompt COMMAND --help`` (every option and argument, no prose)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    return out.getvalue().split("\n\n", 1)[0]


def option_flags(command: str) -> set[str]:
    """Every ``--flag`` (and ``-h``) that ``softprompt COMMAND`` accepts."""
    return set(re.findall(r"(?<![\w-])(--?[a-z][a-z0-9-]*)", usage(command)))
