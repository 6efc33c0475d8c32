"""Run one job: load it, execute its pipeline with FnApiRunner, record what happened."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import traceback
from pathlib import Path
from typing import Any

from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.portability.api import beam_provision_api_pb2, beam_runner_api_pb2
from apache_beam.runners.portability.fn_api_runner import fn_runner
from google.protobuf import struct_pb2

from beamjobs.domain.errors import BeamjobsError
from beamjobs.domain.failures import condensed
from beamjobs.domain.model import Job
from beamjobs.domain.states import JobState
from beamjobs.settings import Settings
from beamjobs.worker import environments, packages, process_environment
from beamjobs.worker.artifacts import ArtifactCache, localize, set_up_in_process
from beamjobs.worker.caches import default_cache_directory
from beamjobs.worker.channel import Claimed, JobChannel, channel_invokers, take_offer
from beamjobs.worker.harness_logs import EchoedMessages, HarnessLogFormatter
from beamjobs.worker.heartbeat import Heartbeat
from beamjobs.worker.image_environments import ImageEnvironments
from beamjobs.worker.messages import MessageForwarder
from beamjobs.worker.metrics import MetricsPublisher, PublishingRunner, built_by_java

logger = logging.getLogger(__name__)
# Imported for its side effect: FnApiRunner learns to run PROCESS environments.
_ = process_environment


def _beam_options(options: dict[str, Any]) -> PipelineOptions:
    """Beam SDKs send `beam:option:<name>:v1` keys, numbers as strings; from_dictionary parses
    the bare names as command-line flags would, so each option gets its declared type."""
    prefix, suffix = "beam:option:", ":v1"
    return PipelineOptions.from_dictionary(
        {
            key[len(prefix) : -len(suffix)]: value
            for key, value in options.items()
            if key.startswith(prefix) and key.endswith(suffix)
        }
    )


def _provision_info(job_id: str, job_name: str, options: dict[str, Any]) -> Any:
    """What SDK harnesses (LOOPBACK ones included) are told about the job."""
    struct = struct_pb2.Struct()
    struct.update(options)
    return fn_runner.ExtendedProvisionInfo(
        beam_provision_api_pb2.ProvisionInfo(pipeline_options=struct, retrieval_token=job_id),
        job_name=job_name,
    )


class JobRunner:
    """A worker process's set-up, which needs no job: settings from the environment, the way
    to the worker channel, the caches. A warm worker makes it while it waits for its job."""

    def __init__(self) -> None:
        logging.basicConfig(
            level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s"
        )
        self._settings = Settings.from_env(worker=True)
        assert self._settings.worker_function  # Settings.from_env(worker=True) checks it
        cache_directory = self._settings.artifact_cache_dir
        self._cache = ArtifactCache(
            Path(cache_directory) if cache_directory else default_cache_directory()
        )
        images_directory = self._settings.environment_cache_dir
        self._images = ImageEnvironments(
            Path(images_directory) if images_directory else default_cache_directory("environments")
        )
        self._reports, self._beats = channel_invokers(self._settings)

    @property
    def settings(self) -> Settings:
        return self._settings

    def take_offer(self, job_id: str, task_token: str, proof: str) -> str:
        """The worker secret of a job offered to the warm pool, if this task takes it."""
        return take_offer(self._reports, job_id, task_token, proof)

    def run(self, job_id: str, *, known: Job | None = None, secret: str | None = None) -> int:
        """Run one job; exit code 0 (the job's outcome is recorded through the channel, not
        in the exit code). `known`: the job as it was started, and `secret` its worker secret,
        when the starter handed them over; otherwise the secret is this process's setting."""
        secret = secret or self._settings.worker_secret
        if not secret:
            raise SystemExit(f"no worker secret for job {job_id} (BEAMJOBS_WORKER_SECRET)")
        execute(
            JobChannel(self._reports, job_id, secret, beats=self._beats),
            heartbeat_seconds=self._settings.heartbeat_seconds,
            worker_pool=self._settings.worker_pool,
            cache=self._cache,
            images=self._images,
        )
        return 0


def run_job(job_id: str) -> int:
    """A worker process's whole life when started for one job (a worker container)."""
    stop_on_sigterm()
    return JobRunner().run(job_id)


def stop_on_sigterm() -> None:
    """A container's PID 1 has no default action for SIGTERM: without a handler, ECS's stop (a
    Cancel's StopExecution stops the task) would be ignored while the work went on, until the
    SIGKILL 30 s later. Stop at once instead: the SDK harnesses (the worker's process group),
    then the worker. The job's end is settled by whoever stopped it (the execution's ABORTED)."""

    def stop(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # the group's signal reaches us too
        if os.getpgid(0) == os.getpid():  # never the group of whoever started us by hand
            with contextlib.suppress(ProcessLookupError):
                os.killpg(0, signal.SIGTERM)
        logging.shutdown()
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def execute(
    channel: JobChannel,
    *,
    heartbeat_seconds: float,
    cache: ArtifactCache,
    images: ImageEnvironments,
    worker_pool: str | None = None,
) -> JobState:
    """Run the job to its end and record the outcome; return the state recorded."""
    job_id = channel.job_id
    claimed = channel.claim()
    if not isinstance(claimed, Claimed):
        logger.info("job %s is %s: not running it", job_id, claimed.value)
        return claimed

    failure: str | None = None
    infos: list[Any] = []
    committed_only = False
    publisher = MetricsPublisher(channel)
    messages = MessageForwarder(channel, formatter=HarnessLogFormatter())
    messages.addFilter(EchoedMessages())
    workspace = Path(tempfile.mkdtemp(prefix=f"beamjobs-{job_id[:40]}-"))
    with Heartbeat(channel, heartbeat_seconds), messages:
        try:
            pipeline = beam_runner_api_pb2.Pipeline.FromString(claimed.pipeline)
            options = claimed.options
            beam_options = _beam_options(options)

            def report(text: str) -> None:
                messages.say("JOB_MESSAGE_BASIC", text)

            environments.prepare(
                pipeline,
                images=images,
                report=report,
                harnesses=workspace / "harnesses",
                worker_pool=worker_pool,
            )
            localize(pipeline, cache, claimed.artifacts)
            set_up = set_up_in_process(pipeline, workspace)
            if set_up is not None:
                report(set_up)
            runner = PublishingRunner(
                publisher, provision_info=_provision_info(job_id, claimed.job.job_name, options)
            )
            # FnApiRunner reads these options only when it builds the pipeline itself.
            runner._num_workers = environments.parallelism(pipeline, beam_options)
            result = runner.run_via_runner_api(pipeline, beam_options)
            result.wait_until_finish()
            infos = list(result.monitoring_infos())
            committed_only = built_by_java(pipeline)
        except (environments.UnrunnableEnvironment, packages.InstallFailed) as unrunnable:
            failure = str(unrunnable)
        except Exception:  # the user's pipeline failed: its traceback is the job's cause
            failure = condensed(traceback.format_exc())
            logger.warning("job %s failed", job_id)
        finally:
            shutil.rmtree(workspace, ignore_errors=True)
        if failure is None:
            _record_final_metrics(publisher, infos, messages, committed_only=committed_only)
        else:
            publisher.abandon()

    # The work is done, and only this call says how. A final state written meanwhile (a
    # cancel that won) stands.
    if failure is None:
        return channel.finish()
    return channel.fail(failure)


def _record_final_metrics(
    publisher: MetricsPublisher,
    infos: list[Any],
    messages: MessageForwarder,
    *,
    committed_only: bool,
) -> None:
    """Bookkeeping after a pipeline that succeeded: a failure here is said, and the job is
    still DONE (a user told FAILED would rerun it and duplicate its outputs)."""
    try:
        publisher.finish(infos, committed_only=committed_only)
    except BeamjobsError as error:
        logger.warning("final metrics not recorded", exc_info=True)
        messages.say(
            "JOB_MESSAGE_WARNING",
            f"the pipeline succeeded, but its final metrics could not be recorded ({error}): "
            "GetJobMetrics shows the last ones published while it ran",
        )
