"""A chatty job's messages are stored at a bounded rate (MESSAGE_BYTES_PER_SECOND), so they
never take its DynamoDB partition from its heartbeat and outcome: in order, none lost."""

import logging
import threading
import time

from beamjobs.domain.model import utf8_size
from beamjobs.worker.messages import MESSAGE_BYTES_PER_SECOND, MessageForwarder

log = logging.getLogger("user.chatty")
LINE = "y" * 10_000


class RecordingJob:
    """The worker channel's reports, recording when each batch was stored and its bytes."""

    job_id = "chatty"

    def __init__(self) -> None:
        self.stored: list[tuple[float, int, list[str]]] = []
        self._lock = threading.Lock()

    def now(self) -> float:
        return time.time()

    def say(self, batch) -> None:
        with self._lock:
            texts = [m.text for m in batch]
            self.stored.append((time.monotonic(), sum(utf8_size(t) for t in texts), texts))


def test_a_chatty_jobs_messages_are_stored_at_the_bounded_rate_in_order():
    # Given a bound of 200 KB/s, and a pipeline that logs 600 KB at once
    job = RecordingJob()
    rate = 200_000
    started = time.monotonic()
    with MessageForwarder(job, logging.WARNING, flush_seconds=0.05, bytes_per_second=rate):
        for i in range(60):
            log.warning("%d %s", i, LINE)
    ended = time.monotonic()
    # Then each batch was stored only once the ones before it were paid for at the bound
    # (the first went at once), and everything arrived, in order
    total = sum(size for _, size, _ in job.stored)
    assert ended - started >= (total - job.stored[-1][1]) / rate
    for index, (at, _, _) in enumerate(job.stored):
        before = sum(size for _, size, _ in job.stored[:index])
        assert at - job.stored[0][0] >= before / rate - 0.01
    texts = [text for _, _, batch in job.stored for text in batch]
    assert [int(text.split()[0]) for text in texts] == list(range(60))


def test_the_default_bound_leaves_most_of_a_partition_to_the_heartbeat_and_outcome():
    # DynamoDB: 1,000 write units a second per partition, a unit per KB written.
    assert MESSAGE_BYTES_PER_SECOND / 1024 <= 1000 / 4


def test_records_logged_within_a_flush_interval_of_the_first_are_stored_in_one_call():
    # Given records logged over 60 ms, within the 200 ms flush interval of the first
    job = RecordingJob()
    with MessageForwarder(job, logging.WARNING, flush_seconds=0.2):
        for i in range(4):
            log.warning("burst %d", i)
            time.sleep(0.02)
        time.sleep(0.3)  # the job goes on, silent
        log.warning("later")
    # Then the burst is one call, and what came after the interval another
    assert [texts for _, _, texts in job.stored] == [
        [f"burst {i}" for i in range(4)],
        ["later"],
    ]
