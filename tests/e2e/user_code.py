"""User code for tests that run a worker themselves. Beam pickles these by reference, so the
worker imports this module: it imports nothing the workers' environment lacks."""

import os
import time
from pathlib import Path

import apache_beam as beam
from apache_beam.metrics import Metrics


def sleep_long(x):
    time.sleep(300)
    return x


def sleep_long_noting_pid(x, path):
    """Write the pid of the process running this (an EMBEDDED job's worker) to `path`, then
    sleep long."""
    Path(path).write_text(str(os.getpid()))
    return sleep_long(x)


def square(x):
    return x * x


def sleep_a_moment(x):
    time.sleep(3)
    return x


def sleep_briefly(x):
    time.sleep(8)
    return x


def wait_for_file(x, path):
    """Hold the pipeline until the test creates `path` (at most 5 minutes)."""
    import os

    deadline = time.monotonic() + 300
    while not os.path.exists(path) and time.monotonic() < deadline:
        time.sleep(0.2)
    return x


def what_the_job_can_reach(_):
    """Run as a job's code: what its environment names, and what reading another job's record
    with its credentials, where they point, answers."""
    import json
    import os

    import boto3

    names = ("BEAMJOBS_TABLE", "BEAMJOBS_BUCKET", "AWS_ENDPOINT_URL", "BEAMJOBS_WORKER_FUNCTION")
    seen = {name: os.environ.get(name) for name in names}
    try:
        boto3.client("dynamodb").get_item(
            TableName="beamjobs-jobs", Key={"pk": {"S": "job#other"}, "sk": {"S": "job"}}
        )
        seen["read"] = "answered"
    except Exception as error:  # what it answers is the point
        seen["read"] = type(error).__name__
    return json.dumps(seen)


class CountWords(beam.DoFn):
    """Splits lines into words, counting them in the counter dashboard:words."""

    def __init__(self):
        self.words = Metrics.counter("dashboard", "words")

    def process(self, line):
        for word in line.split():
            self.words.inc()
            yield word


class CountSlowly(beam.DoFn):
    """Counts each element in the counter progress:seen, a quarter second apart: a bundle that
    runs long enough to be seen counting."""

    def __init__(self):
        self.seen = Metrics.counter("progress", "seen")

    def process(self, element):
        time.sleep(0.25)
        self.seen.inc()
        yield element


def parse_number(word):
    """Fails on what is no number: a user's error, for the failure summaries."""
    if not word.isdigit():
        raise ValueError(f"not a number: {word!r}")
    return int(word)
