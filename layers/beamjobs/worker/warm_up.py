"""A worker's first pipeline, before its job's.

Beam's first pipeline in a process runs about twice as long as the ones after it (a trivial one:
~60 ms, then ~30 ms, on a 2-core machine): FnApiRunner, the SDK harness and their coders fill
their caches on first use. A worker made ahead of its job has time to spare, so it runs one
trivial pipeline of its own first, and the job's is not the first. Nothing of a job is in it:
no job's code, options or data."""

from __future__ import annotations

import logging

import apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from apache_beam.runners.portability.fn_api_runner import fn_runner
from apache_beam.transforms import environments


def warm_up() -> None:
    """Run a trivial pipeline in this process, as a job's runs (FnApiRunner, EMBEDDED), and
    leave logging as it was: PipelineOptions configures it (logging.basicConfig), which would
    make the worker's own configuration, and so its job's INFO messages, a no-op."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        pipeline = beam.Pipeline(options=PipelineOptions())
        _ = pipeline | beam.Create([1, 2, 3]) | beam.Map(lambda number: number * 2)
        embedded = environments.EmbeddedPythonEnvironment.default()
        runner = fn_runner.FnApiRunner()
        runner.run_via_runner_api(
            pipeline.to_runner_api(default_environment=embedded), PipelineOptions()
        ).wait_until_finish()
    finally:
        for added in [handler for handler in root.handlers if handler not in handlers]:
            root.removeHandler(added)
        root.setLevel(level)
