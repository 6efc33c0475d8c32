"""Saying that a reader of many items skipped a malformed one (beamjobs.domain.poison): its key
and why, as a log line and a MalformedItems metric."""

from __future__ import annotations

import logging
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit

from beamjobs.aws.operational_metrics import emit

logger = logging.getLogger(__name__)

METRIC = "MalformedItems"


def skipped(reader: str, key: Any, error: Exception) -> None:
    """Report an item `reader` skipped: its key and why, as a log line and a metric (in
    CloudWatch's embedded metric format, which Lambda's and ECS's logs both carry)."""
    logger.error("%s skipped a malformed item %s: %s", reader, key, error)
    emit(METRIC, MetricUnit.Count, 1, reader=reader)
