"""In a Lambda function every AWS call, its retries included, ends before the function does
(beamjobs.aws.clients.bounded_config): what the template gives the functions fits."""

import pytest

from beamjobs.aws import clients
from beamjobs.local.provision import load_template
from beamjobs.settings import Settings
from tests.processes import ROOT


def _worst_case(config) -> float:
    """The longest one call takes with this configuration: every attempt to its timeouts,
    and botocore's longest waits between them."""
    # (botocore's max_attempts counts the retries; total_max_attempts, every attempt.)
    attempts = config.retries["total_max_attempts"]
    per_attempt = config.connect_timeout + config.read_timeout
    return attempts * per_attempt + clients.longest_waits(attempts)


def test_each_functions_calls_end_well_before_the_function_does():
    template = load_template(ROOT / "template.yaml")
    function_globals = template["Globals"]["Function"]
    call_seconds = float(function_globals["Environment"]["Variables"]["BEAMJOBS_CALL_SECONDS"])
    worst = _worst_case(clients.bounded_config(call_seconds))
    assert worst <= call_seconds
    functions = [
        r["Properties"]
        for r in template["Resources"].values()
        if r["Type"] == "AWS::Serverless::Function"
    ]
    assert len(functions) == 4
    for function in functions:
        # A third of the function's time is left to its own work.
        assert worst <= function.get("Timeout", function_globals["Timeout"]) * 2 / 3


def test_with_a_call_bound_every_budget_is_bounded(monkeypatch):
    # (Credentials from the environment: none is looked for elsewhere.)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "unit")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "unit")
    bounded = Settings(call_seconds=12.0, endpoint_url="http://127.0.0.1:1")
    for budget in ("brief", "standard", "patient"):
        config = clients.client("dynamodb", bounded, budget=budget).meta.config
        assert _worst_case(config) <= 12.0
    unbounded = Settings(endpoint_url="http://127.0.0.1:1")
    patient = clients.client("dynamodb", unbounded, budget="patient").meta.config
    assert patient.retries["total_max_attempts"] == 16  # (a long-lived process waits minutes)


def test_a_bound_too_short_for_its_attempts_is_refused():
    with pytest.raises(ValueError, match="leaves no time"):
        clients.bounded_config(3.0)
