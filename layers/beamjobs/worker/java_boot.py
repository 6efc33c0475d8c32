"""The stand-in of Beam's Java SDK images (apache/beam_java<N>_sdk:V), run as a PROCESS harness:
Beam's Java SDK harness of release V (its jars from Maven Central, cached by release:
beamjobs.worker.image_environments) with the job's staged jars on its classpath, started as the
image's boot starts it:

    python -m beamjobs.worker.java_boot --jars=DIR --semi_persist_dir=DIR <Beam's boot flags>

It reads the job's pipeline options and dependencies from the provision service, fetches the
dependencies (the pipeline's jars) from the artifact service into DIR/<harness id>/staged, and
becomes the JVM (exec) of org.apache.beam.fn.harness.FnHarness, its endpoints and options in the
environment variables the harness reads."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path

from beamjobs.worker.boot import boot_flags, descriptor, materialize, provision_info
from beamjobs.worker.packages import staged_file_name

HARNESS_MAIN = "org.apache.beam.fn.harness.FnHarness"
# The jar of the agent the harness sizes its caches with (the image starts the JVM with it).
JAMM = "jamm-"


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    own = argparse.ArgumentParser(add_help=False)
    own.add_argument("--jars", required=True, type=Path)
    mine, rest = own.parse_known_args(argv)
    args = boot_flags("python -m beamjobs.worker.java_boot", rest)
    info = provision_info(args)
    directory, options = materialize(args, info)
    staged = directory / "staged"
    harness_jars = sorted(mine.jars.glob("*.jar"))
    # The harness's own jars first, then the pipeline's, in the order it staged them.
    classpath = [*harness_jars, *(staged / staged_file_name(a) for a in info.dependencies)]
    os.environ.update(
        {
            "HARNESS_ID": args.id,
            "PIPELINE_OPTIONS_FILE": str(options),
            "PIPELINE_OPTIONS": options.read_text(),
            "LOGGING_API_SERVICE_DESCRIPTOR": descriptor(args.logging_endpoint),
            "CONTROL_API_SERVICE_DESCRIPTOR": descriptor(args.control_endpoint),
            "RUNNER_CAPABILITIES": " ".join(info.runner_capabilities),
            "SEMI_PERSISTENT_DIRECTORY": str(directory),
        }
    )
    java = shutil.which("java")
    if java is None:
        raise SystemExit("the Java SDK harness needs a `java` on the worker's PATH")
    agents = [f"-javaagent:{jar}" for jar in harness_jars if jar.name.startswith(JAMM)]
    os.execv(
        java,
        [
            java,
            "-XX:+UseParallelGC",
            "-XX:-OmitStackTraceInFastThrow",
            *agents,
            "-cp",
            os.pathsep.join(str(path) for path in classpath),
            HARNESS_MAIN,
        ],
    )


if __name__ == "__main__":
    main()
