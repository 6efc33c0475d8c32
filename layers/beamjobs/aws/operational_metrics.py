"""Beamjobs' own CloudWatch metrics, in the embedded metric format (EMF): one JSON line on
stdout each, which CloudWatch Logs turns into metrics, in Lambda's log groups and ECS's alike.
The alarms and the dashboard of template.yaml read them, in the Beamjobs namespace. Locally
(POWERTOOLS_METRICS_DISABLED) nothing is written."""

from __future__ import annotations

from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.metrics.functions import is_metrics_disabled

from beamjobs.domain.model import Job
from beamjobs.domain.states import JobState, is_terminal

NAMESPACE = "Beamjobs"


def emit(name: str, unit: MetricUnit, value: float, **dimensions: str) -> None:
    if is_metrics_disabled():  # (single_metric itself prints whatever the variable says)
        return
    with single_metric(name=name, unit=unit, value=value, namespace=NAMESPACE) as metric:
        for dimension, label in dimensions.items():
            metric.add_dimension(name=dimension, value=label)


def job_moved(after: Job) -> None:
    """A job's move to a new state, as its one writer stored it (each move is one conditional
    write, so each is counted once, by whichever function or process made it): JobsEnded, by
    state; and RunToRunning, from Run to its worker's claim."""
    if after.state is JobState.RUNNING and after.started_at is not None:
        emit("RunToRunning", MetricUnit.Milliseconds, (after.state_time - after.started_at) * 1000)
    elif is_terminal(after.state):
        emit("JobsEnded", MetricUnit.Count, 1, state=after.state.value)
