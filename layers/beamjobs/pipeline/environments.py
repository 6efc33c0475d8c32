"""Which SDK environments the workers can run, and what to tell users of the others."""

from __future__ import annotations

EMBEDDED = "beam:env:embedded_python:v1"
# LOOPBACK arrives as EXTERNAL: the SDK rewrites it to point at its own worker pool.
EXTERNAL = "beam:env:external:v1"
PROCESS = "beam:env:process:v1"
# The SDK's default: its container image (run as a worker-pool sidecar on AWS).
DOCKER = "beam:env:docker:v1"
# Multi-process execution (--direct_running_mode=multi_processing) runs harnesses this way.
SUBPROCESS = "beam:env:harness_subprocess_python:v1"
SUPPORTED_URNS = frozenset({EMBEDDED, EXTERNAL, PROCESS, SUBPROCESS})


def unsupported_environments_message(urns: set[str] | frozenset[str]) -> str | None:
    """None when every environment can run; otherwise a message naming the others and what to
    use instead."""
    unsupported = sorted(set(urns) - SUPPORTED_URNS)
    if not unsupported:
        return None
    return (
        f"this Beamjobs worker cannot run the environment(s) {', '.join(unsupported)}; "
        "submit with --environment_type=LOOPBACK (your SDK process runs the user code) "
        f"or --environment_type={EMBEDDED} (the worker runs Python user code in process), "
        "or --environment_type=PROCESS with a boot command"
    )
