"""The shim's own gauges, as CloudWatch metrics once a minute (beamjobs.aws.operational_metrics):
StreamSubscribers, the streams it serves; and ChangeFeedLag, how far behind the change feed
reads, as Lambda's IteratorAge says it of a stream's consumers (the age of the newest record of
each read, the worst of the minute; 0 when it read none, as an idle feed that is current does)."""

from __future__ import annotations

import asyncio
import contextlib

from aws_lambda_powertools.metrics import MetricUnit

from beamjobs.aws.operational_metrics import emit
from beamjobs.shim.changefeed import ChangeFeed

GAUGE_SECONDS = 60.0


class Gauges:
    def __init__(self, feed: ChangeFeed, interval: float = GAUGE_SECONDS) -> None:
        self._feed = feed
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._publish_forever())

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def publish(self) -> None:
        emit("StreamSubscribers", MetricUnit.Count, self._feed.subscriber_count)
        emit("ChangeFeedLag", MetricUnit.Milliseconds, self._feed.take_lag() * 1000)

    async def _publish_forever(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.publish()
