"""Forward the worker's log records to the job as JobMessages, in order, in batches."""

from __future__ import annotations

import logging
import queue
import threading
import time
from types import TracebackType

from beamjobs.domain.errors import BeamjobsError
from beamjobs.domain.model import Message, message_batches, utf8_size
from beamjobs.worker.batching import gather
from beamjobs.worker.channel import Reports

logger = logging.getLogger(__name__)

# Python log levels as message importance. JOB_MESSAGE_ERROR is kept for a failed job's cause
# (beamjobs.domain.jobs): Beam's Java SDK reports the first ERROR message of a failed job as its
# failure, the Python SDK the last, so there must be only that one. A record logged at ERROR or
# above (by user code, an SDK harness, the runner) is a warning that names its level.
_IMPORTANCE = (
    (logging.WARNING, "JOB_MESSAGE_WARNING"),
    (logging.INFO, "JOB_MESSAGE_BASIC"),
    (logging.DEBUG, "JOB_MESSAGE_DEBUG"),
)
# Our own traffic to DynamoDB must not become messages (nor loop back into this handler).
_IGNORED_LOGGERS = ("botocore", "boto3", "urllib3", "s3transfer", "beamjobs")
_FLUSH_SECONDS = 0.2
_BATCH = 50
# Bytes of messages waiting to be stored, at most (then new ones are dropped, and counted).
QUEUE_LIMIT_BYTES = 16 * 1024 * 1024
# A failed append is tried again after a wait that doubles from the flush interval up to
# this: a throttled job is not to be called ten times a second, which keeps it throttled.
_RETRY_WAIT_SECONDS = 20.0
# Once the job's work ended, what is still unstored is tried for this long (past a minute's
# throttle), then given up: the job's outcome waits for it.
_STORE_AFTER_END_SECONDS = 120.0
# Bytes of messages a job stores a second, at most: a quarter of what one DynamoDB partition
# takes (1,000 WCU/s, a WCU a KB), so that a chatty job never throttles its own heartbeat and
# outcome, which share its partition. What comes faster waits in the queue (QUEUE_LIMIT_BYTES
# of it: about a minute at this rate), so a job that logged heavily just before it ended waits
# for them.
MESSAGE_BYTES_PER_SECOND = 250 * 1024


def importance_of(levelno: int) -> str:
    for level, importance in _IMPORTANCE:
        if levelno >= level:
            return importance
    return "JOB_MESSAGE_DEBUG"


class MessageForwarder(logging.Handler):
    """A logging handler that queues records; a thread appends them to the job in batches.
    Leaving the context flushes everything, so messages precede the final state.

    A batch whose append failed (botocore already retried it: DynamoDB throttles a job that
    logs heavily, Lambda the worker channel) stays first in line and is tried again after a
    growing wait, so nothing is lost and the order holds. The queue is bounded in bytes: past
    QUEUE_LIMIT_BYTES waiting, new messages are dropped and counted, and a warning saying how
    many follows once there is room again. They are stored at most `bytes_per_second`."""

    def __init__(
        self,
        job: Reports,
        level: int = logging.INFO,
        formatter: logging.Formatter | None = None,
        *,
        flush_seconds: float = _FLUSH_SECONDS,
        bytes_per_second: float = MESSAGE_BYTES_PER_SECOND,
    ) -> None:
        super().__init__(level)
        self.setFormatter(formatter)
        self._job = job
        self._flush_seconds = flush_seconds
        self._pace = _Pace(bytes_per_second)
        self._queue: queue.Queue[Message | None] = queue.Queue()
        self._queued_bytes = 0
        self._dropped = 0
        self._counting = threading.Lock()
        self._thread = threading.Thread(target=self._drain, name="messages", daemon=True)

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith(_IGNORED_LOGGERS):
            return
        try:
            text = self.format(record)
        except Exception:  # a broken log call must not break the pipeline
            self.handleError(record)
            return
        if record.levelno >= logging.ERROR:
            text = f"{record.levelname}: {text}"
        self._enqueue(Message(importance_of(record.levelno), text, record.created))

    def say(self, importance: str, text: str) -> None:
        """Queue a message of the worker's own (e.g. progress), stored like the job's logs."""
        self._enqueue(Message(importance, text, self._job.now()))

    def _enqueue(self, message: Message) -> None:
        size = utf8_size(message.text)
        with self._counting:
            if self._queued_bytes + size > QUEUE_LIMIT_BYTES:
                self._dropped += 1
                return
            self._queued_bytes += size
        self._queue.put_nowait(message)

    def _dequeued(self, message: Message) -> None:
        with self._counting:
            self._queued_bytes -= utf8_size(message.text)

    def _take_dropped(self) -> int:
        with self._counting:
            dropped, self._dropped = self._dropped, 0
            return dropped

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
        pending: list[Message] = []
        done = False
        give_up_at = 0.0  # once done
        wait = self._flush_seconds  # before the next try of a failed append
        while True:
            if not pending:  # a new batch: what was dropped is said first
                dropped = self._take_dropped()
                if dropped:
                    pending.append(
                        Message(
                            "JOB_MESSAGE_WARNING",
                            f"{dropped} log messages were dropped: the job logged faster "
                            "than they could be stored",
                            self._job.now(),
                        )
                    )
                if not done:
                    done = self._collect(pending)
                    if done:
                        give_up_at = time.monotonic() + _STORE_AFTER_END_SECONDS
            # One event per call, so a failure leaves exactly the unstored ones pending.
            for batch in message_batches(pending):
                self._pace.wait()
                try:
                    self._job.say(batch)
                except BeamjobsError:
                    if done and time.monotonic() + wait > give_up_at:
                        logger.error("messages of job %s could not be stored", self._job.job_id)
                        return
                    logger.warning("storing messages of job %s failed: retrying", self._job.job_id)
                    time.sleep(wait)
                    wait = min(wait * 2, _RETRY_WAIT_SECONDS)
                    break
                wait = self._flush_seconds
                self._pace.spent(sum(utf8_size(message.text) for message in batch))
                pending = pending[len(batch) :]
            else:
                pending = []
            if done and not pending and not self._dropped:
                return

    def _collect(self, batch: list[Message]) -> bool:
        """Add what waits in the queue to `batch`, up to a batch's worth: waiting a flush
        interval for something, then up to one more for what follows it, so that a burst (a
        short job's whole log) is one call rather than one per record. Return whether the end
        of the stream was reached (which is never waited for)."""
        done = gather(
            self._queue, batch, limit=_BATCH, wait=self._flush_seconds, taken=self._dequeued
        )
        lingering_until = time.monotonic() + self._flush_seconds
        while batch and not done and len(batch) < _BATCH:
            left = lingering_until - time.monotonic()
            if left <= 0:
                break
            done = gather(self._queue, batch, limit=_BATCH, wait=left, taken=self._dequeued)
        return done


class _Pace:
    """At most `per_second` bytes a second on average: each store waits until what the ones
    before it stored is paid for (the first goes at once)."""

    def __init__(self, per_second: float) -> None:
        self._per_second = per_second
        self._next = 0.0

    def wait(self) -> None:
        delay = self._next - time.monotonic()
        if delay > 0:
            time.sleep(delay)

    def spent(self, size: int) -> None:
        self._next = max(self._next, time.monotonic()) + size / self._per_second
