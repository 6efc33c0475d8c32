"""SDK harnesses send their log records to FnApiRunner, which re-logs each as the text form of a
LogEntry proto ("severity: WARN timestamp {…} message: …"). Turn that back into the message the
user logged, with its exception trace if any."""

from __future__ import annotations

import logging

from apache_beam.portability.api import beam_fn_api_pb2
from google.protobuf import text_format


class HarnessLogFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        if not text.startswith("severity: "):
            return text
        entry = beam_fn_api_pb2.LogEntry()
        try:
            text_format.Parse(text, entry)
        except text_format.ParseError:
            return text  # not a LogEntry after all
        return f"{entry.message}\n{entry.trace}" if entry.trace else entry.message
