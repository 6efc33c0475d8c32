"""The one place where domain errors become gRPC status codes."""

from __future__ import annotations

import grpc

from beamjobs.domain.errors import BeamjobsError


def status_for(error: BeamjobsError) -> grpc.StatusCode:
    """The status named by the error's code; INTERNAL for anything unnamed (never UNKNOWN)."""
    try:
        return grpc.StatusCode[error.code]
    except KeyError:
        return grpc.StatusCode.INTERNAL
