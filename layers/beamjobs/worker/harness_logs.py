"""SDK harnesses send their log records to FnApiRunner, which re-logs each as the text form of a
LogEntry proto ("severity: WARN timestamp {…} message: …"). Turn that back into the message the
user logged, with its exception trace if any; and leave out what the job stores otherwise: its
own messages that come back as harness logs, and Beam's log of the exception that fails the job
(EchoedMessages)."""

from __future__ import annotations

import logging
import re

from apache_beam.portability.api import beam_fn_api_pb2
from google.protobuf import text_format

# How Beam's Go SDK prints each job message it receives while it waits for the job: in LOOPBACK
# its logger is also the harness's, which sends that line back to the runner as a log entry.
_GO_ECHO = re.compile(r"\(time=[^)]*\)\(id=[^)]*\)")
# Beam's Python SDK logs a user's exception where it re-raises it with the step's name (its
# logger's, whose entries name no location of it: the module is compiled); the bundle then fails
# with it, and that is stored as the job's failure, traceback and all.
_BEAMS_RERAISE = "apache_beam.runners.common"
_STEP_NOTE = "[while running '"


def _log_entry(text: str) -> beam_fn_api_pb2.LogEntry | None:
    if not text.startswith("severity: "):
        return None
    entry = beam_fn_api_pb2.LogEntry()
    try:
        text_format.Parse(text, entry)
    except text_format.ParseError:
        return None  # not a LogEntry after all
    return entry


class HarnessLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        entry = _log_entry(text)
        if entry is None:
            return text
        return f"{entry.message}\n{entry.trace}" if entry.trace else entry.message


class EchoedMessages(logging.Filter):
    """Drops harness log entries that are the job's own messages as a Go submitter printed them
    (stored again, each would come back once more, for ever), and Beam's log of the exception
    the job fails with, in an EMBEDDED harness (a record of its own) or another (an entry)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= logging.ERROR and record.name == _BEAMS_RERAISE:
            return False
        entry = _log_entry(record.getMessage())
        if entry is None:
            return True
        if entry.severity >= entry.Severity.ERROR and entry.trace and _STEP_NOTE in entry.message:
            return False
        return not _GO_ECHO.match(entry.message)
