"""A failed job at a glance: from the cause its worker gave (most often the traceback of the
user's pipeline, as Beam raised it), the exception's own line, the user's frame in it, and the
step that was running; and that traceback once, as the worker stores it.

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
_TRACEBACK = "Traceback (most recent call last):"
# How Python joins the tracebacks of a chain of exceptions.
_CHAIN = re.compile(
    r"\n\n(?:During handling of the above exception, another exception occurred|"
    r"The above exception was the direct cause of the following exception):\n\n"
)
# A runner's exception that carries a harness's own traceback as its message.
_CARRIED = f"RuntimeError: {_TRACEBACK}"


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


def condensed(cause: str) -> str:
    """A pipeline's traceback once. Beam tells one failure three ways: the user's exception;
    the same again, re-raised with the step's name (`[while running 'Step']`) through all of
    Beam's frames; and FnApiRunner's RuntimeError carrying the harness's text of those, under
    the worker's own frames. What is kept: the user's exception's frames, under the step's
    line. Another chain of exceptions, or a cause that is no traceback, is kept whole."""
    text = cause.strip()
    # The harness's text, without the runner's frames above it.
    while (carried := text.find(f"\n{_CARRIED}")) >= 0:
        text = text[carried + 1 :].removeprefix("RuntimeError: ")
    sections = _CHAIN.split(text)
    if len(sections) < 2 or not sections[0].startswith(_TRACEBACK):
        return text
    first, augmented = sections[0].rstrip().splitlines(), sections[-1].rstrip().splitlines()
    if not augmented[-1].startswith(first[-1]) or not _STEP.search(augmented[-1]):
        return text
    return "\n".join([*first[:-1], augmented[-1]])


def _bounded(text: str) -> str:
    return text if len(text) <= _LONGEST else text[: _LONGEST - 1] + "…"
