import pytest

from beamjobs.domain.errors import InvalidArgument
from beamjobs.settings import Settings

BASE = {"BEAMJOBS_TABLE": "jobs", "BEAMJOBS_BUCKET": "blobs"}


def test_defaults_apply_to_what_the_environment_leaves_unset():
    settings = Settings.from_env(BASE)
    assert (settings.table_name, settings.lease_seconds, settings.executor) == (
        "jobs",
        30.0,
        "local",
    )
    assert settings.region == "us-east-1" and settings.endpoint_url is None


def test_settings_survive_the_environment_handed_to_worker_processes():
    settings = Settings.from_env(
        {
            **BASE,
            "AWS_DEFAULT_REGION": "eu-west-1",
            "BEAMJOBS_LEASE_SECONDS": "2.5",
            "BEAMJOBS_WARM_WORKERS": "0",
            "BEAMJOBS_WORKER_POOL": "localhost:50000",
        }
    )
    assert settings.region == "eu-west-1" and settings.lease_seconds == 2.5
    assert Settings.from_env(settings.to_env()) == settings


def test_every_malformed_setting_is_named_at_once():
    with pytest.raises(InvalidArgument) as refused:
        Settings.from_env(
            {
                **BASE,
                "BEAMJOBS_LEASE_SECONDS": "thirty",
                "BEAMJOBS_WARM_WORKERS": "-1",
                "BEAMJOBS_EXECUTOR": "fargate",
            }
        )
    message = refused.value.message
    assert "BEAMJOBS_LEASE_SECONDS='thirty' must be a number" in message
    assert "BEAMJOBS_WARM_WORKERS='-1' must be at least 0" in message
    assert "BEAMJOBS_EXECUTOR='fargate' must be one of local, stepfunctions" in message


def test_missing_settings_are_named():
    with pytest.raises(InvalidArgument, match="missing settings: BEAMJOBS_BUCKET"):
        Settings.from_env({"BEAMJOBS_TABLE": "jobs"})
    with pytest.raises(InvalidArgument, match="BEAMJOBS_STATE_MACHINE_ARN, BEAMJOBS_WORKER_TASK"):
        Settings.from_env({**BASE, "BEAMJOBS_EXECUTOR": "stepfunctions"})
