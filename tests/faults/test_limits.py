"""The limits AWS enforces and moto does not, measured as AWS measures them."""

import json

import urllib3

from beamjobs.domain.jobs import Jobs
from beamjobs.domain.model import Message
from beamjobs.domain.states import JobState
from beamjobs.domain.worker_secrets import secret_sha256
from beamjobs.local.invoker import LocalContext
from tests.integration.conftest import EVENTS, make_job, pipeline_bytes, signed
from tests.jobstates import advance

# What a Lambda function may answer with, at most.
LAMBDA_RESPONSE_BYTES = 6 * 1024 * 1024


def test_message_batches_fit_dynamodbs_item_limit_in_utf8_bytes(stores, faults):
    # Given AWS's 400 KB item limit, and 50 messages of 6,000 '€' (18,000 bytes each, 900 KB)
    faults.enforce_item_limit()
    stores.jobs.create(make_job("euros"))
    messages = [Message("JOB_MESSAGE_BASIC", "€" * 6000, float(i)) for i in range(50)]
    # When they are appended
    Jobs(stores.jobs).say("euros", messages)
    # Then all of them are stored, in order, and no item was refused
    stored = [m for e in stores.jobs.events("euros") for m in e.messages]
    assert [m.time for m in stored] == [float(i) for i in range(50)]
    assert ("PutItem", "item_limit") not in faults.fired


def test_a_message_over_the_item_limit_in_bytes_is_cut_and_says_so(stores, faults):
    faults.enforce_item_limit()
    stores.jobs.create(make_job("huge"))
    Jobs(stores.jobs).say("huge", [Message("JOB_MESSAGE_ERROR", "€" * 200_000, 1.0)])
    [message] = stores.jobs.events("huge")[-1].messages
    assert message.text.startswith("€" * 1000) and "600000 bytes in all" in message.text
    assert ("PutItem", "item_limit") not in faults.fired


def test_get_jobs_fits_a_lambda_response_whatever_the_number_of_jobs(stores, executor):
    # Given 1,800 jobs of the caller's with 3.5 KB of options each (6.3 MB in all: past
    # Lambda's 6 MB answer)
    event = json.loads((EVENTS / "query_get_jobs.json").read_text())
    options = json.dumps({"beam:option:job_name:v1": "x" * 3500})
    for i in range(1800):
        stores.jobs.create(
            make_job(
                f"job-{i:04d}",
                created=1000.0 + i,
                options_json=options,
                owner=event["caller"]["principal"],
            )
        )
    # When GetJobs is answered by the query function
    from beamjobs_functions.query.app import lambda_handler

    answer = lambda_handler(signed(event), LocalContext(function_name="query"))
    # Then the answer fits, and holds the newest jobs, newest first
    assert len(json.dumps(answer).encode()) < LAMBDA_RESPONSE_BYTES
    ids = [job["job_id"] for job in answer["result"]["job_info"]]
    assert 1000 >= len(ids) > 900
    assert ids == [f"job-{i:04d}" for i in range(1799, 1799 - len(ids), -1)]


# A presigned S3 URL as a Lambda function signs it (its session token is about 1,000
# characters); the embedded AWS's are about 115 bytes.
AWS_PRESIGNED_URL_BYTES = 1500


def test_a_job_of_500_artifacts_is_claimed_within_the_item_limit(stores, faults):
    # Given AWS's 400 KB item limit, and a STARTING job with 500 staged artifacts (a Java
    # pipeline stages its whole classpath)
    faults.enforce_item_limit()
    digests = []
    for i in range(500):
        upload = stores.artifacts.upload(max_bytes=1024, quota_bytes=1024 * 1024)
        upload.write(f"jar {i}".encode())
        digests.append(upload.finish())
    claim = json.loads((EVENTS / "worker_claim.json").read_text())
    stores.jobs.create(
        make_job(
            "mine",
            pipeline_ref=stores.blobs.put_content("pipelines", pipeline_bytes()),
            options_ref=stores.blobs.put_content("options", b"{}"),
            worker_secret_sha256=secret_sha256(claim["request"]["worker_secret"]),
            artifacts=tuple(digests),
        )
    )
    advance(stores.jobs, "mine", JobState.STARTING)
    from beamjobs_functions.worker.app import lambda_handler as worker

    # When its worker claims it, and claims again (the first answer lost)
    first = worker(claim, LocalContext(function_name="worker"))
    again = worker(claim, LocalContext(function_name="worker"))
    # Then both answers are the claim (the second finds its claim on the job's log), no item
    # passed the limit, and every artifact is read by its URL
    assert first["result"]["claimed"] and again["result"]["claimed"], first.get("error")
    assert again["result"]["job"] == first["result"]["job"]
    assert ("UpdateItem", "item_limit") not in faults.fired
    # ... and the answer holds no URL per artifact: on AWS, 500 of them would be 750 KB
    assert len(json.dumps(first).encode()) < 64 * 1024 < 500 * AWS_PRESIGNED_URL_BYTES
    urls = json.loads(urllib3.request("GET", first["result"]["artifacts_url"]).data)
    assert sorted(urls) == sorted(digests)
    assert urllib3.request("GET", urls[digests[499]]).data == b"jar 499"
