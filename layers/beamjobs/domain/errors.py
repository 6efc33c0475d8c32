"""Domain errors. Each carries the name of the gRPC status it maps to; the shim translates them
in one place (beamjobs.shim.status), and Lambda handlers return them as data."""

from __future__ import annotations


class BeamjobsError(Exception):
    """Base class: an error the service reports to its client."""

    code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(BeamjobsError):
    code = "NOT_FOUND"


class InvalidArgument(BeamjobsError):
    code = "INVALID_ARGUMENT"


class FailedPrecondition(BeamjobsError):
    code = "FAILED_PRECONDITION"


class AlreadyExists(BeamjobsError):
    code = "ALREADY_EXISTS"


class Unavailable(BeamjobsError):
    """The backend (DynamoDB, S3, the executor) could not be reached or throttled us."""

    code = "UNAVAILABLE"


class ResourceExhausted(BeamjobsError):
    """A request exceeds a configured limit (e.g. an artifact's size)."""

    code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(BeamjobsError):
    """The client took too long (e.g. a staging session that stopped sending)."""

    code = "DEADLINE_EXCEEDED"


class MalformedItem(BeamjobsError):
    """A stored item that cannot be read as what its key says it is (written by something
    other than Beamjobs, or damaged): readers of many items skip it (beamjobs.domain.poison)."""

    code = "DATA_LOSS"


class Unauthenticated(BeamjobsError):
    """The caller did not prove who it is (no identity, or one that does not verify)."""

    code = "UNAUTHENTICATED"


class PermissionDenied(BeamjobsError):
    """The caller is known, and not allowed to use this deployment."""

    code = "PERMISSION_DENIED"


class Conflict(BeamjobsError):
    """A conditional write lost a race; callers re-read and decide again."""

    code = "ABORTED"


ERRORS_BY_CODE: dict[str, type[BeamjobsError]] = {
    cls.code: cls
    for cls in (
        NotFound,
        InvalidArgument,
        FailedPrecondition,
        AlreadyExists,
        Unavailable,
        ResourceExhausted,
        DeadlineExceeded,
        MalformedItem,
        Unauthenticated,
        PermissionDenied,
        Conflict,
    )
}


def error_from_code(code: str, message: str) -> BeamjobsError:
    """Rebuild a domain error from its wire form (a handler's error response)."""
    return ERRORS_BY_CODE.get(code, BeamjobsError)(message)
