"""`beamjobs jobs` as people run it: the command in a process of its own against `beamjobs
serve`, its JSON output read as a script would read it, its exit codes as a shell sees them."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import apache_beam as beam
import grpc
import pytest
from apache_beam.metrics import Metrics
from apache_beam.portability.api import beam_job_api_pb2 as api
from apache_beam.portability.api import beam_job_api_pb2_grpc
from apache_beam.runners.runner import PipelineState

from tests.e2e import user_code
from tests.e2e.conftest import EMBEDDED, ROOT, Process, free_port, options, serve

BULK_JOBS = 2500


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`beamjobs serve` on an embedded AWS of its own process, whose table the tests also
    write to directly (2,500 jobs are quicker stored than submitted)."""
    tmp = tmp_path_factory.mktemp("cli")
    aws_port, port = free_port(), free_port()
    aws = Process(["aws", "--port", str(aws_port)], tmp / "aws.log")
    aws.wait_for_port(aws_port)
    shim = serve(tmp, "shim", port, "--aws-endpoint", f"http://127.0.0.1:{aws_port}")
    try:
        yield f"localhost:{port}", f"http://127.0.0.1:{aws_port}"
    finally:
        shim.stop()
        aws.stop()


@pytest.fixture(scope="module")
def endpoint(server):
    return server[0]


def beamjobs(endpoint: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """`beamjobs jobs --endpoint ENDPOINT ARGS...`, its output not a terminal (so JSON)."""
    return subprocess.run(
        [sys.executable, "-m", "beamjobs.cli", "jobs", "--endpoint", endpoint, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
    )


def listed(endpoint: str, *args: str) -> list[dict]:
    done = beamjobs(endpoint, "list", *args)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _prepared(endpoint: str, name: str) -> str:
    """A job prepared and never run (STOPPED), named `name`: its id."""
    pipeline = beam.Pipeline()
    _ = pipeline | beam.Create([1])
    with grpc.insecure_channel(endpoint) as channel:
        prepared = beam_job_api_pb2_grpc.JobServiceStub(channel).Prepare(
            api.PrepareJobRequest(pipeline=pipeline.to_runner_api(), job_name=name)
        )
    return prepared.preparation_id


class Count(beam.DoFn):
    def __init__(self):
        self.words = Metrics.counter("cli", "words")

    def process(self, element):
        self.words.inc()
        yield element


def _word_count(endpoint: str, name: str):
    pipeline = beam.Pipeline(options=options(endpoint, "LOOPBACK", f"--job_name={name}"))
    _ = (
        pipeline
        | "Lines" >> beam.Create(["the cat", "the dog sat"])
        | "Split" >> beam.FlatMap(str.split)
        | "Count" >> beam.ParDo(Count())
        | "PerWord" >> beam.combiners.Count.PerElement()
    )
    result = pipeline.run()
    assert result.wait_until_finish() == PipelineState.DONE
    return result._job_id


@pytest.fixture(scope="module")
def finished(endpoint):
    """A word count run to DONE: its job id."""
    return _word_count(endpoint, "cli-count")


def test_list_filters_by_state_and_by_name(endpoint, finished):
    stopped = _prepared(endpoint, "cli-prepared")
    with grpc.insecure_channel(endpoint) as channel:
        beam_job_api_pb2_grpc.JobServiceStub(channel).Cancel(api.CancelJobRequest(job_id=stopped))

    done = listed(endpoint, "--state", "DONE", "--name", "cli-")
    cancelled = listed(endpoint, "--state", "CANCELLED", "--name", "cli-")
    both = listed(endpoint, "--name", "cli-", "--state", "DONE", "--state", "CANCELLED")

    assert [j["job_id"] for j in done] == [finished]
    assert [(j["job_id"], j["state"], j["job_name"]) for j in cancelled] == [
        (stopped, "CANCELLED", "cli-prepared")
    ]
    # Newest first.
    assert [j["job_id"] for j in both] == [stopped, finished]
    assert listed(endpoint, "--name", "cli-nothing") == []
    summary = done[0]
    assert summary["job_name"] == "cli-count" and summary["owner"] == "local"
    assert summary["engine"] == "local"
    assert summary["created_at"] <= summary["started_at"] <= summary["ended_at"]


def test_the_connection_flags_may_follow_the_command_and_win_there(endpoint, finished):
    # `beamjobs jobs list --endpoint … --format json`, as gcloud takes flags
    after = subprocess.run(
        [sys.executable, "-m", "beamjobs.cli", "jobs", "list", "--name", "cli-count"]
        + ["--endpoint", endpoint, "--format", "json"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert after.returncode == 0, after.stderr
    assert [j["job_id"] for j in json.loads(after.stdout)] == [finished]
    # ... and a command's own flag wins over the group's (a table, not the group's JSON)
    table = subprocess.run(
        [sys.executable, "-m", "beamjobs.cli", "jobs", "--format", "json", "describe"]
        + [finished, "--endpoint", endpoint, "--format", "table"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert table.returncode == 0, table.stderr
    assert "SHA256" in table.stdout and not table.stdout.lstrip().startswith("{")


def test_paging_through_2500_jobs_repeats_and_misses_none(server):
    from beamjobs import runtime
    from beamjobs.domain.model import Job
    from beamjobs.domain.states import JobState
    from beamjobs.local.embedded import local_settings, use_offline_credentials

    endpoint, aws_endpoint = server
    use_offline_credentials()
    store = runtime.stores(local_settings(aws_endpoint)).jobs
    start = time.time() - 10_000
    states = [JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.STOPPED]

    def create(index: int) -> str:
        job_id = f"bulk-{index:04d}"
        # Every tenth pair shares a creation time: the id orders them.
        at = start + (index - index % 10 % 2)
        store.create(
            Job(
                job_id=job_id,
                job_name=f"bulk-{index % 3}",
                state=states[index % 4],
                state_time=at,
                seq=1,
                created_at=at,
                pipeline_ref="pipelines/none",
                options_ref="options/none",
                options_json="{}",
                owner="local",
            )
        )
        return job_id

    with ThreadPoolExecutor(8) as pool:
        created = set(pool.map(create, range(BULK_JOBS)))

    everything = listed(endpoint, "--limit", "0", "--page-size", "333")
    bulk = [j["job_id"] for j in everything if j["job_id"].startswith("bulk-")]
    assert len(bulk) == len(set(bulk)) == BULK_JOBS
    assert set(bulk) == created
    times = [j["created_at"] for j in everything]
    assert times == sorted(times, reverse=True)

    # One state's index, and a filter on the name within it.
    failed = listed(endpoint, "--state", "FAILED", "--name", "bulk-1", "--limit", "0")
    expected = {f"bulk-{i:04d}" for i in range(BULK_JOBS) if i % 4 == 1 and i % 3 == 1}
    assert [j["job_id"] for j in failed if j["job_id"] in expected] == [j["job_id"] for j in failed]
    assert {j["job_id"] for j in failed} == expected

    # --limit stops early, newest first.
    first = listed(endpoint, "--name", "bulk-", "--limit", "5")
    assert [j["job_id"] for j in first] == bulk[:5]


def test_describe_says_when_where_and_what(endpoint, finished):
    done = beamjobs(endpoint, "describe", finished)
    assert done.returncode == 0, done.stderr
    detail = json.loads(done.stdout)

    assert detail["summary"]["job_id"] == finished
    assert detail["summary"]["state"] == "DONE"
    assert [e["state"] for e in detail["history"]] == ["STOPPED", "STARTING", "RUNNING", "DONE"]
    assert float(detail["run_duration"].rstrip("s")) > 0
    assert [e["urn"] for e in detail["environments"]] == ["beam:env:external:v1"]
    assert detail["worker"] == {"vcpu": 1.0, "memory_mb": 4096}
    assert detail["bounded"] is True
    assert all(a["staged"] for a in detail["artifacts"])


def test_metrics_shows_the_counter_wall_times_and_element_counts(endpoint, finished):
    done = beamjobs(endpoint, "metrics", finished)
    assert done.returncode == 0, done.stderr
    metrics = json.loads(done.stdout)

    [counter] = [m for m in metrics if m["kind"] == "counter"]
    assert (counter["namespace"], counter["name"]) == ("cli", "words")
    assert counter["committed"] == counter["attempted"] == 5
    assert "Count" in counter["step"]
    counts = [m for m in metrics if m["kind"] == "element_count"]
    assert counts and all(m["pcollection"] for m in counts)
    assert 5 in {m["committed"] for m in counts}
    # A PCollection is named after the step that produces it.
    by_name = {m["pcollection_name"]: m["committed"] for m in counts}
    assert (by_name["Split"], by_name["Count"]) == (5, 5)
    # Each step's wall time (Beam's execution-time metric), in milliseconds.
    walls = {m["step"]: m["committed"] for m in metrics if m["kind"] == "wall_time_ms"}
    assert {"Split", "Count"} <= set(walls) and all(ms >= 0 for ms in walls.values())


def test_graph_has_a_node_per_transform_that_runs(endpoint, finished):
    done = beamjobs(endpoint, "graph", finished)
    assert done.returncode == 0, done.stderr
    graph = json.loads(done.stdout)

    names = [node["name"] for node in graph["nodes"]]
    assert any(name.startswith("Split") for name in names)
    assert any(name.startswith("PerWord/") for name in names)
    ids = {node["transform_id"] for node in graph["nodes"]}
    assert graph["edges"] and all(e["source"] in ids and e["target"] in ids for e in graph["edges"])


def test_logs_prints_the_jobs_messages_by_importance(endpoint, finished):
    every = beamjobs(endpoint, "logs", finished)
    warnings = beamjobs(endpoint, "logs", finished, "--importance", "warning")
    assert every.returncode == warnings.returncode == 0, every.stderr + warnings.stderr

    messages = [json.loads(line) for line in every.stdout.splitlines()]
    assert messages and all(m["message_text"] for m in messages)
    important = [json.loads(line) for line in warnings.stdout.splitlines()]
    assert all(m["importance"] in ("JOB_MESSAGE_WARNING", "JOB_MESSAGE_ERROR") for m in important)
    assert len(important) < len(messages)


def test_logs_follow_ends_when_the_job_ends(endpoint):
    pipeline = beam.Pipeline(options=options(endpoint, EMBEDDED, "--job_name=cli-follow"))
    _ = pipeline | beam.Create([1]) | beam.Map(user_code.sleep_briefly)
    result = pipeline.run()

    following = beamjobs(endpoint, "logs", "-f", result._job_id, timeout=120)

    assert following.returncode == 0, following.stderr
    # It ended because the job did: the job is over when the command returns.
    state = beamjobs(endpoint, "describe", result._job_id)
    assert json.loads(state.stdout)["summary"]["state"] == "DONE"
    assert following.stdout.strip()
    result.wait_until_finish()


def test_cancel_stops_a_running_job(endpoint):
    pipeline = beam.Pipeline(options=options(endpoint, EMBEDDED, "--job_name=cli-cancel"))
    _ = pipeline | beam.Create([1]) | beam.Map(user_code.sleep_long)
    result = pipeline.run()
    waiter = threading.Thread(target=_final, args=(result,), daemon=True)
    waiter.start()
    deadline = time.monotonic() + 60
    while listed(endpoint, "--name", "cli-cancel", "--state", "RUNNING") == []:
        assert time.monotonic() < deadline, "the job never ran"
        time.sleep(0.2)

    cancelled = beamjobs(endpoint, "cancel", result._job_id)

    assert cancelled.returncode == 0, cancelled.stderr
    assert json.loads(cancelled.stdout)["state"] in ("CANCELLING", "CANCELLED")
    waiter.join(60)
    [job] = listed(endpoint, "--name", "cli-cancel")
    assert job["state"] == "CANCELLED"


def _final(result) -> None:
    with contextlib.suppress(RuntimeError):  # a cancelled job's wait raises
        result.wait_until_finish()


@pytest.mark.parametrize("command", ["describe", "cancel", "drain", "logs", "metrics", "graph"])
def test_an_unknown_job_exits_with_3(endpoint, command):
    done = beamjobs(endpoint, command, "no-such-job")
    assert done.returncode == 3
    assert "NOT_FOUND" in done.stderr and done.stdout == ""


def test_bad_usage_exits_with_2(endpoint):
    assert beamjobs(endpoint, "list", "--state", "SLEEPING").returncode == 2
    assert beamjobs(endpoint, "describe").returncode == 2
    assert beamjobs(endpoint, "list", "--created-after", "yesterday").returncode == 2


def test_an_unreachable_endpoint_fails_with_1():
    done = beamjobs(f"localhost:{free_port()}", "list", timeout=60)
    assert done.returncode == 1
    assert "UNAVAILABLE" in done.stderr


def test_a_table_is_shown_without_colour_when_not_on_a_terminal(endpoint, finished):
    done = beamjobs(endpoint, "--format", "table", "list", "--name", "cli-count")
    assert done.returncode == 0, done.stderr
    assert "JOB ID" in done.stdout and "cli-count" in done.stdout
    assert "\x1b[" not in done.stdout


def test_text_from_a_job_cannot_steer_the_terminal(server, finished):
    from beamjobs import runtime
    from beamjobs.domain.jobs import Jobs
    from beamjobs.domain.model import Message
    from beamjobs.local.embedded import local_settings, use_offline_credentials

    endpoint, aws_endpoint = server
    use_offline_credentials()
    store = runtime.stores(local_settings(aws_endpoint)).jobs
    hostile = "\x1b[2J\x1b]8;;https://evil.example\x07[red]boom[/red] \u202eexe.txt"
    Jobs(store).say(finished, [Message("JOB_MESSAGE_WARNING", hostile, time.time())])
    done = beamjobs(endpoint, "--format", "table", "logs", finished)
    assert done.returncode == 0, done.stderr
    [line] = [line for line in done.stdout.splitlines() if "boom" in line]
    # Shown as it is, markup and all, with each control character escaped.
    assert "\\u001b[2J\\u001b]8;;https://evil.example\\u0007[red]boom[/red] \\u202eexe.txt" in line
    assert not any(c in done.stdout for c in "\x1b\x07\u202e")


def test_a_unique_prefix_of_an_id_or_a_unique_name_names_a_job(endpoint, finished):
    def described(reference):
        done = beamjobs(endpoint, "describe", reference)
        assert done.returncode == 0, done.stderr
        return json.loads(done.stdout)["summary"]["job_id"]

    assert described(finished[: len("cli-count-") + 6]) == finished
    assert described("cli-count") == finished  # its name: no other job has it
    _prepared(endpoint, "cli-twice")
    _prepared(endpoint, "cli-twice")
    ambiguous = beamjobs(endpoint, "describe", "cli-twice")
    assert ambiguous.returncode == 2
    assert "names 2 jobs" in ambiguous.stderr and "give more of an id" in ambiguous.stderr
    nothing = beamjobs(endpoint, "logs", "no-job-is-named-so")
    assert nothing.returncode == 3 and "NOT_FOUND" in nothing.stderr


def test_a_table_80_columns_wide_keeps_whole_ids_and_says_how_long_jobs_ran(
    endpoint, finished, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "80")
    done = beamjobs(endpoint, "list", "--format", "table", "--name", "cli-count")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert "DURATION" in lines[0]
    assert any(finished in line for line in lines), done.stdout
    assert max(len(line) for line in lines) <= 80


def test_describe_logs_and_list_of_a_failed_job_say_why_once(endpoint, monkeypatch):
    pipeline = beam.Pipeline(options=options(endpoint, EMBEDDED, "--job_name=cli-fails"))
    _ = pipeline | beam.Create(["1", "two"]) | "Parse" >> beam.Map(user_code.parse_number)
    result = pipeline.run()
    with pytest.raises(RuntimeError, match="not a number"):  # as the SDK says a job failed
        result.wait_until_finish()
    assert result.state == PipelineState.FAILED
    done = beamjobs(endpoint, "describe", "cli-fails")
    assert done.returncode == 0, done.stderr
    detail = json.loads(done.stdout)
    assert detail["failure"].startswith("ValueError: not a number: 'two'")
    assert "(at user_code.py:" in detail["failure"] and "in parse_number)" in detail["failure"]
    assert detail["failed_step"] == "Parse"
    table = beamjobs(endpoint, "describe", "cli-fails", "--format", "table")
    assert "failure" in table.stdout and "ValueError: not a number" in table.stdout
    # The traceback is stored once: the user's frames, under the step's line.
    logs = beamjobs(endpoint, "logs", "cli-fails", "--format", "json")
    texts = [json.loads(line)["message_text"] for line in logs.stdout.splitlines()]
    told = [text for text in texts if "not a number" in text]
    assert len(told) == 1 and told[0].count("Traceback") == 1, told
    assert told[0].endswith("ValueError: not a number: 'two' [while running 'Parse']")
    listed = beamjobs(endpoint, "list", "--name", "cli-fails", "--format", "json")
    assert [job["failure"] for job in json.loads(listed.stdout)] == [detail["failure"]]
    monkeypatch.setenv("COLUMNS", "160")
    wide = beamjobs(endpoint, "list", "--name", "cli-fails", "--format", "table")
    assert "FAILURE" in wide.stdout.splitlines()[0] and "ValueError" in wide.stdout


def test_counters_rise_while_a_loopback_bundle_runs(endpoint):
    """Progress from a harness of the SDK's own process (LOOPBACK), asked over its control
    channel while its one bundle runs."""
    pipeline = beam.Pipeline(options=options(endpoint, "LOOPBACK", "--job_name=cli-progress"))
    _ = (
        pipeline
        | beam.Create(list(range(40)))
        | beam.Reshuffle()  # one bundle for all: counts come from its progress, not its end
        | "Count slowly" >> beam.ParDo(user_code.CountSlowly())
    )
    result = pipeline.run()

    def seen() -> tuple[int, str]:
        metrics = json.loads(beamjobs(endpoint, "metrics", result._job_id).stdout)
        counted = [m["attempted"] for m in metrics if m["name"] == "seen"]
        state = json.loads(beamjobs(endpoint, "describe", result._job_id).stdout)
        return (counted[0] if counted else 0), state["summary"]["state"]

    readings = []
    deadline = time.monotonic() + 60
    while len({count for count, state in readings if state == "RUNNING" and count}) < 2:
        assert time.monotonic() < deadline, readings
        readings.append(seen())
        time.sleep(0.5)
    assert result.wait_until_finish() == PipelineState.DONE
    assert seen() == (40, "DONE")
