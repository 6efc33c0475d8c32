"""The answers the query routes build once: what crosses from a handler to the shim as JSON is
the same message on both sides."""

from dataclasses import replace

import pytest
from google.protobuf import struct_pb2

from beamjobs.app import answers
from beamjobs.app.service import JobDetail, JobInfo, MessagePage
from beamjobs.domain.model import Job, Message, Upstream
from beamjobs.domain.options import SERVICE_OPTIONS
from beamjobs.domain.states import JobState
from beamjobs.pipeline.summary import ArtifactView, EnvironmentView
from beamjobs.proto_json import from_answer, to_answer

RUNNING = Job(
    job_id="wordcount-1",
    job_name="wordcount",
    state=JobState.RUNNING,
    state_time=1_700_000_010.25,
    seq=3,
    created_at=1_700_000_000.5,
    pipeline_ref="p",
    options_ref="o",
    started_at=1_700_000_005.125,
    owner="arn:aws:iam::123456789012:user/alice",
    engine="flink",
    upstream=Upstream("upstream-7", "12"),
)
DONE = replace(RUNNING, state=JobState.DONE, state_time=1_700_000_020.0)


def _detail(job):
    return JobDetail(
        job,
        [(JobState.STOPPED, 1_700_000_000.5), (job.state, job.state_time)],
        [EnvironmentView("env", "beam:env:docker:v1", "apache/beam_python3.11_sdk:2.77.0")],
        [ArtifactView("env", "pkg.tar.gz", "ab" * 32, True)],
        0.25,
        512,
    )


@pytest.mark.parametrize(
    "message",
    [
        answers.job_list([RUNNING, DONE], "next"),
        answers.job_detail(_detail(RUNNING), now=1_700_000_030.0),
        answers.job_detail(_detail(DONE), now=1_700_000_030.0),
        answers.message_page(
            MessagePage([("3-0", Message("JOB_MESSAGE_ERROR", "boom", 1_700_000_011.5))], "3", True)
        ),
        answers.job_infos([JobInfo("j", "name", JobState.STOPPED, {"a": "1", "n": 2.0})]),
        answers.option_descriptors(SERVICE_OPTIONS),
    ],
    ids=["list", "detail-running", "detail-done", "messages", "get-jobs", "options"],
)
def test_a_handlers_answer_reads_back_as_the_same_message(message):
    assert from_answer(to_answer(message), type(message)()) == message


def test_a_summary_has_its_times_and_no_end_before_the_job_ends():
    running = answers.job_summary(RUNNING)
    assert running.HasField("started_at") and not running.HasField("ended_at")
    assert running.upstream_job_id == "upstream-7" and running.engine == "flink"
    done = answers.job_summary(DONE)
    assert done.ended_at.ToNanoseconds() == 1_700_000_020 * 10**9


def test_a_running_jobs_duration_runs_to_now_and_an_ended_ones_to_its_end():
    assert answers.job_detail(
        _detail(RUNNING), now=1_700_000_030.0
    ).run_duration.ToNanoseconds() == (24_875_000_000)
    assert answers.job_detail(_detail(DONE), now=1_700_000_030.0).run_duration.ToNanoseconds() == (
        14_875_000_000
    )
    never_run = replace(RUNNING, state=JobState.STOPPED, started_at=None)
    assert not answers.job_detail(_detail(never_run), now=0.0).HasField("run_duration")


def test_get_jobs_answers_options_as_beams_servers_do_even_when_empty():
    [info] = answers.job_infos([JobInfo("j", "name", JobState.STOPPED, {})]).job_info
    assert info.HasField("pipeline_options") and info.pipeline_options == struct_pb2.Struct()
