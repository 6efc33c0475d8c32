import grpc
import pytest

from beamjobs.domain.errors import (
    ERRORS_BY_CODE,
    AlreadyExists,
    BeamjobsError,
    Conflict,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    Unavailable,
    error_from_code,
)
from beamjobs.shim.status import status_for


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (NotFound("x"), grpc.StatusCode.NOT_FOUND),
        (InvalidArgument("x"), grpc.StatusCode.INVALID_ARGUMENT),
        (FailedPrecondition("x"), grpc.StatusCode.FAILED_PRECONDITION),
        (AlreadyExists("x"), grpc.StatusCode.ALREADY_EXISTS),
        (Unavailable("x"), grpc.StatusCode.UNAVAILABLE),
        (Conflict("x"), grpc.StatusCode.ABORTED),
        (BeamjobsError("x"), grpc.StatusCode.INTERNAL),
    ],
)
def test_each_domain_error_has_its_status(error, status):
    assert status_for(error) is status


def test_no_domain_error_maps_to_unknown():
    assert all(
        status_for(cls("x")) is not grpc.StatusCode.UNKNOWN for cls in ERRORS_BY_CODE.values()
    )


def test_errors_survive_their_wire_form():
    rebuilt = error_from_code("NOT_FOUND", "job x does not exist")
    assert isinstance(rebuilt, NotFound)
    assert rebuilt.message == "job x does not exist"
    assert status_for(error_from_code("SOMETHING_NEW", "?")) is grpc.StatusCode.INTERNAL
