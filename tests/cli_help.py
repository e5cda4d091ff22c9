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


def option_help(command: str) -> dict[str, str]:
    """Each option's help text in ``softprompt COMMAND --help``, by its long flag (``--metrics``),
    its wrapped lines joined by single spaces."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main([command, "--help"])
    helps: dict[str, str] = {}
    flag = None
    for line in out.getvalue().splitlines():
        head = re.match(r"^  (-[^ ].*?)(?:  +(\S.*))?$", line)
        if head:
            flag = next((f for f in re.findall(r"--[a-z][a-z0-9-]*", head.group(1)) if not f.startswith("--no-")), None)
            helps[flag] = head.group(2) or ""
        elif flag and line.startswith("    ") and line.strip():
            helps[flag] = (helps[flag] + " " + line.strip()).strip()
        else:
            flag = None
    return helps
