"""A Python pipeline with a Java transform: Beam SQL's SqlTransform, expanded by Beam's Java
expansion service (tests/e2e/sql, started here), runs on Beamjobs as one job with a Python
environment (LOOPBACK) and a Java one (the expansion service's default, DOCKER
apache/beam_java17_sdk:2.65.0, run by its stand-in: Beam's Java SDK harness with the SQL jars)."""

# No `from __future__ import annotations`: Beam infers the rows' schema from the NamedTuple's
# annotations, which must be types, not strings.

import json
import socket
import subprocess
import time
import typing

import apache_beam as beam
import pytest
from apache_beam.testing.util import assert_that, equal_to
from apache_beam.transforms.sql import SqlTransform

from tests.e2e.conftest import ROOT, free_port, options, serve
from tests.e2e.test_cli import beamjobs

SQL_EXPANSION = ROOT / "tests" / "e2e" / "sql" / "target"


class Sale(typing.NamedTuple):
    fruit: str
    qty: int


beam.coders.registry.register_coder(Sale, beam.coders.RowCoder)


def _listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def expansion_service():
    port = free_port()
    classpath = (
        f"{SQL_EXPANSION / 'sql-expansion-service-1.jar'}:{SQL_EXPANSION / 'dependency' / '*'}"
    )
    process = subprocess.Popen(
        [
            "java",
            "-cp",
            classpath,
            "org.apache.beam.sdk.expansion.service.ExpansionService",
            str(port),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            assert process.poll() is None, "the expansion service exited"
            assert time.monotonic() < deadline, "the expansion service never listened"
            time.sleep(0.2)
        yield f"localhost:{port}"
    finally:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory) -> str:
    port = free_port()
    server = serve(tmp_path_factory.mktemp("xlang"), "xlang", port)
    yield f"localhost:{port}"
    server.stop()


def test_a_python_pipeline_with_sql_runs_its_java_transform_here(endpoint, expansion_service):
    # Given a Python pipeline whose aggregation is Beam SQL, a Java transform
    pipeline = beam.Pipeline(options=options(endpoint, "LOOPBACK", "--job_name=sql"))
    sales = pipeline | beam.Create(
        [Sale("tea", 3), Sale("cake", 5), Sale("tea", 4)]
    ).with_output_types(Sale)
    totals = sales | SqlTransform(
        "SELECT fruit, SUM(qty) AS total FROM PCOLLECTION GROUP BY fruit",
        expansion_service=expansion_service,
    )
    assert_that(
        totals | beam.Map(lambda row: (row.fruit, row.total)), equal_to([("tea", 7), ("cake", 5)])
    )
    # When it runs, then it is DONE with the right rows
    result = pipeline.run()
    assert result.wait_until_finish() == "DONE"
    # ... as one job of two environments: Python's, and Java's run by the Java SDK harness
    described = beamjobs(endpoint, "describe", result._job_id)
    assert described.returncode == 0, described.stderr
    environments = json.loads(described.stdout)["environments"]
    urns = sorted(env["urn"] for env in environments)
    assert urns == ["beam:env:docker:v1", "beam:env:external:v1"], environments
    [java] = [env for env in environments if env["urn"] == "beam:env:docker:v1"]
    assert java["container_image"].startswith("apache/beam_java17_sdk:2.65.0")
