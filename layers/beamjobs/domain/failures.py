"""A failed job at a glance: from the cause its worker gave (most often the traceback of the
user's pipeline, as Beam raised it), the exception's own line, the user's frame in it, and the
step that was running.

A Python traceback ends with the exception's line (Beam adds `[while running 'Step']`); its
frames are listed outermost first, so the user's frame is the innermost one that is neither
Beam's, nor an installed package's, nor Python's own. A cause that is no traceback ("worker
lost", a harness's exit) is shown by its first line.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_FRAME = re.compile(r'^\s*File "(?P<path>[^"]+)", line (?P<line>\d+), in (?P<function>\S+)')
# Beam's note on the exception's line: the step (its full name) whose bundle raised it.
_STEP = re.compile(r"\[while running '(?P<step>[^']+)'\]")
# Frames that are not the user's: Beam's compiled modules (a relative path), installed
# packages, Python's own library, code without a file.
_NOT_USERS = re.compile(r"^(apache_beam/|<)|/(site|dist)-packages/|/lib/python\d")
_LONGEST = 500


@dataclass(frozen=True)
class Failure:
    # The exception's line (or the cause's first), and where in the user's code, if known.
    summary: str
    # The step that was running (Beam's full name of the transform), if the cause says.
    step: str = ""


def failure_of(cause: str) -> Failure:
    lines = [line for line in cause.strip().splitlines() if line.strip()]
    if not lines:
        return Failure("")
    if not lines[0].startswith("Traceback (most recent call last)"):
        return Failure(_bounded(lines[0]))
    # The exception's line: the last one that is neither a frame nor the code under it.
    exception = next(
        (line for line in reversed(lines) if not line.startswith(" ")), lines[-1]
    ).strip()
    frames = [match for line in lines if (match := _FRAME.match(line))]
    users = [frame for frame in frames if not _NOT_USERS.search(frame["path"])]
    where = ""
    if users:
        frame = users[-1]
        where = f" (at {frame['path'].rsplit('/', 1)[-1]}:{frame['line']} in {frame['function']})"
    step = _STEP.search(exception)
    return Failure(_bounded(exception) + where, step["step"] if step else "")


def _bounded(text: str) -> str:
    return text if len(text) <= _LONGEST else text[: _LONGEST - 1] + "…"
