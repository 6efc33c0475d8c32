"""Real pipelines through Beamjobs with the Beam Python SDK."""

import json
import logging
import os
import sys
import tempfile
from pathlib import Path

import apache_beam as beam
import pytest
from apache_beam.metrics import Metrics
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.portability.api import beam_job_api_pb2 as api
from apache_beam.runners.runner import PipelineState
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms import window

from tests.e2e.conftest import EMBEDDED, options
from tests.e2e.test_upstream_engines import _wait


def _messages(job_service, job_id):
    """The job's messages (without its state events), from its message stream."""
    return [
        r.message_response
        for r in job_service.GetMessageStream(api.JobMessagesRequest(job_id=job_id))
        if r.HasField("message_response")
    ]


LINES = ["the cat sat", "the dog sat", "a cat ran"]
WORD_COUNTS = [("the", 2), ("cat", 2), ("sat", 2), ("dog", 1), ("a", 1), ("ran", 1)]


@pytest.mark.parametrize("environment", [EMBEDDED, "LOOPBACK"])
def test_wordcount_is_done_with_the_right_counts(endpoint, environment):
    pipeline = beam.Pipeline(
        options=options(endpoint, environment, f"--job_name=wordcount-{environment[:8].lower()}")
    )
    counts = (
        pipeline | beam.Create(LINES) | beam.FlatMap(str.split) | beam.combiners.Count.PerElement()
    )
    assert_that(counts, equal_to(WORD_COUNTS))
    result = pipeline.run()
    assert result.wait_until_finish() == PipelineState.DONE


class Explode(beam.DoFn):
    def process(self, element):
        raise ValueError(f"cannot digest {element!r}: the user's own words")


@pytest.mark.parametrize("environment", [EMBEDDED, "LOOPBACK"])
def test_a_failing_dofn_fails_the_job_with_its_exception_text(endpoint, environment):
    pipeline = beam.Pipeline(options=options(endpoint, environment))
    _ = pipeline | beam.Create(["bad"]) | beam.ParDo(Explode())
    with pytest.raises(RuntimeError, match="cannot digest 'bad': the user's own words"):
        pipeline.run().wait_until_finish()


def _say_where_it_runs(line):
    logging.getLogger("where").warning("in %s", os.environ["SEMI_PERSISTENT_DIRECTORY"])
    return line


def test_a_process_environment_runs_with_the_shipped_boot_command(endpoint, job_service):
    boot = json.dumps({"command": f"{sys.executable} -m beamjobs.worker.boot"})
    pipeline = beam.Pipeline(options=options(endpoint, "PROCESS", f"--environment_config={boot}"))
    counts = (
        pipeline
        | beam.Create(LINES)
        | beam.Map(_say_where_it_runs)  # logs "in <the harness's directory>"
        | beam.ParDo(CountAndMeasure())  # logs "measured <line>" in the harness
        | beam.FlatMap(str.split)
        | beam.combiners.Count.PerElement()
    )
    assert_that(counts, equal_to(WORD_COUNTS))
    result = pipeline.run()
    assert result.wait_until_finish() == PipelineState.DONE
    texts = [m.message_text for m in _messages(job_service, result._job_id)]
    # The harness's log records arrive as what the user logged, not as LogEntry protos.
    assert "measured the cat sat" in texts
    # The boot's directory (none was given: its own) went with its harness
    directories = {text.removeprefix("in ") for text in texts if text.startswith("in /")}
    assert directories
    assert not any(os.path.exists(directory) for directory in directories), directories


def test_a_process_environment_whose_command_dies_fails_the_job(endpoint):
    pipeline = beam.Pipeline(
        options=options(endpoint, "PROCESS", '--environment_config={"command": "/bin/false"}')
    )
    _ = pipeline | beam.Create([1])
    with pytest.raises(RuntimeError, match="SDK harness of the PROCESS environment exited"):
        pipeline.run().wait_until_finish()


@pytest.mark.timeout(120)
def test_a_process_harness_that_dies_before_its_data_stream_fails_the_job(endpoint):
    # Given a PROCESS environment whose harness connects, then exits when handed its first
    # bundle: the runner awaits the bundle's outputs on a data stream that never opens
    dying = json.dumps({"command": f"{sys.executable} {Path(__file__).parent / 'dying_boot.py'}"})
    pipeline = beam.Pipeline(options=options(endpoint, "PROCESS", f"--environment_config={dying}"))
    _ = pipeline | beam.Create([1, 2, 3]) | beam.Map(str)
    # Then the job fails, naming the harness's exit, rather than waiting for it forever
    with pytest.raises(RuntimeError, match="exited with code 2"):
        pipeline.run().wait_until_finish()


class DieInTheHarness(beam.DoFn):
    """Ends the SDK harness process mid-bundle, while the runner waits on its data, having
    noted its temporary directory in `noted`."""

    def __init__(self, noted):
        self.noted = noted

    def process(self, element):
        Path(self.noted).write_text(tempfile.gettempdir())
        os._exit(3)


@pytest.mark.timeout(120)
def test_a_process_harness_that_dies_mid_bundle_fails_the_job_with_its_exit_code(
    endpoint, tmp_path
):
    # Given a PROCESS environment whose harness exits while the runner waits for its outputs
    boot = json.dumps({"command": f"{sys.executable} -m beamjobs.worker.boot"})
    pipeline = beam.Pipeline(options=options(endpoint, "PROCESS", f"--environment_config={boot}"))
    noted = tmp_path / "harness-temporary"
    _ = pipeline | beam.Create([1, 2, 3]) | beam.ParDo(DieInTheHarness(str(noted)))
    # Then the job fails, naming the harness's exit, rather than waiting for it forever
    with pytest.raises(RuntimeError, match="exited with code 3"):
        pipeline.run().wait_until_finish()
    # And its temporary files (its boot's among them) went with it, though it could not remove
    # them itself
    temporary = Path(noted.read_text())
    assert temporary.name.startswith("beam-harness-")
    _wait(lambda: not temporary.exists(), 10, "the harness's temporary directory to go")


@pytest.mark.parametrize("mode", ["multi_processing", "multi_threading"])
def test_multi_worker_execution_is_honoured(endpoint, mode):
    pipeline = beam.Pipeline(
        options=options(
            endpoint, EMBEDDED, f"--direct_running_mode={mode}", "--direct_num_workers=2"
        )
    )
    counts = (
        pipeline | beam.Create(LINES) | beam.FlatMap(str.split) | beam.combiners.Count.PerElement()
    )
    assert_that(counts, equal_to(WORD_COUNTS))
    assert pipeline.run().wait_until_finish() == PipelineState.DONE


def test_group_by_key_and_co_group_by_key(endpoint):
    with beam.Pipeline(options=options(endpoint)) as pipeline:
        emails = pipeline | "emails" >> beam.Create(
            [("amy", "a@x"), ("bob", "b@x"), ("amy", "a2@x")]
        )
        phones = pipeline | "phones" >> beam.Create([("amy", "111"), ("cal", "333")])
        grouped = emails | beam.GroupByKey() | beam.MapTuple(lambda k, vs: (k, sorted(vs)))
        assert_that(grouped, equal_to([("amy", ["a2@x", "a@x"]), ("bob", ["b@x"])]), label="gbk")
        joined = (
            {"emails": emails, "phones": phones}
            | beam.CoGroupByKey()
            | beam.MapTuple(lambda k, v: (k, sorted(v["emails"]), sorted(v["phones"])))
        )
        assert_that(
            joined,
            equal_to(
                [("amy", ["a2@x", "a@x"], ["111"]), ("bob", ["b@x"], []), ("cal", [], ["333"])]
            ),
            label="cogbk",
        )


def test_side_inputs_and_combiners(endpoint):
    with beam.Pipeline(options=options(endpoint)) as pipeline:
        numbers = pipeline | "numbers" >> beam.Create(list(range(1, 11)))
        total = numbers | beam.CombineGlobally(sum)
        shares = numbers | beam.Map(lambda n, t: round(n / t, 3), t=beam.pvalue.AsSingleton(total))
        assert_that(shares, equal_to([round(n / 55, 3) for n in range(1, 11)]), label="singleton")
        allowed = pipeline | "allowed" >> beam.Create([2, 4])
        kept = numbers | beam.Filter(lambda n, ok: n in ok, ok=beam.pvalue.AsList(allowed))
        assert_that(kept, equal_to([2, 4]), label="aslist")
        means = (
            pipeline
            | "pairs" >> beam.Create([("a", 1), ("a", 3), ("b", 10)])
            | beam.combiners.Mean.PerKey()
        )
        assert_that(means, equal_to([("a", 2.0), ("b", 10.0)]), label="mean")
        top = numbers | beam.combiners.Top.Of(3)
        assert_that(top, equal_to([[10, 9, 8]]), label="top")


def test_fixed_windows(endpoint):
    events = [("a", 1), ("a", 5), ("a", 12), ("b", 3), ("b", 15), ("b", 16)]
    with beam.Pipeline(options=options(endpoint)) as pipeline:
        counts = (
            pipeline
            | beam.Create(events)
            | beam.Map(lambda e: window.TimestampedValue(e[0], e[1]))
            | beam.WindowInto(window.FixedWindows(10))
            | beam.combiners.Count.PerElement()
            | beam.WithKeys(lambda _: None)
            | beam.GroupByKey()
            | beam.MapTuple(lambda _, counts: sorted(counts))
        )
        assert_that(counts, equal_to([[("a", 2), ("b", 1)], [("a", 1), ("b", 2)]]))


class CountAndMeasure(beam.DoFn):
    def __init__(self):
        self.words = Metrics.counter("wordstats", "words")
        self.lengths = Metrics.distribution("wordstats", "word_length")

    def process(self, word):
        self.words.inc()
        self.lengths.update(len(word))
        logging.getLogger("wordstats").warning("measured %s", word)
        yield word


def test_user_counters_and_distributions_come_back_through_get_job_metrics(endpoint):
    pipeline = beam.Pipeline(options=options(endpoint))
    _ = pipeline | beam.Create(["a", "bb", "cccc"]) | beam.ParDo(CountAndMeasure())
    result = pipeline.run()
    assert result.wait_until_finish() == PipelineState.DONE
    query = result.metrics().query(MetricsFilter().with_namespace("wordstats"))
    [counter] = query["counters"]
    assert counter.key.metric.name == "words" and counter.committed == 3
    [distribution] = query["distributions"]
    assert (distribution.committed.count, distribution.committed.sum) == (3, 7)
    assert (distribution.committed.min, distribution.committed.max) == (1, 4)


def test_dofn_logs_arrive_as_job_messages_at_their_importance(endpoint, job_service):
    pipeline = beam.Pipeline(options=options(endpoint, EMBEDDED, "--job_name=logging-job"))
    _ = pipeline | beam.Create(["zebra"]) | beam.ParDo(CountAndMeasure())
    result = pipeline.run()
    result.wait_until_finish()
    [logged] = [
        m for m in _messages(job_service, result._job_id) if "measured zebra" in m.message_text
    ]
    assert logged.importance == api.JobMessage.JOB_MESSAGE_WARNING


def test_get_jobs_lists_jobs_with_their_names_and_states(endpoint, job_service):
    pipeline = beam.Pipeline(options=options(endpoint, EMBEDDED, "--job_name=listed-job"))
    _ = pipeline | beam.Create([1, 2, 3])
    result = pipeline.run()
    result.wait_until_finish()
    jobs = {info.job_id: info for info in job_service.GetJobs(api.GetJobsRequest()).job_info}
    info = jobs[result._job_id]
    assert (info.job_name, info.state) == ("listed-job", api.JobState.DONE)


def test_get_pipeline_returns_exactly_the_submitted_pipeline(endpoint, job_service):
    pipeline = beam.Pipeline(options=options(endpoint))
    _ = pipeline | beam.Create(["x"]) | beam.Map(str.upper)
    proto = pipeline.to_runner_api()
    prepared = job_service.Prepare(api.PrepareJobRequest(pipeline=proto, job_name="job"))
    returned = job_service.GetPipeline(api.GetJobPipelineRequest(job_id=prepared.preparation_id))
    assert returned.pipeline.SerializeToString() == proto.SerializeToString()
    assert returned.pipeline == proto
