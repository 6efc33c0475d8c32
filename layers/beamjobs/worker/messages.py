"""Forward the worker's log records to the job as JobMessages, in order, in batches."""

from __future__ import annotations

import logging
import queue
import threading
from types import TracebackType

from beamjobs.store import JobStore, Message

# Beam's mapping from Python log levels to message importance (as its own job servers do).
_IMPORTANCE = (
    (logging.ERROR, "JOB_MESSAGE_ERROR"),
    (logging.WARNING, "JOB_MESSAGE_WARNING"),
    (logging.INFO, "JOB_MESSAGE_BASIC"),
    (logging.DEBUG, "JOB_MESSAGE_DEBUG"),
)
# Our own traffic to DynamoDB must not become messages (nor loop back into this handler).
_IGNORED_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "beamjobs")
_FLUSH_SECONDS = 0.2
_BATCH = 50


def importance_of(levelno: int) -> str:
    for level, importance in _IMPORTANCE:
        if levelno >= level:
            return importance
    return "JOB_MESSAGE_DEBUG"


class MessageForwarder(logging.Handler):
    """A logging handler that queues records; a thread appends them to the job in batches.
    Leaving the context flushes everything, so messages precede the final state."""

    def __init__(
        self,
        store: JobStore,
        job_id: str,
        level: int = logging.INFO,
        formatter: logging.Formatter | None = None,
    ) -> None:
        super().__init__(level)
        self.setFormatter(formatter)
        self._store = store
        self._job_id = job_id
        self._queue: queue.Queue[Message | None] = queue.Queue()
        self._thread = threading.Thread(target=self._drain, name="messages", daemon=True)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(_IGNORED_LOGGERS):
            return
        try:
            text = self.format(record)
        except Exception:  # a broken log call must not break the pipeline
            self.handleError(record)
            return
        self._queue.put(Message(importance_of(record.levelno), text, record.created))

    def __enter__(self) -> MessageForwarder:
        self._thread.start()
        logging.getLogger().addHandler(self)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        logging.getLogger().removeHandler(self)
        self._queue.put(None)
        self._thread.join()

    def _drain(self) -> None:
        done = False
        while not done:
            batch: list[Message] = []
            try:
                item = self._queue.get(timeout=_FLUSH_SECONDS)
            except queue.Empty:
                continue
            while True:
                if item is None:
                    done = True
                    break
                batch.append(item)
                if len(batch) >= _BATCH or self._queue.empty():
                    break
                item = self._queue.get()
            if batch:
                self._store.append_messages(self._job_id, batch)
