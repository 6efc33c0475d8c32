"""A job's code holds nothing beyond its own job: run by a local worker, it finds in its
environment no table, no bucket and no AWS endpoint, only its worker channel, which answers
for its own job alone (tests/integration/test_worker_channel.py; on AWS, the worker task's role
reaches only that channel: tests/integration/test_deploy.py)."""

import json

import apache_beam as beam

from tests.e2e import user_code
from tests.e2e.conftest import options


def test_a_jobs_code_finds_only_its_worker_channel(endpoint, tmp_path):
    output = tmp_path / "seen"
    with beam.Pipeline(options=options(endpoint)) as pipeline:
        _ = (
            pipeline
            | beam.Create([None])
            | beam.Map(user_code.what_the_job_can_reach)
            | beam.io.WriteToText(str(output), shard_name_template="")
        )
    seen = json.loads(output.read_text())
    assert seen["BEAMJOBS_TABLE"] is None and seen["BEAMJOBS_BUCKET"] is None
    assert seen["BEAMJOBS_WORKER_FUNCTION"] == "worker"
    # Its only endpoint is its channel, which is no DynamoDB: reading a record fails.
    assert seen["AWS_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert seen["read"] != "answered", seen
