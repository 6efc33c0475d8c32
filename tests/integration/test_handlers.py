"""Every function invoked with its events/ file (as `sam local invoke -e` would), on moto."""

import json
import time

import pytest

from beamjobs.api import pipeline_pb2
from beamjobs.domain import caller_claims
from beamjobs.domain.states import JobState
from beamjobs.local.invoker import LocalContext
from beamjobs.pipeline.artifacts import FILE
from beamjobs.pipeline.dependencies import reference
from beamjobs_functions.control.app import lambda_handler as control
from beamjobs_functions.query.app import lambda_handler as query
from tests.integration.conftest import CALLER_KEY, EVENTS, make_job, pipeline_bytes
from tests.jobstates import advance


def _event(name):
    return json.loads((EVENTS / f"{name}.json").read_text())


def _invoke(handler, event, *, key=CALLER_KEY):
    """Invoke as the shim does: the event's caller signed (with `key`; None: unsigned)."""
    if key is not None and isinstance(event, dict):
        event = caller_claims.signed(key.encode(), event)
    return handler(event, LocalContext(function_name=handler.__module__))


def _with_request_id(event, request_id):
    return {**event, "request_id": request_id}


# The caller of every events/ file, and another principal of the same account.
ALICE = _event("control_run")["caller"]["principal"]
BOB = {"principal": "arn:aws:iam::123456789012:user/bob", "admin": False}


def _as(caller, event):
    return {**event, "caller": caller}


@pytest.fixture
def prepared(stores, executor):
    """The job that the events name, prepared (STOPPED)."""
    job_id = _event("control_run")["request"]["preparation_id"]
    stores.blobs.put("pipelines/example", pipeline_bytes())
    stores.blobs.put("options/example", b"{}")
    stores.jobs.create(
        make_job(
            job_id,
            job_name="wordcount",
            pipeline_ref="pipelines/example",
            options_ref="options/example",
            owner=ALICE,
        )
    )
    return job_id


def test_prepare_records_a_stopped_job_named_by_the_users_job_name(stores, executor):
    event = _event("control_prepare")
    stores.blobs.put(event["request"]["pipeline_ref"], pipeline_bytes())
    answer = _invoke(control, event)
    job_id = answer["result"]["preparation_id"]
    job = stores.jobs.get(job_id)
    assert (job.job_name, job.state) == ("wordcount", JobState.STOPPED)
    assert job_id.startswith("wordcount-") and len(job_id) == len("wordcount-") + 32


def test_a_retried_prepare_answers_the_same_preparation_and_a_new_call_a_new_one(stores, executor):
    event = _event("control_prepare")
    stores.blobs.put(event["request"]["pipeline_ref"], pipeline_bytes())
    first = _invoke(control, event)["result"]["preparation_id"]
    assert _invoke(control, event)["result"]["preparation_id"] == first
    other = _invoke(control, _with_request_id(event, "another-call"))["result"]["preparation_id"]
    assert other != first
    assert len(stores.jobs.list_jobs()) == 2


def test_prepare_of_something_that_is_not_a_pipeline_is_an_invalid_argument(stores, executor):
    event = _event("control_prepare")
    stores.blobs.put(event["request"]["pipeline_ref"], b"\x0a\xff\xff not a pipeline")
    assert _invoke(control, event)["error"]["code"] == "INVALID_ARGUMENT"


def test_run_starts_the_job_once(prepared, stores, executor):
    answer = _invoke(control, _event("control_run"))
    assert answer == {"result": {"job_id": prepared}}
    assert stores.jobs.get(prepared).state is JobState.STARTING
    assert executor.started == [prepared]
    # A retry of the same call gets the same answer, and starts the work again (no record is
    # kept of a Run: the job aggregate starts a job once, and the executors' start is
    # idempotent), as a retry with another request id does below.
    assert _invoke(control, _event("control_run")) == answer
    assert executor.started == [prepared, prepared]
    # A Run retried with a new request id (the client's own retry, its first answer lost)
    # answers the job too, and starts its work again while it is STARTING: starting is
    # idempotent, and that heals a Run that died between STARTING and the start.
    again = _invoke(control, _with_request_id(_event("control_run"), "second-run"))
    assert again == answer
    assert executor.started == [prepared, prepared, prepared]
    assert [e.state for e in stores.jobs.events(prepared)] == [JobState.STOPPED, JobState.STARTING]


def test_a_run_after_the_job_moved_on_answers_its_id_and_starts_nothing(prepared, stores, executor):
    _invoke(control, _event("control_run"))
    advance(stores.jobs, prepared, JobState.RUNNING)
    again = _invoke(control, _with_request_id(_event("control_run"), "late-retry"))
    assert again == {"result": {"job_id": prepared}}
    assert executor.started == [prepared]


def test_run_of_an_unknown_preparation_is_not_found(stores, executor):
    assert _invoke(control, _event("control_run"))["error"]["code"] == "NOT_FOUND"


def test_cancel_of_a_job_never_run_cancels_it_at_once(prepared, stores, executor):
    assert _invoke(control, _event("control_cancel")) == {"result": {"state": "CANCELLED"}}
    assert executor.stopped == []


def test_cancel_of_a_running_job_stops_its_work(prepared, stores, executor):
    advance(stores.jobs, prepared, JobState.STARTING)
    advance(stores.jobs, prepared, JobState.RUNNING)
    assert _invoke(control, _event("control_cancel")) == {"result": {"state": "CANCELLING"}}
    assert executor.stopped == [prepared]


def test_a_cancel_retried_after_a_crash_before_the_stop_stops_the_work(prepared, stores, executor):
    # Given a Cancel that wrote CANCELLING and died before it stopped the work
    advance(stores.jobs, prepared, JobState.STARTING)
    advance(stores.jobs, prepared, JobState.CANCELLING)
    # When the Cancel is retried, it answers the same and stops the work (stopping is idempotent)
    assert _invoke(control, _event("control_cancel")) == {"result": {"state": "CANCELLING"}}
    assert executor.stopped == [prepared]


def test_cancel_of_a_finished_job_answers_its_final_state(prepared, stores, executor):
    for state in (JobState.STARTING, JobState.RUNNING, JobState.DONE):
        advance(stores.jobs, prepared, state)
    assert _invoke(control, _event("control_cancel")) == {"result": {"state": "DONE"}}


def test_drain_of_a_batch_pipeline_says_to_use_cancel(prepared, stores, executor):
    answer = _invoke(control, _event("control_drain"))
    assert answer["error"]["code"] == "FAILED_PRECONDITION"
    assert "use Cancel" in answer["error"]["message"]


def test_drain_of_a_running_streaming_pipeline_drains_it(stores, executor):
    job_id = _event("control_drain")["request"]["job_id"]
    stores.jobs.create(make_job(job_id, job_name="stream", bounded=False, owner=ALICE))
    assert _invoke(control, _event("control_drain"))["error"]["code"] == "FAILED_PRECONDITION"
    advance(stores.jobs, job_id, JobState.STARTING)
    advance(stores.jobs, job_id, JobState.RUNNING)
    assert _invoke(control, _event("control_drain")) == {"result": {"state": "DRAINING"}}
    assert executor.stopped == [job_id]


def test_get_jobs_lists_names_states_and_options(prepared, stores):
    [job] = _invoke(query, _event("query_get_jobs"))["result"]["job_info"]
    assert job == {
        "job_id": prepared,
        "job_name": "wordcount",
        "state": "STOPPED",
        "pipeline_options": {},
    }


def test_prepare_records_the_caller_as_the_jobs_owner(stores, executor):
    event = _event("control_prepare")
    stores.blobs.put(event["request"]["pipeline_ref"], pipeline_bytes())
    job_id = _invoke(control, event)["result"]["preparation_id"]
    assert stores.jobs.get(job_id).owner == ALICE


@pytest.mark.parametrize(
    "name",
    [
        "control_run",
        "control_cancel",
        "control_drain",
        "query_get_state",
        "query_get_pipeline",
        "query_get_job_metrics",
        "query_get_job",
        "query_list_messages",
    ],
)
def test_another_principals_job_is_not_found_and_left_as_it_was(prepared, stores, executor, name):
    handler = query if name.startswith("query") else control
    before = stores.jobs.get(prepared)
    answer = _invoke(handler, _as(BOB, _event(name)))
    assert answer == {"error": {"code": "NOT_FOUND", "message": f"job {prepared!r} does not exist"}}
    assert stores.jobs.get(prepared) == before
    assert executor.started == [] and executor.stopped == []


def test_get_jobs_lists_the_callers_jobs_and_an_admins_lists_every_job(prepared, stores):
    stores.jobs.create(make_job("bobs", owner=BOB["principal"]))
    listed = {
        who: [
            j["job_id"]
            for j in _invoke(query, _as(caller, _event("query_get_jobs")))["result"]["job_info"]
        ]
        for who, caller in (
            ("alice", _event("query_get_jobs")["caller"]),
            ("bob", BOB),
            ("admin", {"principal": "arn:aws:iam::123456789012:user/ops", "admin": True}),
        )
    }
    assert listed == {"alice": [prepared], "bob": ["bobs"], "admin": ["bobs", prepared]}


def test_list_jobs_lists_the_callers_jobs_that_its_filters_admit(prepared, stores):
    stores.jobs.create(make_job("bobs", job_name="wordcount", owner=BOB["principal"]))
    for job_id in (prepared, "bobs"):
        advance(stores.jobs, job_id, JobState.STARTING, JobState.RUNNING)

    alice = _invoke(query, _event("query_list_jobs"))["result"]
    [listed] = alice["jobs"]
    assert (listed["job_id"], listed["state"], alice["next_page_token"]) == (
        prepared,
        "RUNNING",
        "",
    )
    assert "started_at" in listed and "ended_at" not in listed  # (unset until the job ends)
    others = _event("query_list_jobs")
    others["request"]["owner"] = BOB["principal"]
    answer = _invoke(query, others)
    assert answer["error"]["code"] == "PERMISSION_DENIED"


def test_get_state_answers_the_current_state_and_its_time(prepared, stores):
    advance(stores.jobs, prepared, JobState.STARTING)
    result = _invoke(query, _event("query_get_state"))["result"]
    assert result["state"] == "STARTING"
    assert result["timestamp"] == pytest.approx(stores.jobs.get(prepared).state_time)


def test_get_pipeline_answers_the_stored_pipeline_reference(prepared):
    assert _invoke(query, _event("query_get_pipeline")) == {
        "result": {"pipeline_ref": "pipelines/example"}
    }


def test_get_job_metrics_of_a_job_without_metrics_yet(prepared):
    assert _invoke(query, _event("query_get_job_metrics")) == {"result": {"metrics_ref": None}}


def test_describe_pipeline_options_describes_the_services_options(settings):
    options = _invoke(query, _event("query_describe_pipeline_options"))["result"]["options"]
    assert {o["name"] for o in options} >= {
        "job_timeout_seconds",
        "worker_vcpu",
        "worker_memory_mb",
    }
    assert all(
        o["type"] in {"STRING", "BOOLEAN", "INTEGER", "NUMBER", "ARRAY", "OBJECT"} for o in options
    )


@pytest.mark.parametrize(
    "name",
    [
        "query_get_state",
        "query_get_pipeline",
        "query_get_job_metrics",
        "control_cancel",
        "control_drain",
    ],
)
def test_unknown_ids_are_not_found(settings, executor, name):
    assert (
        _invoke(query if name.startswith("query") else control, _event(name))["error"]["code"]
        == "NOT_FOUND"
    )


@pytest.mark.parametrize(
    "mangle",
    [
        lambda e: {**e, "request_id": ""},
        lambda e: {**e, "rpc": "Prepare"},
        lambda e: {**e, "request": "not an object"},
        lambda e: {**e, "request": {"job_id": ""}},
        lambda e: {**e, "request": {"job_id": 42}},
        lambda e: {k: v for k, v in e.items() if k != "caller"},
        lambda e: {**e, "caller": {"principal": "", "admin": False}},
        lambda e: {**e, "caller": {"principal": "arn:aws:iam::123456789012:user/x", "admin": 1}},
        lambda e: [],
    ],
)
def test_malformed_events_are_invalid_arguments(settings, mangle):
    answer = _invoke(query, mangle(_event("query_get_state")))
    assert answer["error"]["code"] == "INVALID_ARGUMENT"


ADMIN = {"principal": "arn:aws:iam::123456789012:user/mallory", "admin": True}


def _swapped_after_signing(event):
    return {**caller_claims.signed(CALLER_KEY.encode(), event), "caller": ADMIN}


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda e: _invoke(control, _as(ADMIN, e), key=None), id="unsigned"),
        pytest.param(lambda e: _invoke(control, _as(ADMIN, e), key="a guess"), id="other-key"),
        pytest.param(
            lambda e: _invoke(control, _swapped_after_signing(e), key=None), id="caller-swapped"
        ),
    ],
)
def test_a_forged_caller_claim_is_unauthenticated_and_changes_nothing(
    prepared, stores, executor, forge
):
    answer = forge(_event("control_cancel"))
    assert answer["error"]["code"] == "UNAUTHENTICATED", answer
    assert "not signed by this deployment's Job API" in answer["error"]["message"]
    assert stores.jobs.get(_event("control_cancel")["request"]["job_id"]).state is JobState.STOPPED


def test_every_rpc_has_an_event_file_named_after_its_function():
    from beamjobs.aws.invoker import FUNCTION_FOR_RPC

    rpc_events = [p for p in EVENTS.glob("*.json") if p.name.startswith(("control_", "query_"))]
    for path in rpc_events:
        event = json.loads(path.read_text())
        assert path.name.startswith(FUNCTION_FOR_RPC[event["rpc"]] + "_"), path.name
    assert {json.loads(p.read_text())["rpc"] for p in rpc_events} == set(FUNCTION_FOR_RPC)


def test_record_staging_makes_a_preparation_with_unstaged_artifacts_runnable(stores, executor):
    job_id = _event("control_record_staging")["request"]["preparation_id"]
    local = pipeline_pb2.ArtifactInformation(
        type_urn=FILE,
        type_payload=pipeline_pb2.ArtifactFilePayload(
            path="/client/pkg.tar.gz"
        ).SerializeToString(),
    )
    pipeline = pipeline_pb2.Pipeline.FromString(pipeline_bytes())
    pipeline.components.environments["py"].dependencies.append(local)
    stores.blobs.put("pipelines/unstaged", pipeline.SerializeToString())
    stores.blobs.put("options/example", b"{}")
    stores.jobs.create(
        make_job(
            job_id,
            pipeline_ref="pipelines/unstaged",
            options_ref="options/example",
            unstaged=("/client/pkg.tar.gz",),
            owner=ALICE,
        )
    )
    refused = _invoke(control, _event("control_run"))
    assert refused["error"]["code"] == "FAILED_PRECONDITION"
    assert "/client/pkg.tar.gz" in refused["error"]["message"]

    del pipeline.components.environments["py"].dependencies[:]
    pipeline.components.environments["py"].dependencies.append(
        reference(stores.artifacts.location, "ab" * 32, local)
    )
    event = _event("control_record_staging")
    stores.blobs.put(event["request"]["pipeline_ref"], pipeline.SerializeToString())
    # The session that holds the staging token records its outcome.
    assert _invoke(control, _event("control_begin_staging")) == {
        "result": {"pipeline_ref": "pipelines/unstaged", "artifact_bytes": 0}
    }
    assert _invoke(control, event) == {"result": {"unstaged": []}}
    assert stores.jobs.get(job_id).pipeline_ref == event["request"]["pipeline_ref"]
    # What its worker will be allowed to read: the staged artifact.
    assert stores.jobs.get(job_id).artifacts == ("ab" * 32,)
    assert _invoke(control, _with_request_id(_event("control_run"), "after-staging")) == {
        "result": {"job_id": job_id}
    }
    # Once run, the preparation's artifacts are settled.
    late = _invoke(control, event)
    assert late["error"]["code"] == "FAILED_PRECONDITION"


def _reconcile(event):
    from beamjobs_functions.reconcile import app

    app._settings.cache_clear()
    app._executions.cache_clear()
    return _invoke(app.lambda_handler, event)


def test_reconcile_on_schedule_fails_jobs_whose_worker_went_silent(stores, executor, monkeypatch):
    # (Its execution does not exist: its work ended.)
    monkeypatch.setenv(
        "BEAMJOBS_STATE_MACHINE_ARN", "arn:aws:states:us-east-1:123456789012:stateMachine:run-job"
    )
    job_id = _event("control_run")["request"]["preparation_id"]
    stores.jobs.create(make_job(job_id))
    advance(stores.jobs, job_id, JobState.STARTING)
    advance(stores.jobs, job_id, JobState.RUNNING)  # its worker started, then went silent
    monkeypatch.setenv("BEAMJOBS_LEASE_SECONDS", "0.01")
    time.sleep(0.05)
    assert _reconcile(_event("reconcile_schedule")) == {"settled": {job_id: "FAILED"}}
    [cause] = [m.text for e in stores.jobs.events(job_id) for m in e.messages]
    assert cause.startswith("worker lost: no heartbeat since")


def test_reconcile_from_the_state_machine_catch_fails_the_job_with_the_cause(stores, executor):
    event = _event("reconcile_worker_task_failed")
    stores.jobs.create(make_job(event["job_id"]))
    advance(stores.jobs, event["job_id"], JobState.STARTING)
    assert _reconcile(event) == {"retry": False, "settled": {event["job_id"]: "FAILED"}}
    [cause] = [m.text for e in stores.jobs.events(event["job_id"]) for m in e.messages]
    assert cause == (
        "the worker's task failed: States.TaskFailed: Essential container in task exited"
    )


def test_reconcile_from_the_state_machine_catch_starts_a_task_that_never_started_again(
    stores, executor
):
    event = _event("reconcile_worker_task_never_started")
    stores.jobs.create(make_job(event["job_id"]))
    advance(stores.jobs, event["job_id"], JobState.STARTING)
    assert _reconcile(event) == {"retry": True, "wait_seconds": 10}
    assert stores.jobs.get(event["job_id"]).state is JobState.STARTING


@pytest.mark.parametrize(
    ("status", "before", "after"),
    [
        ("FAILED", JobState.RUNNING, JobState.FAILED),
        ("TIMED_OUT", JobState.RUNNING, JobState.FAILED),
        ("ABORTED", JobState.CANCELLING, JobState.CANCELLED),
        ("SUCCEEDED", JobState.DONE, JobState.DONE),  # the worker recorded it: it stands
    ],
)
def test_reconcile_of_an_execution_status_change(stores, executor, status, before, after):
    event = _event("reconcile_execution_status_change")
    event["detail"]["status"] = status
    job_id = event["detail"]["name"]
    stores.jobs.create(make_job(job_id))
    path = {
        JobState.RUNNING: [JobState.STARTING, JobState.RUNNING],
        JobState.CANCELLING: [JobState.STARTING, JobState.RUNNING, JobState.CANCELLING],
        JobState.DONE: [JobState.STARTING, JobState.RUNNING, JobState.DONE],
    }[before]
    for state in path:
        advance(stores.jobs, job_id, state)
    assert _reconcile(event) == {"settled": {job_id: after.value}}
    assert stores.jobs.get(job_id).state is after


@pytest.mark.parametrize(
    ("option", "value", "says"),
    [
        ("worker_vcpu", "3", "--worker_vcpu must be one of"),
        ("worker_memory_mb", "1024", "--worker_memory_mb for 1 vCPU must be"),
        ("worker_memory_mb", "100", "--worker_memory_mb must be 512 to 122880"),
        ("job_timeout_seconds", "soon", "--job_timeout_seconds must be a number"),
    ],
)
def test_prepare_refuses_invalid_service_options(stores, executor, option, value, says):
    event = _event("control_prepare")
    stores.blobs.put(event["request"]["pipeline_ref"], pipeline_bytes())
    event["request"]["pipeline_options"][f"beam:option:{option}:v1"] = value
    answer = _invoke(control, event)
    assert answer["error"]["code"] == "INVALID_ARGUMENT"
    assert says in answer["error"]["message"]
    assert stores.jobs.list_jobs() == []
