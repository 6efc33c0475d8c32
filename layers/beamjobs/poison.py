"""Malformed items: a reader of many items (the change feed, GetJobs, the reconciler) that meets
one skips it, logs its key, counts it in the MalformedItems metric, and goes on serving every
other item. A malformed job still answers its own requests, with DATA_LOSS."""

from __future__ import annotations

import logging
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric

from beamjobs.errors import MalformedItem

logger = logging.getLogger(__name__)

NAMESPACE = "Beamjobs"
METRIC = "MalformedItems"


def skipped(reader: str, key: Any, error: Exception) -> None:
    """Report an item `reader` skipped: its key and why, as a log line and a metric (in
    CloudWatch's embedded metric format, which Lambda's and ECS's logs both carry)."""
    logger.error("%s skipped a malformed item %s: %s", reader, key, error)
    with single_metric(name=METRIC, unit=MetricUnit.Count, value=1, namespace=NAMESPACE) as metric:
        metric.add_dimension(name="reader", value=reader)


def malformed(key: Any, error: Exception) -> MalformedItem:
    return MalformedItem(f"the stored item {key} is malformed ({type(error).__name__}: {error})")


# What reading a malformed item raises before it is recognised as one.
DECODING_ERRORS = (KeyError, ValueError, TypeError, AttributeError, ArithmeticError)
